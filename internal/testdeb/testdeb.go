// Package testdeb installs the Debian packages a test needs (xmlsec1,
// python3-zeep, python3-spyne, ...) when they are missing, so that a test
// that needs a tool never skips: it installs it, or fails saying how to.
package testdeb

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

// Python is the interpreter the Debian python3-* packages install into. A
// python3 earlier on PATH (pyenv, a virtualenv) does not see them.
const Python = "/usr/bin/python3"

var (
	mu   sync.Mutex
	done = map[string]error{}
)

// Ensure makes sure that present reports true, installing the Debian
// packages pkgs with apt-get when it does not and the test runs as root. It
// fails the test when they cannot be installed. Test binaries of several
// packages may start at once: one installs, under a file lock.
func Ensure(t testing.TB, present func() bool, pkgs ...string) {
	t.Helper()
	key := strings.Join(pkgs, " ")
	mu.Lock()
	err, ok := done[key]
	if !ok {
		err = ensure(t, present, pkgs)
		done[key] = err
	}
	mu.Unlock()
	if err != nil {
		t.Fatalf("testdeb: %v", err)
	}
}

// Command ensures that the executable name is on PATH or in /usr/bin,
// installing pkgs otherwise, and returns its path.
func Command(t testing.TB, name string, pkgs ...string) string {
	t.Helper()
	Ensure(t, func() bool { return lookPath(name) != "" }, pkgs...)
	return lookPath(name)
}

// PythonModules ensures that Python imports each of modules, installing
// pkgs otherwise, and returns the interpreter's path.
func PythonModules(t testing.TB, modules []string, pkgs ...string) string {
	t.Helper()
	Ensure(t, func() bool {
		args := []string{"-c", "import " + strings.Join(modules, ", ")}
		return exec.Command(Python, args...).Run() == nil
	}, pkgs...)
	return Python
}

func lookPath(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/bin", "/usr/sbin", "/bin", "/sbin"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

func ensure(t testing.TB, present func() bool, pkgs []string) error {
	if present() {
		return nil
	}
	list := strings.Join(pkgs, " ")
	if os.Geteuid() != 0 {
		return fmt.Errorf("%s missing and this test does not run as root to install it: run `sudo apt-get install -y %s`", list, list)
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		return fmt.Errorf("%s missing and there is no apt-get to install it: install the equivalent packages", list)
	}
	unlock, err := filelock.Lock(filepath.Join(os.TempDir(), "mtlsrelay-testdeb-install.lock"))
	if err != nil {
		return err
	}
	defer unlock()
	if present() {
		return nil
	}
	t.Logf("testdeb: installing the Debian packages %s with apt-get", list)
	install := func() ([]byte, error) {
		cmd := exec.Command("apt-get", append([]string{"install", "-y", "--no-install-recommends"}, pkgs...)...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		return cmd.CombinedOutput()
	}
	if _, err := install(); err != nil {
		// The package lists may be missing (a fresh container) or stale.
		if out, uerr := exec.Command("apt-get", "update").CombinedOutput(); uerr != nil {
			return fmt.Errorf("apt-get update: %v\n%s", uerr, tail(out, 20))
		}
		if out, err := install(); err != nil {
			return fmt.Errorf("apt-get install %s: %v\n%s", list, err, tail(out, 20))
		}
	}
	if !present() {
		return fmt.Errorf("apt-get installed %s, but the test still does not find what it needs", list)
	}
	return nil
}

func tail(b []byte, n int) string {
	l := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}
