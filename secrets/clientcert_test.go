package secrets_test

import (
	"context"
	"testing"
	"time"

	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/secrets"
)

// A provider's own client certificate rotates as a profile's does: the
// next handshake presents the rewritten pair, Changed says so once, and a
// certificate past its dates is refused rather than sent.
func TestClientCertificateRotates(t *testing.T) {
	dir := t.TempDir()
	first, _ := testCert(t, "provider-one", time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	crt, key := splitPEM(t, first, dir)
	c := secrets.NewClientCertificate(secrets.DefaultSources(""), "test provider", secrets.Profile{Keystore: "file:" + crt, Key: "file:" + key}, 5*time.Second)
	ctx := context.Background()

	if c.Changed(ctx) {
		t.Error("Changed on the first call")
	}
	got, err := c.Get(nil)
	if err != nil || got.Leaf.Subject.CommonName != "provider-one" {
		t.Fatalf("Get: %v, %v", got, err)
	}

	second, _ := testCert(t, "provider-two", time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	splitPEM(t, second, dir)
	time.Sleep(1100 * time.Millisecond) // the resolver's refresh interval
	if got, err = c.Get(nil); err != nil || got.Leaf.Subject.CommonName != "provider-two" {
		t.Fatalf("after rotation Get: %v, %v; want provider-two", got, err)
	}
	if !c.Changed(ctx) {
		t.Error("Changed did not report the rotation")
	}
	if c.Changed(ctx) {
		t.Error("Changed reported the same rotation twice")
	}

	expired, _ := testCert(t, "provider-old", time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour))
	splitPEM(t, expired, dir)
	time.Sleep(1100 * time.Millisecond)
	_, err = c.Get(nil)
	wantCode(t, err, jobs.CodeClientCertExpired)
}
