package catalog

import (
	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/secrets"
)

// Catalog is an immutable set of profiles and connections. A worker holds
// the current one in an atomic pointer, so a change (a registry update, say)
// swaps it whole and a call sees one consistent view.
type Catalog struct {
	Profiles    map[string]secrets.Profile
	Connections map[string]Connection
}

// Lookup returns the connection called name and its profile, or
// unknown_connection / unknown_profile.
func (c *Catalog) Lookup(name string) (*Connection, *secrets.Profile, error) {
	conn, ok := c.Connections[name]
	if !ok {
		return nil, nil, jobs.Errorf(jobs.CodeUnknownConnection,
			"no connection named %q in the worker's config or the registry; define it or fix the call's connection", name)
	}
	prof, ok := c.Profiles[conn.Profile]
	if !ok {
		return nil, nil, jobs.Errorf(jobs.CodeUnknownProfile,
			"connection %s uses profile %q, which is not defined in the worker's config or the registry", name, conn.Profile)
	}
	return &conn, &prof, nil
}
