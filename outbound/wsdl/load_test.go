package wsdl_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/mtlsrelay/mtlsrelay/outbound/wsdl"
)

// httpFetch is a Fetch over an HTTP client, recording the URLs it read.
type httpFetch struct {
	client *http.Client
	mu     sync.Mutex
	urls   []string
}

func (f *httpFetch) fetch(ctx context.Context, url string) ([]byte, error) {
	f.mu.Lock()
	f.urls = append(f.urls, url)
	f.mu.Unlock()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP %s", resp.Status)
	}
	return io.ReadAll(io.LimitReader(resp.Body, wsdl.MaxDocumentSize+1))
}

// TestLoadOverHTTPS serves the import set (wsdl:import, xsd:import,
// xsd:include, an import cycle) from an HTTPS server and reads it through a
// Fetch: the result must be what reading the files gives, each document
// read once.
func TestLoadOverHTTPS(t *testing.T) {
	srv := httptest.NewTLSServer(http.FileServer(http.Dir(filepath.Join("testdata", "imports"))))
	defer srv.Close()
	f := &httpFetch{client: srv.Client()}
	got, err := wsdl.Load(context.Background(), srv.URL+"/billing.wsdl", f.fetch)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want, err := wsdl.Load(context.Background(), filepath.Join("testdata", "imports", "billing.wsdl"), nil)
	if err != nil {
		t.Fatalf("Load from files: %v", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("over HTTPS:\n%+v\nfrom files:\n%+v", got, want)
	}
	slices.Sort(f.urls)
	var paths []string
	for _, u := range f.urls {
		paths = append(paths, strings.TrimPrefix(u, srv.URL))
	}
	wantPaths := []string{"/bill-invoice.xsd", "/bill.xsd", "/billing-abstract.wsdl", "/billing.wsdl", "/cmn.xsd"}
	if !reflect.DeepEqual(paths, wantPaths) {
		t.Errorf("fetched %v, want each document once: %v", paths, wantPaths)
	}
	_, op, err := got.Find("SendInvoice", "")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(op.Input, `<ns1:city>string</ns1:city>`) || !strings.Contains(op.Input, `xmlns:ns1="http://example.com/common"`) {
		t.Errorf("the skeleton should use the imported cmn schema's types: %s", op.Input)
	}
}

// minimal is a WSDL with one doc/literal operation; {IMPORT} is replaced by
// imports.
const minimal = `<?xml version="1.0"?>
<wsdl:definitions xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/" xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/"
  xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:a="urn:a" targetNamespace="urn:a">
 {IMPORT}
 <wsdl:types><xs:schema targetNamespace="urn:a">{SCHEMA}<xs:element name="Req" type="xs:string"/></xs:schema></wsdl:types>
 <wsdl:message name="In"><wsdl:part name="p" element="a:Req"/></wsdl:message>
 <wsdl:portType name="P"><wsdl:operation name="Op"><wsdl:input message="a:In"/></wsdl:operation></wsdl:portType>
 <wsdl:binding name="B" type="a:P"><soap:binding/><wsdl:operation name="Op"><wsdl:input><soap:body use="literal"/></wsdl:input></wsdl:operation></wsdl:binding>
 <wsdl:service name="S"><wsdl:port name="P" binding="a:B"><soap:address location="https://x.example/"/></wsdl:port></wsdl:service>
</wsdl:definitions>`

func minimalWith(imp, schema string) string {
	return strings.NewReplacer("{IMPORT}", imp, "{SCHEMA}", schema).Replace(minimal)
}

func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestLoadHostile(t *testing.T) {
	secret := "TOP-SECRET-CONTENT"
	// A chain of schemas each including the next: one more than allowed.
	chain := map[string]string{"main.wsdl": minimalWith("", `<xs:include schemaLocation="s1.xsd"/>`)}
	for i := 1; i < wsdl.MaxDocuments; i++ {
		chain[fmt.Sprintf("s%d.xsd", i)] = fmt.Sprintf(`<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema"><xs:include schemaLocation="s%d.xsd"/></xs:schema>`, i+1)
	}
	chain[fmt.Sprintf("s%d.xsd", wsdl.MaxDocuments)] = `<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema"/>`
	deep := strings.Repeat("<x>", wsdl.MaxDepth+1) + strings.Repeat("</x>", wsdl.MaxDepth+1)
	big := minimalWith("<!--"+strings.Repeat(secret, wsdl.MaxDocumentSize/len(secret)+1)+"-->", "")

	tests := []struct {
		name    string
		files   map[string]string
		load    string
		wantErr []string // substrings; nil: must load
	}{
		{
			name: "DOCTYPE with an external entity refused",
			files: map[string]string{"main.wsdl": `<?xml version="1.0"?><!DOCTYPE d [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>` +
				strings.Replace(minimalWith("", ""), `<?xml version="1.0"?>`, "", 1)},
			load:    "main.wsdl",
			wantErr: []string{"main.wsdl", "DOCTYPE/ENTITY", "refused"},
		},
		{
			name: "wsdl:import cycle is fine",
			files: map[string]string{
				"main.wsdl":  minimalWith(`<wsdl:import namespace="urn:a" location="other.wsdl"/>`, ""),
				"other.wsdl": `<wsdl:definitions xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/" targetNamespace="urn:a"><wsdl:import namespace="urn:a" location="main.wsdl"/></wsdl:definitions>`,
			},
			load: "main.wsdl",
		},
		{
			name: "xsd:include of itself is fine",
			files: map[string]string{
				"main.wsdl": minimalWith("", `<xs:include schemaLocation="self.xsd"/>`),
				"self.xsd":  `<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema"><xs:include schemaLocation="self.xsd"/></xs:schema>`,
			},
			load: "main.wsdl",
		},
		{
			name:    "more than MaxDocuments documents refused",
			files:   chain,
			load:    "main.wsdl",
			wantErr: []string{fmt.Sprintf("s%d.xsd", wsdl.MaxDocuments), fmt.Sprintf("more than %d documents", wsdl.MaxDocuments)},
		},
		{
			name:    "oversize document refused, content not echoed",
			files:   map[string]string{"main.wsdl": big},
			load:    "main.wsdl",
			wantErr: []string{"main.wsdl", "more than the 4194304 allowed"},
		},
		{
			name:    "deep nesting refused",
			files:   map[string]string{"main.wsdl": deep},
			load:    "main.wsdl",
			wantErr: []string{"main.wsdl", fmt.Sprintf("deeper than %d", wsdl.MaxDepth)},
		},
		{
			name:    "missing import names the file",
			files:   map[string]string{"main.wsdl": minimalWith(`<wsdl:import namespace="urn:b" location="gone.wsdl"/>`, "")},
			load:    "main.wsdl",
			wantErr: []string{"gone.wsdl", "no such file"},
		},
		{
			name:    "not XML: names the file and line, not the content",
			files:   map[string]string{"main.wsdl": "<definitions>\n" + secret + " & more"},
			load:    "main.wsdl",
			wantErr: []string{"main.wsdl", "line 2"},
		},
		{
			name:    "WSDL 2.0 refused",
			files:   map[string]string{"main.wsdl": `<description xmlns="http://www.w3.org/ns/wsdl"/>`},
			load:    "main.wsdl",
			wantErr: []string{"main.wsdl", "WSDL 2.0", "not supported"},
		},
		{
			name:    "unknown binding named",
			files:   map[string]string{"main.wsdl": strings.Replace(minimalWith("", ""), `binding="a:B"`, `binding="a:Nope"`, 1)},
			load:    "main.wsdl",
			wantErr: []string{"main.wsdl", `binding "a:Nope"`},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeFiles(t, tc.files)
			d, err := wsdl.Load(context.Background(), filepath.Join(dir, tc.load), nil)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				if _, _, err := d.Find("Op", ""); err != nil {
					t.Errorf("Find: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Load succeeded, want an error")
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), secret) || len(err.Error()) > 600 {
				t.Errorf("the error echoes document content or is too long (%d bytes): %.300s", len(err.Error()), err)
			}
		})
	}
}

// TestURLMayNotImportFiles: a WSDL read from a URL (partner-controlled) must
// not make Load read a local file, however the file is named; it may import
// other URLs.
func TestURLMayNotImportFiles(t *testing.T) {
	dir := writeFiles(t, map[string]string{"local.xsd": `<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema"/>`})
	local := filepath.Join(dir, "local.xsd")
	for _, ref := range []string{"file://" + local, "file:" + local, `C:\secrets\local.xsd`, "ftp://example.com/x.xsd"} {
		t.Run(ref, func(t *testing.T) {
			mux := http.NewServeMux()
			mux.HandleFunc("/svc.wsdl", func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, minimalWith("", `<xs:import namespace="urn:b" schemaLocation="`+ref+`"/>`))
			})
			srv := httptest.NewTLSServer(mux)
			defer srv.Close()
			f := &httpFetch{client: srv.Client()}
			_, err := wsdl.Load(context.Background(), srv.URL+"/svc.wsdl", f.fetch)
			if err == nil || !strings.Contains(err.Error(), "may only import http(s) URLs") || !strings.Contains(err.Error(), "/svc.wsdl") {
				t.Fatalf("Load = %v, want the file import refused naming the WSDL URL", err)
			}
		})
	}
	t.Run("an absolute path is a URL on the same server", func(t *testing.T) {
		mux := http.NewServeMux()
		mux.HandleFunc("/svc.wsdl", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, minimalWith("", `<xs:import namespace="urn:b" schemaLocation="`+local+`"/>`))
		})
		mux.HandleFunc(local, func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, `<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:b"/>`)
		})
		srv := httptest.NewTLSServer(mux)
		defer srv.Close()
		f := &httpFetch{client: srv.Client()}
		if _, err := wsdl.Load(context.Background(), srv.URL+"/svc.wsdl", f.fetch); err != nil {
			t.Fatalf("Load: %v", err)
		}
		if want := []string{srv.URL + local}; !reflect.DeepEqual(f.urls[1:], want) {
			t.Errorf("fetched %v, want %v", f.urls[1:], want)
		}
	})
}

func TestParseWithoutBaseRefusesImports(t *testing.T) {
	doc := minimalWith(`<wsdl:import namespace="urn:b" location="other.wsdl"/>`, "")
	_, err := wsdl.Parse(context.Background(), []byte(doc), "", nil)
	if err == nil || !strings.Contains(err.Error(), "no base location") {
		t.Fatalf("Parse = %v, want the import refused for lack of a base", err)
	}
	// With a file base, the import resolves next to it.
	dir := writeFiles(t, map[string]string{"other.wsdl": `<wsdl:definitions xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/" targetNamespace="urn:b"/>`})
	if _, err := wsdl.Parse(context.Background(), []byte(doc), filepath.Join(dir, "main.wsdl"), nil); err != nil {
		t.Fatalf("Parse with a base: %v", err)
	}
}

func TestLoadNeedsFetchForURLs(t *testing.T) {
	_, err := wsdl.Load(context.Background(), "https://partner.example/svc?wsdl", nil)
	if err == nil || !strings.Contains(err.Error(), "https://partner.example/svc?wsdl") {
		t.Fatalf("Load = %v, want an error naming the URL", err)
	}
}

func TestLoadCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := wsdl.Load(ctx, filepath.Join("testdata", "imports", "billing.wsdl"), nil)
	if err == nil || !strings.Contains(err.Error(), "canceled") {
		t.Fatalf("Load = %v, want context canceled", err)
	}
}
