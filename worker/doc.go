// Package worker is the JetStream half of mtlsrelay: it pulls durable calls
// from consumer "workers" and answers direct calls, admits them within the
// worker's and each connection's limits, makes each attempt through the
// executor (package outbound), decides on retries (NakWithDelay), keeps
// per-call state in KV, and publishes exactly one final result per call,
// acknowledging a call only once a stream stored its result. It also
// holds the YAML config, metrics, tracing, the NATS micro service and the
// connection probe behind "mtlsrelay test".
package worker
