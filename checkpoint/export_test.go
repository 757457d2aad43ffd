package checkpoint

// Unexported helpers that the external tests (package checkpoint_test,
// which may import internal/testenv) reach.
var (
	LookupIn   = lookupIn
	SeenQuery  = seenQuery
	PruneQuery = pruneQuery
	InboxPK    = inboxPK
)
