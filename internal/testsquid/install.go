package testsquid

import (
	"os"
	"os/exec"
	"testing"

	"github.com/mtlsrelay/mtlsrelay/internal/testdeb"
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
	testdeb.Ensure(t, func() bool { return findSquid() != "" }, Package)
	return findSquid()
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
