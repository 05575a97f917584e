package jobs_test

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/mtlsrelay/mtlsrelay/jobs"
)

// The README's table of error codes is the one flows read: it lists every
// code of jobs' table, in its order, and says "yes" in its retried column
// exactly for the codes retried by default.
func TestREADMEErrorCodes(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "### Error codes\n")
	if !ok {
		t.Fatal("README has no \"### Error codes\" section")
	}
	section, _, _ = strings.Cut(section, "\n### ")
	row := regexp.MustCompile("(?m)^\\| `([a-z_]+)` \\| ([^|]+) \\|")
	var got []jobs.Code
	retried := map[jobs.Code]bool{}
	for _, m := range row.FindAllStringSubmatch(section, -1) {
		c := jobs.Code(m[1])
		got = append(got, c)
		retried[c] = strings.HasPrefix(strings.TrimSpace(m[2]), "yes")
	}
	if want := jobs.Codes(); !slices.Equal(got, want) {
		t.Fatalf("README error codes = %v\nwant jobs.Codes() = %v", got, want)
	}
	for _, c := range jobs.CodeTable() {
		if retried[c.Code] != c.Retryable {
			t.Errorf("README says %s is retried: %v; the code table says %v", c.Code, retried[c.Code], c.Retryable)
		}
		if c.Meaning == "" {
			t.Errorf("%s has no meaning in the code table", c.Code)
		}
	}
}
