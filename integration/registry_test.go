package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
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

// TestRegistryLiveApply runs two real worker processes that start with no
// profiles or connections, stores a profile (uploading its keystore) and a
// connection with the real command line, and checks that both workers make
// calls with them within 2 s, that removing the connection is applied as
// fast, that bad keystores are refused with their codes, and that no
// password reaches the bucket's raw values or anyone's output.
func TestRegistryLiveApply(t *testing.T) {
	bin := mtlsrelayBinary(t)
	srv := startNATS(t)
	p := startPartner(t)
	nc, js := connect(t, srv.ClientURL())
	natsURL := srv.ClientURL()

	keyBytes := make([]byte, 32)
	_, _ = rand.Read(keyBytes)
	key := base64.StdEncoding.EncodeToString(keyBytes)
	env := append(os.Environ(),
		"MTLSRELAY_REGISTRY_KEY="+key,
		"MTLSRELAY_TEST_PASSWORD="+fixturePassword,
		"MTLSRELAY_WRONG_PASSWORD=not-the-password")

	cfgPath := filepath.Join(t.TempDir(), "worker.yaml")
	cfg := `
worker:
  concurrency: 8
  admin_addr: "off"
  retry_base: 20ms
  retry_max: 200ms
log: {level: debug, format: json}
registry:
  key: env:MTLSRELAY_REGISTRY_KEY
`
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	workers := map[string]*syncBuffer{}
	for _, name := range []string{"registry-w1", "registry-w2"} {
		cmd := exec.Command(bin, "serve", "--config", cfgPath, "--nats", natsURL, "--name", name)
		cmd.Env = env
		logs := &syncBuffer{}
		cmd.Stdout, cmd.Stderr = logs, logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			done := make(chan struct{})
			go func() { _, _ = cmd.Process.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				<-done
			}
		})
		workers[name] = logs
	}
	for name, logs := range workers {
		checkFor(t, 30*time.Second, 20*time.Millisecond, func() error {
			if s := logs.String(); !strings.Contains(s, "registry applied") || !strings.Contains(s, "worker ready") {
				return fmt.Errorf("worker %s not ready with the registry:\n%s", name, s)
			}
			return nil
		})
	}

	var cliOut bytes.Buffer
	cli := func(args ...string) (string, error) {
		t.Helper()
		args = append(args, "--nats", natsURL, "--key-env", "MTLSRELAY_REGISTRY_KEY")
		cmd := exec.Command(bin, args...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		cliOut.Write(out)
		return string(out), err
	}

	t.Run("fail/refused-keystores", func(t *testing.T) {
		for _, tc := range []struct{ keystore, passwordEnv, code string }{
			{"corrupt.p12", "MTLSRELAY_TEST_PASSWORD", string(jobs.CodeKeystoreInvalid)},
			{"client-openssl.p12", "MTLSRELAY_WRONG_PASSWORD", string(jobs.CodeKeystorePasswordWrong)},
		} {
			out, err := cli("profile", "put", "refused", "--keystore", fixture(t, tc.keystore), "--password-env", tc.passwordEnv)
			if err == nil {
				t.Errorf("profile put of %s with %s exited 0:\n%s", tc.keystore, tc.passwordEnv, out)
			}
			if !strings.Contains(out, tc.code) {
				t.Errorf("profile put of %s: output does not name %s:\n%s", tc.keystore, tc.code, out)
			}
		}
		if out, err := cli("profile", "get", "refused"); err == nil {
			t.Errorf("a refused profile was stored:\n%s", out)
		}
	})

	if out, err := cli("profile", "put", "reg-profile", "--keystore", fixture(t, "client-openssl.p12"),
		"--password-env", "MTLSRELAY_TEST_PASSWORD", "--truststore", fixture(t, "ca.pem")); err != nil {
		t.Fatalf("profile put: %v\n%s", err, out)
	}
	ctx := context.Background()
	kv, err := js.KeyValue(ctx, jobs.RegistryBucket)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := kv.Get(ctx, "profiles.reg-profile")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw.Value(), []byte(fixturePassword)) || !bytes.Contains(raw.Value(), []byte("sealed:v1:")) {
		t.Errorf("raw KV value of the profile is not sealed: %s", raw.Value())
	}
	if out, err := cli("profile", "get", "reg-profile"); err != nil || !strings.Contains(out, `"password": "[sealed]"`) {
		t.Errorf("profile get: %v\n%s", err, out)
	}

	partnerURL := "https://localhost:" + port(p.URL()) + "/"
	if out, err := cli("connection", "put", "reg-conn", "--base-url", partnerURL, "--profile", "reg-profile", "--max-attempts", "1"); err != nil {
		t.Fatalf("connection put: %v\n%s", err, out)
	}
	// Calls published within 2 s of the put succeed on both workers.
	putAt := time.Now()
	seen := map[string]bool{}
	checkFor(t, 2*time.Second, 0, func() error {
		r := call(t, nc, js, "reg-conn", map[string]any{"path": "echo"})
		if r.OK {
			seen[r.Worker] = true
		}
		if len(seen) < len(workers) {
			return fmt.Errorf("succeeded on %v only (last result ok=%v error=%v)", seen, r.OK, r.Error)
		}
		return nil
	})

	t.Logf("connection put applied on both workers within %v", time.Since(putAt).Round(time.Millisecond))

	if out, err := cli("connection", "rm", "reg-conn"); err != nil {
		t.Fatalf("connection rm: %v\n%s", err, out)
	}
	rmAt := time.Now()
	gone := map[string]bool{}
	checkFor(t, 2*time.Second, 0, func() error {
		r := call(t, nc, js, "reg-conn", map[string]any{"path": "echo"})
		if r.Error != nil && r.Error.Code == jobs.CodeUnknownConnection {
			gone[r.Worker] = true
		}
		if len(gone) < len(workers) {
			return fmt.Errorf("connection removed on %v only", gone)
		}
		return nil
	})

	t.Logf("connection rm applied on both workers within %v", time.Since(rmAt).Round(time.Millisecond))

	for name, logs := range workers {
		assertNoSecrets(t, "worker "+name+" output", logs.String())
		if strings.Contains(logs.String(), key) {
			t.Errorf("worker %s output contains the registry key", name)
		}
	}
	assertNoSecrets(t, "command line output", cliOut.String())
	if strings.Contains(cliOut.String(), key) {
		t.Error("command line output contains the registry key")
	}
}
