// Package embedded runs a NATS server with JetStream inside the mtlsrelay
// process, so one command gives a working relay that other workers and
// flows can join.
//
// On a loopback address the server is open, as a trial needs. Anywhere
// else anyone who reaches the port could enqueue calls made with the
// partners' certificates, so the server refuses to start without
// authentication: Users (user and password, full permissions) or an
// AccountsFile (a nats-server configuration whose authorization and
// accounts are used).
package embedded

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// InternalUser is the name of the user the process itself connects as when
// the server has Users: it is added to them with a random password made at
// each start, which never leaves the process.
const InternalUser = "mtlsrelay-internal"

// Options configures the embedded server.
type Options struct {
	// Listen is host:port for clients; port 0 picks a free one. Default
	// 127.0.0.1:4222. A host other than a loopback address (127.0.0.0/8,
	// ::1, localhost), including an empty one, needs Users or AccountsFile.
	Listen string
	// StoreDir holds JetStream's files. Required.
	StoreDir string
	// ServerName names the server; default "mtlsrelay-embedded".
	ServerName string
	// Users may connect with their password and full permissions (in the
	// global account). A password may be a bcrypt hash ($2a$...), as in a
	// nats-server configuration file.
	Users []User
	// AccountsFile is a nats-server configuration file: its authorization,
	// accounts, users and nkeys are used; everything else in it (listen,
	// store_dir, cluster, monitoring...) is ignored. Not with Users.
	AccountsFile string
	// Mappings are subject mappings of the global account, source to
	// destination (nats.partitions). With AccountsFile, the file's
	// accounts must carry their own.
	Mappings map[string]string
}

// User is one user of the embedded server.
type User struct {
	Name     string
	Password string
}

// Server is a running embedded server.
type Server struct {
	*server.Server
	// internal is the process's own user (Users mode), or nil.
	internal *server.User
	// auth says whether the server demands authentication.
	auth bool
	// noAuthUser is the accounts file's no_auth_user, if any.
	noAuthUser string
}

// Start starts the server and waits until it accepts clients. Use
// StartServer to connect to a server that has Users.
func Start(o Options) (*server.Server, error) {
	s, err := StartServer(o)
	if err != nil {
		return nil, err
	}
	return s.Server, nil
}

// StartServer starts the server and waits until it accepts clients. It
// refuses a non-loopback Listen without Users or AccountsFile, with the
// message an operator needs.
func StartServer(o Options) (*Server, error) {
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
	if o.StoreDir == "" {
		return nil, fmt.Errorf("embedded NATS needs a data directory for JetStream files (--data-dir)")
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
	s := &Server{}
	switch {
	case len(o.Users) > 0 && o.AccountsFile != "":
		return nil, errors.New("embedded NATS: give nats.embedded.users or nats.embedded.accounts_file, not both")
	case len(o.Users) > 0:
		users, internal, err := passwordUsers(o.Users)
		if err != nil {
			return nil, err
		}
		opts.Users, s.internal, s.auth = users, internal, true
	case o.AccountsFile != "":
		if err := useAccountsFile(opts, o.AccountsFile); err != nil {
			return nil, err
		}
		s.auth, s.noAuthUser = true, opts.NoAuthUser
	case !IsLoopback(host):
		return nil, fmt.Errorf("embedded NATS: refusing to listen on %s without authentication: anyone who reaches that address could "+
			"enqueue calls made with the partners' certificates and read their results. Add users (nats.embedded.users: "+
			"[{user: NAME, password: env:VAR}]), or a nats-server authorization file (nats.embedded.accounts_file, "+
			"e.g. docs/nats-accounts.conf), or listen on a loopback address such as 127.0.0.1:%s (--listen)", listen, portStr)
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(15 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("embedded NATS did not start listening on %s within 15s (is the port in use?)", listen)
	}
	if o.AccountsFile == "" {
		for src, dst := range o.Mappings {
			if err := srv.GlobalAccount().AddMapping(src, dst); err != nil {
				srv.Shutdown()
				return nil, fmt.Errorf("embedded NATS: subject mapping %s -> %s: %w", src, dst, err)
			}
		}
	}
	s.Server = srv
	return s, nil
}

// passwordUsers returns the server users of us, full permissions, plus the
// internal user with a fresh random password.
func passwordUsers(us []User) ([]*server.User, *server.User, error) {
	seen := map[string]bool{}
	users := make([]*server.User, 0, len(us)+1)
	for i, u := range us {
		switch {
		case u.Name == "":
			return nil, nil, fmt.Errorf("embedded NATS: nats.embedded.users[%d] has no user name", i)
		case u.Name == InternalUser:
			return nil, nil, fmt.Errorf("embedded NATS: user name %q is reserved for the worker's own connection; choose another", InternalUser)
		case seen[u.Name]:
			return nil, nil, fmt.Errorf("embedded NATS: user %q is listed twice in nats.embedded.users", u.Name)
		case u.Password == "":
			return nil, nil, fmt.Errorf("embedded NATS: user %q has an empty password; give it one (password: env:VAR, file:PATH)", u.Name)
		}
		seen[u.Name] = true
		users = append(users, &server.User{Username: u.Name, Password: u.Password})
	}
	pw, err := randomPassword()
	if err != nil {
		return nil, nil, err
	}
	internal := &server.User{Username: InternalUser, Password: pw}
	return append(users, internal), internal, nil
}

// useAccountsFile sets the authentication of opts from a nats-server
// configuration file.
func useAccountsFile(opts *server.Options, path string) error {
	fo, err := server.ProcessConfigFile(path)
	if err != nil {
		return fmt.Errorf("embedded NATS: nats.embedded.accounts_file: %w", err)
	}
	if len(fo.TrustedOperators) > 0 || len(fo.TrustedKeys) > 0 {
		return fmt.Errorf("embedded NATS: nats.embedded.accounts_file %s is in operator mode (operator, resolver), which the embedded server does not run; "+
			"run nats-server with it and point the workers at it (nats.url)", path)
	}
	if len(fo.Users) == 0 && len(fo.Nkeys) == 0 && fo.Username == "" && fo.Authorization == "" && fo.AuthCallout == nil {
		return fmt.Errorf("embedded NATS: nats.embedded.accounts_file %s defines no users, nkeys or token: clients would connect unauthenticated; "+
			"add users to its accounts (see docs/nats-accounts.conf)", path)
	}
	opts.Users, opts.Nkeys, opts.Accounts = fo.Users, fo.Nkeys, fo.Accounts
	opts.Username, opts.Password, opts.Authorization = fo.Username, fo.Password, fo.Authorization
	opts.NoAuthUser, opts.AuthTimeout, opts.AuthCallout = fo.NoAuthUser, fo.AuthTimeout, fo.AuthCallout
	opts.SystemAccount, opts.NoSystemAccount = fo.SystemAccount, fo.NoSystemAccount
	return nil
}

func randomPassword() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("embedded NATS: random password: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// Auth reports whether the server demands authentication.
func (s *Server) Auth() bool { return s.auth }

// Internal reports whether the process connects as InternalUser (the
// server has Users). With an accounts file it connects as one of the
// file's users instead, given by the caller.
func (s *Server) Internal() bool { return s.internal != nil }

// NoAuthUser is the accounts file's no_auth_user: the user a client
// without credentials connects as. Empty: such a client is refused.
func (s *Server) NoAuthUser() string { return s.noAuthUser }

// ConnectOptions are the nats.Options that connect a client of this process
// to s: in process (no socket, so nothing crosses the network), and as
// InternalUser when the server has Users. Add the credentials of a user of
// the accounts file for a server started with one.
func (s *Server) ConnectOptions() []nats.Option {
	opts := []nats.Option{nats.InProcessServer(s.Server)}
	if s.internal != nil {
		opts = append(opts, nats.UserInfo(s.internal.Username, s.internal.Password))
	}
	return opts
}

// IsLoopback reports whether host (a name or IP, without port) is a
// loopback address: localhost, 127.0.0.0/8 or ::1.
func IsLoopback(host string) bool {
	h := strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}
