package wss

import (
	"errors"
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

// MaxTimestampLifetime is the longest a verified response's wsu:Timestamp
// may be valid for (Expires - Created): a long-lived signed response could
// be replayed for that long.
const MaxTimestampLifetime = time.Hour

// checkTimestamp checks a wsu:Timestamp: Created and Expires both present,
// at most MaxTimestampLifetime apart, Created not in the future and
// Expires not past, with skew tolerated either way.
func checkTimestamp(ts *etree.Element, now time.Time, skew time.Duration) error {
	createdEl, err := oneChild(ts, wsuNS, "Created", "wsu:Created")
	if err != nil {
		return err
	}
	expiresEl, err := oneChild(ts, wsuNS, "Expires", "wsu:Expires")
	if err != nil {
		return err
	}
	if createdEl == nil || expiresEl == nil {
		return errors.New("wss: the wsu:Timestamp lacks Created or Expires; both are required")
	}
	created, err := parseTime(createdEl.Text())
	if err != nil {
		return fmt.Errorf("wss: wsu:Created: %v", err)
	}
	expires, err := parseTime(expiresEl.Text())
	if err != nil {
		return fmt.Errorf("wss: wsu:Expires: %v", err)
	}
	if expires.Before(created) {
		return errors.New("wss: the wsu:Timestamp expires before it was created")
	}
	if life := expires.Sub(created); life > MaxTimestampLifetime {
		return fmt.Errorf("wss: the wsu:Timestamp is valid for %s, more than the %s accepted", life, MaxTimestampLifetime)
	}
	if created.After(now.Add(skew)) {
		return fmt.Errorf("wss: the wsu:Timestamp was created in the future (%s, now %s, skew %s): check the clocks", created.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), skew)
	}
	if expires.Add(skew).Before(now) {
		return fmt.Errorf("wss: the wsu:Timestamp expired at %s (now %s, skew %s)", expires.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), skew)
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
