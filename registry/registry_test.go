package registry_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/mtlsrelay/mtlsrelay/catalog"
	"github.com/mtlsrelay/mtlsrelay/internal/pki"
	"github.com/mtlsrelay/mtlsrelay/internal/testutil"
	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/registry"
	"github.com/mtlsrelay/mtlsrelay/secrets"
)

// fixturePassword is the password of the keystores in secrets/testdata.
const fixturePassword = "fixture-pass-123"

func fixture(t testing.TB, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "secrets", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(fixture(t, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// startJS starts a real NATS server with JetStream and returns a client.
func startJS(t testing.TB) jetstream.JetStream {
	t.Helper()
	_, js := testutil.StartJetStream(t)
	return js
}

// newKey returns a fresh registry key as a value: reference of its base64 text.
func newKey(t testing.TB) string {
	t.Helper()
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return "value:" + base64.StdEncoding.EncodeToString(b)
}

// openRegistry opens a registry with key (a reference, "" for none) on js.
func openRegistry(t testing.TB, js jetstream.JetStream, key string) *registry.Registry {
	t.Helper()
	reg, err := registry.Open(context.Background(), js, registry.Options{Key: key})
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

func rawKV(t testing.TB, js jetstream.JetStream) jetstream.KeyValue {
	t.Helper()
	kv, err := js.KeyValue(context.Background(), jobs.RegistryBucket)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// wantCode fails unless err carries code, and checks it holds no password.
func wantCode(t testing.TB, err error, code jobs.Code) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %s", code)
	}
	if got := jobs.CodeOf(err); got != code {
		t.Fatalf("code = %s, want %s: %v", got, code, err)
	}
	noSecret(t, err.Error())
}

func noSecret(t testing.TB, s string) {
	t.Helper()
	for _, pw := range []string{fixturePassword, "not-the-password"} {
		if strings.Contains(s, pw) {
			t.Errorf("text contains a password: %s", s)
		}
	}
}

// opensslProfile is a profile for the uploaded client-openssl.p12.
func opensslProfile(t testing.TB, password string) secrets.Profile {
	return secrets.Profile{Password: password, Truststore: "file:" + fixture(t, "ca.pem")}
}

func TestProfileLifecycle(t *testing.T) {
	js := startJS(t)
	reg := openRegistry(t, js, newKey(t))
	ctx := context.Background()
	p12 := readFixture(t, "client-openssl.p12")

	if err := reg.PutProfile(ctx, "partner-a", opensslProfile(t, "value:"+fixturePassword), p12); err != nil {
		t.Fatal(err)
	}
	e, err := reg.GetProfile(ctx, "partner-a")
	if err != nil {
		t.Fatal(err)
	}
	if !e.KeystoreUploaded || e.Profile.Keystore != "registry:keystores/partner-a" {
		t.Errorf("keystore = %q (uploaded %v), want registry:keystores/partner-a", e.Profile.Keystore, e.KeystoreUploaded)
	}
	if e.Profile.Password != "registry:profiles/partner-a/password" || len(e.Sealed) != 1 {
		t.Errorf("password = %q sealed %v, want the sealed reference", e.Profile.Password, e.Sealed)
	}
	out, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	noSecret(t, string(out))
	if !strings.Contains(string(out), `"password":"[sealed]"`) {
		t.Errorf("get JSON does not show the password as [sealed]: %s", out)
	}
	noSecret(t, fmt.Sprintf("%v %+v %#v", e, e, e))

	// The raw KV values hold the sealed form only.
	kv := rawKV(t, js)
	raw, err := kv.Get(ctx, "profiles.partner-a")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw.Value(), []byte(fixturePassword)) || !bytes.Contains(raw.Value(), []byte(`"password":"sealed:v1:`)) {
		t.Errorf("raw profile value is not sealed: %s", raw.Value())
	}
	ks, err := kv.Get(ctx, "keystores.partner-a")
	if err != nil || !bytes.Equal(ks.Value(), p12) {
		t.Fatalf("keystores.partner-a: %v", err)
	}

	// A worker's sources resolve the profile as the registry hands it out.
	sources := secrets.DefaultSources("")
	sources.Register(secrets.SchemeRegistry, reg.Source())
	m, err := secrets.NewResolver(sources).Resolve(ctx, "partner-a", e.Profile)
	if err != nil {
		t.Fatal(err)
	}
	if cn := m.Leaf.Subject.CommonName; cn != "mtlsrelay-test-client" {
		t.Errorf("client certificate CN = %q", cn)
	}
	sec, err := reg.Source().Fetch(ctx, secrets.Ref{Scheme: "registry", Body: "keystores/partner-a"})
	if err != nil || sec.Version != fmt.Sprintf("kv:%d", ks.Revision()) {
		t.Errorf("keystore source: version %q, err %v; want kv:%d", sec.Version, err, ks.Revision())
	}

	// A put that keeps the sealed password by referring to it.
	keep := opensslProfile(t, "registry:profiles/partner-a/password")
	keep.MinTLSVersion = "1.3"
	if err := reg.PutProfile(ctx, "partner-a", keep, p12); err != nil {
		t.Fatal(err)
	}
	raw2, _ := kv.Get(ctx, "profiles.partner-a")
	if !bytes.Contains(raw2.Value(), []byte(`"password":"sealed:v1:`)) || !bytes.Contains(raw2.Value(), []byte(`"min_tls_version":"1.3"`)) {
		t.Errorf("re-put did not keep the sealed password: %s", raw2.Value())
	}

	// A put that keeps the uploaded keystore by referring to it.
	keep.Keystore = "registry:keystores/partner-a"
	if err := reg.PutProfile(ctx, "partner-a", keep, nil); err != nil {
		t.Fatal(err)
	}
	if ks2, err := kv.Get(ctx, "keystores.partner-a"); err != nil || !bytes.Equal(ks2.Value(), p12) {
		t.Errorf("re-put by reference lost the uploaded keystore: %v", err)
	}

	list, err := reg.ListProfiles(ctx)
	if err != nil || len(list) != 1 || list[0].Name != "partner-a" {
		t.Fatalf("ListProfiles = %v, %v", list, err)
	}

	if err := reg.DeleteProfile(ctx, "partner-a"); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.GetProfile(ctx, "partner-a"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("GetProfile after rm: %v, want ErrNotFound", err)
	}
	if _, err := kv.Get(ctx, "keystores.partner-a"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("keystore after rm: %v, want it gone", err)
	}
	if err := reg.DeleteProfile(ctx, "partner-a"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("second rm: %v, want ErrNotFound", err)
	}
	if list, _ := reg.ListProfiles(ctx); len(list) != 0 {
		t.Errorf("ListProfiles after rm = %v", list)
	}
}

func TestPutProfileRefuses(t *testing.T) {
	js := startJS(t)
	key := newKey(t)
	reg := openRegistry(t, js, key)
	noKey := openRegistry(t, js, "")
	ctx := context.Background()
	ca, err := pki.NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf := func(nb, na time.Time) []byte {
		l, err := ca.Issue(pki.LeafOptions{CommonName: "timed", Client: true, NotBefore: nb, NotAfter: na})
		if err != nil {
			t.Fatal(err)
		}
		p12, err := l.PKCS12(fixturePassword)
		if err != nil {
			t.Fatal(err)
		}
		return p12
	}
	now := time.Now()
	cases := []struct {
		name     string
		reg      *registry.Registry
		profile  secrets.Profile
		keystore []byte
		code     jobs.Code
		says     string
	}{
		{"fail/corrupt-keystore", reg, opensslProfile(t, "value:"+fixturePassword), readFixture(t, "corrupt.p12"), jobs.CodeKeystoreInvalid, ""},
		{"fail/wrong-password", reg, opensslProfile(t, "value:not-the-password"), readFixture(t, "client-openssl.p12"), jobs.CodeKeystorePasswordWrong, "profile p not stored: the uploaded keystore: "},
		{"fail/expired-client-cert", reg, secrets.Profile{Password: "value:" + fixturePassword}, leaf(now.Add(-48*time.Hour), now.Add(-time.Hour)), jobs.CodeClientCertExpired, ""},
		{"fail/not-yet-valid-client-cert", reg, secrets.Profile{Password: "value:" + fixturePassword}, leaf(now.Add(time.Hour), now.Add(48*time.Hour)), jobs.CodeClientCertNotYetValid, ""},
		{"fail/unprotected-key", reg, secrets.Profile{}, readFixture(t, "client.pem"), jobs.CodeKeystoreInvalid, "not protected by a password"},
		{"fail/inline-password-without-key", noKey, opensslProfile(t, "value:"+fixturePassword), readFixture(t, "client-openssl.p12"), jobs.CodeSecretUnavailable, "openssl rand -base64 32"},
		{"fail/password-unreadable-here", reg, opensslProfile(t, "env:MTLSRELAY_TEST_UNSET_VARIABLE"), readFixture(t, "client-openssl.p12"), jobs.CodeSecretUnavailable, "--no-verify"},
		{"fail/missing-keystore-file", reg, secrets.Profile{Keystore: "file:/nonexistent/client.p12", Password: "value:" + fixturePassword}, nil, jobs.CodeSecretUnavailable, "cannot be read where this runs"},
		{"fail/key-not-a-key", reg, secrets.Profile{Keystore: "file:" + fixture(t, "ca.pem"), Key: "file:" + fixture(t, "ca.pem")}, nil, jobs.CodeKeystoreInvalid,
			"profile p not stored: key file:" + fixture(t, "ca.pem") + ": the key is not a PEM private key"},
		{"fail/bad-reference", reg, secrets.Profile{Keystore: "file:" + fixture(t, "client-openssl.p12"), Password: fixturePassword}, nil, jobs.CodeKeystoreInvalid, "no scheme"},
		{"fail/bytes-and-reference", reg, secrets.Profile{Keystore: "file:/x.p12"}, readFixture(t, "client-openssl.p12"), jobs.CodeKeystoreInvalid, "not both"},
		{"fail/inline-key", reg, secrets.Profile{Keystore: "file:" + fixture(t, "client.pem"), Key: string(readFixture(t, "client.pem"))}, nil, jobs.CodeKeystoreInvalid, "in the clear"},
		{"fail/bad-alias", reg, secrets.Profile{Password: "value:" + fixturePassword, KeyAlias: "nobody"}, readFixture(t, "client-openssl.p12"), jobs.CodeKeystoreInvalid, "nobody"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.reg.PutProfile(ctx, "p", tc.profile, tc.keystore)
			wantCode(t, err, tc.code)
			if !strings.Contains(err.Error(), "profile p not stored") || !strings.Contains(err.Error(), tc.says) {
				t.Errorf("message %q does not say %q", err, tc.says)
			}
			if _, err := reg.GetProfile(ctx, "p"); !errors.Is(err, registry.ErrNotFound) {
				t.Errorf("a refused profile was stored: %v", err)
			}
			if _, err := rawKV(t, js).Get(ctx, "keystores.p"); !errors.Is(err, jetstream.ErrKeyNotFound) {
				t.Errorf("a refused keystore was stored: %v", err)
			}
		})
	}

	t.Run("ok/unreadable-reference-allowed", func(t *testing.T) {
		var reported error
		err := noKey.PutProfile(ctx, "workers-only", opensslProfile(t, "env:MTLSRELAY_TEST_UNSET_VARIABLE"),
			readFixture(t, "client-openssl.p12"), registry.AllowUnreadable(func(err error) { reported = err }))
		if err != nil {
			t.Fatal(err)
		}
		if reported == nil || !strings.Contains(reported.Error(), "MTLSRELAY_TEST_UNSET_VARIABLE") {
			t.Errorf("reported %v, want the unreadable variable named", reported)
		}
		e, err := reg.GetProfile(ctx, "workers-only")
		if err != nil || e.Profile.Password != "env:MTLSRELAY_TEST_UNSET_VARIABLE" || len(e.Sealed) != 0 {
			t.Errorf("stored %+v, %v; want the env reference as written", e, err)
		}
	})
	t.Run("ok/reference-without-key", func(t *testing.T) {
		t.Setenv("MTLSRELAY_TEST_PW", fixturePassword)
		if err := noKey.PutProfile(ctx, "by-ref", opensslProfile(t, "env:MTLSRELAY_TEST_PW"), readFixture(t, "client-openssl.p12")); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("fail/bad-name", func(t *testing.T) {
		if err := reg.PutProfile(ctx, "a.b", opensslProfile(t, ""), nil); err == nil {
			t.Fatal("a name with a dot was accepted")
		}
	})
}

// TestSealedValueBinding checks that a sealed password opens only in the
// profile it was sealed for and only with the key it was sealed with.
func TestSealedValueBinding(t *testing.T) {
	js := startJS(t)
	ctx := context.Background()
	key := newKey(t)
	reg := openRegistry(t, js, key)
	if err := reg.PutProfile(ctx, "alice", opensslProfile(t, "value:"+fixturePassword), readFixture(t, "client-openssl.p12")); err != nil {
		t.Fatal(err)
	}
	kv := rawKV(t, js)
	raw, err := kv.Get(ctx, "profiles.alice")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "profiles.mallory", raw.Value()); err != nil {
		t.Fatal(err)
	}
	fetch := func(r *registry.Registry, name string) error {
		sec, err := r.Source().Fetch(ctx, secrets.Ref{Scheme: "registry", Body: "profiles/" + name + "/password"})
		if err == nil && string(sec.Data) != fixturePassword {
			return fmt.Errorf("opened to the wrong bytes")
		}
		return err
	}
	if err := fetch(reg, "alice"); err != nil {
		t.Fatalf("alice's own password: %v", err)
	}
	err = fetch(reg, "mallory")
	wantCode(t, err, jobs.CodeKeystoreInvalid)
	if !strings.Contains(err.Error(), "sealed for another profile") {
		t.Errorf("moved value: %v", err)
	}
	err = fetch(openRegistry(t, js, newKey(t)), "alice")
	wantCode(t, err, jobs.CodeSecretUnavailable)
	if !strings.Contains(err.Error(), "registry key id") {
		t.Errorf("wrong key: %v", err)
	}
	err = fetch(openRegistry(t, js, ""), "alice")
	wantCode(t, err, jobs.CodeSecretUnavailable)
	if !strings.Contains(err.Error(), "no registry key") {
		t.Errorf("no key: %v", err)
	}
	err = fetch(openRegistry(t, js, "value:too-short"), "alice")
	wantCode(t, err, jobs.CodeKeystoreInvalid)
}

func TestConnectionLifecycle(t *testing.T) {
	js := startJS(t)
	reg := openRegistry(t, js, "")
	ctx := context.Background()
	c := catalog.Connection{BaseURL: "https://api.example:8443/v1/", Profile: "p", AllowHosts: []string{"h.example"},
		Timeout: catalog.Duration(5 * time.Second), MaxAttempts: 3}
	if err := reg.PutConnection(ctx, "api", c); err != nil {
		t.Fatal(err)
	}
	e, err := reg.GetConnection(ctx, "api")
	if err != nil {
		t.Fatal(err)
	}
	if e.Connection.BaseURL != c.BaseURL || e.Connection.Timeout != c.Timeout || e.Connection.AllowHosts[0] != "h.example" {
		t.Errorf("got %+v, want %+v", e.Connection, c)
	}
	if err := reg.PutConnection(ctx, "plain", catalog.Connection{BaseURL: "http://api.example/", Profile: "p"}); err == nil ||
		!strings.Contains(err.Error(), "https") {
		t.Errorf("an http base_url was accepted: %v", err)
	}
	list, err := reg.ListConnections(ctx)
	if err != nil || len(list) != 1 {
		t.Fatalf("ListConnections = %v, %v", list, err)
	}
	if err := reg.DeleteConnection(ctx, "api"); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.GetConnection(ctx, "api"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("after rm: %v", err)
	}
}

// A connection's auth secret given inline is refused: the registry keeps
// connections readable to whoever reads its bucket. One stored before
// (written to the bucket directly) is printed redacted.
func TestConnectionInlineAuthSecrets(t *testing.T) {
	js := startJS(t)
	reg := openRegistry(t, js, "")
	ctx := context.Background()
	const secret = "inline-client-secret-5c1e"
	for _, a := range []catalog.Auth{
		{Type: "oauth2", TokenURL: "https://login.example/token", ClientID: "c", ClientSecret: "value:" + secret},
		{Type: "basic", Username: "u", Password: "value:" + secret},
		{Type: "bearer", Token: "value:" + secret},
		{Type: "header", Name: "X-Key", Value: "value:" + secret},
	} {
		c := catalog.Connection{BaseURL: "https://api.example/", Profile: "p", Auth: &a}
		err := reg.PutConnection(ctx, "inline-"+a.Type, c)
		wantCode(t, err, jobs.CodeInvalidCall)
		if err == nil || !strings.Contains(err.Error(), "vault:") || strings.Contains(err.Error(), secret) {
			t.Errorf("%s: %v", a.Type, err)
		}
	}
	vaulted := catalog.Auth{Type: "bearer", Token: "vault:secret/partners/a#token"}
	if err := reg.PutConnection(ctx, "vaulted", catalog.Connection{BaseURL: "https://api.example/", Profile: "p", Auth: &vaulted}); err != nil {
		t.Fatalf("a vault: reference was refused: %v", err)
	}

	kv, err := js.KeyValue(ctx, "mtlsrelay_registry")
	if err != nil {
		t.Fatal(err)
	}
	old := []byte(`{"base_url":"https://api.example/","profile":"p","auth":{"type":"bearer","token":"value:` + secret + `"}}`)
	if _, err := kv.Put(ctx, "connections.old", old); err != nil {
		t.Fatal(err)
	}
	e, err := reg.GetConnection(ctx, "old")
	if err != nil {
		t.Fatal(err)
	}
	out, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), secret) || !strings.Contains(string(out), `"token":"value:`) {
		t.Errorf("connection get prints %s", out)
	}
	if e.Connection.Auth.Token != "value:"+secret {
		t.Errorf("the entry itself lost its value: %q", e.Connection.Auth.Token)
	}
}

func TestWatch(t *testing.T) {
	js := startJS(t)
	reg := openRegistry(t, js, newKey(t))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conn := catalog.Connection{BaseURL: "https://api.example/", Profile: "p"}
	if err := reg.PutConnection(ctx, "before", conn); err != nil {
		t.Fatal(err)
	}
	snaps := make(chan registry.Snapshot, 16)
	done := make(chan struct{})
	go func() { reg.Watch(ctx, func(s registry.Snapshot) { snaps <- s }); close(done) }()
	next := func(want func(registry.Snapshot) bool) registry.Snapshot {
		t.Helper()
		timeout := time.After(2 * time.Second)
		for {
			select {
			case s := <-snaps:
				if want(s) {
					return s
				}
			case <-timeout:
				t.Fatal("no matching snapshot within 2s")
			}
		}
	}
	next(func(s registry.Snapshot) bool { _, ok := s.Connections["before"]; return ok })

	if err := reg.PutConnection(ctx, "after", conn); err != nil {
		t.Fatal(err)
	}
	next(func(s registry.Snapshot) bool { return len(s.Connections) == 2 })

	if err := reg.PutProfile(ctx, "p", opensslProfile(t, "value:"+fixturePassword), readFixture(t, "client-openssl.p12")); err != nil {
		t.Fatal(err)
	}
	s := next(func(s registry.Snapshot) bool { _, ok := s.Profiles["p"]; return ok })
	if got := s.Profiles["p"].Password; got != "registry:profiles/p/password" {
		t.Errorf("snapshot password = %q, want the sealed reference", got)
	}

	// A value written behind the registry's back that does not decode is left out.
	if _, err := rawKV(t, js).Put(ctx, "connections.broken", []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	if err := reg.DeleteConnection(ctx, "before"); err != nil {
		t.Fatal(err)
	}
	s = next(func(s registry.Snapshot) bool { _, ok := s.Connections["before"]; return !ok })
	if _, ok := s.Connections["broken"]; ok {
		t.Error("a broken entry is in the snapshot")
	}

	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Watch did not return after ctx ended")
	}
}

func TestMergeConfigWins(t *testing.T) {
	cfgProfiles := map[string]secrets.Profile{"shared": {Keystore: "file:/etc/a.p12"}}
	cfgConns := map[string]catalog.Connection{"api": {BaseURL: "https://config.example/", Profile: "shared"}}
	snap := registry.Snapshot{
		Profiles: map[string]secrets.Profile{"shared": {Keystore: "registry:keystores/shared"}, "extra": {Keystore: "registry:keystores/extra"}},
		Connections: map[string]catalog.Connection{
			"api":   {BaseURL: "https://registry.example/", Profile: "extra"},
			"other": {BaseURL: "https://other.example/", Profile: "extra"},
		},
	}
	var logs bytes.Buffer
	c := registry.Merge(cfgProfiles, cfgConns, snap, true, zerolog.New(&logs))
	if c.Profiles["shared"].Keystore != "file:/etc/a.p12" || c.Connections["api"].BaseURL != "https://config.example/" {
		t.Errorf("the config file did not win: %+v", c)
	}
	if _, ok := c.Profiles["extra"]; !ok {
		t.Error("registry-only profile missing")
	}
	if _, ok := c.Connections["other"]; !ok {
		t.Error("registry-only connection missing")
	}
	for _, want := range []string{`"profile":"shared"`, `"connection":"api"`, "shadowed"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log does not mention %s: %s", want, logs.String())
		}
	}
	if len(cfgProfiles) != 1 || len(cfgConns) != 1 {
		t.Error("Merge modified the config maps")
	}
}

// A registry profile may name only secrets kept outside the worker, unless
// the worker's config allows local references: write access to the
// registry must not mean use of every identity the worker can read.
func TestMergeRefusesLocalRefs(t *testing.T) {
	pem := "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
	snap := registry.Snapshot{
		Profiles: map[string]secrets.Profile{
			"file-keystore":  {Keystore: "file:/etc/mtlsrelay/partner-a.p12", Password: "registry:profiles/file-keystore/password"},
			"env-password":   {Keystore: "registry:keystores/env-password", Password: "env:PARTNER_A_PASSWORD"},
			"file-key":       {Keystore: "vault:secret/p#crt", Key: "file:/etc/tls.key"},
			"inline-ks":      {Keystore: "base64:AAAA"},
			"value-password": {Keystore: "registry:keystores/v", Password: "value:hunter2"},
			"remote":         {Keystore: "vault:secret/p#p12", Password: "cyberark:Safe/obj", Truststore: pem},
			"pki":            {Keystore: "vault-pki:pki/issue/relay?common_name=a"},
			"registry":       {Keystore: "registry:keystores/registry", Password: "registry:profiles/registry/password", Truststore: "registry:keystores/ts"},
		},
		Connections: map[string]catalog.Connection{},
	}
	for name := range snap.Profiles {
		snap.Connections["c-"+name] = catalog.Connection{BaseURL: "https://p.example/", Profile: name}
	}
	var logs bytes.Buffer
	c := registry.Merge(nil, nil, snap, false, zerolog.New(&logs))
	for name := range snap.Profiles {
		_, _, err := c.Lookup("c-" + name)
		refused := !strings.HasPrefix(name, "remote") && name != "pki" && name != "registry"
		if !refused {
			if err != nil {
				t.Errorf("profile %s refused: %v", name, err)
			}
			continue
		}
		je := jobs.AsError(err)
		if je == nil || je.Code != jobs.CodeSecretUnavailable || je.Retryable || !strings.Contains(je.Message, "registry.allow_local_refs") {
			t.Errorf("profile %s: Lookup = %v; want a non-retryable secret_unavailable naming registry.allow_local_refs", name, err)
		}
		if strings.Contains(je.Message, "hunter2") || strings.Contains(logs.String(), "hunter2") {
			t.Errorf("profile %s: the inline password leaked", name)
		}
	}
	allowed := registry.Merge(nil, nil, snap, true, zerolog.Nop())
	if _, _, err := allowed.Lookup("c-file-keystore"); err != nil {
		t.Errorf("with allow_local_refs: %v", err)
	}

	// A registry connection's auth may not send the worker's own secrets.
	authSnap := registry.Snapshot{
		Profiles: map[string]secrets.Profile{"remote": {Keystore: "vault:secret/p#p12"}},
		Connections: map[string]catalog.Connection{
			"leaks-env":  {BaseURL: "https://attacker.example/", Profile: "remote", Auth: &catalog.Auth{Type: "header", Name: "X-K", Value: "env:MTLSRELAY_REGISTRY_KEY"}},
			"leaks-file": {BaseURL: "https://attacker.example/", Profile: "remote", Auth: &catalog.Auth{Type: "bearer", Token: "file:/run/secrets/vault-secret-id"}},
			"vault-auth": {BaseURL: "https://p.example/", Profile: "remote", Auth: &catalog.Auth{Type: "bearer", Token: "vault:secret/p#token"}},
		},
	}
	merged := registry.Merge(nil, nil, authSnap, false, zerolog.Nop())
	for _, name := range []string{"leaks-env", "leaks-file"} {
		if _, _, err := merged.Lookup(name); jobs.CodeOf(err) != jobs.CodeUnknownConnection {
			t.Errorf("connection %s with a local auth reference: Lookup = %v, want it refused", name, err)
		}
	}
	if _, _, err := merged.Lookup("vault-auth"); err != nil {
		t.Errorf("connection with a vault: auth reference refused: %v", err)
	}
}
