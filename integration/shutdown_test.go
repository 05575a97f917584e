package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mtlsrelay/mtlsrelay/jobs"
)

// workerProcess runs the real binary as a worker on the NATS server url.
type workerProcess struct {
	cmd  *exec.Cmd
	logs *syncBuffer
	done chan error
}

func startWorkerProcess(t *testing.T, url, cfgPath, name string, extraEnv ...string) *workerProcess {
	t.Helper()
	cmd := exec.Command(mtlsrelayBinary(t), "serve", "--config", cfgPath, "--nats", url, "--name", name)
	cmd.Env = append(append(os.Environ(), "MTLSRELAY_TEST_PASSWORD="+fixturePassword), extraEnv...)
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &workerProcess{cmd: cmd, logs: logs, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
	})
	checkFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		if !strings.Contains(logs.String(), "worker ready") {
			return fmt.Errorf("worker %s not ready:\n%s", name, logs.String())
		}
		return nil
	})
	return p
}

func writeConfig(t *testing.T, tmpl string, repl ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "worker.yaml")
	if err := os.WriteFile(path, []byte(configYAML(t, tmpl, repl...)), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

const processConfig = `
worker: {concurrency: 8, admin_addr: "off", ack_wait: 2s, retry_base: 50ms, shutdown_grace: GRACE}
log: {level: debug, format: json}
profiles:
  p: {keystore: "file:FIX/client-openssl.p12", password: "env:MTLSRELAY_TEST_PASSWORD", truststore: "file:FIX/ca.pem"}
connections:
  partner: {base_url: "PARTNER", profile: p, timeout: 60s}
`

// SIGTERM: calls in flight that finish within the grace period are
// completed; the rest are handed back at once and completed by another
// worker; the process exits 0.
func TestGracefulShutdown(t *testing.T) {
	srv := startNATS(t)
	p := startPartner(t)
	nc, js := connect(t, srv.ClientURL())
	cfg := writeConfig(t, processConfig, "PARTNER", p.URL(), "GRACE", "1500ms")
	first := startWorkerProcess(t, srv.ClientURL(), cfg, "terminated")

	short, shortSub := publishCalls(t, nc, js, "partner", 3, map[string]any{"path": "slow?ms=600"})
	long, longSub := publishCalls(t, nc, js, "partner", 2, map[string]any{"path": "slow?ms=4000"})
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := p.Requests().Routes["/slow"]; n < 5 {
			return fmt.Errorf("partner has %d of 5 calls", n)
		}
		return nil
	})
	if err := first.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-first.done:
		first.done <- err
		if err != nil {
			t.Fatalf("worker exited with %v after SIGTERM, want 0\n%s", err, first.logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("worker did not exit after SIGTERM")
	}
	for _, r := range collect(t, shortSub, len(short)) {
		if !r.OK || r.Worker != "terminated" {
			t.Errorf("short call %s: ok=%v worker=%s; want completed by the terminated worker", r.ID, r.OK, r.Worker)
		}
	}
	if !strings.Contains(first.logs.String(), "handed back") {
		t.Errorf("the long calls were not handed back:\n%s", first.logs.String())
	}
	startWorkerProcess(t, srv.ClientURL(), cfg, "successor")
	for _, r := range collect(t, longSub, len(long)) {
		if !r.OK || r.Worker != "successor" {
			t.Errorf("long call %s: ok=%v worker=%s error=%+v; want completed by the successor", r.ID, r.OK, r.Worker, r.Error)
		}
	}
}

// A worker killed while a non-idempotent request may have reached the
// partner: the redelivery reports outcome_unknown and does not send it again.
func TestKilledMidPOSTIsNotRepeated(t *testing.T) {
	srv := startNATS(t)
	p := startPartner(t)
	nc, js := connect(t, srv.ClientURL())
	cfg := writeConfig(t, processConfig, "PARTNER", p.URL(), "GRACE", "1s")
	victim := startWorkerProcess(t, srv.ClientURL(), cfg, "victim")
	ids, sub := publishCalls(t, nc, js, "partner", 1, map[string]any{"method": "POST", "path": "slow?ms=10000", "body": "transfer 100"})
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if p.Requests().Routes["/slow"] < 1 {
			return errors.New("request not at the partner yet")
		}
		return nil
	})
	_ = victim.cmd.Process.Kill()
	startWorkerProcess(t, srv.ClientURL(), cfg, "survivor")
	r := collect(t, sub, 1)[0]
	if r.ID != ids[0] || r.Error == nil || r.Error.Code != jobs.CodeOutcomeUnknown || r.Error.Retryable {
		t.Fatalf("result %+v, want outcome_unknown (not retryable)", r.Error)
	}
	if n := p.Requests().Routes["/slow"]; n != 1 {
		t.Errorf("partner saw the POST %d times, want 1", n)
	}
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		s, err := js.Stream(context.Background(), jobs.StreamDead)
		if err != nil {
			return err
		}
		if _, err := s.GetLastMsgForSubject(context.Background(), "mtlsrelay.dead.partner"); err != nil {
			return fmt.Errorf("outcome_unknown call not dead-lettered: %w", err)
		}
		return nil
	})
}
