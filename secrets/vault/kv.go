package vault

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/secrets"
)

var _ secrets.Source = (*kvSource)(nil)

// kvRef is a parsed vault: reference, MOUNT/PATH#FIELD[@VERSION].
type kvRef struct {
	mount, path, field string
	// version pins a version; 0 means the latest.
	version int
}

// parseKVRef parses the body of a vault: reference.
//
// The mount is the first segment of the path: "secret/partners/a" is path
// "partners/a" of the KV v2 engine mounted at "secret/". A mount whose own
// path has several segments (kv/team-a) cannot be named. The field follows
// the last '#'; a version may follow it as "@N" (also accepted before the
// '#': "secret/partners/a@3#keystore").
func parseKVRef(body string) (kvRef, error) {
	bad := func(why string) (kvRef, error) {
		return kvRef{}, jobs.Errorf(jobs.CodeKeystoreInvalid,
			"secret reference vault:%s %s; write vault:MOUNT/PATH#FIELD, optionally with @VERSION, e.g. vault:secret/partners/a#keystore@3", body, why)
	}
	i := strings.LastIndex(body, "#")
	if i < 0 {
		return bad("names no field (#FIELD)")
	}
	loc, field := body[:i], body[i+1:]
	var r kvRef
	pinned := false
	if j := strings.LastIndex(field, "@"); j >= 0 && isDigits(field[j+1:]) {
		field, r.version, pinned = field[:j], atoi(field[j+1:]), true
	} else if j := strings.LastIndex(loc, "@"); j >= 0 && isDigits(loc[j+1:]) {
		loc, r.version, pinned = loc[:j], atoi(loc[j+1:]), true
	}
	if field == "" {
		return bad("has an empty field name after '#'")
	}
	if pinned && r.version == 0 {
		return bad("pins version 0; versions start at 1")
	}
	mount, path, ok := strings.Cut(strings.Trim(loc, "/"), "/")
	path = strings.Trim(path, "/")
	if !ok || mount == "" || path == "" {
		return bad("names no secret path after the mount")
	}
	for _, seg := range strings.Split(path, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return bad("has an empty, '.' or '..' path segment")
		}
	}
	r.mount, r.path, r.field = mount, path, field
	return r, nil
}

func isDigits(s string) bool {
	if s == "" || len(s) > 9 {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }

// name is the secret as people write it: "secret/partners/a" or
// "secret/partners/a@3".
func (r kvRef) name() string {
	if r.version > 0 {
		return fmt.Sprintf("%s/%s@%d", r.mount, r.path, r.version)
	}
	return r.mount + "/" + r.path
}

// apiPath is the KV v2 read path.
func (r kvRef) apiPath() string { return r.mount + "/data/" + r.path }

// kvSource serves vault: references from KV v2 engines. It reads each
// secret (all its fields at once) at most once per poll interval, so the
// keystore and password fields of one secret cost one read, and many
// profiles on a secret do not multiply Vault's load.
type kvSource struct {
	c  *Client
	mu sync.Mutex
	m  map[kvKey]*kvEntry
}

type kvKey struct {
	mount, path string
	version     int
}

// kvEntry is the last read of one secret version.
type kvEntry struct {
	// sem is held by the one goroutine reading the secret.
	sem chan struct{}

	mu     sync.Mutex
	read   *kvRead
	readAt time.Time
}

// kvRead is one answer of Vault; never modified once stored.
type kvRead struct {
	data    map[string]any
	version int
	created string
}

func (s *kvSource) entry(k kvKey) *kvEntry {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.m[k]
	if e == nil {
		e = &kvEntry{sem: make(chan struct{}, 1)}
		s.m[k] = e
	}
	return e
}

// Fetch returns the field's value as bytes (a keystore field holds base64
// or PEM text, which secrets.DecodeKeystore accepts; a password field is a
// plain string) with Version "kv:MOUNT/PATH:VERSION:CREATED", which changes
// with every new version of the secret, also after it was deleted and
// created again.
func (s *kvSource) Fetch(ctx context.Context, ref secrets.Ref) (secrets.Secret, error) {
	r, err := parseKVRef(ref.Body)
	if err != nil {
		return secrets.Secret{}, err
	}
	rd, err := s.read(ctx, r)
	if err != nil {
		return secrets.Secret{}, err
	}
	val, ok := rd.data[r.field]
	if !ok {
		return secrets.Secret{}, jobs.Wrap(secrets.ErrNotFound, jobs.CodeSecretUnavailable,
			"Vault KV secret %s (version %d) has no field %q; its fields are %s; check the reference's #field or add the field",
			r.name(), rd.version, r.field, fieldList(rd.data)).WithRetryable(false)
	}
	str, ok := val.(string)
	if !ok {
		return secrets.Secret{}, jobs.Errorf(jobs.CodeKeystoreInvalid,
			"field %q of Vault KV secret %s (version %d) is %s, not a string; store a keystore as base64 or PEM text and a password as a string",
			r.field, r.name(), rd.version, jsonKind(val))
	}
	return secrets.Secret{Data: []byte(str), Version: fmt.Sprintf("kv:%s/%s:%d:%s", r.mount, r.path, rd.version, rd.created)}, nil
}

// read returns the secret's data, from the last read while it is younger
// than the poll interval, else from Vault.
func (s *kvSource) read(ctx context.Context, r kvRef) (*kvRead, error) {
	e := s.entry(kvKey{r.mount, r.path, r.version})
	fresh := func() *kvRead {
		e.mu.Lock()
		defer e.mu.Unlock()
		if e.read != nil && time.Since(e.readAt) < s.c.cfg.PollInterval {
			return e.read
		}
		return nil
	}
	if rd := fresh(); rd != nil {
		return rd, nil
	}
	select {
	case e.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, classify(ctx.Err(), s.c.addr, op{doing: "reading KV secret " + r.name()})
	}
	defer func() { <-e.sem }()
	if rd := fresh(); rd != nil { // read by whoever held sem before
		return rd, nil
	}
	rd, err := s.c.readKV(ctx, r)
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	e.read, e.readAt = rd, time.Now()
	e.mu.Unlock()
	return rd, nil
}

// readKV reads a KV v2 secret version from Vault.
func (c *Client) readKV(ctx context.Context, r kvRef) (*kvRead, error) {
	var params map[string][]string
	if r.version > 0 {
		params = map[string][]string{"version": {strconv.Itoa(r.version)}}
	}
	o := op{doing: "reading KV secret " + r.name(), path: r.apiPath(), capability: "read"}
	sec, err := c.do(ctx, o, func(cl *api.Client) (*api.Secret, error) {
		return cl.Logical().ReadWithDataWithContext(ctx, r.apiPath(), params)
	})
	if err != nil {
		return nil, err
	}
	if sec == nil || sec.Data == nil {
		what := "no KV secret"
		if r.version > 0 {
			what = fmt.Sprintf("no version %d of KV secret", r.version)
		}
		return nil, jobs.Wrap(secrets.ErrNotFound, jobs.CodeSecretUnavailable,
			"Vault at %s has %s %s/%s (nothing at %s); check the reference's mount and path, and that %s/ is a KV version 2 engine",
			c.addr, what, r.mount, r.path, r.apiPath(), r.mount).WithRetryable(false)
	}
	meta, _ := sec.Data["metadata"].(map[string]any)
	rd := &kvRead{version: r.version}
	if meta != nil {
		if v, ok := number(meta["version"]); ok {
			rd.version = v
		}
		rd.created, _ = meta["created_time"].(string)
	}
	data, ok := sec.Data["data"].(map[string]any)
	if !ok {
		state := "deleted"
		if d, _ := meta["destroyed"].(bool); d {
			state = "destroyed"
		}
		return nil, jobs.Wrap(secrets.ErrNotFound, jobs.CodeSecretUnavailable,
			"version %d of Vault KV secret %s is %s; undelete it, write the secret again, or pin another version with @N",
			rd.version, r.mount+"/"+r.path, state).WithRetryable(false)
	}
	rd.data = data
	return rd, nil
}

// number reads a JSON number that vault/api decodes as json.Number.
func number(v any) (int, bool) {
	switch n := v.(type) {
	case json.Number:
		i, err := n.Int64()
		return int(i), err == nil
	case float64:
		return int(n), true
	case int:
		return n, true
	}
	return 0, false
}

// fieldList names a secret's fields (never their values) for messages.
func fieldList(data map[string]any) string {
	if len(data) == 0 {
		return "none"
	}
	names := make([]string, 0, len(data))
	for k := range data {
		names = append(names, strconv.Quote(k))
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// jsonKind names the JSON type of a decoded value.
func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case json.Number, float64:
		return "a number"
	case map[string]any:
		return "an object"
	case []any:
		return "a list"
	}
	return fmt.Sprintf("a %T", v)
}
