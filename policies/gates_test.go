package policies

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	api "github.com/rebalancer-dev/rebalancer/api/v1alpha1"
)

func node(name string, labels map[string]string, ready bool) *corev1.Node {
	st := corev1.ConditionTrue
	if !ready {
		st = corev1.ConditionFalse
	}
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: st}}}}
}

type podOpt func(*corev1.Pod)

func pod(name, nodeName string, opts ...podOpt) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", Labels: map[string]string{"app": "web"},
			OwnerReferences: []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "web-1", Controller: ptr.To(true)}}},
		Spec: corev1.PodSpec{NodeName: nodeName},
		Status: corev1.PodStatus{Phase: corev1.PodRunning,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

func withAnnotation(k, v string) podOpt {
	return func(p *corev1.Pod) {
		if p.Annotations == nil {
			p.Annotations = map[string]string{}
		}
		p.Annotations[k] = v
	}
}
func withOwner(kind, name string) podOpt {
	return func(p *corev1.Pod) {
		p.OwnerReferences = []metav1.OwnerReference{{Kind: kind, Name: name, Controller: ptr.To(true)}}
	}
}
func withVolume(v corev1.Volume) podOpt {
	return func(p *corev1.Pod) { p.Spec.Volumes = append(p.Spec.Volumes, v) }
}
func withLabels(l map[string]string) podOpt { return func(p *corev1.Pod) { p.Labels = l } }
func notReady(p *corev1.Pod)                { p.Status.Conditions[0].Status = corev1.ConditionFalse }

func pdb(name string, minAvail, maxUnavail *intstr.IntOrString, expected, allowed int32) *policyv1.PodDisruptionBudget {
	return &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns"},
		Spec: policyv1.PodDisruptionBudgetSpec{MinAvailable: minAvail, MaxUnavailable: maxUnavail,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}},
		Status: policyv1.PodDisruptionBudgetStatus{ExpectedPods: expected, DisruptionsAllowed: allowed},
	}
}

func ios(s string) *intstr.IntOrString { v := intstr.Parse(s); return &v }

func spec() *api.PolicySpec { s := api.DefaultPolicySpec(); return &s }

func TestPodBlockers(t *testing.T) {
	hostPV := &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pvc-local-path"},
		Spec: corev1.PersistentVolumeSpec{
			PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/var/lib/rancher/local-path/x"}},
			NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchExpressions: []corev1.NodeSelectorRequirement{{Key: corev1.LabelHostname, Operator: corev1.NodeSelectorOpIn, Values: []string{"n1"}}}}}}}}}
	netPV := &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pvc-net"},
		Spec: corev1.PersistentVolumeSpec{NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
			MatchExpressions: []corev1.NodeSelectorRequirement{{Key: corev1.LabelTopologyZone, Operator: corev1.NodeSelectorOpIn, Values: []string{"fra1-a"}}}}}}}}}
	claim := func(name, pv string) *corev1.PersistentVolumeClaim {
		return &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns"}, Spec: corev1.PersistentVolumeClaimSpec{VolumeName: pv}}
	}
	pvcVol := func(claim string) corev1.Volume {
		return corev1.Volume{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}}
	}
	emptyDir := corev1.Volume{Name: "cache", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}
	hostPath := corev1.Volume{Name: "logs", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/var/log"}}}
	block := spec()
	block.LocalStorage.EmptyDir = api.EmptyDirBlock
	alwaysAllow := pdb("web", ios("100%"), nil, 3, 0)
	alwaysAllow.Spec.UnhealthyPodEvictionPolicy = ptr.To(policyv1.AlwaysAllow)

	cases := []struct {
		name string
		pod  *corev1.Pod
		pdbs []*policyv1.PodDisruptionBudget
		spec *api.PolicySpec
		want []Reason
	}{
		{"plain ReplicaSet pod moves", pod("a", "n1"), nil, spec(), nil},
		{"rebalancer opt-out", pod("a", "n1", withAnnotation(DoNotDisrupt, "true")), nil, spec(), []Reason{ReasonOptedOut}},
		{"karpenter opt-out, any value", pod("a", "n1", withAnnotation(KarpenterDoNotDisrupt, "yes")), nil, spec(), []Reason{ReasonOptedOut}},
		{"karpenter false is no opt-out", pod("a", "n1", withAnnotation(KarpenterDoNotDisrupt, "false")), nil, spec(), nil},
		{"safe-to-evict false", pod("a", "n1", withAnnotation(SafeToEvict, "false")), nil, spec(), []Reason{ReasonOptedOut}},
		{"hostPath blocks", pod("a", "n1", withVolume(hostPath)), nil, spec(), []Reason{ReasonLocalStorage}},
		{"hostPath blocks despite safe-to-evict", pod("a", "n1", withVolume(hostPath), withAnnotation(SafeToEvict, "true")), nil, spec(), []Reason{ReasonLocalStorage}},
		{"hostPath disposable", pod("a", "n1", withVolume(hostPath), withAnnotation(LocalDataDisposable, "true")), nil, spec(), nil},
		{"local-path-provisioner PV blocks despite safe-to-evict", pod("a", "n1", withVolume(pvcVol("data-a")), withAnnotation(SafeToEvict, "true")), nil, spec(), []Reason{ReasonLocalStorage}},
		{"zonal network PV moves", pod("a", "n1", withVolume(pvcVol("data-net"))), nil, spec(), nil},
		{"emptyDir allowed by default", pod("a", "n1", withVolume(emptyDir)), nil, spec(), nil},
		{"emptyDir blocked by policy", pod("a", "n1", withVolume(emptyDir)), nil, block, []Reason{ReasonLocalStorage}},
		{"emptyDir listed in safe-to-evict-local-volumes", pod("a", "n1", withVolume(emptyDir), withAnnotation(SafeToEvictLocalVolumes, "tmp, cache")), nil, block, nil},
		{"PDB maxUnavailable 0", pod("a", "n1"), []*policyv1.PodDisruptionBudget{pdb("web", nil, ios("0"), 3, 0)}, spec(), []Reason{ReasonPDBNeverAllows}},
		{"PDB maxUnavailable 0%", pod("a", "n1"), []*policyv1.PodDisruptionBudget{pdb("web", nil, ios("0%"), 3, 0)}, spec(), []Reason{ReasonPDBNeverAllows}},
		{"PDB minAvailable equals replicas", pod("a", "n1"), []*policyv1.PodDisruptionBudget{pdb("web", ios("3"), nil, 3, 0)}, spec(), []Reason{ReasonPDBNeverAllows}},
		{"PDB minAvailable 100%", pod("a", "n1"), []*policyv1.PodDisruptionBudget{pdb("web", ios("100%"), nil, 3, 0)}, spec(), []Reason{ReasonPDBNeverAllows}},
		{"single replica minAvailable 1", pod("a", "n1"), []*policyv1.PodDisruptionBudget{pdb("web", ios("1"), nil, 1, 0)}, spec(), []Reason{ReasonPDBNeverAllows}},
		{"PDB minAvailable 2 of 3 allows", pod("a", "n1"), []*policyv1.PodDisruptionBudget{pdb("web", ios("2"), nil, 3, 1)}, spec(), nil},
		{"PDB temporarily at 0 is not never", pod("a", "n1"), []*policyv1.PodDisruptionBudget{pdb("web", ios("2"), nil, 3, 0)}, spec(), nil},
		{"AlwaysAllow lets an unready pod go", pod("a", "n1", notReady), []*policyv1.PodDisruptionBudget{alwaysAllow}, spec(), nil},
		{"AlwaysAllow does not help a ready pod", pod("a", "n1"), []*policyv1.PodDisruptionBudget{alwaysAllow}, spec(), []Reason{ReasonPDBNeverAllows}},
		{"pod under two PDBs", pod("a", "n1"), []*policyv1.PodDisruptionBudget{pdb("web", ios("1"), nil, 3, 2), pdb("web-2", ios("1"), nil, 3, 2)}, spec(), []Reason{ReasonPodUnderTwoPDBs}},
		{"PDB of other pods does not apply", pod("a", "n1", withLabels(map[string]string{"app": "db"})), []*policyv1.PodDisruptionBudget{pdb("web", nil, ios("0"), 3, 0)}, spec(), nil},
		{"no controller", pod("a", "n1", func(p *corev1.Pod) { p.OwnerReferences = nil }), nil, spec(), []Reason{ReasonUnmovablePod}},
		{"running Job", pod("a", "n1", withOwner("Job", "backup")), nil, spec(), []Reason{ReasonUnmovablePod}},
		{"finished Job pod is ignored", pod("a", "n1", withOwner("Job", "backup"), func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }), nil, spec(), nil},
		{"grace period over drainTimeout", pod("a", "n1", func(p *corev1.Pod) { p.Spec.TerminationGracePeriodSeconds = ptr.To[int64](600) }), nil, spec(), []Reason{ReasonUnmovablePod}},
		{"grace period within drainTimeout", pod("a", "n1", func(p *corev1.Pod) { p.Spec.TerminationGracePeriodSeconds = ptr.To[int64](30) }), nil, spec(), nil},
		{"DaemonSet pod is not evicted", pod("a", "n1", withOwner("DaemonSet", "fluentbit"), withVolume(hostPath)), nil, spec(), nil},
		{"mirror pod is not evicted", pod("a", "n1", withAnnotation(corev1.MirrorPodAnnotationKey, "x"), func(p *corev1.Pod) { p.OwnerReferences = nil }), nil, spec(), nil},
		{"several blockers in reason order", pod("a", "n1", withVolume(hostPath), withAnnotation(DoNotDisrupt, "true"), withOwner("Job", "j")), nil, spec(),
			[]Reason{ReasonOptedOut, ReasonLocalStorage, ReasonUnmovablePod}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pods := []*corev1.Pod{tc.pod}
			// The PDB's expected count says how many replicas there are.
			if alone := len(tc.pdbs) == 1 && tc.pdbs[0].Status.ExpectedPods == 1; !alone {
				pods = append(pods, pod("b", "n2"), pod("c", "n3")) // other replicas the PDB counts
			}
			s := NewSnapshot([]*corev1.Node{node("n1", nil, true)}, pods, tc.pdbs,
				[]*corev1.PersistentVolumeClaim{claim("data-a", "pvc-local-path"), claim("data-net", "pvc-net")},
				[]*corev1.PersistentVolume{hostPV, netPV})
			var got []Reason
			for _, b := range s.NodeBlockers("n1", tc.spec) {
				got = append(got, b.Reason)
				assert.NotEmpty(t, b.Detail)
				assert.Equal(t, "ns/a", b.Pod)
			}
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestTemporarilyBlocked(t *testing.T) {
	s := NewSnapshot(nil, []*corev1.Pod{pod("a", "n1"), pod("b", "n2"), pod("c", "n3")},
		[]*policyv1.PodDisruptionBudget{pdb("web", ios("2"), nil, 3, 0)}, nil, nil)
	assert.Equal(t, []string{"ns/web"}, s.TemporarilyBlocked("n1"))
	s = NewSnapshot(nil, []*corev1.Pod{pod("a", "n1"), pod("b", "n2"), pod("c", "n3")},
		[]*policyv1.PodDisruptionBudget{pdb("web", ios("2"), nil, 3, 1)}, nil, nil)
	assert.Empty(t, s.TemporarilyBlocked("n1"))
}

func TestClusterHealth(t *testing.T) {
	mk := func(ready, notReady int) []*corev1.Node {
		var out []*corev1.Node
		for i := range ready {
			out = append(out, node("r"+string(rune('a'+i)), nil, true))
		}
		for i := range notReady {
			out = append(out, node("u"+string(rune('a'+i)), nil, false))
		}
		return out
	}
	cases := []struct {
		name          string
		nodes         []*corev1.Node
		exclude       map[string]bool
		healthy       bool
		total, unwell int
	}{
		{"empty cluster", nil, nil, true, 0, 0},
		{"all ready", mk(10, 0), nil, true, 10, 0},
		{"percent exceeded but count not", mk(2, 3), nil, true, 5, 3},
		{"count exceeded but percent not", mk(96, 4), nil, true, 100, 4},
		{"both exceeded", mk(10, 4), nil, false, 14, 4},
		{"new NotReady nodes excluded", mk(10, 4), map[string]bool{"ua": true, "ub": true}, true, 12, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := ClusterHealth(tc.nodes, tc.exclude, 20, 3)
			assert.Equal(t, tc.healthy, h.Healthy, h.Message)
			assert.Equal(t, tc.total, h.Total)
			assert.Equal(t, tc.unwell, h.Unhealthy)
		})
	}
	cordoned := node("c", nil, true)
	cordoned.Spec.Unschedulable = true
	cordoned.Spec.Taints = []corev1.Taint{{Key: "rebalancer.dev/disrupting", Effect: corev1.TaintEffectNoSchedule}}
	assert.Equal(t, 0, ClusterHealth([]*corev1.Node{cordoned}, nil, 0, 0).Unhealthy, "a cordon is not ill health")
}

func TestCooldown(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	_, cooling := Cooldown(now, time.Time{}, time.Hour)
	assert.False(t, cooling, "no earlier plan")
	until, cooling := Cooldown(now, now.Add(-30*time.Minute), time.Hour)
	assert.True(t, cooling)
	assert.Equal(t, now.Add(30*time.Minute), until)
	_, cooling = Cooldown(now, now.Add(-time.Hour), time.Hour)
	assert.False(t, cooling, "exactly at the end")
	_, cooling = Cooldown(now, now.Add(-time.Minute), 0)
	assert.False(t, cooling, "zero period")
}

func TestOwnershipAndOptOut(t *testing.T) {
	p := api.NewPolicy("general")
	cases := []struct {
		labels       map[string]string
		controlPlane bool
		owner        string
	}{
		{map[string]string{"node-role.kubernetes.io/control-plane": ""}, true, ""},
		{map[string]string{"node-role.kubernetes.io/master": ""}, true, ""},
		{map[string]string{"karpenter.sh/nodepool": "default"}, false, api.OwnerKarpenter},
		{map[string]string{"cluster-autoscaler.kubernetes.io/node-group": "ng-1"}, false, api.OwnerClusterAutoscaler},
		{map[string]string{"autoscaler.vpsie.com/nodegroup": "ng"}, false, api.OwnerVPSieAutoscaler},
		{map[string]string{"pool": "general"}, false, ""},
	}
	for _, tc := range cases {
		n := node("n", tc.labels, true)
		assert.Equal(t, tc.controlPlane, IsControlPlane(n), tc.labels)
		owner, other := OwnedByOther(n, p)
		assert.Equal(t, tc.owner, owner)
		assert.Equal(t, tc.owner != "", other)
	}
	p.Spec.ManagedNodes = []string{api.OwnerKarpenter}
	_, other := OwnedByOther(node("n", map[string]string{"karpenter.sh/nodepool": "default"}, true), p)
	assert.False(t, other, "the policy opted in to Karpenter's nodes")

	n := node("n", nil, true)
	n.Annotations = map[string]string{DoNotDisrupt: "true"}
	assert.True(t, NodeOptedOut(n))
	n.Annotations = map[string]string{KarpenterDoNotDisrupt: "false"}
	assert.False(t, NodeOptedOut(n))
	n.Labels = map[string]string{DoNotDisrupt: "true"}
	assert.True(t, NodeOptedOut(n), "as a label too")
}

func TestPolicyMatch(t *testing.T) {
	general := api.NewPolicy("general")
	general.Spec.NodeSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "general"}}
	general.Spec.NodeGroupLabel = "pool"
	all := api.NewPolicy("everything")
	batch := api.NewPolicy("batch")
	batch.Spec.NodeSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "tier", Operator: metav1.LabelSelectorOpIn, Values: []string{"batch"}}}}

	ps, err := NewPolicies([]*api.RebalancePolicy{general, batch})
	require.NoError(t, err)
	p, reason, _ := ps.Match(node("n", map[string]string{"tier": "general", "pool": "a"}, true))
	require.Equal(t, general, p)
	assert.Empty(t, reason)
	assert.Equal(t, "a", NodeGroup(node("n", map[string]string{"tier": "general", "pool": "a"}, true), p))
	assert.Equal(t, "batch", NodeGroup(node("n", nil, true), batch), "no group label: the policy's name")
	_, reason, _ = ps.Match(node("n", map[string]string{"tier": "db"}, true))
	assert.Equal(t, ReasonNoPolicy, reason)

	ps, err = NewPolicies([]*api.RebalancePolicy{general, all})
	require.NoError(t, err)
	p, reason, detail := ps.Match(node("n", map[string]string{"tier": "general"}, true))
	assert.Nil(t, p)
	assert.Equal(t, ReasonPolicyConflict, reason)
	assert.Equal(t, "selected by policies everything and general", detail)
}
