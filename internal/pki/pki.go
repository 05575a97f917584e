// Package pki is a small in-memory certificate authority for tests, benchmarks
// and `mtlsrelay demo`. It issues ECDSA P-256 certificates for servers and
// clients, including expired and not-yet-valid ones, and packs them as PEM,
// tls.Certificate, x509.CertPool or a password-protected PKCS#12 keystore.
//
// Nothing here is meant for production: keys live in memory only and serial
// numbers are random.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"

	"software.sslmate.com/src/go-pkcs12"
)

// CA is a self-signed certificate authority that issues leaf certificates.
// It is safe for concurrent use once created.
type CA struct {
	// Cert is the CA certificate.
	Cert *x509.Certificate
	// CertDER is Cert in DER form.
	CertDER []byte
	// Key is the CA's private key.
	Key *ecdsa.PrivateKey
}

// NewCA returns a new self-signed CA named cn, valid from an hour ago for ten
// years.
func NewCA(cn string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: generate CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"mtlsrelay test PKI"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		SubjectKeyId:          keyID(&key.PublicKey),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("pki: create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: parse CA certificate: %w", err)
	}
	return &CA{Cert: cert, CertDER: der, Key: key}, nil
}

// CertPEM returns the CA certificate as PEM, the form of a PEM truststore.
func (ca *CA) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.CertDER})
}

// Pool returns a certificate pool holding only this CA, for RootCAs or ClientCAs.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// TrustStorePKCS12 returns a PKCS#12 truststore holding the CA certificate,
// protected by password.
func (ca *CA) TrustStorePKCS12(password string) ([]byte, error) {
	return pkcs12.Modern.EncodeTrustStore([]*x509.Certificate{ca.Cert}, password)
}

// LeafOptions says what certificate Issue makes. Zero values mean defaults.
type LeafOptions struct {
	// CommonName is the subject CN. Default: the first DNS name, else "leaf".
	CommonName string
	// Organization is the subject O; none by default.
	Organization string
	// DNSNames are the DNS subject alternative names.
	DNSNames []string
	// IPAddresses are the IP subject alternative names.
	IPAddresses []net.IP
	// Client adds the clientAuth extended key usage.
	Client bool
	// Server adds the serverAuth extended key usage. When neither Client nor
	// Server is set the certificate gets both.
	Server bool
	// NotBefore is the start of validity. Default: an hour ago.
	NotBefore time.Time
	// NotAfter is the end of validity. Default: NotBefore plus 30 days. Set
	// it in the past for an expired certificate, or set NotBefore in the
	// future for one that is not yet valid.
	NotAfter time.Time
	// OCSPServer are OCSP responder URLs, written to the Authority
	// Information Access extension. None by default.
	OCSPServer []string
	// CRLDistributionPoints are URLs of CRLs, written to the CRL
	// Distribution Points extension. None by default.
	CRLDistributionPoints []string
	// OCSPSigning makes a delegated OCSP responder's certificate: its one
	// extended key usage is OCSPSigning, and Client and Server are ignored.
	OCSPSigning bool
}

// Leaf is an issued certificate with its key and issuer.
type Leaf struct {
	// Cert is the issued certificate.
	Cert *x509.Certificate
	// CertDER is Cert in DER form.
	CertDER []byte
	// Key is the leaf's private key.
	Key *ecdsa.PrivateKey
	// Issuer is the CA that signed it.
	Issuer *CA
}

// Issue signs a new leaf certificate with a fresh P-256 key.
func (ca *CA) Issue(opts LeafOptions) (*Leaf, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: generate leaf key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	cn := opts.CommonName
	if cn == "" {
		cn = "leaf"
		if len(opts.DNSNames) > 0 {
			cn = opts.DNSNames[0]
		}
	}
	notBefore := opts.NotBefore
	if notBefore.IsZero() {
		notBefore = time.Now().Add(-time.Hour)
	}
	notAfter := opts.NotAfter
	if notAfter.IsZero() {
		notAfter = notBefore.AddDate(0, 0, 30)
	}
	if !notAfter.After(notBefore) {
		return nil, errors.New("pki: NotAfter must be after NotBefore")
	}
	var usage []x509.ExtKeyUsage
	switch {
	case opts.OCSPSigning:
		usage = []x509.ExtKeyUsage{x509.ExtKeyUsageOCSPSigning}
	default:
		if opts.Server || !opts.Client {
			usage = append(usage, x509.ExtKeyUsageServerAuth)
		}
		if opts.Client || !opts.Server {
			usage = append(usage, x509.ExtKeyUsageClientAuth)
		}
	}
	subject := pkix.Name{CommonName: cn}
	if opts.Organization != "" {
		subject.Organization = []string{opts.Organization}
	}
	tmpl := &x509.Certificate{
		SerialNumber:   serial,
		Subject:        subject,
		NotBefore:      notBefore,
		NotAfter:       notAfter,
		KeyUsage:       x509.KeyUsageDigitalSignature,
		ExtKeyUsage:    usage,
		DNSNames:       opts.DNSNames,
		IPAddresses:    opts.IPAddresses,
		SubjectKeyId:   keyID(&key.PublicKey),
		AuthorityKeyId: ca.Cert.SubjectKeyId,

		OCSPServer:            opts.OCSPServer,
		CRLDistributionPoints: opts.CRLDistributionPoints,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("pki: create leaf certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: parse leaf certificate: %w", err)
	}
	return &Leaf{Cert: cert, CertDER: der, Key: key, Issuer: ca}, nil
}

// CertPEM returns the leaf certificate as PEM.
func (l *Leaf) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: l.CertDER})
}

// KeyPEM returns the private key as an unencrypted PKCS#8 PEM block.
func (l *Leaf) KeyPEM() []byte {
	der, err := x509.MarshalPKCS8PrivateKey(l.Key)
	if err != nil {
		// An ECDSA P-256 key always marshals; reaching here is a bug.
		panic("pki: marshal PKCS#8 key: " + err.Error())
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// PEM returns the certificate followed by the private key, the form of a
// PEM keystore file.
func (l *Leaf) PEM() []byte {
	return append(l.CertPEM(), l.KeyPEM()...)
}

// TLSCertificate returns the leaf as a tls.Certificate with Leaf set, ready
// for tls.Config.Certificates.
func (l *Leaf) TLSCertificate() tls.Certificate {
	return tls.Certificate{
		Certificate: [][]byte{l.CertDER},
		PrivateKey:  l.Key,
		Leaf:        l.Cert,
	}
}

// PKCS12 returns a PKCS#12 keystore holding the key, the certificate and its
// issuer's certificate, protected by password with modern algorithms
// (AES-256-CBC, PBKDF2, SHA-256 MAC).
func (l *Leaf) PKCS12(password string) ([]byte, error) {
	var chain []*x509.Certificate
	if l.Issuer != nil {
		chain = []*x509.Certificate{l.Issuer.Cert}
	}
	return pkcs12.Modern.Encode(l.Key, l.Cert, chain, password)
}

// SerialHex returns the certificate's serial number in lower-case hex, the
// form the worker reports in a result's client_cert.serial.
func (l *Leaf) SerialHex() string { return l.Cert.SerialNumber.Text(16) }

func newSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("pki: serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

func keyID(pub *ecdsa.PublicKey) []byte {
	b, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil
	}
	sum := sha256.Sum256(b)
	return sum[:20]
}
