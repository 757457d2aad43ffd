// Package remote runs KisFlow functions in other processes, in dubbo-go's
// shape: a provider (Serve, behind `kisflow serve`) exposes the functions
// of an Engine over gRPC and registers itself in a registry; a caller (the
// `remote` connector type, package connector/remote) keeps the live list of
// providers in a Directory (NATS JetStream key-value with a watch, a static
// list, or DNS SRV records), picks one through a load balancer (random,
// round_robin, least_active, consistent_hash) and calls it through a
// cluster strategy (failover, failfast, failsafe, forking, broadcast), so
// that the remote call looks like a local function to the flow.
//
// The wire format is a hand-written gRPC service, kisflow.remote.v1.Functions,
// that carries JSON (a gRPC codec named "kisflow-json", forced on both
// ends): rows already are JSON at the edges of a flow, and no protoc code
// generation is needed to build or change it. Callers send their calls on
// streams of its method Calls that stay open between calls; its unary
// method Call serves callers of earlier releases, and callers use it for
// providers of earlier releases.
package remote
