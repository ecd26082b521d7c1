package planner

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	api "github.com/rebalancer-dev/rebalancer/api/v1alpha1"
	"github.com/rebalancer-dev/rebalancer/cloud"
	"github.com/rebalancer-dev/rebalancer/policies"
)

var now = time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)

func off(name, arch, cpu, mem string, price float64) cloud.Offering {
	return cloud.Offering{Name: name, Datacenter: "fra1", Arch: arch, CPU: resource.MustParse(cpu), Memory: resource.MustParse(mem),
		Pods: 110, EphemeralStorage: resource.MustParse("100Gi"), HourlyPrice: price}
}

var catalog = []cloud.Offering{
	off("v1-4x16", "amd64", "4", "16Gi", 0.20),
	off("v2-4x16", "amd64", "4", "16Gi", 0.15),
	off("v2b-4x16", "amd64", "4", "16Gi", 0.16),
	off("arm-4x16", "arm64", "4", "16Gi", 0.05),
}

func mkNode(name string, age time.Duration, mod ...func(*corev1.Node)) *corev1.Node {
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(now.Add(-age)), Labels: map[string]string{
			"tier": "general", "pool": "general", policies.LabelOffering: "v1-4x16", corev1.LabelTopologyRegion: "fra1",
			corev1.LabelArchStable: "amd64", corev1.LabelHostname: name}},
		Spec: corev1.NodeSpec{ProviderID: "kwok://" + name},
		Status: corev1.NodeStatus{
			Conditions:  []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}},
			Allocatable: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("4"), corev1.ResourceMemory: resource.MustParse("16Gi"), corev1.ResourcePods: resource.MustParse("110")},
		},
	}
	for _, m := range mod {
		m(n)
	}
	return n
}

func mkPod(name, nodeName string, mod ...func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Labels: map[string]string{"app": name},
			OwnerReferences: []metav1.OwnerReference{{Kind: "ReplicaSet", Name: name, Controller: ptr.To(true)}}},
		Spec:   corev1.PodSpec{NodeName: nodeName, Containers: []corev1.Container{{Name: "c"}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	}
	for _, m := range mod {
		m(p)
	}
	return p
}

func label(k, v string) func(*corev1.Node) { return func(n *corev1.Node) { n.Labels[k] = v } }

func generalPolicy() *api.RebalancePolicy {
	p := api.NewPolicy("general")
	p.Spec.NodeSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "general"}}
	p.Spec.NodeGroupLabel = "pool"
	p.Spec.MaxNodesPerPlan = 3
	return p
}

// TestEveryReason builds one node per reason and checks each gets exactly that one.
func TestEveryReason(t *testing.T) {
	old := 48 * time.Hour
	other := api.NewPolicy("other")
	other.Spec.NodeSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"conflict": "yes"}}
	batch := api.NewPolicy("batch")
	batch.Spec.NodeSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "batch"}}
	batch.Spec.Paused = true
	nodes := []*corev1.Node{
		mkNode("cand-1", old),
		mkNode("cand-2", old),
		mkNode("cp", old, label("node-role.kubernetes.io/control-plane", "")),
		mkNode("nopolicy", old, label("tier", "db")),
		mkNode("conflict", old, label("conflict", "yes")),
		mkNode("karp", old, label("karpenter.sh/nodepool", "default")),
		mkNode("paused", old, label("tier", "batch")),
		mkNode("optout", old, func(n *corev1.Node) { n.Annotations = map[string]string{policies.DoNotDisrupt: "true"} }),
		mkNode("pending", old),
		mkNode("young", time.Hour),
		mkNode("unknown", old, label(policies.LabelOffering, "v0-mystery")),
		mkNode("local", old),
		mkNode("pdb", old),
		mkNode("twopdb", old),
		mkNode("unmovable", old),
		mkNode("optimal", old, label(policies.LabelOffering, "v2-4x16")),
		mkNode("below", old, label(policies.LabelOffering, "v2b-4x16")),
		mkNode("incompat", old),
		mkNode("cool", old, label("pool", "cooling")),
	}
	pods := []*corev1.Pod{
		mkPod("web-1", "cand-1"), mkPod("web-2", "cand-2"),
		mkPod("db", "local", func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: "d", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/data"}}}}
		}),
		mkPod("guarded", "pdb"),
		mkPod("shared", "twopdb", func(p *corev1.Pod) { p.Labels = map[string]string{"app": "shared"} }),
		mkPod("bare", "unmovable", func(p *corev1.Pod) { p.OwnerReferences = nil }),
		mkPod("pinned", "incompat", func(p *corev1.Pod) {
			p.Spec.NodeSelector = map[string]string{corev1.LabelInstanceTypeStable: "v1-4x16"}
		}),
	}
	pdbs := []*policyv1.PodDisruptionBudget{
		{ObjectMeta: metav1.ObjectMeta{Name: "guarded", Namespace: "default"}, Spec: policyv1.PodDisruptionBudgetSpec{
			MaxUnavailable: ptr.To(intstr.FromInt32(0)), Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "guarded"}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "s1", Namespace: "default"}, Spec: policyv1.PodDisruptionBudgetSpec{
			MinAvailable: ptr.To(intstr.FromInt32(0)), Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "shared"}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "s2", Namespace: "default"}, Spec: policyv1.PodDisruptionBudgetSpec{
			MinAvailable: ptr.To(intstr.FromInt32(0)), Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "shared"}}}},
	}
	ps, err := policies.NewPolicies([]*api.RebalancePolicy{generalPolicy(), other, batch})
	require.NoError(t, err)
	a, err := Analyze(Inputs{
		Cluster: "prod", Snapshot: policies.NewSnapshot(nodes, pods, pdbs, nil, nil), Policies: ps, Offerings: catalog, Now: now,
		History: History{PendingNodes: map[string]string{"pending": "prod-general-20261126-aaaaaa"},
			LastFinished: map[string]time.Time{GroupKey("general", "cooling"): now.Add(-10 * time.Minute)}},
	})
	require.NoError(t, err)
	want := map[string]policies.Reason{
		"cand-1": policies.ReasonCandidate, "cand-2": policies.ReasonCandidate, "cp": policies.ReasonControlPlane,
		"nopolicy": policies.ReasonNoPolicy, "conflict": policies.ReasonPolicyConflict, "karp": policies.ManagedBy("karpenter"),
		"paused": policies.ReasonPaused, "optout": policies.ReasonOptedOut, "pending": policies.ReasonInPendingPlan,
		"young": policies.ReasonTooYoung, "unknown": policies.ReasonUnknownOffering, "local": policies.ReasonLocalStorage,
		"pdb": policies.ReasonPDBNeverAllows, "twopdb": policies.ReasonPodUnderTwoPDBs, "unmovable": policies.ReasonUnmovablePod,
		"optimal": policies.ReasonAlreadyOptimal, "below": policies.ReasonBelowThreshold, "incompat": policies.ReasonIncompatible,
		"cool": policies.ReasonCooldown,
	}
	require.Len(t, a.Nodes, len(nodes), "one row per node")
	for _, r := range a.Nodes {
		assert.Equal(t, want[r.Node], r.Reason, "%s: %s", r.Node, r.Detail)
		assert.NotEmpty(t, r.Detail, r.Node)
	}
	require.Len(t, a.Plans, 1, "one node group has candidates")
	plan := a.Plans[0]
	assert.Equal(t, "general", plan.Spec.NodeGroup)
	require.Len(t, plan.Spec.Candidates, 2)
	assert.Equal(t, "v2-4x16", plan.Spec.Candidates[0].Replacement.Name, "cheapest amd64; arm64 never")
	assert.InDelta(t, 36.5, plan.Spec.Candidates[0].MonthlySavings, 0.001)
	assert.InDelta(t, 73.0, plan.Spec.EstimatedMonthlySavings, 0.001)
	assert.Equal(t, now.Add(7*24*time.Hour), plan.Spec.NotAfter.Time)

	// The plan renders as YAML that the strict decoder and validation accept.
	out, err := api.Marshal(plan)
	require.NoError(t, err)
	_, err = api.DecodePlan(plan.Metadata.Name+".yaml", out)
	require.NoError(t, err, "%s", out)
}

func TestPlanCapsAndOrders(t *testing.T) {
	var nodes []*corev1.Node
	for i := range 5 {
		nodes = append(nodes, mkNode(fmt.Sprintf("n%d", i), 48*time.Hour))
	}
	// n3 and n4 run on a pricier offering: bigger savings, first in the plan.
	cat := append([]cloud.Offering{off("v1-4x16-premium", "amd64", "4", "16Gi", 0.30)}, catalog...)
	nodes[3].Labels[policies.LabelOffering] = "v1-4x16-premium"
	nodes[4].Labels[policies.LabelOffering] = "v1-4x16-premium"
	pol := generalPolicy()
	pol.Spec.MaxConcurrent = 2
	pol.Spec.Strategy = api.StrategySurge
	ps, err := policies.NewPolicies([]*api.RebalancePolicy{pol})
	require.NoError(t, err)
	a, err := Analyze(Inputs{Cluster: "prod", Snapshot: policies.NewSnapshot(nodes, nil, nil, nil, nil), Policies: ps, Offerings: cat, Now: now})
	require.NoError(t, err)
	require.Len(t, a.Plans, 1)
	spec := a.Plans[0].Spec
	var got []string
	for _, c := range spec.Candidates {
		got = append(got, c.Node)
	}
	assert.Equal(t, []string{"n3", "n4", "n0"}, got, "capped at maxNodesPerPlan 3, largest savings first, ties by name")
	assert.Equal(t, api.StrategySurge, spec.Strategy)
	assert.Equal(t, spec.ComputeContentDigest(), spec.ContentDigest)
	assert.Equal(t, 5*time.Minute+2*3*time.Minute, spec.EstimatedDuration.Duration, "surge: one provisioning, two drain batches")
	assert.Regexp(t, `^prod-general-20261127-[0-9a-f]{6}$`, a.Plans[0].Metadata.Name)
	names := map[string]api.CheckResult{}
	for _, c := range spec.SafetyChecks {
		names[c.Name] = c.Result
	}
	assert.Equal(t, map[string]api.CheckResult{"cluster-health": api.CheckPass, "pdbs": api.CheckPass, "local-storage": api.CheckPass,
		"maintenance-window": api.CheckPass, "cooldown": api.CheckPass}, names)

	// A hard limit below the policy's wins.
	a, err = Analyze(Inputs{Cluster: "prod", Snapshot: policies.NewSnapshot(nodes, nil, nil, nil, nil), Policies: ps, Offerings: cat, Now: now, MaxNodesPerPlan: 1})
	require.NoError(t, err)
	assert.Len(t, a.Plans[0].Spec.Candidates, 1)
}
