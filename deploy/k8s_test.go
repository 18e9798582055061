package deploy_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/packetparamedic/reflector/controlplane/config"
	"github.com/packetparamedic/reflector/internal/testutil"
)

// k8sRendered is one overlay rendered by `kubectl kustomize`, decoded.
type k8sRendered struct {
	size         int
	namespaces   []k8sNamespace
	configMaps   []k8sConfigMap
	services     []k8sService
	policies     []k8sNetworkPolicy
	statefulSets []k8sStatefulSet
}

// strictDecode decodes one document into v, refusing unknown fields.
func strictDecode(doc []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(doc))
	dec.KnownFields(true)
	return dec.Decode(v)
}

// renderOverlay runs `kubectl kustomize dir` and decodes every object
// strictly into its local API type; an unexpected kind is an error.
func renderOverlay(t *testing.T, kubectl, dir string) k8sRendered {
	t.Helper()
	out, err := exec.Command(kubectl, "kustomize", dir).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, ee.Stderr)
		}
		t.Fatalf("kubectl kustomize %s: %v", dir, err)
	}
	r := k8sRendered{size: len(out)}
	dec := yaml.NewDecoder(bytes.NewReader(out))
	for i := 0; ; i++ {
		var node yaml.Node
		if err := dec.Decode(&node); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatalf("%s: document %d: %v", dir, i, err)
		}
		doc, err := yaml.Marshal(&node)
		if err != nil {
			t.Fatal(err)
		}
		var h struct {
			APIVersion string `yaml:"apiVersion"`
			Kind       string `yaml:"kind"`
		}
		if err := yaml.Unmarshal(doc, &h); err != nil {
			t.Fatal(err)
		}
		var derr error
		switch h.APIVersion + " " + h.Kind {
		case "v1 Namespace":
			var o k8sNamespace
			derr = strictDecode(doc, &o)
			r.namespaces = append(r.namespaces, o)
		case "v1 ConfigMap":
			var o k8sConfigMap
			derr = strictDecode(doc, &o)
			r.configMaps = append(r.configMaps, o)
		case "v1 Service":
			var o k8sService
			derr = strictDecode(doc, &o)
			r.services = append(r.services, o)
		case "networking.k8s.io/v1 NetworkPolicy":
			var o k8sNetworkPolicy
			derr = strictDecode(doc, &o)
			r.policies = append(r.policies, o)
		case "apps/v1 StatefulSet":
			var o k8sStatefulSet
			derr = strictDecode(doc, &o)
			r.statefulSets = append(r.statefulSets, o)
		default:
			t.Fatalf("%s: document %d is an unexpected %s %s", dir, i, h.APIVersion, h.Kind)
		}
		if derr != nil {
			t.Fatalf("%s: %s: %v", dir, h.Kind, derr)
		}
	}
	return r
}

// TestKubernetesOverlays renders every overlay of deploy/k8s and checks the
// fleet layout: one StatefulSet with a volume per pod, one public Service
// (TCP and UDP) per ordinal, one shared configuration that reloads, probes
// and grace periods that fit the lame-duck delay, GOMEMLIMIT from the
// memory limit, metrics reachable only from the monitoring namespace.
func TestKubernetesOverlays(t *testing.T) {
	kubectl := testutil.LookBinary(t, "kubectl")
	overlays, err := filepath.Glob("k8s/overlays/*/kustomization.yaml")
	if err != nil || len(overlays) < 2 {
		t.Fatalf("overlays: %v %v", overlays, err)
	}
	for _, k := range overlays {
		dir := filepath.Dir(k)
		t.Run(filepath.Base(dir), func(t *testing.T) {
			r := renderOverlay(t, kubectl, dir)
			t.Logf("kubectl kustomize %s: %d bytes, %d services", dir, r.size, len(r.services))
			checkFleet(t, r)
		})
	}
}

func checkFleet(t *testing.T, r k8sRendered) {
	if len(r.statefulSets) != 1 || len(r.configMaps) != 1 || len(r.policies) != 1 || len(r.namespaces) != 1 {
		t.Fatalf("want one StatefulSet, ConfigMap, NetworkPolicy and Namespace; got %d, %d, %d, %d",
			len(r.statefulSets), len(r.configMaps), len(r.policies), len(r.namespaces))
	}
	ss := r.statefulSets[0]
	ns := r.namespaces[0].Metadata.Name
	cm := r.configMaps[0]
	cfg, err := config.Parse([]byte(cm.Data["reflector.toml"]), "configmap reflector.toml")
	if err != nil {
		t.Fatalf("configmap reflector.toml: %v", err)
	}
	checkFleetConfig(t, cfg)
	checkPod(t, ss, cm.Metadata.Name, cfg)
	if ss.Spec.VolumeClaimTemplates[0].Metadata.Name != "reflector-data" {
		t.Errorf("volume claim template %q: keep the guide's name reflector-data", ss.Spec.VolumeClaimTemplates[0].Metadata.Name)
	}

	// One public Service per ordinal, TCP and UDP on the control port,
	// selecting exactly that pod; plus the headless governing Service.
	ctrl, _, _ := defaults(t)
	perPod := map[string]bool{}
	for _, s := range r.services {
		if s.Metadata.Namespace != ns {
			t.Errorf("service %s in namespace %q, want %q", s.Metadata.Name, s.Metadata.Namespace, ns)
		}
		if s.Metadata.Name == ss.Spec.ServiceName {
			if s.Spec.ClusterIP != "None" {
				t.Errorf("governing service %s is not headless", s.Metadata.Name)
			}
			continue
		}
		pod := s.Spec.Selector["statefulset.kubernetes.io/pod-name"]
		if pod != s.Metadata.Name || perPod[pod] {
			t.Errorf("service %s selects pod %q: want one service per pod, named after it", s.Metadata.Name, pod)
		}
		perPod[pod] = true
		protos := map[string]bool{}
		for _, p := range s.Spec.Ports {
			if int(p.Port) == ctrl {
				protos[p.Protocol] = true
			}
		}
		if !protos["TCP"] || !protos["UDP"] || s.Spec.ExternalTrafficPolicy != "Local" {
			t.Errorf("service %s: ports %+v, externalTrafficPolicy %q: want %d TCP+UDP, Local", s.Metadata.Name, s.Spec.Ports, s.Spec.ExternalTrafficPolicy, ctrl)
		}
	}
	for i := range int(ss.Spec.Replicas) {
		if !perPod[fmt.Sprintf("%s-%d", ss.Metadata.Name, i)] {
			t.Errorf("no service for pod %s-%d (replicas %d)", ss.Metadata.Name, i, ss.Spec.Replicas)
		}
	}
	if len(perPod) != int(ss.Spec.Replicas) {
		t.Errorf("%d per-pod services for %d replicas", len(perPod), ss.Spec.Replicas)
	}
	checkNetworkPolicy(t, r.policies[0], ctrl)
}

// checkFleetConfig: the shared configuration is the example with the
// metrics listener on and a lame-duck delay.
func checkFleetConfig(t *testing.T, cfg *config.Config) {
	if _, p, _ := net.SplitHostPort(cfg.Metrics.ListenAddress); p != strconv.Itoa(k8sMetricsPt) {
		t.Errorf("configmap metrics listen_address %q: the probe and scrapes need port %d", cfg.Metrics.ListenAddress, k8sMetricsPt)
	}
	if cfg.Limits.LameDuckSec <= 0 {
		t.Errorf("configmap lame_duck_sec = %d: pods must turn unready before their listener closes", cfg.Limits.LameDuckSec)
	}
	c := *cfg
	c.Metrics.ListenAddress, c.Limits.LameDuckSec = "", 0
	if c.TOML() != config.Default().TOML() {
		t.Errorf("configmap reflector.toml differs from the defaults beyond metrics and lame_duck_sec:\n%s", c.TOML())
	}
}

func checkPod(t *testing.T, ss k8sStatefulSet, cmName string, cfg *config.Config) {
	pod := ss.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers", len(pod.Containers))
	}
	c := pod.Containers[0]
	if pod.SecurityContext.RunAsUser != runUID || !pod.SecurityContext.RunAsNonRoot || pod.SecurityContext.FSGroup != runUID ||
		!c.SecurityContext.ReadOnlyRootFilesystem || c.SecurityContext.AllowPrivilegeEscalation == nil || *c.SecurityContext.AllowPrivilegeEscalation ||
		!slices.Equal(c.SecurityContext.Capabilities.Drop, []string{"ALL"}) || c.SecurityContext.SeccompProfile.Type != "RuntimeDefault" {
		t.Errorf("security contexts: pod %+v container %+v", pod.SecurityContext, c.SecurityContext)
	}
	if !strings.HasPrefix(c.Image, "localhost/reflector:") {
		t.Errorf("image %q: set by kustomize images: (localhost/reflector)", c.Image)
	}
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = m.Name
		if (m.MountPath == filepath.Dir(configPath)) != m.ReadOnly {
			t.Errorf("mount %s read-only %v", m.MountPath, m.ReadOnly)
		}
	}
	if mounts[stateDir] != ss.Spec.VolumeClaimTemplates[0].Metadata.Name {
		t.Errorf("state dir mounts %q, not the per-pod claim", mounts[stateDir])
	}
	var cmVol string
	for _, v := range pod.Volumes {
		if v.ConfigMap != nil && v.Name == mounts[filepath.Dir(configPath)] {
			cmVol = v.ConfigMap.Name
		}
	}
	if cmVol != cmName {
		t.Errorf("config mount uses configmap %q, the overlay defines %q", cmVol, cmName)
	}
	var memLimit bool
	for _, e := range c.Env {
		if e.Name == "GOMEMLIMIT" && e.ValueFrom != nil && e.ValueFrom.ResourceFieldRef != nil &&
			e.ValueFrom.ResourceFieldRef.Resource == "limits.memory" && e.ValueFrom.ResourceFieldRef.ContainerName == c.Name {
			memLimit = true
		}
	}
	if !memLimit || c.Resources.Limits["memory"] == "" {
		t.Errorf("GOMEMLIMIT must come from limits.memory (set: %q): env %+v", c.Resources.Limits["memory"], c.Env)
	}
	rp, lp := c.ReadinessProbe, c.LivenessProbe
	if rp == nil || rp.HTTPGet == nil || rp.HTTPGet.Path != "/health" || rp.HTTPGet.Port != "metrics" {
		t.Fatalf("readiness probe must GET /health on the metrics port: %+v", rp)
	}
	if lp == nil || lp.Exec == nil || !slices.Equal(lp.Exec.Command, []string{"/usr/local/bin/reflector", "status", "--live"}) {
		t.Errorf("liveness probe must exec /usr/local/bin/reflector status: %+v", lp)
	}
	// The pod leaves the Service within the lame-duck delay, and the
	// grace period covers the delay, the drain and a margin.
	lame := int64(cfg.Limits.LameDuckSec)
	if unready := int64(rp.PeriodSeconds * max(rp.FailureThreshold, 1)); unready >= lame {
		t.Errorf("readiness notices the lame duck after %d s, not within lame_duck_sec %d", unready, lame)
	}
	if need := lame + int64(cfg.Limits.ShutdownGraceSec) + 5; pod.TerminationGracePeriodSeconds < need {
		t.Errorf("terminationGracePeriodSeconds %d < lame_duck_sec + shutdown_grace_sec + 5 = %d", pod.TerminationGracePeriodSeconds, need)
	}
}

// checkNetworkPolicy: the control port from anywhere, the metrics port
// only from the monitoring namespace, nothing else.
func checkNetworkPolicy(t *testing.T, np k8sNetworkPolicy, ctrl int) {
	if !slices.Equal(np.Spec.PolicyTypes, []string{"Ingress"}) || np.Spec.PodSelector.MatchLabels["app.kubernetes.io/name"] != "reflector" {
		t.Errorf("networkpolicy selects %+v, types %v", np.Spec.PodSelector, np.Spec.PolicyTypes)
	}
	for _, rule := range np.Spec.Ingress {
		for _, p := range rule.Ports {
			switch int(p.Port) {
			case ctrl:
				if len(rule.From) != 0 {
					t.Errorf("control port %d restricted to %+v", ctrl, rule.From)
				}
			case k8sMetricsPt:
				if len(rule.From) != 1 || rule.From[0].NamespaceSelector == nil || rule.From[0].PodSelector != nil ||
					rule.From[0].NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != "monitoring" {
					t.Errorf("metrics port admitted from %+v, want only the monitoring namespace", rule.From)
				}
			default:
				t.Errorf("networkpolicy opens port %d", p.Port)
			}
		}
	}
}

// TestStrictDecodeCatchesTypos proves the strict decode is not a no-op: a
// misspelled pod field and a string where the API wants an integer fail.
func TestStrictDecodeCatchesTypos(t *testing.T) {
	for _, doc := range []string{
		"kind: StatefulSet\nspec:\n  template:\n    spec:\n      terminationGracePeriod: 40\n",
		"kind: StatefulSet\nspec:\n  replicas: many\n",
		"kind: Service\nspec:\n  ports:\n    - port: 4000\n      protocoll: UDP\n",
	} {
		var v any = &k8sStatefulSet{}
		if strings.HasPrefix(doc, "kind: Service") {
			v = &k8sService{}
		}
		if err := strictDecode([]byte(doc), v); err == nil {
			t.Errorf("strict decode accepted:\n%s", doc)
		}
	}
}
