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
	expect := func(what string, got holding, n string, err error, want holding, wantNonce string) {
		t.Helper()
		if err != nil || got != want || (wantNonce != "" && n != wantNonce) {
			t.Errorf("%s: %v %q %v, want %v %q", what, got, n, err, want, wantNonce)
		}
	}
	// The original's redelivery before any forward holds the call and
	// writes nothing.
	h, n, err := s.hold(ctx, orig, originalHolder, "", false)
	expect("original, nothing recorded", h, n, err, holdRun, "")
	// The original hands the call to zone dmz: copy s:10 carries n1.
	n1, err := s.handOff(ctx, orig, originalHolder)
	if err != nil {
		t.Fatal(err)
	}
	// Its redelivery (the connection moved back, say) must not run it:
	// it stores the copy again, with n1.
	h, n, err = s.hold(ctx, orig, originalHolder, "", false)
	expect("original after its hand-off", h, n, err, holdReforward, n1)
	if again, err := s.handOff(ctx, orig, originalHolder); err != nil || again != n1 {
		t.Errorf("a second hand-off by the same holder: %q %v, want %q", again, err, n1)
	}
	// Copy s:10 takes the call over; a second copy of the same hand-off
	// (stored past the duplicate window) and a copy without the nonce
	// find it taken.
	h, n, err = s.hold(ctx, orig, "s:10", n1, true)
	expect("copy s:10 with the nonce", h, n, err, holdRun, "")
	h, n, err = s.hold(ctx, orig, "s:11", n1, true)
	expect("second copy s:11 with the same nonce", h, n, err, holdDrop, "")
	h, n, err = s.hold(ctx, orig, "s:12", "", true)
	expect("copy s:12 without a nonce", h, n, err, holdDrop, "")
	h, n, err = s.hold(ctx, orig, originalHolder, "", false)
	expect("the original once the copy runs", h, n, err, holdDrop, "")
	// s:10 redelivered (a retry) still holds it.
	h, n, err = s.hold(ctx, orig, "s:10", n1, true)
	expect("copy s:10 redelivered", h, n, err, holdRun, "")
	// The connection moves: s:10 hands off to a copy carrying n2. The new
	// copy may be taken before s:10 is acknowledged (no race loses it).
	n2, err := s.handOff(ctx, orig, "s:10")
	if err != nil {
		t.Fatal(err)
	}
	h, n, err = s.hold(ctx, orig, "s:20", n2, true)
	expect("copy s:20 of the second hand-off", h, n, err, holdRun, "")
	h, n, err = s.hold(ctx, orig, "s:10", n1, true)
	expect("copy s:10 after its hand-off was taken", h, n, err, holdDrop, "")
	if _, err := s.handOff(ctx, orig, "s:10"); err != errNotHolder {
		t.Errorf("a hand-off by a copy that no longer holds the call: %v, want errNotHolder", err)
	}
	// A copy of a call whose hand-off was never recorded (no entry)
	// records itself as holder.
	h, n, err = s.hold(ctx, "MTLSRELAY_CALLS.8.1", "s:30", "x", true)
	expect("copy of an unrecorded hand-off", h, n, err, holdRun, "")
}
