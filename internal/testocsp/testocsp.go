// Package testocsp is a certificate authority run by OpenSSL for revocation
// tests: `openssl ca` issues and revokes server certificates and writes the
// CRL (`openssl ca -gencrl`), `openssl ocsp` answers OCSP requests from the
// CA's index.txt, signing with a delegated responder certificate, and the
// `openssl ocsp` client fetches responses to staple. A small HTTP server in
// front, on 127.0.0.1, serves the CRL and relays OCSP requests to the
// OpenSSL responder, counting both, so that tests can check what a client
// asked and how often.
//
// Typical use: New, Issue the certificates (naming OCSPURL and CRLURL, or
// URLs where nothing answers), Revoke some, GenCRL, StartResponder, then
// Staple if needed. Revoke before StartResponder: the responder reads
// index.txt when it starts.
//
// It needs the openssl command (OpenSSL 1.1 or 3). When it is not on the
// PATH, New installs it with apt-get if it can (root on Debian or Ubuntu)
// and fails the test otherwise.
package testocsp

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/mtlsrelay/mtlsrelay/internal/testserver"
)

// CA is an OpenSSL certificate authority in a temporary directory, with its
// HTTP front. Its methods take the test to fail. Call Issue, Revoke,
// GenCRL, StartResponder and Staple from one goroutine (they run openssl on
// one index.txt); the front and the counters are safe for concurrent use.
type CA struct {
	// Dir is the CA's directory: ca.cnf, index.txt, ca.pem, ca.key, and
	// NAME.pem, NAME.key for each certificate issued.
	Dir string
	// CertFile is the CA certificate, PEM: the truststore of a client.
	CertFile string
	// Cert is the CA certificate.
	Cert *x509.Certificate

	openssl string
	front   *http.Server
	base    string // http://127.0.0.1:PORT of the front

	mu        sync.Mutex
	backend   string // 127.0.0.1:PORT of the OpenSSL responder, "" until started
	ocspBy    map[string]int
	ocspTotal int
	crlTotal  int
}

// Cert is a certificate the CA issued, with its key.
type Cert struct {
	Name     string
	CertFile string
	KeyFile  string
	Cert     *x509.Certificate
}

// SerialHex is the certificate's serial in lower-case hex.
func (c *Cert) SerialHex() string { return c.Cert.SerialNumber.Text(16) }

// TLSCertificate loads the certificate and key for a server.
func (c *Cert) TLSCertificate(tb testing.TB) tls.Certificate {
	tb.Helper()
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		tb.Fatalf("testocsp: load %s: %v", c.Name, err)
	}
	return cert
}

const caConfig = `# OpenSSL configuration of the testocsp CA.
[ ca ]
default_ca = testca

[ testca ]
dir              = .
database         = ./index.txt
new_certs_dir    = ./newcerts
serial           = ./serial
crlnumber        = ./crlnumber
certificate      = ./ca.pem
private_key      = ./ca.key
default_md       = sha256
default_days     = 30
default_crl_days = 1
policy           = anything
unique_subject   = no
copy_extensions  = none

[ anything ]
commonName = supplied

[ req ]
distinguished_name = dn
prompt             = no

[ dn ]
CN = unused
`

// New makes a CA named "mtlsrelay test OCSP CA" with a delegated OCSP
// responder certificate, and starts its HTTP front. Everything stops when
// the test ends.
func New(tb testing.TB) *CA {
	tb.Helper()
	ca := &CA{Dir: tb.TempDir(), openssl: OpenSSL(tb), ocspBy: map[string]int{}}
	ca.CertFile = filepath.Join(ca.Dir, "ca.pem")
	if err := os.Mkdir(filepath.Join(ca.Dir, "newcerts"), 0o700); err != nil {
		tb.Fatal(err)
	}
	for name, content := range map[string]string{
		"ca.cnf": caConfig, "index.txt": "", "serial": "1000\n", "crlnumber": "1000\n",
		"ext-ocsp.cnf": "basicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\nextendedKeyUsage = OCSPSigning\nsubjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n",
	} {
		if err := os.WriteFile(filepath.Join(ca.Dir, name), []byte(content), 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	ca.run(tb, "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
		"-keyout", "ca.key", "-out", "ca.pem", "-days", "3650", "-subj", "/CN=mtlsrelay test OCSP CA",
		"-addext", "basicConstraints=critical,CA:TRUE",
		"-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
		"-addext", "subjectKeyIdentifier=hash")
	ca.Cert = readCert(tb, ca.CertFile)
	ca.issue(tb, "ocsp-responder", "ext-ocsp.cnf")
	ca.startFront(tb)
	return ca
}

// OCSPURL is the URL of the CA's OCSP responder (through the front), for
// IssueOptions.OCSPURL.
func (ca *CA) OCSPURL() string { return ca.base + "/ocsp" }

// CRLURL is the URL of the CA's CRL (DER), for IssueOptions.CRLURL.
func (ca *CA) CRLURL() string { return ca.base + "/crl.der" }

// IssueOptions say which revocation URLs a certificate names.
type IssueOptions struct {
	// OCSPURL is written to the Authority Information Access extension;
	// none when empty.
	OCSPURL string
	// CRLURL is written to the CRL Distribution Points extension; none
	// when empty.
	CRLURL string
}

// Issue has `openssl ca` issue a server certificate CN=name for localhost
// and 127.0.0.1, with a new P-256 key, valid 30 days.
func (ca *CA) Issue(tb testing.TB, name string, o IssueOptions) *Cert {
	tb.Helper()
	ext := "basicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\nextendedKeyUsage = serverAuth\n" +
		"subjectAltName = DNS:localhost,IP:127.0.0.1\nsubjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n"
	if o.OCSPURL != "" {
		ext += "authorityInfoAccess = OCSP;URI:" + o.OCSPURL + "\n"
	}
	if o.CRLURL != "" {
		ext += "crlDistributionPoints = URI:" + o.CRLURL + "\n"
	}
	extFile := "ext-" + name + ".cnf"
	if err := os.WriteFile(filepath.Join(ca.Dir, extFile), []byte(ext), 0o600); err != nil {
		tb.Fatal(err)
	}
	return ca.issue(tb, name, extFile)
}

func (ca *CA) issue(tb testing.TB, name, extFile string) *Cert {
	tb.Helper()
	c := &Cert{Name: name, CertFile: filepath.Join(ca.Dir, name+".pem"), KeyFile: filepath.Join(ca.Dir, name+".key")}
	ca.run(tb, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
		"-keyout", name+".key", "-out", name+".csr", "-subj", "/CN="+name)
	ca.run(tb, "ca", "-batch", "-config", "ca.cnf", "-extfile", extFile, "-in", name+".csr", "-out", name+".pem", "-notext")
	c.Cert = readCert(tb, c.CertFile)
	return c
}

// Revoke has `openssl ca -revoke` mark c revoked in index.txt with reason
// (keyCompromise, superseded, ...).
func (ca *CA) Revoke(tb testing.TB, c *Cert, reason string) {
	tb.Helper()
	ca.run(tb, "ca", "-config", "ca.cnf", "-revoke", c.Name+".pem", "-crl_reason", reason)
}

// GenCRL has `openssl ca -gencrl` write the CRL (valid one day), which the
// front then serves at CRLURL in DER.
func (ca *CA) GenCRL(tb testing.TB) {
	tb.Helper()
	ca.run(tb, "ca", "-config", "ca.cnf", "-gencrl", "-crldays", "1", "-out", "crl.pem")
	ca.run(tb, "crl", "-in", "crl.pem", "-outform", "DER", "-out", "crl.der")
}

// StartResponder starts `openssl ocsp` on index.txt, signing with the
// delegated responder certificate (which it includes in its responses),
// with a nextUpdate an hour ahead. The front relays OCSPURL to it. It stops
// when the test ends.
func (ca *CA) StartResponder(tb testing.TB) {
	tb.Helper()
	port := freePort(tb)
	cmd := exec.Command(ca.openssl, "ocsp", "-index", "index.txt", "-port", port,
		"-rsigner", "ocsp-responder.pem", "-rkey", "ocsp-responder.key", "-CA", "ca.pem",
		"-nmin", "60", "-ignore_err")
	cmd.Dir = ca.Dir
	cmd.Env = append(os.Environ(), "OPENSSL_CONF="+filepath.Join(ca.Dir, "ca.cnf"))
	out := &watchBuffer{want: "ACCEPT", seen: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		tb.Fatalf("testocsp: start openssl ocsp: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	tb.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	// Wait for "ACCEPT [::]:PORT": a probe connection closed without a
	// request would make OpenSSL 3.0's responder spin on it, deaf to all
	// later requests.
	select {
	case <-out.seen:
	case <-exited:
		tb.Fatalf("testocsp: openssl ocsp exited: %s", out)
	case <-time.After(10 * time.Second):
		tb.Fatalf("testocsp: openssl ocsp does not listen on port %s: %s", port, out)
	}
	addr := "127.0.0.1:" + port
	ca.mu.Lock()
	ca.backend = addr
	ca.mu.Unlock()
}

// Staple asks the running responder (directly, not counted) about c with
// the `openssl ocsp` client, without a nonce, and returns the DER response,
// ready to staple.
func (ca *CA) Staple(tb testing.TB, c *Cert) []byte {
	tb.Helper()
	ca.mu.Lock()
	backend := ca.backend
	ca.mu.Unlock()
	if backend == "" {
		tb.Fatal("testocsp: Staple before StartResponder")
	}
	out := c.Name + ".staple.der"
	ca.run(tb, "ocsp", "-issuer", "ca.pem", "-cert", c.Name+".pem", "-url", "http://"+backend,
		"-CAfile", "ca.pem", "-no_nonce", "-respout", out)
	b, err := os.ReadFile(filepath.Join(ca.Dir, out))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// OCSPRequests returns how many OCSP requests about the certificate c the
// front received.
func (ca *CA) OCSPRequests(c *Cert) int {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	return ca.ocspBy[c.SerialHex()]
}

// TotalOCSPRequests returns how many OCSP requests the front received.
func (ca *CA) TotalOCSPRequests() int {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	return ca.ocspTotal
}

// CRLRequests returns how many times the front served the CRL.
func (ca *CA) CRLRequests() int {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	return ca.crlTotal
}

// startFront serves the CRL and relays OCSP requests to the responder.
func (ca *CA) startFront(tb testing.TB) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	ca.base = "http://" + ln.Addr().String()
	mux := http.NewServeMux()
	mux.HandleFunc("/crl.der", ca.serveCRL)
	mux.HandleFunc("/ocsp", ca.relayOCSP)
	mux.HandleFunc("/ocsp/", ca.relayOCSP)
	ca.front = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() { _ = ca.front.Serve(ln); close(done) }()
	tb.Cleanup(func() { ca.front.Close(); <-done })
}

func (ca *CA) serveCRL(w http.ResponseWriter, r *http.Request) {
	ca.mu.Lock()
	ca.crlTotal++
	ca.mu.Unlock()
	b, err := os.ReadFile(filepath.Join(ca.Dir, "crl.der"))
	if err != nil {
		http.Error(w, "no CRL yet (GenCRL)", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/pkix-crl")
	_, _ = w.Write(b)
}

// relayOCSP counts an OCSP request (POST, or GET /ocsp/BASE64) and relays
// it to the OpenSSL responder as a POST.
func (ca *CA) relayOCSP(w http.ResponseWriter, r *http.Request) {
	var der []byte
	var err error
	switch r.Method {
	case http.MethodPost:
		der, err = io.ReadAll(io.LimitReader(r.Body, 64<<10))
	case http.MethodGet:
		der, err = base64.StdEncoding.DecodeString(strings.TrimPrefix(r.URL.Path, "/ocsp/"))
	default:
		http.Error(w, "POST or GET", http.StatusMethodNotAllowed)
		return
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ca.mu.Lock()
	ca.ocspTotal++
	if req, err := ocsp.ParseRequest(der); err == nil {
		ca.ocspBy[req.SerialNumber.Text(16)]++
	}
	backend := ca.backend
	ca.mu.Unlock()
	if backend == "" {
		http.Error(w, "responder not started", http.StatusServiceUnavailable)
		return
	}
	resp, err := http.Post("http://"+backend+"/", "application/ocsp-request", bytes.NewReader(der))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	w.Header().Set("Content-Type", "application/ocsp-response")
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(body)
}

// run runs openssl in the CA's directory with its configuration.
func (ca *CA) run(tb testing.TB, args ...string) {
	tb.Helper()
	cmd := exec.Command(ca.openssl, args...)
	cmd.Dir = ca.Dir
	cmd.Env = append(os.Environ(), "OPENSSL_CONF="+filepath.Join(ca.Dir, "ca.cnf"))
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("testocsp: openssl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// ClosedURL returns an http URL on 127.0.0.1 where nothing listens: a
// responder or CRL server that is down.
func ClosedURL(tb testing.TB, path string) string {
	tb.Helper()
	return "http://127.0.0.1:" + freePort(tb) + path
}

func freePort(tb testing.TB) string {
	tb.Helper()
	port, err := testserver.FreePort()
	if err != nil {
		tb.Fatal(err)
	}
	return strconv.Itoa(port)
}

func readCert(tb testing.TB, path string) *x509.Certificate {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		tb.Fatalf("testocsp: no PEM certificate in %s", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		tb.Fatalf("testocsp: %s: %v", path, err)
	}
	return c
}

// watchBuffer collects a process's output and closes seen once it holds
// want.
type watchBuffer struct {
	mu   sync.Mutex
	b    bytes.Buffer
	want string
	seen chan struct{}
	done bool
}

func (w *watchBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b.Write(p)
	if !w.done && strings.Contains(w.b.String(), w.want) {
		w.done = true
		close(w.seen)
	}
	return len(p), nil
}

func (w *watchBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

var installOnce struct {
	sync.Once
	path string
	err  error
}

// OpenSSL returns the path of the openssl command, installing it with
// apt-get when it is missing and the test runs as root on a Debian-like
// system; the test fails when there is none.
func OpenSSL(tb testing.TB) string {
	tb.Helper()
	installOnce.Do(func() {
		if p, err := exec.LookPath("openssl"); err == nil {
			installOnce.path = p
			return
		}
		apt, err := exec.LookPath("apt-get")
		if err != nil || os.Geteuid() != 0 {
			installOnce.err = errors.New("openssl is not on the PATH; install OpenSSL (Debian: apt-get install openssl)")
			return
		}
		var log bytes.Buffer
		for _, args := range [][]string{{"update"}, {"install", "-y", "--no-install-recommends", "openssl"}} {
			cmd := exec.Command(apt, args...)
			cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
			cmd.Stdout, cmd.Stderr = &log, &log
			if err := cmd.Run(); err != nil {
				installOnce.err = fmt.Errorf("openssl is not on the PATH and apt-get %s failed: %v\n%s", args[0], err, log.String())
				return
			}
		}
		installOnce.path, installOnce.err = exec.LookPath("openssl")
	})
	if installOnce.err != nil {
		tb.Fatalf("testocsp: %v", installOnce.err)
	}
	return installOnce.path
}
