package executor

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	api "github.com/rebalancer-dev/rebalancer/api/v1alpha1"
	"github.com/rebalancer-dev/rebalancer/cloud"
	"github.com/rebalancer-dev/rebalancer/cloud/kwok"
	"github.com/rebalancer-dev/rebalancer/internal/localcluster"
	"github.com/rebalancer-dev/rebalancer/policies"
)

var cluster *localcluster.Cluster

// executorUser is the identity the executor's client authenticates as, so the
// audit log can be searched for what it did.
const executorUser = "rebalancer-executor"

func TestMain(m *testing.M) {
	os.Exit(localcluster.RunTests(m, localcluster.Options{AuditLog: true, PodReadyDelay: 400 * time.Millisecond}, func(c *localcluster.Cluster) { cluster = c }))
}

const catalogYAML = `apiVersion: rebalancer.dev/v1alpha1
kind: OfferingCatalog
offerings:
  - {name: gen1, datacenter: fra1, arch: amd64, cpu: "4", memory: 8Gi, pods: 110, hourlyPrice: 0.08}
  - {name: gen2, datacenter: fra1, arch: amd64, cpu: "4", memory: 8Gi, pods: 110, hourlyPrice: 0.06}
`

type fixture struct {
	t        testing.TB
	ctx      context.Context
	prefix   string
	ns       string
	admin    kubernetes.Interface
	client   kubernetes.Interface // the executor's identity
	provider *kwok.Provider
	policy   *api.RebalancePolicy
	limits   policies.Limits
	old      []string
	catalog  []cloud.Offering
	opts     Options
	progress []Progress
	mu       sync.Mutex
}

func newFixture(t testing.TB, prefix string, oldNodes int, faults kwok.Faults) *fixture {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)
	catalog, err := kwok.ParseCatalog("catalog.yaml", []byte(catalogYAML))
	require.NoError(t, err)
	cfg, err := cluster.UserConfig(executorUser, "system:masters")
	require.NoError(t, err)
	client, err := kubernetes.NewForConfig(cfg)
	require.NoError(t, err)
	f := &fixture{t: t, ctx: ctx, prefix: prefix, ns: prefix, admin: cluster.Client, client: client, catalog: catalog,
		limits: policies.Limits{ClusterName: "local", MaxNodesPerPlan: 20}}
	f.provider = kwok.New(client, catalog, kwok.WithFaults(faults))
	t.Cleanup(f.provider.Close)
	for _, ns := range []string{prefix, "rebalancer-system"} {
		_, err := cluster.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		if err != nil && !strings.Contains(err.Error(), "already exists") {
			require.NoError(t, err)
		}
	}
	for i := range oldNodes {
		f.old = append(f.old, f.addNode(fmt.Sprintf("%s-old-%d", prefix, i)))
	}
	f.policy = api.NewPolicy(prefix)
	f.policy.Spec.NodeSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"tier": prefix}}
	f.policy.Spec.NodeGroupLabel = "pool"
	f.policy.Spec.Strategy = api.StrategyBlueGreen // the riskiest: plans of any strategy pass
	f.policy.Spec.MaxConcurrent = 10
	f.policy.Spec.DrainTimeout = api.Duration{Duration: time.Hour}
	f.policy.Spec.MinNodeAge = api.Duration{}
	f.opts = Options{Namespace: "rebalancer-system", StopConfigMap: prefix + "-stop", Identity: "test", PollInterval: 100 * time.Millisecond,
		WaitRetry: 200 * time.Millisecond, VerifyTimeout: 30 * time.Second, WaitReadyTimeout: 30 * time.Second, ProvisionTimeout: 15 * time.Second}
	return f
}

func (f *fixture) addNode(name string) string {
	node := kwok.NewNode(name, f.catalog[0], map[string]string{"tier": f.prefix, "pool": f.prefix}, nil, false)
	require.NoError(f.t, kwok.CreateNode(f.ctx, cluster.Client, node))
	_, err := cluster.WaitNodeReady(f.ctx, name, 30*time.Second)
	require.NoError(f.t, err)
	return name
}

// plan builds a plan for the named old nodes, as the planner would.
func (f *fixture) plan(strategy api.Strategy, maxConcurrent int, drainTimeout time.Duration, nodes ...string) *api.RebalancePlan {
	now := time.Now()
	spec := api.PlanSpec{Cluster: "local", NodeGroup: f.prefix, Policy: f.prefix, Strategy: strategy, MaxConcurrent: maxConcurrent,
		DrainTimeout: api.Duration{Duration: drainTimeout}, CreatedAt: api.NewTime(now), NotAfter: api.NewTime(now.Add(time.Hour))}
	for _, n := range nodes {
		spec.Candidates = append(spec.Candidates, api.Candidate{Node: n, ProviderID: "kwok://" + n,
			Current:     api.Offering{Name: "gen1", Datacenter: "fra1", Arch: "amd64", HourlyPrice: 0.08},
			Replacement: api.Offering{Name: "gen2", Datacenter: "fra1", Arch: "amd64", HourlyPrice: 0.06}, MonthlySavings: 14.6})
	}
	s, err := policies.StrategyFor(strategy)
	require.NoError(f.t, err)
	spec.Steps = s.Steps(nodes, maxConcurrent)
	spec.ContentDigest = spec.ComputeContentDigest()
	return &api.RebalancePlan{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: api.KindPlan},
		Metadata: api.ObjectMeta{Name: api.PlanID("local", f.prefix, now, fmt.Sprintf("%06x", now.UnixNano()&0xffffff))}, Spec: spec}
}

func (f *fixture) executor(opts ...Option) *Executor {
	ps, err := policies.NewPolicies([]*api.RebalancePolicy{f.policy})
	require.NoError(f.t, err)
	reval := &ClusterRevalidator{Client: f.client, Provider: f.provider, Limits: f.limits,
		Policies: func(context.Context) (*policies.Policies, error) { return ps, nil }}
	opts = append([]Option{WithLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))),
		WithProgress(func(p Progress) { f.mu.Lock(); f.progress = append(f.progress, p); f.mu.Unlock() })}, opts...)
	return New(f.client, f.provider, reval, f.opts, opts...)
}

// run claims and runs a plan to its end.
func (f *fixture) run(plan *api.RebalancePlan, opts ...Option) *Record {
	e := f.executor(opts...)
	rec, err := e.Claim(f.ctx, plan, "0123456789abcdef0123456789abcdef01234567")
	require.NoError(f.t, err)
	require.NoError(f.t, e.Run(f.ctx, rec))
	return rec
}

// deploy creates a Deployment on the fixture's nodes, with a PDB when minAvailable > 0.
func (f *fixture) deploy(name string, replicas int32, minAvailable int, mod func(*corev1.PodTemplateSpec)) {
	labels := map[string]string{"app": name}
	tmpl := corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
		Spec: corev1.PodSpec{NodeSelector: map[string]string{"tier": f.prefix}, Containers: []corev1.Container{{Name: "c", Image: name}}}}
	if mod != nil {
		mod(&tmpl)
	}
	_, err := f.admin.AppsV1().Deployments(f.ns).Create(f.ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: tmpl}}, metav1.CreateOptions{})
	require.NoError(f.t, err)
	if minAvailable > 0 {
		f.pdb(name, &policyv1.PodDisruptionBudgetSpec{MinAvailable: ptr.To(intstr.FromInt32(int32(minAvailable)))}, labels)
	}
}

func (f *fixture) pdb(name string, spec *policyv1.PodDisruptionBudgetSpec, labels map[string]string) {
	spec.Selector = &metav1.LabelSelector{MatchLabels: labels}
	_, err := f.admin.PolicyV1().PodDisruptionBudgets(f.ns).Create(f.ctx, &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: *spec}, metav1.CreateOptions{})
	require.NoError(f.t, err)
}

// waitPods waits until the namespace has n Running, Ready pods.
func (f *fixture) waitPods(n int) []corev1.Pod {
	var pods []corev1.Pod
	require.NoError(f.t, wait.PollUntilContextTimeout(f.ctx, 200*time.Millisecond, 90*time.Second, true, func(ctx context.Context) (bool, error) {
		list, err := f.admin.CoreV1().Pods(f.ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		pods = pods[:0]
		for _, p := range list.Items {
			if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning && policies.PodReady(&p) {
				pods = append(pods, p)
			}
		}
		return len(pods) == n, nil
	}), "%d pods ready in %s", n, f.ns)
	// PDB status must have caught up before a drain relies on it.
	require.NoError(f.t, wait.PollUntilContextTimeout(f.ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		list, err := f.admin.PolicyV1().PodDisruptionBudgets(f.ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		for _, p := range list.Items {
			if p.Status.ObservedGeneration < p.Generation {
				return false, nil
			}
		}
		return true, nil
	}))
	return pods
}

// watchReady samples the Ready pods of an app every 50 ms until stop, returning the
// lowest count seen: the PDB must never have been broken.
func (f *fixture) watchReady(app string) (stop func() int) {
	done := make(chan struct{})
	minSeen := make(chan int, 1)
	go func() {
		low := 1 << 30
		for {
			select {
			case <-done:
				minSeen <- low
				return
			case <-time.After(50 * time.Millisecond):
			}
			list, err := f.admin.CoreV1().Pods(f.ns).List(context.Background(), metav1.ListOptions{LabelSelector: "app=" + app})
			if err != nil {
				continue
			}
			ready := 0
			for i := range list.Items {
				if list.Items[i].DeletionTimestamp == nil && policies.PodReady(&list.Items[i]) {
					ready++
				}
			}
			low = min(low, ready)
		}
	}()
	return func() int { close(done); return <-minSeen }
}

// auditEvent is the part of an audit log line the tests read.
type auditEvent struct {
	Verb string `json:"verb"`
	User struct {
		Username string `json:"username"`
	} `json:"user"`
	ObjectRef struct {
		Resource    string `json:"resource"`
		Subresource string `json:"subresource"`
		Namespace   string `json:"namespace"`
		Name        string `json:"name"`
	} `json:"objectRef"`
	Stage          string `json:"stage"`
	ResponseStatus struct {
		Code int `json:"code"`
	} `json:"responseStatus"`
}

// audit returns the executor's requests in namespace ns from the API server's audit log.
func audit(t *testing.T, ns string) []auditEvent {
	t.Helper()
	fh, err := os.Open(cluster.AuditLogPath)
	require.NoError(t, err)
	defer fh.Close()
	var out []auditEvent
	sc := bufio.NewScanner(fh)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var ev auditEvent
		if json.Unmarshal(sc.Bytes(), &ev) != nil || ev.Stage != "ResponseComplete" || ev.User.Username != executorUser {
			continue
		}
		if ns == "" || ev.ObjectRef.Namespace == ns || ev.ObjectRef.Namespace == "" {
			out = append(out, ev)
		}
	}
	require.NoError(t, sc.Err())
	return out
}
