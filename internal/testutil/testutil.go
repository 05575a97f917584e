// Package testutil holds the helpers that tests in several packages share:
// polling for a condition, a log buffer safe for concurrent writers, an
// in-process NATS server with JetStream, and an in-process worker that runs
// until its test ends.
package testutil

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mtlsrelay/mtlsrelay/internal/embedded"
	"github.com/mtlsrelay/mtlsrelay/worker"
)

// CheckFor polls fn every sleep until it returns nil, and fails the test
// with fn's last error when total passes. Tests wait for outcomes with it
// rather than sleeping.
func CheckFor(t testing.TB, total, sleep time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	var err error
	for time.Now().Before(deadline) {
		if err = fn(); err == nil {
			return
		}
		time.Sleep(sleep)
	}
	t.Fatalf("condition not met within %v: %v", total, err)
}

// SyncBuffer collects output written from several goroutines, such as a
// logger's.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// RunWorker runs a worker with the YAML config cfgYAML on nc until the test
// ends (its Run must then return nil), and returns once it is ready.
func RunWorker(t testing.TB, nc *nats.Conn, cfgYAML string, opts ...worker.Option) *worker.Worker {
	t.Helper()
	cfg, err := worker.ParseConfig([]byte(cfgYAML))
	if err != nil {
		t.Fatalf("config: %v\n%s", err, cfgYAML)
	}
	w, err := worker.New(cfg, nc, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker.Run: %v", err)
		}
	})
	CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if !w.Ready() {
			return fmt.Errorf("worker not ready")
		}
		return nil
	})
	return w
}

// StartJetStream starts a real NATS server with JetStream in the test's
// process, on a free loopback port, and returns a client of it. Both stop
// when the test ends.
func StartJetStream(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
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
	return nc, js
}
