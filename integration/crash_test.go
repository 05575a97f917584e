package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// TestWorkerSIGKILLLosesNoCall runs the real binary against a real NATS
// server, kills it with SIGKILL while a batch is in flight, starts another
// worker, and checks every call gets exactly one stored result.
func TestWorkerSIGKILLLosesNoCall(t *testing.T) {
	bin := mtlsrelayBinary(t)
	srv := startNATS(t)
	p := startPartner(t)
	nc, js := connect(t, srv.ClientURL())
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "worker.yaml")
	cfg := configYAML(t, `
worker:
  concurrency: 8
  admin_addr: "off"
  ack_wait: 2s
  retry_base: 50ms
log: {level: debug, format: json}
profiles:
  p: {keystore: "file:FIX/client-openssl.p12", password: "env:MTLSRELAY_TEST_PASSWORD", truststore: "file:FIX/ca.pem"}
connections:
  partner: {base_url: "PARTNER", profile: p}
`, "PARTNER", p.URL())
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	start := func(name string) (*exec.Cmd, *syncBuffer) {
		cmd := exec.Command(bin, "serve", "--config", cfgPath, "--nats", srv.ClientURL(), "--name", name)
		cmd.Env = append(os.Environ(), "MTLSRELAY_TEST_PASSWORD="+fixturePassword)
		logs := &syncBuffer{}
		cmd.Stdout, cmd.Stderr = logs, logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait() })
		return cmd, logs
	}

	first, firstLogs := start("victim")
	checkFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		_, err := js.Stream(context.Background(), "MTLSRELAY_CALLS")
		return err
	})

	const total = 200
	results, err := nc.SubscribeSync("mtlsrelay.results.crash.>")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range total {
		id := fmt.Sprintf("crash-%d", i)
		msg := nats.NewMsg("mtlsrelay.calls.partner")
		msg.Header.Set("Nats-Msg-Id", id)
		// Durations vary so that calls are always mid-request when the
		// victim dies, not finishing together as one batch.
		msg.Data = []byte(fmt.Sprintf(`{"id":%q,"path":"slow?ms=%d","reply_to":"mtlsrelay.results.crash.%s"}`, id, 40+(i*37)%200, id))
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	// Kill it mid-batch: after some results, long before all.
	seen := map[string]int{}
	for len(seen) < 20 {
		m, err := results.NextMsg(30 * time.Second)
		if err != nil {
			t.Fatalf("first worker produced %d results before: %v\n%s", len(seen), err, firstLogs.String())
		}
		seen[m.Header.Get("Mtlsrelay-Call-Id")]++
	}
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_, _ = first.Process.Wait()
	killedAt := len(seen)
	_, secondLogs := start("survivor")
	deadline := time.Now().Add(90 * time.Second)
	for len(seen) < total && time.Now().Before(deadline) {
		m, err := results.NextMsg(time.Until(deadline))
		if err != nil {
			break
		}
		seen[m.Header.Get("Mtlsrelay-Call-Id")]++
	}
	if len(seen) != total {
		t.Fatalf("%d of %d calls got a result (killed after %d)\n%s", len(seen), total, killedAt, secondLogs.String())
	}
	// Stored results: exactly one per call id, whatever was delivered live.
	// A result reaches the subscription as the stream stores it; every call
	// is acked only once its result is stored, so wait for that first.
	waitCallsSettled(ctx, t, js, 30*time.Second)
	s, err := js.Stream(ctx, "MTLSRELAY_RESULTS")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != total {
		t.Errorf("MTLSRELAY_RESULTS holds %d results, want exactly %d", info.State.Msgs, total)
	}
	t.Logf("calls=%d results=%d killed_after=%d live_duplicates=%d", total, len(seen), killedAt, countDup(seen))
	// The kill happened mid-batch: calls the victim held were redelivered.
	if !strings.Contains(secondLogs.String(), `"delivery":2`) {
		t.Errorf("no call was redelivered to the survivor; the victim was not killed mid-batch\n%s", secondLogs.String()[:min(3000, len(secondLogs.String()))])
	}
	all := firstLogs.String() + secondLogs.String()
	assertNoSecrets(t, "worker output", all)
	if !strings.Contains(all, `"call_id":"crash-`) {
		t.Errorf("worker logs carry no call_id field")
	}
}

func countDup(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v - 1
	}
	return n
}
