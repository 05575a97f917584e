package testsquid

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestAPR1(t *testing.T) {
	// From `openssl passwd -apr1 -salt SALT PASSWORD`.
	for _, c := range []struct{ password, salt, want string }{
		{"p@ss:word", "abcdefgh", "$apr1$abcdefgh$3vV72pWBK7yA0GpedWUOl/"},
		{"secret", "12345678", "$apr1$12345678$0lqb/6VUFP8JY/s/jTrIk0"},
	} {
		if got := APR1(c.password, c.salt); got != c.want {
			t.Errorf("APR1(%q, %q) = %s, want %s", c.password, c.salt, got, c.want)
		}
	}
	a, b := APR1("x", ""), APR1("x", "")
	if a == b || !strings.HasPrefix(a, "$apr1$") {
		t.Errorf("random salts: %s and %s", a, b)
	}
}

// echoServer accepts connections and echoes what it reads.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	return ln.Addr().String()
}

// connect sends a CONNECT to target through s, with user:password when
// user is set, and returns the status and the connection (open on 200).
func connect(t *testing.T, s *Squid, target, user, password string) (int, net.Conn) {
	t.Helper()
	c, err := net.DialTimeout("tcp", s.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	req := fmt.Sprintf("CONNECT %s HTTP/1.1\r\nHost: %s\r\n", target, target)
	if user != "" {
		req += "Proxy-Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password)) + "\r\n"
	}
	if _, err := io.WriteString(c, req+"\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatalf("CONNECT %s: %v\n%s", target, err, s.CacheLog())
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		c.Close()
		return resp.StatusCode, nil
	}
	if br.Buffered() > 0 {
		t.Fatal("bytes after the CONNECT response")
	}
	return resp.StatusCode, c
}

func TestSquid(t *testing.T) {
	allowed, other := echoServer(t), echoServer(t)
	s := Start(t, Options{Users: map[string]string{"relay": "first-pass"}, AllowConnect: []string{allowed}})

	if st, _ := connect(t, s, allowed, "", ""); st != http.StatusProxyAuthRequired {
		t.Errorf("no credentials: %d, want 407", st)
	}
	if st, _ := connect(t, s, allowed, "relay", "wrong"); st != http.StatusProxyAuthRequired {
		t.Errorf("wrong password: %d, want 407", st)
	}
	if st, _ := connect(t, s, other, "relay", "first-pass"); st != http.StatusForbidden {
		t.Errorf("target not allowed: %d, want 403", st)
	}
	st, c := connect(t, s, allowed, "relay", "first-pass")
	if st != http.StatusOK {
		t.Fatalf("allowed target: %d, want 200\n%s", st, s.CacheLog())
	}
	if _, err := io.WriteString(c, "ping"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("through the tunnel: %q, %v", buf, err)
	}
	c.Close()

	// A new password: the old one is refused, the new one accepted.
	s.SetUsers(t, map[string]string{"relay": "second-pass"})
	time.Sleep(1100 * time.Millisecond) // credentialsttl
	if st, _ := connect(t, s, allowed, "relay", "first-pass"); st != http.StatusProxyAuthRequired {
		t.Errorf("old password after SetUsers: %d, want 407", st)
	}
	if st, c := connect(t, s, allowed, "relay", "second-pass"); st != http.StatusOK {
		t.Errorf("new password after SetUsers: %d, want 200", st)
	} else {
		c.Close()
	}

	s.Sync(t)
	var tunnels, denied int
	for _, e := range s.Connects(t) {
		switch {
		case e.Status == http.StatusOK && e.Target == allowed && e.User == "relay":
			tunnels++
		case e.Status == http.StatusForbidden || e.Status == http.StatusProxyAuthRequired:
			denied++
		}
	}
	if tunnels != 2 || denied != 4 {
		t.Errorf("access log: %d tunnels (want 2), %d refusals (want 4):\n%v", tunnels, denied, s.Log(t))
	}

	s.Stop()
	if c, err := net.DialTimeout("tcp", s.Addr(), time.Second); err == nil {
		c.Close()
		t.Error("Squid still accepts connections after Stop")
	}
}
