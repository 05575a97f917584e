package outbound_test

import (
	"context"
	"crypto/tls"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/mtlsrelay/mtlsrelay/catalog"
	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/outbound"
)

// startMTLSHTTPTest starts an httptest server requiring a client
// certificate from p's client CA, with HTTP/2 on.
func startMTLSHTTPTest(t testing.TB, p *execPKI, h http.Handler) *httptest.Server {
	t.Helper()
	srv := startMTLSHTTPTestUnstarted(t, p, h)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// startMTLSHTTPTestUnstarted prepares an httptest server requiring a client
// certificate from p's client CA, with HTTP/2 on; the caller starts it.
func startMTLSHTTPTestUnstarted(t testing.TB, p *execPKI, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{p.server.TLSCertificate()},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    p.clientCA.Pool(),
	}
	srv.EnableHTTP2 = true
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	return srv
}

func TestAttemptSOAPAgainstPartner(t *testing.T) {
	p := newExecPKI(t)
	srv := startExecPartner(t, p, nil)
	x := newExecutor(t)
	conn := &catalog.Connection{BaseURL: srv.URL(), Profile: "partner-a"}
	mat := execMaterial(p, "v1", nil)
	body := `<m:GetOrder xmlns:m="urn:orders"><m:ID>42</m:ID></m:GetOrder>`
	failBody := `<m:PlaceOrder xmlns:m="urn:orders"><m:Fail>out of stock</m:Fail></m:PlaceOrder>`

	tests := []struct {
		name       string
		call       jobs.Call
		wantStatus int
		wantOK     bool
		wantFault  *jobs.SOAPFault
		wantInBody []string
	}{
		{
			name:       "ok/soap11",
			call:       jobs.Call{Path: "/soap", SOAP: &jobs.SOAP{Version: "1.1", Action: "urn:orders#Get", Header: `<h:Trace xmlns:h="urn:trace">t-1</h:Trace>`, Body: body}},
			wantStatus: 200, wantOK: true,
			wantInBody: []string{"<p:Action>urn:orders#Get</p:Action>", body, "t-1", `xmlns:soap="` + outbound.SOAP11Namespace},
		},
		{
			name:       "ok/soap12",
			call:       jobs.Call{Path: "/soap", SOAP: &jobs.SOAP{Version: "1.2", Action: "urn:orders#Get", Body: body}},
			wantStatus: 200, wantOK: true,
			wantInBody: []string{"<p:Action>urn:orders#Get</p:Action>", body, `xmlns:env="` + outbound.SOAP12Namespace},
		},
		{
			name:       "ok/soap11-default-version-xml-declaration-stripped",
			call:       jobs.Call{Path: "/soap", SOAP: &jobs.SOAP{Body: `<?xml version="1.0"?>` + body}},
			wantStatus: 200, wantOK: true,
			wantInBody: []string{"<p:Action></p:Action>", body},
		},
		{
			name:       "fail/soap11-fault",
			call:       jobs.Call{Path: "/soap", SOAP: &jobs.SOAP{Version: "1.1", Action: "urn:orders#Place", Body: failBody}},
			wantStatus: 500,
			wantFault:  &jobs.SOAPFault{Code: "soap:Server", Reason: "out of stock", Detail: `<p:FailDetail xmlns:p="urn:mtlsrelay:partner">out of stock</p:FailDetail>`},
		},
		{
			name:       "fail/soap12-fault",
			call:       jobs.Call{Path: "/soap", SOAP: &jobs.SOAP{Version: "1.2", Action: "urn:orders#Place", Body: failBody}},
			wantStatus: 500,
			wantFault:  &jobs.SOAPFault{Code: "env:Receiver / p:RequestedFailure", Reason: "out of stock", Detail: `<p:FailDetail xmlns:p="urn:mtlsrelay:partner">out of stock</p:FailDetail>`},
		},
		{
			name:       "fail/soap11-fault-mtom",
			call:       jobs.Call{Path: "/soap?mtom=1", SOAP: &jobs.SOAP{Version: "1.1", Body: failBody}},
			wantStatus: 500,
			wantFault:  &jobs.SOAPFault{Code: "soap:Server", Reason: "out of stock", Detail: `<p:FailDetail xmlns:p="urn:mtlsrelay:partner">out of stock</p:FailDetail>`},
		},
		{
			name:       "fail/soap12-fault-mtom",
			call:       jobs.Call{Path: "/soap?mtom=1", SOAP: &jobs.SOAP{Version: "1.2", Body: failBody}},
			wantStatus: 500,
			wantFault:  &jobs.SOAPFault{Code: "env:Receiver / p:RequestedFailure", Reason: "out of stock", Detail: `<p:FailDetail xmlns:p="urn:mtlsrelay:partner">out of stock</p:FailDetail>`},
		},
		{
			name:       "ok/soap12-mtom",
			call:       jobs.Call{Path: "/soap?mtom=1", SOAP: &jobs.SOAP{Version: "1.2", Action: "urn:a", Body: body}},
			wantStatus: 200, wantOK: true,
			wantInBody: []string{"<p:Action>urn:a</p:Action>"},
		},
		{
			// The call's Content-Type wins over the one the version implies:
			// the partner then reads a 1.1 envelope as 1.2 and says so.
			name: "fail/soap-call-header-overrides-content-type",
			call: jobs.Call{Path: "/soap", Headers: map[string][]string{"content-type": {`application/soap+xml; charset=utf-8; action="urn:x"`}},
				SOAP: &jobs.SOAP{Version: "1.1", Body: body}},
			wantStatus: 500,
			wantFault:  &jobs.SOAPFault{Code: "env:VersionMismatch", Reason: `the envelope namespace "http://schemas.xmlsoap.org/soap/envelope/" does not match SOAP 1.2`},
		},
		{
			name:       "fail/rest-call-reads-soap-fault",
			call:       jobs.Call{Method: "POST", Path: "/soap", Headers: map[string][]string{"Content-Type": {"text/xml"}, "SOAPAction": {`""`}}, Body: `<s:Envelope xmlns:s="` + outbound.SOAP11Namespace + `"><s:Body>` + failBody + `</s:Body></s:Envelope>`},
			wantStatus: 500,
			wantFault:  &jobs.SOAPFault{Code: "soap:Server", Reason: "out of stock", Detail: `<p:FailDetail xmlns:p="urn:mtlsrelay:partner">out of stock</p:FailDetail>`},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := x.Attempt(context.Background(), restCall(t, tc.call), conn, mat)
			res := out.Result
			if res.Error != nil {
				t.Fatalf("error = %v", res.Error)
			}
			if res.Status != tc.wantStatus || res.OK != tc.wantOK {
				t.Fatalf("status %d ok %v, want %d %v; body %q", res.Status, res.OK, tc.wantStatus, tc.wantOK, res.Body)
			}
			if tc.wantFault == nil && res.SOAPFault != nil {
				t.Fatalf("unexpected fault %+v", res.SOAPFault)
			}
			if tc.wantFault != nil && (res.SOAPFault == nil || *res.SOAPFault != *tc.wantFault) {
				t.Fatalf("fault = %+v, want %+v", res.SOAPFault, tc.wantFault)
			}
			got := string(res.ResponseBody())
			for _, s := range tc.wantInBody {
				if !strings.Contains(got, s) {
					t.Errorf("response %q lacks %q", got, s)
				}
			}
		})
	}
}

// TestAttemptSOAPWireFormat checks the exact request a SOAP call makes.
func TestAttemptSOAPWireFormat(t *testing.T) {
	p := newExecPKI(t)
	var mu sync.Mutex
	var gotHeader http.Header
	var gotBody string
	srv := startMTLSHTTPTest(t, p, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		gotHeader, gotBody = r.Header.Clone(), string(b)
		mu.Unlock()
		w.Header().Set("Content-Type", "text/xml")
		io.WriteString(w, `<e:Envelope xmlns:e="`+outbound.SOAP11Namespace+`"><e:Body><ok/></e:Body></e:Envelope>`)
	}))
	x := newExecutor(t)
	conn := &catalog.Connection{BaseURL: srv.URL, Profile: "partner-a"}

	tests := []struct {
		name            string
		soap            jobs.SOAP
		headers         map[string][]string
		wantContentType string
		wantAction      []string
		wantEnvelope    string
	}{
		{
			name:            "ok/soap11-headers",
			soap:            jobs.SOAP{Version: "1.1", Action: "urn:a#B", Body: "<b/>"},
			wantContentType: "text/xml; charset=utf-8",
			wantAction:      []string{`"urn:a#B"`},
			wantEnvelope:    `<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><b/></soap:Body></soap:Envelope>`,
		},
		{
			name:            "ok/soap11-empty-action-quoted",
			soap:            jobs.SOAP{Version: "1.1", Header: "<h/>", Body: "<b/>"},
			wantContentType: "text/xml; charset=utf-8",
			wantAction:      []string{`""`},
			wantEnvelope:    `<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Header><h/></soap:Header><soap:Body><b/></soap:Body></soap:Envelope>`,
		},
		{
			name:            "ok/soap12-action-parameter",
			soap:            jobs.SOAP{Version: "1.2", Action: "urn:a#B", Body: "<b/>"},
			wantContentType: `application/soap+xml; charset=utf-8; action="urn:a#B"`,
			wantEnvelope:    `<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="http://www.w3.org/2003/05/soap-envelope"><soap:Body><b/></soap:Body></soap:Envelope>`,
		},
		{
			name:            "ok/soap11-action-overridden",
			soap:            jobs.SOAP{Version: "1.1", Action: "urn:a#B", Body: "<b/>"},
			headers:         map[string][]string{"SOAPAction": {`"urn:other"`}},
			wantContentType: "text/xml; charset=utf-8",
			wantAction:      []string{`"urn:other"`},
			wantEnvelope:    `<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><b/></soap:Body></soap:Envelope>`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			soap := tc.soap
			out := x.Attempt(context.Background(), restCall(t, jobs.Call{SOAP: &soap, Headers: tc.headers}), conn, execMaterial(p, "v1", nil))
			if !out.Result.OK {
				t.Fatalf("result: %+v", out.Result)
			}
			mu.Lock()
			defer mu.Unlock()
			if ct := gotHeader.Get("Content-Type"); ct != tc.wantContentType {
				t.Errorf("Content-Type = %q, want %q", ct, tc.wantContentType)
			}
			if a := gotHeader.Values("Soapaction"); strings.Join(a, ",") != strings.Join(tc.wantAction, ",") {
				t.Errorf("SOAPAction = %q, want %q", a, tc.wantAction)
			}
			if gotBody != tc.wantEnvelope {
				t.Errorf("envelope =\n%s\nwant\n%s", gotBody, tc.wantEnvelope)
			}
		})
	}
}

// TestAttemptSOAPFaultParsing feeds canned responses of SOAP stacks.
func TestAttemptSOAPFaultParsing(t *testing.T) {
	const ns11, ns12 = outbound.SOAP11Namespace, outbound.SOAP12Namespace
	canned := map[string]struct {
		status      int
		contentType string
		body        string
	}{
		"/fault11-prefix-S": {500, "text/xml; charset=utf-8",
			`<?xml version="1.0"?><S:Envelope xmlns:S="` + ns11 + `"><S:Header><x>1</x></S:Header><S:Body><S:Fault><faultcode>S:Client</faultcode><faultstring>Invalid order id</faultstring><detail><e:Err xmlns:e="urn:e"><e:Code>E42</e:Code></e:Err></detail></S:Fault></S:Body></S:Envelope>`},
		"/fault11-in-200":         {200, "text/xml", `<soapenv:Envelope xmlns:soapenv="` + ns11 + `"><soapenv:Body><soapenv:Fault><faultcode>soapenv:Server</faultcode><faultstring>backend down</faultstring></soapenv:Fault></soapenv:Body></soapenv:Envelope>`},
		"/fault12-default-ns":     {500, "application/soap+xml", `<Envelope xmlns="` + ns12 + `"><Body><Fault><Code><Value>Sender</Value><Subcode><Value>m:BadId</Value><Subcode><Value>m:TooLong</Value></Subcode></Subcode></Code><Reason><Text xml:lang="de">Ungültig</Text><Text xml:lang="en">Invalid</Text></Reason><Detail><m:Info xmlns:m="urn:m">x</m:Info></Detail></Fault></Body></Envelope>`},
		"/fault11-latin1":         {500, "text/xml; charset=iso-8859-1", "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><s:Envelope xmlns:s=\"" + ns11 + "\"><s:Body><s:Fault><faultcode>s:Server</faultcode><faultstring>Fehler f\xfcr Bestellung</faultstring></s:Fault></s:Body></s:Envelope>"},
		"/no-fault-mentions-word": {200, "text/xml", `<s:Envelope xmlns:s="` + ns11 + `"><s:Body><r>Fault tolerance is on</r></s:Body></s:Envelope>`},
		"/fault-outside-body":     {500, "text/xml", `<s:Envelope xmlns:s="` + ns11 + `"><s:Header><s:Fault><faultcode>x</faultcode></s:Fault></s:Header><s:Body><ok/></s:Body></s:Envelope>`},
		"/not-soap-namespace":     {500, "text/xml", `<s:Envelope xmlns:s="urn:other"><s:Body><s:Fault><faultcode>x</faultcode></s:Fault></s:Body></s:Envelope>`},
		"/broken-xml":             {500, "text/xml", `<s:Envelope xmlns:s="` + ns11 + `"><s:Body><s:Fault><faultcode>`},
		"/json-500":               {500, "application/json", `{"Fault":"not xml"}`},
	}
	p := newExecPKI(t)
	srv := startMTLSHTTPTest(t, p, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := canned[r.URL.Path]
		w.Header().Set("Content-Type", c.contentType)
		w.WriteHeader(c.status)
		io.WriteString(w, c.body)
	}))
	x := newExecutor(t)
	conn := &catalog.Connection{BaseURL: srv.URL, Profile: "partner-a"}

	tests := []struct {
		name      string
		path      string
		soap      bool
		wantFault *jobs.SOAPFault
	}{
		{name: "fail/fault11-any-prefix", path: "/fault11-prefix-S", soap: true, wantFault: &jobs.SOAPFault{Code: "S:Client", Reason: "Invalid order id", Detail: `<e:Err xmlns:e="urn:e"><e:Code>E42</e:Code></e:Err>`}},
		{name: "fail/fault11-in-200", path: "/fault11-in-200", soap: true, wantFault: &jobs.SOAPFault{Code: "soapenv:Server", Reason: "backend down"}},
		{name: "fail/fault12-subcodes-first-reason", path: "/fault12-default-ns", soap: true, wantFault: &jobs.SOAPFault{Code: "Sender / m:BadId / m:TooLong", Reason: "Ungültig", Detail: `<m:Info xmlns:m="urn:m">x</m:Info>`}},
		{name: "fail/fault11-latin1", path: "/fault11-latin1", soap: true, wantFault: &jobs.SOAPFault{Code: "s:Server", Reason: "Fehler für Bestellung"}},
		{name: "fail/fault-read-for-rest-call", path: "/fault11-in-200", wantFault: &jobs.SOAPFault{Code: "soapenv:Server", Reason: "backend down"}},
		{name: "ok/word-fault-is-not-a-fault", path: "/no-fault-mentions-word", soap: true},
		{name: "ok/fault-outside-body-ignored", path: "/fault-outside-body", soap: true},
		{name: "ok/other-namespace-ignored", path: "/not-soap-namespace", soap: true},
		{name: "ok/broken-xml-no-fault", path: "/broken-xml", soap: true},
		{name: "ok/json-no-fault", path: "/json-500"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := jobs.Call{Method: "POST", Path: tc.path}
			if tc.soap {
				c.SOAP = &jobs.SOAP{Body: "<q/>"}
			}
			out := x.Attempt(context.Background(), restCall(t, c), conn, execMaterial(p, "v1", nil))
			res := out.Result
			want := canned[tc.path]
			if res.Error != nil || res.Status != want.status {
				t.Fatalf("status %d error %v", res.Status, res.Error)
			}
			if tc.wantFault == nil {
				if res.SOAPFault != nil {
					t.Fatalf("unexpected fault %+v", res.SOAPFault)
				}
				if res.OK != (want.status == 200) {
					t.Fatalf("ok = %v for status %d without fault", res.OK, want.status)
				}
				return
			}
			if res.SOAPFault == nil || *res.SOAPFault != *tc.wantFault {
				t.Fatalf("fault = %+v, want %+v", res.SOAPFault, tc.wantFault)
			}
			if res.OK {
				t.Fatal("ok = true with a fault")
			}
		})
	}
}
