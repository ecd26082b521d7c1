package livetest

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	api "github.com/rebalancer-dev/rebalancer/api/v1alpha1"
	"github.com/rebalancer-dev/rebalancer/cloud/kwok"
	"github.com/rebalancer-dev/rebalancer/internal/localcluster"
	"github.com/rebalancer-dev/rebalancer/planner"
	"github.com/rebalancer-dev/rebalancer/policies"
)

var cluster *localcluster.Cluster

func TestMain(m *testing.M) {
	os.Exit(localcluster.RunTests(m, localcluster.Options{}, func(c *localcluster.Cluster) { cluster = c }))
}

const catalogYAML = `apiVersion: rebalancer.dev/v1alpha1
kind: OfferingCatalog
offerings:
  - {name: gen1-4x8, datacenter: fra1, arch: amd64, cpu: "4", memory: 8Gi, pods: 110, hourlyPrice: 0.08}
  - {name: gen2-4x8, datacenter: fra1, arch: amd64, cpu: "4", memory: 8Gi, pods: 110, hourlyPrice: 0.06}
  - {name: arm-4x8, datacenter: fra1, arch: arm64, cpu: "4", memory: 8Gi, pods: 110, hourlyPrice: 0.03}
`

// TestAnalyzeLiveCluster runs the analyzer on KWOK nodes with real pods, PDBs and a
// local persistent volume, read through informers.
func TestAnalyzeLiveCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	catalog, err := kwok.ParseCatalog("catalog.yaml", []byte(catalogYAML))
	require.NoError(t, err)
	provider := kwok.New(cluster.Client, catalog)
	defer provider.Close()
	gen1 := catalog[0]
	for _, name := range []string{"an-1", "an-2", "an-local", "an-optout"} {
		node := kwok.NewNode(name, gen1, map[string]string{"tier": "analyze", "pool": "general"}, nil, false)
		require.NoError(t, kwok.CreateNode(ctx, cluster.Client, node))
		_, err := cluster.WaitNodeReady(ctx, name, 30*time.Second)
		require.NoError(t, err)
	}
	c := cluster.Client
	ns := "analyze"
	_, err = c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	require.NoError(t, err)

	// A local PV pinned to an-local, pre-bound to a claim; the pod using it lands there.
	_, err = c.CoreV1().PersistentVolumes().Create(ctx, &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: "an-local-pv"},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			PersistentVolumeSource:        corev1.PersistentVolumeSource{Local: &corev1.LocalVolumeSource{Path: "/mnt/disk1"}},
			ClaimRef:                      &corev1.ObjectReference{Namespace: ns, Name: "data"},
			NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchExpressions: []corev1.NodeSelectorRequirement{{Key: corev1.LabelHostname, Operator: corev1.NodeSelectorOpIn, Values: []string{"an-local"}}}}}}},
		},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = c.CoreV1().PersistentVolumeClaims(ns).Create(ctx, &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "data"},
		Spec: corev1.PersistentVolumeClaimSpec{VolumeName: "an-local-pv", StorageClassName: ptr.To(""),
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	deploy := func(name string, replicas int32, mod func(*corev1.PodTemplateSpec)) {
		labels := map[string]string{"app": name}
		tmpl := corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
			Spec: corev1.PodSpec{NodeSelector: map[string]string{"tier": "analyze"}, Containers: []corev1.Container{{Name: "c", Image: name}}}}
		if mod != nil {
			mod(&tmpl)
		}
		_, err := c.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: appsv1.DeploymentSpec{Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: tmpl}}, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	deploy("db", 1, func(t *corev1.PodTemplateSpec) {
		t.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data"}}}}
		t.Annotations = map[string]string{policies.SafeToEvict: "true"} // does not override a pinned PV
	})
	deploy("batch", 1, func(t *corev1.PodTemplateSpec) {
		t.Spec.NodeSelector = map[string]string{corev1.LabelHostname: "an-optout"}
		t.Annotations = map[string]string{policies.DoNotDisrupt: "true"}
	})
	deploy("web", 4, func(t *corev1.PodTemplateSpec) {
		t.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
			NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{{
				Key: corev1.LabelHostname, Operator: corev1.NodeSelectorOpNotIn, Values: []string{"an-local", "an-optout"}}}}}}}}
	})
	_, err = c.PolicyV1().PodDisruptionBudgets(ns).Create(ctx, &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: policyv1.PodDisruptionBudgetSpec{MinAvailable: ptr.To(intstr.FromInt32(3)), Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}}},
		metav1.CreateOptions{})
	require.NoError(t, err)
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		pods, err := c.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil || len(pods.Items) != 6 {
			return false, err
		}
		for _, p := range pods.Items {
			if p.Status.Phase != corev1.PodRunning {
				return false, nil
			}
		}
		pdb, err := c.PolicyV1().PodDisruptionBudgets(ns).Get(ctx, "web", metav1.GetOptions{})
		return err == nil && pdb.Status.CurrentHealthy == 4, err
	}), "workloads running")

	policy := api.NewPolicy("analyze")
	policy.Spec.NodeSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "analyze"}}
	policy.Spec.NodeGroupLabel = "pool"
	policy.Spec.MinNodeAge = api.Duration{}
	ps, err := policies.NewPolicies([]*api.RebalancePolicy{policy})
	require.NoError(t, err)

	src := planner.NewClusterSource(c)
	defer src.Shutdown()
	srcCtx, stop := context.WithCancel(ctx)
	defer stop()
	require.NoError(t, src.Start(srcCtx, 30*time.Second))
	snap, err := src.Snapshot()
	require.NoError(t, err)
	offerings, err := provider.Offerings(ctx)
	require.NoError(t, err)
	a, err := planner.Analyze(planner.Inputs{Cluster: "local", Snapshot: snap, Policies: ps, Offerings: offerings, Now: time.Now()})
	require.NoError(t, err)

	got := map[string]policies.Reason{}
	for _, r := range a.Nodes {
		if r.Policy == "analyze" {
			got[r.Node] = r.Reason
		}
	}
	assert.Equal(t, map[string]policies.Reason{"an-1": policies.ReasonCandidate, "an-2": policies.ReasonCandidate,
		"an-local": policies.ReasonLocalStorage, "an-optout": policies.ReasonOptedOut}, got)
	var plan *api.RebalancePlan
	for _, p := range a.Plans {
		if p.Spec.Policy == "analyze" {
			plan = p
		}
	}
	require.NotNil(t, plan)
	require.Len(t, plan.Spec.Candidates, 2)
	for _, cand := range plan.Spec.Candidates {
		assert.Equal(t, "gen2-4x8", cand.Replacement.Name, "the cheaper amd64 generation, never arm64")
		assert.Equal(t, "kwok://"+cand.Node, cand.ProviderID)
		assert.InDelta(t, 14.6, cand.MonthlySavings, 0.001)
	}
	out, err := api.Marshal(plan)
	require.NoError(t, err)
	_, err = api.DecodePlan(plan.Metadata.Name+".yaml", out)
	require.NoError(t, err, "the plan passes rebalancer validate:\n%s", out)
}
