// Package testsquid runs a real Squid proxy for tests: a throw-away
// configuration in a temporary directory, a free loopback port, basic
// proxy authentication checked by Squid's own basic_ncsa_auth helper
// against a password file, and CONNECT allowed to the given loopback
// targets only. Its access log tells a test which requests reached Squid
// and what it answered.
//
// What Squid answers (the rules, in order):
//
//	anything but CONNECT         403
//	no or wrong credentials      407 (when Options.Users is not empty)
//	CONNECT to an allowed target 200, then the tunnel
//	CONNECT to any other target  403
//
// Squid comes from the Debian package "squid". When it is not installed,
// Start installs it with apt-get if the test runs as root, and fails the
// test otherwise: a test that needs Squid never skips.
package testsquid

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mtlsrelay/mtlsrelay/internal/testserver"
)

// Package is the Debian package that provides Squid and basic_ncsa_auth.
const Package = "squid"

// Options configure a Squid.
type Options struct {
	// Users are the accounts of basic proxy authentication, user name to
	// password. Empty: Squid asks for no credentials.
	Users map[string]string
	// AllowConnect lists the targets a CONNECT may reach, as IP:port
	// ("127.0.0.1:8443"). A CONNECT to anything else gets 403.
	AllowConnect []string
}

// Squid is a running Squid. Its methods are safe for concurrent use.
type Squid struct {
	dir    string
	addr   string
	passwd string

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	mtime   time.Time
	stopped bool
	syncs   int
}

// Start runs Squid until the test ends, and returns once it accepts
// connections.
func Start(t testing.TB, opts Options) *Squid {
	t.Helper()
	bin := Binary(t)
	helper := helperPath(t)
	dir, err := os.MkdirTemp("", "testsquid-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	s := &Squid{dir: dir, passwd: filepath.Join(dir, "passwd")}
	if err := s.writeUsers(opts.Users); err != nil {
		t.Fatal(err)
	}
	uid, gid, effective := runAs()
	// Squid started as root runs as cache_effective_user: that user must
	// write its logs in dir and read the password file.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if uid >= 0 {
		for _, p := range []string{dir, s.passwd} {
			if err := os.Chown(p, uid, gid); err != nil {
				t.Fatal(err)
			}
		}
	}
	var lastErr error
	for range 5 {
		port, err := testserver.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		s.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		conf := s.config(helper, effective, opts)
		confPath := filepath.Join(dir, "squid.conf")
		if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		if lastErr = s.run(bin, confPath); lastErr == nil {
			t.Cleanup(s.Stop)
			return s
		}
	}
	t.Fatalf("testsquid: Squid did not start: %v\n%s", lastErr, s.tail("cache.log", 40))
	return nil
}

// config returns squid.conf.
func (s *Squid) config(helper, effectiveUser string, opts Options) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("# testsquid: a Squid for one test")
	p("http_port %s", s.addr)
	p("visible_hostname testsquid")
	p("pid_filename %s", filepath.Join(s.dir, "squid.pid"))
	p("cache_log %s", filepath.Join(s.dir, "cache.log"))
	p("logformat testsquid %%ts.%%03tu %%>a %%Ss/%%>Hs %%rm %%ru %%un")
	p("access_log stdio:%s testsquid", filepath.Join(s.dir, "access.log"))
	p("buffered_logs off")
	p("coredump_dir %s", s.dir)
	p("cache deny all")
	p("cache_mem 1 MB")
	p("netdb_filename none")
	p("shutdown_lifetime 1 seconds")
	p("icp_port 0")
	p("htcp_port 0")
	p("snmp_port 0")
	if effectiveUser != "" {
		p("cache_effective_user %s", effectiveUser)
	}
	p("acl CONNECT method CONNECT")
	if len(opts.Users) > 0 {
		p("auth_param basic program %s %s", helper, s.passwd)
		p("auth_param basic children 2 startup=1 idle=1")
		p("auth_param basic realm testsquid")
		// Squid asks the helper again after a second: a test that changes
		// the password file sees the change.
		p("auth_param basic credentialsttl 1 second")
		p("authenticate_ttl 1 second")
		p("acl authed proxy_auth REQUIRED")
	}
	p("http_access deny !CONNECT")
	if len(opts.Users) > 0 {
		p("http_access deny !authed")
	}
	for i, target := range opts.AllowConnect {
		host, port, _ := net.SplitHostPort(target)
		p("acl target%d dst %s", i, host)
		p("acl target%d_port port %s", i, port)
		p("http_access allow CONNECT target%d target%d_port", i, i)
	}
	p("http_access deny all")
	return b.String()
}

// run starts Squid with conf and waits until it accepts connections.
func (s *Squid) run(bin, conf string) error {
	cmd := exec.Command(bin, "-N", "-d1", "-f", conf)
	cmd.Dir = s.dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	ownGroup(cmd)
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return fmt.Errorf("squid exited: %v\n%s", cmd.ProcessState, out.String())
		default:
		}
		if c, err := net.DialTimeout("tcp", s.addr, 200*time.Millisecond); err == nil {
			c.Close()
			s.mu.Lock()
			s.cmd, s.done = cmd, done
			s.mu.Unlock()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	kill(cmd)
	<-done
	return fmt.Errorf("squid did not listen on %s within 20s\n%s", s.addr, out.String())
}

// Addr returns Squid's address, "127.0.0.1:PORT".
func (s *Squid) Addr() string { return s.addr }

// URL returns Squid's URL, "http://127.0.0.1:PORT".
func (s *Squid) URL() string { return "http://" + s.addr }

// Dir returns the temporary directory of Squid's configuration and logs.
func (s *Squid) Dir() string { return s.dir }

// Stop stops Squid and waits for it; later calls do nothing. The access
// log keeps what Squid wrote.
func (s *Squid) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped || s.cmd == nil {
		return
	}
	s.stopped = true
	terminate(s.cmd)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		kill(s.cmd)
		<-s.done
	}
	// Helpers still running in the group (they end on their own when
	// Squid's end closes their input).
	kill(s.cmd)
}

// SetUsers replaces the accounts of basic proxy authentication (the
// password file, read again by basic_ncsa_auth when its modification time
// changes; SetUsers makes sure it does). Squid asks the helper again for
// credentials it accepted more than a second ago.
func (s *Squid) SetUsers(t testing.TB, users map[string]string) {
	t.Helper()
	if err := s.writeUsers(users); err != nil {
		t.Fatal(err)
	}
}

func (s *Squid) writeUsers(users map[string]string) error {
	names := make([]string, 0, len(users))
	for u := range users {
		if strings.ContainsAny(u, ":\n") {
			return fmt.Errorf("testsquid: user name %q holds ':' or a line break", u)
		}
		names = append(names, u)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, u := range names {
		fmt.Fprintf(&b, "%s:%s\n", u, APR1(users[u], ""))
	}
	tmp := s.passwd + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		return err
	}
	if uid, gid, _ := runAs(); uid >= 0 {
		if err := os.Chown(tmp, uid, gid); err != nil {
			return err
		}
	}
	if err := os.Rename(tmp, s.passwd); err != nil {
		return err
	}
	// basic_ncsa_auth compares modification times in whole seconds.
	s.mu.Lock()
	defer s.mu.Unlock()
	next := time.Now().Truncate(time.Second)
	if !next.After(s.mtime) {
		next = s.mtime.Add(time.Second)
	}
	s.mtime = next
	return os.Chtimes(s.passwd, next, next)
}

// Entry is one line of Squid's access log.
type Entry struct {
	// Client is the client's address.
	Client string
	// Action is Squid's result code: TCP_TUNNEL, TCP_DENIED...
	Action string
	// Status is the HTTP status Squid answered (200 for a tunnel).
	Status int
	// Method is the request's method: CONNECT, GET...
	Method string
	// Target is the request's target: host:port for a CONNECT.
	Target string
	// User is the authenticated user name, "-" for none.
	User string
	// Line is the line as Squid wrote it.
	Line string
}

// Log returns the access log's entries. Squid writes a request's entry
// when the request ends: a tunnel's when it closes, a refusal's at once.
func (s *Squid) Log(t testing.TB) []Entry {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.dir, "access.log"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var out []Entry
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 6 {
			continue
		}
		e := Entry{Client: f[1], Method: f[3], Target: f[4], User: f[5], Line: sc.Text()}
		e.Action, _, _ = strings.Cut(f[2], "/")
		if _, st, ok := strings.Cut(f[2], "/"); ok {
			e.Status, _ = strconv.Atoi(st)
		}
		out = append(out, e)
	}
	return out
}

// Connects returns the log's CONNECT entries.
func (s *Squid) Connects(t testing.TB) []Entry {
	t.Helper()
	var out []Entry
	for _, e := range s.Log(t) {
		if e.Method == http.MethodConnect {
			out = append(out, e)
		}
	}
	return out
}

// Sync returns once every request Squid finished before the call is in
// the access log: it sends a request of its own (refused at once) and
// waits for its entry.
func (s *Squid) Sync(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	s.syncs++
	marker := fmt.Sprintf("http://testsquid-sync-%d.invalid/", s.syncs)
	s.mu.Unlock()
	c, err := net.DialTimeout("tcp", s.addr, 5*time.Second)
	if err != nil {
		t.Fatalf("testsquid: sync: %v", err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: testsquid-sync.invalid\r\nConnection: close\r\n\r\n", marker)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err == nil {
		resp.Body.Close()
	}
	c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, e := range s.Log(t) {
			if e.Target == marker {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("testsquid: sync: %s never reached the access log", marker)
}

// CacheLog returns the end of Squid's own log, for failure messages.
func (s *Squid) CacheLog() string { return s.tail("cache.log", 60) }

func (s *Squid) tail(name string, lines int) string {
	b, err := os.ReadFile(filepath.Join(s.dir, name))
	if err != nil {
		return ""
	}
	l := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

// runAs returns the user Squid runs as when started by root (its
// cache_effective_user: "proxy" on Debian, else "nobody"), with its uid
// and gid; uid -1 and no name when the test does not run as root.
func runAs() (uid, gid int, name string) {
	if os.Geteuid() != 0 {
		return -1, -1, ""
	}
	for _, n := range []string{"proxy", "nobody"} {
		u, err := user.Lookup(n)
		if err != nil {
			continue
		}
		uid, err1 := strconv.Atoi(u.Uid)
		gid, err2 := strconv.Atoi(u.Gid)
		if err1 == nil && err2 == nil {
			return uid, gid, n
		}
	}
	return -1, -1, ""
}
