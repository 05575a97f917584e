// Package schema holds the JSON Schemas (draft 2020-12) of the wire contract:
// call.schema.json for a Call and result.schema.json for a Result. Flows in
// any language can validate what they send and read against them; the tests
// of package jobs keep them in step with jobs.Call and jobs.Result.
package schema

import _ "embed"

// Call is the JSON Schema of a call message (jobs.Call).
//
//go:embed call.schema.json
var Call []byte

// Result is the JSON Schema of a result message (jobs.Result).
//
//go:embed result.schema.json
var Result []byte

// CallID and ResultID are the schemas' $id, the URLs under which they are
// registered with a validator.
const (
	CallID   = "https://github.com/mtlsrelay/mtlsrelay/jobs/schema/call.schema.json"
	ResultID = "https://github.com/mtlsrelay/mtlsrelay/jobs/schema/result.schema.json"
)
