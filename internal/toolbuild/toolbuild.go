// Package toolbuild builds, once and into the user's cache directory, the
// real servers the tests run (Vault, Hydra) from a Go module of their own
// that pins them, so test packages running in parallel share one binary:
// a lock file serializes the builds, and a binary is written under a
// temporary name and renamed into place.
package toolbuild

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/mtlsrelay/mtlsrelay/internal/filelock"
)

// Tool is one server binary built from a tools module.
type Tool struct {
	// Name is the binary's name in the cache, e.g. "vault"; Title the
	// server's in messages, e.g. "Vault".
	Name, Title string
	// Version is the pinned version: the binary is Name-Version.
	Version string
	// BinaryEnv names the variable that points at a prebuilt binary.
	BinaryEnv string
	// Dir is the tools module; Package what to build in it ("." or a path).
	Dir, Package string
	// Tags are build tags; Env is added to the build's environment.
	Tags []string
	Env  []string
	// Takes says how long a cold build takes, for the log.
	Takes string

	once sync.Once
	path string
	err  error
}

// TB is what Binary needs of a test: testing.TB has it.
type TB interface {
	Helper()
	Logf(format string, args ...any)
	Fatalf(format string, args ...any)
}

// Binary returns the path of the binary, building it when it is not in
// the cache yet; the test fails when it cannot be had.
func (b *Tool) Binary(t TB) string {
	t.Helper()
	path, err := b.Build(t.Logf)
	if err != nil {
		t.Fatalf("%s: %v", b.Name, err)
	}
	return path
}

// Build returns the path of the binary: the one BinaryEnv names, else the
// cached one, building it first when it is not there (progress says so).
// A process builds a Tool once.
func (b *Tool) Build(progress func(format string, args ...any)) (string, error) {
	b.once.Do(func() { b.path, b.err = b.findOrBuild(progress) })
	return b.path, b.err
}

// CachePath is where the built binary is kept:
// os.UserCacheDir()/mtlsrelay/<name>-<version>.
func (b *Tool) CachePath() (string, error) {
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("no cache directory for the %s binary (set %s): %w", b.Title, b.BinaryEnv, err)
	}
	return filepath.Join(dir, "mtlsrelay", b.Name+"-"+b.Version), nil
}

func (b *Tool) findOrBuild(progress func(format string, args ...any)) (string, error) {
	if p := os.Getenv(b.BinaryEnv); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%s=%s: %w", b.BinaryEnv, p, err)
		}
		return p, nil
	}
	out, err := b.CachePath()
	if err != nil {
		return "", err
	}
	if executable(out) {
		return out, nil
	}
	if _, err := os.Stat(filepath.Join(b.Dir, "go.mod")); err != nil && b.Package == "." {
		return "", fmt.Errorf("%s is not built (%s) and its module is not here to build it from (%s): set %s to a %s %s binary", b.Title, out, b.Dir, b.BinaryEnv, b.Title, b.Version)
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return "", err
	}
	unlock, err := filelock.Lock(out + ".lock")
	if err != nil {
		return "", err
	}
	defer unlock()
	if executable(out) { // built by another package while we waited
		return out, nil
	}
	progress("%s: building %s %s into %s (%s the first time)", b.Name, b.Title, b.Version, out, b.Takes)
	start := time.Now()
	tmp := fmt.Sprintf("%s.tmp-%d", out, os.Getpid())
	args := []string{"build"}
	if len(b.Tags) > 0 {
		args = append(args, "-tags", strings.Join(b.Tags, ","))
	}
	args = append(args, "-ldflags=-s -w", "-o", tmp, b.Package)
	cmd := exec.Command("go", args...)
	cmd.Dir = b.Dir
	cmd.Env = append(append(os.Environ(), "GOWORK=off"), b.Env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("building %s in %s: %v\n%s", b.Title, b.Dir, err, out)
	}
	if err := os.Rename(tmp, out); err != nil {
		return "", err
	}
	progress("%s: built %s in %s", b.Name, b.Title, time.Since(start).Round(time.Second))
	return out, nil
}

func executable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}
