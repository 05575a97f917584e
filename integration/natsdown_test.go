package integration

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mtlsrelay/mtlsrelay/internal/embedded"
)

// NATS restarts while a call is in flight: the worker rides it out (it
// reconnects, retries the result publish) and the call gets its result;
// calls made after the restart work too. /readyz says not ready meanwhile
// (TestAdminEndpoints).
func TestNATSRestart(t *testing.T) {
	dir := t.TempDir()
	listen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	srv, err := embedded.Start(embedded.Options{Listen: listen, StoreDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	url := srv.ClientURL()
	p := startPartner(t)
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	runWorker(t, nc, configYAML(t, `
worker: {admin_addr: "off", retry_base: 50ms}
registry: {disabled: true}
profiles:
  p: {keystore: "file:FIX/client-openssl.p12", password: "value:fixture-pass-123", truststore: "file:FIX/ca.pem"}
connections:
  partner: {base_url: "PARTNER", profile: p}
`, "PARTNER", p.URL()))
	flow, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(flow.Close)
	js, _ := jetstream.New(flow)

	_, sub := publishCalls(t, flow, js, "partner", 1, map[string]any{"path": "slow?ms=1500"})
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if p.Requests().Routes["/slow"] == 0 {
			return fmt.Errorf("call not at the partner yet")
		}
		return nil
	})
	srv.Shutdown()
	srv.WaitForShutdown()
	srv, err = embedded.Start(embedded.Options{Listen: listen, StoreDir: dir})
	if err != nil {
		t.Fatalf("restart NATS: %v", err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })

	r := collect(t, sub, 1)[0]
	if !r.OK {
		t.Fatalf("call in flight across the restart: %+v", r.Error)
	}
	after := call(t, flow, js, "partner", map[string]any{"path": "echo"})
	if !after.OK {
		t.Fatalf("call after the restart: %+v", after.Error)
	}
}
