package secrets

import (
	"context"
	"crypto/tls"
	"sync"
	"time"
)

// ClientCertificate serves the client certificate of a secret provider's
// own TLS connections (CyberArk's CCP, Vault's cert login) through a
// Resolver, as a profile's is served: a keystore rotated where it is kept
// (a file, Vault...) is presented on the next connection without a
// restart, the last good one while its source is down, and a certificate
// outside its dates is not sent (CheckValidity, through Resolve).
type ClientCertificate struct {
	resolver *Resolver
	name     string
	profile  Profile
	timeout  time.Duration

	mu      sync.Mutex
	version string
}

// NewClientCertificate serves profile p, named name in messages (e.g.
// "vault auth cert"), reading its secrets through sources; each read is
// bounded by timeout.
func NewClientCertificate(sources *Sources, name string, p Profile, timeout time.Duration) *ClientCertificate {
	return &ClientCertificate{resolver: NewResolver(sources), name: name, profile: p, timeout: timeout}
}

// Get is a tls.Config's GetClientCertificate: the current certificate,
// offered whatever CAs the server lists (see PresentAlways).
func (c *ClientCertificate) Get(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	mat, err := c.resolver.Resolve(ctx, c.name, c.profile)
	if err != nil {
		return nil, err
	}
	return &mat.Config.Certificates[0], nil
}

// Changed resolves the certificate now and reports whether it changed
// since the last call: connections made with the old one should then be
// closed. A failure reports no change; Get reports it on the next
// handshake.
func (c *ClientCertificate) Changed(ctx context.Context) bool {
	mat, err := c.resolver.Resolve(ctx, c.name, c.profile)
	if err != nil {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	changed := c.version != "" && c.version != mat.Version
	c.version = mat.Version
	return changed
}
