// Package outbound is the executor: it makes one attempt of a call to a
// partner over mutual TLS. From a connection (package catalog) and a
// profile's resolved material (package secrets) it builds the request
// (REST, or a SOAP envelope), sends it through a pooled transport that
// presents the profile's client certificate and dials only addresses the
// connection's egress rules allow, reads the response within its limits,
// and classifies what failed into a stable error code (ClassifyError).
//
// It knows nothing of NATS: the worker (package worker) decides when to
// attempt, retry, hand back or publish.
package outbound
