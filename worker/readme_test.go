package worker_test

import (
	"os"
	"strings"
	"testing"

	"github.com/mtlsrelay/mtlsrelay/worker"
)

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
	cfg, err := worker.ParseConfig([]byte(block))
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
		if _, err := worker.ParseConfig([]byte(b)); err != nil {
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
