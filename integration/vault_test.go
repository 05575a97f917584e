package integration

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"software.sslmate.com/src/go-pkcs12"

	"github.com/mtlsrelay/mtlsrelay/internal/partner"
	"github.com/mtlsrelay/mtlsrelay/internal/testvault"
	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/secrets"
	"github.com/mtlsrelay/mtlsrelay/secrets/vault"
)

// The Vault tests run the real worker against a real Vault dev server
// (internal/testvault) and real mTLS partners.

// vaultRelayConfig is a worker config whose profiles keep their secrets in
// Vault. Retries are quick, so a call waiting for Vault retries often.
const vaultRelayConfig = `
worker:
  concurrency: 8
  admin_addr: "off"
  retry_base: 20ms
  retry_max: 200ms
  ack_wait: 5s
log: {level: debug, format: json}
profiles:
  kv-a:      {keystore: "vault:secret/partners/a#keystore", password: "vault:secret/partners/a#password", truststore: "file:FIX/ca.pem"}
  rotating:  {keystore: "vault:secret/partners/rotating#keystore", password: "vault:secret/partners/rotating#password", truststore: "vault:secret/partners/trust#ca"}
  pki:       {keystore: "vault-pki:pki/issue/client?common_name=relay.example&ttl=1h", truststore: "file:FIX/ca.pem"}
  cached:    {keystore: "vault:secret/partners/cached#keystore", password: "vault:secret/partners/cached#password", truststore: "file:FIX/ca.pem"}
  late:      {keystore: "vault:secret/partners/late#keystore", password: "vault:secret/partners/late#password", truststore: "file:FIX/ca.pem"}
connections:
  kv-a:     {base_url: "PARTNER", profile: kv-a}
  rotating: {base_url: "PARTNER", profile: rotating}
  pki:      {base_url: "PKIPARTNER", profile: pki}
  cached:   {base_url: "PARTNER", profile: cached}
  late:     {base_url: "PARTNER", profile: late, max_attempts: 100}
`

type vaultRelay struct {
	v        *testvault.Vault
	nc       *nats.Conn
	js       jetstream.JetStream
	logs     *syncBuffer
	keystore string   // base64 of client-openssl.p12, as kept in Vault
	rotated  []string // base64 keystores written to Vault by rotation tests
	never    []string // credentials no log or result may hold
}

// startVaultRelay starts Vault seeded with partner keystores, a PKI engine
// and role, two partners (one trusting only the Vault PKI's CA), NATS, and a
// worker whose sources include a Vault client configured by cfg.
func startVaultRelay(t *testing.T, v *testvault.Vault, cfg vault.Config, never ...string) *vaultRelay {
	t.Helper()
	p12, err := os.ReadFile(fixture(t, "client-openssl.p12"))
	if err != nil {
		t.Fatal(err)
	}
	env := &vaultRelay{v: v, logs: &syncBuffer{}, keystore: base64.StdEncoding.EncodeToString(p12),
		never: append([]string{v.RootToken}, never...)}
	// Profile "late" has no secret yet: it cannot load until a test writes
	// it, so it stays uncached however the worker preloads profiles.
	env.seed(t, "a", "rotating", "cached")
	pkiCA := v.PKI("pki", "client", map[string]any{"allowed_domains": "relay.example", "allow_bare_domains": true, "allow_any_name": false})
	pkiPool := x509.NewCertPool()
	pkiPool.AddCert(pkiCA)
	p := startPartner(t)
	pkiPartner := startPartner(t, func(o *partner.Options) { o.ClientCAs = pkiPool })
	srv := startNATS(t)

	cfg.Address = v.Addr
	log := zerolog.New(env.logs).Level(zerolog.DebugLevel)
	sources := secrets.DefaultSources(fixtures(t))
	client, err := vault.New(context.Background(), cfg, sources, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	client.Register(sources)
	yaml := configYAML(t, vaultRelayConfig,
		"PKIPARTNER", "https://localhost:"+port(pkiPartner.URL())+"/",
		"PARTNER", "https://localhost:"+port(p.URL())+"/")
	startWorkerWithResolver(t, srv.ClientURL(), yaml, secrets.NewResolver(sources), log)
	env.nc, env.js = connect(t, srv.ClientURL())
	t.Cleanup(func() { env.assertNoVaultSecrets(t, "worker logs", env.logs.String()) })
	return env
}

// seed writes the KV secrets of the named partners and the truststore
// (again after a restart, as dev mode forgets everything).
func (env *vaultRelay) seed(t *testing.T, partners ...string) {
	t.Helper()
	ca, err := os.ReadFile(fixture(t, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range partners {
		env.v.PutKV("secret", "partners/"+name, map[string]any{"keystore": env.keystore, "password": fixturePassword})
	}
	env.v.PutKV("secret", "partners/trust", map[string]any{"ca": string(ca)})
}

// assertNoVaultSecrets checks s for passwords, tokens and any piece of the
// keystore kept in Vault.
func (env *vaultRelay) assertNoVaultSecrets(t *testing.T, what, s string) {
	t.Helper()
	assertNoSecrets(t, what, s)
	for _, n := range env.never {
		if n != "" && strings.Contains(s, n) {
			t.Errorf("%s contains a Vault credential (%.6s...)", what, n)
		}
	}
	for _, ks := range append([]string{env.keystore}, env.rotated...) {
		for i := 0; i+40 <= len(ks); i += 400 {
			if strings.Contains(s, ks[i:i+40]) {
				t.Errorf("%s contains a keystore kept in Vault", what)
				return
			}
		}
	}
}

func (env *vaultRelay) call(t *testing.T, conn string, c map[string]any) *jobs.Result {
	t.Helper()
	r := call(t, env.nc, env.js, conn, c)
	data, _ := json.Marshal(r)
	env.assertNoVaultSecrets(t, "result", string(data))
	return r
}

// tryCall is call for goroutines other than the test's: it returns what
// went wrong instead of failing the test.
func tryCall(nc *nats.Conn, js jetstream.JetStream, conn, id string, c map[string]any) (*jobs.Result, error) {
	reply := "mtlsrelay.results.test." + id
	c["id"], c["reply_to"] = id, reply
	data, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	sub, err := nc.SubscribeSync(reply)
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe()
	msg := nats.NewMsg("mtlsrelay.calls." + conn)
	msg.Data = data
	msg.Header.Set("Nats-Msg-Id", id)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		return nil, err
	}
	m, err := sub.NextMsgWithContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("no result for %s: %w", id, err)
	}
	var r jobs.Result
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// callLoop makes a call to conn about every 50ms, at most max calls and
// for at most limit, until stop is closed. The returned function waits for
// the loop and returns the serials the partner saw, in order, and the
// calls that failed.
func callLoop(env *vaultRelay, conn string, max int, limit time.Duration, stop <-chan struct{}) (latest func() string, wait func() (serials []string, failures []string)) {
	var (
		mu   sync.Mutex
		seen []string
		bad  []string
		done = make(chan struct{})
	)
	go func() {
		defer close(done)
		end := time.Now().Add(limit)
		for i := 0; i < max && time.Now().Before(end); i++ {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			r, err := tryCall(env.nc, env.js, conn, uniqueID("loop-"+conn), map[string]any{"path": "echo"})
			mu.Lock()
			switch {
			case err != nil:
				bad = append(bad, err.Error())
			case !r.OK:
				bad = append(bad, fmt.Sprintf("status %d error %+v", r.Status, r.Error))
			default:
				var e partner.EchoResponse
				if json.Unmarshal([]byte(r.Body), &e) != nil || e.ClientCert == nil {
					bad = append(bad, "echo without client certificate")
				} else {
					seen = append(seen, e.ClientCert.Serial)
				}
			}
			mu.Unlock()
		}
	}()
	latest = func() string {
		mu.Lock()
		defer mu.Unlock()
		if len(seen) == 0 {
			return ""
		}
		return seen[len(seen)-1]
	}
	wait = func() ([]string, []string) {
		<-done
		mu.Lock()
		defer mu.Unlock()
		return seen, bad
	}
	return latest, wait
}

// rotatedKeystore returns a PKCS#12 keystore (base64) of a new client
// certificate signed by the fixture CA, and that certificate's serial.
func rotatedKeystore(t *testing.T) (string, string) {
	t.Helper()
	ca, err := tls.LoadX509KeyPair(fixture(t, "ca.pem"), fixture(t, "ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "mtlsrelay-rotated-client"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Leaf, &key.PublicKey, ca.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	p12, err := pkcs12.Modern.Encode(key, cert, []*x509.Certificate{ca.Leaf}, fixturePassword)
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(p12), cert.SerialNumber.Text(16)
}

// vaultSerials lists the serials of the certificates Vault's PKI issued.
func vaultSerials(t *testing.T, v *testvault.Vault) []string {
	t.Helper()
	s, err := v.Client.Logical().List("pki/certs")
	if err != nil || s == nil {
		t.Fatalf("list pki/certs: %v", err)
	}
	keys, _ := s.Data["keys"].([]any)
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		out = append(out, strings.ReplaceAll(fmt.Sprint(k), "-", ":"))
	}
	return out
}

func TestVaultRelay(t *testing.T) {
	v := testvault.Start(t)
	// The dev root token outlives a Restart, so the worker's login does too.
	tokenFile := t.TempDir() + "/vault-token"
	if err := os.WriteFile(tokenFile, []byte(v.RootToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := startVaultRelay(t, v, vault.Config{PollInterval: 200 * time.Millisecond, Auth: vault.AuthConfig{Token: "file:" + tokenFile}})

	t.Run("ok/keystore-and-password-from-vault-kv", func(t *testing.T) {
		e := decodeEcho(t, env.call(t, "kv-a", map[string]any{"path": "echo"}))
		if e.ClientCert == nil || !strings.Contains(e.ClientCert.Subject, "mtlsrelay-test-client") {
			t.Fatalf("partner saw client %+v, want the keystore kept in Vault", e.ClientCert)
		}
	})
	t.Run("ok/certificate-from-vault-pki", func(t *testing.T) {
		r := env.call(t, "pki", map[string]any{"path": "echo"})
		e := decodeEcho(t, r)
		if e.ClientCert == nil || !strings.Contains(e.ClientCert.Subject, "relay.example") {
			t.Fatalf("partner saw client %+v, want CN=relay.example from Vault PKI", e.ClientCert)
		}
		if r.ClientCert == nil || !sameSerial(r.ClientCert.Serial, e.ClientCert.Serial) {
			t.Errorf("result reports client certificate %+v, partner saw serial %s", r.ClientCert, e.ClientCert.Serial)
		}
		found := false
		for _, s := range vaultSerials(t, v) {
			found = found || sameSerial(s, e.ClientCert.Serial)
		}
		if !found {
			t.Errorf("serial %s the partner saw is not among those Vault issued: %v", e.ClientCert.Serial, vaultSerials(t, v))
		}
	})
	t.Run("ok/rotation-without-restart-or-failed-call", func(t *testing.T) {
		first := decodeEcho(t, env.call(t, "rotating", map[string]any{"path": "echo"})).ClientCert.Serial
		newKeystore, newSerial := rotatedKeystore(t)
		env.rotated = append(env.rotated, newKeystore)
		stop := make(chan struct{})
		latest, wait := callLoop(env, "rotating", 1200, 60*time.Second, stop)
		checkFor(t, 20*time.Second, 20*time.Millisecond, func() error {
			if latest() == "" {
				return fmt.Errorf("no call through yet")
			}
			return nil
		})
		v.PutKV("secret", "partners/rotating", map[string]any{"keystore": newKeystore, "password": fixturePassword})
		checkFor(t, 30*time.Second, 20*time.Millisecond, func() error {
			if !sameSerial(latest(), newSerial) {
				return fmt.Errorf("partner still sees serial %s, want the rotated %s", latest(), newSerial)
			}
			return nil
		})
		close(stop)
		serials, failures := wait()
		if len(failures) > 0 {
			t.Errorf("%d of %d calls failed during rotation; first: %s", len(failures), len(serials)+len(failures), failures[0])
		}
		if !sameSerial(serials[0], first) {
			t.Errorf("the loop's first call used serial %s, want the original %s", serials[0], first)
		}
		t.Logf("%d calls during rotation, serial %s then %s", len(serials), first, newSerial)
	})
	t.Run("ok/vault-down-cached-profile-keeps-working-uncached-waits", func(t *testing.T) {
		decodeEcho(t, env.call(t, "cached", map[string]any{"path": "echo"}))
		v.Stop()
		// The cached profile keeps calling while its source fails; the log
		// says the worker asked Vault and kept the keystore loaded before.
		checkFor(t, 20*time.Second, 50*time.Millisecond, func() error {
			decodeEcho(t, env.call(t, "cached", map[string]any{"path": "echo"}))
			if !strings.Contains(env.logs.String(), "still using the keystore loaded before") {
				return fmt.Errorf("Vault not consulted yet")
			}
			return nil
		})
		// The uncached profile fails retryably. (Its secret was missing
		// when the worker preloaded it; that answer is cached for a second.)
		var r *jobs.Result
		checkFor(t, 10*time.Second, 50*time.Millisecond, func() error {
			r = env.call(t, "late", map[string]any{"path": "echo", "max_attempts": 1})
			if r.Error == nil || r.Error.Code != jobs.CodeSecretUnavailable || !r.Error.Retryable {
				return fmt.Errorf("uncached profile with Vault down: error %+v, want retryable secret_unavailable", r.Error)
			}
			return nil
		})
		for _, s := range []string{`profile "late"`, v.Addr, "unreachable"} {
			if !strings.Contains(r.Error.Message, s) {
				t.Errorf("message %q does not mention %q", r.Error.Message, s)
			}
		}

		// A call with many attempts waits for Vault to come back.
		id := uniqueID(t.Name())
		reply := "mtlsrelay.results.test." + id
		sub, err := env.nc.SubscribeSync(reply)
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
		data, _ := json.Marshal(map[string]any{"id": id, "reply_to": reply, "path": "echo", "max_attempts": 100})
		msg := nats.NewMsg("mtlsrelay.calls.late")
		msg.Data = data
		msg.Header.Set("Nats-Msg-Id", id)
		if _, err := env.js.PublishMsg(context.Background(), msg); err != nil {
			t.Fatal(err)
		}
		checkFor(t, 20*time.Second, 20*time.Millisecond, func() error {
			for _, line := range strings.Split(env.logs.String(), "\n") {
				if strings.Contains(line, id) && strings.Contains(line, "attempt failed; retrying") && strings.Contains(line, "secret_unavailable") {
					return nil
				}
			}
			return fmt.Errorf("call %s has not failed an attempt with secret_unavailable yet", id)
		})
		v.Restart()
		env.seed(t, "a", "rotating", "cached", "late")
		m, err := sub.NextMsg(60 * time.Second)
		if err != nil {
			t.Fatalf("no result after Vault came back: %v", err)
		}
		var res jobs.Result
		if err := json.Unmarshal(m.Data, &res); err != nil {
			t.Fatal(err)
		}
		if !res.OK || res.Attempt < 2 {
			t.Fatalf("result after Vault came back: ok=%v attempt=%d error=%+v; want ok after more than one attempt", res.OK, res.Attempt, res.Error)
		}
		env.assertNoVaultSecrets(t, "result", string(m.Data))
		t.Logf("call waiting for Vault succeeded on attempt %d", res.Attempt)
	})
}

func TestVaultRelayAppRole(t *testing.T) {
	v := testvault.Start(t)
	v.Policy("relay", `path "secret/data/partners/*" { capabilities = ["read"] }
path "pki/issue/client" { capabilities = ["update"] }`)
	roleID, secretID := v.AppRole("approle", "relay", []string{"relay"}, map[string]any{"token_ttl": "2s", "token_max_ttl": "5s"})
	secretFile := t.TempDir() + "/secret-id"
	if err := os.WriteFile(secretFile, []byte(secretID), 0o600); err != nil {
		t.Fatal(err)
	}
	env := startVaultRelay(t, v, vault.Config{PollInterval: 100 * time.Millisecond, Auth: vault.AuthConfig{
		Method: vault.AuthAppRole, RoleID: "value:" + roleID, SecretID: "file:" + secretFile,
	}}, secretID)

	stop := make(chan struct{})
	latest, wait := callLoop(env, "kv-a", 1200, 60*time.Second, stop)
	// Calls run while the worker's token is renewed and, at its max TTL,
	// replaced by a new login: three logins span two max TTLs.
	checkFor(t, 45*time.Second, 50*time.Millisecond, func() error {
		logs := env.logs.String()
		logins, renewals := strings.Count(logs, "logged in to Vault"), strings.Count(logs, "renewed the Vault token")
		if logins < 3 || renewals < 2 || latest() == "" {
			return fmt.Errorf("%d logins, %d renewals so far", logins, renewals)
		}
		return nil
	})
	// The worker still reads Vault with its latest token: a rotated
	// keystore reaches the partner.
	newKeystore, newSerial := rotatedKeystore(t)
	env.rotated = append(env.rotated, newKeystore)
	v.PutKV("secret", "partners/a", map[string]any{"keystore": newKeystore, "password": fixturePassword})
	checkFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		if !sameSerial(latest(), newSerial) {
			return fmt.Errorf("partner still sees serial %s, want %s", latest(), newSerial)
		}
		return nil
	})
	close(stop)
	serials, failures := wait()
	if len(failures) > 0 {
		t.Errorf("%d of %d calls failed across token renewals; first: %s", len(failures), len(serials)+len(failures), failures[0])
	}
	if strings.Contains(env.logs.String(), "secret source failed") {
		t.Errorf("a Vault read failed while the token was renewed or replaced:\n%s", env.logs.String())
	}
	decodeEcho(t, env.call(t, "pki", map[string]any{"path": "echo"}))
	t.Logf("%d calls across token renewals and logins", len(serials))
}

// TestVaultFromEnvironment runs the worker binary with a config whose
// profile keeps its keystore in Vault but that has no vault: section: the
// operator relies on VAULT_ADDR and VAULT_TOKEN, the documented defaults.
// Before, every call failed with "scheme vault: is not supported by this
// build yet".
func TestVaultFromEnvironment(t *testing.T) {
	v := testvault.Start(t)
	p12, err := os.ReadFile(fixture(t, "client-openssl.p12"))
	if err != nil {
		t.Fatal(err)
	}
	v.PutKV("secret", "partners/env", map[string]any{"keystore": base64.StdEncoding.EncodeToString(p12), "password": fixturePassword})
	srv := startNATS(t)
	p := startPartner(t)
	cfg := writeConfig(t, `
worker: {concurrency: 4, admin_addr: "off"}
registry: {disabled: true}
log: {level: debug, format: json}
profiles:
  env: {keystore: "vault:secret/partners/env#keystore", password: "vault:secret/partners/env#password", truststore: "file:FIX/ca.pem"}
connections:
  partner: {base_url: "PARTNER", profile: env}
`, "PARTNER", p.URL())
	w := startWorkerProcess(t, srv.ClientURL(), cfg, "vault-env", "VAULT_ADDR="+v.Addr, "VAULT_TOKEN="+v.RootToken)
	nc, js := connect(t, srv.ClientURL())
	r := call(t, nc, js, "partner", map[string]any{"path": "echo"})
	if !r.OK {
		t.Fatalf("call failed: %+v\n%s", r.Error, w.logs.String())
	}
	if e := decodeEcho(t, r); e.ClientCert == nil || !strings.Contains(e.ClientCert.Subject, "mtlsrelay-test-client") {
		t.Errorf("partner saw client %+v, want the keystore kept in Vault", e.ClientCert)
	}
	if strings.Contains(w.logs.String(), v.RootToken) {
		t.Error("the worker logged the Vault token")
	}
}
