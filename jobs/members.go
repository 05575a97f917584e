package jobs

import (
	"bytes"
	stdjson "encoding/json"
	"fmt"
	"reflect"
	"strings"
)

// membersOf returns the JSON member names of a struct's fields.
func membersOf(v any) [][]byte {
	var names [][]byte
	t := reflect.TypeOf(v)
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if name != "" && name != "-" {
			names = append(names, []byte(name))
		}
	}
	return names
}

var (
	callMembers    = membersOf(Call{})
	soapMembers    = membersOf(SOAP{})
	bodyRefMembers = membersOf(RequestBodyRef{})
)

// maxJSONDepth bounds how deeply a call's JSON may nest; a call's own
// shape is three levels deep.
const maxJSONDepth = 32

// jsonObject is an object or array being scanned.
type jsonObject struct {
	object bool
	name   string   // for messages: "" for the call, else its path
	fields [][]byte // the member names a struct decodes it with, or nil
	keys   [][]byte // member names seen, unescaped
}

// checkMembers refuses JSON that two readers could take for two different
// calls: a member name given twice in one object (escapes decoded, so
// "\u0069d" is "id"), and a member of the call or of its soap object
// spelled in another case, such as "ID" for "id" (Unicode folding, as
// decoders match: "ſ" is "s"). encoding/json and goccy both accept them,
// keeping the last duplicate and matching names regardless of case, so a
// JSON policy filter in front of the relay would check another call than
// the one the worker runs.
//
// data has already decoded as a call, so it is well-formed JSON; this is a
// scanner of structure only, with no allocation per value (a tokenizer
// cost twice the decoding itself).
func checkMembers(data []byte) error {
	// A call nests three levels, with a dozen members at the top: room
	// for those up front saves the slices' growth on every call.
	stack := make([]jsonObject, 0, 4)
	topKeys := make([][]byte, 0, len(callMembers))
	expectKey, soapNext, bodyRefNext := false, false, false
	for i := 0; i < len(data); i++ {
		switch data[i] {
		case '{', '[':
			if len(stack) >= maxJSONDepth {
				return fmt.Errorf("the JSON nests deeper than %d levels", maxJSONDepth)
			}
			o := jsonObject{object: data[i] == '{'}
			if len(stack) > 0 {
				o.name = stack[len(stack)-1].childName()
			}
			switch {
			case len(stack) == 0 && o.object:
				o.fields, o.keys = callMembers, topKeys
			case soapNext && o.object:
				o.fields = soapMembers
			case bodyRefNext && o.object:
				o.fields = bodyRefMembers
			}
			stack = append(stack, o)
			expectKey, soapNext, bodyRefNext = o.object, false, false
		case '}', ']':
			stack = stack[:len(stack)-1]
			expectKey = false
		case ',':
			expectKey = len(stack) > 0 && stack[len(stack)-1].object
		case ':':
			expectKey = false
		case '"':
			end := stringEnd(data, i)
			if expectKey {
				top := &stack[len(stack)-1]
				key, err := unescapeKey(data[i : end+1])
				if err != nil {
					return err
				}
				if err := top.add(key); err != nil {
					return err
				}
				soapNext = len(stack) == 1 && string(key) == "soap"
				bodyRefNext = len(stack) == 1 && string(key) == "body_ref"
			}
			i = end
		}
	}
	return nil
}

// add records member name key of o, refusing a duplicate or a field name
// in another case.
func (o *jsonObject) add(key []byte) error {
	for _, k := range o.keys {
		if bytes.Equal(k, key) {
			return fmt.Errorf("member %q appears twice in %s; give each member once", truncate(string(key), 64), o.what())
		}
	}
	o.keys = append(o.keys, key)
	for _, f := range o.fields {
		if bytes.EqualFold(f, key) && !bytes.Equal(f, key) {
			return fmt.Errorf("member %q of %s must be spelled %q; member names are case-sensitive", truncate(string(key), 64), o.what(), f)
		}
	}
	return nil
}

// childName names a value inside o: its last member, or o itself for an
// array's elements.
func (o *jsonObject) childName() string {
	if !o.object || len(o.keys) == 0 {
		return o.name
	}
	last := string(o.keys[len(o.keys)-1])
	if o.name == "" {
		return last
	}
	return o.name + "." + last
}

func (o *jsonObject) what() string {
	if o.name == "" {
		return "the call"
	}
	return fmt.Sprintf("%q", truncate(o.name, 64))
}

// stringEnd returns the index of the quote that closes the string opening
// at data[start].
func stringEnd(data []byte, start int) int {
	for j := start + 1; j < len(data); j++ {
		switch data[j] {
		case '\\':
			j++
		case '"':
			return j
		}
	}
	return len(data) - 1
}

// unescapeKey returns the member name of quoted, a JSON string with its
// quotes; without escapes it is quoted's own bytes.
func unescapeKey(quoted []byte) ([]byte, error) {
	if bytes.IndexByte(quoted, '\\') < 0 {
		return quoted[1 : len(quoted)-1], nil
	}
	var s string
	if err := stdjson.Unmarshal(quoted, &s); err != nil {
		return nil, fmt.Errorf("a member name does not decode: %v", err)
	}
	return []byte(s), nil
}
