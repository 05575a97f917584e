// Package fakeccp is a FAKE of CyberArk's Central Credential Provider (CCP),
// for tests and demos only. No CyberArk software can run where mtlsrelay is
// built and tested, so this package serves the CCP's GetPassword REST web
// service as CyberArk documents it, over real Go TLS, from an in-memory vault.
// It is not CyberArk code and only approximates a real CCP.
//
// It follows CyberArk's "Call the Web Service using REST" page of the
// Central Credential Provider documentation
// (docs.cyberark.com/.../AAM-CP/Latest/en/Content/CCP/Calling-the-Web-Service-using-REST.htm):
//
//	GET /AIMWebService/api/Accounts?AppID=..&Safe=..&Folder=..&Object=..
//	    [&UserName=..&Address=..&Database=..&PolicyID=..&Reason=..
//	     &ConnectionTimeout=..&Query=..&QueryFormat=Exact|Regexp
//	     &FailRequestOnPasswordChange=true|false]
//
// AppID is required, with at least one other parameter; Folder defaults to
// Root; Query ("Safe=S;Folder=F;Object=O;UserName=U", account properties
// separated by semicolons) replaces the other search parameters. Parameter
// names are matched case-insensitively, as ASP.NET binds them.
//
// A success is 200 with a flat JSON object: Content (the password), Safe,
// Folder, Name (the object), PasswordChangeInProcess ("True" or "False"),
// CreationMethod and every property the object was added with (UserName,
// Address, PolicyID, DeviceType, custom properties...). Failures carry
// {"ErrorCode": "...", "ErrorMsg": "..."} with the documented statuses:
//
//	400 AIMWS031E  the AppID parameter is missing
//	400 AIMWS030E  invalid query format (no search parameter, bad QueryFormat or regexp)
//	400 APPAP227E  too many objects match the query
//	403 APPAP008E  the AppID is not defined ("ITATS982E User <AppID> is not defined")
//	403 APPAP306E  the application failed its authentication check (client
//	               certificate serial or allowed machine not accepted)
//	404 APPAP004E  no password object matches, or the AppID may not read its Safe
//	500 APPAP282E  the password is being changed by the CPM and
//	               FailRequestOnPasswordChange=true
//
// SetFailure injects any other answer (a 500, APPAP007E "Connection to the
// Vault has failed", ...) and SetLatency a delay. The exact ErrorMsg texts
// are modelled on published examples; where CyberArk documents only the use
// case, the text here is the fake's own wording.
//
// A request for another path gets IIS's plain 404, not JSON.
package fakeccp

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mtlsrelay/mtlsrelay/internal/linger"
)

// Path is the documented path of the GetPassword REST web service.
const Path = "/AIMWebService/api/Accounts"

// Options configure a fake CCP. Certificate is required.
type Options struct {
	// Addr is the listen address. Default "127.0.0.1:0" (a free port).
	Addr string
	// Certificate is the server's certificate and key.
	Certificate tls.Certificate
	// ClientCAs, when set, makes the server require a client certificate
	// issued by one of these CAs (tls.RequireAndVerifyClientCert), as an IIS
	// site set to "Require SSL" and "Require client certificates" does; a
	// client without one fails the TLS handshake. When nil a client
	// certificate is requested but neither required nor verified.
	ClientCAs *x509.CertPool
	// ErrorLog receives the HTTP server's errors (failed handshakes among
	// them). Default: discarded.
	ErrorLog *log.Logger
}

// App is an application defined in the fake vault, identified by its AppID,
// with the authentication checks CyberArk's Credential Provider applies.
type App struct {
	// ID is the AppID, compared case-insensitively.
	ID string
	// CertificateSerials, when not empty, are the serial numbers (hex, as
	// big.Int.Text(16) writes them, case-insensitive) of the client
	// certificates allowed to authenticate as this application, like
	// CyberArk's "Certificate Serial Number" authentication.
	CertificateSerials []string
	// AllowedMachines, when not empty, are the client IP addresses allowed
	// to request passwords for this application.
	AllowedMachines []string
	// Safes, when not empty, are the Safes this application is a member of;
	// objects of other Safes are not found, as with a real CCP. Empty means
	// every Safe.
	Safes []string
}

// Failure is an answer the server gives to every GetPassword request while
// it is set, after TLS and before anything else.
type Failure struct {
	// Status is the HTTP status, e.g. 500.
	Status int
	// ErrorCode and ErrorMsg fill the JSON error body; with both empty the
	// body is plain text, as from a proxy or IIS itself.
	ErrorCode, ErrorMsg string
}

// Request is what the server recorded of one GetPassword request. It holds
// no password.
type Request struct {
	AppID, Safe, Folder, Object, Query, QueryFormat, Reason string
	// ClientSerial is the hex serial of the client certificate presented, or "".
	ClientSerial string
	// Status and ErrorCode are what the server answered.
	Status    int
	ErrorCode string
}

// account is one password object of the fake vault.
type account struct {
	safe, folder, object string
	props                map[string]string
	changing             bool
}

// Server is a running fake CCP. Its methods are safe for concurrent use.
type Server struct {
	srv  *http.Server
	ln   *linger.Listener
	url  string
	done <-chan struct{}

	mu       sync.Mutex
	accounts []*account
	apps     map[string]App
	failure  *Failure
	latency  time.Duration
	requests []Request
}

// Start listens and serves until Close.
func Start(opts Options) (*Server, error) {
	if len(opts.Certificate.Certificate) == 0 {
		return nil, errors.New("fakeccp: Options.Certificate is required")
	}
	addr := opts.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	errLog := opts.ErrorLog
	if errLog == nil {
		errLog = log.New(io.Discard, "", 0)
	}
	s := &Server{
		apps: map[string]App{},
	}
	tcfg := &tls.Config{
		Certificates: []tls.Certificate{opts.Certificate},
		ClientAuth:   tls.RequestClientCert,
		MinVersion:   tls.VersionTLS12,
	}
	if opts.ClientCAs != nil {
		tcfg.ClientAuth = tls.RequireAndVerifyClientCert
		tcfg.ClientCAs = opts.ClientCAs
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", s.serve)
	s.srv = &http.Server{
		Handler:           mux,
		TLSConfig:         tcfg,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          errLog,
	}
	ln, done, err := linger.ServeTLS(s.srv, addr)
	if err != nil {
		return nil, fmt.Errorf("fakeccp: %w", err)
	}
	s.ln, s.done = ln, done
	s.url = "https://" + ln.Addr().String()
	return s, nil
}

// URL returns the server's base URL, "https://127.0.0.1:PORT"; the web
// service is at URL()+Path.
func (s *Server) URL() string { return s.url }

// Addr returns the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops the server, closing every connection, and waits for its
// goroutines.
func (s *Server) Close() error {
	err := s.srv.Close()
	<-s.done
	s.ln.Shutdown()
	return err
}

// AddApp defines an application, replacing one of the same AppID.
func (s *Server) AddApp(a App) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.apps[strings.ToLower(a.ID)] = a
}

// AllowAppIDs defines applications without authentication restrictions.
func (s *Server) AllowAppIDs(ids ...string) {
	for _, id := range ids {
		s.AddApp(App{ID: id})
	}
}

// Add stores a password object in Safe safe, folder folder ("" means Root),
// named object, with props as its properties: "Content" is the password,
// other keys (UserName, Address, PolicyID, custom ones) are returned as
// they are. Adding an object that exists replaces its properties, which is
// how a test rotates a secret.
func (s *Server) Add(safe, folder, object string, props map[string]string) {
	if folder == "" {
		folder = "Root"
	}
	p := make(map[string]string, len(props))
	for k, v := range props {
		p[k] = v
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.find(safe, folder, object); a != nil {
		a.props = p
		return
	}
	s.accounts = append(s.accounts, &account{safe: safe, folder: folder, object: object, props: p})
}

// Remove deletes a password object, if it exists.
func (s *Server) Remove(safe, folder, object string) {
	if folder == "" {
		folder = "Root"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.accounts = slices.DeleteFunc(s.accounts, func(a *account) bool {
		return strings.EqualFold(a.safe, safe) && strings.EqualFold(a.folder, folder) && strings.EqualFold(a.object, object)
	})
}

// SetPasswordChangeInProcess marks an object as being changed by the CPM:
// its PasswordChangeInProcess is "True", and requests with
// FailRequestOnPasswordChange=true fail with APPAP282E.
func (s *Server) SetPasswordChangeInProcess(safe, folder, object string, on bool) {
	if folder == "" {
		folder = "Root"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.find(safe, folder, object); a != nil {
		a.changing = on
	}
}

// SetFailure makes every GetPassword request get f until it is set to nil.
func (s *Server) SetFailure(f *Failure) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failure = f
}

// SetLatency delays every answer by d (or until the client gives up).
func (s *Server) SetLatency(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latency = d
}

// Requests returns the GetPassword requests served so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// find returns the object of that exact name; s.mu is held.
func (s *Server) find(safe, folder, object string) *account {
	for _, a := range s.accounts {
		if strings.EqualFold(a.safe, safe) && strings.EqualFold(a.folder, folder) && strings.EqualFold(a.object, object) {
			return a
		}
	}
	return nil
}

// ccpError is a documented failure of the web service.
type ccpError struct {
	status    int
	code, msg string
}

// searchParams are the parameters that select password objects, in the
// order they are shown in messages.
var searchParams = []string{"Safe", "Folder", "Object", "UserName", "Address", "Database", "PolicyID"}

// criterion is one property a password object must match.
type criterion struct{ name, value string }

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if !strings.EqualFold(r.URL.Path, Path) {
		// IIS answers an unknown path with its own HTML page.
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusNotFound)
		_, _ = io.WriteString(w, "<html><body><h1>404 - File or directory not found.</h1></body></html>")
		return
	}
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	q := params(r.URL.Query())
	rec := Request{
		AppID: q.get("AppID"), Safe: q.get("Safe"), Folder: q.get("Folder"), Object: q.get("Object"),
		Query: q.get("Query"), QueryFormat: q.get("QueryFormat"), Reason: q.get("Reason"),
	}
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		rec.ClientSerial = r.TLS.PeerCertificates[0].SerialNumber.Text(16)
	}

	s.mu.Lock()
	latency, failure := s.latency, s.failure
	s.mu.Unlock()
	if latency > 0 {
		select {
		case <-time.After(latency):
		case <-r.Context().Done():
			return
		}
	}

	var body any
	status := http.StatusOK
	if failure != nil {
		status, rec.ErrorCode = failure.Status, failure.ErrorCode
		if failure.ErrorCode == "" && failure.ErrorMsg == "" {
			s.record(rec, status)
			http.Error(w, http.StatusText(status), status)
			return
		}
		body = errorBody{ErrorCode: failure.ErrorCode, ErrorMsg: failure.ErrorMsg}
	} else if res, cerr := s.getPassword(r, q, rec); cerr != nil {
		status, rec.ErrorCode = cerr.status, cerr.code
		body = errorBody{ErrorCode: cerr.code, ErrorMsg: cerr.msg}
	} else {
		body = res
	}
	s.record(rec, status)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

func (s *Server) record(rec Request, status int) {
	rec.Status = status
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, rec)
}

// errorBody is the documented error object.
type errorBody struct {
	ErrorCode string `json:"ErrorCode"`
	ErrorMsg  string `json:"ErrorMsg"`
}

// getPassword applies the checks of the web service in the order a CCP
// does: request syntax, application, authentication, then the search.
func (s *Server) getPassword(r *http.Request, q params, rec Request) (map[string]any, *ccpError) {
	appID := rec.AppID
	if appID == "" {
		return nil, &ccpError{http.StatusBadRequest, "AIMWS031E", "Invalid request. The AppID parameter is required."}
	}
	crit, cerr := criteria(q)
	if cerr != nil {
		return nil, cerr
	}
	regexpFormat, cerr := queryFormat(q.get("QueryFormat"))
	if cerr != nil {
		return nil, cerr
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	app, ok := s.apps[strings.ToLower(appID)]
	if !ok {
		return nil, &ccpError{http.StatusForbidden, "APPAP008E",
			fmt.Sprintf("Problem occurred while trying to use user [%s] in the Vault. ITATS982E User %s is not defined.", appID, appID)}
	}
	if reason := authenticate(app, r); reason != "" {
		return nil, &ccpError{http.StatusForbidden, "APPAP306E",
			fmt.Sprintf("Authentication error for App ID [%s]. Reason: APPAP133E Failed to verify application authentication data: %s", app.ID, reason)}
	}
	var matches []*account
	for _, a := range s.accounts {
		if len(app.Safes) > 0 && !slices.ContainsFunc(app.Safes, func(x string) bool { return strings.EqualFold(x, a.safe) }) {
			continue
		}
		ok, err := a.matches(crit, regexpFormat)
		if err != nil {
			return nil, &ccpError{http.StatusBadRequest, "AIMWS030E", "Invalid query format: " + err.Error()}
		}
		if ok {
			matches = append(matches, a)
		}
	}
	query := queryText(crit)
	switch {
	case len(matches) == 0:
		return nil, &ccpError{http.StatusNotFound, "APPAP004E", fmt.Sprintf(
			"Password object matching query [%s] was not found (Diagnostic Info: 5). Please check that there is a password object that answers your query in the Vault and that both the Provider and the application user have the appropriate permissions needed in order to use the password.", query)}
	case len(matches) > 1:
		return nil, &ccpError{http.StatusBadRequest, "APPAP227E", fmt.Sprintf(
			"Too many password objects matching query [%s] were found (Diagnostic Info: 41). Please make the query more specific.", query)}
	}
	a := matches[0]
	if a.changing && strings.EqualFold(q.get("FailRequestOnPasswordChange"), "true") {
		return nil, &ccpError{http.StatusInternalServerError, "APPAP282E",
			fmt.Sprintf("Password [%s] is currently being changed by the CPM.", a.object)}
	}
	out := map[string]any{
		"Content":                 "",
		"CreationMethod":          "PVWA",
		"PasswordChangeInProcess": "False",
	}
	for k, v := range a.props {
		out[k] = v
	}
	out["Safe"], out["Folder"], out["Name"] = a.safe, a.folder, a.object
	if a.changing {
		out["PasswordChangeInProcess"] = "True"
	}
	return out, nil
}

// authenticate returns why the request may not act as app, or "".
func authenticate(app App, r *http.Request) string {
	if len(app.AllowedMachines) > 0 {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		if !slices.Contains(app.AllowedMachines, host) {
			return fmt.Sprintf("Address %q is unauthorized", host)
		}
	}
	if len(app.CertificateSerials) > 0 {
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
			return "no client certificate was presented"
		}
		sn := r.TLS.PeerCertificates[0].SerialNumber.Text(16)
		if !slices.ContainsFunc(app.CertificateSerials, func(x string) bool { return strings.EqualFold(x, sn) }) {
			return fmt.Sprintf("CertificateSN %q is unauthorized", sn)
		}
	}
	return ""
}

// criteria returns the search criteria of a request: those of Query when it
// is given, else the search parameters with Folder defaulting to Root.
func criteria(q params) ([]criterion, *ccpError) {
	var out []criterion
	if query := q.get("Query"); query != "" {
		for part := range strings.SplitSeq(query, ";") {
			if strings.TrimSpace(part) == "" {
				continue
			}
			name, value, ok := strings.Cut(part, "=")
			if !ok || strings.TrimSpace(name) == "" {
				return nil, &ccpError{http.StatusBadRequest, "AIMWS030E", fmt.Sprintf("Invalid query format. [%s] is not a Property=Value pair.", part)}
			}
			out = append(out, criterion{strings.TrimSpace(name), value})
		}
	} else {
		for _, name := range searchParams {
			if v := q.get(name); v != "" {
				out = append(out, criterion{name, v})
			}
		}
		if len(out) > 0 && q.get("Folder") == "" {
			out = append(out, criterion{"Folder", "Root"})
		}
	}
	if len(out) == 0 {
		return nil, &ccpError{http.StatusBadRequest, "AIMWS030E",
			"Invalid query format. The request must contain the AppID and at least one other search parameter."}
	}
	return out, nil
}

// queryFormat reports whether QueryFormat asks for regular expressions.
func queryFormat(v string) (bool, *ccpError) {
	switch strings.ToLower(v) {
	case "", "exact":
		return false, nil
	case "regexp":
		return true, nil
	}
	return false, &ccpError{http.StatusBadRequest, "AIMWS030E", fmt.Sprintf("Invalid query format. QueryFormat [%s] is not Exact or Regexp.", v)}
}

// matches reports whether a meets every criterion: exactly and
// case-insensitively, or as an anchored regular expression.
func (a *account) matches(crit []criterion, re bool) (bool, error) {
	for _, c := range crit {
		got, ok := a.property(c.name)
		if !ok {
			return false, nil
		}
		if re {
			m, err := regexp.MatchString("^(?i:"+c.value+")$", got)
			if err != nil {
				return false, fmt.Errorf("%s is not a valid regular expression", c.name)
			}
			if !m {
				return false, nil
			}
		} else if !strings.EqualFold(got, c.value) {
			return false, nil
		}
	}
	return true, nil
}

// property returns the value of a search property of a.
func (a *account) property(name string) (string, bool) {
	switch strings.ToLower(name) {
	case "safe":
		return a.safe, true
	case "folder":
		return a.folder, true
	case "object", "name":
		return a.object, true
	}
	for k, v := range a.props {
		if strings.EqualFold(k, name) && !strings.EqualFold(k, "Content") {
			return v, true
		}
	}
	return "", false
}

// queryText renders criteria as CyberArk prints a query in messages.
func queryText(crit []criterion) string {
	parts := make([]string, len(crit))
	for i, c := range crit {
		parts[i] = c.name + "=" + c.value
	}
	return strings.Join(parts, ";")
}

// params looks query parameters up case-insensitively.
type params url.Values

func (p params) get(name string) string {
	for k, v := range p {
		if strings.EqualFold(k, name) && len(v) > 0 {
			return v[0]
		}
	}
	return ""
}
