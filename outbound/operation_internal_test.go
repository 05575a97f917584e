package outbound

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mtlsrelay/mtlsrelay/catalog"
	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/outbound/wsdl"
)

// A retryable WSDL failure is cached for wsdlRetryFailTTL only, so that the
// call's retry fetches again; another failure for wsdlFailTTL.
func TestWSDLCacheRetryableFailureShort(t *testing.T) {
	var c wsdlCache
	for _, tt := range []struct {
		code jobs.Code
		ttl  time.Duration
	}{{jobs.CodeConnectFailed, wsdlRetryFailTTL}, {jobs.CodeInvalidCall, wsdlFailTTL}} {
		key := wsdlKey{"c", string(tt.code)}
		start := time.Now()
		_, jerr := c.get(context.Background(), key, func(context.Context) (*wsdl.Description, *jobs.Error) {
			return nil, jobs.Errorf(tt.code, "down")
		})
		if jerr == nil || jerr.Code != tt.code {
			t.Fatalf("err %v", jerr)
		}
		c.mu.Lock()
		until := c.entries[key].until
		c.mu.Unlock()
		if d := until.Sub(start); d > tt.ttl+time.Second || d < tt.ttl-time.Second {
			t.Errorf("%s cached for %s, want %s", tt.code, d, tt.ttl)
		}
	}
	if wsdlRetryFailTTL > time.Second {
		t.Errorf("retryable failures cached for %s", wsdlRetryFailTTL)
	}
}

// The first caller waits for the fetch it started only as long as its own
// ctx allows, as the others do.
func TestWSDLCacheFirstCallerRespectsContext(t *testing.T) {
	var c wsdlCache
	release := make(chan struct{})
	defer close(release)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, jerr := c.get(ctx, wsdlKey{"c", "l"}, func(context.Context) (*wsdl.Description, *jobs.Error) {
		<-release // the partner never answers within the test
		return nil, jobs.Errorf(jobs.CodeTimeout, "late")
	})
	if jerr == nil || jerr.Code != jobs.CodeTimeout {
		t.Fatalf("err %v, want timeout", jerr)
	}
}

// A deadline passing while the WSDL is read is a retryable timeout, not
// invalid_call.
func TestConnectionWSDLDeadlineIsTimeout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "svc.wsdl")
	if err := os.WriteFile(path, []byte(`<definitions xmlns="http://schemas.xmlsoap.org/wsdl/"/>`), 0o600); err != nil {
		t.Fatal(err)
	}
	x := NewExecutor(ExecutorOptions{})
	defer x.Close()
	conn := &catalog.Connection{BaseURL: "https://partner.example/svc", WSDL: "file:" + path}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, jerr := x.ConnectionWSDL(ctx, LaneQueued, "c", conn, nil, true)
	if jerr == nil || jerr.Code != jobs.CodeTimeout || !jerr.Retryable {
		t.Fatalf("err %+v, want a retryable timeout", jerr)
	}
}

// WSDL documents on base_url's host obey a call's url rules (under
// base_url's path, base_url's query not overridden) before anything is
// fetched with the connection's credentials; errors do not show query
// values or passwords.
func TestWSDLFetchObeysCallURLRules(t *testing.T) {
	x := NewExecutor(ExecutorOptions{})
	defer x.Close()
	conn := &catalog.Connection{BaseURL: "https://127.0.0.1:1/OrderApp?tenant=a"}
	fetch := x.wsdlFetcher(LaneQueued, "c", conn, nil)
	for _, tt := range []struct{ url, want string }{
		{"https://127.0.0.1:1/admin/secret.xsd?token=s3cret", "leaves"},
		{"https://127.0.0.1:1/OrderApp/x.xsd?tenant=b", "sets a query parameter"},
		{"https://user:pw@other.example/x.xsd", "does not allow"},
	} {
		_, err := fetch(context.Background(), tt.url)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err %v, want %q", tt.url, err, tt.want)
			continue
		}
		if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "pw@") {
			t.Errorf("%s: the error shows a secret: %v", tt.url, err)
		}
	}
}
