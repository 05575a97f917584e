package secrets_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/secrets"
)

// newTestResolver returns a Resolver whose file: source counts fetches and
// whose clock the test moves.
func newTestResolver(t *testing.T, opts ...secrets.Option) (*secrets.Resolver, *countingSource, *fakeClock) {
	t.Helper()
	sources := secrets.DefaultSources("")
	files := newCountingSource(secrets.NewFileSource(""))
	sources.Register(secrets.SchemeFile, files)
	clock := newFakeClock()
	opts = append([]secrets.Option{secrets.WithClock(clock.Now)}, opts...)
	return secrets.NewResolver(sources, opts...), files, clock
}

func TestResolverResolvesOnceForConcurrentCalls(t *testing.T) {
	r, files, _ := newTestResolver(t)
	ksRef := "file:" + fixturePath(t, "client-keytool.p12")
	tsRef := "file:" + fixturePath(t, "truststore.jks")
	p := secrets.Profile{Keystore: ksRef, Password: "value:" + fixturePassword, Truststore: tsRef, TruststorePassword: "value:" + fixturePassword}

	hold := make(chan struct{})
	files.mu.Lock()
	files.hold = hold
	files.mu.Unlock()

	const n = 32
	var started, done sync.WaitGroup
	results := make([]*secrets.Material, n)
	errs := make([]error, n)
	for i := range n {
		started.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			started.Done()
			results[i], errs[i] = r.Resolve(context.Background(), "partner-a", p)
		}()
	}
	started.Wait()
	close(hold)
	done.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("call %d: %v", i, errs[i])
		}
		if results[i] != results[0] {
			t.Fatalf("call %d got another Material: the profile was resolved more than once", i)
		}
	}
	if got := files.count(ksRef); got != 1 {
		t.Errorf("keystore fetched %d times for %d concurrent calls, want 1", got, n)
	}
	if got := files.count(tsRef); got != 1 {
		t.Errorf("truststore fetched %d times for %d concurrent calls, want 1", got, n)
	}
}

func TestResolverPicksUpRewrittenKeystore(t *testing.T) {
	r, files, clock := newTestResolver(t)
	path := filepath.Join(t.TempDir(), "client.p12")
	copyFixture(t, "client-openssl.p12", path)
	p := secrets.Profile{Keystore: "file:" + path, Password: "value:" + fixturePassword}
	ctx := context.Background()

	m1, err := r.Resolve(ctx, "partner-a", p)
	if err != nil {
		t.Fatal(err)
	}
	oldSerial := secrets.SerialHex(m1.Leaf)
	if want := secrets.SerialHex(pemCert(t, "client.pem")); oldSerial != want {
		t.Fatalf("serial = %s, want the fixture's %s", oldSerial, want)
	}

	copyFixture(t, "client-keytool.p12", path)
	// Within the refresh interval the cached Material is served untouched.
	if m, err := r.Resolve(ctx, "partner-a", p); err != nil || m != m1 {
		t.Fatalf("within the refresh interval: got %p, %v; want the cached Material", m, err)
	}
	if got := files.count("file:" + path); got != 1 {
		t.Errorf("sources asked %d times within the refresh interval, want 1", got)
	}

	clock.Advance(1100 * time.Millisecond)
	m2, err := r.Resolve(ctx, "partner-a", p)
	if err != nil {
		t.Fatal(err)
	}
	if m2.Version == m1.Version {
		t.Error("Version did not change with the keystore")
	}
	if secrets.SerialHex(m2.Leaf) == oldSerial {
		t.Error("the rewritten keystore's certificate was not picked up")
	}
	if secrets.SerialHex(m1.Leaf) != oldSerial || secrets.SerialHex(m1.Config.Certificates[0].Leaf) != oldSerial {
		t.Error("the old Material changed under calls in flight")
	}

	// Unchanged sources after the interval: same Material, no rebuild.
	clock.Advance(1100 * time.Millisecond)
	if m3, err := r.Resolve(ctx, "partner-a", p); err != nil || m3 != m2 {
		t.Errorf("unchanged sources: got %p, %v; want the same Material", m3, err)
	}
}

func TestResolverKeepsServingWhenSourcesFail(t *testing.T) {
	r, files, clock := newTestResolver(t)
	path := filepath.Join(t.TempDir(), "client.p12")
	copyFixture(t, "client-openssl.p12", path)
	p := secrets.Profile{Keystore: "file:" + path, Password: "value:" + fixturePassword}
	var logs bytes.Buffer
	ctx := zerolog.New(&logs).WithContext(context.Background())

	m1, err := r.Resolve(ctx, "partner-a", p)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("ok/source-unavailable", func(t *testing.T) {
		files.setFail(jobs.Errorf(jobs.CodeSecretUnavailable, "the secret store is sealed"))
		defer files.setFail(nil)
		clock.Advance(2 * time.Second)
		m, err := r.Resolve(ctx, "partner-a", p)
		if err != nil || m != m1 {
			t.Fatalf("got %p, %v; want the cached Material", m, err)
		}
		if !strings.Contains(logs.String(), "still using the keystore loaded before") || !strings.Contains(logs.String(), `"level":"warn"`) {
			t.Errorf("no warning logged: %s", logs.String())
		}
	})

	t.Run("ok/changed-keystore-does-not-decode", func(t *testing.T) {
		logs.Reset()
		copyFixture(t, "corrupt.p12", path)
		clock.Advance(2 * time.Second)
		m, err := r.Resolve(ctx, "partner-a", p)
		if err != nil || m != m1 {
			t.Fatalf("got %p, %v; want the cached Material", m, err)
		}
		if !strings.Contains(logs.String(), "keystore_invalid") {
			t.Errorf("the decode failure was not logged: %s", logs.String())
		}
		noSecret(t, logs.String())
	})

	t.Run("ok/good-keystore-again", func(t *testing.T) {
		copyFixture(t, "client-keytool.p12", path)
		clock.Advance(2 * time.Second)
		m, err := r.Resolve(ctx, "partner-a", p)
		if err != nil {
			t.Fatal(err)
		}
		if m == m1 || m.Version == m1.Version {
			t.Error("a good new keystore was not picked up after a bad one")
		}
	})
}

// A Material whose certificate expired while its source failed (a
// vault-pki: certificate that could not be renewed) is not served: the
// source's retryable failure is reported instead of client_cert_expired.
func TestResolverDropsExpiredMaterialWhenSourcesFail(t *testing.T) {
	r, files, clock := newTestResolver(t)
	bundle, _ := testCert(t, "short-lived", clock.Now().Add(-time.Minute), clock.Now().Add(time.Hour))
	path := filepath.Join(t.TempDir(), "client.pem")
	if err := os.WriteFile(path, bundle, 0o600); err != nil {
		t.Fatal(err)
	}
	p := secrets.Profile{Keystore: "file:" + path}
	ctx := context.Background()
	if _, err := r.Resolve(ctx, "pki", p); err != nil {
		t.Fatal(err)
	}
	files.setFail(jobs.Errorf(jobs.CodeSecretUnavailable, "the secret store is unreachable"))
	clock.Advance(30 * time.Minute)
	if _, err := r.Resolve(ctx, "pki", p); err != nil {
		t.Fatalf("still valid: got %v, want the cached Material", err)
	}
	clock.Advance(time.Hour)
	_, err := r.Resolve(ctx, "pki", p)
	if je := wantCode(t, err, jobs.CodeSecretUnavailable); !je.Retryable {
		t.Errorf("want a retryable error, got %+v", je)
	}
}

func TestResolverCachesFailures(t *testing.T) {
	r, files, clock := newTestResolver(t)
	ksRef := "file:" + fixturePath(t, "client-openssl.p12")
	p := secrets.Profile{Keystore: ksRef, Password: "value:" + wrongPassword}
	ctx := context.Background()

	_, err1 := r.Resolve(ctx, "partner-a", p)
	je := wantCode(t, err1, jobs.CodeKeystorePasswordWrong)
	for _, want := range []string{`profile "partner-a"`, ksRef, "check the profile's password reference"} {
		if !strings.Contains(je.Message, want) {
			t.Errorf("message %q does not say %q", je.Message, want)
		}
	}
	_, err2 := r.Resolve(ctx, "partner-a", p)
	if err2 != err1 || files.count(ksRef) != 1 {
		t.Errorf("within the interval: fetched %d times, same error %v; want 1 fetch and the cached error", files.count(ksRef), err2 == err1)
	}
	clock.Advance(2 * time.Second)
	_, err3 := r.Resolve(ctx, "partner-a", p)
	if files.count(ksRef) != 2 {
		t.Errorf("after the interval: fetched %d times, want 2 (a version check)", files.count(ksRef))
	}
	if err3 != err1 {
		t.Error("unchanged sources decoded again: the failure was not cached")
	}

	// Fixing the password is a new definition: resolved at once.
	p.Password = "value:" + fixturePassword
	if _, err := r.Resolve(ctx, "partner-a", p); err != nil {
		t.Fatalf("after fixing the password: %v", err)
	}
}

func TestResolverErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.p12")
	t.Setenv("MTLSRELAY_TEST_PASSWORD", fixturePassword)
	tests := []struct {
		name      string
		profile   secrets.Profile
		code      jobs.Code
		retryable bool
		contains  []string
	}{
		{"fail/keystore-not-found", secrets.Profile{Keystore: "file:" + missing, Password: "env:MTLSRELAY_TEST_PASSWORD"},
			jobs.CodeSecretUnavailable, false, []string{`profile "partner-a" keystore file:` + missing, "does not exist"}},
		{"fail/password-env-unset", secrets.Profile{Keystore: "file:" + fixturePath(t, "client-openssl.p12"), Password: "env:MTLSRELAY_TEST_UNSET"},
			jobs.CodeSecretUnavailable, false, []string{`profile "partner-a" password env:MTLSRELAY_TEST_UNSET`, "is not set"}},
		{"fail/wrong-password-jks", secrets.Profile{Keystore: "file:" + fixturePath(t, "client-keytool.jks"), Password: "value:" + wrongPassword},
			jobs.CodeKeystorePasswordWrong, false, []string{"did not open with the configured password"}},
		{"fail/missing-alias", secrets.Profile{Keystore: "file:" + fixturePath(t, "client-multi.p12"), Password: "env:MTLSRELAY_TEST_PASSWORD", KeyAlias: "gamma"},
			jobs.CodeKeystoreInvalid, false, []string{`key_alias "gamma"`, `"alpha", "beta"`}},
		{"fail/truststore-wrong-password", secrets.Profile{Keystore: "file:" + fixturePath(t, "client.pem"),
			Truststore: "file:" + fixturePath(t, "truststore.p12"), TruststorePassword: "value:" + wrongPassword},
			jobs.CodeKeystorePasswordWrong, false, []string{`profile "partner-a" truststore file:`}},
		{"fail/vault-not-configured", secrets.Profile{Keystore: "vault:secret/partner-a#p12", Password: "value:" + fixturePassword},
			jobs.CodeKeystoreInvalid, false, []string{"scheme vault: needs Vault: add a vault: section to the worker's config"}},
		{"fail/no-keystore", secrets.Profile{Password: "value:" + fixturePassword},
			jobs.CodeKeystoreInvalid, false, []string{"no keystore reference"}},
		{"fail/bare-password", secrets.Profile{Keystore: "file:/a.p12", Password: fixturePassword},
			jobs.CodeKeystoreInvalid, false, []string{"profile field password", "has no scheme"}},
		{"fail/min-tls-version", secrets.Profile{Keystore: "file:/a.p12", MinTLSVersion: "1.1"},
			jobs.CodeKeystoreInvalid, false, []string{`min_tls_version "1.1"`}},
		{"fail/renegotiation", secrets.Profile{Keystore: "file:/a.p12", Renegotiation: "always"},
			jobs.CodeKeystoreInvalid, false, []string{`renegotiation "always"`}},
		{"fail/server-name-url", secrets.Profile{Keystore: "file:/a.p12", ServerName: "https://api.example/"},
			jobs.CodeKeystoreInvalid, false, []string{"is not a host name"}},
		{"fail/truststore-password-alone", secrets.Profile{Keystore: "file:/a.p12", TruststorePassword: "value:x"},
			jobs.CodeKeystoreInvalid, false, []string{"no truststore"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, _, _ := newTestResolver(t)
			_, err := r.Resolve(context.Background(), "partner-a", tt.profile)
			je := wantCode(t, err, tt.code)
			if je.Retryable != tt.retryable {
				t.Errorf("retryable = %v, want %v", je.Retryable, tt.retryable)
			}
			for _, want := range tt.contains {
				if !strings.Contains(je.Message, want) {
					t.Errorf("message %q does not say %q", je.Message, want)
				}
			}
		})
	}
}

func TestResolverValidate(t *testing.T) {
	r, _, _ := newTestResolver(t)
	if err := r.Validate("ok", secrets.Profile{Keystore: "file:/a.p12", Password: "env:X"}); err != nil {
		t.Errorf("Validate: %v", err)
	}
	err := r.Validate("partner-b", secrets.Profile{Keystore: "cyberark:safe/obj#content"})
	je := wantCode(t, err, jobs.CodeKeystoreInvalid)
	if !strings.Contains(je.Message, `profile "partner-b"`) || !strings.Contains(je.Message, "needs CyberArk: add a cyberark: section") {
		t.Errorf("message = %q", je.Message)
	}
	if !errors.Is(err, secrets.ErrUnsupportedScheme) {
		t.Error("errors.Is(ErrUnsupportedScheme) is false")
	}
}

func TestResolverValidityWindow(t *testing.T) {
	now := time.Now()
	expired, _ := testCert(t, "expired-client", now.Add(-48*time.Hour), now.Add(-time.Hour))
	future, _ := testCert(t, "future-client", now.Add(time.Hour), now.Add(48*time.Hour))
	fixtureLeaf := pemCert(t, "client.pem")
	tests := []struct {
		name     string
		keystore string
		at       time.Time
		code     jobs.Code
		contains []string
	}{
		{"ok/valid", "file:" + fixturePath(t, "client.pem"), now, "", nil},
		{"fail/expired-client-cert", string(expired), now, jobs.CodeClientCertExpired,
			[]string{`client certificate CN=expired-client`, `of profile "partner-a" expired at`, "renew it and update the keystore"}},
		{"fail/not-yet-valid-client-cert", string(future), now, jobs.CodeClientCertNotYetValid,
			[]string{`client certificate CN=future-client`, "is not valid before"}},
		{"fail/fixture-expired-by-clock", "file:" + fixturePath(t, "client.pem"), fixtureLeaf.NotAfter.Add(time.Second), jobs.CodeClientCertExpired,
			[]string{"CN=mtlsrelay-test-client", fixtureLeaf.NotAfter.UTC().Format(time.RFC3339)}},
		{"fail/fixture-not-yet-valid-by-clock", "file:" + fixturePath(t, "client.pem"), fixtureLeaf.NotBefore.Add(-time.Second), jobs.CodeClientCertNotYetValid,
			[]string{"CN=mtlsrelay-test-client"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := secrets.NewResolver(secrets.DefaultSources(""), secrets.WithClock(func() time.Time { return tt.at }))
			m, err := r.Resolve(context.Background(), "partner-a", secrets.Profile{Keystore: tt.keystore})
			if tt.code == "" {
				if err != nil || m.Leaf == nil {
					t.Fatalf("Resolve = %v, %v", m, err)
				}
				return
			}
			je := wantCode(t, err, tt.code)
			for _, want := range tt.contains {
				if !strings.Contains(je.Message, want) {
					t.Errorf("message %q does not say %q", je.Message, want)
				}
			}
		})
	}

	t.Run("fail/expires-while-cached", func(t *testing.T) {
		soon, _ := testCert(t, "short-lived", now.Add(-time.Hour), now.Add(time.Hour))
		r, _, clock := newTestResolver(t, secrets.WithRefreshInterval(24*time.Hour))
		p := secrets.Profile{Keystore: string(soon)}
		if _, err := r.Resolve(context.Background(), "partner-a", p); err != nil {
			t.Fatal(err)
		}
		clock.Advance(2 * time.Hour)
		_, err := r.Resolve(context.Background(), "partner-a", p)
		wantCode(t, err, jobs.CodeClientCertExpired)
	})
}

func TestResolverMaterialConfig(t *testing.T) {
	r, files, _ := newTestResolver(t)
	ctx := context.Background()
	base := secrets.Profile{Keystore: "file:" + fixturePath(t, "client-multi.jks"), Password: "value:" + fixturePassword, KeyAlias: "beta"}

	m, err := r.Resolve(ctx, "partner-a", base)
	if err != nil {
		t.Fatal(err)
	}
	c := m.Config
	switch {
	case m.Profile != "partner-a" || m.Version == "":
		t.Errorf("Profile, Version = %q, %q", m.Profile, m.Version)
	case len(c.Certificates) != 1 || c.Certificates[0].Leaf != m.Leaf || m.Leaf.Subject.CommonName != "mtlsrelay-test-beta":
		t.Errorf("Certificates = %d, leaf %v", len(c.Certificates), m.Leaf.Subject)
	case c.RootCAs != nil:
		t.Error("RootCAs set without a truststore; want nil (system roots)")
	case c.MinVersion != tls.VersionTLS12 || c.Renegotiation != tls.RenegotiateNever:
		t.Errorf("MinVersion %x, Renegotiation %v; want TLS 1.2, never", c.MinVersion, c.Renegotiation)
	case c.ServerName != "":
		t.Errorf("ServerName = %q without server_name; want empty", c.ServerName)
	case c.ClientSessionCache == nil:
		t.Error("no ClientSessionCache")
	case c.InsecureSkipVerify:
		t.Error("InsecureSkipVerify set")
	}

	tuned := base
	tuned.ServerName, tuned.MinTLSVersion, tuned.Renegotiation = "api.partner-a.example", "1.3", "once"
	m2, err := r.Resolve(ctx, "partner-a", tuned)
	if err != nil {
		t.Fatal(err)
	}
	if c := m2.Config; c.ServerName != "api.partner-a.example" || c.MinVersion != tls.VersionTLS13 || c.Renegotiation != tls.RenegotiateOnceAsClient {
		t.Errorf("ServerName %q, MinVersion %x, Renegotiation %v", c.ServerName, c.MinVersion, c.Renegotiation)
	}
	if m2.Version == m.Version {
		t.Error("a changed definition kept the Version")
	}
	m3, err := r.Resolve(ctx, "partner-b", base)
	if err != nil || m3.Version == m.Version {
		t.Errorf("another profile name: %v, Version %q == %q", err, m3.Version, m.Version)
	}

	ref := "file:" + fixturePath(t, "client-multi.jks")
	before := files.count(ref)
	r.Invalidate("partner-b")
	m4, err := r.Resolve(ctx, "partner-b", base)
	if err != nil || files.count(ref) != before+1 || m4 == m3 {
		t.Errorf("after Invalidate: %v, fetches %d -> %d, same Material %v", err, before, files.count(ref), m4 == m3)
	}
	if m4.Version != m3.Version {
		t.Error("the same secrets gave another Version")
	}
}
