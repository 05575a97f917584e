// Package examples holds runnable examples of mtlsrelay flows and a demo
// partner, each in its own folder, and the test that runs them against a real
// relay (embedded NATS, an mTLS partner, a worker):
//
//	flow-go        a Go flow: client.Client.Enqueue, results from MTLSRELAY_RESULTS
//	flow-nats-cli  the same flow with only the nats CLI (flow.sh)
//	partner        the demo mTLS partner used by deploy/compose.yaml
package examples
