package integration

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mtlsrelay/mtlsrelay/internal/partner"
	"github.com/mtlsrelay/mtlsrelay/jobs"
)

// relayConfig is a worker config with one profile per keystore fixture and
// connections for every case of the tests below.
const relayConfig = `
worker:
  concurrency: 16
  admin_addr: "off"
  retry_base: 20ms
  retry_max: 200ms
  ack_wait: 5s
log: {level: debug, format: json}
profiles:
  openssl:        {keystore: "file:FIX/client-openssl.p12",        password: "value:fixture-pass-123", truststore: "file:FIX/ca.pem"}
  openssl-legacy: {keystore: "file:FIX/client-openssl-legacy.p12", password: "value:fixture-pass-123", truststore: "file:FIX/ca.pem"}
  keytool-p12:    {keystore: "file:FIX/client-keytool.p12",        password: "value:fixture-pass-123", truststore: "file:FIX/truststore.p12", truststore_password: "value:fixture-pass-123"}
  keytool-jks:    {keystore: "file:FIX/client-keytool.jks",        password: "value:fixture-pass-123", truststore: "file:FIX/truststore.jks", truststore_password: "value:fixture-pass-123"}
  multi-beta:     {keystore: "file:FIX/client-multi.p12",          password: "value:fixture-pass-123", truststore: "file:FIX/ca.pem", key_alias: beta}
  multi-jks-alpha: {keystore: "file:FIX/client-multi.jks",         password: "value:fixture-pass-123", truststore: "file:FIX/ca.pem", key_alias: alpha}
  pem:            {keystore: "file:FIX/client.pem",                truststore: "file:FIX/ca.pem"}
  pem-encrypted:  {keystore: "file:FIX/client-encrypted.pem",      password: "value:fixture-pass-123", truststore: "file:FIX/ca.pem"}
  wrong-password: {keystore: "file:FIX/client-openssl.p12",        password: "value:not-the-password", truststore: "file:FIX/ca.pem"}
  corrupt:        {keystore: "file:FIX/corrupt.p12",               password: "value:fixture-pass-123", truststore: "file:FIX/ca.pem"}
  untrusting:     {keystore: "file:FIX/client-openssl.p12",        password: "value:fixture-pass-123", truststore: "file:FIX/other-ca.pem"}
  wrong-name:     {keystore: "file:FIX/client-openssl.p12",        password: "value:fixture-pass-123", truststore: "file:FIX/ca.pem", server_name: "partner.invalid"}
  expired:        {keystore: "file:TMP/expired.pem",  truststore: "file:FIX/ca.pem"}
  future:         {keystore: "file:TMP/future.pem",   truststore: "file:FIX/ca.pem"}
connections:
  openssl:         {base_url: "PARTNER", profile: openssl}
  openssl-legacy:  {base_url: "PARTNER", profile: openssl-legacy}
  keytool-p12:     {base_url: "PARTNER", profile: keytool-p12}
  keytool-jks:     {base_url: "PARTNER", profile: keytool-jks}
  multi-beta:      {base_url: "PARTNER", profile: multi-beta}
  multi-jks-alpha: {base_url: "PARTNER", profile: multi-jks-alpha}
  pem:             {base_url: "PARTNER", profile: pem}
  pem-encrypted:   {base_url: "PARTNER", profile: pem-encrypted}
  wrong-password:  {base_url: "PARTNER", profile: wrong-password}
  corrupt:         {base_url: "PARTNER", profile: corrupt}
  untrusting:      {base_url: "PARTNER", profile: untrusting}
  wrong-name:      {base_url: "PARTNER", profile: wrong-name}
  expired:         {base_url: "PARTNER", profile: expired}
  future:          {base_url: "PARTNER", profile: future}
  no-profile:      {base_url: "PARTNER", profile: nobody}
  rejecting-12:    {base_url: "REJECT12", profile: openssl}
  rejecting-13:    {base_url: "REJECT13", profile: openssl}
  closed:          {base_url: "CLOSED", profile: openssl, max_attempts: 2}
  short:           {base_url: "PARTNER", profile: openssl, timeout: 300ms, max_attempts: 2}
  small:           {base_url: "PARTNER", profile: openssl, max_response_bytes: 100}
  partner:         {base_url: "PARTNER", profile: openssl, max_attempts: 3, allow_hosts: ["127.0.0.1:PPORT"], breaker_failures: -1}
  gsoap-wsdl:      {base_url: "PARTNER", profile: openssl, wsdl: "file:FIX/../../outbound/wsdl/testdata/gsoap/inventory.wsdl"}
`

type relayEnv struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	logs    *syncBuffer
	partner string
	natsURL string
	tmp     string
}

// newRelayEnv starts NATS, the partner servers the config names and a worker.
func newRelayEnv(t *testing.T) *relayEnv {
	t.Helper()
	srv := startNATS(t)
	p := startPartner(t)
	rej12 := startPartner(t, tlsMax12, clientCAs("other-ca.pem"))
	rej13 := startPartner(t, clientCAs("other-ca.pem"))
	tmp := t.TempDir()
	writeTimedCert(t, filepath.Join(tmp, "expired.pem"), time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour))
	writeTimedCert(t, filepath.Join(tmp, "future.pem"), time.Now().Add(24*time.Hour), time.Now().Add(48*time.Hour))
	cfg := configYAML(t, relayConfig,
		"PARTNER", "https://localhost:"+port(p.URL())+"/", "PPORT", port(p.URL()),
		"REJECT12", rej12.URL(), "REJECT13", rej13.URL(),
		"CLOSED", "https://127.0.0.1:"+closedPort(t),
		"TMP", tmp)
	_, logs := startWorker(t, srv.ClientURL(), cfg)
	nc, js := connect(t, srv.ClientURL())
	return &relayEnv{nc: nc, js: js, logs: logs, partner: p.URL(), natsURL: srv.ClientURL(), tmp: tmp}
}

func port(u string) string {
	i := strings.LastIndex(u, ":")
	return strings.TrimRight(u[i+1:], "/")
}

// closedPort returns a loopback port nothing listens on.
func closedPort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := port(ln.Addr().String())
	ln.Close()
	return p
}

// writeTimedCert writes a PEM client keystore signed by the fixture CA with
// the given validity window (time-dependent, so made at test time).
func writeTimedCert(t *testing.T, path string, notBefore, notAfter time.Time) {
	t.Helper()
	ca, err := tls.LoadX509KeyPair(fixture(t, "ca.pem"), fixture(t, "ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(ca.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "mtlsrelay-timed-client"},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, ca.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	out := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})...)
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
}

func decodeEcho(t *testing.T, r *jobs.Result) partner.EchoResponse {
	t.Helper()
	if !r.OK || r.Status != 200 {
		t.Fatalf("result not ok: status %d error %+v body %s", r.Status, r.Error, r.Body)
	}
	var e partner.EchoResponse
	if err := json.Unmarshal([]byte(r.Body), &e); err != nil {
		t.Fatalf("echo body: %v: %s", err, r.Body)
	}
	return e
}

func TestKeystoreKinds(t *testing.T) {
	env := newRelayEnv(t)
	for _, tc := range []struct{ conn, wantCN string }{
		{"openssl", "mtlsrelay-test-client"},
		{"openssl-legacy", "mtlsrelay-test-client"},
		{"keytool-p12", "mtlsrelay-test-client"},
		{"keytool-jks", "mtlsrelay-test-client"},
		{"multi-beta", "beta"},
		{"multi-jks-alpha", "alpha"},
		{"pem", "mtlsrelay-test-client"},
		{"pem-encrypted", "mtlsrelay-test-client"},
	} {
		t.Run("ok/"+tc.conn, func(t *testing.T) {
			r := call(t, env.nc, env.js, tc.conn, map[string]any{"path": "echo"})
			e := decodeEcho(t, r)
			if e.ClientCert == nil || !strings.Contains(e.ClientCert.Subject, tc.wantCN) {
				t.Fatalf("partner saw client %+v, want CN containing %q", e.ClientCert, tc.wantCN)
			}
			if r.ClientCert == nil || !sameSerial(r.ClientCert.Serial, e.ClientCert.Serial) {
				t.Errorf("result client_cert %+v does not match the serial the partner saw %q", r.ClientCert, e.ClientCert.Serial)
			}
		})
	}
}

func TestREST(t *testing.T) {
	env := newRelayEnv(t)
	t.Run("ok/methods-query-headers-text-body", func(t *testing.T) {
		for _, m := range []string{"GET", "POST", "PUT", "PATCH", "DELETE"} {
			r := call(t, env.nc, env.js, "partner", map[string]any{
				"method":  m,
				"path":    "/echo",
				"query":   map[string][]string{"q": {"a b", "c&d"}, "n": {"1"}},
				"headers": map[string][]string{"X-Multi": {"one", "two"}, "Content-Type": {"application/json"}},
				"body":    `{"hello":"wörld"}`,
			})
			e := decodeEcho(t, r)
			if e.Method != m || e.Path != "/echo" {
				t.Errorf("%s: partner saw %s %s", m, e.Method, e.Path)
			}
			if !strings.Contains(e.RawQuery, "q=a+b&q=c%26d") || !strings.Contains(e.RawQuery, "n=1") {
				t.Errorf("%s: query %q lost values or order", m, e.RawQuery)
			}
			if got := e.Headers["X-Multi"]; len(got) != 2 || got[0] != "one" || got[1] != "two" {
				t.Errorf("%s: X-Multi = %q, want [one two] in order", m, got)
			}
			if e.Body != `{"hello":"wörld"}` {
				t.Errorf("%s: body %q", m, e.Body)
			}
		}
	})
	t.Run("ok/binary-body-both-ways", func(t *testing.T) {
		raw := []byte{0xff, 0x00, 0xfe, 0x10}
		r := call(t, env.nc, env.js, "partner", map[string]any{"method": "POST", "path": "echo", "body_base64": base64.StdEncoding.EncodeToString(raw)})
		e := decodeEcho(t, r)
		if !bytes.Equal(e.BodyBase64, raw) {
			t.Errorf("partner got body_base64 %q", e.BodyBase64)
		}
		r = call(t, env.nc, env.js, "partner", map[string]any{"path": "binary"})
		if !r.OK || len(r.BodyBase64) == 0 || r.Body != "" {
			t.Errorf("binary response should come back as body_base64: %+v", r)
		}
	})
	t.Run("ok/absolute-url-allowed-host", func(t *testing.T) {
		r := call(t, env.nc, env.js, "partner", map[string]any{"url": "https://127.0.0.1:" + port(env.partner) + "/echo"})
		decodeEcho(t, r)
	})
	t.Run("ok/404-is-a-result", func(t *testing.T) {
		r := call(t, env.nc, env.js, "partner", map[string]any{"path": "status/404"})
		if r.OK || r.Status != 404 || r.Error != nil || r.Attempt != 1 {
			t.Errorf("404: ok=%v status=%d error=%+v attempt=%d; want a plain result", r.OK, r.Status, r.Error, r.Attempt)
		}
	})
	t.Run("fail/503-retried-then-http_status", func(t *testing.T) {
		r := call(t, env.nc, env.js, "partner", map[string]any{"path": "status/503"})
		if r.Status != 503 || r.Error == nil || r.Error.Code != jobs.CodeHTTPStatus || r.Attempt != 3 {
			t.Errorf("503: status=%d error=%+v attempt=%d; want http_status after 3 attempts", r.Status, r.Error, r.Attempt)
		}
	})
	t.Run("ok/503-then-success", func(t *testing.T) {
		r := call(t, env.nc, env.js, "partner", map[string]any{"path": "flaky/" + uniqueID("k") + "?fail=2&code=503"})
		if !r.OK || r.Attempt != 3 {
			t.Errorf("flaky: ok=%v attempt=%d error=%+v; want success on attempt 3", r.OK, r.Attempt, r.Error)
		}
	})
	// Progress messages go where the result goes: kept in MTLSRELAY_RESULTS,
	// or published to a flow's inbox.
	for name, kept := range map[string]bool{"stored": true, "inbox": false} {
		t.Run("ok/progress-before-final/"+name, func(t *testing.T) {
			id := uniqueID(t.Name())
			reply := "mtlsrelay.results.test." + id
			if !kept {
				reply = nats.NewInbox()
			}
			sub, err := env.nc.SubscribeSync(reply)
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Unsubscribe()
			data, _ := json.Marshal(map[string]any{"id": id, "reply_to": reply, "progress": true, "path": "flaky/" + id + "?fail=2&code=503"})
			msg := nats.NewMsg("mtlsrelay.calls.partner")
			msg.Data = data
			msg.Header.Set("Nats-Msg-Id", id)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := env.js.PublishMsg(ctx, msg); err != nil {
				t.Fatal(err)
			}
			// Two progress messages, attempts 1 and 2, then the final result.
			for attempt := 1; attempt <= 3; attempt++ {
				m, err := sub.NextMsgWithContext(ctx)
				if err != nil {
					t.Fatalf("message %d: %v", attempt, err)
				}
				var r jobs.Result
				if err := json.Unmarshal(m.Data, &r); err != nil {
					t.Fatal(err)
				}
				if r.Attempt != attempt || m.Header.Get("Mtlsrelay-Call-Id") != id {
					t.Errorf("message %d: attempt %d, call id header %q", attempt, r.Attempt, m.Header.Get("Mtlsrelay-Call-Id"))
				}
				if attempt < 3 {
					wantID := id + "/progress/" + strconv.Itoa(attempt)
					if !r.Progress || r.OK || r.Status != 503 || r.RetryInMS <= 0 || r.Error == nil || r.Error.Code != jobs.CodeHTTPStatus ||
						m.Header.Get("Mtlsrelay-Progress") != strconv.Itoa(attempt) || m.Header.Get("Nats-Msg-Id") != wantID {
						t.Errorf("progress %d: %+v error %+v, headers %v; want a 503 progress message with Nats-Msg-Id %s", attempt, r, r.Error, m.Header, wantID)
					}
					continue
				}
				if r.Progress || !r.OK || r.RetryInMS != 0 || m.Header.Get("Mtlsrelay-Progress") != "" || m.Header.Get("Nats-Msg-Id") != id {
					t.Errorf("final: %+v, headers %v; want the final result with Nats-Msg-Id %s", r, m.Header, id)
				}
			}
			if !kept {
				return
			}
			// All three are kept: the final result was not taken for a duplicate.
			s, err := env.js.Stream(ctx, "MTLSRELAY_RESULTS")
			if err != nil {
				t.Fatal(err)
			}
			// The final result can arrive live before the stream counts it.
			checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
				info, err := s.Info(ctx, jetstream.WithSubjectFilter(reply))
				if err != nil {
					return err
				}
				if n := info.State.Subjects[reply]; n != 3 {
					return fmt.Errorf("MTLSRELAY_RESULTS keeps %d messages on %s, want 3", n, reply)
				}
				return nil
			})
		})
	}
	t.Run("ok/non-idempotent-post-not-retried-on-502", func(t *testing.T) {
		r := call(t, env.nc, env.js, "partner", map[string]any{"method": "POST", "path": "status/502"})
		if r.Status != 502 || r.Attempt != 1 {
			t.Errorf("POST 502: status=%d attempt=%d; a POST that reached the server must not be repeated", r.Status, r.Attempt)
		}
	})
	t.Run("ok/timing-and-metadata", func(t *testing.T) {
		r := call(t, env.nc, env.js, "partner", map[string]any{"path": "echo", "metadata": map[string]string{"flow": "f-1"}})
		if r.Metadata["flow"] != "f-1" || r.Timing.TotalMS <= 0 || r.Worker == "" || r.CompletedAt.IsZero() {
			t.Errorf("metadata/timing/worker missing: %+v", r)
		}
	})
}

func TestSOAP(t *testing.T) {
	env := newRelayEnv(t)
	for _, v := range []string{"1.1", "1.2"} {
		t.Run("ok/soap-"+v, func(t *testing.T) {
			r := call(t, env.nc, env.js, "partner", map[string]any{"path": "soap", "soap": map[string]any{
				"version": v, "action": "urn:getQuote",
				"header": `<h:Auth xmlns:h="urn:h">t</h:Auth>`,
				"body":   `<q:GetQuote xmlns:q="urn:q"><q:Symbol>ACME</q:Symbol></q:GetQuote>`,
			}})
			if !r.OK || r.SOAPFault != nil {
				t.Fatalf("soap %s: %+v", v, r)
			}
			if !strings.Contains(r.Body, "urn:getQuote") || !strings.Contains(r.Body, "ACME") {
				t.Errorf("soap %s: response does not echo action and body: %s", v, r.Body)
			}
		})
		t.Run("fail/soap-fault-"+v, func(t *testing.T) {
			r := call(t, env.nc, env.js, "partner", map[string]any{"path": "soap", "soap": map[string]any{
				"version": v, "action": "urn:fail", "body": `<q:Fail xmlns:q="urn:q"/>`,
			}})
			if r.OK || r.SOAPFault == nil || r.SOAPFault.Code == "" || r.SOAPFault.Reason == "" || r.Status != 500 {
				t.Fatalf("soap %s fault: ok=%v status=%d fault=%+v", v, r.OK, r.Status, r.SOAPFault)
			}
			if r.Error != nil {
				t.Errorf("a SOAP fault is a response, not an error: %+v", r.Error)
			}
		})
	}
}

// An operation of a SOAP 1.2 rpc/literal port (gSOAP's WSDL, read from a
// file) is sent as SOAP 1.2 with the WSDL's action; the WSDL's address
// (http://localhost...) is not one the connection allows, so the call goes
// to base_url and its path.
func TestSOAPOperationFromFileWSDL(t *testing.T) {
	env := newRelayEnv(t)
	r := call(t, env.nc, env.js, "gsoap-wsdl", map[string]any{"path": "soap", "soap": map[string]any{
		"operation": "Lookup", "body": `<inv:Lookup xmlns:inv="urn:inventory"><sku>A-1</sku></inv:Lookup>`,
	}})
	if !r.OK {
		t.Fatalf("Lookup: %+v %+v", r.Error, r.SOAPFault)
	}
	if !strings.Contains(r.Body, "urn:inventory#Lookup") || !strings.Contains(r.Body, "http://www.w3.org/2003/05/soap-envelope") {
		t.Errorf("the partner did not get a SOAP 1.2 request with action urn:inventory#Lookup: %s", r.Body)
	}
}

func TestErrorCodes(t *testing.T) {
	env := newRelayEnv(t)
	for _, tc := range []struct {
		name, conn string
		call       map[string]any
		want       jobs.Code
		retryable  bool
	}{
		{"fail/invalid-call", "partner", map[string]any{"method": "G ET"}, jobs.CodeInvalidCall, false},
		{"fail/unknown-connection", "nope", map[string]any{}, jobs.CodeUnknownConnection, false},
		{"fail/unknown-profile", "no-profile", map[string]any{}, jobs.CodeUnknownProfile, false},
		{"fail/host-not-allowed", "partner", map[string]any{"url": "https://evil.example/steal"}, jobs.CodeHostNotAllowed, false},
		{"fail/keystore-invalid", "corrupt", map[string]any{}, jobs.CodeKeystoreInvalid, false},
		{"fail/keystore-password-wrong", "wrong-password", map[string]any{}, jobs.CodeKeystorePasswordWrong, false},
		{"fail/client-cert-expired", "expired", map[string]any{}, jobs.CodeClientCertExpired, false},
		{"fail/client-cert-not-yet-valid", "future", map[string]any{}, jobs.CodeClientCertNotYetValid, false},
		{"fail/server-cert-untrusted", "untrusting", map[string]any{}, jobs.CodeServerCertUntrusted, false},
		{"fail/server-name-mismatch", "wrong-name", map[string]any{}, jobs.CodeServerNameMismatch, false},
		{"fail/client-cert-rejected-tls12", "rejecting-12", map[string]any{"path": "echo"}, jobs.CodeClientCertRejected, false},
		{"fail/client-cert-rejected-tls13", "rejecting-13", map[string]any{"path": "echo"}, jobs.CodeClientCertRejected, false},
		{"fail/connect-failed", "closed", map[string]any{}, jobs.CodeConnectFailed, true},
		{"fail/timeout", "short", map[string]any{"path": "slow?ms=3000"}, jobs.CodeTimeout, true},
		{"fail/response-too-large", "small", map[string]any{"path": "bytes?n=1000"}, jobs.CodeResponseTooLarge, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := call(t, env.nc, env.js, tc.conn, tc.call)
			if r.OK || r.Error == nil {
				t.Fatalf("want error %s, got ok=%v status=%d", tc.want, r.OK, r.Status)
			}
			if r.Error.Code != tc.want {
				t.Fatalf("code = %s (%s), want %s", r.Error.Code, r.Error.Message, tc.want)
			}
			if r.Error.Retryable != tc.retryable {
				t.Errorf("retryable = %v, want %v", r.Error.Retryable, tc.retryable)
			}
			if len(r.Error.Message) < 20 {
				t.Errorf("message %q is too short to act on", r.Error.Message)
			}
			if strings.Contains(r.Error.Message, fixturePassword) || strings.Contains(r.Error.Message, "not-the-password") {
				t.Errorf("message leaks a password: %s", r.Error.Message)
			}
			if tc.retryable && r.Attempt < 2 {
				t.Errorf("retryable failure reported after %d attempt(s); want the connection's max_attempts", r.Attempt)
			}
			// A failed final result is also dead-lettered.
			checkDeadLetter(t, env, r.ID)
		})
	}
	assertNoSecrets(t, "worker log", env.logs.String())
}

// checkDeadLetter waits for the dead letter of call id in MTLSRELAY_DEAD.
func checkDeadLetter(t *testing.T, env *relayEnv, id string) {
	t.Helper()
	checkFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if _, ok := deadLetters(t, env.js)[id]; !ok {
			return fmt.Errorf("no dead letter for call %s", id)
		}
		return nil
	})
}

// deadLetters reads every message of MTLSRELAY_DEAD: call id -> reason.
func deadLetters(t *testing.T, js jetstream.JetStream) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, jobs.StreamDead)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			continue
		}
		out[m.Header.Get("Mtlsrelay-Call-Id")] = m.Header.Get("Mtlsrelay-Dead-Reason")
	}
	return out
}

func assertNoSecrets(t *testing.T, what, s string) {
	t.Helper()
	for _, secret := range []string{fixturePassword, "not-the-password"} {
		if strings.Contains(s, secret) {
			i := strings.Index(s, secret)
			t.Errorf("%s contains a keystore password near: %q", what, s[max(0, i-200):min(len(s), i+50)])
		}
	}
	if strings.Contains(s, "PRIVATE KEY") {
		t.Errorf("%s contains private key material", what)
	}
}

func TestMalformedAndPoisonCalls(t *testing.T) {
	env := newRelayEnv(t)
	for i, raw := range []string{`{not json`, `[]`, `{"id":"x"}{"id":"y"}`, strings.Repeat("\xff", 100), `{"id":"has space","reply_to":"mtlsrelay.results.bad"}`} {
		msg := nats.NewMsg("mtlsrelay.calls.partner")
		msg.Data = []byte(raw)
		msg.Header.Set("Nats-Msg-Id", fmt.Sprintf("poison-%d-%d", os.Getpid(), i))
		if _, err := env.js.PublishMsg(context.Background(), msg); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("fail/no-reply-to-dead-lettered", func(t *testing.T) {
		id := uniqueID("noreply")
		msg := nats.NewMsg("mtlsrelay.calls.partner")
		msg.Data = []byte(`{"id":"` + id + `","path":"echo"}`)
		if _, err := env.js.PublishMsg(context.Background(), msg); err != nil {
			t.Fatal(err)
		}
		checkDeadLetter(t, env, id)
		checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
			if !strings.Contains(env.logs.String(), "no reply_to") {
				return fmt.Errorf("reason not logged")
			}
			return nil
		})
	})
	t.Run("ok/worker-still-serves", func(t *testing.T) {
		decodeEcho(t, call(t, env.nc, env.js, "partner", map[string]any{"path": "echo"}))
	})
	t.Run("ok/poison-in-dead-stream-and-calls-stream-empty", func(t *testing.T) {
		checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
			s, err := env.js.Stream(context.Background(), jobs.StreamDead)
			if err != nil {
				return err
			}
			info, err := s.Info(context.Background())
			if err != nil {
				return err
			}
			if info.State.Msgs < 6 {
				return fmt.Errorf("dead letters = %d, want at least 6", info.State.Msgs)
			}
			cs, err := env.js.Stream(context.Background(), jobs.StreamCalls)
			if err != nil {
				return err
			}
			ci, err := cs.Info(context.Background())
			if err != nil {
				return err
			}
			if ci.State.Msgs != 0 {
				return fmt.Errorf("calls stream still holds %d messages", ci.State.Msgs)
			}
			return nil
		})
	})
}

// sameSerial compares hex serials however they are cased or zero-padded.
func sameSerial(a, b string) bool {
	norm := func(s string) string { return strings.TrimLeft(strings.ToLower(strings.ReplaceAll(s, ":", "")), "0") }
	return norm(a) != "" && norm(a) == norm(b)
}
