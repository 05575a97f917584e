// Package embedded runs a NATS server with JetStream inside the mtlsrelay
// process, so one command gives a working relay that other workers and
// flows can join.
package embedded

import (
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Options configures the embedded server.
type Options struct {
	// Listen is host:port for clients; port 0 picks a free one. Default 127.0.0.1:4222.
	Listen string
	// StoreDir holds JetStream's files. Required.
	StoreDir string
	// ServerName names the server; default "mtlsrelay-embedded".
	ServerName string
}

// Start starts the server and waits until it accepts clients.
func Start(o Options) (*server.Server, error) {
	listen := o.Listen
	if listen == "" {
		listen = "127.0.0.1:4222"
	}
	host, portStr, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS listen address %q: %w", listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS listen port %q: %w", portStr, err)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	name := o.ServerName
	if name == "" {
		name = "mtlsrelay-embedded"
	}
	opts := &server.Options{
		ServerName: name,
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   o.StoreDir,
		NoSigs:     true,
		NoLog:      true,
	}
	if o.StoreDir == "" {
		return nil, fmt.Errorf("embedded NATS needs a data directory for JetStream files (--data-dir)")
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(15 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("embedded NATS did not start listening on %s within 15s (is the port in use?)", listen)
	}
	return s, nil
}
