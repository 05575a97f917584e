package bench

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// benthosForTest builds Benthos through internal/toolbuild, into the cache
// path Run looks at; only -short skips it (a cold build takes minutes).
func benthosForTest(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: builds Benthos " + BenthosVersion + " from the Go module proxy")
	}
	return BenthosTool().Binary(t)
}

// The config the peer phase writes is one the real Benthos accepts, with
// every field it sets known to it (benthos lint fails on unknown fields,
// on a bad interpolation and on a field of the wrong type).
func TestBenthosLintsPeerConfig(t *testing.T) {
	bin := benthosForTest(t)
	dir := t.TempDir()
	for _, c := range []peerConfig{
		{NATSURL: "nats://127.0.0.1:4222", Threads: 64, MaxAckPend: 64, Method: "POST", ContentType: "application/octet-stream",
			Timeout: 30 * time.Second, CAFile: "/ca.pem", CertFile: "/c.pem", KeyFile: "/k.pem"},
		{NATSURL: "nats://127.0.0.1:4222", Threads: 128, MaxAckPend: 128, Method: "GET", Timeout: time.Second,
			CAFile: "/a dir/ca.pem", CertFile: `/q"uote.pem`, KeyFile: "/k.pem"},
	} {
		path := filepath.Join(dir, "benthos.yaml")
		yaml := c.yaml()
		if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(bin, "lint", path).CombinedOutput()
		if err != nil || len(strings.TrimSpace(string(out))) > 0 {
			t.Errorf("benthos lint: %v\n%s\nconfig:\n%s", err, out, yaml)
		}
		// What Benthos read back is what the config meant.
		echo, err := exec.Command(bin, "-c", path, "echo").CombinedOutput()
		if err != nil {
			t.Fatalf("benthos echo: %v\n%s", err, echo)
		}
		for _, want := range []string{"threads: " + strconv.Itoa(c.Threads), "max_ack_pending: " + strconv.Itoa(c.MaxAckPend), "verb: " + c.Method, "retries: 0", "durable: " + peerDurable} {
			if !strings.Contains(string(echo), want) {
				t.Errorf("benthos echo lacks %q:\n%s", want, echo)
			}
		}
	}
}

// BenthosForTest gives the external tests (package bench_test) the Benthos
// build.
var BenthosForTest = benthosForTest

// The peer's phases run after the relay's, or before with PeerFirst, and
// not at all without Peer; a failing phase stops the run.
func TestInOrder(t *testing.T) {
	for _, tc := range []struct {
		o    Options
		want string
	}{
		{Options{}, "relay"},
		{Options{Peer: true}, "relay,peer"},
		{Options{Peer: true, PeerFirst: true}, "peer,relay"},
		{Options{PeerFirst: true}, "relay"},
	} {
		var ran []string
		phase := func(name string) func() error {
			return func() error { ran = append(ran, name); return nil }
		}
		if err := inOrder(tc.o, phase("relay"), phase("peer")); err != nil || strings.Join(ran, ",") != tc.want {
			t.Errorf("%+v: ran %v (%v); want %s", tc.o, ran, err, tc.want)
		}
	}
	boom := errors.New("boom")
	ran := 0
	err := inOrder(Options{Peer: true, PeerFirst: true}, func() error { ran++; return nil }, func() error { return boom })
	if !errors.Is(err, boom) || ran != 0 {
		t.Errorf("a failing first phase: %v, %d phases after it", err, ran)
	}
}
