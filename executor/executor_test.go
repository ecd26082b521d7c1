package executor

import (
	"context"
	"fmt"
	"slices"
	"strings"
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
	"github.com/rebalancer-dev/rebalancer/policies"
)

// workloads puts the mix on the fixture's nodes: a Deployment with a PDB, a
// StatefulSet, a DaemonSet, a pod with an emptyDir, and a pod that tolerates every
// taint.
func (f *fixture) workloads() (pods int) {
	f.deploy("web", 6, 4, nil)
	f.deploy("cache", 1, 0, func(t *corev1.PodTemplateSpec) {
		t.Spec.Volumes = []corev1.Volume{{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	})
	f.deploy("tolerant", 1, 0, func(t *corev1.PodTemplateSpec) {
		t.Spec.Tolerations = []corev1.Toleration{{Operator: corev1.TolerationOpExists}}
	})
	labels := map[string]string{"app": "db"}
	_, err := f.admin.AppsV1().StatefulSets(f.ns).Create(f.ctx, &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "db"},
		Spec: appsv1.StatefulSetSpec{Replicas: ptr.To[int32](2), Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{NodeSelector: map[string]string{"tier": f.prefix}, Containers: []corev1.Container{{Name: "db", Image: "db"}}}}}},
		metav1.CreateOptions{})
	require.NoError(f.t, err)
	dsLabels := map[string]string{"app": "agent"}
	_, err = f.admin.AppsV1().DaemonSets(f.ns).Create(f.ctx, &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "agent"},
		Spec: appsv1.DaemonSetSpec{Selector: &metav1.LabelSelector{MatchLabels: dsLabels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: dsLabels},
				Spec: corev1.PodSpec{NodeSelector: map[string]string{"tier": f.prefix}, Containers: []corev1.Container{{Name: "agent", Image: "agent"}}}}}},
		metav1.CreateOptions{})
	require.NoError(f.t, err)
	return 6 + 1 + 1 + 2 + len(f.old)
}

func TestStrategiesReplaceThreeNodes(t *testing.T) {
	for _, strategy := range []api.Strategy{api.StrategyRolling, api.StrategySurge, api.StrategyBlueGreen} {
		t.Run(string(strategy), func(t *testing.T) {
			f := newFixture(t, "s-"+string(strategy), 3, kwok.Faults{})
			total := f.workloads()
			f.waitPods(total)
			stop := f.watchReady("web")
			rec := f.run(f.plan(strategy, 1, time.Minute, f.old...))
			lowest := stop()

			require.Equal(t, api.PhaseSucceeded, rec.State.Phase, rec.State.Message)
			assert.GreaterOrEqual(t, lowest, 4, "the PDB (minAvailable 4) was never broken")
			pods := f.waitPods(total)
			var newNodes []string
			for _, p := range rec.State.Pairs {
				require.True(t, p.Done, p.Old)
				_, err := f.admin.CoreV1().Nodes().Get(f.ctx, p.Old, metav1.GetOptions{})
				assert.True(t, apierrors.IsNotFound(err), "old node %s deleted", p.Old)
				n, err := f.admin.CoreV1().Nodes().Get(f.ctx, p.NewNode, metav1.GetOptions{})
				require.NoError(t, err)
				newNodes = append(newNodes, p.NewNode)
				assert.Equal(t, "gen2", n.Labels[corev1.LabelInstanceTypeStable])
				assert.Equal(t, f.prefix, n.Labels["pool"], "the group label is inherited")
				assert.False(t, hasTaint(n, policies.TaintInitializing), "initializing taint lifted")
				assert.NotContains(t, n.Annotations, policies.ScaleDownDisabled, "protections lifted at the end")
				assert.NotContains(t, n.Annotations, policies.KarpenterDoNotDisrupt)
			}
			for _, p := range pods {
				if policies.IsDaemonSetPod(&p) {
					continue // a DaemonSet pod goes with its node; the pod GC removes it
				}
				assert.Contains(t, newNodes, p.Spec.NodeName, "pod %s rescheduled onto a new node", p.Name)
			}
			insts, err := f.provider.List(f.ctx)
			require.NoError(t, err)
			for _, i := range insts {
				assert.False(t, slices.Contains(f.old, i.NodeName), "old machine %s terminated", i.NodeName)
			}
			assert.InDelta(t, 43.8, f.executor().status(rec).RealizedMonthlySavings, 0.001)

			events := audit(t, f.ns)
			evictions := map[string]int{}
			for _, ev := range events {
				assert.False(t, ev.ObjectRef.Resource == "pods" && ev.Verb == "delete" && ev.ObjectRef.Subresource == "",
					"the executor never deletes a pod: %+v", ev)
				// Refused evictions (429 from a PDB) are logged too: count the admitted ones.
				if ev.ObjectRef.Subresource == "eviction" && ev.Verb == "create" && ev.ObjectRef.Namespace == f.ns && ev.ResponseStatus.Code < 300 {
					evictions[ev.ObjectRef.Name]++
				}
			}
			assert.NotEmpty(t, evictions, "pods were moved by eviction")
			if strategy == api.StrategyBlueGreen {
				for pod, n := range evictions {
					if !strings.HasPrefix(pod, "tolerant") {
						assert.Equal(t, 1, n, "blue-green: pod %s evicted once", pod)
					}
				}
			}
			// The outbox holds Running, progress and Succeeded transitions, in order.
			var phases []api.Phase
			for _, tr := range rec.State.Outbox {
				phases = append(phases, tr.Status.Phase)
				if len(phases) > 1 {
					assert.Greater(t, tr.Seq, rec.State.Outbox[len(phases)-2].Seq)
				}
			}
			assert.Equal(t, api.PhaseRunning, phases[0])
			assert.Equal(t, api.PhaseSucceeded, phases[len(phases)-1])
		})
	}
}

func TestRollbackOnProvisioningFailure(t *testing.T) {
	f := newFixture(t, "rb-prov", 3, kwok.Faults{FailProvisionCall: 3})
	f.deploy("web", 3, 2, nil)
	f.waitPods(3)
	rec := f.run(f.plan(api.StrategySurge, 1, time.Minute, f.old...))
	require.Equal(t, api.PhaseRolledBack, rec.State.Phase, rec.State.Message)
	require.NotNil(t, rec.State.Rollback)
	assert.Equal(t, api.TriggerProvisionFailed, rec.State.Rollback.Trigger)
	assertOnlyOldNodes(t, f)
	f.waitPods(3)
}

func TestRollbackOnDrainTimeoutKeepsAPersonsCordon(t *testing.T) {
	f := newFixture(t, "rb-drain", 1, kwok.Faults{})
	// A person cordoned the node before the plan (kubectl cordon).
	// The pod lands before the cordon.
	f.deploy("pinned", 1, 0, nil)
	f.waitPods(1)
	n, err := f.admin.CoreV1().Nodes().Get(f.ctx, f.old[0], metav1.GetOptions{})
	require.NoError(t, err)
	n.Spec.Unschedulable = true
	_, err = f.admin.CoreV1().Nodes().Update(f.ctx, n, metav1.UpdateOptions{})
	require.NoError(t, err)

	// A PDB that never allows a disruption appears after the plan was re-validated,
	// once the node is cordoned: the drain runs into drainTimeout.
	rec := f.run(f.plan(api.StrategyRolling, 1, 3*time.Second, f.old...), WithProgress(func(p Progress) {
		if p.Action == api.ActionCordon {
			f.pdb("pinned", &policyv1.PodDisruptionBudgetSpec{MaxUnavailable: ptr.To(intstr.FromInt32(0))}, map[string]string{"app": "pinned"})
		}
	}))
	require.Equal(t, api.PhaseRolledBack, rec.State.Phase, rec.State.Message)
	assert.Equal(t, api.TriggerDrainTimeout, rec.State.Rollback.Trigger)
	assert.Contains(t, rec.State.Rollback.Reason, "PodDisruptionBudget")
	n, err = f.admin.CoreV1().Nodes().Get(f.ctx, f.old[0], metav1.GetOptions{})
	require.NoError(t, err)
	assert.True(t, n.Spec.Unschedulable, "the person's cordon stays")
	assert.False(t, hasTaint(n, policies.TaintDisrupting), "our taint is gone")
	assertOnlyOldNodes(t, f)
	pods := f.waitPods(1)
	assert.Equal(t, f.old[0], pods[0].Spec.NodeName, "the protected pod never left")
}

func TestRollbackWhenWorkloadDoesNotRecover(t *testing.T) {
	f := newFixture(t, "rb-verify", 1, kwok.Faults{})
	f.opts.VerifyTimeout = 4 * time.Second
	// The pods can run only on the old generation: evicted, they stay Pending.
	f.deploy("legacy", 2, 0, func(t *corev1.PodTemplateSpec) {
		t.Spec.NodeSelector[corev1.LabelInstanceTypeStable] = "gen1"
	})
	f.waitPods(2)
	rec := f.run(f.plan(api.StrategyRolling, 1, time.Minute, f.old...))
	require.Equal(t, api.PhaseRolledBack, rec.State.Phase, rec.State.Message)
	assert.Equal(t, api.TriggerWorkloadUnhealthy, rec.State.Rollback.Trigger)
	assertOnlyOldNodes(t, f)
	f.waitPods(2) // back on the old node once it is un-tainted
}

func TestClusterHealthDegradationFreezes(t *testing.T) {
	f := newFixture(t, "frz", 3, kwok.Faults{})
	f.policy.Spec.MaxUnhealthyCount = 0
	f.policy.Spec.MaxUnhealthyPercent = 0
	bystander := f.addNode("frz-bystander")
	// The bystander stays NotReady: remove it, or it fails every later health gate
	// in this package's shared cluster.
	t.Cleanup(func() { _ = f.admin.CoreV1().Nodes().Delete(context.Background(), bystander, metav1.DeleteOptions{}) })
	f.deploy("web", 3, 2, nil)
	f.waitPods(3)
	// After the first node is replaced, another node's kubelet stops reporting.
	sick := false
	rec := f.run(f.plan(api.StrategyRolling, 1, time.Minute, f.old...), WithProgress(func(p Progress) {
		if p.Action == api.ActionVerify && !sick {
			sick = true
			n, err := f.admin.CoreV1().Nodes().Get(context.Background(), bystander, metav1.GetOptions{})
			if err == nil {
				n.Annotations["rebalancer.dev/kwok-not-ready"] = "true"
				_, _ = f.admin.CoreV1().Nodes().Update(context.Background(), n, metav1.UpdateOptions{})
			}
			for i := 0; i < 50; i++ {
				n, _ := f.admin.CoreV1().Nodes().Get(context.Background(), bystander, metav1.GetOptions{})
				if n != nil && !policies.NodeReady(n) {
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
	}))
	require.Equal(t, api.PhaseFrozen, rec.State.Phase, rec.State.Message)
	assert.Equal(t, api.TriggerClusterUnhealthy, rec.State.Rollback.Trigger)
	assert.True(t, rec.State.Pairs[0].Done, "the finished pair stays")
	for _, p := range rec.State.Pairs[1:] {
		n, err := f.admin.CoreV1().Nodes().Get(f.ctx, p.Old, metav1.GetOptions{})
		require.NoError(t, err)
		assert.False(t, hasTaint(n, policies.TaintDisrupting), "old node %s un-tainted", p.Old)
	}
}

func TestStopSwitchFreezesBeforeTheNextChange(t *testing.T) {
	f := newFixture(t, "stop", 2, kwok.Faults{})
	f.deploy("web", 2, 1, nil)
	f.waitPods(2)
	_, err := f.admin.CoreV1().ConfigMaps("rebalancer-system").Create(f.ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{
		Name: f.opts.StopConfigMap}}, metav1.CreateOptions{})
	require.NoError(t, err)
	rec := f.run(f.plan(api.StrategyRolling, 1, time.Minute, f.old...), WithProgress(func(p Progress) {
		if p.Action == api.ActionTerminate {
			cm, err := f.admin.CoreV1().ConfigMaps("rebalancer-system").Get(context.Background(), f.opts.StopConfigMap, metav1.GetOptions{})
			if err == nil {
				cm.Annotations = map[string]string{StopAnnotation: "true"}
				_, _ = f.admin.CoreV1().ConfigMaps("rebalancer-system").Update(context.Background(), cm, metav1.UpdateOptions{})
			}
		}
	}))
	require.Equal(t, api.PhaseFrozen, rec.State.Phase)
	assert.Contains(t, rec.State.Message, "stop switch")
	assert.True(t, rec.State.Pairs[0].Done)
	assert.False(t, rec.State.Pairs[1].ProvisionAttempted, "nothing of the second batch happened")
	assert.Equal(t, FrozenByStopSwitch, rec.State.FrozenBy)

	// rebalancer resume: the plan goes on from where it froze and finishes.
	cm, err := f.admin.CoreV1().ConfigMaps("rebalancer-system").Get(f.ctx, f.opts.StopConfigMap, metav1.GetOptions{})
	require.NoError(t, err)
	cm.Annotations = nil
	_, err = f.admin.CoreV1().ConfigMaps("rebalancer-system").Update(f.ctx, cm, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.NoError(t, f.executor().Run(f.ctx, rec))
	assert.Equal(t, api.PhaseSucceeded, rec.State.Phase, rec.State.Message)
	assert.True(t, rec.State.Pairs[1].Done)
}

func TestClaimIsAtMostOnce(t *testing.T) {
	f := newFixture(t, "claim", 1, kwok.Faults{})
	plan := f.plan(api.StrategyRolling, 1, time.Minute, f.old...)
	e1, e2 := f.executor(), f.executor()
	e2.opts.Identity = "other"
	rec, err := e1.Claim(f.ctx, plan, "c1")
	require.NoError(t, err)
	_, err = e2.Claim(f.ctx, plan, "c1")
	assert.ErrorIs(t, err, ErrAlreadyClaimed)

	// A deposed holder's next write fails: someone else updated the record.
	other, err := e2.Records().Load(f.ctx, plan.Metadata.Name)
	require.NoError(t, err)
	other.State.Message = "taken over"
	require.NoError(t, e2.Records().Save(f.ctx, other))
	rec.State.Message = "still mine?"
	assert.ErrorIs(t, e1.Records().Save(f.ctx, rec), ErrDeposed)
	assert.ErrorIs(t, e1.Run(f.ctx, rec), ErrDeposed, "a deposed executor stops before acting")
	n, err := f.admin.CoreV1().Nodes().Get(f.ctx, f.old[0], metav1.GetOptions{})
	require.NoError(t, err)
	assert.False(t, hasTaint(n, policies.TaintDisrupting))
}

// assertOnlyOldNodes checks that a rollback left no replacement behind: the
// provider's instances of this fixture are exactly its old nodes, none tainted.
func assertOnlyOldNodes(t *testing.T, f *fixture) {
	t.Helper()
	insts, err := f.provider.List(f.ctx)
	require.NoError(t, err)
	var mine []string
	for _, i := range insts {
		if strings.HasPrefix(i.NodeName, f.prefix+"-") && i.State != cloud.StateTerminating {
			mine = append(mine, i.NodeName)
		}
	}
	want := append([]string(nil), f.old...)
	slices.Sort(mine)
	slices.Sort(want)
	assert.Equal(t, want, mine, "no replacement leaked")
	for _, o := range f.old {
		n, err := f.admin.CoreV1().Nodes().Get(f.ctx, o, metav1.GetOptions{})
		require.NoError(t, err)
		assert.False(t, hasTaint(n, policies.TaintDisrupting), fmt.Sprintf("%s un-tainted", o))
	}
}

func TestRollbackFailedWhenTheReplacementCannotBeDrained(t *testing.T) {
	f := newFixture(t, "rb-failed", 1, kwok.Faults{})
	f.opts.VerifyTimeout = 3 * time.Second
	f.deploy("web", 1, 0, nil)
	// legacy runs only on the old generation: once evicted it stays Pending, so
	// verification fails and the batch rolls back.
	f.deploy("legacy", 1, 0, func(t *corev1.PodTemplateSpec) {
		t.Spec.NodeSelector[corev1.LabelInstanceTypeStable] = "gen1"
	})
	f.waitPods(2)
	rec := f.run(f.plan(api.StrategyRolling, 1, 3*time.Second, f.old...), WithProgress(func(p Progress) {
		if p.Action == api.ActionDrain && !p.Rollback {
			// web now runs on the replacement, and a PDB forbids moving it again.
			f.pdb("web", &policyv1.PodDisruptionBudgetSpec{MaxUnavailable: ptr.To(intstr.FromInt32(0))}, map[string]string{"app": "web"})
		}
	}))
	require.Equal(t, api.PhaseRollbackFailed, rec.State.Phase, rec.State.Message)
	assert.Equal(t, api.TriggerWorkloadUnhealthy, rec.State.Rollback.Trigger)
	assert.Contains(t, rec.State.Message, "both nodes are kept")
	pair := rec.State.Pairs[0]
	for _, name := range []string{pair.Old, pair.NewNode} {
		n, err := f.admin.CoreV1().Nodes().Get(f.ctx, name, metav1.GetOptions{})
		require.NoError(t, err, "%s kept", name)
		assert.False(t, hasTaint(n, policies.TaintDisrupting), "%s carries no taint of ours", name)
	}
}

func TestBlueGreenDoesNotTripHealthOnItsOwnNewNodes(t *testing.T) {
	f := newFixture(t, "bg-health", 6, kwok.Faults{ProvisionDelay: 500 * time.Millisecond})
	// The strictest health gate: a single NotReady node would stop the plan.
	f.policy.Spec.MaxUnhealthyCount = 0
	f.policy.Spec.MaxUnhealthyPercent = 0
	f.deploy("web", 6, 5, nil)
	f.waitPods(6)
	rec := f.run(f.plan(api.StrategyBlueGreen, 2, time.Minute, f.old...))
	require.Equal(t, api.PhaseSucceeded, rec.State.Phase, rec.State.Message)
	for _, p := range rec.State.Pairs {
		assert.True(t, p.Done, p.Old)
	}
}
