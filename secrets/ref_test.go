package secrets_test

import (
	"context"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/secrets"
)

func TestParseRef(t *testing.T) {
	pemText := string(fixture(t, "ca.pem"))
	tests := []struct {
		name     string
		in       string
		scheme   string
		body     string
		str      string // String(), redacted
		contains string // error message, when one is wanted
	}{
		{"ok/file-absolute", "file:/etc/mtlsrelay/a.p12", secrets.SchemeFile, "/etc/mtlsrelay/a.p12", "file:/etc/mtlsrelay/a.p12", ""},
		{"ok/file-relative", "file:certs/a.p12", secrets.SchemeFile, "certs/a.p12", "file:certs/a.p12", ""},
		{"ok/file-url", "file:///etc/a.p12", secrets.SchemeFile, "///etc/a.p12", "file:///etc/a.p12", ""},
		{"ok/env", "env:PARTNER_A_PASSWORD", secrets.SchemeEnv, "PARTNER_A_PASSWORD", "env:PARTNER_A_PASSWORD", ""},
		{"ok/value", "value:" + fixturePassword, secrets.SchemeValue, fixturePassword, "value:[redacted]", ""},
		{"ok/value-empty", "value:", secrets.SchemeValue, "", "value:[redacted]", ""},
		{"ok/base64", "base64:" + base64.StdEncoding.EncodeToString([]byte(fixturePassword)), secrets.SchemeBase64, base64.StdEncoding.EncodeToString([]byte(fixturePassword)), "base64:[redacted]", ""},
		{"ok/inline-pem", pemText, secrets.SchemePEM, pemText, "pem:[redacted]", ""},
		{"ok/inline-pem-leading-space", "\n  " + pemText, secrets.SchemePEM, "\n  " + pemText, "pem:[redacted]", ""},
		{"ok/vault-parsed", "vault:secret/partner-a#p12", secrets.SchemeVault, "secret/partner-a#p12", "vault:secret/partner-a#p12", ""},
		{"ok/registry-parsed", "registry:keystores/partner-a", secrets.SchemeRegistry, "keystores/partner-a", "registry:keystores/partner-a", ""},
		{"fail/no-scheme", fixturePassword, "", "", "", "has no scheme"},
		{"fail/empty", "", "", "", "", "has no scheme"},
		{"fail/unknown-scheme", "s3:bucket/key", "", "", "", "unknown scheme; write it as one of file:PATH, env:NAME"},
		{"fail/password-with-colon", "hunter2:" + fixturePassword, "", "", "", "unknown scheme"},
		{"fail/file-empty", "file:", "", "", "", "has no path"},
		{"fail/file-host", "file://server/share/a.p12", "", "", "", "names a host"},
		{"fail/env-bad-name", "env:1 BAD", "", "", "", "does not name an environment variable"},
		{"fail/base64-bad", "base64:%%%not-base64", "", "", "", "not valid base64"},
		{"fail/redacted-placeholder", "value:[redacted]", "", "", "", "redaction placeholder"},
		{"fail/vault-empty", "vault:", "", "", "", "nothing after the scheme"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := secrets.ParseRef(tt.in)
			if tt.contains != "" {
				je := wantCode(t, err, jobs.CodeKeystoreInvalid)
				if !strings.Contains(je.Message, tt.contains) {
					t.Errorf("message %q does not say %q", je.Message, tt.contains)
				}
				if strings.Contains(je.Message, "hunter2") {
					t.Errorf("message echoes the input: %q", je.Message)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.Scheme != tt.scheme || r.Body != tt.body {
				t.Errorf("ParseRef = %q %q, want %q %q", r.Scheme, r.Body, tt.scheme, tt.body)
			}
			if r.String() != tt.str {
				t.Errorf("String() = %q, want %q", r.String(), tt.str)
			}
		})
	}
}

func TestRefResolve(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"ok/relative", "file:certs/a.p12", "file:/etc/mtlsrelay/certs/a.p12"},
		{"ok/absolute-unchanged", "file:/srv/a.p12", "file:/srv/a.p12"},
		{"ok/url-absolute-unchanged", "file:///srv/a.p12", "file:///srv/a.p12"},
		{"ok/env-unchanged", "env:X", "env:X"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := secrets.ParseRef(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if got := r.Resolve("/etc/mtlsrelay").String(); got != tt.want {
				t.Errorf("Resolve = %q, want %q", got, tt.want)
			}
		})
	}
	p := secrets.Profile{Keystore: "file:a.p12", Password: "file:pass.txt", Truststore: "env:TS"}.ResolvePaths("/cfg")
	if p.Keystore != "file:/cfg/a.p12" || p.Password != "file:/cfg/pass.txt" || p.Truststore != "env:TS" {
		t.Errorf("ResolvePaths = %+v", p)
	}
}

func TestSources(t *testing.T) {
	dir := t.TempDir()
	passFile := filepath.Join(dir, "pass.txt")
	if err := os.WriteFile(passFile, []byte(fixturePassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "locked"), []byte("x"), 0o000); err != nil {
		t.Fatal(err)
	}
	t.Setenv("MTLSRELAY_TEST_SECRET", fixturePassword)
	sources := secrets.DefaultSources(dir)
	ctx := context.Background()
	type sourceCase struct {
		name      string
		ref       string
		want      string
		code      jobs.Code
		retryable bool
		notFound  bool
		contains  string
	}
	tests := []sourceCase{
		{name: "ok/file", ref: "file:" + passFile, want: fixturePassword + "\n"},
		{name: "ok/file-relative-to-config-dir", ref: "file:pass.txt", want: fixturePassword + "\n"},
		{name: "ok/env", ref: "env:MTLSRELAY_TEST_SECRET", want: fixturePassword},
		{name: "ok/value", ref: "value:" + fixturePassword, want: fixturePassword},
		{name: "ok/base64", ref: "base64:" + base64.StdEncoding.EncodeToString([]byte(fixturePassword)), want: fixturePassword},
		{name: "ok/base64-wrapped-url", ref: "base64:" + base64.RawURLEncoding.EncodeToString([]byte(fixturePassword))[:8] + "\n  " + base64.RawURLEncoding.EncodeToString([]byte(fixturePassword))[8:], want: fixturePassword},
		{name: "fail/file-not-found", ref: "file:" + filepath.Join(dir, "missing.p12"), code: jobs.CodeSecretUnavailable, notFound: true, contains: filepath.Join(dir, "missing.p12") + " does not exist"},
		{name: "fail/file-is-dir", ref: "file:" + dir, code: jobs.CodeKeystoreInvalid, contains: "is a directory"},
		{name: "fail/env-unset", ref: "env:MTLSRELAY_TEST_UNSET_VARIABLE", code: jobs.CodeSecretUnavailable, notFound: true, contains: "MTLSRELAY_TEST_UNSET_VARIABLE is not set"},
		{name: "fail/vault-not-configured", ref: "vault:secret/a#p12", code: jobs.CodeKeystoreInvalid, contains: "needs Vault: add a vault: section to the worker's config (address and auth), or set VAULT_ADDR"},
		{name: "fail/cyberark-not-configured", ref: "cyberark:safe/obj#password", code: jobs.CodeKeystoreInvalid, contains: "needs CyberArk: add a cyberark: section"},
		{name: "fail/vault-pki-not-configured", ref: "vault-pki:pki/issue/client?common_name=a", code: jobs.CodeKeystoreInvalid, contains: "scheme vault-pki: needs Vault: add a vault: section"},
		{name: "fail/registry-not-configured", ref: "registry:keystores/a", code: jobs.CodeKeystoreInvalid, contains: "needs the registry: give the worker a NATS server"},
	}
	if os.Geteuid() != 0 { // root reads any file
		tests = append(tests, sourceCase{name: "fail/file-permission", ref: "file:" + filepath.Join(dir, "locked"), code: jobs.CodeSecretUnavailable, contains: "permission denied"})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ref, err := secrets.ParseRef(tt.ref)
			if err != nil {
				t.Fatal(err)
			}
			sec, err := sources.Fetch(ctx, ref)
			if tt.code != "" {
				je := wantCode(t, err, tt.code)
				if je.Retryable != tt.retryable {
					t.Errorf("retryable = %v, want %v", je.Retryable, tt.retryable)
				}
				if errors.Is(err, secrets.ErrNotFound) != tt.notFound {
					t.Errorf("errors.Is(ErrNotFound) = %v, want %v", !tt.notFound, tt.notFound)
				}
				if !strings.Contains(je.Message, tt.contains) {
					t.Errorf("message %q does not say %q", je.Message, tt.contains)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(sec.Data) != tt.want {
				t.Errorf("data = %q, want %q", sec.Data, tt.want)
			}
			if sec.Version == "" || strings.Contains(sec.Version, fixturePassword) {
				t.Errorf("version %q is empty or shows the secret", sec.Version)
			}
			again, _ := sources.Fetch(ctx, ref)
			if again.Version != sec.Version {
				t.Errorf("version changed without a change: %q, %q", sec.Version, again.Version)
			}
		})
	}
}

func TestFileVersionChanges(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "pass.txt")
	src := secrets.NewFileSource("")
	ref := secrets.Ref{Scheme: secrets.SchemeFile, Body: path}
	var versions []string
	// Same size each time, written in quick succession: the content hash
	// tells them apart even when the mtime does not.
	for _, content := range []string{"aaaa", "bbbb", "aaaa"} {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		sec, err := src.Fetch(context.Background(), ref)
		if err != nil {
			t.Fatal(err)
		}
		versions = append(versions, sec.Version)
	}
	if versions[0] == versions[1] || versions[1] == versions[2] {
		t.Errorf("versions %q do not change with the content", versions)
	}
}

func TestSourcesRegister(t *testing.T) {
	empty := secrets.NewSources()
	fileRef, _ := secrets.ParseRef("file:/etc/a.p12")
	if err := empty.Check(fileRef); !errors.Is(err, secrets.ErrUnsupportedScheme) {
		t.Errorf("Check on empty Sources = %v, want ErrUnsupportedScheme", err)
	}

	sources := secrets.DefaultSources("")
	fake := newCountingSource(secrets.NewEnvSource(func(name string) (string, bool) { return "from-vault", true }))
	sources.Register(secrets.SchemeVault, fake)
	ref, _ := secrets.ParseRef("vault:secret/a#p12")
	if err := sources.Check(ref); err != nil {
		t.Fatalf("Check after Register: %v", err)
	}
	sec, err := sources.Fetch(context.Background(), ref)
	if err != nil || string(sec.Data) != "from-vault" {
		t.Fatalf("Fetch = %q, %v", sec.Data, err)
	}
	// A Source returning a plain error is reported as unavailable, without
	// its text.
	fake.setFail(errors.New("dial tcp: token " + fixturePassword))
	_, err = sources.Fetch(context.Background(), ref)
	je := wantCode(t, err, jobs.CodeSecretUnavailable)
	if !je.Retryable {
		t.Error("an unclassified source failure should be retryable")
	}
}
