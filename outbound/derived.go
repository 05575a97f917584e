package outbound

import (
	"crypto/x509"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/mtlsrelay/mtlsrelay/catalog"
	"github.com/mtlsrelay/mtlsrelay/jobs"
)

// derivedCache keeps what an attempt derives from its connection and its
// certificate, so the hot path does not parse URLs or format certificate
// names on every call. Safe for concurrent use.
type derivedCache struct {
	conns sync.Map // connection name -> *connDerived

	leaves    sync.Map // *x509.Certificate -> *jobs.ClientCert
	leafCount atomic.Int64
}

// connDerived is what one version of a connection's settings implies.
type connDerived struct {
	baseURL string
	allow   []string
	base    *url.URL // nil when base_url does not parse; never written
	egress  *egressPolicy
}

// connection returns the derived data of conn, named name, recomputed when
// its base_url or allow_hosts changed.
func (d *derivedCache) connection(name string, conn *catalog.Connection) *connDerived {
	if v, ok := d.conns.Load(name); ok {
		cd := v.(*connDerived)
		if cd.baseURL == conn.BaseURL && slices.Equal(cd.allow, conn.AllowHosts) {
			return cd
		}
	}
	cd := &connDerived{
		baseURL: conn.BaseURL,
		allow:   slices.Clone(conn.AllowHosts),
		egress:  newEgressPolicy(name, conn),
	}
	if u, err := url.Parse(conn.BaseURL); err == nil {
		cd.base = u
	}
	d.conns.Store(name, cd)
	return cd
}

// maxLeaves bounds the certificate cache; rotations add entries.
const maxLeaves = 4096

// leaf returns what results say about the client certificate leaf. The
// returned value is shared by every result: it must not be modified.
func (d *derivedCache) leaf(leaf *x509.Certificate) *jobs.ClientCert {
	if leaf == nil {
		return nil
	}
	if v, ok := d.leaves.Load(leaf); ok {
		return v.(*jobs.ClientCert)
	}
	cc := describeLeaf(leaf)
	if d.leafCount.Add(1) > maxLeaves {
		d.leaves.Clear()
		d.leafCount.Store(1)
	}
	d.leaves.Store(leaf, cc)
	return cc
}
