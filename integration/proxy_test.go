package integration

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mtlsrelay/mtlsrelay/internal/testsquid"
	"github.com/mtlsrelay/mtlsrelay/jobs"
)

// proxyConfig routes every connection through Squid (worker.proxy) but
// those that name another proxy or none.
const proxyConfig = `
worker:
  concurrency: 8
  admin_addr: "off"
  retry_base: 20ms
  retry_max: 200ms
  ack_wait: 5s
  proxy: squid
log: {level: debug, format: json}
proxies:
  squid:        {url: "SQUID", username: relay, password: "file:PWFILE"}
  squid-noauth: {url: "SQUID"}
profiles:
  openssl: {keystore: "file:FIX/client-openssl.p12", password: "value:fixture-pass-123", truststore: "file:FIX/ca.pem"}
connections:
  via-squid:  {base_url: "PARTNER", profile: openssl}
  no-creds:   {base_url: "PARTNER", profile: openssl, proxy: squid-noauth}
  denied:     {base_url: "OTHER", profile: openssl}
  direct:     {base_url: "PARTNER", profile: openssl, proxy: none}
  rotate-1:   {base_url: "PARTNER", profile: openssl}
  rotate-2:   {base_url: "PARTNER", profile: openssl}
  rotate-3:   {base_url: "PARTNER", profile: openssl}
  after-stop: {base_url: "PARTNER", profile: openssl, max_attempts: 1}
`

func proxySecret(t *testing.T, prefix string) string {
	t.Helper()
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return prefix + hex.EncodeToString(b)
}

// TestProxySquid runs calls through a real Squid (internal/testsquid) that
// requires basic authentication and lets CONNECT reach the partner's port
// only, with an in-process worker whose default proxy is that Squid.
func TestProxySquid(t *testing.T) {
	srv := startNATS(t)
	p := startPartner(t)
	other := startPartner(t) // a destination Squid refuses
	pwA, pwB := proxySecret(t, "squid-pass-a-"), proxySecret(t, "squid-pass-b-")
	sq := testsquid.Start(t, testsquid.Options{
		Users:        map[string]string{"relay": pwA},
		AllowConnect: []string{p.Addr()},
	})
	pwFile := filepath.Join(t.TempDir(), "proxy-password")
	writePassword := func(pw string) {
		t.Helper()
		if err := os.WriteFile(pwFile, []byte(pw+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writePassword(pwA)
	cfg := configYAML(t, proxyConfig, "SQUID", sq.URL(), "PWFILE", pwFile, "PARTNER", p.URL(), "OTHER", other.URL())
	_, logs := startWorker(t, srv.ClientURL(), cfg)
	nc, js := connect(t, srv.ClientURL())

	var results []*jobs.Result
	do := func(t *testing.T, conn string, c map[string]any) *jobs.Result {
		t.Helper()
		r := call(t, nc, js, conn, c)
		results = append(results, r)
		return r
	}
	// refused checks that r failed with code, once, naming proxy.
	refused := func(t *testing.T, r *jobs.Result, code jobs.Code, proxy string, parts ...string) {
		t.Helper()
		if r.OK || r.Error == nil || r.Error.Code != code || r.Error.Retryable != code.Retryable() {
			t.Fatalf("result ok=%v error=%+v, want %s", r.OK, r.Error, code)
		}
		if code == jobs.CodeProxyRefused && r.Attempt != 1 {
			t.Errorf("%d attempts, want 1: %s is not retried", r.Attempt, code)
		}
		for _, want := range append([]string{"proxy " + proxy + " (" + sq.Addr() + ")"}, parts...) {
			if !strings.Contains(r.Error.Message, want) {
				t.Errorf("message %q does not hold %q", r.Error.Message, want)
			}
		}
	}
	// connects returns Squid's CONNECT entries for target with status.
	connects := func(t *testing.T, target string, status int) int {
		t.Helper()
		n := 0
		for _, e := range sq.Connects(t) {
			if e.Target == target && e.Status == status {
				n++
			}
		}
		return n
	}

	t.Run("mutual TLS through the tunnel", func(t *testing.T) {
		before := p.Requests().Handshakes
		r := do(t, "via-squid", map[string]any{"path": "echo"})
		e := decodeEcho(t, r)
		if e.ClientCert == nil || !strings.Contains(e.ClientCert.Subject, "mtlsrelay-test-client") {
			t.Fatalf("the partner saw client %+v, want the profile's certificate", e.ClientCert)
		}
		if r.ClientCert == nil || !sameSerial(r.ClientCert.Serial, e.ClientCert.Serial) {
			t.Errorf("result client_cert %+v, partner saw serial %s", r.ClientCert, e.ClientCert.Serial)
		}
		if p.Requests().Handshakes <= before {
			t.Error("the partner verified no client certificate")
		}
	})

	t.Run("407 without credentials", func(t *testing.T) {
		r := do(t, "no-creds", map[string]any{"path": "echo"})
		refused(t, r, jobs.CodeProxyRefused, "squid-noauth", "407", p.Addr())
		sq.Sync(t)
		if connects(t, p.Addr(), http.StatusProxyAuthRequired) == 0 {
			t.Errorf("Squid logged no 407 for %s:\n%v", p.Addr(), sq.Log(t))
		}
	})

	t.Run("403 for a destination Squid denies", func(t *testing.T) {
		r := do(t, "denied", map[string]any{"path": "echo"})
		refused(t, r, jobs.CodeProxyRefused, "squid", "403", other.Addr())
		sq.Sync(t)
		if connects(t, other.Addr(), http.StatusForbidden) != 1 {
			t.Errorf("Squid did not log one 403 for %s:\n%v", other.Addr(), sq.Log(t))
		}
		if n := other.Requests().Connections; n != 0 {
			t.Errorf("the denied partner got %d connections", n)
		}
	})

	t.Run("host outside allow_hosts never reaches Squid", func(t *testing.T) {
		sq.Sync(t)
		before := len(sq.Connects(t))
		r := do(t, "via-squid", map[string]any{"url": other.URL() + "/echo"})
		if r.Error == nil || r.Error.Code != jobs.CodeHostNotAllowed {
			t.Fatalf("error %+v, want host_not_allowed", r.Error)
		}
		sq.Sync(t)
		if got := sq.Connects(t); len(got) != before {
			t.Fatalf("Squid saw CONNECTs for a host the connection does not allow: %v", got[before:])
		}
	})

	t.Run("proxy none goes direct", func(t *testing.T) {
		before := p.Requests().Connections
		r := do(t, "direct", map[string]any{"path": "echo"})
		if e := decodeEcho(t, r); e.ClientCert == nil {
			t.Fatal("no client certificate")
		}
		if p.Requests().Connections != before+1 {
			t.Error("the partner saw no new connection")
		}
		// Squid's log of tunnels, checked once Squid stopped below, counts
		// no tunnel for this connection.
	})

	t.Run("rotated password without restart", func(t *testing.T) {
		if r := do(t, "rotate-1", map[string]any{"path": "echo"}); !r.OK {
			t.Fatalf("before the rotation: %+v", r.Error)
		}
		// The worker's file changes first: its next connection to Squid
		// sends the new password, which Squid does not know yet.
		writePassword(pwB)
		r := do(t, "rotate-2", map[string]any{"path": "echo"})
		refused(t, r, jobs.CodeProxyRefused, "squid", "407")
		// Now Squid too: new connections succeed.
		sq.SetUsers(t, map[string]string{"relay": pwB})
		checkFor(t, 10*time.Second, 200*time.Millisecond, func() error {
			r := do(t, "rotate-3", map[string]any{"path": "echo"})
			if !r.OK {
				return errorf("after the rotation: %+v", r.Error)
			}
			return nil
		})
		// A tunnel opened before the rotation stays open and in use.
		if r := do(t, "rotate-1", map[string]any{"path": "echo"}); !r.OK {
			t.Fatalf("on the tunnel made before the rotation: %+v", r.Error)
		}
	})

	t.Run("Squid down is connect_failed", func(t *testing.T) {
		sq.Stop() // closes the tunnels, which Squid then logs
		tunnels := 0
		for _, e := range sq.Connects(t) {
			if e.Status == http.StatusOK {
				tunnels++
				if e.Target != p.Addr() || e.User != "relay" {
					t.Errorf("tunnel %q: want %s by user relay", e.Line, p.Addr())
				}
			}
		}
		// via-squid, rotate-1 and rotate-3: none for direct.
		if tunnels != 3 {
			t.Errorf("%d tunnels, want 3 (via-squid, rotate-1, rotate-3):\n%v", tunnels, sq.Log(t))
		}
		r := do(t, "after-stop", map[string]any{"path": "echo"})
		refused(t, r, jobs.CodeConnectFailed, "squid", "refused")
	})

	t.Run("the proxy password never leaks", func(t *testing.T) {
		secrets := []string{pwA, pwB}
		for _, pw := range []string{pwA, pwB} {
			secrets = append(secrets, base64.StdEncoding.EncodeToString([]byte("relay:"+pw)))
		}
		out := logs.String()
		if !strings.Contains(out, "proxy_refused") {
			t.Fatalf("the worker logged no proxy_refused: the check below would prove nothing\n%s", out)
		}
		for _, r := range results {
			b, err := json.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			out += "\n" + string(b)
		}
		for _, s := range secrets {
			if strings.Contains(out, s) {
				t.Fatalf("the worker's logs or results hold a proxy password")
			}
		}
	})
}
