package policies

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	api "github.com/rebalancer-dev/rebalancer/api/v1alpha1"
	"github.com/rebalancer-dev/rebalancer/cloud"
)

type world struct {
	plan     *api.RebalancePlan
	policy   *api.RebalancePolicy
	nodes    []*corev1.Node
	pods     []*corev1.Pod
	pdbs     []*policyv1.PodDisruptionBudget
	catalog  []cloud.Offering
	in       RevalidateInput
	noPolicy bool
}

var revalNow = time.Date(2026, 11, 28, 1, 0, 0, 0, time.UTC)

func newWorld(t *testing.T) *world {
	w := &world{}
	w.policy = api.NewPolicy("general")
	w.policy.Spec.NodeSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "general"}}
	w.policy.Spec.NodeGroupLabel = "pool"
	w.catalog = []cloud.Offering{offering("v1", "fra1", "amd64", "4", "16Gi", 0.20), offering("v2", "fra1", "amd64", "4", "16Gi", 0.15)}
	for _, name := range []string{"n1", "n2"} {
		n := sizedNode(name, "v1", "4", "16Gi")
		n.Labels["tier"] = "general"
		n.Spec.ProviderID = "kwok://" + name
		w.nodes = append(w.nodes, n)
		w.pods = append(w.pods, pod("web-"+name, name))
	}
	w.pods = append(w.pods, pod("web-x", "n9"))
	cand := func(n string) api.Candidate {
		return api.Candidate{Node: n, ProviderID: "kwok://" + n,
			Current:     api.Offering{Name: "v1", Datacenter: "fra1", Arch: "amd64", HourlyPrice: 0.20},
			Replacement: api.Offering{Name: "v2", Datacenter: "fra1", Arch: "amd64", HourlyPrice: 0.15}, MonthlySavings: 36.5}
	}
	w.plan = &api.RebalancePlan{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: api.KindPlan},
		Metadata: api.ObjectMeta{Name: "prod-general-20261127-abcdef"},
		Spec: api.PlanSpec{Cluster: "prod", NodeGroup: "general", Policy: "general", Strategy: api.StrategyRolling,
			MaxConcurrent: 1, DrainTimeout: api.Duration{Duration: 300 * time.Second},
			NotAfter:   api.NewTime(revalNow.Add(48 * time.Hour)),
			Candidates: []api.Candidate{cand("n1"), cand("n2")}}}
	s, err := StrategyFor(api.StrategyRolling)
	require.NoError(t, err)
	w.plan.Spec.Steps = s.Steps([]string{"n1", "n2"}, 1)
	w.plan.Spec.ContentDigest = w.plan.Spec.ComputeContentDigest()
	w.in = RevalidateInput{Limits: Limits{ClusterName: "prod", MaxNodesPerPlan: 10}, Now: revalNow, EstimatedDuration: 20 * time.Minute}
	return w
}

func (w *world) decide(t *testing.T) Decision {
	t.Helper()
	var ps []*api.RebalancePolicy
	if !w.noPolicy {
		ps = append(ps, w.policy)
	}
	pols, err := NewPolicies(ps)
	require.NoError(t, err)
	in := w.in
	in.Snapshot = NewSnapshot(w.nodes, w.pods, w.pdbs, nil, nil)
	in.Policies = pols
	in.Offerings = w.catalog
	return Revalidate(w.plan, in)
}

func TestRevalidate(t *testing.T) {
	cases := []struct {
		name    string
		change  func(w *world)
		verdict Verdict
		reason  string // a substring of one reason
		skip    string // for started plans: the node skipped
	}{
		{"unchanged", func(*world) {}, Run, "", ""},
		{"node deleted", func(w *world) { w.nodes = w.nodes[1:] }, Reject, "n1: the node no longer exists", ""},
		{"providerID changed", func(w *world) { w.nodes[0].Spec.ProviderID = "kwok://n1-new" }, Reject, `providerID is now "kwok://n1-new"`, ""},
		{"node now opted out", func(w *world) { w.nodes[0].Annotations = map[string]string{DoNotDisrupt: "true"} }, Reject, "n1: the node now opts out", ""},
		{"node relabelled into another group", func(w *world) { w.nodes[1].Labels["pool"] = "batch" }, Reject, `n2: the node is now in node group "batch"`, ""},
		{"node now managed by karpenter", func(w *world) { w.nodes[1].Labels["karpenter.sh/nodepool"] = "x" }, Reject, "managed by karpenter", ""},
		{"a new PDB at zero makes it wait", func(w *world) {
			w.pdbs = []*policyv1.PodDisruptionBudget{pdb("web", ios("2"), nil, 3, 0)}
		}, Wait, "PDB ns/web allows no disruption right now", ""},
		{"a new PDB that never allows rejects", func(w *world) {
			w.pdbs = []*policyv1.PodDisruptionBudget{pdb("web", nil, ios("0"), 3, 0)}
		}, Reject, "pdb-never-allows", ""},
		{"offering removed from the catalog", func(w *world) { w.catalog = w.catalog[:1] }, Reject, "offering v2 is no longer offered in fra1", ""},
		{"price rise under the threshold", func(w *world) { w.catalog[1].HourlyPrice = 0.19 }, Reject, "saves 5.0%, under the 10% threshold", ""},
		{"threshold raised in the policy", func(w *world) { w.policy.Spec.SavingsThresholdPercent = 40 }, Reject, "under the 40% threshold", ""},
		{"replacement no longer allowed", func(w *world) { w.policy.Spec.AllowedOfferings = []string{"v3"} }, Reject, "no longer in the policy's allowedOfferings", ""},
		{"policy deleted", func(w *world) { w.noPolicy = true }, Reject, `policy "general" no longer exists`, ""},
		{"policy now stricter on concurrency", func(w *world) { w.plan.Spec.MaxConcurrent = 2; w.regenSteps(t) }, Reject, "maxConcurrent 2 exceeds the policy's 1", ""},
		{"riskier strategy than the policy", func(w *world) { w.plan.Spec.Strategy = api.StrategyBlueGreen; w.regenSteps(t) }, Reject, "riskier than the policy's rolling", ""},
		{"hard limit lowered", func(w *world) { w.in.Limits.MaxNodesPerPlan = 1 }, Reject, "--max-nodes-per-plan 1", ""},
		{"node group not allowed", func(w *world) { w.in.Limits.AllowedNodeGroups = []string{"batch"} }, Reject, "not in --allowed-node-groups", ""},
		{"another cluster", func(w *world) { w.in.Limits.ClusterName = "staging" }, Reject, `runs cluster "staging"`, ""},
		{"steps edited by hand", func(w *world) {
			w.plan.Spec.Steps[2], w.plan.Spec.Steps[3] = w.plan.Spec.Steps[3], w.plan.Spec.Steps[2]
		}, Reject, "the steps differ", ""},
		{"candidates edited by hand", func(w *world) { w.plan.Spec.Candidates[1].ProviderID = "kwok://other" }, Reject, "contentDigest does not match", ""},
		{"expired", func(w *world) { w.in.Now = w.plan.Spec.NotAfter.Add(time.Second) }, Expire, "notAfter", ""},
		{"paused policy waits", func(w *world) { w.policy.Spec.Paused = true }, Wait, "policy general is paused", ""},
		{"cooldown waits", func(w *world) { w.in.LastFinished = revalNow.Add(-10 * time.Minute) }, Wait, "cooling down until 2026-11-28T01:50:00Z", ""},
		{"outside the window waits for the next", func(w *world) { w.policy.Spec.MaintenanceWindows = []string{"Sun 00:00-06:00"} }, Wait, "next fitting window opens", ""},
		{"unhealthy cluster waits", func(w *world) {
			w.policy.Spec.MaxUnhealthyCount = 0
			w.policy.Spec.MaxUnhealthyPercent = 0
			w.nodes = append(w.nodes, node("sick", nil, false))
		}, Wait, "cluster unhealthy", ""},
		{"mid-plan a deleted node is skipped, not fatal", func(w *world) { w.in.Started = true; w.nodes = w.nodes[:1] }, Run, "", "n2"},
		{"mid-plan a finished candidate is not checked", func(w *world) {
			w.in.Started = true
			w.in.Done = map[string]bool{"n1": true}
			w.nodes = w.nodes[1:]
		}, Run, "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			tc.change(w)
			d := w.decide(t)
			assert.Equal(t, tc.verdict, d.Verdict, "reasons: %v", d.Reasons)
			if tc.reason != "" {
				assert.True(t, strings.Contains(strings.Join(d.Reasons, "\n"), tc.reason), "want %q in %q", tc.reason, d.Reasons)
			}
			if tc.skip != "" {
				assert.Contains(t, d.Skip, tc.skip)
			} else {
				assert.Empty(t, d.Skip)
			}
		})
	}
}

func (w *world) regenSteps(t *testing.T) {
	s, err := StrategyFor(w.plan.Spec.Strategy)
	require.NoError(t, err)
	w.plan.Spec.Steps = s.Steps(candidateNodes(w.plan), w.plan.Spec.MaxConcurrent)
	w.plan.Spec.ContentDigest = w.plan.Spec.ComputeContentDigest()
}
