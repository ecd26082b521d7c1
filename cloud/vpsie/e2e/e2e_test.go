// Package e2e runs the executor's plans end to end with the VPSie provider: the
// provider talks to the vpsietest contract server, the nodes live on the local
// cluster, and the test plays VPSie's join — when the server adds a node, the
// test registers the matching Node (providerID vpsie://<identifier>), as the real
// VM would on boot.
package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	api "github.com/rebalancer-dev/rebalancer/api/v1alpha1"
	"github.com/rebalancer-dev/rebalancer/cloud"
	"github.com/rebalancer-dev/rebalancer/cloud/kwok"
	"github.com/rebalancer-dev/rebalancer/cloud/vpsie"
	"github.com/rebalancer-dev/rebalancer/cloud/vpsie/vpsietest"
	"github.com/rebalancer-dev/rebalancer/executor"
	"github.com/rebalancer-dev/rebalancer/internal/localcluster"
	"github.com/rebalancer-dev/rebalancer/policies"
)

var cluster *localcluster.Cluster

func TestMain(m *testing.M) {
	os.Exit(localcluster.RunTests(m, localcluster.Options{PodReadyDelay: 400 * time.Millisecond}, func(c *localcluster.Cluster) { cluster = c }))
}

// The old nodes' user label and taint, which replacements must inherit: VPSie's
// add-node call cannot set them, so the executor does.
var userTaint = corev1.Taint{Key: "dedicated", Value: "payments", Effect: corev1.TaintEffectNoSchedule}

type env struct {
	t        *testing.T
	ctx      context.Context
	prefix   string
	server   *vpsietest.Server
	provider *vpsie.Provider
	offers   map[string]cloud.Offering
	old      []string // node names
	oldIDs   []string // VPSie identifiers
}

func newEnv(t *testing.T, prefix string, oldNodes int) *env {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)
	s := vpsietest.NewStandardCluster(prefix, oldNodes)
	t.Cleanup(s.Close)
	c, err := vpsie.NewClient(s.URL, vpsie.Credentials{ClientID: s.ClientID, ClientSecret: s.ClientSecret},
		vpsie.WithRetry(4, 10*time.Millisecond, 100*time.Millisecond), vpsie.WithRateLimit(200, 50), vpsie.WithCallTimeout(5*time.Second))
	require.NoError(t, err)
	e := &env{t: t, ctx: ctx, prefix: prefix, server: s, provider: vpsie.New(c, vpsietest.Cluster), offers: map[string]cloud.Offering{}}
	offs, err := e.provider.Offerings(ctx)
	require.NoError(t, err)
	for _, o := range offs {
		e.offers[o.Name] = o
	}
	for _, ns := range []string{prefix, "rebalancer-system"} {
		_, err := cluster.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			require.NoError(t, err)
		}
	}
	// The existing nodes join with the user's labels and taint.
	for _, vm := range s.Nodes(vpsietest.Cluster) {
		e.join(vm, map[string]string{"tier": prefix, "pool": prefix, "team": "payments"}, []corev1.Taint{userTaint})
		e.old = append(e.old, vm.Hostname)
		e.oldIDs = append(e.oldIDs, vm.Identifier)
	}
	// Nodes the server adds join bare, as VPSie's would.
	s.OnNodeAdded(func(vm vpsietest.VM) { e.join(vm, nil, nil) })
	return e
}

// join registers the Node of a VPSie VM and waits for it to be Ready.
func (e *env) join(vm vpsietest.VM, labels map[string]string, taints []corev1.Taint) {
	off := e.offerByPlan(vm.BoxsizeID)
	node := kwok.NewNode(vm.Hostname, off, labels, taints, false)
	node.Spec.ProviderID = vpsie.ProviderID(vm.Identifier)
	if err := kwok.CreateNode(e.ctx, cluster.Client, node); err != nil {
		e.t.Errorf("joining %s: %v", vm.Hostname, err)
		return
	}
	if _, err := cluster.WaitNodeReady(e.ctx, vm.Hostname, 30*time.Second); err != nil {
		e.t.Errorf("node %s: %v", vm.Hostname, err)
	}
}

func (e *env) offerByPlan(plan string) cloud.Offering {
	names := map[string]string{vpsietest.PlanOld: vpsietest.OfferingOld, vpsietest.PlanNew: vpsietest.OfferingNew, vpsietest.PlanSmall: vpsietest.OfferingSmall}
	return e.offers[names[plan]]
}

// workload runs replicas pods on the prefix's nodes, tolerating their taint, under
// a PDB of minAvailable 1, and waits for them.
func (e *env) workload(replicas int32) {
	labels := map[string]string{"app": "web"}
	_, err := cluster.Client.AppsV1().Deployments(e.prefix).Create(e.ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: appsv1.DeploymentSpec{Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{
				NodeSelector: map[string]string{"tier": e.prefix},
				Tolerations:  []corev1.Toleration{{Key: userTaint.Key, Operator: corev1.TolerationOpEqual, Value: userTaint.Value, Effect: userTaint.Effect}},
				Containers:   []corev1.Container{{Name: "web", Image: "web"}}}}}}, metav1.CreateOptions{})
	require.NoError(e.t, err)
	_, err = cluster.Client.PolicyV1().PodDisruptionBudgets(e.prefix).Create(e.ctx, &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: policyv1.PodDisruptionBudgetSpec{MinAvailable: ptr.To(intstr.FromInt32(1)), Selector: &metav1.LabelSelector{MatchLabels: labels}}}, metav1.CreateOptions{})
	require.NoError(e.t, err)
	require.Eventually(e.t, func() bool {
		pods, err := cluster.Client.CoreV1().Pods(e.prefix).List(e.ctx, metav1.ListOptions{LabelSelector: "app=web"})
		if err != nil {
			return false
		}
		ready := 0
		for i := range pods.Items {
			if policies.PodReady(&pods.Items[i]) {
				ready++
			}
		}
		return ready == int(replicas)
	}, 60*time.Second, 200*time.Millisecond)
}

// plan is what the planner would propose: every old node to the cheaper offering.
func (e *env) plan(strategy api.Strategy) *api.RebalancePlan {
	now := time.Now()
	cur, repl := e.offers[vpsietest.OfferingOld], e.offers[vpsietest.OfferingNew]
	spec := api.PlanSpec{Cluster: "local", NodeGroup: e.prefix, Policy: e.prefix, Strategy: strategy, MaxConcurrent: 1,
		DrainTimeout: api.Duration{Duration: time.Minute}, CreatedAt: api.NewTime(now), NotAfter: api.NewTime(now.Add(time.Hour))}
	for i, n := range e.old {
		spec.Candidates = append(spec.Candidates, api.Candidate{Node: n, ProviderID: vpsie.ProviderID(e.oldIDs[i]),
			Current:        api.Offering{Name: cur.Name, Datacenter: cur.Datacenter, Arch: "amd64", HourlyPrice: cur.HourlyPrice},
			Replacement:    api.Offering{Name: repl.Name, Datacenter: repl.Datacenter, Arch: "amd64", HourlyPrice: repl.HourlyPrice},
			MonthlySavings: cur.MonthlyPrice() - repl.MonthlyPrice()})
	}
	s, err := policies.StrategyFor(strategy)
	require.NoError(e.t, err)
	spec.Steps = s.Steps(e.old, 1)
	spec.ContentDigest = spec.ComputeContentDigest()
	return &api.RebalancePlan{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: api.KindPlan},
		Metadata: api.ObjectMeta{Name: api.PlanID("local", e.prefix, now, fmt.Sprintf("%06x", now.UnixNano()&0xffffff))}, Spec: spec}
}

// run claims and runs plan with the VPSie provider.
func (e *env) run(plan *api.RebalancePlan, provisionTimeout time.Duration) *executor.Record {
	policy := api.NewPolicy(e.prefix)
	policy.Spec.NodeSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"tier": e.prefix}}
	policy.Spec.NodeGroupLabel = "pool"
	policy.Spec.Strategy = plan.Spec.Strategy
	policy.Spec.MaxConcurrent = 1
	policy.Spec.DrainTimeout = api.Duration{Duration: time.Hour}
	policy.Spec.MinNodeAge = api.Duration{}
	ps, err := policies.NewPolicies([]*api.RebalancePolicy{policy})
	require.NoError(e.t, err)
	reval := &executor.ClusterRevalidator{Client: cluster.Client, Provider: e.provider, Limits: policies.Limits{ClusterName: "local", MaxNodesPerPlan: 20},
		Policies: func(context.Context) (*policies.Policies, error) { return ps, nil }}
	opts := executor.Options{Namespace: "rebalancer-system", StopConfigMap: e.prefix + "-stop", Identity: "e2e", PollInterval: 100 * time.Millisecond,
		WaitRetry: 200 * time.Millisecond, VerifyTimeout: 30 * time.Second, WaitReadyTimeout: 60 * time.Second, ProvisionTimeout: provisionTimeout}
	ex := executor.New(cluster.Client, e.provider, reval, opts,
		executor.WithLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	rec, err := ex.Claim(e.ctx, plan, "0123456789abcdef0123456789abcdef01234567")
	require.NoError(e.t, err)
	require.NoError(e.t, ex.Run(e.ctx, rec))
	return rec
}

func hasTaint(n *corev1.Node, key string) bool {
	return slices.ContainsFunc(n.Spec.Taints, func(t corev1.Taint) bool { return t.Key == key })
}

// The rolling plan replaces two nodes through VPSie's managed-Kubernetes API. The
// first add-node answer is lost after the node was added: still exactly one new
// node per candidate.
func TestRollingPlanThroughVPSie(t *testing.T) {
	e := newEnv(t, "vpsie-rolling", 2)
	e.workload(2)
	e.server.Inject(vpsietest.RouteAddNode, vpsietest.Fault{LoseResponse: true})
	// Mid-run, once the first replacement has joined: every token expires, and the
	// API answers a 429 and a burst of 5xx.
	var once sync.Once
	e.server.OnNodeAdded(func(vm vpsietest.VM) {
		e.join(vm, nil, nil)
		once.Do(func() {
			e.server.ExpireTokens()
			e.server.Inject(vpsietest.RouteCluster, vpsietest.Fault{Status: http.StatusTooManyRequests, RetryAfter: "0"})
			e.server.Inject(vpsietest.RouteNodeGroups, vpsietest.Fault{Status: http.StatusBadGateway}, vpsietest.Fault{Status: http.StatusServiceUnavailable})
		})
	})

	rec := e.run(e.plan(api.StrategyRolling), 20*time.Second)
	require.Equal(t, api.PhaseSucceeded, rec.State.Phase, rec.State.Message)

	// VPSie: exactly the replacements, one per candidate, of the cheaper plan.
	assert.Equal(t, 2, e.server.Calls(vpsietest.RouteAddNode), "one add-node call per candidate; the lost answer was not retried")
	assert.Equal(t, 1, e.server.Calls(vpsietest.RouteAddNodeGroup), "the group of the cheaper size was created once")
	vms := e.server.Nodes(vpsietest.Cluster)
	require.Len(t, vms, 2, "exactly one new node per candidate: %v", vms)
	var newIDs []string
	for _, vm := range vms {
		assert.NotContains(t, e.oldIDs, vm.Identifier, "old VM %s terminated", vm.Identifier)
		assert.Equal(t, vpsietest.PlanNew, vm.BoxsizeID)
		newIDs = append(newIDs, vpsie.ProviderID(vm.Identifier))
	}

	// The cluster: old nodes gone, new ones labelled and tainted like them.
	for _, n := range e.old {
		_, err := cluster.Client.CoreV1().Nodes().Get(e.ctx, n, metav1.GetOptions{})
		assert.True(t, apierrors.IsNotFound(err), "old node %s deleted", n)
	}
	var recorded []string
	for _, p := range rec.State.Pairs {
		require.True(t, p.Done, p.Old)
		recorded = append(recorded, p.NewProviderID)
		n, err := cluster.Client.CoreV1().Nodes().Get(e.ctx, p.NewNode, metav1.GetOptions{})
		require.NoError(t, err)
		assert.Equal(t, p.NewProviderID, n.Spec.ProviderID)
		assert.True(t, strings.HasPrefix(n.Spec.ProviderID, vpsie.ProviderIDPrefix))
		assert.Equal(t, e.prefix, n.Labels["pool"], "the group label is applied by the executor")
		assert.Equal(t, "payments", n.Labels["team"])
		assert.Equal(t, e.prefix, n.Labels["tier"])
		assert.True(t, hasTaint(n, userTaint.Key), "the user's taint is applied by the executor")
		assert.False(t, hasTaint(n, policies.TaintInitializing), "initializing taint lifted")
		assert.False(t, hasTaint(n, policies.TaintDisrupting))
	}
	assert.ElementsMatch(t, newIDs, recorded, "each candidate's replacement is a distinct new VM")
	assert.Equal(t, 2, e.server.Calls(vpsietest.RouteDeleteNode))
	assert.Equal(t, 2, e.server.Calls(vpsietest.RouteAuth), "one token, then one refresh after the mid-run expiry")
	assert.Contains(t, e.server.Log(), vpsietest.RouteNodeGroups+" -> 503", "the 5xx burst was met")
}

// The add-node call succeeds but the node never appears: the executor waits its
// provision timeout, never calls again, and rolls the batch back; the old node
// stays, untainted.
func TestNodeThatNeverAppearsRollsBack(t *testing.T) {
	e := newEnv(t, "vpsie-never", 1)
	e.server.Inject(vpsietest.RouteAddNode, vpsietest.Fault{NeverAppears: true})

	rec := e.run(e.plan(api.StrategyRolling), 3*time.Second)
	require.Equal(t, api.PhaseRolledBack, rec.State.Phase, rec.State.Message)
	require.NotNil(t, rec.State.Rollback)
	assert.Equal(t, api.TriggerProvisionFailed, rec.State.Rollback.Trigger)
	assert.Contains(t, rec.State.Message+rec.State.Rollback.Reason, "no new")
	assert.Equal(t, 1, e.server.Calls(vpsietest.RouteAddNode), "never asked twice")
	assert.Zero(t, e.server.Calls(vpsietest.RouteDeleteNode), "nothing terminated")
	vms := e.server.Nodes(vpsietest.Cluster)
	require.Len(t, vms, 1)
	assert.Equal(t, e.oldIDs[0], vms[0].Identifier)
	n, err := cluster.Client.CoreV1().Nodes().Get(e.ctx, e.old[0], metav1.GetOptions{})
	require.NoError(t, err)
	assert.False(t, hasTaint(n, policies.TaintDisrupting))
	assert.False(t, n.Spec.Unschedulable)
}
