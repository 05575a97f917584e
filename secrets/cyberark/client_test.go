package cyberark_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/mtlsrelay/mtlsrelay/internal/fakeccp"
	"github.com/mtlsrelay/mtlsrelay/internal/pki"
	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/secrets"
	"github.com/mtlsrelay/mtlsrelay/secrets/cyberark"
)

func mustRef(t *testing.T, s string) secrets.Ref {
	t.Helper()
	r, err := secrets.ParseRef(s)
	if err != nil {
		t.Fatalf("ParseRef(%q): %v", s, err)
	}
	return r
}

func TestFetch(t *testing.T) {
	e := startCCP(t, envOptions{})
	src := e.sources(t, e.config())
	ctx := context.Background()
	for _, tc := range []struct{ name, ref, want string }{
		{"ok/content-default", "cyberark:Partners/partner-a-password", contentSecret},
		{"ok/content", "cyberark:Partners/partner-a-password#Content", contentSecret},
		{"ok/username", "cyberark:Partners/partner-a-password#UserName", userNameValue},
		{"ok/custom-property-any-case", "cyberark:Partners/partner-a-password#keystorenote", customSecret},
		{"ok/response-field", "cyberark:Partners/partner-a-password#Folder", "Root"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sec, err := src.Fetch(ctx, mustRef(t, tc.ref))
			if err != nil {
				t.Fatal(err)
			}
			if string(sec.Data) != tc.want {
				t.Errorf("Data = %q, want %q", sec.Data, tc.want)
			}
			if !strings.HasPrefix(sec.Version, "cyberark-") {
				t.Errorf("Version = %q", sec.Version)
			}
			e.assertNoSecrets(t, "Version", sec.Version)
		})
	}
	t.Run("ok/request", func(t *testing.T) {
		reqs := e.ccp.Requests()
		r := reqs[len(reqs)-1]
		want := fakeccp.Request{AppID: appID, Safe: "Partners", Folder: "Root", Object: "partner-a-password",
			Reason: "mtlsrelay test", ClientSerial: e.client.SerialHex(), Status: 200}
		if r != want {
			t.Errorf("the CCP saw %+v, want %+v", r, want)
		}
	})
	t.Run("ok/rotation-changes-version", func(t *testing.T) {
		ref := mustRef(t, "cyberark:Partners/partner-a-password#Content")
		a, err := src.Fetch(ctx, ref)
		if err != nil {
			t.Fatal(err)
		}
		b, err := src.Fetch(ctx, ref)
		if err != nil {
			t.Fatal(err)
		}
		if a.Version != b.Version {
			t.Errorf("Version changed without rotation: %s, %s", a.Version, b.Version)
		}
		const rotated = "s3cr3t-ROTATED-value-43"
		e.secrets = append(e.secrets, rotated)
		e.ccp.Add("Partners", "Root", "partner-a-password", map[string]string{"Content": rotated})
		c, err := src.Fetch(ctx, ref)
		if err != nil {
			t.Fatal(err)
		}
		if string(c.Data) != rotated || c.Version == a.Version {
			t.Errorf("after rotation Data %q Version %s (before %s)", c.Data, c.Version, a.Version)
		}
		e.ccp.Add("Partners", "Root", "partner-a-password", map[string]string{
			"Content": contentSecret, "UserName": userNameValue, "KeystoreNote": customSecret})
	})
	e.assertNoSecrets(t, "log", e.logs.String())
}

func TestFetchFailures(t *testing.T) {
	const ref = "cyberark:Partners/partner-a-password#Content"
	for _, tc := range []struct {
		name      string
		env       envOptions
		setup     func(e *ccpEnv, cfg *cyberark.Config)
		ref       string
		code      jobs.Code
		retryable bool
		notFound  bool
		wantIn    []string
	}{
		{name: "fail/unknown-object", ref: "cyberark:Partners/no-such-object",
			code: jobs.CodeSecretUnavailable, notFound: true,
			wantIn: []string{"Safe=Partners", "Object=no-such-object", "APPAP004E", appID}},
		{name: "fail/unknown-safe", ref: "cyberark:Nowhere/partner-a-password",
			code: jobs.CodeSecretUnavailable, notFound: true, wantIn: []string{"Safe=Nowhere", "members of Safe"}},
		{name: "fail/property-missing", ref: "cyberark:Partners/partner-a-password#NoSuchProperty",
			code: jobs.CodeSecretUnavailable, notFound: true, wantIn: []string{`"NoSuchProperty"`, "UserName", "#property"}},
		{name: "fail/wrong-app-id", setup: func(_ *ccpEnv, cfg *cyberark.Config) { cfg.AppID = "someone-else" },
			code: jobs.CodeSecretUnavailable, wantIn: []string{`AppID "someone-else"`, "APPAP008E", "app_id"}},
		{name: "fail/app-id-certificate-not-allowed", setup: func(e *ccpEnv, _ *cyberark.Config) {
			e.ccp.AddApp(fakeccp.App{ID: appID, CertificateSerials: []string{"123abc"}})
		}, code: jobs.CodeSecretUnavailable, wantIn: []string{"refused AppID", "APPAP306E", "allowed machines", "client certificate"}},
		{name: "fail/ccp-unreachable", setup: func(_ *ccpEnv, cfg *cyberark.Config) { cfg.URL = "https://127.0.0.1:" + closedPort(t) },
			code: jobs.CodeSecretUnavailable, retryable: true, wantIn: []string{"is unreachable", "connection refused", "cached profiles keep working"}},
		{name: "fail/ccp-timeout", setup: func(e *ccpEnv, cfg *cyberark.Config) {
			e.ccp.SetLatency(5 * time.Second)
			cfg.Timeout = 200 * time.Millisecond
		}, code: jobs.CodeSecretUnavailable, retryable: true, wantIn: []string{"is unreachable", "no answer within 200ms"}},
		{name: "fail/ccp-5xx", setup: func(e *ccpEnv, _ *cyberark.Config) { e.ccp.SetFailure(&fakeccp.Failure{Status: 503}) },
			code: jobs.CodeSecretUnavailable, retryable: true, wantIn: []string{"is unreachable", "HTTP 503"}},
		{name: "fail/ccp-cannot-reach-vault", setup: func(e *ccpEnv, _ *cyberark.Config) {
			e.ccp.SetFailure(&fakeccp.Failure{Status: 400, ErrorCode: "APPAP007E", ErrorMsg: "Connection to the Vault has failed."})
		}, code: jobs.CodeSecretUnavailable, retryable: true, wantIn: []string{"cannot reach the CyberArk Vault", "APPAP007E"}},
		{name: "fail/password-being-changed", setup: func(e *ccpEnv, _ *cyberark.Config) {
			e.ccp.SetFailure(&fakeccp.Failure{Status: 500, ErrorCode: "APPAP282E", ErrorMsg: "Password [partner-a-password] is currently being changed by the CPM."})
		}, code: jobs.CodeSecretUnavailable, retryable: true, wantIn: []string{"CPM is changing", "APPAP282E"}},
		{name: "fail/too-many-objects", setup: func(e *ccpEnv, _ *cyberark.Config) {
			e.ccp.SetFailure(&fakeccp.Failure{Status: 400, ErrorCode: "APPAP227E", ErrorMsg: "Too many password objects"})
		}, code: jobs.CodeSecretUnavailable, wantIn: []string{"more than one", "APPAP227E"}},
		{name: "fail/ccp-does-not-trust-client-cert", env: envOptions{clientCAs: func(e *ccpEnv) *pki.CA { return e.other }},
			code: jobs.CodeSecretUnavailable, wantIn: []string{"refused the client certificate of client_keystore", "TLS alert", appID}},
		{name: "fail/no-client-cert", setup: func(_ *ccpEnv, cfg *cyberark.Config) { cfg.ClientKeystore, cfg.ClientPassword = "", "" },
			code: jobs.CodeSecretUnavailable, wantIn: []string{"client_keystore is not set", "certificate required"}},
		{name: "fail/ccp-server-cert-untrusted", setup: func(_ *ccpEnv, cfg *cyberark.Config) { cfg.Truststore = "file:other-ca.pem" },
			code: jobs.CodeSecretUnavailable, wantIn: []string{"not trusted by the cyberark truststore", "set truststore"}},
		{name: "fail/wrong-path", setup: func(_ *ccpEnv, cfg *cyberark.Config) { cfg.URL += "/PasswordVault" },
			code: jobs.CodeSecretUnavailable, wantIn: []string{"without a CyberArk error code", "/PasswordVault/api/Accounts", "check url"}},
		{name: "fail/bad-reference", ref: "cyberark:Partners",
			code: jobs.CodeKeystoreInvalid, wantIn: []string{"SAFE/OBJECT"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := startCCP(t, tc.env)
			cfg := e.config()
			if tc.setup != nil {
				tc.setup(e, &cfg)
			}
			src := e.sources(t, cfg)
			r := tc.ref
			if r == "" {
				r = ref
			}
			_, err := src.Fetch(context.Background(), mustRef(t, r))
			if err == nil {
				t.Fatal("Fetch succeeded, want an error")
			}
			t.Logf("%v", err)
			je := jobs.AsError(err)
			if je.Code != tc.code || je.Retryable != tc.retryable {
				t.Errorf("got %s retryable=%v, want %s retryable=%v: %v", je.Code, je.Retryable, tc.code, tc.retryable, err)
			}
			if got := errors.Is(err, secrets.ErrNotFound); got != tc.notFound {
				t.Errorf("errors.Is(err, ErrNotFound) = %v, want %v: %v", got, tc.notFound, err)
			}
			for _, s := range tc.wantIn {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error does not mention %q: %v", s, err)
				}
			}
			e.assertNoSecrets(t, "error", err.Error())
			e.assertNoSecrets(t, "error %+v", fmt.Sprintf("%+v %#v", err, err))
			e.assertNoSecrets(t, "log", e.logs.String())
		})
	}
}

// TestResolveProfile resolves a whole mTLS profile whose keystore (base64
// text in the object's content) and password live in CyberArk.
func TestResolveProfile(t *testing.T) {
	e := startCCP(t, envOptions{})
	leaf, err := e.ca.Issue(pki.LeafOptions{CommonName: "partner-a-client", Client: true})
	if err != nil {
		t.Fatal(err)
	}
	const ksPassword = "partner-a-ks-pass-5"
	p12, err := leaf.PKCS12(ksPassword)
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.StdEncoding.EncodeToString(p12)
	e.secrets = append(e.secrets, ksPassword, b64[:40])
	e.ccp.Add("Partners", "", "partner-a-keystore", map[string]string{"Content": b64})
	e.ccp.Add("Partners", "", "partner-a-ks-password", map[string]string{"Content": ksPassword})
	res := secrets.NewResolver(e.sources(t, e.config()))
	p := secrets.Profile{
		Keystore: "cyberark:Partners/partner-a-keystore#Content",
		Password: "cyberark:Partners/partner-a-ks-password",
	}
	logs := &syncBuffer{}
	ctx := zerolog.New(logs).WithContext(context.Background())
	if err := res.Validate("partner-a", p); err != nil {
		t.Fatal(err)
	}
	m, err := res.Resolve(ctx, "partner-a", p)
	if err != nil {
		t.Fatal(err)
	}
	if m.Leaf.Subject.CommonName != "partner-a-client" {
		t.Errorf("client certificate CN %q", m.Leaf.Subject.CommonName)
	}
	t.Run("fail/ccp-down-keeps-cached", func(t *testing.T) {
		res := secrets.NewResolver(e.sources(t, e.config()), secrets.WithRefreshInterval(0))
		m1, err := res.Resolve(ctx, "partner-a", p)
		if err != nil {
			t.Fatal(err)
		}
		e.ccp.SetFailure(&fakeccp.Failure{Status: 503})
		defer e.ccp.SetFailure(nil)
		m2, err := res.Resolve(ctx, "partner-a", p)
		if err != nil || m2 != m1 {
			t.Fatalf("with the CCP down Resolve = %v, %v; want the cached material", m2, err)
		}
	})
	e.assertNoSecrets(t, "log", e.logs.String()+logs.String())
}

func TestNewFailures(t *testing.T) {
	e := startCCP(t, envOptions{})
	for _, tc := range []struct {
		name   string
		mutate func(*cyberark.Config)
		code   jobs.Code
		wantIn string
	}{
		{"fail/wrong-client-password", func(c *cyberark.Config) { c.ClientPassword = "value:not-it" }, jobs.CodeKeystorePasswordWrong, "client_keystore"},
		{"fail/missing-client-keystore", func(c *cyberark.Config) { c.ClientKeystore = "file:nope.p12" }, jobs.CodeSecretUnavailable, "client_keystore file:"},
		{"fail/missing-truststore", func(c *cyberark.Config) { c.Truststore = "env:MTLSRELAY_NO_SUCH_VAR" }, jobs.CodeSecretUnavailable, "truststore env:MTLSRELAY_NO_SUCH_VAR"},
		{"fail/http-url", func(c *cyberark.Config) { c.URL = "http://ccp.example" }, jobs.CodeKeystoreInvalid, "not https"},
		{"fail/no-app-id", func(c *cyberark.Config) { c.AppID = "" }, jobs.CodeKeystoreInvalid, "app_id is not set"},
		{"fail/plus-in-app-id", func(c *cyberark.Config) { c.AppID = "a+b" }, jobs.CodeKeystoreInvalid, "+ & %"},
		{"fail/cyberark-client-keystore", func(c *cyberark.Config) { c.ClientKeystore = "cyberark:S/o" }, jobs.CodeKeystoreInvalid, "cannot be fetched before"},
		{"fail/password-without-keystore", func(c *cyberark.Config) { c.ClientKeystore = "" }, jobs.CodeKeystoreInvalid, "client_password is set but"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := e.config()
			tc.mutate(&cfg)
			_, err := cyberark.New(context.Background(), cfg, secrets.DefaultSources(e.dir), zerolog.Nop())
			if err == nil {
				t.Fatal("New succeeded, want an error")
			}
			if got := jobs.CodeOf(err); got != tc.code || !strings.Contains(err.Error(), tc.wantIn) {
				t.Errorf("got %v, want code %s mentioning %q", err, tc.code, tc.wantIn)
			}
			e.assertNoSecrets(t, "error", err.Error())
		})
	}
}

// TestClientCertificateRotates replaces the client keystore the CCP
// client reads (client_keystore: file:...) while it runs: the next request
// presents the new certificate, without a restart. Before, the certificate
// read at start was presented until the worker restarted.
func TestClientCertificateRotates(t *testing.T) {
	e := startCCP(t, envOptions{})
	next, err := e.ca.Issue(pki.LeafOptions{CommonName: "mtlsrelay-ccp-client-next", Client: true})
	if err != nil {
		t.Fatal(err)
	}
	e.ccp.AddApp(fakeccp.App{ID: appID, CertificateSerials: []string{e.client.SerialHex(), next.SerialHex()}})
	src := e.sources(t, e.config())
	ctx := context.Background()
	ref := mustRef(t, "cyberark:Partners/partner-a-password")
	lastSerial := func() string {
		t.Helper()
		if _, err := src.Fetch(ctx, ref); err != nil {
			t.Fatal(err)
		}
		reqs := e.ccp.Requests()
		return reqs[len(reqs)-1].ClientSerial
	}
	if got := lastSerial(); got != e.client.SerialHex() {
		t.Fatalf("first request presented %s, want %s", got, e.client.SerialHex())
	}
	p12, err := next.PKCS12(clientPassword)
	if err != nil {
		t.Fatal(err)
	}
	e.write(t, "ccp-client.p12", p12)
	deadline := time.Now().Add(10 * time.Second)
	for got := lastSerial(); got != next.SerialHex(); got = lastSerial() {
		if time.Now().After(deadline) {
			t.Fatalf("still presenting %s 10 s after the keystore was replaced, want %s", got, next.SerialHex())
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.assertNoSecrets(t, "logs", e.logs.String())
}

// An expired client_keystore certificate is reported as such, not retried
// as if the CCP were unreachable.
func TestExpiredClientCertificate(t *testing.T) {
	e := startCCP(t, envOptions{})
	old, err := e.ca.Issue(pki.LeafOptions{CommonName: "mtlsrelay-ccp-client-old", Client: true,
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	p12, err := old.PKCS12(clientPassword)
	if err != nil {
		t.Fatal(err)
	}
	e.write(t, "ccp-client.p12", p12)
	src := e.sources(t, e.config())
	_, err = src.Fetch(context.Background(), mustRef(t, "cyberark:Partners/partner-a-password"))
	je := jobs.AsError(err)
	if err == nil || je.Code != jobs.CodeClientCertExpired || je.Retryable || !strings.Contains(je.Message, "CCP") {
		t.Fatalf("err = %v (retryable %v); want client_cert_expired, not retried, naming the CCP", err, je.Retryable)
	}
}
