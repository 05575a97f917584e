package worker

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mtlsrelay/mtlsrelay/internal/embedded"
)

// One copy of a forwarded call owns it: the first claim wins, a later copy
// learns the owner, a forward from the calls stream leaves an owner in
// place, and a re-forward by the owner hands the call to its new copy.
func TestClaims(t *testing.T) {
	srv, err := embedded.Start(embedded.Options{Listen: "127.0.0.1:0", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s, err := openState(ctx, js, 1, time.Hour, "unit")
	if err != nil {
		t.Fatal(err)
	}
	const orig = "MTLSRELAY_CALLS.7.1764547200000000000"
	if fw, err := s.forwarded(ctx, orig); err != nil || fw {
		t.Fatalf("forwarded before any forward: %v %v", fw, err)
	}
	// The forward from the calls stream records its copy, seq 10.
	if err := s.setOwner(ctx, orig, 10, false, 7); err != nil {
		t.Fatal(err)
	}
	if fw, err := s.forwarded(ctx, orig); err != nil || !fw {
		t.Fatalf("forwarded after a forward: %v %v", fw, err)
	}
	// A second forward past the duplicate window stored copy 11: the
	// owner stays 10.
	if err := s.setOwner(ctx, orig, 11, false, 7); err != nil {
		t.Fatal(err)
	}
	for seq, want := range map[uint64]uint64{10: 10, 11: 10} {
		if got, err := s.claim(ctx, orig, seq); err != nil || got != want {
			t.Errorf("claim by copy %d: owner %d (%v), want %d", seq, got, err, want)
		}
	}
	// Copy 11 does not own the call: its re-forward changes nothing.
	if err := s.setOwner(ctx, orig, 12, true, 11); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.claim(ctx, orig, 12); got != 10 {
		t.Errorf("a re-forward by a copy that does not own the call moved it to %d", got)
	}
	// The owner, copy 10, is re-forwarded (its connection moved): copy 13
	// owns the call now.
	if err := s.setOwner(ctx, orig, 13, true, 10); err != nil {
		t.Fatal(err)
	}
	for seq, want := range map[uint64]uint64{13: 13, 10: 13} {
		if got, err := s.claim(ctx, orig, seq); err != nil || got != want {
			t.Errorf("after the re-forward, claim by copy %d: owner %d (%v), want %d", seq, got, err, want)
		}
	}
	// A copy whose forwarder could not record it claims it itself.
	if got, err := s.claim(ctx, "MTLSRELAY_CALLS.8.1", 20); err != nil || got != 20 {
		t.Errorf("first claim of an unrecorded forward: %d %v", got, err)
	}
}
