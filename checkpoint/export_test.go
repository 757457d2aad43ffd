package checkpoint

// Unexported helpers that the external tests (package checkpoint_test,
// which may import internal/testenv) reach.
var (
	LookupIn  = lookupIn
	SeenQuery = seenQuery
	InboxPK   = inboxPK
)
