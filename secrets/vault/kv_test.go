package vault_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mtlsrelay/mtlsrelay/internal/testvault"
	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/secrets"
	"github.com/mtlsrelay/mtlsrelay/secrets/vault"
)

func TestKV(t *testing.T) {
	v := testvault.Start(t)
	p12 := fixture(t, "client-openssl.p12")
	v.PutKV("secret", "partners/a", map[string]any{"keystore": b64(p12), "password": fixturePassword, "count": 3})
	v.PutKV("secret", "partners/a", map[string]any{"keystore": b64(p12), "password": "second-version-pass", "count": 3})
	v.PutKV("secret", "partners/trust", map[string]any{
		"pem": string(fixture(t, "ca.pem")), "p12": b64(fixture(t, "truststore.p12")),
	})
	e := newClient(t, v, vault.Config{PollInterval: -1}, "second-version-pass")

	t.Run("ok/latest-field", func(t *testing.T) {
		s, err := e.fetch(t, "vault:secret/partners/a#password")
		if err != nil {
			t.Fatal(err)
		}
		if string(s.Data) != "second-version-pass" {
			t.Errorf("password field is not the latest version's")
		}
		if !strings.HasPrefix(s.Version, "kv:secret/partners/a:2:") {
			t.Errorf("Version = %q, want kv:secret/partners/a:2:...", s.Version)
		}
		ks, err := e.fetch(t, "vault:secret/partners/a#keystore")
		if err != nil {
			t.Fatal(err)
		}
		if string(ks.Data) != b64(p12) {
			t.Errorf("keystore field is not the base64 text stored")
		}
	})
	t.Run("ok/pinned-version", func(t *testing.T) {
		for _, ref := range []string{"vault:secret/partners/a#password@1", "vault:secret/partners/a@1#password"} {
			s, err := e.fetch(t, ref)
			if err != nil {
				t.Fatal(err)
			}
			if string(s.Data) != fixturePassword {
				t.Errorf("%s: not version 1's value", ref)
			}
			if !strings.HasPrefix(s.Version, "kv:secret/partners/a:1:") {
				t.Errorf("%s: Version = %q", ref, s.Version)
			}
		}
	})
	t.Run("ok/resolver-builds-profile-from-vault", func(t *testing.T) {
		r := secrets.NewResolver(e.sources)
		for _, ts := range []string{"vault:secret/partners/trust#pem", "vault:secret/partners/trust#p12"} {
			p := secrets.Profile{
				Keystore: "vault:secret/partners/a#keystore", Password: "vault:secret/partners/a#password@1",
				Truststore: ts, TruststorePassword: "value:" + fixturePassword,
			}
			if err := r.Validate("a", p); err != nil {
				t.Fatal(err)
			}
			m, err := r.Resolve(context.Background(), "a-"+ts, p)
			if err != nil {
				t.Fatalf("truststore %s: %v", ts, err)
			}
			if m.Leaf.Subject.CommonName != "mtlsrelay-test-client" || m.Config.RootCAs == nil {
				t.Errorf("truststore %s: unexpected material CN=%s", ts, m.Leaf.Subject.CommonName)
			}
		}
	})
	t.Run("fail/missing-path", func(t *testing.T) {
		_, err := e.fetch(t, "vault:secret/partners/nobody#keystore")
		msg := wantErr(t, err, jobs.CodeSecretUnavailable, false)
		if !errors.Is(err, secrets.ErrNotFound) {
			t.Errorf("error does not wrap secrets.ErrNotFound")
		}
		wantContains(t, msg, "secret/partners/nobody", "secret/data/partners/nobody")
	})
	t.Run("fail/missing-version", func(t *testing.T) {
		_, err := e.fetch(t, "vault:secret/partners/a#keystore@9")
		wantErr(t, err, jobs.CodeSecretUnavailable, false)
		if !errors.Is(err, secrets.ErrNotFound) {
			t.Errorf("error does not wrap secrets.ErrNotFound")
		}
	})
	t.Run("fail/missing-field", func(t *testing.T) {
		_, err := e.fetch(t, "vault:secret/partners/a#keystroke")
		msg := wantErr(t, err, jobs.CodeSecretUnavailable, false)
		if !errors.Is(err, secrets.ErrNotFound) {
			t.Errorf("error does not wrap secrets.ErrNotFound")
		}
		wantContains(t, msg, `no field "keystroke"`, "secret/partners/a", `"keystore"`, `"password"`)
	})
	t.Run("fail/field-not-a-string", func(t *testing.T) {
		_, err := e.fetch(t, "vault:secret/partners/a#count")
		wantContains(t, wantErr(t, err, jobs.CodeKeystoreInvalid, false), `"count"`, "a number")
	})
	t.Run("fail/deleted-version", func(t *testing.T) {
		v.PutKV("secret", "partners/deleted", map[string]any{"k": "v"})
		if err := v.Client.KVv2("secret").DeleteVersions(context.Background(), "partners/deleted", []int{1}); err != nil {
			t.Fatal(err)
		}
		_, err := e.fetch(t, "vault:secret/partners/deleted#k")
		wantContains(t, wantErr(t, err, jobs.CodeSecretUnavailable, false), "version 1", "deleted")
	})
	t.Run("fail/bad-references", func(t *testing.T) {
		for _, ref := range []string{
			"vault:secret/partners/a", "vault:secret#keystore", "vault:secret/#keystore",
			"vault:secret/partners/a#", "vault:secret/partners/a#keystore@0", "vault:secret/../sys#x",
		} {
			_, err := e.fetch(t, ref)
			wantContains(t, wantErr(t, err, jobs.CodeKeystoreInvalid, false), "MOUNT/PATH#FIELD")
		}
	})
	t.Run("fail/forbidden-by-policy", func(t *testing.T) {
		v.Policy("other-only", `path "secret/data/other/*" { capabilities = ["read"] }`)
		tok := v.Token("other-only")
		denied := newClient(t, v, vault.Config{Auth: vault.AuthConfig{Token: "value:" + tok}}, tok)
		_, err := denied.fetch(t, "vault:secret/partners/a#keystore")
		msg := wantErr(t, err, jobs.CodeSecretUnavailable, false)
		wantContains(t, msg, "403", "policy lacks", `"secret/data/partners/a"`)
		if errors.Is(err, secrets.ErrNotFound) {
			t.Errorf("a denied read must not look like a missing secret")
		}
	})
	t.Run("ok/poll-interval-reuses-a-read", func(t *testing.T) {
		cached := newClient(t, v, vault.Config{PollInterval: time.Hour})
		v.PutKV("secret", "partners/polled", map[string]any{"k": "one"})
		if s, err := cached.fetch(t, "vault:secret/partners/polled#k"); err != nil || string(s.Data) != "one" {
			t.Fatalf("first read: %v", err)
		}
		v.PutKV("secret", "partners/polled", map[string]any{"k": "two"})
		if s, err := cached.fetch(t, "vault:secret/partners/polled#k"); err != nil || string(s.Data) != "one" {
			t.Errorf("within the poll interval the read was not reused (err %v)", err)
		}
		if s, err := e.fetch(t, "vault:secret/partners/polled#k"); err != nil || string(s.Data) != "two" {
			t.Errorf("with a negative poll interval the new version was not read (err %v)", err)
		}
	})
	t.Run("fail/vault-stopped-is-retryable", func(t *testing.T) {
		v.Stop()
		_, err := e.fetch(t, "vault:secret/partners/a#keystore")
		msg := wantErr(t, err, jobs.CodeSecretUnavailable, true)
		wantContains(t, msg, v.Addr, "unreachable", "connection refused", "keep working")
	})
}

func TestNewWhileVaultIsDown(t *testing.T) {
	ctx := context.Background()
	sources := secrets.DefaultSources("")
	logs := &syncBuffer{}
	c, err := vault.New(ctx, vault.Config{Address: "http://127.0.0.1:1", Auth: vault.AuthConfig{Token: "value:s.never-printed"}},
		sources, zerologTo(logs))
	if err != nil {
		t.Fatalf("New must not fail while Vault is unreachable: %v", err)
	}
	defer c.Close()
	c.Register(sources)
	r, _ := secrets.ParseRef("vault:secret/partners/a#keystore")
	_, err = sources.Fetch(ctx, r)
	wantContains(t, wantErr(t, err, jobs.CodeSecretUnavailable, true), "127.0.0.1:1", "unreachable")
	for _, s := range []string{logs.String(), err.Error()} {
		if strings.Contains(s, "never-printed") {
			t.Errorf("the token leaked: %s", s)
		}
	}
}

func TestConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  vault.Config
		want string
	}{
		{"fail/unknown-method", vault.Config{Auth: vault.AuthConfig{Method: "ldap"}}, "not supported"},
		{"fail/approle-without-role-id", vault.Config{Auth: vault.AuthConfig{Method: "approle"}}, "role_id"},
		{"fail/kubernetes-without-role", vault.Config{Auth: vault.AuthConfig{Method: "kubernetes"}}, "vault.auth.role"},
		{"fail/cert-without-files", vault.Config{Auth: vault.AuthConfig{Method: "cert"}}, "client_cert"},
		{"fail/renew-fraction", vault.Config{PKIRenewFraction: 1.5}, "pki_renew_fraction"},
		{"fail/bad-ref", vault.Config{Auth: vault.AuthConfig{Token: "hunter2"}}, "vault.auth.token"},
		{"ok/zero", vault.Config{}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			wantContains(t, wantErr(t, err, jobs.CodeKeystoreInvalid, false), tc.want)
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("message echoes a bare secret: %v", err)
			}
		})
	}
	t.Run("ok/yaml-and-json-durations", func(t *testing.T) {
		y := "address: https://vault.example:8200\ntimeout: 10s\npoll_interval: 1m\npki_renew_fraction: 0.5\n" +
			"auth: {method: approle, role_id: env:VAULT_ROLE_ID, secret_id: file:/run/secret-id}\n"
		var c vault.Config
		if err := yamlUnmarshal([]byte(y), &c); err != nil {
			t.Fatal(err)
		}
		if c.Timeout != 10*time.Second || c.PollInterval != time.Minute || c.Auth.RoleID != "env:VAULT_ROLE_ID" || c.PKIRenewFraction != 0.5 {
			t.Errorf("yaml decoded to %+v", c)
		}
		var j vault.Config
		if err := jsonUnmarshal([]byte(`{"timeout":"10s","poll_interval":60000000000,"auth":{"method":"token","token":"env:T"}}`), &j); err != nil {
			t.Fatal(err)
		}
		if j.Timeout != 10*time.Second || j.PollInterval != time.Minute || j.Auth.Token != "env:T" {
			t.Errorf("json decoded to %+v", j)
		}
	})
	t.Run("ok/inline-references-are-redacted", func(t *testing.T) {
		c := vault.Config{Auth: vault.AuthConfig{Method: "approle", RoleID: "value:role-visible?", SecretID: "value:s3cr3t-id"}}
		js, _ := jsonMarshal(c)
		logs := &syncBuffer{}
		l := zerologTo(logs)
		l.Info().Object("vault", c).Msg("config")
		for _, s := range []string{c.String(), js, logs.String(), sprintf("%v %+v %#v %s", c, c, c, c)} {
			if strings.Contains(s, "s3cr3t-id") {
				t.Errorf("inline secret printed: %s", s)
			}
		}
		if !bytes.Contains([]byte(js), []byte("value:[redacted]")) {
			t.Errorf("JSON does not show the redacted reference: %s", js)
		}
	})
}
