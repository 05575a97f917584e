package vault_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.yaml.in/yaml/v3"

	"github.com/mtlsrelay/mtlsrelay/internal/testvault"
	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/secrets"
	"github.com/mtlsrelay/mtlsrelay/secrets/vault"

	"github.com/mtlsrelay/mtlsrelay/internal/testutil"
)

// fixturePassword is the password of the keystores in secrets/testdata.
const fixturePassword = "fixture-pass-123"

func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func fixturePath(t testing.TB, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// syncBuffer collects log output from several goroutines.
// syncBuffer collects log output from several goroutines.
type syncBuffer = testutil.SyncBuffer

// env is a Vault with a client and the logs of that client.
type env struct {
	v       *testvault.Vault
	c       *vault.Client
	sources *secrets.Sources
	logs    *syncBuffer
	// secrets lists values that must never appear in logs or errors.
	secrets []string
}

// newClient makes a client for v with cfg (Address and, for method token
// without a token reference, the root token filled in), registered on
// fresh sources, closed when the test ends. The test fails if its logs
// hold a token or a secret value.
func newClient(t *testing.T, v *testvault.Vault, cfg vault.Config, never ...string) *env {
	t.Helper()
	if cfg.Address == "" {
		cfg.Address = v.Addr
	}
	if cfg.CACert == "" {
		cfg.CACert = v.CACert
	}
	if (cfg.Auth.Method == "" || cfg.Auth.Method == vault.AuthToken) && cfg.Auth.Token == "" {
		p := filepath.Join(t.TempDir(), "token")
		if err := os.WriteFile(p, []byte(v.RootToken+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg.Auth.Token = "file:" + p
	}
	e := &env{v: v, sources: secrets.DefaultSources(""), logs: &syncBuffer{}}
	e.secrets = append([]string{v.RootToken, fixturePassword}, never...)
	log := zerolog.New(e.logs).Level(zerolog.DebugLevel)
	c, err := vault.New(context.Background(), cfg, e.sources, log)
	if err != nil {
		t.Fatalf("vault.New: %v", err)
	}
	e.c = c
	c.Register(e.sources)
	t.Cleanup(func() {
		c.Close()
		e.noSecrets(t, "client logs", e.logs.String())
	})
	return e
}

// noSecrets fails the test when s holds a token, a password or a key.
func (e *env) noSecrets(t testing.TB, what, s string) {
	t.Helper()
	for _, sec := range e.secrets {
		if sec != "" && strings.Contains(s, sec) {
			t.Errorf("%s contain a secret value (%.6s...)", what, sec)
		}
	}
	if strings.Contains(s, "PRIVATE KEY") {
		t.Errorf("%s contain private key material", what)
	}
}

func (e *env) fetch(t testing.TB, ref string) (secrets.Secret, error) {
	t.Helper()
	r, err := secrets.ParseRef(ref)
	if err != nil {
		t.Fatalf("ParseRef(%q): %v", ref, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := e.sources.Fetch(ctx, r)
	if err != nil {
		e.noSecrets(t, "error", err.Error())
	}
	return s, err
}

// wantErr checks err's code and retryability and returns its message.
func wantErr(t testing.TB, err error, code jobs.Code, retryable bool) string {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %s", code)
	}
	var je *jobs.Error
	if !errors.As(err, &je) {
		t.Fatalf("error %T is not a *jobs.Error: %v", err, err)
	}
	if je.Code != code || je.Retryable != retryable {
		t.Fatalf("got %s retryable=%v, want %s retryable=%v: %s", je.Code, je.Retryable, code, retryable, je.Message)
	}
	t.Logf("%s: %s", je.Code, je.Message)
	return je.Message
}

func wantContains(t testing.TB, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Errorf("%q does not contain %q", s, sub)
		}
	}
}

// checkFor polls fn until it returns nil or total passes.
func checkFor(t testing.TB, total, sleep time.Duration, fn func() error) {
	t.Helper()
	testutil.CheckFor(t, total, sleep, fn)
}

func zerologTo(w *syncBuffer) zerolog.Logger { return zerolog.New(w).Level(zerolog.DebugLevel) }

func yamlUnmarshal(b []byte, v any) error { return yaml.Unmarshal(b, v) }

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

func jsonMarshal(v any) (string, error) {
	b, err := json.Marshal(v)
	return string(b), err
}

func sprintf(format string, args ...any) string { return fmt.Sprintf(format, args...) }
