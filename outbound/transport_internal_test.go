package outbound

import (
	"crypto/tls"
	"fmt"
	"testing"

	"github.com/mtlsrelay/mtlsrelay/secrets"
)

func TestTransportCacheVersions(t *testing.T) {
	c := newTransportCache(ExecutorOptions{}.withDefaults())
	mat := func(profile, version string) *secrets.Material {
		return &secrets.Material{Profile: profile, Config: &tls.Config{}, Version: version}
	}
	a1 := c.get("conn", mat("a", "1"))
	if c.get("conn", mat("a", "1")) != a1 {
		t.Fatal("same profile and version gave another transport")
	}
	b1 := c.get("conn", mat("b", "1"))
	if b1 == a1 {
		t.Fatal("two profiles share a transport")
	}
	a2 := c.get("conn", mat("a", "2"))
	if a2 == a1 || !a1.retired.Load() || a2.retired.Load() {
		t.Fatalf("new version: new transport %v, old retired %v", a2 != a1, a1.retired.Load())
	}
	// A call still holding version 1 (resolved before the rotation) gets
	// the previous transport back rather than a third one.
	if c.get("conn", mat("a", "1")) != a1 || a1.retired.Load() || !a2.retired.Load() {
		t.Fatal("the previous version did not get its transport back")
	}
	a3 := c.get("conn", mat("a", "3"))
	if a3 == a1 || a3 == a2 {
		t.Fatal("a third version reused a transport")
	}
	if c.get("conn", mat("b", "1")) != b1 {
		t.Fatal("rotating profile a replaced profile b's transport")
	}
	c.closeIdle()
}

func BenchmarkTransportLookup(b *testing.B) {
	c := newTransportCache(ExecutorOptions{}.withDefaults())
	mats := make([]*secrets.Material, 16)
	for i := range mats {
		mats[i] = &secrets.Material{Profile: fmt.Sprintf("profile-%d", i), Config: &tls.Config{}, Version: "v1"}
		c.get("conn", mats[i])
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			pt := c.get("conn", mats[i%len(mats)])
			pt.release()
			i++
		}
	})
}
