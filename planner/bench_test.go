package planner

import (
	"fmt"
	"runtime/debug"
	"testing"
	"time"

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

// benchInputs builds a cluster of n nodes with 30 pods each, spread over 5
// datacenters and 20 node groups, and 300 offerings (60 per datacenter).
func benchInputs(b *testing.B, n int) Inputs {
	b.Helper()
	dcs := []string{"fra1", "ams1", "lon1", "nyc1", "sfo1"}
	var offerings []cloud.Offering
	for _, dc := range dcs {
		for i := range 60 {
			arch := "amd64"
			if i%5 == 4 {
				arch = "arm64"
			}
			cpu := 2 << (i % 4) // 2, 4, 8, 16
			offerings = append(offerings, cloud.Offering{
				Name: fmt.Sprintf("gen%d-%dx%d-%d", i/12, cpu, cpu*4, i), Datacenter: dc, Arch: arch,
				CPU: *resource.NewQuantity(int64(cpu), resource.DecimalSI), Memory: *resource.NewQuantity(int64(cpu*4)<<30, resource.BinarySI),
				Pods: 110, EphemeralStorage: resource.MustParse("100Gi"),
				HourlyPrice: float64(cpu) * (0.02 - float64(i/12)*0.002 + float64(i%7)*0.0001),
			})
		}
	}
	policy := api.NewPolicy("fleet")
	policy.Spec.NodeGroupLabel = "pool"
	policy.Spec.MaxNodesPerPlan = 50
	ps, err := policies.NewPolicies([]*api.RebalancePolicy{policy})
	if err != nil {
		b.Fatal(err)
	}
	now := time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)
	nodes := make([]*corev1.Node, 0, n)
	pods := make([]*corev1.Pod, 0, n*30)
	var pdbs []*policyv1.PodDisruptionBudget
	// Pods of one template share their container specs, as the informer cache of a
	// real cluster does not, but the analyzer only reads them: sharing keeps the
	// fixture's own memory out of the peak-RSS figure.
	containers := []corev1.Container{{Name: "c", Resources: corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("256Mi")}}}}
	for i := range n {
		dc := dcs[i%len(dcs)]
		// Old nodes run the first generation, 8 CPU amd64.
		off := offerings[(i%len(dcs))*60+1]
		name := fmt.Sprintf("node-%05d", i)
		res := corev1.ResourceList{corev1.ResourceCPU: off.CPU, corev1.ResourceMemory: off.Memory,
			corev1.ResourcePods: resource.MustParse("110"), corev1.ResourceEphemeralStorage: resource.MustParse("100Gi")}
		nodes = append(nodes, &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(now.Add(-30 * 24 * time.Hour)), Labels: map[string]string{
				"pool": fmt.Sprintf("pool-%d", i%20), policies.LabelOffering: off.Name, corev1.LabelTopologyRegion: dc,
				corev1.LabelArchStable: "amd64", corev1.LabelHostname: name}},
			Spec:   corev1.NodeSpec{ProviderID: "kwok://" + name},
			Status: corev1.NodeStatus{Allocatable: res, Capacity: res, Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}},
		})
		for j := range 30 {
			app := fmt.Sprintf("app-%d", (i*30+j)%(n*3))
			pods = append(pods, &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%05d-%02d", app, i, j), Namespace: fmt.Sprintf("ns-%d", j%10),
					Labels:          map[string]string{"app": app},
					OwnerReferences: []metav1.OwnerReference{{Kind: "ReplicaSet", Name: app, Controller: ptr.To(true)}}},
				Spec:   corev1.PodSpec{NodeName: name, Containers: containers},
				Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
			})
		}
	}
	for k := range n / 10 {
		pdbs = append(pdbs, &policyv1.PodDisruptionBudget{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("pdb-%d", k), Namespace: fmt.Sprintf("ns-%d", k%10)},
			Spec: policyv1.PodDisruptionBudgetSpec{MinAvailable: ptr.To(intstr.FromInt32(1)),
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("app-%d", k*7)}}},
			Status: policyv1.PodDisruptionBudgetStatus{DisruptionsAllowed: 1, ExpectedPods: 10},
		})
	}
	return Inputs{Cluster: "bench", Snapshot: policies.NewSnapshot(nodes, pods, pdbs, nil, nil), Policies: ps, Offerings: offerings, Now: now}
}

// BenchmarkAnalyze measures one full analysis (classification of every node and
// plan building) over objects in memory; building the snapshot is counted too.
func BenchmarkAnalyze(b *testing.B) {
	for _, n := range []int{1000, 5000, 20000} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			in := benchInputs(b, n)
			debug.FreeOSMemory()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				s := in.Snapshot
				in.Snapshot = policies.NewSnapshot(s.Nodes, s.Pods, s.PDBs, s.PVCs, s.PVs)
				a, err := Analyze(in)
				if err != nil {
					b.Fatal(err)
				}
				if len(a.Plans) == 0 {
					b.Fatal("no plan: the benchmark must exercise plan building")
				}
			}
		})
	}
}
