package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// KEDAModule is the Go module whose CRD and scaler source are the reference.
const KEDAModule = "github.com/kedacore/keda/v2"

// DefaultKEDAVersion is the KEDA release the manifests are checked against.
const DefaultKEDAVersion = "v2.21.0"

// kedaSums pins the module's content hash (the h1: of go.sum) per version,
// so the schema used is exactly the one reviewed; the go command also checks
// it against the checksum database when it downloads the module.
var kedaSums = map[string]string{
	"v2.21.0": "h1:R6z2HZvstK4RLUMxroNACzBj74xGxt3kG59b5Xc+Xps=",
}

// scalerSources maps a trigger type to the file of KEDA's module that
// declares its parameters and the struct that holds them.
var scalerSources = map[string]struct{ file, typ string }{
	"nats-jetstream": {"pkg/scalers/nats_jetstream_scaler.go", "natsJetStreamMetadata"},
}

// KEDA validates ScaledObjects with the CRD schema and scaler parameters of
// one KEDA module version, fetched through the Go module proxy (or taken
// from the module cache) once.
type KEDA struct {
	Version string

	once   sync.Once
	err    error
	dir    string
	schema *jsonschema.Schema
	params map[string][]scalerParam
}

// scalerParam is one parameter of a scaler, from its `keda:"..."` tag.
type scalerParam struct {
	names    []string
	order    []string
	optional bool
	def      string
	hasDef   bool
	enum     []string
	goType   string
}

// ScaledObject is the part of a ScaledObject the cross-checks read; it is
// decoded only after the CRD schema accepted the document.
type ScaledObject struct {
	Metadata metav1.ObjectMeta `json:"metadata"`
	Spec     struct {
		ScaleTargetRef struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Name       string `json:"name"`
		} `json:"scaleTargetRef"`
		MinReplicaCount *int32 `json:"minReplicaCount"`
		MaxReplicaCount *int32 `json:"maxReplicaCount"`
		Triggers        []struct {
			Type              string            `json:"type"`
			Name              string            `json:"name"`
			Metadata          map[string]string `json:"metadata"`
			AuthenticationRef *struct {
				Name string `json:"name"`
			} `json:"authenticationRef"`
		} `json:"triggers"`
	} `json:"spec"`
}

func (k *KEDA) load() error {
	k.once.Do(func() { k.err = k.doLoad() })
	return k.err
}

func (k *KEDA) doLoad() error {
	dir, err := moduleDir(KEDAModule, k.Version)
	if err != nil {
		return err
	}
	k.dir = dir
	crdPath := filepath.Join(dir, "config", "crd", "bases", "keda.sh_scaledobjects.yaml")
	data, err := os.ReadFile(crdPath)
	if err != nil {
		return err
	}
	var crd struct {
		Spec struct {
			Versions []struct {
				Name   string `json:"name"`
				Served bool   `json:"served"`
				Schema struct {
					OpenAPIV3Schema map[string]any `json:"openAPIV3Schema"`
				} `json:"schema"`
			} `json:"versions"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(data, &crd); err != nil {
		return fmt.Errorf("%s: %w", crdPath, err)
	}
	var openapi map[string]any
	for _, v := range crd.Spec.Versions {
		if v.Name == "v1alpha1" && v.Served {
			openapi = v.Schema.OpenAPIV3Schema
		}
	}
	if openapi == nil {
		return fmt.Errorf("%s has no served version v1alpha1", crdPath)
	}
	schemaDoc := structural(openapi)
	schemaDoc["$schema"] = "http://json-schema.org/draft-04/schema#"
	raw, err := json.Marshal(schemaDoc)
	if err != nil {
		return err
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return err
	}
	c := jsonschema.NewCompiler()
	const url = "https://keda.sh/crd/scaledobjects.keda.sh/v1alpha1.json"
	if err := c.AddResource(url, doc); err != nil {
		return err
	}
	if k.schema, err = c.Compile(url); err != nil {
		return fmt.Errorf("compile the ScaledObject schema of %s@%s: %w", KEDAModule, k.Version, err)
	}
	k.params = map[string][]scalerParam{}
	for trigger, src := range scalerSources {
		params, err := parseScalerParams(filepath.Join(dir, src.file), src.typ)
		if err != nil {
			return fmt.Errorf("%s@%s: %w", KEDAModule, k.Version, err)
		}
		k.params[trigger] = params
	}
	return nil
}

// moduleDir downloads module@version through the Go module proxy, or finds
// it in the module cache, and returns its folder. It runs outside any
// module, so no go.mod or go.sum is touched.
func moduleDir(module, version string) (string, error) {
	tmp, err := os.MkdirTemp("", "validate-mod-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	cmd := exec.Command("go", "mod", "download", "-json", module+"@"+version)
	cmd.Dir = tmp
	cmd.Env = append(os.Environ(), "GOFLAGS=", "GOWORK=off", "GO111MODULE=on")
	out, err := cmd.Output()
	var info struct{ Dir, Sum, Error string }
	if jerr := json.Unmarshal(out, &info); jerr != nil || err != nil || info.Error != "" {
		return "", fmt.Errorf("go mod download %s@%s: %v %s", module, version, err, info.Error)
	}
	if want, ok := kedaSums[version]; ok && module == KEDAModule && info.Sum != want {
		return "", fmt.Errorf("%s@%s has hash %s, want %s", module, version, info.Sum, want)
	}
	return info.Dir, nil
}

// structural turns a CRD's OpenAPI v3 schema into a JSON Schema (draft 4,
// which OpenAPI 3.0's schema object follows) that rejects unknown fields, as
// the API server does with strict field validation (kubectl apply
// --validate=strict): an object with properties and neither
// additionalProperties nor x-kubernetes-preserve-unknown-fields takes no other
// field. int-or-string and nullable become their JSON Schema equivalents.
// CEL rules (x-kubernetes-validations) are not evaluated here.
func structural(n map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range n {
		switch k {
		case "properties", "patternProperties", "definitions":
			props := map[string]any{}
			for name, p := range v.(map[string]any) {
				props[name] = structural(p.(map[string]any))
			}
			out[k] = props
		case "items", "additionalProperties", "not":
			if m, ok := v.(map[string]any); ok {
				out[k] = structural(m)
			} else {
				out[k] = v
			}
		case "allOf", "anyOf", "oneOf":
			var list []any
			for _, e := range v.([]any) {
				list = append(list, structural(e.(map[string]any)))
			}
			out[k] = list
		case "x-kubernetes-int-or-string", "x-kubernetes-preserve-unknown-fields", "x-kubernetes-embedded-resource",
			"x-kubernetes-validations", "x-kubernetes-list-type", "x-kubernetes-list-map-keys", "x-kubernetes-map-type", "nullable":
			// handled below, or no JSON Schema equivalent
		default:
			out[k] = v
		}
	}
	if n["x-kubernetes-int-or-string"] == true {
		delete(out, "type")
		out["anyOf"] = []any{map[string]any{"type": "integer"}, map[string]any{"type": "string"}}
	}
	if t, ok := out["type"].(string); ok && n["nullable"] == true {
		out["type"] = []any{t, "null"}
	}
	_, hasProps := n["properties"]
	_, hasAdditional := n["additionalProperties"]
	if hasProps && !hasAdditional && n["x-kubernetes-preserve-unknown-fields"] != true {
		out["additionalProperties"] = false
	}
	return out
}

// parseScalerParams reads the `keda:"..."` tags of struct typ in a scaler's
// source file: the metadata keys the scaler accepts, required or not, typed.
func parseScalerParams(path, typ string) ([]scalerParam, error) {
	f, err := parser.ParseFile(token.NewFileSet(), path, nil, 0)
	if err != nil {
		return nil, err
	}
	var params []scalerParam
	found := false
	ast.Inspect(f, func(n ast.Node) bool {
		ts, ok := n.(*ast.TypeSpec)
		if !ok || ts.Name.Name != typ {
			return true
		}
		st, ok := ts.Type.(*ast.StructType)
		if !ok {
			return false
		}
		found = true
		for _, field := range st.Fields.List {
			if field.Tag == nil {
				continue
			}
			tag, err := strconv.Unquote(field.Tag.Value)
			if err != nil {
				continue
			}
			kt := reflect.StructTag(tag).Get("keda")
			if kt == "" {
				continue
			}
			p := scalerParam{goType: exprString(field.Type)}
			for _, part := range strings.Split(kt, ",") {
				key, val, hasVal := strings.Cut(strings.TrimSpace(part), "=")
				val = strings.TrimSpace(val)
				switch key {
				case "name":
					p.names = strings.Split(val, ";")
				case "order":
					p.order = strings.Split(val, ";")
				case "optional":
					p.optional = !hasVal || val == "true"
				case "default":
					p.def, p.hasDef = val, true
				case "enum":
					p.enum = strings.Split(val, ";")
				}
			}
			if len(p.names) > 0 {
				params = append(params, p)
			}
		}
		return false
	})
	if !found || len(params) == 0 {
		return nil, fmt.Errorf("%s: no struct %s with keda tags; the scaler changed, update scalerSources", path, typ)
	}
	return params, nil
}

func exprString(e ast.Expr) string {
	switch t := e.(type) {
	case *ast.Ident:
		return t.Name
	case *ast.StarExpr:
		return "*" + exprString(t.X)
	case *ast.SelectorExpr:
		return exprString(t.X) + "." + t.Sel.Name
	case *ast.ArrayType:
		return "[]" + exprString(t.Elt)
	case *ast.MapType:
		return "map[" + exprString(t.Key) + "]" + exprString(t.Value)
	}
	return fmt.Sprintf("%T", e)
}

// ValidateScaledObject validates one ScaledObject document.
func (k *KEDA) ValidateScaledObject(o *object, doc []byte, probs *problems) (*ScaledObject, bool) {
	if err := k.load(); err != nil {
		probs.add(o.where(), "cannot load KEDA's CRD schema: %v", err)
		return nil, false
	}
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		probs.add(o.where(), "not strict YAML: %v", err)
		return nil, false
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(js))
	if err != nil {
		probs.add(o.where(), "%v", err)
		return nil, false
	}
	if err := k.schema.Validate(inst); err != nil {
		probs.add(o.where(), "rejected by the ScaledObject CRD schema of KEDA %s: %s", k.Version, oneLine(err))
		return nil, false
	}
	// metadata is an open object in the CRD; decode it as the API server would.
	var strictMeta struct {
		APIVersion string            `json:"apiVersion"`
		Kind       string            `json:"kind"`
		Metadata   metav1.ObjectMeta `json:"metadata"`
		Spec       json.RawMessage   `json:"spec"`
		Status     json.RawMessage   `json:"status"`
	}
	if err := yaml.UnmarshalStrict(doc, &strictMeta); err != nil {
		probs.add(o.where(), "metadata does not decode strictly: %v", err)
		return nil, false
	}
	var so ScaledObject
	if err := yaml.Unmarshal(doc, &so); err != nil {
		probs.add(o.where(), "%v", err)
		return nil, false
	}
	// The CRD's CEL rule, by hand: minReplicaCount <= maxReplicaCount (default 100).
	if so.Spec.MinReplicaCount != nil {
		max := int32(100)
		if so.Spec.MaxReplicaCount != nil {
			max = *so.Spec.MaxReplicaCount
		}
		if *so.Spec.MinReplicaCount > max {
			probs.add(o.where(), "minReplicaCount %d is above maxReplicaCount %d", *so.Spec.MinReplicaCount, max)
		}
	}
	for i, t := range so.Spec.Triggers {
		params, ok := k.params[t.Type]
		if !ok {
			continue // the schema is all this validator knows of other scalers
		}
		k.checkTrigger(o, fmt.Sprintf("trigger %d (%s)", i, t.Type), t.Metadata, t.AuthenticationRef != nil, params, probs)
	}
	return &so, true
}

// checkTrigger checks a trigger's metadata as KEDA's typed config parser
// does: known keys only (or <key>FromEnv), required ones present, values
// parse as the field's Go type and fall in its enum.
func (k *KEDA) checkTrigger(o *object, where string, md map[string]string, hasAuth bool, params []scalerParam, probs *problems) {
	known := map[string]scalerParam{}
	var names []string
	for _, p := range params {
		for _, n := range p.names {
			known[n] = p
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for key := range md {
		if _, ok := known[strings.TrimSuffix(key, "FromEnv")]; !ok {
			probs.add(o.where(), "%s: metadata %q is not a parameter of KEDA %s's scaler (known: %s)", where, key, k.Version, strings.Join(names, ", "))
		}
	}
	for _, p := range params {
		var val string
		var present bool
		for _, n := range p.names {
			if v, ok := md[n]; ok {
				val, present = v, true
			} else if _, ok := md[n+"FromEnv"]; ok {
				present = true
				val = ""
			}
		}
		if !present {
			fromAuth := hasAuth && slices.Contains(p.order, "authParams")
			if !p.optional && !p.hasDef && !fromAuth {
				probs.add(o.where(), "%s: metadata %q is required", where, p.names[0])
			}
			continue
		}
		if val == "" {
			continue
		}
		var err error
		switch p.goType {
		case "int", "int32", "int64":
			_, err = strconv.ParseInt(val, 10, 64)
		case "float64", "float32":
			_, err = strconv.ParseFloat(val, 64)
		case "bool":
			_, err = strconv.ParseBool(val)
		}
		if err != nil {
			probs.add(o.where(), "%s: metadata %s=%q is not a valid %s", where, p.names[0], val, p.goType)
		}
		if len(p.enum) > 0 && !slices.Contains(p.enum, val) {
			probs.add(o.where(), "%s: metadata %s=%q is not one of %v", where, p.names[0], val, p.enum)
		}
	}
}

func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}
