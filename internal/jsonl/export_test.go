package jsonl

// Marshal is marshal, for the external tests (which import testenv, and
// testenv the engine, which imports this package).
var Marshal = marshal
