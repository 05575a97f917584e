package jobs_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/jobs/schema"
)

// The JSON Schemas in jobs/schema are part of the wire contract: flows in
// other languages validate against them. These tests keep them in step with
// jobs.Call and jobs.Result, field by field, and check them with a real
// JSON Schema 2020-12 validator.

// schemaDoc parses a schema file into the generic form the validator and the
// reflection checks use.
func schemaDoc(t *testing.T, data []byte) map[string]any {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("schema is not JSON: %v", err)
	}
	m, ok := doc.(map[string]any)
	if !ok {
		t.Fatalf("schema is not an object")
	}
	return m
}

// compileSchemas compiles both schemas, asserting formats (date-time, uri)
// and content encodings (base64) rather than treating them as annotations.
func compileSchemas(t *testing.T) (call, result *jsonschema.Schema) {
	t.Helper()
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	c.AssertContent()
	for id, data := range map[string][]byte{schema.CallID: schema.Call, schema.ResultID: schema.Result} {
		if err := c.AddResource(id, schemaDoc(t, data)); err != nil {
			t.Fatalf("add %s: %v", id, err)
		}
	}
	var err error
	if call, err = c.Compile(schema.CallID); err != nil {
		t.Fatalf("call schema does not compile: %v", err)
	}
	if result, err = c.Compile(schema.ResultID); err != nil {
		t.Fatalf("result schema does not compile: %v", err)
	}
	return call, result
}

func TestSchemaIDs(t *testing.T) {
	for id, data := range map[string][]byte{schema.CallID: schema.Call, schema.ResultID: schema.Result} {
		doc := schemaDoc(t, data)
		if doc["$id"] != id {
			t.Errorf("$id = %v, want %s", doc["$id"], id)
		}
		if doc["$schema"] != "https://json-schema.org/draft/2020-12/schema" {
			t.Errorf("%s: $schema = %v, want draft 2020-12", id, doc["$schema"])
		}
	}
}

// TestSchemaMatchesGoTypes walks jobs.Call and jobs.Result by reflection:
// every JSON field is a schema property of a compatible type and the other
// way round, recursively; a field without omitempty is exactly a required one.
func TestSchemaMatchesGoTypes(t *testing.T) {
	for _, tc := range []struct {
		name string
		typ  reflect.Type
		doc  []byte
	}{
		{"call", reflect.TypeFor[jobs.Call](), schema.Call},
		{"result", reflect.TypeFor[jobs.Result](), schema.Result},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := schemaDoc(t, tc.doc)
			w := &schemaWalker{t: t, root: root}
			w.compare(tc.name, tc.typ, root)
		})
	}
}

func TestSchemaCallRequiresOnlyID(t *testing.T) {
	root := schemaDoc(t, schema.Call)
	if got := stringList(root["required"]); !slices.Equal(got, []string{"id"}) {
		t.Errorf("call schema required = %v, want [id]", got)
	}
}

func TestSchemaErrorCodes(t *testing.T) {
	root := schemaDoc(t, schema.Result)
	w := &schemaWalker{t: t, root: root}
	errSchema := w.resolve(root["properties"].(map[string]any)["error"].(map[string]any))
	code := errSchema["properties"].(map[string]any)["code"].(map[string]any)
	got := stringList(code["enum"])
	var want []string
	for _, c := range jobs.Codes() {
		want = append(want, string(c))
	}
	if !slices.Equal(got, want) {
		t.Errorf("result schema error.code enum = %v\nwant jobs.Codes() = %v", got, want)
	}
}

// schemaWalker compares Go types with schema nodes of one schema document.
type schemaWalker struct {
	t    *testing.T
	root map[string]any
}

// resolve follows a local "#/$defs/name" reference.
func (w *schemaWalker) resolve(node map[string]any) map[string]any {
	ref, ok := node["$ref"].(string)
	if !ok {
		return node
	}
	name, ok := strings.CutPrefix(ref, "#/$defs/")
	if !ok {
		w.t.Fatalf("only local #/$defs references are expected, got %q", ref)
	}
	def, ok := w.root["$defs"].(map[string]any)[name].(map[string]any)
	if !ok {
		w.t.Fatalf("reference %q names no definition", ref)
	}
	return w.resolve(def)
}

// types returns the node's "type" keyword as a list.
func types(node map[string]any) []string {
	switch v := node["type"].(type) {
	case string:
		return []string{v}
	case []any:
		return stringList(v)
	}
	return nil
}

func stringList(v any) []string {
	list, _ := v.([]any)
	out := make([]string, 0, len(list))
	for _, e := range list {
		out = append(out, fmt.Sprint(e))
	}
	return out
}

var timeType = reflect.TypeFor[time.Time]()

func (w *schemaWalker) compare(path string, typ reflect.Type, node map[string]any) {
	w.t.Helper()
	node = w.resolve(node)
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	want := func(jsonType string) bool {
		if got := types(node); !slices.Equal(got, []string{jsonType}) {
			w.t.Errorf("%s: Go type %s is JSON %q, schema says type %v", path, typ, jsonType, got)
			return false
		}
		return true
	}
	switch {
	case typ == timeType:
		if want("string") && node["format"] != "date-time" {
			w.t.Errorf("%s: a time.Time needs format date-time, schema has %v", path, node["format"])
		}
	case typ.Kind() == reflect.Slice && typ.Elem().Kind() == reflect.Uint8:
		if want("string") && node["contentEncoding"] != "base64" {
			w.t.Errorf("%s: []byte is base64 in JSON; schema needs contentEncoding base64", path)
		}
	case typ.Kind() == reflect.Struct:
		if want("object") {
			w.compareStruct(path, typ, node)
		}
	case typ.Kind() == reflect.Map:
		if typ.Key().Kind() != reflect.String {
			w.t.Fatalf("%s: map key %s is not a string", path, typ.Key())
		}
		if want("object") {
			ap, ok := node["additionalProperties"].(map[string]any)
			if !ok {
				w.t.Errorf("%s: a map needs additionalProperties with the value schema", path)
				return
			}
			w.compare(path+"{}", typ.Elem(), ap)
		}
	case typ.Kind() == reflect.Slice:
		if want("array") {
			items, ok := node["items"].(map[string]any)
			if !ok {
				w.t.Errorf("%s: a slice needs items", path)
				return
			}
			w.compare(path+"[]", typ.Elem(), items)
		}
	case typ.Kind() == reflect.String:
		want("string")
	case typ.Kind() == reflect.Bool:
		want("boolean")
	case typ.Kind() >= reflect.Int && typ.Kind() <= reflect.Uint64:
		want("integer")
	case typ.Kind() == reflect.Float32 || typ.Kind() == reflect.Float64:
		want("number")
	default:
		w.t.Errorf("%s: no JSON Schema mapping for Go type %s; extend the test", path, typ)
	}
}

// jsonField is one field of a struct as encoding/json sees it.
type jsonField struct {
	name      string
	omitempty bool
	typ       reflect.Type
}

func jsonFields(typ reflect.Type) []jsonField {
	var out []jsonField
	for f := range typ.Fields() {
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if name == "" {
			name = f.Name
		}
		out = append(out, jsonField{name: name, omitempty: slices.Contains(strings.Split(opts, ","), "omitempty"), typ: f.Type})
	}
	return out
}

func (w *schemaWalker) compareStruct(path string, typ reflect.Type, node map[string]any) {
	w.t.Helper()
	props, _ := node["properties"].(map[string]any)
	var goRequired []string
	seen := map[string]bool{}
	for _, f := range jsonFields(typ) {
		seen[f.name] = true
		if !f.omitempty {
			goRequired = append(goRequired, f.name)
		}
		p, ok := props[f.name].(map[string]any)
		if !ok {
			w.t.Errorf("%s: Go field %q (%s) is not a property of the schema", path, f.name, f.typ)
			continue
		}
		w.compare(path+"."+f.name, f.typ, p)
	}
	for name := range props {
		if !seen[name] {
			w.t.Errorf("%s: schema property %q is not a JSON field of %s", path, name, typ)
		}
	}
	schemaRequired := stringList(node["required"])
	sort.Strings(goRequired)
	sort.Strings(schemaRequired)
	if !slices.Equal(goRequired, schemaRequired) {
		w.t.Errorf("%s: schema required %v, but the fields without omitempty are %v", path, schemaRequired, goRequired)
	}
}

// instance parses JSON the way the validator expects it (numbers as json.Number).
func instance(t *testing.T, data []byte) any {
	t.Helper()
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("sample is not JSON: %v\n%s", err, data)
	}
	return v
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSchemaCallSamples(t *testing.T) {
	callSchema, _ := compileSchemas(t)
	valid := map[string]string{
		"ok/minimal":        `{"id":"a"}`,
		"ok/rest-full":      `{"id":"order-42.v1:x","connection":"partner-a-api","kind":"rest","method":"POST","path":"orders","query":{"q":["1","2"]},"headers":{"Content-Type":["application/json"]},"body":"{\"n\":1}","timeout_ms":5000,"max_attempts":3,"idempotent":false,"reply_to":"mtlsrelay.results.flow-a.order-42","metadata":{"flow":"a"}}`,
		"ok/url":            `{"id":"u1","url":"https://api.partner.example:8443/v1/x"}`,
		"ok/binary-body":    `{"id":"b1","method":"PUT","body_base64":"AAEC/w=="}`,
		"ok/soap-implicit":  `{"id":"s1","soap":{"action":"urn:GetQuote","body":"<q:GetQuote xmlns:q=\"urn:q\"/>"}}`,
		"ok/soap-12":        `{"id":"s2","kind":"soap","soap":{"version":"1.2","action":"urn:A","header":"<h/>","body":"<b/>"}}`,
		"ok/max-attempts-0": `{"id":"m0","max_attempts":0}`,
	}
	// Calls made by the Go types must validate too, after Normalize has
	// filled in the defaults, as a worker sees them.
	for name, c := range map[string]jobs.Call{
		"go/rest": {ID: "go-1", Connection: "partner-a-api", Path: "orders/42", Query: map[string][]string{"a": {"b"}}, Metadata: map[string]string{"k": "v"}},
		"go/soap": {ID: "go-2", Connection: "partner-a-api", SOAP: &jobs.SOAP{Action: "urn:x", Body: "<x/>"}},
		"go/blob": {ID: "go-3", Connection: "partner-a-api", Method: "POST", BodyBase64: []byte{0, 1, 0xff}},
	} {
		if err := c.Normalize(""); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		valid[name] = string(mustJSON(t, c))
	}
	for name, data := range valid {
		t.Run(name, func(t *testing.T) {
			if err := callSchema.Validate(instance(t, []byte(data))); err != nil {
				t.Errorf("schema rejects a valid call: %v\n%s", err, data)
			}
			if _, err := jobs.DecodeCall([]byte(data), "partner-a-api"); err != nil {
				t.Errorf("the worker rejects a call the schema accepts: %v\n%s", err, data)
			}
		})
	}

	invalid := []struct {
		name, data string
		// workerIgnores is set where the worker accepts what the schema
		// rejects on purpose (unknown fields, to catch typos in flows).
		workerIgnores bool
	}{
		{name: "fail/no-id", data: `{"path":"x"}`},
		{name: "fail/id-chars", data: `{"id":"a b"}`},
		{name: "fail/id-too-long", data: `{"id":"` + strings.Repeat("x", 129) + `"}`},
		{name: "fail/id-number", data: `{"id":42}`},
		{name: "fail/connection-chars", data: `{"id":"a","connection":"a.b"}`},
		{name: "fail/kind", data: `{"id":"a","kind":"graphql"}`},
		{name: "fail/soap-kind-without-soap", data: `{"id":"a","kind":"soap"}`},
		{name: "fail/rest-kind-with-soap", data: `{"id":"a","kind":"rest","soap":{"body":"<x/>"}}`},
		{name: "fail/soap-version", data: `{"id":"a","soap":{"version":"2.0","body":"<x/>"}}`},
		{name: "fail/soap-with-body", data: `{"id":"a","soap":{"body":"<x/>"},"body":"y"}`},
		{name: "fail/body-and-base64", data: `{"id":"a","body":"x","body_base64":"eA=="}`},
		{name: "fail/path-and-url", data: `{"id":"a","path":"x","url":"https://h/x"}`},
		{name: "fail/url-http", data: `{"id":"a","url":"http://h/x"}`},
		{name: "fail/method-space", data: `{"id":"a","method":"GE T"}`},
		{name: "fail/header-not-list", data: `{"id":"a","headers":{"Accept":"text/xml"}}`},
		{name: "fail/timeout-negative", data: `{"id":"a","timeout_ms":-1}`},
		{name: "fail/timeout-fraction", data: `{"id":"a","timeout_ms":1.5}`},
		{name: "fail/max-attempts-101", data: `{"id":"a","max_attempts":101}`},
		{name: "fail/idempotent-string", data: `{"id":"a","idempotent":"yes"}`},
		{name: "fail/reply-to-wildcard", data: `{"id":"a","reply_to":"mtlsrelay.results.>"}`},
		{name: "fail/metadata-number", data: `{"id":"a","metadata":{"n":1}}`},
		{name: "fail/not-object", data: `["id","a"]`},
		{name: "fail/misspelt-field", data: `{"id":"a","reply-to":"x.y"}`, workerIgnores: true},
		{name: "fail/soap-unknown-field", data: `{"id":"a","soap":{"body":"<x/>","actoin":"urn:x"}}`, workerIgnores: true},
	}
	for _, tc := range invalid {
		t.Run(tc.name, func(t *testing.T) {
			if err := callSchema.Validate(instance(t, []byte(tc.data))); err == nil {
				t.Errorf("schema accepts an invalid call:\n%s", tc.data)
			}
			_, err := jobs.DecodeCall([]byte(tc.data), "partner-a-api")
			if !tc.workerIgnores && err == nil {
				t.Errorf("the schema rejects a call the worker accepts: schema and jobs.Call.Normalize disagree\n%s", tc.data)
			}
		})
	}
}

func TestSchemaResultSamples(t *testing.T) {
	_, resultSchema := compileSchemas(t)
	completed := time.Date(2026, 11, 29, 14, 0, 0, 123456789, time.UTC)
	call := &jobs.Call{ID: "c-1", Connection: "partner-a-api", Metadata: map[string]string{"flow": "a"}}

	valid := map[string][]byte{}
	for _, code := range jobs.Codes() {
		r := jobs.FailedResult(call, jobs.Errorf(code, "what went wrong and what to check"))
		r.Attempt, r.Worker = 1, "w-1"
		valid["go/failed-"+string(code)] = mustJSON(t, r)
	}
	valid["go/rejected-before-attempt"] = mustJSON(t, jobs.FailedResult(nil, jobs.Errorf(jobs.CodeInvalidCall, "call has no id")))
	ok := &jobs.Result{
		ID: "c-2", Connection: "partner-a-api", OK: true, Status: 200, Attempt: 2, Worker: "w-2",
		Headers: map[string][]string{"Content-Type": {"application/json"}}, Body: `{"ok":true}`,
		Timing:      jobs.Timing{QueuedMS: 1.5, DNSMS: 0.2, ConnectMS: 0.3, TLSMS: 2.25, TTFBMS: 4, TotalMS: 8.125},
		ClientCert:  &jobs.ClientCert{Subject: "CN=flow,O=acme", Serial: "1a2b3c", NotAfter: completed.AddDate(1, 0, 0)},
		CompletedAt: completed,
	}
	valid["go/ok"] = mustJSON(t, ok)
	binary := *ok
	binary.SetBody([]byte{0xff, 0xfe, 0})
	valid["go/binary"] = mustJSON(t, &binary)
	fault := *ok
	fault.OK, fault.Status, fault.Body = false, 500, "<soap:Envelope/>"
	fault.SOAPFault = &jobs.SOAPFault{Code: "soap:Server", Reason: "requested failure", Detail: "<d/>"}
	valid["go/soap-fault"] = mustJSON(t, &fault)
	notFound := *ok
	notFound.OK, notFound.Status = false, 404
	valid["go/http-404"] = mustJSON(t, &notFound)
	valid["json/future-field"] = []byte(`{"id":"x","connection":"c","ok":false,"status":0,"attempt":1,"worker":"w","timing":{"queued_ms":0,"dns_ms":0,"connect_ms":0,"tls_ms":0,"ttfb_ms":0,"total_ms":0},"completed_at":"2026-11-29T14:00:00Z","later_field":3}`)
	progress := notFound
	progress.Status, progress.Progress, progress.RetryInMS = 503, true, 250
	progress.Error = jobs.Errorf(jobs.CodeHTTPStatus, "the partner answered HTTP 503 on attempt 2; retrying in 250ms")
	valid["go/progress"] = mustJSON(t, &progress)
	for name, data := range valid {
		t.Run(name, func(t *testing.T) {
			if err := resultSchema.Validate(instance(t, data)); err != nil {
				t.Errorf("schema rejects a valid result: %v\n%s", err, data)
			}
		})
	}

	base := func(edit func(m map[string]any)) []byte {
		var m map[string]any
		if err := json.Unmarshal(valid["go/ok"], &m); err != nil {
			t.Fatal(err)
		}
		edit(m)
		return mustJSON(t, m)
	}
	for name, data := range map[string][]byte{
		"fail/no-timing":         base(func(m map[string]any) { delete(m, "timing") }),
		"fail/no-completed-at":   base(func(m map[string]any) { delete(m, "completed_at") }),
		"fail/completed-at-text": base(func(m map[string]any) { m["completed_at"] = "yesterday" }),
		"fail/status-string":     base(func(m map[string]any) { m["status"] = "200" }),
		"fail/ok-with-error": base(func(m map[string]any) {
			m["error"] = map[string]any{"code": "timeout", "message": "m", "retryable": true}
		}),
		"fail/ok-with-500": base(func(m map[string]any) { m["status"] = 500 }),
		"fail/progress-ok": base(func(m map[string]any) { m["progress"], m["retry_in_ms"] = true, 100 }),
		"fail/progress-no-retry-in": base(func(m map[string]any) {
			m["ok"], m["status"], m["progress"] = false, 503, true
		}),
		"fail/retry-in-on-final": base(func(m map[string]any) { m["ok"], m["status"], m["retry_in_ms"] = false, 503, 100 }),
		"fail/unknown-error-code": base(func(m map[string]any) {
			m["ok"] = false
			m["error"] = map[string]any{"code": "oops", "message": "m", "retryable": false}
		}),
		"fail/error-no-message": base(func(m map[string]any) {
			m["ok"] = false
			m["error"] = map[string]any{"code": "timeout", "retryable": true}
		}),
		"fail/timing-negative":    base(func(m map[string]any) { m["timing"].(map[string]any)["total_ms"] = -1 }),
		"fail/timing-missing-tls": base(func(m map[string]any) { delete(m["timing"].(map[string]any), "tls_ms") }),
		"fail/serial-upper":       base(func(m map[string]any) { m["client_cert"].(map[string]any)["serial"] = "1A2B" }),
		"fail/fault-no-reason":    base(func(m map[string]any) { m["ok"] = false; m["soap_fault"] = map[string]any{"code": "soap:Server"} }),
		"fail/body-and-base64":    base(func(m map[string]any) { m["body_base64"] = "AA==" }),
		"fail/base64-garbage":     base(func(m map[string]any) { delete(m, "body"); m["body_base64"] = "not base64!" }),
	} {
		t.Run(name, func(t *testing.T) {
			if err := resultSchema.Validate(instance(t, data)); err == nil {
				t.Errorf("schema accepts an invalid result:\n%s", data)
			}
		})
	}
}
