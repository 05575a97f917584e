package integration

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/mtlsrelay/mtlsrelay/internal/fakeccp"
	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/secrets"
	"github.com/mtlsrelay/mtlsrelay/secrets/cyberark"
)

// The CyberArk tests run the real worker against internal/fakeccp, a fake
// Central Credential Provider built from CyberArk's documented GetPassword
// REST API (no CyberArk software can run here), over real TLS with the CCP
// demanding a client certificate.

// cyberArkConfig is a worker config whose profiles keep their keystore and
// password in CyberArk. Retries are quick so a retryable failure reports
// its final result (after max_attempts 2) within the test.
const cyberArkConfig = `
worker:
  concurrency: 4
  admin_addr: "off"
  retry_base: 20ms
  retry_max: 100ms
  ack_wait: 5s
log: {level: debug, format: json}
profiles:
  partner-a:
    keystore: "cyberark:Partners/partner-a-keystore#Content"
    password: "cyberark:Partners/partner-a-password#Content"
    truststore: "file:FIX/ca.pem"
  missing:
    keystore: "cyberark:Partners/no-such-keystore#Content"
    password: "cyberark:Partners/partner-a-password#Content"
    truststore: "file:FIX/ca.pem"
connections:
  partner-a: {base_url: "PARTNER", profile: partner-a, max_attempts: 2}
  missing:   {base_url: "PARTNER", profile: missing, max_attempts: 2}
`

// ccpAppID is the AppID the fake CCP knows the workers by.
const ccpAppID = "mtlsrelay"

type cyberArkEnv struct {
	ccp      *fakeccp.Server
	nc       *nats.Conn
	js       jetstream.JetStream
	logs     *syncBuffer
	keystore string // the base64 keystore text kept in CyberArk
}

// startCyberArkRelay starts a fake CCP holding partner A's keystore (base64
// of client-openssl.p12) and password, a partner, NATS, and a worker whose
// secret sources include a CyberArk client configured by mutate.
func startCyberArkRelay(t *testing.T, mutate func(*cyberark.Config)) *cyberArkEnv {
	t.Helper()
	srvCert, err := tls.LoadX509KeyPair(fixture(t, "server.pem"), fixture(t, "server.key"))
	if err != nil {
		t.Fatal(err)
	}
	// The CCP, like an IIS site requiring client certificates, accepts
	// those of the fixture CA, and AppID mtlsrelay only with the fixture
	// client certificate.
	ccp, err := fakeccp.Start(fakeccp.Options{Certificate: srvCert, ClientCAs: poolFromPEM("ca.pem")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ccp.Close() })
	clientCert, err := tls.LoadX509KeyPair(fixture(t, "client.pem"), fixture(t, "client.pem"))
	if err != nil {
		t.Fatal(err)
	}
	ccp.AddApp(fakeccp.App{ID: ccpAppID, CertificateSerials: []string{clientCert.Leaf.SerialNumber.Text(16)}})
	p12, err := os.ReadFile(fixture(t, "client-openssl.p12"))
	if err != nil {
		t.Fatal(err)
	}
	env := &cyberArkEnv{ccp: ccp, logs: &syncBuffer{}, keystore: base64.StdEncoding.EncodeToString(p12)}
	ccp.Add("Partners", "Root", "partner-a-keystore", map[string]string{"Content": env.keystore, "UserName": "partner-a"})
	ccp.Add("Partners", "Root", "partner-a-password", map[string]string{"Content": fixturePassword, "UserName": "partner-a"})

	ccpCfg := cyberark.Config{
		URL:            ccp.URL(),
		AppID:          ccpAppID,
		ClientKeystore: "file:client.pem",
		Truststore:     "file:ca.pem",
		Reason:         "mtlsrelay integration test",
		Timeout:        2 * time.Second,
	}
	if mutate != nil {
		mutate(&ccpCfg)
	}
	p := startPartner(t)
	srv := startNATS(t)
	cfg := configYAML(t, cyberArkConfig, "PARTNER", "https://localhost:"+port(p.URL())+"/")
	log := zerolog.New(env.logs).Level(zerolog.DebugLevel)
	sources := secrets.DefaultSources(fixtures(t))
	client, err := cyberark.New(context.Background(), ccpCfg, sources, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	client.Register(sources)
	startWorkerWithResolver(t, srv.ClientURL(), cfg, secrets.NewResolver(sources), log)
	env.nc, env.js = connect(t, srv.ClientURL())
	return env
}

// assertNoCyberArkSecrets checks s for the passwords and for any piece of
// the keystore kept in CyberArk.
func (env *cyberArkEnv) assertNoCyberArkSecrets(t *testing.T, what, s string) {
	t.Helper()
	assertNoSecrets(t, what, s)
	for i := 0; i+40 <= len(env.keystore); i += 400 {
		if strings.Contains(s, env.keystore[i:i+40]) {
			t.Errorf("%s contains the keystore kept in CyberArk", what)
			return
		}
	}
}

func (env *cyberArkEnv) assertResult(t *testing.T, r *jobs.Result) {
	t.Helper()
	data, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	env.assertNoCyberArkSecrets(t, "result", string(data))
}

func TestCyberArkRelay(t *testing.T) {
	env := startCyberArkRelay(t, nil)
	t.Run("ok/keystore-and-password-from-cyberark", func(t *testing.T) {
		r := call(t, env.nc, env.js, "partner-a", map[string]any{"path": "echo"})
		e := decodeEcho(t, r)
		if e.ClientCert == nil || !strings.Contains(e.ClientCert.Subject, "mtlsrelay-test-client") {
			t.Fatalf("partner saw client %+v, want the keystore kept in CyberArk", e.ClientCert)
		}
		env.assertResult(t, r)
		var got []fakeccp.Request
		for _, req := range env.ccp.Requests() {
			if req.Status == 200 {
				got = append(got, req)
			}
		}
		if len(got) < 2 || got[0].AppID != ccpAppID || got[0].Folder != "Root" || got[0].Reason != "mtlsrelay integration test" || got[0].ClientSerial == "" {
			t.Errorf("the CCP saw %+v; want GetPassword requests by AppID %s with its client certificate", got, ccpAppID)
		}
	})
	t.Run("fail/unknown-object", func(t *testing.T) {
		r := call(t, env.nc, env.js, "missing", map[string]any{"path": "echo"})
		if r.Error == nil || r.Error.Code != jobs.CodeSecretUnavailable || r.Error.Retryable || r.Attempt != 1 {
			t.Fatalf("got error %+v after %d attempt(s); want secret_unavailable, not retryable, on attempt 1", r.Error, r.Attempt)
		}
		for _, s := range []string{`profile "missing"`, "Safe=Partners", "Object=no-such-keystore", "APPAP004E"} {
			if !strings.Contains(r.Error.Message, s) {
				t.Errorf("message does not mention %q: %s", s, r.Error.Message)
			}
		}
		env.assertResult(t, r)
	})
	env.assertNoCyberArkSecrets(t, "worker log", env.logs.String())
}

func TestCyberArkRelayFailures(t *testing.T) {
	for _, tc := range []struct {
		name      string
		mutate    func(*cyberark.Config)
		retryable bool
		wantIn    []string
	}{
		{"fail/wrong-app-id", func(c *cyberark.Config) { c.AppID = "not-mtlsrelay" }, false,
			[]string{`AppID "not-mtlsrelay"`, "APPAP008E"}},
		{"fail/ccp-unreachable", func(c *cyberark.Config) { c.URL = "https://127.0.0.1:" + closedPort(t) }, true,
			[]string{"is unreachable", "cached profiles keep working"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := startCyberArkRelay(t, tc.mutate)
			r := call(t, env.nc, env.js, "partner-a", map[string]any{"path": "echo"})
			if r.Error == nil || r.Error.Code != jobs.CodeSecretUnavailable || r.Error.Retryable != tc.retryable {
				t.Fatalf("got error %+v; want secret_unavailable with retryable=%v", r.Error, tc.retryable)
			}
			wantAttempts := 1
			if tc.retryable {
				wantAttempts = 2 // the connection's max_attempts
			}
			if r.Attempt != wantAttempts {
				t.Errorf("final result from attempt %d, want %d", r.Attempt, wantAttempts)
			}
			for _, s := range append([]string{`profile "partner-a"`}, tc.wantIn...) {
				if !strings.Contains(r.Error.Message, s) {
					t.Errorf("message does not mention %q: %s", s, r.Error.Message)
				}
			}
			env.assertResult(t, r)
			env.assertNoCyberArkSecrets(t, "worker log", env.logs.String())
		})
	}
}
