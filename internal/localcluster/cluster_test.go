package localcluster

import (
	"context"
	"os"
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
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
)

var cluster *Cluster

func TestMain(m *testing.M) {
	os.Exit(RunTests(m, Options{}, func(c *Cluster) { cluster = c }))
}

func TestStartupIsMeasured(t *testing.T) {
	t.Logf("control plane ready in %s", cluster.StartupTime)
	assert.Positive(t, cluster.StartupTime)
	v, err := cluster.Client.Discovery().ServerVersion()
	require.NoError(t, err)
	assert.Equal(t, "v"+KubernetesVersion, v.GitVersion, "binaries carry their real version")
	_, err = os.Stat(cluster.Kubeconfig)
	require.NoError(t, err)
}

// TestPDBRefusesSecondEviction is the behaviour everything else stands on: the
// scheduler places pods on KWOK nodes, the disruption controller computes the PDB,
// the Eviction API refuses past it with 429, and the ReplicaSet recreates evicted
// pods on the other nodes.
func TestPDBRefusesSecondEviction(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, n := range []string{"pdb-a", "pdb-b", "pdb-c"} {
		_, err := cluster.AddNode(ctx, n, NodeOptions{Labels: map[string]string{"pool": "pdb"}})
		require.NoError(t, err)
	}
	ns := "pdb-test"
	_, err := cluster.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	require.NoError(t, err)
	labels := map[string]string{"app": "web"}
	_, err = cluster.Client.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](6),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					NodeSelector: map[string]string{"pool": "pdb"},
					Containers:   []corev1.Container{{Name: "web", Image: "nginx"}},
				},
			},
		},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = cluster.Client.PolicyV1().PodDisruptionBudgets(ns).Create(ctx, &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: policyv1.PodDisruptionBudgetSpec{
			MinAvailable: ptr.To(intstr.FromInt32(5)),
			Selector:     &metav1.LabelSelector{MatchLabels: labels},
		},
	}, metav1.CreateOptions{})
	require.NoError(t, err)

	var pods []corev1.Pod
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		list, err := cluster.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		pods = list.Items
		return len(pods) == 6 && allRunningReady(pods), nil
	}), "6 pods Running and Ready")
	onNodes := map[string]int{}
	for _, p := range pods {
		onNodes[p.Spec.NodeName]++
	}
	assert.Len(t, onNodes, 3, "the scheduler spread the pods over the three nodes: %v", onNodes)

	require.NoError(t, wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		pdb, err := cluster.Client.PolicyV1().PodDisruptionBudgets(ns).Get(ctx, "web", metav1.GetOptions{})
		return err == nil && pdb.Status.ObservedGeneration == pdb.Generation && pdb.Status.CurrentHealthy == 6, err
	}))
	pdb, err := cluster.Client.PolicyV1().PodDisruptionBudgets(ns).Get(ctx, "web", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, int32(1), pdb.Status.DisruptionsAllowed)

	// Two evictions at once: exactly one is admitted, the other refused with 429.
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := pods[i]
			errs[i] = cluster.Client.PolicyV1().Evictions(ns).Evict(ctx, &policyv1.Eviction{
				ObjectMeta:    metav1.ObjectMeta{Name: p.Name, Namespace: ns},
				DeleteOptions: &metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &p.UID}},
			})
		}()
	}
	wg.Wait()
	admitted, refused := 0, 0
	for _, err := range errs {
		switch {
		case err == nil:
			admitted++
		case apierrors.IsTooManyRequests(err):
			refused++
			assert.Contains(t, err.Error(), "disruption budget")
		default:
			t.Fatalf("unexpected eviction error: %v", err)
		}
	}
	assert.Equal(t, 1, admitted)
	assert.Equal(t, 1, refused)

	// The evicted pod is recreated and the Deployment returns to 6 Ready pods.
	evicted := pods[0].Name
	if errs[0] != nil {
		evicted = pods[1].Name
	}
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		list, err := cluster.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		for _, p := range list.Items {
			if p.Name == evicted {
				return false, nil
			}
		}
		return len(list.Items) == 6 && allRunningReady(list.Items), nil
	}), "the ReplicaSet replaced the evicted pod")
}

// TestCordonedNodeGetsNoNewPods checks that the simulated nodes obey taints: pods
// evicted from a tainted node land on the others.
func TestCordonedNodeGetsNoNewPods(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	taint := corev1.Taint{Key: "rebalancer.dev/disrupting", Effect: corev1.TaintEffectNoSchedule}
	_, err := cluster.AddNode(ctx, "taint-a", NodeOptions{Labels: map[string]string{"pool": "taint"}, Taints: []corev1.Taint{taint}})
	require.NoError(t, err)
	_, err = cluster.AddNode(ctx, "taint-b", NodeOptions{Labels: map[string]string{"pool": "taint"}})
	require.NoError(t, err)
	ns := "taint-test"
	_, err = cluster.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	require.NoError(t, err)
	labels := map[string]string{"app": "api"}
	_, err = cluster.Client.AppsV1().ReplicaSets(ns).Create(ctx, &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: "api"},
		Spec: appsv1.ReplicaSetSpec{
			Replicas: ptr.To[int32](4),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					NodeSelector: map[string]string{"pool": "taint"},
					Containers:   []corev1.Container{{Name: "api", Image: "api"}},
				},
			},
		},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		list, err := cluster.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		for _, p := range list.Items {
			if p.Spec.NodeName == "taint-a" {
				return false, nil
			}
		}
		return len(list.Items) == 4 && allRunningReady(list.Items), nil
	}))
}

func allRunningReady(pods []corev1.Pod) bool {
	for _, p := range pods {
		if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
			return false
		}
		ready := false
		for _, c := range p.Status.Conditions {
			ready = ready || (c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue)
		}
		if !ready {
			return false
		}
	}
	return true
}
