package worker_test

import (
	"os"
	"strings"
	"testing"

	"github.com/mtlsrelay/mtlsrelay/secrets"
	"github.com/mtlsrelay/mtlsrelay/secrets/cyberark"
	"github.com/mtlsrelay/mtlsrelay/secrets/vault"
	"github.com/mtlsrelay/mtlsrelay/worker"
)

// loadREADMEConfig parses a README config block as a worker does: the
// worker's own keys, then each provider's section with its provider's
// settings (what StartProviders decodes when the worker starts).
func loadREADMEConfig(t *testing.T, block string) (*worker.Config, error) {
	t.Helper()
	cfg, err := worker.ParseConfig([]byte(block))
	if err != nil {
		return nil, err
	}
	if err := secrets.CheckSections([]secrets.Provider{vault.Provider{}, cyberark.Provider{}}, cfg.Providers); err != nil {
		return nil, err
	}
	for name, section := range cfg.Providers {
		var err error
		switch name {
		case "vault":
			var v vault.Config
			if err = secrets.DecodeSection(&section, &v); err == nil {
				err = v.Validate()
			}
		case "cyberark":
			var c cyberark.Config
			if err = secrets.DecodeSection(&section, &c); err == nil {
				err = c.Validate()
			}
		}
		if err != nil {
			return nil, err
		}
	}
	return cfg, nil
}

// The README's example config must load: it is what users copy.
func TestREADMEConfigLoads(t *testing.T) {
	data, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	start := strings.Index(text, "```yaml\nnats:")
	if start < 0 {
		t.Fatal("README has no ```yaml block starting with nats:")
	}
	block := text[start+len("```yaml\n"):]
	block = block[:strings.Index(block, "```")]
	cfg, err := loadREADMEConfig(t, block)
	if err != nil {
		t.Fatalf("README config does not load: %v", err)
	}
	// Every other config block of the README loads too.
	blocks := strings.Split(text, "```yaml\n")[1:]
	if len(blocks) < 3 {
		t.Fatalf("README has %d yaml blocks, want the config, NATS and secrets examples", len(blocks))
	}
	for _, b := range blocks {
		b = b[:strings.Index(b, "```")]
		if _, err := loadREADMEConfig(t, b); err != nil {
			t.Errorf("README yaml block does not load: %v\n%s", err, b)
		}
	}
	conn, ok := cfg.Connections["partner-a-api"]
	if !ok || conn.Profile != "partner-a" || conn.MaxAttempts != 5 || conn.Timeout.D().Seconds() != 30 {
		t.Errorf("README config loaded wrongly: %+v", conn)
	}
	if cfg.Worker.Concurrency != 64 || cfg.NATS.Embedded.Listen != "127.0.0.1:4222" {
		t.Errorf("worker/nats settings: %+v %+v", cfg.Worker, cfg.NATS)
	}
}

// A config error names the key to fix and carries no wire error code: it
// is for the operator, not a call's result.
func TestConfigErrorsCarryNoWireCode(t *testing.T) {
	_, err := worker.ParseConfig([]byte(`
profiles:
  p: {keystore: "file:/tmp/x.p12", min_tls_version: "1.1"}
connections:
  a: {base_url: "https://h.example/", profile: p}
`))
	if err == nil || !strings.Contains(err.Error(), `profile p: the profile's min_tls_version "1.1" is not supported`) || strings.Contains(err.Error(), "keystore_invalid") {
		t.Fatalf("err = %v; want the profile and the key named, without a wire code", err)
	}
}
