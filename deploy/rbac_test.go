package deploy_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	api "github.com/rebalancer-dev/rebalancer/api/v1alpha1"
	"github.com/rebalancer-dev/rebalancer/cloud/kwok"
	"github.com/rebalancer-dev/rebalancer/gitops"
	"github.com/rebalancer-dev/rebalancer/gitops/gittest"
	"github.com/rebalancer-dev/rebalancer/internal/localcluster"
	"github.com/rebalancer-dev/rebalancer/policies"
)

const catalogYAML = `apiVersion: rebalancer.dev/v1alpha1
kind: OfferingCatalog
offerings:
  - {name: std-4vcpu-8gb-v1, datacenter: fra1, arch: amd64, cpu: "4", memory: 8Gi, pods: 110, hourlyPrice: 0.08}
  - {name: std-4vcpu-8gb-v2, datacenter: fra1, arch: amd64, cpu: "4", memory: 8Gi, pods: 110, hourlyPrice: 0.06}
`

// unusedButKept are the rules of deploy/base that the plan run below does not
// exercise, each with the reason it stays. Anything else granted and unused fails
// TestControllerRunsAPlanAsItsServiceAccount: least privilege is enforced, not hoped for.
var unusedButKept = map[access]string{
	{Resource: "events", Verb: "patch"}: "the event recorder patches an Event when the same one repeats (a count); " +
		"one small plan emits no repeat",
}

// proposeUnusedButKept: the propose CronJob reads through informers. Against this
// API server they stream their initial list through a watch (client-go's
// WatchListClient, on by default since 1.35); against one without streaming lists
// (Kubernetes before 1.34) they fall back to a plain list, so list stays granted.
var proposeUnusedButKept = func() map[access]string {
	const why = "informers list through a watch (WatchListClient) here, and fall back to list on API servers without streaming lists"
	out := map[access]string{}
	for _, a := range []access{{"", "nodes", "list"}, {"", "pods", "list"}, {"", "persistentvolumes", "list"},
		{"", "persistentvolumeclaims", "list"}, {"policy", "poddisruptionbudgets", "list"}} {
		out[a] = why
	}
	return out
}()

// kwokCloudRules are what the KWOK provider does as the cloud would: a real
// provider's machine registers its own Node. They are granted to the controller
// only while the test runs with --provider kwok, never by deploy/base.
var kwokCloudRules = []rbacv1.PolicyRule{
	{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"create"}},
	{APIGroups: []string{""}, Resources: []string{"nodes/status"}, Verbs: []string{"update"}},
}

// access is one kind of API request: (group, resource[/subresource], verb).
type access struct {
	Group, Resource, Verb string
}

func (a access) String() string {
	g := a.Group
	if g == "" {
		g = "core"
	}
	return a.Verb + " " + g + "/" + a.Resource
}

func saUser(name string) string { return "system:serviceaccount:" + namespace + ":" + name }

// granted expands RBAC rules into accesses (resourceNames narrow a rule but do not
// change what kind of request it is for).
func granted(rules []rbacv1.PolicyRule) map[access]bool {
	out := map[access]bool{}
	for _, r := range rules {
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					out[access{g, res, v}] = true
				}
			}
		}
	}
	return out
}

// recordingProxy stands between a rebalancer process and the API server: it
// forwards every request impersonating a ServiceAccount (rest.Config.Impersonate,
// the admin credentials never reach the process) and records what was asked and
// what was refused. The API server's audit log in the local cluster leaves out
// reads, Leases and Events, so the proxy sees those; the writes are also checked
// against the audit log, which names the impersonated user.
type recordingProxy struct {
	srv       *httptest.Server
	mu        sync.Mutex
	used      map[access]int
	forbidden []string
}

func newRecordingProxy(t *testing.T, c *localcluster.Cluster, user string) *recordingProxy {
	t.Helper()
	cfg := rest.CopyConfig(c.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user}
	rt, err := rest.TransportFor(cfg)
	require.NoError(t, err)
	target, err := url.Parse(cfg.Host)
	require.NoError(t, err)
	rp := &httputil.ReverseProxy{Transport: rt, FlushInterval: -1,
		Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(target); pr.Out.Header.Del("Authorization") }}
	p := &recordingProxy{used: map[access]int{}}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a, ok := parseRequest(r)
		if ok {
			p.mu.Lock()
			p.used[a]++
			p.mu.Unlock()
		}
		rp.ServeHTTP(&statusWriter{ResponseWriter: w, onStatus: func(code int) {
			if code == http.StatusForbidden {
				p.mu.Lock()
				p.forbidden = append(p.forbidden, r.Method+" "+r.URL.String())
				p.mu.Unlock()
			}
		}}, r)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

// kubeconfig writes a kubeconfig that reaches the API server only through the proxy.
func (p *recordingProxy) kubeconfig(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kubeconfig")
	require.NoError(t, os.WriteFile(path, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: proxy, cluster: {server: %q}}]
users: [{name: sa, user: {}}]
contexts: [{name: sa, context: {cluster: proxy, user: sa}}]
current-context: sa
`, p.srv.URL)), 0o600))
	return path
}

func (p *recordingProxy) snapshot() (map[access]int, []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	used := make(map[access]int, len(p.used))
	for k, v := range p.used {
		used[k] = v
	}
	return used, slices.Clone(p.forbidden)
}

type statusWriter struct {
	http.ResponseWriter
	onStatus func(int)
	wrote    bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.wrote = true
		w.onStatus(code)
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// parseRequest turns a resource request's method and path into the RBAC verb and
// resource it is authorized as; discovery and other non-resource paths are not.
func parseRequest(r *http.Request) (access, bool) {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	var group string
	switch {
	case len(parts) >= 3 && parts[0] == "api":
		parts = parts[2:]
	case len(parts) >= 4 && parts[0] == "apis":
		group, parts = parts[1], parts[3:]
	default:
		return access{}, false
	}
	watch := r.URL.Query().Get("watch") == "true" || r.URL.Query().Get("watch") == "1"
	if parts[0] == "watch" {
		watch, parts = true, parts[1:]
	}
	if len(parts) >= 3 && parts[0] == "namespaces" {
		parts = parts[2:] // namespaced: namespaces/<ns>/<resource>/...
	}
	res, name := parts[0], ""
	if len(parts) >= 2 {
		name = parts[1]
	}
	if len(parts) >= 3 {
		res += "/" + parts[2]
	}
	var verb string
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		switch {
		case watch:
			verb = "watch"
		case name != "":
			verb = "get"
		default:
			verb = "list"
		}
	case http.MethodPost:
		verb = "create"
	case http.MethodPut:
		verb = "update"
	case http.MethodPatch:
		verb = "patch"
	case http.MethodDelete:
		verb = "delete"
		if name == "" {
			verb = "deletecollection"
		}
	default:
		return access{}, false
	}
	return access{group, res, verb}, true
}

// auditedWrites reads the API server's audit log for the requests made as user
// (the impersonated identity), with their response codes.
func auditedWrites(t *testing.T, c *localcluster.Cluster, user string) map[access][]int {
	t.Helper()
	require.NotEmpty(t, c.AuditLogPath, "the cluster runs with its audit log on")
	fh, err := os.Open(c.AuditLogPath)
	require.NoError(t, err)
	defer fh.Close()
	out := map[access][]int{}
	sc := bufio.NewScanner(fh)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var ev struct {
			Verb             string `json:"verb"`
			Stage            string `json:"stage"`
			ImpersonatedUser *struct {
				Username string `json:"username"`
			} `json:"impersonatedUser"`
			ObjectRef *struct {
				Resource    string `json:"resource"`
				Subresource string `json:"subresource"`
				APIGroup    string `json:"apiGroup"`
			} `json:"objectRef"`
			ResponseStatus *struct {
				Code int `json:"code"`
			} `json:"responseStatus"`
		}
		if json.Unmarshal(sc.Bytes(), &ev) != nil || ev.Stage != "ResponseComplete" || ev.ImpersonatedUser == nil ||
			ev.ImpersonatedUser.Username != user || ev.ObjectRef == nil || ev.ResponseStatus == nil {
			continue
		}
		res := ev.ObjectRef.Resource
		if ev.ObjectRef.Subresource != "" {
			res += "/" + ev.ObjectRef.Subresource
		}
		a := access{ev.ObjectRef.APIGroup, res, ev.Verb}
		out[a] = append(out[a], ev.ResponseStatus.Code)
	}
	require.NoError(t, sc.Err())
	return out
}

var (
	applyOnce sync.Once
	applyErr  error
)

// applyBase applies deploy/base for real (not a dry run) through an overlay that
// keeps the controller's pods and the CronJob from running in the test cluster:
// the plan below is run by the binary, not by KWOK's pretend containers.
func applyBase(t *testing.T, c *localcluster.Cluster) {
	t.Helper()
	applyOnce.Do(func() {
		abs, err := filepath.Abs(baseDir)
		if err != nil {
			applyErr = err
			return
		}
		dir, err := os.MkdirTemp("", "rebalancer-overlay-")
		if err != nil {
			applyErr = err
			return
		}
		defer os.RemoveAll(dir)
		rel, err := filepath.Rel(dir, abs) // kustomize refuses an absolute base
		if err != nil {
			applyErr = err
			return
		}
		overlay := fmt.Sprintf(`apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [%q]
patches:
  - target: {kind: Deployment, name: rebalancer-controller}
    patch: '[{"op": "replace", "path": "/spec/replicas", "value": 0}]'
  - target: {kind: CronJob, name: rebalancer-propose}
    patch: '[{"op": "add", "path": "/spec/suspend", "value": true}]'
`, rel)
		if applyErr = os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(overlay), 0o600); applyErr != nil {
			return
		}
		_, applyErr = runKubectl(t, "--kubeconfig", c.Kubeconfig, "apply", "--server-side", "-k", dir)
	})
	require.NoError(t, applyErr)
}

var (
	buildOnce sync.Once
	binary    string
	buildErr  error
)

// rebalancerBinary builds cmd/rebalancer once per test run ($REBALANCER_TEST_BINARY
// overrides it): the tests run the real binary, as the manifests do.
func rebalancerBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		if prebuilt := os.Getenv("REBALANCER_TEST_BINARY"); prebuilt != "" {
			binary = prebuilt // a binary built elsewhere, such as by CI's release job
			return
		}
		dir, err := os.MkdirTemp("", "rebalancer-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binary = filepath.Join(dir, "rebalancer")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, "go", "build", "-o", binary, "github.com/rebalancer-dev/rebalancer/cmd/rebalancer").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	require.NoError(t, buildErr)
	return binary
}

func runBinary(t *testing.T, ctx context.Context, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, rebalancerBinary(t), args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Env = append(os.Environ(), "KUBECONFIG=/nonexistent", "HOME="+t.TempDir())
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return out.String(), errb.String(), ee.ExitCode()
	}
	require.NoError(t, err)
	return out.String(), errb.String(), 0
}

// baseRules returns the rules deploy/base grants a ServiceAccount: its ClusterRole
// and, for the controller, its Role.
func baseRules(t *testing.T, name string) []rbacv1.PolicyRule {
	t.Helper()
	o := render(t)
	rules := one[rbacv1.ClusterRole](t, o, "ClusterRole", name).Rules
	for _, u := range o.ofKind("Role") {
		if u.GetName() == name {
			rules = append(rules, one[rbacv1.Role](t, o, "Role", name).Rules...)
		}
	}
	return rules
}

// TestControllerRunsAPlanAsItsServiceAccount applies deploy/base, then runs
// `rebalancer controller --once` as the controller's ServiceAccount: a merged
// plan replaces a node carrying a Deployment under a PDB and a DaemonSet pod. A
// verb missing from the ClusterRole or Role fails the plan; a verb granted but not
// used (and not in unusedButKept with its reason) fails the test too.
func TestControllerRunsAPlanAsItsServiceAccount(t *testing.T) {
	c := shared.Get(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	applyBase(t, c)
	admin := c.Client
	const group, ns = "ctl", "deploy-e2e"

	// The simulated cloud's own powers, only for this run (see kwokCloudRules).
	_, err := admin.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "test-kwok-cloud"},
		Rules: kwokCloudRules}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = admin.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "test-kwok-cloud"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "test-kwok-cloud"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: controllerSA, Namespace: namespace}}}, metav1.CreateOptions{})
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = admin.RbacV1().ClusterRoleBindings().Delete(context.Background(), "test-kwok-cloud", metav1.DeleteOptions{})
		_ = admin.RbacV1().ClusterRoles().Delete(context.Background(), "test-kwok-cloud", metav1.DeleteOptions{})
	})

	// An old node with a Deployment under a PDB and a DaemonSet pod on it.
	catalog, err := kwok.ParseCatalog("catalog.yaml", []byte(catalogYAML))
	require.NoError(t, err)
	require.NoError(t, kwok.CreateNode(ctx, admin, kwok.NewNode("ctl-old-0", catalog[0], map[string]string{"pool": group}, nil, false)))
	_, err = c.WaitNodeReady(ctx, "ctl-old-0", 30*time.Second)
	require.NoError(t, err)
	_, err = admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	require.NoError(t, err)
	appLabels := map[string]string{"app": "web"}
	podSpec := corev1.PodSpec{NodeSelector: map[string]string{"pool": group}, Containers: []corev1.Container{{Name: "c", Image: "web"}}}
	_, err = admin.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](2), Selector: &metav1.LabelSelector{MatchLabels: appLabels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: appLabels}, Spec: podSpec}}}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = admin.PolicyV1().PodDisruptionBudgets(ns).Create(ctx, &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: policyv1.PodDisruptionBudgetSpec{MinAvailable: ptr.To(intstr.FromInt32(1)), Selector: &metav1.LabelSelector{MatchLabels: appLabels}}},
		metav1.CreateOptions{})
	require.NoError(t, err)
	agentLabels := map[string]string{"app": "agent"}
	agentSpec := podSpec.DeepCopy()
	agentSpec.Tolerations = []corev1.Toleration{{Operator: corev1.TolerationOpExists}}
	_, err = admin.AppsV1().DaemonSets(ns).Create(ctx, &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "agent"},
		Spec: appsv1.DaemonSetSpec{Selector: &metav1.LabelSelector{MatchLabels: agentLabels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: agentLabels}, Spec: *agentSpec}}}, metav1.CreateOptions{})
	require.NoError(t, err)
	waitReadyPods(t, ctx, admin, ns, 3)

	// A merged plan in a real git repository.
	srv := gittest.NewServer(t)
	srv.InitBare(t, group)
	w := srv.Clone(t, group, "main")
	layout := gitops.Layout{}
	plan := gittest.Plan("local", group, "d3b10c", time.Now().UTC().Truncate(time.Second), "ctl-old-0")
	s, err := policies.StrategyFor(plan.Spec.Strategy)
	require.NoError(t, err)
	plan.Spec.Steps = s.Steps([]string{"ctl-old-0"}, plan.Spec.MaxConcurrent)
	plan.Spec.ContentDigest = plan.Spec.ComputeContentDigest()
	w.Write(layout.PoliciesDir()+"/"+group+".yaml", gittest.Policy(group))
	w.Write(layout.PlanFile(plan.Metadata.Name), gittest.YAML(t, plan))
	w.Commit("merge plan")
	w.Push("main")

	dir := t.TempDir()
	catalogFile, tokenFile := filepath.Join(dir, "catalog.yaml"), filepath.Join(dir, "token")
	require.NoError(t, os.WriteFile(catalogFile, []byte(catalogYAML), 0o600))
	require.NoError(t, os.WriteFile(tokenFile, []byte(srv.Password), 0o600))

	proxy := newRecordingProxy(t, c, saUser(controllerSA))
	_, stderr, code := runBinary(t, ctx, "controller", "--once", "--kubeconfig", proxy.kubeconfig(t),
		"--provider", "kwok", "--catalog", catalogFile, "--repo", srv.RepoURL(group), "--git-token-file", tokenFile,
		"--git-username", srv.User, "--cache-dir", filepath.Join(dir, "cache"), "--cluster-name", "local",
		"--namespace", namespace, "--status-branch", "rebalancer-status", "--identity", "rebalancer-controller-test")
	used, forbidden := proxy.snapshot()
	require.Empty(t, forbidden, "requests the ServiceAccount was refused; stderr:\n%s", stderr)
	require.Equal(t, 0, code, stderr)

	// (a) The plan ran to its end as the ServiceAccount.
	out, ok := srv.Show(t, group, "rebalancer-status", layout.StatusFile(plan.Metadata.Name))
	require.True(t, ok, "status on the status branch; stderr:\n%s", stderr)
	st, err := api.DecodeStatus(layout.StatusFile(plan.Metadata.Name), []byte(out))
	require.NoError(t, err)
	require.Equal(t, api.PhaseSucceeded, st.Status.Phase, st.Status.Message)
	_, err = admin.CoreV1().Nodes().Get(ctx, "ctl-old-0", metav1.GetOptions{})
	assert.True(t, apierrors.IsNotFound(err), "the old node is gone: %v", err)
	waitReadyPods(t, ctx, admin, ns, 3)

	// The API server's audit log agrees: the writes were made as the ServiceAccount
	// (impersonated), and every one it logged was admitted.
	audited := auditedWrites(t, c, saUser(controllerSA))
	for _, a := range []access{{"", "pods/eviction", "create"}, {"", "configmaps", "create"}, {"", "configmaps", "update"},
		{"", "configmaps", "delete"}, {"", "nodes", "update"}} {
		assert.Contains(t, audited, a, "the audit log shows %s by %s", a, controllerSA)
	}
	for a, codes := range audited {
		for _, code := range codes {
			assert.NotEqual(t, http.StatusForbidden, code, "%s refused", a)
		}
		used[a] += len(codes)
	}

	// (b) Every rule deploy/base grants was used, or is kept for a stated reason.
	grants := granted(baseRules(t, controllerSA))
	var unused []string
	for a := range grants {
		if used[a] == 0 {
			if _, kept := unusedButKept[a]; !kept {
				unused = append(unused, a.String())
			}
		}
	}
	sort.Strings(unused)
	assert.Empty(t, unused, "granted by deploy/base but not used by a plan run: remove them, or add them to unusedButKept with the reason")
	for a := range unusedButKept {
		assert.True(t, grants[a], "unusedButKept names %s, which deploy/base does not grant", a)
		assert.Zero(t, used[a], "%s is used now: take it off unusedButKept", a)
	}
	// And nothing used came from outside the base but the simulated cloud's rules.
	cloud := granted(kwokCloudRules)
	for a := range used {
		assert.True(t, grants[a] || cloud[a], "%s used but not granted by deploy/base", a)
	}
	t.Logf("controller requests by kind: %v", used)
}

func waitReadyPods(t *testing.T, ctx context.Context, c kubernetes.Interface, ns string, n int) {
	t.Helper()
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 90*time.Second, true, func(ctx context.Context) (bool, error) {
		list, err := c.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		ready := 0
		for i := range list.Items {
			if list.Items[i].DeletionTimestamp == nil && policies.PodReady(&list.Items[i]) {
				ready++
			}
		}
		return ready == n, nil
	}), "%d pods ready in %s", n, ns)
}

// TestProposeRunsAsItsReadOnlyServiceAccount runs `rebalancer propose` as the
// CronJob's ServiceAccount: it opens a proposal in git having only read the
// cluster, and every rule of its ClusterRole is used.
func TestProposeRunsAsItsReadOnlyServiceAccount(t *testing.T) {
	c := shared.Get(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	applyBase(t, c)
	const group = "prop"
	catalog, err := kwok.ParseCatalog("catalog.yaml", []byte(catalogYAML))
	require.NoError(t, err)
	require.NoError(t, kwok.CreateNode(ctx, c.Client, kwok.NewNode("prop-old-0", catalog[0], map[string]string{"pool": group}, nil, false)))
	_, err = c.WaitNodeReady(ctx, "prop-old-0", 30*time.Second)
	require.NoError(t, err)

	srv := gittest.NewServer(t)
	srv.InitBare(t, group)
	w := srv.Clone(t, group, "main")
	w.Write(gitops.Layout{}.PoliciesDir()+"/"+group+".yaml", gittest.Policy(group))
	w.Commit("policy")
	w.Push("main")
	dir := t.TempDir()
	catalogFile, tokenFile := filepath.Join(dir, "catalog.yaml"), filepath.Join(dir, "token")
	require.NoError(t, os.WriteFile(catalogFile, []byte(catalogYAML), 0o600))
	require.NoError(t, os.WriteFile(tokenFile, []byte(srv.Password), 0o600))

	proxy := newRecordingProxy(t, c, saUser(proposeSA))
	stdout, stderr, code := runBinary(t, ctx, "propose", "--kubeconfig", proxy.kubeconfig(t), "--provider", "kwok", "--catalog", catalogFile,
		"--repo", srv.RepoURL(group), "--git-token-file", tokenFile, "--git-username", srv.User, "--cache-dir", filepath.Join(dir, "cache"),
		"--cluster-name", "local", "--forge", "git")
	used, forbidden := proxy.snapshot()
	require.Empty(t, forbidden, "requests the ServiceAccount was refused; stderr:\n%s", stderr)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "local/"+group+": ", "a proposal for the node group")
	assert.NotEmpty(t, srv.Rev(t, group, "rebalancer/local/"+group), "the proposal's branch was pushed")

	for a := range used {
		assert.Contains(t, []string{"get", "list", "watch"}, a.Verb, "propose only reads: %s", a)
	}
	assert.Empty(t, auditedWrites(t, c, saUser(proposeSA)), "the audit log shows no write by %s", proposeSA)
	grants := granted(baseRules(t, proposeSA))
	var unused []string
	for a := range grants {
		if _, kept := proposeUnusedButKept[a]; used[a] == 0 && !kept {
			unused = append(unused, a.String())
		}
	}
	sort.Strings(unused)
	assert.Empty(t, unused, "granted to propose but not used: remove them, or add them to proposeUnusedButKept with the reason")
	for a := range proposeUnusedButKept {
		assert.True(t, grants[a], "proposeUnusedButKept names %s, which deploy/base does not grant", a)
	}
	for a := range used {
		assert.True(t, grants[a], "%s used but not granted", a)
	}
}

// TestServiceAccountsCannotDoWhatTheyNeedNot asks the API server (SubjectAccessReview)
// and tries, impersonated, what neither ServiceAccount may do.
func TestServiceAccountsCannotDoWhatTheyNeedNot(t *testing.T) {
	c := shared.Get(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	applyBase(t, c)
	allowed := func(user, verb, group, resource, sub, ns string) bool {
		t.Helper()
		sar, err := c.Client.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
			Spec: authorizationv1.SubjectAccessReviewSpec{User: user,
				Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"},
				ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: verb, Group: group, Resource: resource, Subresource: sub,
					Namespace: ns}}}, metav1.CreateOptions{})
		require.NoError(t, err)
		return sar.Status.Allowed
	}
	type res struct{ group, resource, sub string }
	everything := []res{{"", "nodes", ""}, {"", "pods", ""}, {"", "pods", "eviction"}, {"", "configmaps", ""}, {"", "secrets", ""},
		{"", "events", ""}, {"coordination.k8s.io", "leases", ""}, {"apps", "deployments", ""}, {"apps", "daemonsets", ""},
		{"policy", "poddisruptionbudgets", ""}, {"", "persistentvolumes", ""}, {"", "namespaces", ""}, {"rbac.authorization.k8s.io", "clusterroles", ""}}
	for _, r := range everything {
		for _, verb := range []string{"create", "update", "patch", "delete", "deletecollection"} {
			for _, ns := range []string{namespace, "default"} {
				assert.False(t, allowed(saUser(proposeSA), verb, r.group, r.resource, r.sub, ns), "propose may %s %s/%s in %s", verb, r.resource, r.sub, ns)
			}
		}
		assert.False(t, allowed(saUser(proposeSA), "get", "", "secrets", "", namespace))
	}
	// The controller: nothing it does not need.
	ctl := saUser(controllerSA)
	for _, denied := range []struct{ verb, group, resource, sub, ns string }{
		{"get", "", "secrets", "", namespace}, {"list", "", "secrets", "", ""},
		{"delete", "", "pods", "", "default"}, // pods leave through evictions only
		{"create", "", "nodes", "", ""},       // the cloud's machine registers its Node
		{"patch", "", "nodes", "", ""},
		{"create", "", "configmaps", "", "default"}, // records only in its namespace
		{"update", "coordination.k8s.io", "leases", "", "kube-system"},
		{"update", "apps", "deployments", "", "default"},
		{"get", "", "namespaces", "", "default"}, // only kube-system's UID
	} {
		assert.False(t, allowed(ctl, denied.verb, denied.group, denied.resource, denied.sub, denied.ns), "controller may %+v", denied)
	}
	assert.True(t, allowed(ctl, "create", "", "pods", "eviction", "default"), "the controller evicts")

	// And by trying: impersonated, a write as propose is refused by the API server.
	cfg := rest.CopyConfig(c.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: saUser(proposeSA)}
	as, err := kubernetes.NewForConfig(cfg)
	require.NoError(t, err)
	_, err = as.CoreV1().ConfigMaps(namespace).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "rebalancer-exec-x"}}, metav1.CreateOptions{})
	assert.True(t, apierrors.IsForbidden(err), "propose creating a ConfigMap: %v", err)
	_, err = as.CoreV1().ConfigMaps(namespace).Patch(ctx, stopConfigMap, "application/merge-patch+json",
		[]byte(`{"metadata":{"annotations":{"rebalancer.dev/stop":"true"}}}`), metav1.PatchOptions{})
	assert.True(t, apierrors.IsForbidden(err), "propose flipping the stop switch: %v", err)
	_, err = as.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	assert.NoError(t, err, "propose reads nodes")
}
