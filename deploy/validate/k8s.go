package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/kustomize/api/krusty"
	kustypes "sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// Validator validates Kubernetes manifests. KEDA checks ScaledObjects.
type Validator struct {
	KEDA *KEDA
}

// object is one decoded manifest document.
type object struct {
	source     string
	index      int
	apiVersion string
	kind       string
	name       string
	typed      any // *appsv1.Deployment, *corev1.Service, ..., *ScaledObject
}

func (o *object) where() string {
	return fmt.Sprintf("%s: document %d (%s %s)", o.source, o.index, o.kind, o.name)
}

// problems collects problem lines.
type problems []string

func (p *problems) add(where, format string, args ...any) {
	*p = append(*p, where+": "+fmt.Sprintf(format, args...))
}

// KubernetesPath validates a folder, a file or "-" (stdin). It returns the
// number of objects checked and the problems found.
func (v *Validator) KubernetesPath(path string) (int, []string) {
	var probs problems
	if path == "-" {
		data, err := io.ReadAll(os.Stdin)
		if err != nil {
			return 0, []string{"stdin: " + err.Error()}
		}
		objs := v.decodeStream("stdin", data, &probs)
		crossCheck(objs, true, &probs)
		return len(objs), probs
	}
	info, err := os.Stat(path)
	if err != nil {
		return 0, []string{err.Error()}
	}
	if !info.IsDir() {
		data, err := os.ReadFile(path)
		if err != nil {
			return 0, []string{err.Error()}
		}
		objs := v.decodeStream(path, data, &probs)
		crossCheck(objs, true, &probs)
		return len(objs), probs
	}

	files, err := filepath.Glob(filepath.Join(path, "*.yaml"))
	if err != nil {
		return 0, []string{err.Error()}
	}
	yml, _ := filepath.Glob(filepath.Join(path, "*.yml"))
	files = append(files, yml...)
	sort.Strings(files)
	var all []*object
	var kustomization string
	for _, f := range files {
		if base := filepath.Base(f); base == "kustomization.yaml" || base == "kustomization.yml" {
			kustomization = f
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			probs.add(f, "%v", err)
			continue
		}
		all = append(all, v.decodeStream(f, data, &probs)...)
	}
	crossCheck(all, false, &probs)
	// Every Secret the Deployment needs must be at least in an example file.
	checkSecretsDefined(all, &probs)
	n := len(all)
	if kustomization != "" {
		n += v.kustomize(path, kustomization, files, &probs)
	}
	return n, probs
}

// kustomize checks the kustomization file strictly, that it lists every
// manifest of the folder (but *.example.yaml), renders it with kustomize's
// library and validates the rendered objects.
func (v *Validator) kustomize(dir, file string, files []string, probs *problems) int {
	data, err := os.ReadFile(file)
	if err != nil {
		probs.add(file, "%v", err)
		return 0
	}
	var k kustypes.Kustomization
	if err := yaml.UnmarshalStrict(data, &k); err != nil {
		probs.add(file, "not a valid Kustomization: %v", err)
		return 0
	}
	if k.APIVersion != kustypes.KustomizationVersion || k.Kind != kustypes.KustomizationKind {
		probs.add(file, "apiVersion/kind must be %s/%s, not %s/%s", kustypes.KustomizationVersion, kustypes.KustomizationKind, k.APIVersion, k.Kind)
	}
	if k.Namespace != "" {
		probs.add(file, "sets namespace %q; the manifests are meant to be namespace-agnostic", k.Namespace)
	}
	for _, f := range files {
		base := filepath.Base(f)
		if base == filepath.Base(file) || strings.HasSuffix(base, ".example.yaml") {
			continue
		}
		if !slices.Contains(k.Resources, base) {
			probs.add(file, "does not list %s in resources (name it *.example.yaml if it is not meant to be applied)", base)
		}
	}
	resMap, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		probs.add(file, "kustomize build %s: %v", dir, err)
		return 0
	}
	out, err := resMap.AsYaml()
	if err != nil {
		probs.add(file, "kustomize build %s: %v", dir, err)
		return 0
	}
	objs := v.decodeStream("kustomize build "+dir, out, probs)
	if len(objs) == 0 {
		probs.add(file, "kustomize build rendered no objects")
	}
	crossCheck(objs, false, probs)
	return len(objs)
}

// decodeStream splits a multi-document YAML stream and decodes each document.
func (v *Validator) decodeStream(source string, data []byte, probs *problems) []*object {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var objs []*object
	for i := 1; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			probs.add(source, "document %d: %v", i, err)
			break
		}
		if isEmptyDoc(doc) {
			i--
			continue
		}
		if o := v.decode(source, i, doc, probs); o != nil {
			objs = append(objs, o)
		}
	}
	return objs
}

func isEmptyDoc(doc []byte) bool {
	for _, line := range strings.Split(string(doc), "\n") {
		line = strings.TrimSpace(line)
		if line != "" && line != "---" && !strings.HasPrefix(line, "#") {
			return false
		}
	}
	return true
}

// decode strictly decodes one document into the typed struct of its kind and
// checks it on its own.
func (v *Validator) decode(source string, index int, doc []byte, probs *problems) *object {
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	where := fmt.Sprintf("%s: document %d", source, index)
	if err := yaml.Unmarshal(doc, &head); err != nil {
		probs.add(where, "not YAML: %s", oneLine(err))
		return nil
	}
	if head.APIVersion == "" || head.Kind == "" {
		probs.add(where, "apiVersion and kind are required")
		return nil
	}
	o := &object{source: source, index: index, apiVersion: head.APIVersion, kind: head.Kind, name: head.Metadata.Name}
	strict := func(into any) bool {
		if err := yaml.UnmarshalStrict(doc, into); err != nil {
			probs.add(o.where(), "does not decode strictly as %s %s: %s", head.APIVersion, head.Kind, oneLine(err))
			return false
		}
		o.typed = into
		return true
	}
	switch head.APIVersion + "/" + head.Kind {
	case "v1/ConfigMap":
		var cm corev1.ConfigMap
		if strict(&cm) {
			checkMeta(o, cm.ObjectMeta, probs)
			for k := range cm.Data {
				for _, e := range validation.IsConfigMapKey(k) {
					probs.add(o.where(), "data key %q: %s", k, e)
				}
			}
		}
	case "v1/Secret":
		var s corev1.Secret
		if strict(&s) {
			checkMeta(o, s.ObjectMeta, probs)
			for k := range secretKeys(&s) {
				for _, e := range validation.IsConfigMapKey(k) {
					probs.add(o.where(), "key %q: %s", k, e)
				}
			}
		}
	case "v1/Service":
		var s corev1.Service
		if strict(&s) {
			checkMeta(o, s.ObjectMeta, probs)
			checkService(o, &s, probs)
		}
	case "apps/v1/Deployment":
		var d appsv1.Deployment
		if strict(&d) {
			checkMeta(o, d.ObjectMeta, probs)
			checkDeployment(o, &d, probs)
		}
	case "policy/v1/PodDisruptionBudget":
		var pdb policyv1.PodDisruptionBudget
		if strict(&pdb) {
			checkMeta(o, pdb.ObjectMeta, probs)
			checkPDB(o, &pdb, probs)
		}
	case "keda.sh/v1alpha1/ScaledObject":
		so, ok := v.KEDA.ValidateScaledObject(o, doc, probs)
		if ok {
			o.typed = so
			checkMeta(o, so.Metadata, probs)
		}
	case kustypes.KustomizationVersion + "/" + kustypes.KustomizationKind:
		var k kustypes.Kustomization
		strict(&k)
	default:
		probs.add(o.where(), "apiVersion %s kind %s is not one this validator knows; add it to decode()", head.APIVersion, head.Kind)
		return nil
	}
	if o.typed == nil {
		return nil
	}
	return o
}

func secretKeys(s *corev1.Secret) map[string]bool {
	keys := map[string]bool{}
	for k := range s.Data {
		keys[k] = true
	}
	for k := range s.StringData {
		keys[k] = true
	}
	return keys
}

// checkMeta: a valid name, valid labels, and no namespace (the manifests are
// namespace-agnostic: kubectl -n or the kustomization picks it).
func checkMeta(o *object, m metav1.ObjectMeta, probs *problems) {
	if m.Name == "" {
		probs.add(o.where(), "metadata.name is required")
	}
	for _, e := range validation.IsDNS1123Subdomain(m.Name) {
		probs.add(o.where(), "metadata.name %q: %s", m.Name, e)
	}
	if m.Namespace != "" {
		probs.add(o.where(), "metadata.namespace %q is set; keep the manifests namespace-agnostic", m.Namespace)
	}
	checkLabels(o, "metadata.labels", m.Labels, probs)
}

func checkLabels(o *object, field string, l map[string]string, probs *problems) {
	for k, v := range l {
		for _, e := range validation.IsQualifiedName(k) {
			probs.add(o.where(), "%s key %q: %s", field, k, e)
		}
		for _, e := range validation.IsValidLabelValue(v) {
			probs.add(o.where(), "%s %s=%q: %s", field, k, v, e)
		}
	}
}

func selectorOf(o *object, field string, sel *metav1.LabelSelector, probs *problems) labels.Selector {
	if sel == nil || (len(sel.MatchLabels) == 0 && len(sel.MatchExpressions) == 0) {
		probs.add(o.where(), "%s is required and must not be empty", field)
		return nil
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		probs.add(o.where(), "%s: %v", field, err)
		return nil
	}
	return s
}

func checkDeployment(o *object, d *appsv1.Deployment, probs *problems) {
	sel := selectorOf(o, "spec.selector", d.Spec.Selector, probs)
	checkLabels(o, "spec.template.metadata.labels", d.Spec.Template.Labels, probs)
	if sel != nil && !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		probs.add(o.where(), "spec.selector does not match spec.template.metadata.labels; the Deployment would own no pods")
	}
	if d.Spec.Replicas != nil && *d.Spec.Replicas < 1 {
		probs.add(o.where(), "spec.replicas %d: run at least one worker", *d.Spec.Replicas)
	}
	checkPodSpec(o, &d.Spec.Template.Spec, probs)
}

// checkPodSpec checks what the API server would reject and the hardening
// every mtlsrelay manifest must keep: non-root, read-only root file system,
// no privilege escalation, resource requests and a memory limit.
func checkPodSpec(o *object, ps *corev1.PodSpec, probs *problems) {
	if len(ps.Containers) == 0 {
		probs.add(o.where(), "spec.template.spec.containers: at least one container is required")
	}
	volumes := map[string]bool{}
	for _, vol := range ps.Volumes {
		if volumes[vol.Name] {
			probs.add(o.where(), "volume %q is defined twice", vol.Name)
		}
		volumes[vol.Name] = true
		for _, e := range validation.IsDNS1123Label(vol.Name) {
			probs.add(o.where(), "volume name %q: %s", vol.Name, e)
		}
	}
	if ps.TerminationGracePeriodSeconds == nil {
		probs.add(o.where(), "spec.template.spec.terminationGracePeriodSeconds must be set above worker.shutdown_grace")
	}
	podNonRoot := ps.SecurityContext != nil && ps.SecurityContext.RunAsNonRoot != nil && *ps.SecurityContext.RunAsNonRoot
	names := map[string]bool{}
	for i := range ps.Containers {
		c := &ps.Containers[i]
		cw := fmt.Sprintf("container %q", c.Name)
		if c.Name == "" {
			probs.add(o.where(), "container %d has no name", i)
		}
		for _, e := range validation.IsDNS1123Label(c.Name) {
			probs.add(o.where(), "%s: name: %s", cw, e)
		}
		if names[c.Name] {
			probs.add(o.where(), "%s is defined twice", cw)
		}
		names[c.Name] = true
		if c.Image == "" {
			probs.add(o.where(), "%s: image is required", cw)
		}
		ports := map[string]int32{}
		for _, p := range c.Ports {
			if p.ContainerPort < 1 || p.ContainerPort > 65535 {
				probs.add(o.where(), "%s: containerPort %d out of range", cw, p.ContainerPort)
			}
			if p.Name != "" {
				for _, e := range validation.IsValidPortName(p.Name) {
					probs.add(o.where(), "%s: port name %q: %s", cw, p.Name, e)
				}
				ports[p.Name] = p.ContainerPort
			}
		}
		for name, pr := range map[string]*corev1.Probe{"startupProbe": c.StartupProbe, "livenessProbe": c.LivenessProbe, "readinessProbe": c.ReadinessProbe} {
			if pr == nil {
				continue
			}
			n := 0
			if pr.HTTPGet != nil {
				n++
				checkPortRef(o, cw+" "+name+".httpGet.port", pr.HTTPGet.Port, ports, probs)
				if !strings.HasPrefix(pr.HTTPGet.Path, "/") {
					probs.add(o.where(), "%s %s.httpGet.path %q must start with /", cw, name, pr.HTTPGet.Path)
				}
			}
			if pr.TCPSocket != nil {
				n++
				checkPortRef(o, cw+" "+name+".tcpSocket.port", pr.TCPSocket.Port, ports, probs)
			}
			if pr.Exec != nil {
				n++
			}
			if pr.GRPC != nil {
				n++
			}
			if n != 1 {
				probs.add(o.where(), "%s %s must have exactly one handler, has %d", cw, name, n)
			}
		}
		for _, m := range c.VolumeMounts {
			if !volumes[m.Name] {
				probs.add(o.where(), "%s: volumeMount %q names no volume", cw, m.Name)
			}
			if !strings.HasPrefix(m.MountPath, "/") {
				probs.add(o.where(), "%s: mountPath %q must be absolute", cw, m.MountPath)
			}
		}
		req, lim := c.Resources.Requests, c.Resources.Limits
		for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			if _, ok := req[r]; !ok {
				probs.add(o.where(), "%s: resources.requests.%s is required", cw, r)
			}
		}
		if _, ok := lim[corev1.ResourceMemory]; !ok {
			probs.add(o.where(), "%s: resources.limits.memory is required", cw)
		}
		for r, l := range lim {
			if q, ok := req[r]; ok && q.Cmp(l) > 0 {
				probs.add(o.where(), "%s: resources.requests.%s %s is above the limit %s", cw, r, q.String(), l.String())
			}
		}
		sc := c.SecurityContext
		nonRoot := podNonRoot || (sc != nil && sc.RunAsNonRoot != nil && *sc.RunAsNonRoot)
		if !nonRoot {
			probs.add(o.where(), "%s: runAsNonRoot must be true (pod or container securityContext)", cw)
		}
		if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			probs.add(o.where(), "%s: securityContext.readOnlyRootFilesystem must be true", cw)
		}
		if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			probs.add(o.where(), "%s: securityContext.allowPrivilegeEscalation must be false", cw)
		}
	}
}

func checkPortRef(o *object, field string, port intstr.IntOrString, named map[string]int32, probs *problems) {
	if port.Type == intstr.String {
		if _, ok := named[port.StrVal]; !ok {
			probs.add(o.where(), "%s names port %q, which the container does not declare", field, port.StrVal)
		}
		return
	}
	if port.IntVal < 1 || port.IntVal > 65535 {
		probs.add(o.where(), "%s %d out of range", field, port.IntVal)
	}
}

func checkService(o *object, s *corev1.Service, probs *problems) {
	if len(s.Spec.Ports) == 0 {
		probs.add(o.where(), "spec.ports: at least one port is required")
	}
	if len(s.Spec.Selector) == 0 {
		probs.add(o.where(), "spec.selector is required")
	}
	for _, p := range s.Spec.Ports {
		if p.Port < 1 || p.Port > 65535 {
			probs.add(o.where(), "port %d out of range", p.Port)
		}
		if len(s.Spec.Ports) > 1 && p.Name == "" {
			probs.add(o.where(), "a Service with several ports must name each")
		}
	}
}

func checkPDB(o *object, pdb *policyv1.PodDisruptionBudget, probs *problems) {
	selectorOf(o, "spec.selector", pdb.Spec.Selector, probs)
	if (pdb.Spec.MinAvailable == nil) == (pdb.Spec.MaxUnavailable == nil) {
		probs.add(o.where(), "set exactly one of spec.minAvailable and spec.maxUnavailable")
	}
}

// crossCheck checks references between objects: selectors that select a
// Deployment's pods, named target ports, ConfigMaps and their keys, Secret
// keys, the ScaledObject's target. Secrets are created by the operator, so a
// Secret missing from the set is not a problem here (checkSecretsDefined
// checks the folder's examples). partial is set for a single file or stdin:
// objects defined elsewhere are not problems then, but wrong keys or ports
// of objects that are present still are.
func crossCheck(objs []*object, partial bool, probs *problems) {
	configMaps := map[string]*corev1.ConfigMap{}
	secrets := map[string]*corev1.Secret{}
	deployments := map[string]*appsv1.Deployment{}
	for _, o := range objs {
		switch t := o.typed.(type) {
		case *corev1.ConfigMap:
			configMaps[t.Name] = t
		case *corev1.Secret:
			secrets[t.Name] = t
		case *appsv1.Deployment:
			deployments[t.Name] = t
		}
	}
	selects := func(sel labels.Selector) []*appsv1.Deployment {
		var out []*appsv1.Deployment
		for _, d := range deployments {
			if sel != nil && !sel.Empty() && sel.Matches(labels.Set(d.Spec.Template.Labels)) {
				out = append(out, d)
			}
		}
		return out
	}
	checkConfigMap := func(o *object, field, name string, optional *bool, keys []string) {
		if optional != nil && *optional {
			return
		}
		cm, ok := configMaps[name]
		if !ok {
			if !partial {
				probs.add(o.where(), "%s names ConfigMap %q, which is not defined", field, name)
			}
			return
		}
		for _, k := range keys {
			if _, ok := cm.Data[k]; !ok {
				if _, ok := cm.BinaryData[k]; !ok {
					probs.add(o.where(), "%s names key %q, which ConfigMap %s does not have", field, k, name)
				}
			}
		}
	}
	checkSecret := func(o *object, field, name string, optional *bool, keys []string) {
		if optional != nil && *optional {
			return
		}
		s, ok := secrets[name]
		if !ok {
			return
		}
		have := secretKeys(s)
		for _, k := range keys {
			if !have[k] {
				probs.add(o.where(), "%s names key %q, which Secret %s does not have", field, k, name)
			}
		}
	}
	for _, o := range objs {
		switch t := o.typed.(type) {
		case *appsv1.Deployment:
			ps := &t.Spec.Template.Spec
			for _, vol := range ps.Volumes {
				if cm := vol.ConfigMap; cm != nil {
					checkConfigMap(o, "volume "+vol.Name, cm.Name, cm.Optional, itemKeys(cm.Items))
				}
				if s := vol.Secret; s != nil {
					checkSecret(o, "volume "+vol.Name, s.SecretName, s.Optional, itemKeys(s.Items))
				}
			}
			for _, c := range ps.Containers {
				for _, ef := range c.EnvFrom {
					if ef.ConfigMapRef != nil {
						checkConfigMap(o, "container "+c.Name+" envFrom", ef.ConfigMapRef.Name, ef.ConfigMapRef.Optional, nil)
					}
					if ef.SecretRef != nil {
						checkSecret(o, "container "+c.Name+" envFrom", ef.SecretRef.Name, ef.SecretRef.Optional, nil)
					}
				}
				for _, e := range c.Env {
					if e.ValueFrom == nil {
						continue
					}
					if r := e.ValueFrom.ConfigMapKeyRef; r != nil {
						checkConfigMap(o, "env "+e.Name, r.Name, r.Optional, []string{r.Key})
					}
					if r := e.ValueFrom.SecretKeyRef; r != nil {
						checkSecret(o, "env "+e.Name, r.Name, r.Optional, []string{r.Key})
					}
				}
			}
		case *corev1.Service:
			targets := selects(labels.SelectorFromSet(t.Spec.Selector))
			if len(targets) == 0 && (!partial || len(deployments) > 0) {
				probs.add(o.where(), "spec.selector %v selects no Deployment's pods", t.Spec.Selector)
			}
			for _, p := range t.Spec.Ports {
				if p.TargetPort.Type != intstr.String {
					continue
				}
				for _, d := range targets {
					if !podDeclaresPort(&d.Spec.Template.Spec, p.TargetPort.StrVal) {
						probs.add(o.where(), "port %s: targetPort %q is not a named port of Deployment %s", p.Name, p.TargetPort.StrVal, d.Name)
					}
				}
			}
		case *policyv1.PodDisruptionBudget:
			if t.Spec.Selector == nil {
				continue
			}
			sel, err := metav1.LabelSelectorAsSelector(t.Spec.Selector)
			if err != nil {
				continue
			}
			targets := selects(sel)
			if len(targets) == 0 && (!partial || len(deployments) > 0) {
				probs.add(o.where(), "spec.selector selects no Deployment's pods")
			}
			for _, d := range targets {
				if t.Spec.MinAvailable != nil && t.Spec.MinAvailable.Type == intstr.Int && d.Spec.Replicas != nil && t.Spec.MinAvailable.IntVal >= *d.Spec.Replicas {
					probs.add(o.where(), "minAvailable %d is not below Deployment %s's %d replicas: no pod could ever be evicted (node drains would hang)", t.Spec.MinAvailable.IntVal, d.Name, *d.Spec.Replicas)
				}
			}
		case *ScaledObject:
			ref := t.Spec.ScaleTargetRef
			if (ref.Kind == "" || ref.Kind == "Deployment") && deployments[ref.Name] == nil && (!partial || len(deployments) > 0) {
				probs.add(o.where(), "spec.scaleTargetRef names Deployment %q, which is not defined", ref.Name)
			}
		}
	}
}

// checkSecretsDefined: every Secret a Deployment of the folder uses is
// defined there, at least in a *.example.yaml file, so an operator sees its
// keys.
func checkSecretsDefined(objs []*object, probs *problems) {
	defined := map[string]bool{}
	for _, o := range objs {
		if s, ok := o.typed.(*corev1.Secret); ok {
			defined[s.Name] = true
		}
	}
	for _, o := range objs {
		d, ok := o.typed.(*appsv1.Deployment)
		if !ok {
			continue
		}
		var names []string
		ps := &d.Spec.Template.Spec
		for _, vol := range ps.Volumes {
			if vol.Secret != nil {
				names = append(names, vol.Secret.SecretName)
			}
		}
		for _, c := range ps.Containers {
			for _, ef := range c.EnvFrom {
				if ef.SecretRef != nil {
					names = append(names, ef.SecretRef.Name)
				}
			}
			for _, e := range c.Env {
				if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
					names = append(names, e.ValueFrom.SecretKeyRef.Name)
				}
			}
		}
		for _, n := range names {
			if !defined[n] {
				probs.add(o.where(), "uses Secret %q, which no manifest of the folder defines (add it to a *.example.yaml with placeholders)", n)
			}
		}
	}
}

func itemKeys(items []corev1.KeyToPath) []string {
	var keys []string
	for _, it := range items {
		keys = append(keys, it.Key)
	}
	return keys
}

func podDeclaresPort(ps *corev1.PodSpec, name string) bool {
	for _, c := range ps.Containers {
		for _, p := range c.Ports {
			if p.Name == name {
				return true
			}
		}
	}
	return false
}
