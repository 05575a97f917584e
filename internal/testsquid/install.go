package testsquid

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/mtlsrelay/mtlsrelay/internal/filelock"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// squidPaths are where distributions put the squid binary when it is not
// on PATH (Debian: /usr/sbin, which a non-login PATH may lack).
var squidPaths = []string{"/usr/sbin/squid", "/usr/local/sbin/squid", "/opt/homebrew/sbin/squid"}

// helperPaths are where distributions put basic_ncsa_auth.
var helperPaths = []string{
	"/usr/lib/squid/basic_ncsa_auth",     // Debian, Ubuntu
	"/usr/lib64/squid/basic_ncsa_auth",   // Fedora, RHEL
	"/usr/libexec/squid/basic_ncsa_auth", // Alpine, source builds
	"/usr/local/libexec/squid/basic_ncsa_auth",
	"/opt/homebrew/opt/squid/libexec/basic_ncsa_auth",
}

// Binary returns the path of squid, installing the Debian package squid
// with apt-get when it is missing and the test runs as root. It fails the
// test when there is no squid and it cannot be installed.
func Binary(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() { binPath, binErr = findOrInstall(t) })
	if binErr != nil {
		t.Fatalf("testsquid: %v", binErr)
	}
	return binPath
}

func findSquid() string {
	if p, err := exec.LookPath("squid"); err == nil {
		return p
	}
	for _, p := range squidPaths {
		if executable(p) {
			return p
		}
	}
	return ""
}

func findOrInstall(t testing.TB) (string, error) {
	if p := findSquid(); p != "" {
		return p, nil
	}
	if os.Geteuid() != 0 {
		return "", fmt.Errorf("squid is not installed and this test does not run as root to install it: run `sudo apt-get install -y %s` (Debian, Ubuntu) or install Squid with basic_ncsa_auth", Package)
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		return "", fmt.Errorf("squid is not installed and there is no apt-get to install it: install Squid with basic_ncsa_auth")
	}
	// Test binaries of several packages may start at once: one installs.
	unlock, err := filelock.Lock(filepath.Join(os.TempDir(), "mtlsrelay-testsquid-install.lock"))
	if err != nil {
		return "", err
	}
	defer unlock()
	if p := findSquid(); p != "" {
		return p, nil
	}
	t.Logf("testsquid: squid is missing; installing the Debian package %s with apt-get", Package)
	install := func() ([]byte, error) {
		cmd := exec.Command("apt-get", "install", "-y", "--no-install-recommends", Package)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		return cmd.CombinedOutput()
	}
	if _, err := install(); err != nil {
		// The package lists may be missing (a fresh container) or stale.
		if upd, uerr := exec.Command("apt-get", "update").CombinedOutput(); uerr != nil {
			return "", fmt.Errorf("apt-get update: %v\n%s", uerr, tailLines(upd, 20))
		}
		if out, err := install(); err != nil {
			return "", fmt.Errorf("apt-get install %s: %v\n%s", Package, err, tailLines(out, 20))
		}
	}
	if p := findSquid(); p != "" {
		return p, nil
	}
	return "", fmt.Errorf("apt-get installed %s, but no squid binary was found on PATH or in %v", Package, squidPaths)
}

// helperPath returns the path of basic_ncsa_auth.
func helperPath(t testing.TB) string {
	t.Helper()
	for _, p := range helperPaths {
		if executable(p) {
			return p
		}
	}
	t.Fatalf("testsquid: basic_ncsa_auth is not in %v; the Debian package %s ships it in /usr/lib/squid", helperPaths, Package)
	return ""
}

func executable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

func tailLines(b []byte, n int) string {
	l := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}
