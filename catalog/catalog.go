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
	// Refused are profiles the worker holds but will not use, with why
	// (a registry profile naming the worker's own file: secrets, say): a
	// call on one ends with that error.
	Refused map[string]*jobs.Error
}

// UnknownConnection is the error of a call naming a connection that does
// not exist, or that its tenant may not use: the two read the same, so a
// flow learns nothing of connections it may not use.
func UnknownConnection(name string) *jobs.Error {
	return jobs.Errorf(jobs.CodeUnknownConnection,
		"no connection named %q in the worker's config or the registry; define it or fix the call's connection", name)
}

// Lookup returns the connection called name and its profile, or
// unknown_connection / unknown_profile. The connection's soap.wss is its
// profile's when it sets none.
func (c *Catalog) Lookup(name string) (*Connection, *secrets.Profile, error) {
	conn, ok := c.Connections[name]
	if !ok {
		return nil, nil, UnknownConnection(name)
	}
	if why, refused := c.Refused[conn.Profile]; refused {
		return nil, nil, why
	}
	prof, ok := c.Profiles[conn.Profile]
	if !ok {
		return nil, nil, jobs.Errorf(jobs.CodeUnknownProfile,
			"connection %s uses profile %q, which is not defined in the worker's config or the registry", name, conn.Profile)
	}
	if prof.SOAP != nil && prof.SOAP.WSS != nil && (conn.SOAP == nil || conn.SOAP.WSS == nil) {
		// The profile's soap.wss applies where the connection sets none;
		// a copy, so that the catalog's connection stays as configured.
		soap := secrets.SOAPSettings{}
		if conn.SOAP != nil {
			soap = *conn.SOAP
		}
		soap.WSS = prof.SOAP.WSS
		conn.SOAP = &soap
	}
	return &conn, &prof, nil
}
