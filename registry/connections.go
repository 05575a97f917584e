package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mtlsrelay/mtlsrelay/catalog"
	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/secrets"
)

// ConnectionEntry is a connection as the registry holds it.
type ConnectionEntry struct {
	// Name is the connection's name.
	Name string `json:"name"`
	// Connection is its definition.
	Connection catalog.Connection `json:"connection"`
	// Revision and Updated are those of the KV entry.
	Revision uint64    `json:"revision"`
	Updated  time.Time `json:"updated"`
}

// PutConnection checks c with Connection.Validate and stores it as
// connections.<name>. Its profile may be one of the registry or of the
// workers' config files, so it need not exist in the registry.
func (r *Registry) PutConnection(ctx context.Context, name string, c catalog.Connection) error {
	if err := checkName("connection", name); err != nil {
		return err
	}
	if err := c.Validate(name); err != nil {
		return fmt.Errorf("connection %s not stored: %w", name, err)
	}
	if err := refuseInlineAuth(name, c.Auth); err != nil {
		return err
	}
	value, err := json.Marshal(c)
	if err != nil {
		return err
	}
	if _, err := r.kv.Put(ctx, prefixConnections+name, value); err != nil {
		return kvError(err, "store connection "+name)
	}
	return nil
}

// authSecrets are the fields of a connection's auth that hold secret
// references, and their names in the config file.
func authSecrets(a *catalog.Auth) []struct {
	field string
	ref   *string
} {
	return []struct {
		field string
		ref   *string
	}{{"password", &a.Password}, {"token", &a.Token}, {"value", &a.Value}, {"client_secret", &a.ClientSecret}}
}

// refuseInlineAuth refuses an auth secret given inline (value:): the
// registry's entries are readable by whoever reads its bucket, and a
// connection's secrets are not sealed as a profile's password is.
func refuseInlineAuth(name string, a *catalog.Auth) error {
	if a == nil {
		return nil
	}
	for _, f := range authSecrets(a) {
		if ref, err := secrets.ParseRef(*f.ref); err == nil && ref.IsInline() {
			return jobs.Errorf(jobs.CodeInvalidCall,
				"connection %s not stored: its auth %s is given inline (value:), which the registry would keep readable to whoever reads its bucket; keep it in Vault (vault:) or CyberArk (cyberark:) and name it here",
				name, f.field)
		}
	}
	return nil
}

// MarshalJSON encodes the entry for people: auth secrets given inline
// (stored before put refused them) redacted.
func (e ConnectionEntry) MarshalJSON() ([]byte, error) {
	type plain ConnectionEntry
	out := plain(e)
	if e.Connection.Auth != nil {
		a := *e.Connection.Auth
		for _, f := range authSecrets(&a) {
			*f.ref = secrets.RedactRef(*f.ref)
		}
		out.Connection.Auth = &a
	}
	return json.Marshal(out)
}

// GetConnection returns connection name; errors.Is(err, ErrNotFound) when
// absent.
func (r *Registry) GetConnection(ctx context.Context, name string) (*ConnectionEntry, error) {
	if err := checkName("connection", name); err != nil {
		return nil, err
	}
	e, err := r.getEntry(ctx, prefixConnections+name)
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("connection %s is %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, kvError(err, "read connection "+name)
	}
	return connectionEntry(name, e)
}

// ListConnections returns every connection, sorted by name. Entries whose
// value does not decode are left out; Watch logs them.
func (r *Registry) ListConnections(ctx context.Context) ([]ConnectionEntry, error) {
	var out []ConnectionEntry
	err := r.scan(ctx, prefixConnections, func(name string, e jetstream.KeyValueEntry) {
		if ce, err := connectionEntry(name, e); err == nil {
			out = append(out, *ce)
		}
	})
	return out, err
}

// DeleteConnection removes connection name and its history;
// errors.Is(err, ErrNotFound) when absent.
func (r *Registry) DeleteConnection(ctx context.Context, name string) error {
	if err := checkName("connection", name); err != nil {
		return err
	}
	if _, err := r.getEntry(ctx, prefixConnections+name); errors.Is(err, ErrNotFound) {
		return fmt.Errorf("connection %s is %w", name, ErrNotFound)
	} else if err != nil {
		return kvError(err, "read connection "+name)
	}
	if err := r.kv.Purge(ctx, prefixConnections+name); err != nil {
		return kvError(err, "remove connection "+name)
	}
	return nil
}

// connectionEntry decodes and validates the KV entry of connection name.
func connectionEntry(name string, e jetstream.KeyValueEntry) (*ConnectionEntry, error) {
	var c catalog.Connection
	dec := json.NewDecoder(bytes.NewReader(e.Value()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("registry connection %s (revision %d) is not a connection's JSON: %w", name, e.Revision(), err)
	}
	if err := c.Validate(name); err != nil {
		return nil, fmt.Errorf("registry connection %s (revision %d): %w", name, e.Revision(), err)
	}
	return &ConnectionEntry{Name: name, Connection: c, Revision: e.Revision(), Updated: e.Created()}, nil
}
