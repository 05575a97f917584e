// Command validate checks mtlsrelay's deployment manifests offline, with the
// schemas of the tools that will read them:
//
//   - Kubernetes objects are decoded strictly into the typed structs of
//     k8s.io/api (unknown or misspelt fields, wrong types and duplicate keys
//     are errors), then checked for required fields and for references
//     between them (selectors, named ports, ConfigMap and Secret keys).
//   - KEDA ScaledObjects are validated against the ScaledObject CRD's
//     OpenAPI v3 schema from the KEDA Go module (config/crd/bases), strictly,
//     and the nats-jetstream trigger's metadata against the parameters
//     declared by KEDA's scaler source in the same module.
//   - A folder with a kustomization.yaml is also rendered with kustomize's
//     own library (what `kubectl apply -k` does) and the result validated.
//   - A compose file is loaded with compose-go (the loader of Docker
//     Compose), which validates it against the Compose specification's schema.
//
// Usage (from this folder; it is its own Go module so that these
// dependencies stay out of mtlsrelay's):
//
//	go run . -k8s ../k8s -compose ../compose.yaml
//	go run . -k8s - < manifest.yaml
//
// It prints one line per problem and exits 1 when there is any.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
)

// listFlag collects a repeatable flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	var k8sPaths, composePaths listFlag
	flag.Var(&k8sPaths, "k8s", "Kubernetes manifests: a folder (all *.yaml; rendered too if it has a kustomization.yaml), a file, or - for stdin; repeatable")
	flag.Var(&composePaths, "compose", "a compose file, or - for stdin; repeatable")
	kedaVersion := flag.String("keda-version", DefaultKEDAVersion, "version of the github.com/kedacore/keda/v2 module whose CRD and scaler are used")
	quiet := flag.Bool("q", false, "print nothing when everything is valid")
	flag.Parse()
	if len(k8sPaths) == 0 && len(composePaths) == 0 {
		fmt.Fprintln(os.Stderr, "usage: validate [-k8s PATH]... [-compose FILE]...")
		os.Exit(2)
	}

	ctx := context.Background()
	v := &Validator{KEDA: &KEDA{Version: *kedaVersion}}
	var problems []string
	var checked int
	for _, p := range k8sPaths {
		n, probs := v.KubernetesPath(p)
		checked += n
		problems = append(problems, probs...)
	}
	for _, p := range composePaths {
		probs := ValidateComposePath(ctx, p)
		checked++
		problems = append(problems, probs...)
	}
	for _, p := range problems {
		fmt.Println(p)
	}
	if len(problems) > 0 {
		fmt.Fprintf(os.Stderr, "validate: %d problem(s)\n", len(problems))
		os.Exit(1)
	}
	if !*quiet {
		fmt.Printf("validate: %d object(s) and file(s) valid\n", checked)
	}
}
