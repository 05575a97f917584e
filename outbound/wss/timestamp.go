package wss

import (
	"fmt"
	"strings"
	"time"

	"github.com/beevik/etree"
)

// timeLayout is how Sign writes wsu:Created and wsu:Expires: UTC with
// milliseconds, as WSS4J and WCF write them.
const timeLayout = "2006-01-02T15:04:05.000Z07:00"

// parseTime reads an xsd:dateTime as found in a wsu:Timestamp. WS-Security
// asks for UTC with a zone; one without a zone is taken as UTC, as WSS4J
// does.
func parseTime(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if t, err := time.ParseInLocation("2006-01-02T15:04:05.999999999", s, time.UTC); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%q is not an xsd:dateTime", truncate(s, 40))
}

// checkTimestamp checks a wsu:Timestamp's Created and Expires against now
// with skew tolerated either way.
func checkTimestamp(ts *etree.Element, now time.Time, skew time.Duration) error {
	created, err := oneChild(ts, wsuNS, "Created", "wsu:Created")
	if err != nil {
		return err
	}
	expires, err := oneChild(ts, wsuNS, "Expires", "wsu:Expires")
	if err != nil {
		return err
	}
	if created != nil {
		t, err := parseTime(created.Text())
		if err != nil {
			return fmt.Errorf("wss: wsu:Created: %v", err)
		}
		if t.After(now.Add(skew)) {
			return fmt.Errorf("wss: the wsu:Timestamp was created in the future (%s, now %s, skew %s): check the clocks", t.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), skew)
		}
	}
	if expires != nil {
		t, err := parseTime(expires.Text())
		if err != nil {
			return fmt.Errorf("wss: wsu:Expires: %v", err)
		}
		if t.Add(skew).Before(now) {
			return fmt.Errorf("wss: the wsu:Timestamp expired at %s (now %s, skew %s)", t.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), skew)
		}
	}
	return nil
}

// truncate shortens s for an error message.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
