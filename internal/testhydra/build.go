package testhydra

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/mtlsrelay/mtlsrelay/internal/filelock"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// Binary returns the path of the Hydra binary, building it into the user's
// cache directory when it is not there yet. Test packages running in
// parallel build it once: a lock file serializes them, and the binary is
// written under a temporary name and renamed into place.
func Binary(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() { binPath, binErr = findOrBuild(t) })
	if binErr != nil {
		t.Fatalf("testhydra: %v", binErr)
	}
	return binPath
}

// CachePath is where a built binary is kept: os.UserCacheDir()/mtlsrelay/hydra-2.3.0.
func CachePath() (string, error) {
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("no cache directory for the Hydra binary (set %s): %w", BinaryEnv, err)
	}
	return filepath.Join(dir, "mtlsrelay", "hydra-"+Version), nil
}

// ToolsDir is the module that pins Hydra and its dependencies.
func ToolsDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "tools")
}

func findOrBuild(t testing.TB) (string, error) {
	if p := os.Getenv(BinaryEnv); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%s=%s: %w", BinaryEnv, p, err)
		}
		return p, nil
	}
	out, err := CachePath()
	if err != nil {
		return "", err
	}
	if executable(out) {
		return out, nil
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
	t.Logf("testhydra: building Ory Hydra %s into %s (minutes the first time: the module proxy, then cgo for SQLite)", Version, out)
	start := time.Now()
	tmp := fmt.Sprintf("%s.tmp-%d", out, os.Getpid())
	cmd := exec.Command("go", "build", "-tags", "sqlite,sqlite_omit_load_extension", "-ldflags=-s -w", "-o", tmp, "github.com/ory/hydra/v2")
	cmd.Dir = ToolsDir()
	cmd.Env = append(os.Environ(), "GOWORK=off", "CGO_ENABLED=1")
	if b, err := cmd.CombinedOutput(); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("building Hydra in %s: %v\n%s", cmd.Dir, err, b)
	}
	if err := os.Rename(tmp, out); err != nil {
		return "", err
	}
	t.Logf("testhydra: built Hydra in %s", time.Since(start).Round(time.Second))
	return out, nil
}

func executable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}
