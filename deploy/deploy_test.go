// Package deploy_test checks the kustomize base in deploy/base: it renders, the API
// server accepts it, its workloads are locked down, and its RBAC is exactly what the
// controller and the propose CronJob use (rbac_test.go runs them as their
// ServiceAccounts against the local control plane).
package deploy_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/rebalancer-dev/rebalancer/internal/localcluster"
)

// shared starts the local control plane for the tests that need one, with the API
// server's audit log on.
var shared = &localcluster.Shared{Options: localcluster.Options{AuditLog: true, PodReadyDelay: 400 * time.Millisecond}}

func TestMain(m *testing.M) {
	code := m.Run()
	shared.Stop()
	if binary != "" && os.Getenv("REBALANCER_TEST_BINARY") == "" {
		_ = os.RemoveAll(filepath.Dir(binary)) // the binary this run built
	}
	os.Exit(code)
}

const (
	namespace     = "rebalancer-system"
	controllerSA  = "rebalancer-controller"
	proposeSA     = "rebalancer-propose"
	baseDir       = "base"
	stopConfigMap = "rebalancer" // executor.Options.StopConfigMap's default
)

// secretsReferenced are the Secrets the base mounts and never creates.
var secretsReferenced = []string{"rebalancer-git", "rebalancer-webhook", "rebalancer-cloud"}

func kubectl() string { return filepath.Join(localcluster.BinDir(), "kubectl") }

// runKubectl runs kubectl and returns its stdout; stderr goes into the error.
func runKubectl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, kubectl(), args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// objects is the rendered base, by kind.
type objects struct {
	all []*unstructured.Unstructured
}

func (o objects) ofKind(kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, u := range o.all {
		if u.GetKind() == kind {
			out = append(out, u)
		}
	}
	return out
}

// one converts the single object of kind and name into a typed object.
func one[T any](t *testing.T, o objects, kind, name string) *T {
	t.Helper()
	for _, u := range o.ofKind(kind) {
		if u.GetName() == name {
			out := new(T)
			require.NoError(t, runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, out))
			return out
		}
	}
	require.Failf(t, "object missing", "%s %s is not in the rendered base", kind, name)
	return nil
}

// render builds the kustomize base with kubectl's kustomize, as users will.
func render(t *testing.T) objects {
	t.Helper()
	out, err := runKubectl(t, "kustomize", baseDir)
	require.NoError(t, err)
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(out), 4096)
	var o objects
	for {
		u := &unstructured.Unstructured{}
		err := dec.Decode(&u.Object)
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		if len(u.Object) > 0 {
			o.all = append(o.all, u)
		}
	}
	require.NotEmpty(t, o.all)
	return o
}

// checkPodSecurity asserts the properties every rebalancer pod has: non-root,
// read-only root filesystem, no privilege escalation, no capabilities, the
// runtime's seccomp profile, requests and limits.
func checkPodSecurity(t *testing.T, what string, spec *corev1.PodSpec) {
	t.Helper()
	psc := spec.SecurityContext
	require.NotNil(t, psc, "%s: pod securityContext", what)
	assert.Equal(t, true, deref(psc.RunAsNonRoot), "%s: runAsNonRoot", what)
	require.NotNil(t, psc.RunAsUser, "%s: runAsUser", what)
	assert.NotZero(t, *psc.RunAsUser, "%s: runAsUser is not root", what)
	require.NotNil(t, psc.SeccompProfile, "%s: seccompProfile", what)
	assert.Equal(t, corev1.SeccompProfileTypeRuntimeDefault, psc.SeccompProfile.Type, "%s", what)
	require.NotEmpty(t, spec.Containers, what)
	for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
		sc := c.SecurityContext
		require.NotNil(t, sc, "%s/%s: securityContext", what, c.Name)
		assert.Equal(t, true, deref(sc.ReadOnlyRootFilesystem), "%s/%s: readOnlyRootFilesystem", what, c.Name)
		assert.Equal(t, false, deref(sc.AllowPrivilegeEscalation), "%s/%s: allowPrivilegeEscalation", what, c.Name)
		assert.Equal(t, false, deref(sc.Privileged), "%s/%s: privileged", what, c.Name)
		require.NotNil(t, sc.Capabilities, "%s/%s: capabilities", what, c.Name)
		assert.Equal(t, []corev1.Capability{"ALL"}, sc.Capabilities.Drop, "%s/%s: drop ALL", what, c.Name)
		assert.Empty(t, sc.Capabilities.Add, "%s/%s: no capability added", what, c.Name)
		for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			req, lim := c.Resources.Requests[r], c.Resources.Limits[r]
			assert.False(t, req.IsZero(), "%s/%s: %s request", what, c.Name, r)
			assert.False(t, lim.IsZero(), "%s/%s: %s limit", what, c.Name, r)
			assert.LessOrEqual(t, req.Cmp(lim), 0, "%s/%s: %s request within the limit", what, c.Name, r)
		}
		// The git cache must be on a writable volume, the root filesystem being read-only.
		cache := flagValue(c.Args, "--cache-dir")
		require.NotEmpty(t, cache, "%s/%s: --cache-dir", what, c.Name)
		assert.True(t, onEmptyDir(spec, &c, cache), "%s/%s: --cache-dir %s is on a mounted emptyDir", what, c.Name, cache)
		assert.True(t, onEmptyDir(spec, &c, "/tmp/x"), "%s/%s: /tmp is a writable emptyDir", what, c.Name)
	}
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

func flagValue(args []string, name string) string {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
	}
	return ""
}

// onEmptyDir reports whether path lies under a mount of an emptyDir volume.
func onEmptyDir(spec *corev1.PodSpec, c *corev1.Container, path string) bool {
	for _, m := range c.VolumeMounts {
		if m.ReadOnly || !strings.HasPrefix(path, strings.TrimSuffix(m.MountPath, "/")+"/") {
			continue
		}
		for _, v := range spec.Volumes {
			if v.Name == m.Name && v.EmptyDir != nil {
				return true
			}
		}
	}
	return false
}

// secretVolumes lists the Secrets a pod mounts.
func secretVolumes(spec *corev1.PodSpec) []string {
	var out []string
	for _, v := range spec.Volumes {
		if v.Secret != nil {
			out = append(out, v.Secret.SecretName)
		}
	}
	return out
}

func TestBaseRendersWithEveryExpectedObject(t *testing.T) {
	o := render(t)
	want := map[string][]string{
		"Namespace":           {namespace},
		"ServiceAccount":      {controllerSA, proposeSA},
		"ClusterRole":         {controllerSA, proposeSA},
		"ClusterRoleBinding":  {controllerSA, proposeSA},
		"Role":                {controllerSA},
		"RoleBinding":         {controllerSA},
		"Deployment":          {controllerSA},
		"Service":             {controllerSA},
		"PodDisruptionBudget": {controllerSA},
		"NetworkPolicy":       {"rebalancer"},
		"CronJob":             {proposeSA},
	}
	for kind, names := range want {
		var got []string
		for _, u := range o.ofKind(kind) {
			got = append(got, u.GetName())
		}
		assert.ElementsMatch(t, names, got, kind)
	}
	for _, u := range o.all {
		if u.GetKind() != "Namespace" && u.GetKind() != "ClusterRole" && u.GetKind() != "ClusterRoleBinding" {
			assert.Equal(t, namespace, u.GetNamespace(), "%s %s is in the controller's namespace", u.GetKind(), u.GetName())
		}
	}
	// The stop switch: the ConfigMap the executor reads, shipped without the
	// annotation, so applying the base never flips the switch either way.
	stop := one[corev1.ConfigMap](t, o, "ConfigMap", stopConfigMap)
	assert.NotContains(t, stop.Annotations, "rebalancer.dev/stop")
	assert.Empty(t, stop.Data)
}

func TestBaseCreatesNoSecretAndMountsOnlyTheDocumentedOnes(t *testing.T) {
	o := render(t)
	assert.Empty(t, o.ofKind("Secret"), "Secrets are referenced by name, never created with values")
	secretish := regexp.MustCompile(`(?i)token|password|secret|private|BEGIN `)
	for _, cm := range o.ofKind("ConfigMap") {
		data, _, _ := unstructured.NestedStringMap(cm.Object, "data")
		for k, v := range data {
			assert.False(t, secretish.MatchString(k) || secretish.MatchString(v), "ConfigMap %s key %s looks like a secret", cm.GetName(), k)
		}
	}
	dep := one[appsv1.Deployment](t, o, "Deployment", controllerSA)
	assert.ElementsMatch(t, secretsReferenced, secretVolumes(&dep.Spec.Template.Spec))
	cj := one[batchv1.CronJob](t, o, "CronJob", proposeSA)
	assert.Subset(t, secretsReferenced, secretVolumes(&cj.Spec.JobTemplate.Spec.Template.Spec))
	assert.NotContains(t, secretVolumes(&cj.Spec.JobTemplate.Spec.Template.Spec), "rebalancer-webhook", "propose serves no webhook")
	for _, spec := range []*corev1.PodSpec{&dep.Spec.Template.Spec, &cj.Spec.JobTemplate.Spec.Template.Spec} {
		for _, c := range spec.Containers {
			for _, e := range c.Env {
				assert.False(t, e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil, "%s: secrets come from mounted files, not env", e.Name)
				assert.False(t, secretish.MatchString(e.Value), "%s: no secret in a literal env value", e.Name)
			}
		}
	}
}

func TestControllerDeploymentIsLockedDownAndHighlyAvailable(t *testing.T) {
	o := render(t)
	dep := one[appsv1.Deployment](t, o, "Deployment", controllerSA)
	assert.Equal(t, int32(2), deref(dep.Spec.Replicas), "two replicas, one leader")
	require.NotNil(t, dep.Spec.Strategy.RollingUpdate)
	assert.Equal(t, 0, dep.Spec.Strategy.RollingUpdate.MaxUnavailable.IntValue(), "a rollout never leaves no replica")
	spec := &dep.Spec.Template.Spec
	assert.Equal(t, controllerSA, spec.ServiceAccountName)
	checkPodSecurity(t, "deployment", spec)
	require.Len(t, spec.Containers, 1)
	c := spec.Containers[0]
	require.NotNil(t, c.LivenessProbe)
	require.NotNil(t, c.LivenessProbe.HTTPGet)
	assert.Equal(t, "/healthz", c.LivenessProbe.HTTPGet.Path)
	require.NotNil(t, c.ReadinessProbe)
	require.NotNil(t, c.ReadinessProbe.HTTPGet)
	assert.Equal(t, "/readyz", c.ReadinessProbe.HTTPGet.Path)
	require.Len(t, c.Ports, 1)
	assert.Equal(t, "http", c.Ports[0].Name)
	assert.Equal(t, "http", c.LivenessProbe.HTTPGet.Port.String())
	assert.Equal(t, ":"+fmt.Sprint(c.Ports[0].ContainerPort), flagValue(c.Args, "--http-address"))
	assert.Equal(t, "controller", c.Args[0])
	assert.Equal(t, "0", flagValue(c.Args, "--propose-interval"), "proposals come from the read-only CronJob")
	assert.Equal(t, "$(POD_NAMESPACE)", flagValue(c.Args, "--namespace"))
	// Identity for the Lease and the claims comes from the downward API.
	envs := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		envs[e.Name] = e
	}
	require.Contains(t, envs, "POD_NAME")
	assert.Equal(t, "metadata.name", envs["POD_NAME"].ValueFrom.FieldRef.FieldPath)
	assert.Equal(t, "metadata.namespace", envs["POD_NAMESPACE"].ValueFrom.FieldRef.FieldPath)
	// Every $(VAR) in the args is defined, or Kubernetes passes it literally.
	for _, a := range c.Args {
		for _, m := range regexp.MustCompile(`\$\(([A-Z_]+)\)`).FindAllStringSubmatch(a, -1) {
			assert.Contains(t, envs, m[1], "arg %s", a)
		}
	}
	for _, f := range []string{"--webhook-secret-file", "--git-token-file", "--vpsie-token-file"} {
		assert.True(t, onSecret(spec, &c, flagValue(c.Args, f)), "%s is on a mounted Secret", f)
	}

	svc := one[corev1.Service](t, o, "Service", controllerSA)
	pdb := one[policyv1.PodDisruptionBudget](t, o, "PodDisruptionBudget", controllerSA)
	np := one[networkingv1.NetworkPolicy](t, o, "NetworkPolicy", "rebalancer")
	podLabels := labels.Set(dep.Spec.Template.Labels)
	assert.True(t, labels.SelectorFromSet(svc.Spec.Selector).Matches(podLabels), "the Service selects the controller")
	require.Len(t, svc.Spec.Ports, 1)
	assert.Equal(t, "http", svc.Spec.Ports[0].TargetPort.String())
	pdbSel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
	require.NoError(t, err)
	assert.True(t, pdbSel.Matches(podLabels), "the PDB selects the controller")
	assert.Equal(t, 1, pdb.Spec.MinAvailable.IntValue(), "one of two replicas always up")
	npSel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
	require.NoError(t, err)
	assert.True(t, npSel.Matches(podLabels), "the NetworkPolicy covers the controller")
	assert.ElementsMatch(t, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}, np.Spec.PolicyTypes)
	require.Len(t, np.Spec.Ingress, 1)
	require.Len(t, np.Spec.Ingress[0].Ports, 1)
	assert.Equal(t, int(c.Ports[0].ContainerPort), np.Spec.Ingress[0].Ports[0].Port.IntValue(), "only the HTTP port is open")
}

func onSecret(spec *corev1.PodSpec, c *corev1.Container, path string) bool {
	for _, m := range c.VolumeMounts {
		if !strings.HasPrefix(path, strings.TrimSuffix(m.MountPath, "/")+"/") {
			continue
		}
		for _, v := range spec.Volumes {
			if v.Name == m.Name && v.Secret != nil {
				return m.ReadOnly
			}
		}
	}
	return false
}

func TestProposeCronJobIsReadOnlyAndLockedDown(t *testing.T) {
	o := render(t)
	cj := one[batchv1.CronJob](t, o, "CronJob", proposeSA)
	assert.Equal(t, batchv1.ForbidConcurrent, cj.Spec.ConcurrencyPolicy, "two proposers never race")
	spec := &cj.Spec.JobTemplate.Spec.Template.Spec
	assert.Equal(t, proposeSA, spec.ServiceAccountName, "not the controller's ServiceAccount")
	checkPodSecurity(t, "cronjob", spec)
	assert.Equal(t, "propose", spec.Containers[0].Args[0])

	// Its ClusterRole reads and never writes; it has no Role anywhere.
	cr := one[rbacv1.ClusterRole](t, o, "ClusterRole", proposeSA)
	for _, r := range cr.Rules {
		for _, v := range r.Verbs {
			assert.Contains(t, []string{"get", "list", "watch"}, v, "propose ClusterRole: %v", r)
		}
		assert.NotContains(t, r.Resources, "secrets")
	}
	for _, rb := range o.ofKind("RoleBinding") {
		b := one[rbacv1.RoleBinding](t, o, "RoleBinding", rb.GetName())
		for _, s := range b.Subjects {
			assert.NotEqual(t, proposeSA, s.Name, "no namespaced grant to propose")
		}
	}
}

func TestControllerRBACHasNoWildcardsAndNoSecrets(t *testing.T) {
	o := render(t)
	cr := one[rbacv1.ClusterRole](t, o, "ClusterRole", controllerSA)
	role := one[rbacv1.Role](t, o, "Role", controllerSA)
	for _, r := range append(slices.Clone(cr.Rules), role.Rules...) {
		for _, list := range [][]string{r.APIGroups, r.Resources, r.Verbs} {
			assert.NotContains(t, list, "*", "rule %v", r)
		}
		assert.NotContains(t, r.Resources, "secrets", "the controller reads its secrets from files")
		assert.NotContains(t, r.Verbs, "escalate")
		assert.NotContains(t, r.Verbs, "bind")
		assert.NotContains(t, r.Verbs, "impersonate")
		if slices.Contains(r.Resources, "pods") {
			assert.NotContains(t, r.Verbs, "delete", "pods leave through the Eviction API only")
		}
	}
	// ConfigMaps and Leases only in its own namespace.
	for _, r := range cr.Rules {
		assert.NotContains(t, r.Resources, "configmaps")
		assert.NotContains(t, r.Resources, "leases")
	}
	assert.Equal(t, namespace, role.Namespace)
}

// TestServerSideDryRunAccepts applies the base with `kubectl apply --server-side
// --dry-run=server -k`: the API server validates every object, the RBAC objects
// included (an escalation would be refused).
func TestServerSideDryRunAccepts(t *testing.T) {
	c := shared.Get(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// A dry run creates nothing, so the objects inside the Namespace would be
	// refused for want of it: the Namespace is created first, as a real apply does.
	_, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{})
	if !apierrors.IsAlreadyExists(err) {
		require.NoError(t, err)
	}
	out, err := runKubectl(t, "--kubeconfig", c.Kubeconfig, "apply", "--server-side", "--dry-run=server", "-k", baseDir)
	require.NoError(t, err)
	for _, name := range []string{"deployment.apps/rebalancer-controller", "clusterrole.rbac.authorization.k8s.io/rebalancer-controller",
		"cronjob.batch/rebalancer-propose", "networkpolicy.networking.k8s.io/rebalancer"} {
		assert.Contains(t, out, name+" serverside-applied (server dry run)")
	}
}
