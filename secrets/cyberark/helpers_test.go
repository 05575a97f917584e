package cyberark_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/mtlsrelay/mtlsrelay/internal/fakeccp"
	"github.com/mtlsrelay/mtlsrelay/internal/pki"
	"github.com/mtlsrelay/mtlsrelay/secrets"
	"github.com/mtlsrelay/mtlsrelay/secrets/cyberark"

	"github.com/mtlsrelay/mtlsrelay/internal/testutil"
)

// Secret values of the fake vault and the client keystore's password; tests
// check that none of them reaches an error or a log.
const (
	contentSecret  = "s3cr3t-CONTENT-value-42"
	userNameValue  = "svc-mtlsrelay"
	customSecret   = "s3cr3t-CUSTOM-value-77"
	clientPassword = "ccp-client-pass-99"
	appID          = "mtlsrelay-workers"
)

// syncBuffer collects log output from several goroutines.
type syncBuffer = testutil.SyncBuffer

// ccpEnv is a fake CCP over real TLS that requires a client certificate,
// a client keystore and truststore on disk for it, and a log buffer.
type ccpEnv struct {
	ccp     *fakeccp.Server
	ca      *pki.CA
	client  *pki.Leaf
	other   *pki.CA // a CA nobody trusts
	dir     string
	logs    *syncBuffer
	secrets []string // values that must never be printed
}

// envOptions tweak the fake CCP before it starts.
type envOptions struct {
	// clientCAs returns the CAs the CCP accepts client certificates from;
	// default the env's CA.
	clientCAs func(e *ccpEnv) *pki.CA
}

func startCCP(t *testing.T, o envOptions) *ccpEnv {
	t.Helper()
	ca, err := pki.NewCA("mtlsrelay CCP test CA")
	if err != nil {
		t.Fatal(err)
	}
	other, err := pki.NewCA("unrelated CA")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.Issue(pki.LeafOptions{CommonName: "ccp.test", Server: true, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}})
	if err != nil {
		t.Fatal(err)
	}
	client, err := ca.Issue(pki.LeafOptions{CommonName: "mtlsrelay-ccp-client", Client: true})
	if err != nil {
		t.Fatal(err)
	}
	e := &ccpEnv{ca: ca, client: client, other: other, dir: t.TempDir(), logs: &syncBuffer{},
		secrets: []string{contentSecret, customSecret, clientPassword}}
	clientCA := ca
	if o.clientCAs != nil {
		clientCA = o.clientCAs(e)
	}
	e.ccp, err = fakeccp.Start(fakeccp.Options{Certificate: srv.TLSCertificate(), ClientCAs: clientCA.Pool()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.ccp.Close() })
	e.ccp.AddApp(fakeccp.App{ID: appID, CertificateSerials: []string{client.SerialHex()}})
	e.ccp.Add("Partners", "", "partner-a-password", map[string]string{
		"Content": contentSecret, "UserName": userNameValue, "Address": "partner-a.example", "KeystoreNote": customSecret,
	})
	p12, err := client.PKCS12(clientPassword)
	if err != nil {
		t.Fatal(err)
	}
	e.write(t, "ccp-client.p12", p12)
	e.write(t, "ccp-ca.pem", ca.CertPEM())
	e.write(t, "other-ca.pem", other.CertPEM())
	return e
}

func (e *ccpEnv) write(t *testing.T, name string, data []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(e.dir, name), data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// config is a working client config for the env.
func (e *ccpEnv) config() cyberark.Config {
	return cyberark.Config{
		URL:            e.ccp.URL(),
		AppID:          appID,
		ClientKeystore: "file:ccp-client.p12",
		ClientPassword: "value:" + clientPassword,
		Truststore:     "file:ccp-ca.pem",
		Reason:         "mtlsrelay test",
	}
}

// sources returns DefaultSources of the env's directory with a CyberArk
// client for cfg registered.
func (e *ccpEnv) sources(t *testing.T, cfg cyberark.Config) *secrets.Sources {
	t.Helper()
	s := secrets.DefaultSources(e.dir)
	c, err := cyberark.New(context.Background(), cfg, s, zerolog.New(e.logs).Level(zerolog.DebugLevel))
	if err != nil {
		t.Fatalf("cyberark.New: %v", err)
	}
	t.Cleanup(c.Close)
	c.Register(s)
	return s
}

// assertNoSecrets fails when s holds a secret value of the env.
func (e *ccpEnv) assertNoSecrets(t *testing.T, what, s string) {
	t.Helper()
	for _, secret := range e.secrets {
		if strings.Contains(s, secret) {
			t.Errorf("%s contains the secret %q: %s", what, secret, s)
		}
	}
	if strings.Contains(s, "PRIVATE KEY") {
		t.Errorf("%s contains private key material", what)
	}
}

// closedPort returns a loopback port nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, p, _ := net.SplitHostPort(ln.Addr().String())
	ln.Close()
	return p
}
