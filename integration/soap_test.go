package integration

import (
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/mtlsrelay/mtlsrelay/internal/testdeb"
	"github.com/mtlsrelay/mtlsrelay/outbound/wsdl"
)

// soapPartner is a spyne SOAP service (the one outbound/wsdl's fixtures
// were generated from) behind Python's TLS with a required client
// certificate (integration/testdata/soap/partner.py), logging each request
// as received.
type soapPartner struct {
	URL string
	log string
}

// soapRequest is one request the partner logged.
type soapRequest struct {
	Method      string `json:"method"`
	Path        string `json:"path"`
	Query       string `json:"query"`
	SOAPAction  string `json:"soap_action"`
	ContentType string `json:"content_type"`
	Body        string `json:"body"`
}

// repoPath returns a path in the repository.
func repoPath(parts ...string) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(append([]string{filepath.Dir(file), ".."}, parts...)...)
}

// soapPython returns Debian's python3 with spyne, zeep and xmlsec,
// installing the packages when they are missing.
func soapPython(t testing.TB) string {
	t.Helper()
	return testdeb.PythonModules(t, []string{"spyne", "zeep", "xmlsec", "lxml"}, "python3-spyne", "python3-zeep", "python3-xmlsec")
}

// startSOAPPartner starts partner.py; extra are its flags beyond the TLS
// material (--sign-key, --sign-cert, --tamper).
func startSOAPPartner(t *testing.T, extra ...string) *soapPartner {
	t.Helper()
	py := soapPython(t)
	logPath := filepath.Join(t.TempDir(), "requests.jsonl")
	args := append([]string{repoPath("integration", "testdata", "soap", "partner.py"),
		"--app", repoPath("outbound", "wsdl", "testdata", "spyne", "service.py"),
		"--cert", fixture(t, "server.pem"), "--key", fixture(t, "server.key"), "--ca", fixture(t, "ca.pem"),
		"--log", logPath}, extra...)
	cmd := exec.Command(py, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(out)
		if s.Scan() {
			line <- s.Text()
		}
		close(line)
	}()
	select {
	case l, ok := <-line:
		var port int
		if !ok || func() bool { _, err := fmt.Sscanf(l, "listening %d", &port); return err != nil }() {
			t.Fatalf("partner.py did not start: %q\n%s", l, stderr.String())
		}
		return &soapPartner{URL: fmt.Sprintf("https://127.0.0.1:%d/", port), log: logPath}
	case <-time.After(60 * time.Second):
		t.Fatalf("partner.py did not start within 60s\n%s", stderr.String())
	}
	return nil
}

// requests returns the POSTs the partner logged so far.
func (p *soapPartner) requests(t *testing.T) []soapRequest {
	t.Helper()
	b, err := os.ReadFile(p.log)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []soapRequest
	for _, l := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
		var r soapRequest
		if err := json.Unmarshal(l, &r); err != nil {
			t.Fatalf("partner log line %q: %v", l, err)
		}
		if r.Method == "POST" {
			out = append(out, r)
		}
	}
	return out
}

// last returns the last POST the partner logged.
func (p *soapPartner) last(t *testing.T) soapRequest {
	t.Helper()
	rs := p.requests(t)
	if len(rs) == 0 {
		t.Fatal("the partner logged no POST")
	}
	return rs[len(rs)-1]
}

const spyneNS = "http://example.com/spyne/orders"

func addBody(a, b int) string {
	return fmt.Sprintf(`<tns:Add xmlns:tns="%s"><tns:a>%d</tns:a><tns:b>%d</tns:b></tns:Add>`, spyneNS, a, b)
}

var addResult = regexp.MustCompile(`AddResult>(\d+)<`)

// A call that names a WSDL operation reaches spyne with the SOAPAction,
// SOAP version and endpoint the WSDL gives; a wrong name ends invalid_call
// naming the operations that exist; soap describe lists them.
func TestSOAPOperationSpyne(t *testing.T) {
	p := startSOAPPartner(t)
	srv := startNATS(t)
	cfg := configYAML(t, `
worker: {concurrency: 4, admin_addr: "off", retry_base: 20ms, retry_max: 200ms}
log: {level: debug, format: json}
profiles:
  rsa: {keystore: "file:FIX/client-openssl.p12", password: "value:fixture-pass-123", truststore: "file:FIX/ca.pem"}
connections:
  spyne: {base_url: "SPYNE", profile: rsa, wsdl: "?wsdl"}
  nowsdl: {base_url: "SPYNE", profile: rsa}
`, "SPYNE", p.URL)
	startWorker(t, srv.ClientURL(), cfg)
	nc, js := connect(t, srv.ClientURL())

	t.Run("ok/operation-fills-soapaction", func(t *testing.T) {
		r := call(t, nc, js, "spyne", map[string]any{"soap": map[string]any{"operation": "Add", "body": addBody(2, 3)}})
		if !r.OK || r.Status != 200 {
			t.Fatalf("Add by operation: ok=%v status=%d error=%v fault=%+v body=%.300s", r.OK, r.Status, r.Error, r.SOAPFault, r.Body)
		}
		if m := addResult.FindStringSubmatch(r.Body); m == nil || m[1] != "5" {
			t.Errorf("Add(2, 3): body %.300s, want AddResult 5", r.Body)
		}
		got := p.last(t)
		// spyne's WSDL (outbound/wsdl/testdata/spyne/orders.wsdl) says
		// soapAction="Add" on a SOAP 1.1 binding.
		if got.SOAPAction != `"Add"` || !strings.HasPrefix(got.ContentType, "text/xml") {
			t.Errorf("spyne received SOAPAction %q, Content-Type %q; want \"Add\" and text/xml (SOAP 1.1)", got.SOAPAction, got.ContentType)
		}
	})
	t.Run("ok/qualified-name", func(t *testing.T) {
		r := call(t, nc, js, "spyne", map[string]any{"soap": map[string]any{"operation": "CalculatorService/OrderApp/Subtract",
			"body": fmt.Sprintf(`<tns:Subtract xmlns:tns="%s"><tns:a>9</tns:a><tns:b>4</tns:b></tns:Subtract>`, spyneNS)}})
		if !r.OK || !strings.Contains(r.Body, "SubtractResult>5<") {
			t.Fatalf("Subtract by qualified operation: ok=%v error=%v body=%.300s", r.OK, r.Error, r.Body)
		}
		if got := p.last(t).SOAPAction; got != `"Subtract"` {
			t.Errorf("SOAPAction %q, want \"Subtract\"", got)
		}
	})
	t.Run("fail/unknown-operation-lists-operations", func(t *testing.T) {
		before := len(p.requests(t))
		r := call(t, nc, js, "spyne", map[string]any{"soap": map[string]any{"operation": "Multiply", "body": addBody(1, 1)}})
		if r.OK || r.Error == nil || r.Error.Code != "invalid_call" {
			t.Fatalf("unknown operation: %+v", r)
		}
		for _, op := range []string{"Add", "Subtract", "PlaceOrder", "ListOrderIds"} {
			if !strings.Contains(r.Error.Message, op) {
				t.Errorf("the error does not name operation %s: %s", op, r.Error.Message)
			}
		}
		if n := len(p.requests(t)); n != before {
			t.Errorf("the partner got %d POSTs for a call that names no operation of its WSDL", n-before)
		}
	})
	t.Run("fail/operation-without-wsdl", func(t *testing.T) {
		r := call(t, nc, js, "nowsdl", map[string]any{"soap": map[string]any{"operation": "Add", "body": addBody(1, 1)}})
		if r.Error == nil || r.Error.Code != "invalid_call" || !strings.Contains(r.Error.Message, "no wsdl") {
			t.Fatalf("operation on a connection without wsdl: %+v", r.Error)
		}
	})
	t.Run("fail/operation-and-action", func(t *testing.T) {
		r := call(t, nc, js, "spyne", map[string]any{"soap": map[string]any{"operation": "Add", "action": "Add", "body": addBody(1, 1)}})
		if r.Error == nil || r.Error.Code != "invalid_call" {
			t.Fatalf("operation and action: %+v", r.Error)
		}
	})

	t.Run("ok/soap-describe-cli", func(t *testing.T) {
		path := writeConfig(t, `
profiles:
  rsa: {keystore: "file:FIX/client-openssl.p12", password: "value:fixture-pass-123", truststore: "file:FIX/ca.pem"}
connections:
  spyne: {base_url: "SPYNE", profile: rsa}
`, "SPYNE", p.URL)
		stdout, stderr, code := runCLI(t, nil, "soap", "describe", "spyne", "--config", path, "--json")
		if code != 0 {
			t.Fatalf("soap describe: exit %d\n%s%s", code, stdout, stderr)
		}
		var d struct {
			Services []struct {
				Name  string
				Ports []struct {
					Name        string
					Address     string
					SOAPVersion string `json:"soap_version"`
					Operations  []struct {
						Name       string
						SOAPAction string `json:"soap_action"`
						Input      string
					}
				}
			}
		}
		if err := json.Unmarshal([]byte(stdout), &d); err != nil {
			t.Fatalf("soap describe --json: %v\n%s", err, stdout)
		}
		ops := map[string]string{}
		for _, s := range d.Services {
			for _, pt := range s.Ports {
				if pt.SOAPVersion != "1.1" || pt.Address != p.URL {
					t.Errorf("port %s: version %s address %s; want 1.1 at %s", pt.Name, pt.SOAPVersion, pt.Address, p.URL)
				}
				for _, op := range pt.Operations {
					ops[op.Name] = op.SOAPAction
					if op.Name == "Add" && (!strings.Contains(op.Input, "Add") || !strings.Contains(op.Input, ">integer<")) {
						t.Errorf("Add's input skeleton %q lacks its element or its integer fields (spyne.Integer is xs:integer)", op.Input)
					}
				}
			}
		}
		for _, op := range []string{"Add", "Subtract", "PlaceOrder", "ListOrderIds"} {
			if ops[op] != op {
				t.Errorf("soap describe: operation %s has SOAPAction %q, want %q (all: %v)", op, ops[op], op, ops)
			}
		}
		// --wsdl FILE prints what outbound/wsdl reads, which its tests
		// compare with zeep for these fixtures from spyne and gSOAP.
		for _, f := range []string{"spyne/orders.wsdl", "gsoap/inventory.wsdl", "gsoap/billing.wsdl", "imports/billing.wsdl"} {
			file := repoPath("outbound", "wsdl", "testdata", f)
			out, stderr, code := runCLI(t, nil, "soap", "describe", "spyne", "--config", path, "--json", "--wsdl", file)
			if code != 0 {
				t.Fatalf("soap describe --wsdl %s: exit %d\n%s", f, code, stderr)
			}
			want, err := wsdl.Load(context.Background(), file, nil)
			if err != nil {
				t.Fatal(err)
			}
			wantJSON, _ := json.Marshal(want)
			var got, wantAny any
			if err := json.Unmarshal([]byte(out), &got); err != nil {
				t.Fatalf("soap describe --wsdl %s --json: %v", f, err)
			}
			_ = json.Unmarshal(wantJSON, &wantAny)
			if !reflect.DeepEqual(got, wantAny) {
				t.Errorf("soap describe --wsdl %s --json differs from wsdl.Load:\n got %.600s\nwant %.600s", f, out, wantJSON)
			}
		}
		text, stderr, code := runCLI(t, nil, "soap", "describe", "spyne", "--config", path)
		if code != 0 || !strings.Contains(text, "/OrderApp/PlaceOrder") {
			t.Errorf("soap describe (text): exit %d\n%s%s", code, text, stderr)
		}
	})
}

// Signed calls verify with xmlsec1 and with zeep, for an RSA and an ECDSA
// profile; after the profile's keystore is rotated, the next signed call
// carries the new certificate.
func TestSOAPWSSecuritySigned(t *testing.T) {
	xmlsec1 := testdeb.Command(t, "xmlsec1", "xmlsec1")
	py := soapPython(t)
	p := startSOAPPartner(t)
	srv := startNATS(t)
	rotating := filepath.Join(t.TempDir(), "rotating.pem")
	copyFile(t, fixture(t, "client.pem"), rotating)
	cfg := configYAML(t, `
worker: {concurrency: 4, admin_addr: "off", retry_base: 20ms, retry_max: 200ms}
log: {level: debug, format: json}
profiles:
  rsa: {keystore: "file:FIX/client-openssl.p12", password: "value:fixture-pass-123", truststore: "file:FIX/ca.pem", soap: {wss: {timestamp_ttl: 2m}}}
  ec:  {keystore: "file:FIX/client-ec-sec1.pem", truststore: "file:FIX/ca.pem"}
  rotating: {keystore: "file:ROTATING", truststore: "file:FIX/ca.pem"}
connections:
  signed-rsa: {base_url: "SPYNE", profile: rsa, wsdl: "?wsdl"}
  signed-ec:  {base_url: "SPYNE", profile: ec, wsdl: "?wsdl", soap: {wss: {}}}
  signed-rotating: {base_url: "SPYNE", profile: rotating, wsdl: "?wsdl", soap: {wss: {}}}
  signed-to: {base_url: "SPYNE", profile: ec, wsdl: "?wsdl", soap: {wss: {sign_headers: ["{http://www.w3.org/2005/08/addressing}To"]}}}
`, "SPYNE", p.URL, "ROTATING", rotating)
	startWorker(t, srv.ClientURL(), cfg)
	nc, js := connect(t, srv.ClientURL())

	for _, c := range []struct{ conn, certFixture, cn string }{
		{"signed-rsa", "client.pem", "mtlsrelay-test-client"},
		{"signed-ec", "client-ec-sec1.pem", "mtlsrelay-test-client-ec"},
	} {
		t.Run("ok/"+c.conn, func(t *testing.T) {
			r := call(t, nc, js, c.conn, map[string]any{"soap": map[string]any{"operation": "Add", "body": addBody(20, 22)}})
			if !r.OK || !strings.Contains(r.Body, "AddResult>42<") {
				t.Fatalf("signed Add: ok=%v error=%v body=%.300s", r.OK, r.Error, r.Body)
			}
			env := p.last(t).Body
			if cert := bstCertificate(t, env); cert.Subject.CommonName != c.cn {
				t.Errorf("the BinarySecurityToken carries %s, want the profile's %s", cert.Subject, c.cn)
			}
			certPEM := leafPEMFile(t, fixture(t, c.certFixture))
			verifyWithTools(t, xmlsec1, py, env, certPEM)
		})
	}

	t.Run("ok/signed-header-block", func(t *testing.T) {
		r := call(t, nc, js, "signed-to", map[string]any{"soap": map[string]any{"operation": "Add", "body": addBody(1, 1),
			"header": `<wsa:To xmlns:wsa="http://www.w3.org/2005/08/addressing">urn:partner:orders</wsa:To>`}})
		if !r.OK {
			t.Fatalf("signed header block: %+v", r.Error)
		}
		env := p.last(t).Body
		if n := strings.Count(env, "<ds:Reference ") + strings.Count(env, "<Reference "); n != 3 {
			t.Errorf("%d references, want Body, Timestamp and wsa:To", n)
		}
		verifyWithTools(t, xmlsec1, py, env, leafPEMFile(t, fixture(t, "client-ec-sec1.pem")))
	})
	// The call's soap.header is the flow's: it cannot bring its own
	// wsse:Security header for the relay to sign around, and a block the
	// connection signs must be there.
	for _, c := range []struct{ name, conn, header, says string }{
		{"own-security-header", "signed-ec", `<wsse:Security xmlns:wsse="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"/>`, "already has a wsse:Security header"},
		{"missing-signed-block", "signed-to", "", "{http://www.w3.org/2005/08/addressing}To"},
	} {
		t.Run("fail/"+c.name, func(t *testing.T) {
			before := len(p.requests(t))
			r := call(t, nc, js, c.conn, map[string]any{"soap": map[string]any{"operation": "Add", "body": addBody(1, 1), "header": c.header}})
			if r.OK || r.Error == nil || r.Error.Code != "invalid_call" || !strings.Contains(r.Error.Message, c.says) {
				t.Fatalf("%s: %+v", c.name, r.Error)
			}
			if n := len(p.requests(t)); n != before {
				t.Errorf("the partner got a request the relay could not sign")
			}
		})
	}

	t.Run("ok/rotation-signs-with-the-new-certificate", func(t *testing.T) {
		r := call(t, nc, js, "signed-rotating", map[string]any{"soap": map[string]any{"operation": "Add", "body": addBody(1, 2)}})
		if !r.OK {
			t.Fatalf("before rotation: %+v", r.Error)
		}
		if cn := bstCertificate(t, p.last(t).Body).Subject.CommonName; cn != "mtlsrelay-test-client" {
			t.Fatalf("before rotation the token carries %s", cn)
		}
		// The RSA identity is replaced by the EC one, as a renewal that
		// changes key type would. The worker checks the file about once a
		// second; the next calls must sign with the new identity.
		copyFile(t, fixture(t, "client-ec-sec1.pem"), rotating)
		var env string
		checkFor(t, 15*time.Second, 200*time.Millisecond, func() error {
			r := call(t, nc, js, "signed-rotating", map[string]any{"soap": map[string]any{"operation": "Add", "body": addBody(1, 2)}})
			if !r.OK {
				return fmt.Errorf("call failed: %+v", r.Error)
			}
			env = p.last(t).Body
			if cn := bstCertificate(t, env).Subject.CommonName; cn != "mtlsrelay-test-client-ec" {
				return fmt.Errorf("still signed by %s", cn)
			}
			return nil
		})
		verifyWithTools(t, xmlsec1, py, env, leafPEMFile(t, fixture(t, "client-ec-sec1.pem")))
		// And it stays so.
		r = call(t, nc, js, "signed-rotating", map[string]any{"soap": map[string]any{"operation": "Add", "body": addBody(3, 4)}})
		if cn := bstCertificate(t, p.last(t).Body).Subject.CommonName; !r.OK || cn != "mtlsrelay-test-client-ec" {
			t.Errorf("after rotation: ok=%v, token of %s", r.OK, cn)
		}
	})
}

// A connection with verify_response accepts a response zeep signed with a
// certificate the profile's truststore trusts, and ends
// soap_signature_invalid when the signature does not verify or its signer
// is not trusted.
func TestSOAPWSSecurityVerifyResponse(t *testing.T) {
	good := startSOAPPartner(t, "--sign-key", fixture(t, "server.key"), "--sign-cert", fixture(t, "server.pem"))
	tampered := startSOAPPartner(t, "--sign-key", fixture(t, "server.key"), "--sign-cert", fixture(t, "server.pem"), "--tamper")
	untrusted := startSOAPPartner(t, "--sign-key", fixture(t, "other-ca.key"), "--sign-cert", fixture(t, "other-ca.pem"))
	unsigned := startSOAPPartner(t)
	srv := startNATS(t)
	cfg := configYAML(t, `
worker: {concurrency: 4, admin_addr: "off", retry_base: 20ms, retry_max: 200ms}
log: {level: debug, format: json}
profiles:
  rsa: {keystore: "file:FIX/client-openssl.p12", password: "value:fixture-pass-123", truststore: "file:FIX/ca.pem", soap: {wss: {verify_response: true}}}
connections:
  good:      {base_url: "GOOD", profile: rsa, wsdl: "?wsdl"}
  tampered:  {base_url: "TAMPERED", profile: rsa, wsdl: "?wsdl"}
  untrusted: {base_url: "UNTRUSTED", profile: rsa, wsdl: "?wsdl"}
  unsigned:  {base_url: "UNSIGNED", profile: rsa, wsdl: "?wsdl"}
`, "GOOD", good.URL, "TAMPERED", tampered.URL, "UNTRUSTED", untrusted.URL, "UNSIGNED", unsigned.URL)
	startWorker(t, srv.ClientURL(), cfg)
	nc, js := connect(t, srv.ClientURL())

	r := call(t, nc, js, "good", map[string]any{"soap": map[string]any{"operation": "Add", "body": addBody(2, 3)}})
	if !r.OK || r.Error != nil || !strings.Contains(r.Body, "AddResult>5<") {
		t.Fatalf("a response signed by a trusted certificate: ok=%v error=%v body=%.300s", r.OK, r.Error, r.Body)
	}
	for _, conn := range []string{"tampered", "untrusted", "unsigned"} {
		t.Run("fail/"+conn, func(t *testing.T) {
			r := call(t, nc, js, conn, map[string]any{"soap": map[string]any{"operation": "Add", "body": addBody(2, 3)}})
			if r.OK || r.Error == nil || r.Error.Code != "soap_signature_invalid" || r.Error.Retryable || r.Attempt != 1 {
				t.Fatalf("%s response: ok=%v attempt=%d error=%+v", conn, r.OK, r.Attempt, r.Error)
			}
			if r.Status != 200 {
				t.Errorf("status %d; the result keeps the partner's status", r.Status)
			}
		})
	}
}

// verifyWithTools checks a signed envelope with xmlsec1 --verify and with
// zeep's verify_envelope (outbound/wss/testdata/zeep_verify.py), given the
// signer's certificate: tools nobody here wrote.
func verifyWithTools(t *testing.T, xmlsec1, py, envelope, certPEM string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "signed.xml")
	if err := os.WriteFile(f, []byte(envelope), 0o600); err != nil {
		t.Fatal(err)
	}
	ns := "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
	out, err := exec.Command(xmlsec1, "--verify", "--pubkey-cert-pem", certPEM,
		"--id-attr:Id", ns+":Timestamp",
		"--id-attr:Id", "http://schemas.xmlsoap.org/soap/envelope/:Body",
		"--id-attr:Id", "http://www.w3.org/2003/05/soap-envelope:Body",
		"--id-attr:Id", "http://www.w3.org/2005/08/addressing:To", // signed-to's header block
		f).CombinedOutput()
	if err != nil {
		t.Errorf("xmlsec1 --verify failed: %v\n%s\n%.1500s", err, out, envelope)
	}
	out, err = exec.Command(py, repoPath("outbound", "wss", "testdata", "zeep_verify.py"), f, certPEM).CombinedOutput()
	if err != nil {
		t.Errorf("zeep verify_envelope failed: %v\n%s", err, out)
	}
}

var bstRE = regexp.MustCompile(`(?s)<[^>]*BinarySecurityToken[^>]*>([^<]+)<`)

// bstCertificate returns the certificate of an envelope's
// BinarySecurityToken.
func bstCertificate(t *testing.T, envelope string) *x509.Certificate {
	t.Helper()
	m := bstRE.FindStringSubmatch(envelope)
	if m == nil {
		t.Fatalf("no BinarySecurityToken in the request the partner received:\n%.1500s", envelope)
	}
	der, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(m[1]), ""))
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// leafPEMFile writes the first certificate of a PEM fixture to a file of
// its own, for tools that take one certificate.
func leafPEMFile(t *testing.T, path string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "leaf.pem")
	if err := os.WriteFile(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafOf(t, path).Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return out
}

// copyFile replaces dst with src's content atomically (a rename), as
// rotation tools do.
func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	tmp := dst + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		t.Fatal(err)
	}
}
