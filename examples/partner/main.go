// Command partner is a demo partner for mtlsrelay: the mTLS REST and SOAP
// server of internal/partner (routes /echo, /status/{code}, /slow, /soap, ...)
// that requires and verifies a client certificate.
//
// On its first start it generates, into -certs, a CA, a server certificate for
// -hosts, and a client keystore the workers present:
//
//	ca.pem        CA certificate: the workers' truststore and the partner's client CA
//	server.pem    server certificate chain, server.key its key
//	client.p12    client keystore (PKCS#12), client.pass its password
//	client.pem    the same client certificate and key as PEM
//
// Later starts reuse the files, so workers and partner agree after a restart.
// -gen-only writes the files and exits: the compose file runs it once before
// the partner and the workers start. Nothing here is for production: the CA
// key is not kept, and the certificates are for demonstrations.
//
//	go run ./examples/partner -certs /tmp/partner -addr 127.0.0.1:8443
package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/mtlsrelay/mtlsrelay/internal/partner"
	"github.com/mtlsrelay/mtlsrelay/internal/pki"
)

// options are the command's flags.
type options struct {
	// Addr is the listen address.
	Addr string
	// CertsDir holds the generated or reused certificate files.
	CertsDir string
	// Hosts are the server certificate's names: DNS names or IP addresses.
	Hosts []string
	// Password protects client.p12; empty generates a random one.
	Password string
	// GenOnly writes the files and returns without serving.
	GenOnly bool
	// Ready, when set, receives the server's URL once it listens.
	Ready func(url string)
}

func main() {
	var o options
	var hosts string
	flag.StringVar(&o.Addr, "addr", ":8443", "listen address")
	flag.StringVar(&o.CertsDir, "certs", "certs", "directory of ca.pem, server.pem/.key, client.p12/.pass (generated when missing)")
	flag.StringVar(&hosts, "hosts", "partner,localhost,127.0.0.1", "comma-separated DNS names and IPs of the server certificate")
	flag.BoolVar(&o.GenOnly, "gen-only", false, "write the certificate files and exit")
	flag.Parse()
	o.Hosts = strings.Split(hosts, ",")
	// The password comes from the environment, never from a flag that ps shows.
	o.Password = os.Getenv("PARTNER_KEYSTORE_PASSWORD")

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "partner:", err)
		os.Exit(1)
	}
}

// run makes or loads the certificates, then serves until ctx ends.
func run(ctx context.Context, o options, log io.Writer) error {
	if err := os.MkdirAll(o.CertsDir, 0o755); err != nil {
		return err
	}
	generated, err := ensureCerts(o)
	if err != nil {
		return err
	}
	if generated {
		fmt.Fprintf(log, "partner: generated CA, server certificate for %s and client keystore in %s\n", strings.Join(o.Hosts, ","), o.CertsDir)
	} else {
		fmt.Fprintf(log, "partner: reusing certificates in %s\n", o.CertsDir)
	}
	if o.GenOnly {
		return nil
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(o.CertsDir, "server.pem"), filepath.Join(o.CertsDir, "server.key"))
	if err != nil {
		return err
	}
	caPEM, err := os.ReadFile(filepath.Join(o.CertsDir, "ca.pem"))
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return errors.New("ca.pem holds no certificate")
	}
	srv, err := partner.Start(partner.Options{Addr: o.Addr, Certificate: cert, ClientCAs: pool})
	if err != nil {
		return err
	}
	defer srv.Close()
	fmt.Fprintf(log, "partner: listening on %s, client certificate required\n", srv.Addr())
	if o.Ready != nil {
		o.Ready(srv.URL())
	}
	<-ctx.Done()
	fmt.Fprintln(log, "partner: stopping")
	return nil
}

// ensureCerts writes the certificate files unless ca.pem, server.pem and
// server.key are already there. It reports whether it generated them.
func ensureCerts(o options) (bool, error) {
	have := true
	for _, name := range []string{"ca.pem", "server.pem", "server.key", "client.p12", "client.pass"} {
		if _, err := os.Stat(filepath.Join(o.CertsDir, name)); err != nil {
			have = false
		}
	}
	if have {
		return false, nil
	}
	ca, err := pki.NewCA("mtlsrelay demo partner CA")
	if err != nil {
		return false, err
	}
	leaf := pki.LeafOptions{Server: true}
	for _, h := range o.Hosts {
		h = strings.TrimSpace(h)
		if ip := net.ParseIP(h); ip != nil {
			leaf.IPAddresses = append(leaf.IPAddresses, ip)
		} else if h != "" {
			leaf.DNSNames = append(leaf.DNSNames, h)
		}
	}
	server, err := ca.Issue(leaf)
	if err != nil {
		return false, err
	}
	client, err := ca.Issue(pki.LeafOptions{CommonName: "mtlsrelay-demo-client", Organization: "mtlsrelay demo", Client: true})
	if err != nil {
		return false, err
	}
	password := o.Password
	if password == "" {
		b := make([]byte, 12)
		if _, err := rand.Read(b); err != nil {
			return false, err
		}
		password = hex.EncodeToString(b)
	}
	p12, err := client.PKCS12(password)
	if err != nil {
		return false, err
	}
	files := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{"ca.pem", ca.CertPEM(), 0o644},
		{"server.pem", append(server.CertPEM(), ca.CertPEM()...), 0o644},
		{"server.key", server.KeyPEM(), 0o600},
		{"client.p12", p12, 0o600},
		{"client.pass", []byte(password), 0o600},
		{"client.pem", client.PEM(), 0o600},
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(o.CertsDir, f.name), f.data, f.mode); err != nil {
			return false, err
		}
	}
	return true, nil
}
