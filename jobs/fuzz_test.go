package jobs_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/mtlsrelay/mtlsrelay/jobs"
)

// FuzzDecodeCall feeds arbitrary bytes to call decoding and validation. The
// seed corpus is in testdata/fuzz/FuzzDecodeCall; run longer with
//
//	go test ./jobs -run '^$' -fuzz FuzzDecodeCall -fuzztime 60s
//
// Properties: no panic; every failure is an invalid_call *jobs.Error; a
// call that decodes is normalized (defaults applied) and survives a JSON
// round trip unchanged.
func FuzzDecodeCall(f *testing.F) {
	for _, seed := range []string{
		`{"id":"a","path":"x"}`,
		`{"id":"a","soap":{"version":"1.2","body":"<a/>"}}`,
		`{"id":"a","method":"post","body_base64":"AAEC","query":{"q":["1","2"]},"headers":{"X":["a","b"]}}`,
		`{"id":"a","url":"https://h.example/p?x=1","reply_to":"mtlsrelay.results.a"}`,
		`{"id":"","connection":"c"}`, `{"id":1}`, `[]`, `null`, `{`, "\xff\xfe",
		`{"id":"a","ID":"b"}`, `{"id":"a","id":"b"}`, `{"id":"a","headers":{"X":["1"],"X":["2"]}}`,
	} {
		f.Add([]byte(seed), "c")
	}
	f.Fuzz(func(t *testing.T, data []byte, subjectConn string) {
		call, err := jobs.DecodeCall(data, subjectConn)
		// The fast decoder must agree with encoding/json, the reference a
		// flow's author reads about.
		if len(data) <= jobs.MaxCallBytes {
			var std jobs.Call
			stdErr := json.Unmarshal(data, &std)
			if stdErr == nil {
				stdErr = std.Normalize(subjectConn)
			}
			// DecodeCall refuses more: ambiguous JSON (duplicate members,
			// names in another case) that encoding/json takes silently.
			ambiguous := err != nil && strings.HasPrefix(jobs.AsError(err).Message, "call is ambiguous JSON")
			if (stdErr == nil) != (err == nil) && !(stdErr == nil && ambiguous) {
				t.Fatalf("DecodeCall error %v, encoding/json error %v", err, stdErr)
			}
			if err == nil && !reflect.DeepEqual(&std, call) {
				t.Fatalf("decoders disagree:\n%+v\n%+v", std, *call)
			}
		}
		if err != nil {
			var je *jobs.Error
			if !errors.As(err, &je) || je.Code != jobs.CodeInvalidCall {
				t.Fatalf("DecodeCall error %v is not an invalid_call *jobs.Error", err)
			}
			return
		}
		if call.Connection == "" || call.Method == "" || call.Idempotent == nil || (call.Kind != jobs.KindREST && call.Kind != jobs.KindSOAP) {
			t.Fatalf("decoded call not normalized: %+v", call)
		}
		again, err := json.Marshal(call)
		if err != nil {
			t.Fatal(err)
		}
		back, err := jobs.DecodeCall(again, subjectConn)
		if err != nil {
			t.Fatalf("re-encoded call does not decode: %v\n%s", err, again)
		}
		b1, _ := json.Marshal(back)
		if string(b1) != string(again) {
			t.Fatalf("round trip changed the call:\n%s\n%s", again, b1)
		}
	})
}
