// Package jobs is mtlsrelay's wire contract: the JSON of a call and of its
// result, the stable error codes, the subjects, stream names and headers.
// It imports no NATS package, so the executor (package outbound) and any
// tool can use it; the Go client of flows is package jobs/client, the
// streams' definitions package jobs/streams.
package jobs
