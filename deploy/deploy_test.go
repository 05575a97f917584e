package deploy

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"go.yaml.in/yaml/v3"

	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/secrets"
	"github.com/mtlsrelay/mtlsrelay/secrets/cyberark"
	"github.com/mtlsrelay/mtlsrelay/secrets/vault"
	"github.com/mtlsrelay/mtlsrelay/worker"
)

// These tests check the deployment files in two layers:
//
//   - TestManifestsValidate builds ./validate (its own Go module, so that
//     k8s.io/api, kustomize, compose-go and KEDA's CRD stay out of
//     mtlsrelay's module graph) and runs it: strict decoding of every
//     Kubernetes manifest into k8s.io/api types, the ScaledObject against
//     KEDA's CRD schema and scaler parameters, the kustomization rendered by
//     kustomize, the compose file loaded by compose-go. Broken manifests
//     made in memory must be rejected.
//   - The other tests check what only mtlsrelay knows: the worker configs
//     load, ports, probes and grace periods agree with them, the NATS
//     servers' flags parse as nats-server's, the CLI flags exist.

// ---- the schema validator (deploy/validate)

var (
	validatorOnce sync.Once
	validatorBin  string
	validatorErr  error
)

// validator builds deploy/validate once per test binary. The first build
// downloads its modules through the Go module proxy and compiles k8s.io/api
// (about a minute on two cores); later builds come from the build cache.
func validator(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: not building deploy/validate")
	}
	validatorOnce.Do(func() {
		dir, err := os.MkdirTemp("", "mtlsrelay-validate-")
		if err != nil {
			validatorErr = err
			return
		}
		validatorBin = filepath.Join(dir, "validate")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", validatorBin, ".")
		cmd.Dir = "validate"
		// The nested module is built on its own: no workspace, its own go.sum.
		cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly -buildvcs=false")
		if out, err := cmd.CombinedOutput(); err != nil {
			validatorErr = fmt.Errorf("go build in deploy/validate: %v\n%s", err, out)
		}
	})
	if validatorErr != nil {
		t.Fatal(validatorErr)
	}
	return validatorBin
}

// runValidator runs the validator in this folder with args and stdin.
func runValidator(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, validator(t), args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func TestManifestsValidate(t *testing.T) {
	out, err := runValidator(t, "", "-k8s", "k8s", "-k8s", "k8s-zone-dmz", "-compose", "compose.yaml")
	if err != nil {
		t.Fatalf("the manifests are not valid: %v\n%s", err, out)
	}
	t.Log(strings.TrimSpace(out))
}

// TestManifestsValidateRejects feeds broken variants of the real manifests,
// made in memory, to the validator: each must be rejected with the reason.
func TestManifestsValidateRejects(t *testing.T) {
	deployment := readFile(t, "k8s/deployment.yaml")
	scaled := readFile(t, "k8s/scaledobject.yaml")
	service := readFile(t, "k8s/service.yaml")
	pdb := readFile(t, "k8s/pdb.yaml")
	compose := readFile(t, "compose.yaml")
	for _, tc := range []struct {
		name    string
		compose bool   // the document is a compose file, else Kubernetes
		doc     string // the broken document(s)
		want    string // in the validator's output
	}{
		{name: "fail/deployment-misspelt-field", doc: edit(t, deployment, "  replicas: 2", "  replica: 2"), want: `unknown field "replica"`},
		{name: "fail/deployment-wrong-type", doc: edit(t, deployment, "terminationGracePeriodSeconds: 40", `terminationGracePeriodSeconds: "forty"`), want: "cannot unmarshal string"},
		{name: "fail/deployment-bad-quantity", doc: edit(t, deployment, "memory: 512Mi", "memory: 512 megabytes"), want: "quantities must match"},
		{name: "fail/deployment-selector-mismatch", doc: edit(t, deployment, "      app.kubernetes.io/component: worker\n  strategy", "      app.kubernetes.io/component: wrkr\n  strategy"), want: "does not match spec.template.metadata.labels"},
		{name: "fail/deployment-runs-as-root", doc: edit(t, edit(t, deployment, "runAsNonRoot: true\n        runAsUser", "runAsNonRoot: false\n        runAsUser"), "            runAsNonRoot: true\n", ""), want: "runAsNonRoot must be true"},
		{name: "fail/deployment-probe-port", doc: edit(t, deployment, "path: /healthz\n              port: admin", "path: /healthz\n              port: admn"), want: `names port "admn"`},
		{name: "fail/service-target-port", doc: deployment + "---\n" + edit(t, service, "targetPort: admin", "targetPort: metrics"), want: `targetPort "metrics" is not a named port`},
		{name: "fail/pdb-min-and-max", doc: edit(t, pdb, "  minAvailable: 1\n", "  minAvailable: 1\n  maxUnavailable: 1\n"), want: "exactly one of spec.minAvailable and spec.maxUnavailable"},
		{name: "fail/pdb-blocks-evictions", doc: deployment + "---\n" + edit(t, pdb, "minAvailable: 1", "minAvailable: 2"), want: "no pod could ever be evicted"},
		{name: "fail/unknown-kind", doc: edit(t, pdb, "kind: PodDisruptionBudget", "kind: PodDisruptionBudgt"), want: "is not one this validator knows"},
		{name: "fail/namespaced", doc: edit(t, pdb, "  name: mtlsrelay-worker\n", "  name: mtlsrelay-worker\n  namespace: prod\n"), want: "namespace-agnostic"},
		{name: "fail/scaledobject-unknown-field", doc: edit(t, scaled, "pollingInterval: 10", "pollingIntervall: 10"), want: "additional properties 'pollingIntervall' not allowed"},
		{name: "fail/scaledobject-metadata-not-string", doc: edit(t, scaled, `lagThreshold: "64"`, "lagThreshold: 64"), want: "want string"},
		{name: "fail/scaledobject-unknown-scaler-key", doc: edit(t, scaled, "consumer: workers", "consumer_name: workers"), want: `metadata "consumer_name" is not a parameter`},
		{name: "fail/scaledobject-lag-not-a-number", doc: edit(t, scaled, `lagThreshold: "64"`, `lagThreshold: "lots"`), want: `lagThreshold="lots" is not a valid int64`},
		{name: "fail/scaledobject-no-stream", doc: edit(t, scaled, "        stream: MTLSRELAY_CALLS\n", ""), want: `metadata "stream" is required`},
		{name: "fail/scaledobject-min-above-max", doc: edit(t, scaled, "minReplicaCount: 2", "minReplicaCount: 30"), want: "above maxReplicaCount"},
		{name: "fail/scaledobject-no-triggers", doc: scaled[:strings.Index(scaled, "  triggers:")], want: "missing property 'triggers'"},
		{name: "fail/compose-unknown-key", compose: true, doc: edit(t, compose, "  stop_grace_period: 35s", "  stop_grace_periodd: 35s"), want: "stop_grace_periodd"},
		{name: "fail/compose-wrong-type", compose: true, doc: edit(t, compose, "read_only: true", "read_only: sometimes"), want: "rejected by compose-go"},
		{name: "fail/compose-missing-dependency", compose: true, doc: edit(t, compose, "    nats-3: {condition: service_healthy}", "    nats-4: {condition: service_healthy}"), want: "nats-4"},
		{name: "fail/compose-build-target", compose: true, doc: edit(t, compose, "target: partner", "target: partnr"), want: `build target "partnr" is not a stage`},
		{name: "fail/compose-missing-config", compose: true, doc: edit(t, compose, "./config/worker.yaml:", "./config/wroker.yaml:"), want: "does not exist"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			flag := "-k8s"
			if tc.compose {
				flag = "-compose"
			}
			out, err := runValidator(t, tc.doc, flag, "-")
			if err == nil {
				t.Fatalf("the validator accepted a broken manifest:\n%s", out)
			}
			if !strings.Contains(out, tc.want) {
				t.Errorf("validator output lacks %q:\n%s", tc.want, out)
			}
		})
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// edit replaces old with new exactly once, so that a negative case cannot
// silently stop applying when a manifest changes.
func edit(t *testing.T, s, old, new string) string {
	t.Helper()
	if n := strings.Count(s, old); n != 1 {
		t.Fatalf("edit: %q occurs %d times, want once", old, n)
	}
	return strings.Replace(s, old, new, 1)
}

// ---- generic YAML access for the product checks

type doc = map[string]any

func yamlDocs(t *testing.T, path string) []doc {
	t.Helper()
	dec := yaml.NewDecoder(strings.NewReader(readFile(t, path)))
	var docs []doc
	for {
		var d doc
		err := dec.Decode(&d)
		if err == io.EOF {
			return docs
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if d != nil {
			docs = append(docs, d)
		}
	}
}

// dig walks maps and lists: keys are map keys, ints are list indexes.
func dig(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func str(v any) string {
	if v == nil {
		return ""
	}
	return fmt.Sprint(v)
}

func strs(v any) []string {
	var out []string
	for _, e := range asList(v) {
		out = append(out, str(e))
	}
	return out
}

func asList(v any) []any { l, _ := v.([]any); return l }

func kubeObject(t *testing.T, kind, name string) doc {
	t.Helper()
	files, _ := filepath.Glob("k8s/*.yaml")
	for _, f := range files {
		for _, d := range yamlDocs(t, f) {
			if str(d["kind"]) == kind && str(dig(d, "metadata", "name")) == name {
				return d
			}
		}
	}
	t.Fatalf("no %s %s in deploy/k8s", kind, name)
	return nil
}

// ---- Kubernetes: the worker config and what must agree with it

func TestKubernetesWorker(t *testing.T) {
	cm := kubeObject(t, "ConfigMap", "mtlsrelay-worker-config")
	cfg, err := worker.ParseConfig([]byte(str(dig(cm, "data", "worker.yaml"))))
	if err == nil {
		err = checkProviderSections(cfg)
	}
	if err != nil {
		t.Fatalf("the ConfigMap's worker.yaml does not load: %v", err)
	}
	host, port, err := net.SplitHostPort(cfg.Worker.AdminAddr)
	if err != nil || host != "0.0.0.0" {
		t.Errorf("worker.admin_addr %q must listen on 0.0.0.0 so that the kubelet's probes reach it", cfg.Worker.AdminAddr)
	}
	if cfg.NATS.URL == "" {
		t.Errorf("nats.url is empty: the pods would start an embedded server each")
	}
	if cfg.NATS.Replicas != 3 {
		t.Errorf("nats.replicas = %d, want 3 on a NATS cluster", cfg.NATS.Replicas)
	}
	// The workers log in to NATS, over TLS: the example is for production.
	if !cfg.NATS.HasCredentials() {
		t.Errorf("the nats section has no credentials (user and password, creds_file, token or nkey_seed_file): the workers would connect anonymously")
	}
	if cfg.NATS.User != "" && cfg.NATS.Password == "" {
		t.Errorf("nats.user %q has no password", cfg.NATS.User)
	}
	if cfg.NATS.AllowPlaintext {
		t.Errorf("nats.allow_plaintext is set: the production example must reach NATS over TLS")
	}
	if err := cfg.NATS.CheckPlaintext(cfg.NATS.URL); err != nil {
		t.Error(err)
	}

	d := kubeObject(t, "Deployment", "mtlsrelay-worker")
	if r, _ := dig(d, "spec", "replicas").(int); r != 2 {
		t.Errorf("spec.replicas = %v, want 2", dig(d, "spec", "replicas"))
	}
	pod := dig(d, "spec", "template", "spec")
	grace, _ := dig(pod, "terminationGracePeriodSeconds").(int)
	if time.Duration(grace)*time.Second <= cfg.Worker.ShutdownGrace.D()+5*time.Second {
		t.Errorf("terminationGracePeriodSeconds %d must exceed worker.shutdown_grace %s by a margin: the kubelet kills the pod at the end", grace, cfg.Worker.ShutdownGrace.D())
	}
	c := dig(pod, "containers", 0)
	if p := str(dig(c, "ports", 0, "containerPort")); p != port || str(dig(c, "ports", 0, "name")) != "admin" {
		t.Errorf("container port admin = %s, but admin_addr listens on %s", p, port)
	}
	for probe, path := range map[string]string{"livenessProbe": "/healthz", "readinessProbe": "/readyz", "startupProbe": "/readyz"} {
		if got := str(dig(c, probe, "httpGet", "path")); got != path {
			t.Errorf("%s path = %q, want %s", probe, got, path)
		}
		if got := str(dig(c, probe, "httpGet", "port")); got != "admin" {
			t.Errorf("%s port = %q, want the admin port", probe, got)
		}
	}
	args := strs(dig(c, "args"))
	if len(args) == 0 || args[0] != "serve" {
		t.Errorf("container args %v must start with serve", args)
	}
	checkServeFlags(t, "deployment.yaml", args)
	if got := str(dig(c, "securityContext", "readOnlyRootFilesystem")); got != "true" {
		t.Errorf("readOnlyRootFilesystem = %q", got)
	}

	// Every secret reference of the config resolves inside the pod: env:
	// names come from the Secret mounted with envFrom, file: paths lie in
	// a mounted volume whose Secret holds that key.
	mounts := map[string]string{} // mount path -> volume
	for _, m := range asList(dig(c, "volumeMounts")) {
		mounts[str(dig(m, "mountPath"))] = str(dig(m, "name"))
	}
	secretOfVolume := map[string]string{}
	itemsOfVolume := map[string]map[string]string{} // volume -> path -> key, when it lists items
	for _, v := range asList(dig(pod, "volumes")) {
		if s := str(dig(v, "secret", "secretName")); s != "" {
			secretOfVolume[str(dig(v, "name"))] = s
			for _, it := range asList(dig(v, "secret", "items")) {
				if itemsOfVolume[str(dig(v, "name"))] == nil {
					itemsOfVolume[str(dig(v, "name"))] = map[string]string{}
				}
				itemsOfVolume[str(dig(v, "name"))][str(dig(it, "path"))] = str(dig(it, "key"))
			}
		}
	}
	// secretFile reports why path is not a key of a Secret mounted in the
	// pod ("" when it is).
	secretFile := func(path string) string {
		dir, file := filepath.Split(path)
		vol, ok := mounts[strings.TrimSuffix(dir, "/")]
		if !ok {
			return "is in no mounted folder"
		}
		key := file
		if items := itemsOfVolume[vol]; items != nil {
			if key, ok = items[file]; !ok {
				return fmt.Sprintf("is not among the items of volume %s", vol)
			}
		}
		sec := kubeObject(t, "Secret", secretOfVolume[vol])
		if dig(sec, "stringData", key) == nil && dig(sec, "data", key) == nil {
			return fmt.Sprintf("Secret %s has no key %s", secretOfVolume[vol], key)
		}
		return ""
	}
	envNames := map[string]bool{}
	for _, e := range asList(dig(c, "env")) {
		envNames[str(dig(e, "name"))] = true
	}
	for _, ef := range asList(dig(c, "envFrom")) {
		if s := str(dig(ef, "secretRef", "name")); s != "" {
			for k := range dig(kubeObject(t, "Secret", s), "stringData").(map[string]any) {
				envNames[k] = true
			}
		}
	}
	// The NATS credentials reach the pod too: the password (or token) from
	// the environment, the files from mounted Secrets.
	for key, ref := range map[string]string{"nats.password": cfg.NATS.Password, "nats.token": cfg.NATS.Token} {
		if ref == "" {
			continue
		}
		r, err := secrets.ParseRef(ref)
		if err != nil {
			t.Errorf("%s: %v", key, err)
			continue
		}
		switch r.Scheme {
		case secrets.SchemeEnv:
			if !envNames[r.Body] {
				t.Errorf("%s: env:%s is not set in the pod (env or envFrom Secret)", key, r.Body)
			}
		case secrets.SchemeFile:
			if why := secretFile(r.Body); why != "" {
				t.Errorf("%s: file:%s %s", key, r.Body, why)
			}
		default:
			t.Errorf("%s: %s, want an env: or file: reference to a Secret", key, ref)
		}
	}
	for key, path := range map[string]string{
		"nats.creds_file": cfg.NATS.CredsFile, "nats.nkey_seed_file": cfg.NATS.NKeySeedFile,
		"nats.tls.ca_file": cfg.NATS.TLS.CAFile, "nats.tls.cert_file": cfg.NATS.TLS.CertFile, "nats.tls.key_file": cfg.NATS.TLS.KeyFile,
	} {
		if path == "" {
			continue
		}
		if why := secretFile(path); why != "" {
			t.Errorf("%s %s %s", key, path, why)
		}
	}

	for name, p := range cfg.Profiles {
		for _, ref := range []string{p.Keystore, p.Password, p.Truststore} {
			if ref == "" {
				continue
			}
			r, err := secrets.ParseRef(ref)
			if err != nil {
				t.Errorf("profile %s: %v", name, err)
				continue
			}
			switch r.Scheme {
			case secrets.SchemeEnv:
				if !envNames[r.Body] {
					t.Errorf("profile %s: env:%s is not set in the pod (env or envFrom Secret)", name, r.Body)
				}
			case secrets.SchemeFile:
				dir, file := filepath.Split(r.Body)
				vol, ok := mounts[strings.TrimSuffix(dir, "/")]
				if !ok {
					t.Errorf("profile %s: file:%s is in no mounted folder", name, r.Body)
					continue
				}
				sec := kubeObject(t, "Secret", secretOfVolume[vol])
				if dig(sec, "stringData", file) == nil && dig(sec, "data", file) == nil {
					t.Errorf("profile %s: file:%s: Secret %s has no key %s", name, r.Body, secretOfVolume[vol], file)
				}
			}
		}
	}

	// KEDA scales on consumer "workers" of MTLSRELAY_CALLS; the PDB lets a
	// node drain go on at the lowest replica count.
	so := kubeObject(t, "ScaledObject", "mtlsrelay-worker")
	if str(dig(so, "spec", "scaleTargetRef", "name")) != "mtlsrelay-worker" {
		t.Errorf("ScaledObject targets %v", dig(so, "spec", "scaleTargetRef"))
	}
	md := dig(so, "spec", "triggers", 0, "metadata")
	for k, want := range map[string]string{"stream": jobs.StreamCalls, "consumer": jobs.ConsumerWorkers, "account": "$G"} {
		if got := str(dig(md, k)); got != want {
			t.Errorf("trigger metadata %s = %q, want %q", k, got, want)
		}
	}
	if str(dig(so, "spec", "triggers", 0, "type")) != "nats-jetstream" {
		t.Errorf("trigger type %v, want nats-jetstream", dig(so, "spec", "triggers", 0, "type"))
	}
	if lag, err := strconv.Atoi(str(dig(md, "lagThreshold"))); err != nil || lag < 1 {
		t.Errorf("lagThreshold %v must be a positive integer", dig(md, "lagThreshold"))
	}
	if ep := str(dig(md, "natsServerMonitoringEndpoint")); strings.Contains(ep, "://") || !strings.HasSuffix(ep, ":8222") {
		t.Errorf("natsServerMonitoringEndpoint %q must be host:8222, without a scheme", ep)
	}
	// Zone default's workers also take the calls forwarded to their zone.
	md1 := dig(so, "spec", "triggers", 1, "metadata")
	if str(dig(md1, "stream")) != jobs.StreamZones || str(dig(md1, "consumer")) != jobs.ZoneConsumer(jobs.DefaultZone, "") {
		t.Errorf("second trigger %v, want consumer %s of %s", md1, jobs.ZoneConsumer(jobs.DefaultZone, ""), jobs.StreamZones)
	}
	minReplicas, _ := dig(so, "spec", "minReplicaCount").(int)
	minAvailable, _ := dig(kubeObject(t, "PodDisruptionBudget", "mtlsrelay-worker"), "spec", "minAvailable").(int)
	if minReplicas < 2 || minAvailable >= minReplicas {
		t.Errorf("minReplicaCount %d and PDB minAvailable %d: keep two workers and let one be evicted", minReplicas, minAvailable)
	}
}

// ---- compose

func TestCompose(t *testing.T) {
	c := yamlDocs(t, "compose.yaml")[0]
	services, _ := c["services"].(map[string]any)
	svc := func(name string) doc {
		s, ok := services[name].(map[string]any)
		if !ok {
			t.Fatalf("compose.yaml has no service %s", name)
		}
		return s
	}

	// A 3-node JetStream cluster whose flags nats-server itself accepts.
	natsImage := regexp.MustCompile(`^nats:2\.\d+`)
	var clientURLs []string
	clusterNames := map[string]bool{}
	natsUsers := map[string]bool{} // user + NUL + password (as written, ${...} included)
	for _, name := range []string{"nats-1", "nats-2", "nats-3"} {
		s := svc(name)
		if img := str(s["image"]); !natsImage.MatchString(img) {
			t.Errorf("%s: image %q, want nats:2.x", name, img)
		}
		fs := flag.NewFlagSet(name, flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		opts, err := server.ConfigureOptions(fs, strs(s["command"]), func() {}, func() {}, func() {})
		if err != nil {
			t.Errorf("%s: nats-server rejects its flags: %v", name, err)
			continue
		}
		if !opts.JetStream || opts.StoreDir == "" || opts.ServerName != name || opts.HTTPPort != 8222 {
			t.Errorf("%s: jetstream=%v store_dir=%q name=%q http_port=%d", name, opts.JetStream, opts.StoreDir, opts.ServerName, opts.HTTPPort)
		}
		// Clients must log in: no anonymous publisher of calls.
		if opts.Username == "" || opts.Password == "" {
			t.Errorf("%s: no --user and --pass: the server takes anonymous clients", name)
		}
		natsUsers[opts.Username+"\x00"+opts.Password] = true
		clusterNames[opts.Cluster.Name] = true
		var routes []string
		for _, r := range opts.Routes {
			routes = append(routes, r.Host)
		}
		for _, peer := range []string{"nats-1", "nats-2", "nats-3"} {
			if !slices.Contains(routes, peer+":"+strconv.Itoa(opts.Cluster.Port)) {
				t.Errorf("%s: routes %v lack %s:%d", name, routes, peer, opts.Cluster.Port)
			}
		}
		if str(dig(s, "healthcheck", "test", 0)) != "CMD" {
			t.Errorf("%s: needs a healthcheck for the workers' depends_on", name)
		}
		clientURLs = append(clientURLs, "nats://"+name+":4222")
	}
	if len(clusterNames) != 1 || clusterNames[""] {
		t.Errorf("cluster names %v: the three servers must share one", clusterNames)
	}
	if len(natsUsers) != 1 {
		t.Errorf("the NATS servers have %d different users; the workers log in to all three with one", len(natsUsers))
	}

	// Vault in dev mode, over https: -dev-tls writes its CA to a volume
	// that the services reading Vault mount for VAULT_CACERT.
	v := svc("vault")
	vcmd := strs(v["command"])
	if !strings.HasPrefix(str(v["image"]), "hashicorp/vault:") || !slices.Contains(vcmd, "-dev") || !slices.Contains(vcmd, "-dev-tls") {
		t.Errorf("vault: %v %v, want hashicorp/vault in dev mode with -dev-tls", v["image"], vcmd)
	}
	var vaultTLSVolume string
	for _, a := range vcmd {
		if dir, ok := strings.CutPrefix(a, "-dev-tls-cert-dir="); ok {
			for _, m := range strs(v["volumes"]) {
				if parts := strings.Split(m, ":"); len(parts) >= 2 && parts[1] == dir {
					vaultTLSVolume = parts[0]
				}
			}
		}
	}
	if vaultTLSVolume == "" {
		t.Errorf("vault: -dev-tls-cert-dir is not a mounted volume: the workers cannot read its CA")
	}
	if !slices.Contains(vcmd, "-dev-tls-san=vault") {
		t.Errorf("vault: its certificate must name the host the services call it by (-dev-tls-san=vault)")
	}
	for name := range services {
		s := svc(name)
		env, _ := s["environment"].(map[string]any)
		addr := str(env["VAULT_ADDR"])
		if addr == "" {
			continue
		}
		// What the worker's Vault client accepts: https, or http on loopback only.
		if err := (vault.Config{Address: addr}).Validate(); err != nil {
			t.Errorf("%s: VAULT_ADDR %s: %v", name, addr, err)
		}
		ca := str(env["VAULT_CACERT"])
		if u, err := url.Parse(addr); err == nil && u.Scheme == "https" && ca == "" {
			t.Errorf("%s: VAULT_ADDR %s without VAULT_CACERT: Vault's dev CA is not trusted", name, addr)
			continue
		}
		mounted := false
		for _, m := range strs(s["volumes"]) {
			if parts := strings.Split(m, ":"); len(parts) >= 2 && parts[0] == vaultTLSVolume && strings.HasPrefix(ca, parts[1]+"/") {
				mounted = true
			}
		}
		if ca != "" && !mounted {
			t.Errorf("%s: VAULT_CACERT %s is not in volume %s, where Vault writes its CA", name, ca, vaultTLSVolume)
		}
	}

	// The demo partner: certificates for the name the workers call it by.
	if cmd := strings.Join(strs(svc("certs")["command"]), " "); !strings.Contains(cmd, "-gen-only") || !strings.Contains(cmd, "partner") {
		t.Errorf("certs: command %q must generate certificates for host partner", cmd)
	}
	partnerAddr := ""
	if cmd := strs(svc("partner")["command"]); slices.Contains(cmd, "-addr") {
		partnerAddr = cmd[slices.Index(cmd, "-addr")+1]
	}

	workers := 0
	for name := range services {
		s := svc(name)
		cmd := strs(s["command"])
		if len(cmd) == 0 || cmd[0] != "serve" {
			continue
		}
		workers++
		checkServeFlags(t, "compose.yaml "+name, cmd)
		natsFlag := flagValue(cmd, "--nats")
		for _, u := range clientURLs {
			if !strings.Contains(natsFlag, u) {
				t.Errorf("%s: --nats %q lacks %s", name, natsFlag, u)
			}
		}
		// The config it names is mounted from deploy/config and loads.
		cfgPath := flagValue(cmd, "--config")
		var hostPath string
		for _, v := range strs(s["volumes"]) {
			parts := strings.Split(v, ":")
			if len(parts) >= 2 && parts[1] == cfgPath {
				hostPath = parts[0]
			}
		}
		if hostPath == "" {
			t.Errorf("%s: --config %s is not a mounted file", name, cfgPath)
			continue
		}
		cfg, err := worker.LoadConfig(hostPath)
		if err == nil {
			err = checkProviderSections(cfg)
		}
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if grace, err := time.ParseDuration(str(s["stop_grace_period"])); err != nil || grace <= cfg.Worker.ShutdownGrace.D() {
			t.Errorf("%s: stop_grace_period %v must exceed worker.shutdown_grace %s", name, s["stop_grace_period"], cfg.Worker.ShutdownGrace.D())
		}
		env, _ := s["environment"].(map[string]any)
		// The worker logs in to the NATS servers as their user, and the
		// URLs it is given pass its clear-text check (serve would refuse).
		if !cfg.NATS.HasCredentials() {
			t.Errorf("%s: the config's nats section has no credentials", name)
		}
		if r, err := secrets.ParseRef(cfg.NATS.Password); err != nil || r.Scheme != secrets.SchemeEnv {
			t.Errorf("%s: nats.password %q, want an env: reference that compose sets", name, cfg.NATS.Password)
		} else if !natsUsers[cfg.NATS.User+"\x00"+str(env[r.Body])] {
			t.Errorf("%s: nats.user %q with %s=%q is not the NATS servers' --user and --pass", name, cfg.NATS.User, r.Body, str(env[r.Body]))
		}
		if err := cfg.NATS.CheckPlaintext(natsFlag); err != nil {
			t.Errorf("%s: --nats %s: %v", name, natsFlag, err)
		}
		for pname, p := range cfg.Profiles {
			for _, ref := range []string{p.Keystore, p.Password, p.Truststore} {
				r, err := secrets.ParseRef(ref)
				if err != nil {
					continue
				}
				if r.Scheme == secrets.SchemeEnv && env[r.Body] == nil {
					t.Errorf("%s: profile %s reads env:%s, which the service does not set", name, pname, r.Body)
				}
				if r.Scheme == secrets.SchemeFile && !strings.HasPrefix(r.Body, "/certs/") {
					t.Errorf("%s: profile %s reads %s, outside the certs volume", name, pname, r.Body)
				}
				if r.Scheme == secrets.SchemeVault && env["VAULT_ADDR"] == nil {
					t.Errorf("%s: profile %s reads Vault but VAULT_ADDR is not set", name, pname)
				}
			}
		}
		for cname, conn := range cfg.Connections {
			u, err := url.Parse(conn.BaseURL)
			if err != nil || u.Hostname() != "partner" || ":"+u.Port() != partnerAddr {
				t.Errorf("%s: connection %s base_url %s does not reach service partner on %s", name, cname, conn.BaseURL, partnerAddr)
			}
		}
	}
	if workers != 2 {
		t.Errorf("compose.yaml runs %d workers, want 2", workers)
	}
}

// ---- the CLI flags the manifests pass exist

var (
	serveHelpOnce sync.Once
	serveHelp     string
	serveHelpErr  error
)

// checkServeFlags checks that every --flag of a `mtlsrelay serve` command
// line is one that serve accepts, from the built binary's own help.
func checkServeFlags(t *testing.T, where string, args []string) {
	t.Helper()
	serveHelpOnce.Do(func() {
		dir, err := os.MkdirTemp("", "mtlsrelay-deploy-")
		if err != nil {
			serveHelpErr = err
			return
		}
		defer os.RemoveAll(dir)
		bin := filepath.Join(dir, "mtlsrelay")
		if out, err := exec.Command("go", "build", "-o", bin, "../cmd/mtlsrelay").CombinedOutput(); err != nil {
			serveHelpErr = fmt.Errorf("go build ./cmd/mtlsrelay: %v\n%s", err, out)
			return
		}
		out, err := exec.Command(bin, "serve", "--help").CombinedOutput()
		serveHelp, serveHelpErr = string(out), err
	})
	if serveHelpErr != nil {
		t.Fatal(serveHelpErr)
	}
	for _, a := range args {
		if !strings.HasPrefix(a, "--") {
			continue
		}
		name, _, _ := strings.Cut(a, "=")
		if !regexp.MustCompile(`(?m)^\s+(-\w, )?` + regexp.QuoteMeta(name) + `\b`).MatchString(serveHelp) {
			t.Errorf("%s: `mtlsrelay serve` has no flag %s", where, name)
		}
	}
}

// flagValue returns the value of --name V or --name=V.
func flagValue(args []string, name string) string {
	for i, a := range args {
		if a == name && i+1 < len(args) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
	}
	return ""
}

// ---- worker configs under deploy/config

func TestConfigFilesLoad(t *testing.T) {
	files, _ := filepath.Glob("config/*.yaml")
	if len(files) == 0 {
		t.Fatal("no worker configs in deploy/config")
	}
	for _, f := range files {
		cfg, err := worker.LoadConfig(f)
		if err == nil {
			err = checkProviderSections(cfg)
		}
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if err := cfg.NATS.Validate(); err != nil {
			t.Errorf("%s: %v", f, err)
		}
		if cfg.NATS.URL != "" && !cfg.NATS.HasCredentials() {
			t.Errorf("%s: nats.url %s without credentials: the workers would connect anonymously", f, cfg.NATS.URL)
		}
		if err := cfg.NATS.CheckPlaintext(cfg.NATS.URL); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// checkProviderSections refuses a top-level section of cfg that no secret
// provider of the binary reads, as the worker does when it starts.
func checkProviderSections(cfg *worker.Config) error {
	return secrets.CheckSections([]secrets.Provider{vault.Provider{}, cyberark.Provider{}}, cfg.Providers)
}

// ---- Dockerfile

func TestDockerfile(t *testing.T) {
	df := readFile(t, "Dockerfile")
	for _, want := range []string{
		"FROM golang:1.26 AS build",
		"CGO_ENABLED=0 go build",
		"-trimpath",
		`-ldflags="-s -w"`,
		"./cmd/mtlsrelay",
		"FROM gcr.io/distroless/static-debian12:nonroot",
		"EXPOSE 4222 9464",
		`ENTRYPOINT ["/usr/local/bin/mtlsrelay"]`,
		`CMD ["serve"]`,
	} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	// The last stage is the worker image, and it does not run as root.
	stages := regexp.MustCompile(`(?m)^FROM `).FindAllStringIndex(df, -1)
	last := df[stages[len(stages)-1][0]:]
	if !strings.Contains(last, "mtlsrelay") || !regexp.MustCompile(`(?m)^USER (65532|nonroot)`).MatchString(last) {
		t.Errorf("the final stage must be the worker image with a non-root USER:\n%s", last)
	}
	// Every source the build copies is in the build context (.dockerignore).
	ignore := readFile(t, "../.dockerignore")
	for _, p := range []string{"cmd", "jobs", "worker", "secrets", "internal", "examples", "go.mod", "go.sum"} {
		if regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(p) + `/?$`).MatchString(ignore) {
			t.Errorf(".dockerignore excludes %s, which the build needs", p)
		}
	}
}

// The dmz overlay runs the workers with --zones=dmz and scales them on
// what was forwarded to zone dmz; the validator renders it with kustomize
// (TestManifestsValidate).
func TestZoneOverlay(t *testing.T) {
	k := yamlDocs(t, "k8s-zone-dmz/kustomization.yaml")[0]
	text := readFile(t, "k8s-zone-dmz/kustomization.yaml")
	if str(k["nameSuffix"]) != "-dmz" {
		t.Errorf("nameSuffix %v, want -dmz", k["nameSuffix"])
	}
	for _, want := range []string{"value: --zones=dmz", "value: " + jobs.StreamZones, "value: " + jobs.ZoneConsumer("dmz", ""), "path: /spec/triggers/1", "value: mtlsrelay-worker-dmz"} {
		if !strings.Contains(text, want) {
			t.Errorf("k8s-zone-dmz/kustomization.yaml lacks %q", want)
		}
	}
}
