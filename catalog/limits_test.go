package catalog_test

import (
	"strings"
	"testing"
	"time"

	"github.com/mtlsrelay/mtlsrelay/catalog"
	"github.com/mtlsrelay/mtlsrelay/jobs"
)

// A call may ask for less time or fewer attempts than its connection
// allows, never more.
func TestCheckCall(t *testing.T) {
	set := catalog.Connection{Timeout: catalog.Duration(10 * time.Second), MaxAttempts: 3}
	unset := catalog.Connection{}
	cases := []struct {
		name string
		conn catalog.Connection
		call jobs.Call
		says string // "" means allowed
	}{
		{"ok/defaults", set, jobs.Call{}, ""},
		{"ok/less", set, jobs.Call{TimeoutMS: 5000, MaxAttempts: 2}, ""},
		{"ok/equal", set, jobs.Call{TimeoutMS: 10000, MaxAttempts: 3}, ""},
		{"fail/timeout-above", set, jobs.Call{TimeoutMS: 10001}, "timeout_ms 10001 is above connection c's timeout of 10s"},
		{"fail/attempts-above", set, jobs.Call{MaxAttempts: 4}, "max_attempts 4 is above connection c's max_attempts of 3"},
		{"ok/default-limits", unset, jobs.Call{TimeoutMS: 30000, MaxAttempts: 5}, ""},
		{"fail/above-default-timeout", unset, jobs.Call{TimeoutMS: 30001}, "timeout of 30s"},
		{"fail/above-default-attempts", unset, jobs.Call{MaxAttempts: 100}, "max_attempts of 5"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.conn.CheckCall(&tc.call, "c")
			if tc.says == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if je := jobs.AsError(err); je == nil || je.Code != jobs.CodeInvalidCall || !strings.Contains(je.Message, tc.says) {
				t.Fatalf("err = %v; want invalid_call saying %q", err, tc.says)
			}
		})
	}
}
