// Package testserver holds what the packages that run real servers for the
// tests (testhydra, testvault, testsquid, testocsp) share: free loopback
// ports, random secrets, and the tail of a server's output for an error.
// It imports the standard library only.
package testserver

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"net"
)

// FreePorts returns n distinct loopback TCP ports nothing listens on now
// (they are held together while chosen, so they differ).
func FreePorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// FreePort is one of FreePorts.
func FreePort() (int, error) {
	ports, err := FreePorts(1)
	if err != nil {
		return 0, err
	}
	return ports[0], nil
}

// RandomHex returns n random bytes, hex-encoded.
func RandomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Tail returns the last n bytes of b, trimmed: the end of a server's
// output, for an error message.
func Tail(b []byte, n int) string {
	b = bytes.TrimSpace(b)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
