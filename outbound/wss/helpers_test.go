package wss

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mtlsrelay/mtlsrelay/internal/pki"
	"github.com/mtlsrelay/mtlsrelay/internal/testdeb"
)

// profile is a partner profile's keystore: a leaf certificate, its key
// and the CA that issued it.
type profile struct {
	name string
	cert *x509.Certificate
	key  crypto.Signer
	ca   *pki.CA
}

func (p profile) certPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.cert.Raw})
}

func (p profile) roots() *x509.CertPool { return p.ca.Pool() }

func newCA(t *testing.T) *pki.CA {
	t.Helper()
	ca, err := pki.NewCA("wss test CA")
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// ecdsaProfile is a P-256 leaf from the test PKI.
func ecdsaProfile(t *testing.T, ca *pki.CA) profile {
	t.Helper()
	leaf, err := ca.Issue(pki.LeafOptions{CommonName: "ecdsa-partner", Client: true})
	if err != nil {
		t.Fatal(err)
	}
	return profile{name: "ECDSA", cert: leaf.Cert, key: leaf.Key, ca: ca}
}

// rsaProfile is an RSA-2048 leaf signed by the test PKI's CA. pki issues
// only ECDSA leaves, so the certificate is made here with crypto/x509.
func rsaProfile(t *testing.T, ca *pki.CA) profile {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "rsa-partner"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return profile{name: "RSA", cert: cert, key: key, ca: ca}
}

// soapVersions are the two envelope namespaces, as the relay builds them.
var soapVersions = []struct{ name, ns string }{
	{"SOAP11", soap11NS},
	{"SOAP12", soap12NS},
}

// envelopeXML builds an envelope as outbound.newSOAPRequest does.
func envelopeXML(ns, header, body string) []byte {
	var b strings.Builder
	b.WriteString(`<?xml version="1.0" encoding="utf-8"?>`)
	b.WriteString(`<soap:Envelope xmlns:soap="` + ns + `">`)
	if header != "" {
		b.WriteString(`<soap:Header>` + header + `</soap:Header>`)
	}
	b.WriteString(`<soap:Body>` + body + `</soap:Body></soap:Envelope>`)
	return []byte(b.String())
}

const sampleBody = `<m:GetQuote xmlns:m="urn:example:quotes"><m:Symbol a="x &amp; y">ACME &lt;Corp&gt;</m:Symbol><!-- a comment --><m:Note xml:lang="en">déjà vu</m:Note></m:GetQuote>`

func writeTemp(t *testing.T, name string, b []byte) string {
	t.Helper()
	// Not t.TempDir: its path holds the test name, and xmlsec1 splits
	// key file arguments at commas.
	dir, err := os.MkdirTemp("", "wss-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// xmlsec1Verify runs `xmlsec1 --verify` on signed with the signer's
// certificate as the key. xmlsec1 does not follow a
// SecurityTokenReference, hence --pubkey-cert-pem; and it resolves "#id"
// only by attributes it is told about, hence one --id-attr:Id per kind of
// signed element ("<namespace>:<local name>").
func xmlsec1Verify(t *testing.T, signed, certPEM []byte, idElems ...string) (string, error) {
	t.Helper()
	bin := testdeb.Command(t, "xmlsec1", "xmlsec1")
	args := []string{"--verify", "--pubkey-cert-pem", writeTemp(t, "cert.pem", certPEM)}
	for _, e := range idElems {
		args = append(args, "--id-attr:Id", e)
	}
	args = append(args, writeTemp(t, "signed.xml", signed))
	out, err := exec.Command(bin, args...).CombinedOutput()
	return string(out), err
}

// idElemsFor lists what xmlsec1 must know as id-carrying for an envelope
// of SOAP namespace ns signed by Sign.
func idElemsFor(ns string, extra ...string) []string {
	return append([]string{ns + ":Body", wsuNS + ":Timestamp"}, extra...)
}

// zeepVerify runs testdata/zeep_verify.py with Debian's python3, which
// has zeep and xmlsec.
func zeepVerify(t *testing.T, signed, certPEM []byte) (string, error) {
	t.Helper()
	py := testdeb.PythonModules(t, []string{"zeep", "xmlsec"}, "python3-zeep", "python3-xmlsec")
	script, err := filepath.Abs("testdata/zeep_verify.py")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(py, script, writeTemp(t, "signed.xml", signed), writeTemp(t, "cert.pem", certPEM))
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// tamperBody changes one character of the Body's text.
func tamperBody(t *testing.T, signed []byte) []byte {
	t.Helper()
	out := bytes.Replace(signed, []byte("ACME"), []byte("ACMF"), 1)
	if bytes.Equal(out, signed) {
		t.Fatal("tamperBody: no ACME in the envelope")
	}
	return out
}
