package fakeccp_test

import (
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/mtlsrelay/mtlsrelay/internal/fakeccp"
	"github.com/mtlsrelay/mtlsrelay/internal/pki"
)

// fixture is a running fake CCP that requires client certificates from ca,
// and an HTTP client presenting client.
type fixture struct {
	ccp    *fakeccp.Server
	ca     *pki.CA
	client *pki.Leaf
	http   *http.Client
}

func start(t *testing.T) *fixture {
	t.Helper()
	ca, err := pki.NewCA("fake CCP test CA")
	if err != nil {
		t.Fatal(err)
	}
	srvLeaf, err := ca.Issue(pki.LeafOptions{CommonName: "ccp", Server: true, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}})
	if err != nil {
		t.Fatal(err)
	}
	client, err := ca.Issue(pki.LeafOptions{CommonName: "mtlsrelay-ccp-client", Client: true})
	if err != nil {
		t.Fatal(err)
	}
	ccp, err := fakeccp.Start(fakeccp.Options{Certificate: srvLeaf.TLSCertificate(), ClientCAs: ca.Pool()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ccp.Close() })
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{client.TLSCertificate()}}}
	t.Cleanup(tr.CloseIdleConnections)
	ccp.AddApp(fakeccp.App{ID: "mtlsrelay", CertificateSerials: []string{client.SerialHex()}})
	ccp.AddApp(fakeccp.App{ID: "other-cert", CertificateSerials: []string{"abcdef"}})
	ccp.AddApp(fakeccp.App{ID: "billing-only", Safes: []string{"Billing"}})
	ccp.AddApp(fakeccp.App{ID: "far-away", AllowedMachines: []string{"10.1.2.3"}})
	ccp.Add("Partners", "", "partner-a", map[string]string{"Content": "pw-a", "UserName": "shared", "Address": "a.example", "Team": "payments"})
	ccp.Add("Partners", "Root", "partner-b", map[string]string{"Content": "pw-b", "UserName": "shared"})
	ccp.Add("Partners", "Sub", "partner-a", map[string]string{"Content": "pw-sub"})
	ccp.Add("Billing", "", "billing-1", map[string]string{"Content": "pw-billing"})
	return &fixture{ccp: ccp, ca: ca, client: client, http: &http.Client{Transport: tr}}
}

// get requests the web service with query and decodes the JSON answer.
func (f *fixture) get(t *testing.T, path, query string) (int, map[string]any) {
	t.Helper()
	resp, err := f.http.Get(f.ccp.URL() + path + "?" + query)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatalf("answer is not JSON: %v: %s", err, body)
		}
	}
	return resp.StatusCode, m
}

func q(kv ...string) string {
	v := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Set(kv[i], kv[i+1])
	}
	return v.Encode()
}

func TestGetPassword(t *testing.T) {
	f := start(t)
	f.ccp.SetPasswordChangeInProcess("Partners", "", "partner-b", true)
	for _, tc := range []struct {
		name        string
		path, query string
		status      int
		code        string
		content     string
	}{
		{"ok/object", fakeccp.Path, q("AppID", "mtlsrelay", "Safe", "Partners", "Object", "partner-a"), 200, "", "pw-a"},
		{"ok/case-insensitive-params", "/aimwebservice/api/accounts", q("appid", "MTLSRELAY", "safe", "partners", "object", "PARTNER-A"), 200, "", "pw-a"},
		{"ok/folder", fakeccp.Path, q("AppID", "mtlsrelay", "Safe", "Partners", "Folder", "Sub", "Object", "partner-a"), 200, "", "pw-sub"},
		{"ok/query", fakeccp.Path, q("AppID", "mtlsrelay", "Query", "Safe=Partners;Folder=Root;Object=partner-a"), 200, "", "pw-a"},
		{"ok/query-property", fakeccp.Path, q("AppID", "mtlsrelay", "Query", "Safe=Partners;Team=payments"), 200, "", "pw-a"},
		{"ok/regexp", fakeccp.Path, q("AppID", "mtlsrelay", "Query", "Safe=Partners;Object=partner-b.*", "QueryFormat", "Regexp"), 200, "", "pw-b"},
		{"ok/changing-not-failing", fakeccp.Path, q("AppID", "mtlsrelay", "Safe", "Partners", "Object", "partner-b"), 200, "", "pw-b"},
		{"fail/no-appid", fakeccp.Path, q("Safe", "Partners", "Object", "partner-a"), 400, "AIMWS031E", ""},
		{"fail/appid-only", fakeccp.Path, q("AppID", "mtlsrelay"), 400, "AIMWS030E", ""},
		{"fail/bad-query-format", fakeccp.Path, q("AppID", "mtlsrelay", "Safe", "Partners", "Object", "partner-a", "QueryFormat", "Fuzzy"), 400, "AIMWS030E", ""},
		{"fail/bad-regexp", fakeccp.Path, q("AppID", "mtlsrelay", "Query", "Object=(", "QueryFormat", "Regexp"), 400, "AIMWS030E", ""},
		{"fail/too-many", fakeccp.Path, q("AppID", "mtlsrelay", "Safe", "Partners", "UserName", "shared"), 400, "APPAP227E", ""},
		{"fail/unknown-app", fakeccp.Path, q("AppID", "nobody", "Safe", "Partners", "Object", "partner-a"), 403, "APPAP008E", ""},
		{"fail/app-cert-not-allowed", fakeccp.Path, q("AppID", "other-cert", "Safe", "Partners", "Object", "partner-a"), 403, "APPAP306E", ""},
		{"fail/app-machine-not-allowed", fakeccp.Path, q("AppID", "far-away", "Safe", "Partners", "Object", "partner-a"), 403, "APPAP306E", ""},
		{"fail/not-found", fakeccp.Path, q("AppID", "mtlsrelay", "Safe", "Partners", "Object", "nope"), 404, "APPAP004E", ""},
		{"fail/not-safe-member", fakeccp.Path, q("AppID", "billing-only", "Safe", "Partners", "Object", "partner-a"), 404, "APPAP004E", ""},
		{"fail/changing", fakeccp.Path, q("AppID", "mtlsrelay", "Safe", "Partners", "Object", "partner-b", "FailRequestOnPasswordChange", "true"), 500, "APPAP282E", ""},
		{"fail/other-path", "/PasswordVault/api/Accounts", q("AppID", "mtlsrelay"), 404, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, m := f.get(t, tc.path, tc.query)
			if status != tc.status {
				t.Fatalf("status %d, want %d: %v", status, tc.status, m)
			}
			if tc.code != "" {
				if m["ErrorCode"] != tc.code || m["ErrorMsg"] == "" {
					t.Fatalf("error %v, want ErrorCode %s and an ErrorMsg", m, tc.code)
				}
				for _, v := range m {
					if s, _ := v.(string); strings.HasPrefix(s, "pw-") {
						t.Errorf("error answer holds a password: %v", m)
					}
				}
			}
			if tc.content != "" && m["Content"] != tc.content {
				t.Fatalf("Content %v, want %q", m["Content"], tc.content)
			}
		})
	}
	t.Run("ok/fields", func(t *testing.T) {
		_, m := f.get(t, fakeccp.Path, q("AppID", "mtlsrelay", "Safe", "Partners", "Object", "partner-a", "Reason", "test"))
		want := map[string]any{"Content": "pw-a", "UserName": "shared", "Address": "a.example", "Team": "payments",
			"Safe": "Partners", "Folder": "Root", "Name": "partner-a", "PasswordChangeInProcess": "False", "CreationMethod": "PVWA"}
		for k, v := range want {
			if m[k] != v {
				t.Errorf("%s = %v, want %v", k, m[k], v)
			}
		}
		reqs := f.ccp.Requests()
		last := reqs[len(reqs)-1]
		if last.Reason != "test" || last.ClientSerial != f.client.SerialHex() || last.Status != 200 || last.Folder != "" {
			t.Errorf("recorded %+v", last)
		}
	})
	t.Run("ok/change-in-process-flag", func(t *testing.T) {
		_, m := f.get(t, fakeccp.Path, q("AppID", "mtlsrelay", "Safe", "Partners", "Object", "partner-b"))
		if m["PasswordChangeInProcess"] != "True" {
			t.Errorf("PasswordChangeInProcess = %v, want True", m["PasswordChangeInProcess"])
		}
	})
	t.Run("ok/rotate-and-remove", func(t *testing.T) {
		f.ccp.Add("Billing", "Root", "billing-1", map[string]string{"Content": "pw-billing-2"})
		if _, m := f.get(t, fakeccp.Path, q("AppID", "mtlsrelay", "Safe", "Billing", "Object", "billing-1")); m["Content"] != "pw-billing-2" {
			t.Errorf("after rotation Content = %v", m["Content"])
		}
		f.ccp.Remove("Billing", "", "billing-1")
		if status, _ := f.get(t, fakeccp.Path, q("AppID", "mtlsrelay", "Safe", "Billing", "Object", "billing-1")); status != 404 {
			t.Errorf("after removal status %d, want 404", status)
		}
	})
	t.Run("fail/injected", func(t *testing.T) {
		f.ccp.SetFailure(&fakeccp.Failure{Status: 400, ErrorCode: "APPAP007E", ErrorMsg: "Connection to the Vault has failed."})
		status, m := f.get(t, fakeccp.Path, q("AppID", "mtlsrelay", "Safe", "Partners", "Object", "partner-a"))
		if status != 400 || m["ErrorCode"] != "APPAP007E" {
			t.Errorf("got %d %v", status, m)
		}
		f.ccp.SetFailure(&fakeccp.Failure{Status: 503})
		if status, m := f.get(t, fakeccp.Path, q("AppID", "mtlsrelay", "Safe", "Partners", "Object", "partner-a")); status != 503 || m != nil {
			t.Errorf("got %d %v, want a plain 503", status, m)
		}
		f.ccp.SetFailure(nil)
	})
}

func TestClientCertificateRequired(t *testing.T) {
	f := start(t)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: f.ca.Pool()}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get(f.ccp.URL() + fakeccp.Path + "?" + q("AppID", "mtlsrelay", "Safe", "Partners", "Object", "partner-a"))
	if err == nil {
		resp.Body.Close()
		t.Fatalf("a client without a certificate got HTTP %d, want a failed handshake", resp.StatusCode)
	}
	if !strings.Contains(err.Error(), "certificate required") {
		t.Errorf("error %v, want the certificate_required alert", err)
	}
}
