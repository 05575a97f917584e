package integration

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// A call longer than AckWait is kept alive with InProgress: it is not
// redelivered to another attempt while the first still runs.
func TestLongCallKeptAlive(t *testing.T) {
	srv := startNATS(t)
	p := startPartner(t)
	cfg := configYAML(t, `
worker: {concurrency: 4, admin_addr: "off", ack_wait: 1s, retry_base: 20ms}
profiles:
  p: {keystore: "file:FIX/client-openssl.p12", password: "value:fixture-pass-123", truststore: "file:FIX/ca.pem"}
connections:
  partner: {base_url: "PARTNER", profile: p, timeout: 10s}
`, "PARTNER", p.URL())
	startWorker(t, srv.ClientURL(), cfg)
	nc, js := connect(t, srv.ClientURL())
	r := call(t, nc, js, "partner", map[string]any{"path": "slow?ms=2600"})
	if !r.OK || r.Attempt != 1 {
		t.Fatalf("long call: ok=%v attempt=%d error=%+v; want success on attempt 1", r.OK, r.Attempt, r.Error)
	}
	if n := p.Requests().Routes["/slow"]; n != 1 {
		t.Errorf("partner saw /slow %d times, want 1: the call was redelivered while running", n)
	}
}

func TestAdminEndpoints(t *testing.T) {
	srv := startNATS(t)
	w, _ := startWorker(t, srv.ClientURL(), `worker: {admin_addr: "off"}`)
	admin := httptest.NewServer(w.AdminHandler())
	defer admin.Close()
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200} {
		resp, err := http.Get(admin.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s = %d %s, want %d", path, resp.StatusCode, body, want)
		}
	}
	// NATS gone: not ready, with the reason.
	srv.Shutdown()
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		resp, err := http.Get(admin.URL + "/readyz")
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 503 || !strings.Contains(string(body), "NATS") {
			return errorf("readyz = %d %s, want 503 naming NATS", resp.StatusCode, body)
		}
		return nil
	})
}
