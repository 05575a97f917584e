package demo_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/mtlsrelay/mtlsrelay/internal/demo"
	"github.com/mtlsrelay/mtlsrelay/jobs"
)

func TestDemoShowsRESTAndSOAPAndAFailure(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	results, err := demo.Run(ctx, demo.Options{Out: &out, Dir: t.TempDir()})
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	steps := demo.Steps()
	if len(results) != len(steps) {
		t.Fatalf("%d results for %d steps", len(results), len(steps))
	}
	want := []struct {
		ok     bool
		status int
		code   jobs.Code
		fault  bool
	}{
		{true, 200, "", false},
		{true, 200, "", false},
		{false, 404, "", false},
		{true, 200, "", false},
		{false, 500, "", true},
		{true, 200, "", false},
		{false, 0, jobs.CodeHostNotAllowed, false},
	}
	for i, w := range want {
		r := results[i]
		if r.OK != w.ok || r.Status != w.status || (r.SOAPFault != nil) != w.fault || (w.code != "" && (r.Error == nil || r.Error.Code != w.code)) {
			t.Errorf("%s: ok=%v status=%d fault=%v error=%+v", steps[i].Title, r.OK, r.Status, r.SOAPFault, r.Error)
		}
	}
	for _, s := range []string{"SOAP 1.1", "REST GET", "host_not_allowed", "CALL", "STATUS"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("demo output lacks %q:\n%s", s, out.String())
		}
	}
}
