package toolbuild

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// A tool is built once into the cache, then found there; a prebuilt
// binary named by its variable wins.
func TestToolBuildsOnceIntoTheCache(t *testing.T) {
	// Keep Go's own build cache where it is: only the tools' cache moves.
	if gocache, err := exec.Command("go", "env", "GOCACHE").Output(); err == nil {
		t.Setenv("GOCACHE", string(gocache[:len(gocache)-1]))
	}
	cache := t.TempDir()
	t.Setenv("XDG_CACHE_HOME", cache)
	src := t.TempDir()
	for name, text := range map[string]string{
		"go.mod":  "module hello\n\ngo 1.26\n",
		"main.go": "package main\n\nfunc main() { println(\"hello\") }\n",
	} {
		if err := os.WriteFile(filepath.Join(src, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tool := &Tool{Name: "hello", Title: "Hello", Version: "1", BinaryEnv: "MTLSRELAY_TEST_HELLO_BIN", Dir: src, Package: ".", Takes: "seconds"}
	bin := tool.Binary(t)
	if want := filepath.Join(cache, "mtlsrelay", "hello-1"); bin != want {
		t.Fatalf("binary at %s, want %s", bin, want)
	}
	if out, err := exec.Command(bin).CombinedOutput(); err != nil || string(out) != "hello\n" {
		t.Fatalf("the built binary ran: %v %q", err, out)
	}
	// A second Tool finds it without building (its source is gone).
	again := &Tool{Name: "hello", Title: "Hello", Version: "1", BinaryEnv: "MTLSRELAY_TEST_HELLO_BIN", Dir: filepath.Join(src, "missing"), Package: "."}
	if got := again.Binary(t); got != bin {
		t.Errorf("found %s, want the cached %s", got, bin)
	}
	t.Setenv("MTLSRELAY_TEST_HELLO_BIN", "/bin/true")
	prebuilt := &Tool{Name: "hello", Version: "1", BinaryEnv: "MTLSRELAY_TEST_HELLO_BIN"}
	if got := prebuilt.Binary(t); got != "/bin/true" {
		t.Errorf("with the variable set: %s", got)
	}
}
