package jobs_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/mtlsrelay/mtlsrelay/jobs"
)

// EncodeResult uses a faster JSON codec than encoding/json; flows read its
// output with whatever they have, so it must be byte for byte what
// encoding/json writes.
func TestEncodeResultMatchesEncodingJSON(t *testing.T) {
	at := time.Date(2026, 11, 29, 14, 0, 0, 123456789, time.UTC)
	binary := &jobs.Result{ID: "b", Connection: "c", Status: 200, OK: true}
	binary.SetBody([]byte{0xff, 0x00, 0xfe})
	for name, r := range map[string]*jobs.Result{
		"ok/text-with-html-and-unicode": {
			ID: "order-42", Connection: "partner-a", Metadata: map[string]string{"z": "1", "a": "<&>"},
			OK: true, Status: 200, Headers: map[string][]string{"X-B": {"2", "1"}, "Content-Type": {"application/json"}, "A": nil},
			Body: `{"ünïcode":"☃","html":"<b>&amp;</b>","ctl":"\u0001\u2028"}`, Attempt: 1, Worker: "w-1",
			Timing:     jobs.Timing{QueuedMS: 0.123, DNSMS: 0, ConnectMS: 1.5, TLSMS: 2.25, TTFBMS: 3.125, TotalMS: 10.001},
			ClientCert: &jobs.ClientCert{Subject: "CN=a,O=b", Serial: "0a1b", NotAfter: at}, CompletedAt: at,
		},
		"ok/binary-body": binary,
		"fail/error-and-fault": {
			ID: "e", Connection: "c", Status: 500, SOAPFault: &jobs.SOAPFault{Code: "soap:Server", Reason: "boom", Detail: "<d/>"},
			Error: jobs.Errorf(jobs.CodeHTTPStatus, "partner answered %q", "503 <busy>"), CompletedAt: at,
		},
		"fail/empty": {},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := jobs.EncodeResult(r)
			if err != nil {
				t.Fatal(err)
			}
			want, err := json.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != string(want) {
				t.Errorf("EncodeResult differs from encoding/json:\n got %s\nwant %s", got, want)
			}
		})
	}
}
