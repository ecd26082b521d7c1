package policies

import (
	"testing"

	"github.com/stretchr/testify/assert"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	api "github.com/rebalancer-dev/rebalancer/api/v1alpha1"
	"github.com/rebalancer-dev/rebalancer/cloud"
)

func offering(name, dc, arch, cpu, mem string, price float64) cloud.Offering {
	return cloud.Offering{Name: name, Datacenter: dc, Arch: arch, CPU: resource.MustParse(cpu), Memory: resource.MustParse(mem),
		Pods: 110, EphemeralStorage: resource.MustParse("100Gi"), HourlyPrice: price}
}

func sizedNode(name, off string, cpu, mem string) *corev1.Node {
	n := node(name, map[string]string{LabelOffering: off, corev1.LabelTopologyRegion: "fra1", corev1.LabelArchStable: "amd64",
		"pool": "general", corev1.LabelHostname: name}, true)
	n.Status.Allocatable = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse(mem),
		corev1.ResourcePods: resource.MustParse("110"), corev1.ResourceEphemeralStorage: resource.MustParse("100Gi")}
	return n
}

func requesting(cpu, mem string) podOpt {
	return func(p *corev1.Pod) {
		p.Spec.Containers = []corev1.Container{{Name: "c", Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
			corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse(mem)}}}}
	}
}

func TestChooseReplacement(t *testing.T) {
	catalog := []cloud.Offering{
		offering("v1-4x16", "fra1", "amd64", "4", "16Gi", 0.20),
		offering("v2-4x16", "fra1", "amd64", "4", "16Gi", 0.15),
		offering("v2-2x8", "fra1", "amd64", "2", "8Gi", 0.08),
		offering("arm-4x16", "fra1", "arm64", "4", "16Gi", 0.05),
		offering("v2-4x16", "ams1", "amd64", "4", "16Gi", 0.01),
		offering("v1b-4x16", "fra1", "amd64", "4", "16Gi", 0.19),
	}
	cur := &catalog[0]
	fit := spec()
	fit.Sizing = api.SizingFitWorkload
	allowOnlyB := spec()
	allowOnlyB.AllowedOfferings = []string{"v1b-4x16"}
	high := spec()
	high.SavingsThresholdPercent = 30
	cases := []struct {
		name    string
		spec    *api.PolicySpec
		pods    []*corev1.Pod
		reason  Reason
		replace string
	}{
		{"match-capacity takes the cheapest same-size amd64 offering in the datacenter", spec(),
			[]*corev1.Pod{pod("a", "n1", requesting("1", "2Gi"))}, ReasonCandidate, "v2-4x16"},
		{"fit-workload may shrink to fit requests plus headroom", fit,
			[]*corev1.Pod{pod("a", "n1", requesting("1", "2Gi")), pod("b", "n1", requesting("500m", "1Gi"))}, ReasonCandidate, "v2-2x8"},
		{"fit-workload keeps room for the largest pod and headroom", fit,
			[]*corev1.Pod{pod("a", "n1", requesting("1900m", "2Gi"))}, ReasonCandidate, "v2-4x16"},
		{"allowedOfferings restricts the choice", allowOnlyB, nil, ReasonBelowThreshold, "v1b-4x16"},
		{"threshold", high, nil, ReasonBelowThreshold, "v2-4x16"},
		{"a nodeSelector on the old instance type makes every cheaper offering incompatible", spec(),
			[]*corev1.Pod{pod("a", "n1", func(p *corev1.Pod) {
				p.Spec.NodeSelector = map[string]string{corev1.LabelInstanceTypeStable: "v1-4x16"}
			})}, ReasonIncompatible, ""},
		{"a nodeSelector on a user label still matches (labels are inherited)", spec(),
			[]*corev1.Pod{pod("a", "n1", func(p *corev1.Pod) { p.Spec.NodeSelector = map[string]string{"pool": "general"} })}, ReasonCandidate, "v2-4x16"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := ChooseReplacement(sizedNode("n1", "v1-4x16", "4", "16Gi"), cur, tc.pods, nil, NewCatalog(catalog), tc.spec)
			assert.Equal(t, tc.reason, c.Reason, c.Detail)
			if tc.replace != "" {
				if assert.NotNil(t, c.Replacement) {
					assert.Equal(t, tc.replace, c.Replacement.Name)
					assert.Equal(t, "fra1", c.Replacement.Datacenter, "same datacenter")
					assert.Equal(t, "amd64", c.Replacement.Arch, "never arm64 for an amd64 node")
				}
			}
			assert.NotEmpty(t, c.Detail)
		})
	}

	// The cheapest offering of all is arm64: never chosen for an amd64 node.
	c := ChooseReplacement(sizedNode("n1", "v1-4x16", "4", "16Gi"), cur, nil, nil, NewCatalog(catalog), spec())
	assert.Equal(t, "v2-4x16", c.Replacement.Name)
	assert.InDelta(t, 25.0, c.SavingsPercent, 0.001)

	// Already the cheapest of its size.
	c = ChooseReplacement(sizedNode("n1", "v2-4x16", "4", "16Gi"), &catalog[1], nil, nil, NewCatalog(catalog), spec())
	assert.Equal(t, ReasonAlreadyOptimal, c.Reason)
}

// daemonPod is a DaemonSet's pod as its controller creates it: pinned to its node
// by a metadata.name field selector, plus the DaemonSet's own node affinity.
func daemonPod(name, nodeName string, own []corev1.NodeSelectorRequirement) *corev1.Pod {
	return pod(name, nodeName, func(p *corev1.Pod) {
		yes := true
		p.OwnerReferences = []metav1.OwnerReference{{Kind: "DaemonSet", Name: "ds", Controller: &yes}}
		p.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
			NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: own, MatchFields: []corev1.NodeSelectorRequirement{
				{Key: metav1.ObjectNameField, Operator: corev1.NodeSelectorOpIn, Values: []string{nodeName}}}}}}}}
	})
}

func TestDaemonSetPodsAreNotPinnedToTheOldNode(t *testing.T) {
	catalog := []cloud.Offering{offering("v1-4x16", "fra1", "amd64", "4", "16Gi", 0.20), offering("v2-4x16", "fra1", "amd64", "4", "16Gi", 0.15)}
	n := sizedNode("n1", "v1-4x16", "4", "16Gi")
	// Pinned to n1 by the DaemonSet controller only: the replacement gets its own pod.
	c := ChooseReplacement(n, &catalog[0], nil, []*corev1.Pod{daemonPod("agent", "n1", nil)}, NewCatalog(catalog), spec())
	assert.Equal(t, ReasonCandidate, c.Reason, c.Detail)
	// The DaemonSet's own affinity still counts: one tied to the old instance type
	// would not run on the replacement.
	c = ChooseReplacement(n, &catalog[0], nil, []*corev1.Pod{daemonPod("agent", "n1", []corev1.NodeSelectorRequirement{
		{Key: corev1.LabelInstanceTypeStable, Operator: corev1.NodeSelectorOpIn, Values: []string{"v1-4x16"}}})}, NewCatalog(catalog), spec())
	assert.Equal(t, ReasonIncompatible, c.Reason, c.Detail)
	// A plain pod pinned by name stays incompatible: nothing recreates it elsewhere.
	pinned := daemonPod("pinned", "n1", nil)
	pinned.OwnerReferences = nil
	c = ChooseReplacement(n, &catalog[0], []*corev1.Pod{pinned}, nil, NewCatalog(catalog), spec())
	assert.Equal(t, ReasonIncompatible, c.Reason, c.Detail)
}

func TestNodeOfferingAndInheritance(t *testing.T) {
	catalog := []cloud.Offering{offering("v1", "fra1", "amd64", "4", "16Gi", 0.2)}
	n := node("n", map[string]string{corev1.LabelInstanceTypeStable: "v1", corev1.LabelTopologyRegion: "fra1"}, true)
	o, why := NodeOffering(n, catalog)
	assert.Equal(t, "v1", o.Name, why)
	n.Labels[LabelOffering] = "v9"
	o, why = NodeOffering(n, catalog)
	assert.Nil(t, o)
	assert.Equal(t, "offering v9 in fra1 is not in the provider's catalog", why)

	// A node VPSie's autoscaler made carries only its own offering label.
	n = node("n", map[string]string{LabelVPSieOffering: "v1", corev1.LabelTopologyRegion: "fra1"}, true)
	o, why = NodeOffering(n, catalog)
	if assert.NotNil(t, o, why) {
		assert.Equal(t, "v1", o.Name)
	}

	n = node("n", map[string]string{"pool": "general", corev1.LabelHostname: "n", "node-role.kubernetes.io/worker": "", "team": "a"}, true)
	n.Spec.Taints = []corev1.Taint{{Key: "dedicated", Value: "x", Effect: corev1.TaintEffectNoSchedule},
		{Key: "node.kubernetes.io/unschedulable", Effect: corev1.TaintEffectNoSchedule}, {Key: TaintDisrupting, Effect: corev1.TaintEffectNoSchedule}}
	assert.Equal(t, map[string]string{"pool": "general", "team": "a"}, UserLabels(n))
	assert.Equal(t, []corev1.Taint{{Key: "dedicated", Value: "x", Effect: corev1.TaintEffectNoSchedule}}, InheritedTaints(n))
	rn := ReplacementNode(n, &catalog[0])
	assert.Equal(t, "v1", rn.Labels[corev1.LabelInstanceTypeStable])
	assert.Equal(t, "general", rn.Labels["pool"])

	// A pod that does not tolerate the inherited taint cannot go there.
	assert.Contains(t, PodFits(pod("p", ""), rn), "does not tolerate taint dedicated=x:NoSchedule")
}
