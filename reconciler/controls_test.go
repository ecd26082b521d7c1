package reconciler

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	api "github.com/rebalancer-dev/rebalancer/api/v1alpha1"
	"github.com/rebalancer-dev/rebalancer/executor"
	"github.com/rebalancer-dev/rebalancer/gitops/gittest"
	"github.com/rebalancer-dev/rebalancer/policies"
)

// record loads a plan's execution record; nil when there is none.
func (e *env) record(id string) *executor.Record {
	rec, err := executor.NewRecordStore(cluster.Client, e.ns).Load(e.ctx, id)
	if err != nil {
		return nil
	}
	return rec
}

// stopSwitch sets or clears the stop annotation on the env's ConfigMap.
func (e *env) stopSwitch(on bool) {
	var v *string
	if on {
		v = new(string)
		*v = "test"
	}
	assert.NoError(e.t, executor.SetConfigMapAnnotation(context.Background(), cluster.Client, e.ns, "rebalancer", executor.StopAnnotation, v))
}

// groupNodes lists the names of the nodes of the env's group.
func (e *env) groupNodes() []string {
	list, err := cluster.Client.CoreV1().Nodes().List(e.ctx, metav1.ListOptions{LabelSelector: "pool=" + e.name})
	require.NoError(e.t, err)
	var out []string
	for _, n := range list.Items {
		out = append(out, n.Name)
	}
	return out
}

func hasTaint(n *corev1.Node, key string) bool {
	for _, t := range n.Spec.Taints {
		if t.Key == key {
			return true
		}
	}
	return false
}

// withCancel renders plan with spec.cancel set, as a person's merged change would.
func (e *env) withCancel(plan *api.RebalancePlan, c api.Cancel) string {
	p := *plan
	p.Spec.Cancel = c
	return gittest.YAML(e.t, &p)
}

func TestCancelStopFreezesThenRollbackUndoes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "cancel")
	old0, old1 := e.node("old-0"), e.node("old-1")
	plan := e.plan("local", "c0c0c0", old0, old1)
	f := e.mergePlan(plan)

	r, _ := e.reconciler("a", nil)
	// At the first provision a person merges cancel: stop; the next pass reads it
	// while the plan runs.
	e.provider.onProvision = func() {
		e.merge(map[string]string{f: e.withCancel(plan, api.CancelStop)})
		assert.NoError(t, r.Pass(e.ctx))
	}
	require.NoError(t, r.PassAndWait(e.ctx))
	rec := e.record(plan.Metadata.Name)
	require.NotNil(t, rec, "a frozen plan keeps its record: a person decides")
	assert.Equal(t, api.PhaseFrozen, rec.State.Phase, rec.State.Message)
	assert.Equal(t, executor.FrozenByCancel, rec.State.FrozenBy)
	assert.Equal(t, int32(1), e.provider.provisions.Load(), "nothing after the provision in progress")
	st := e.status(plan.Metadata.Name)
	require.NotNil(t, st)
	assert.Equal(t, api.PhaseFrozen, st.Status.Phase)
	assert.Contains(t, st.Status.Message, "spec.cancel: stop")
	newNode := rec.State.Pairs[0].NewNode
	require.NotEmpty(t, newNode)

	// cancel: rollback undoes what the plan started: the replacement goes, the old
	// node stays and carries no taint of ours.
	e.merge(map[string]string{f: e.withCancel(plan, api.CancelRollback)})
	require.NoError(t, r.PassAndWait(e.ctx))
	st = e.status(plan.Metadata.Name)
	require.NotNil(t, st)
	assert.Equal(t, api.PhaseRolledBack, st.Status.Phase, st.Status.Message)
	require.NotNil(t, st.Status.Rollback)
	assert.Equal(t, api.TriggerCancelled, st.Status.Rollback.Trigger)
	assert.Nil(t, e.record(plan.Metadata.Name), "the record goes once the final status is in git")
	assert.ElementsMatch(t, []string{old0, old1}, e.groupNodes(), "the replacement %s was removed", newNode)
	for _, n := range []string{old0, old1} {
		node, err := cluster.Client.CoreV1().Nodes().Get(e.ctx, n, metav1.GetOptions{})
		require.NoError(t, err)
		assert.False(t, hasTaint(node, policies.TaintDisrupting), "%s carries no taint of ours", n)
	}
	phases := e.phases(plan.Metadata.Name)
	assert.Equal(t, "RolledBack", phases[len(phases)-1], "%v", phases)
	assert.Contains(t, phases, "Frozen")
	assert.Contains(t, phases, "RollingBack")
}

func TestDeletedPlanFileStopsAndAnEditIsIgnoredWithAWarning(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "deleted")
	old0, old1 := e.node("old-0"), e.node("old-1")
	plan := e.plan("local", "d0d0d0", old0, old1)
	f := e.mergePlan(plan)

	r, _ := e.reconciler("a", nil)
	var step atomic.Int32
	e.provider.onProvision = func() {
		// First an edit that is not a cancel: ignored, with a warning in the status.
		edited := *plan
		edited.Spec.DrainTimeout = api.Duration{Duration: time.Hour}
		e.merge(map[string]string{f: gittest.YAML(t, &edited)})
		assert.NoError(t, r.Pass(e.ctx))
		step.Store(1)
	}
	r.exec.SetOutboxHook(func(rec *executor.Record) {
		r.offer(rec)
		if step.Load() == 1 && rec.State.Pairs[0].Done {
			// Then the file is deleted: that means stop.
			step.Store(2)
			e.work.Pull()
			e.work.Remove(f)
			e.work.Commit("remove the plan")
			e.work.Push("main")
			assert.NoError(t, r.Pass(e.ctx))
		}
	})
	require.NoError(t, r.PassAndWait(e.ctx))
	rec := e.record(plan.Metadata.Name)
	require.NotNil(t, rec)
	assert.Equal(t, api.PhaseFrozen, rec.State.Phase, rec.State.Message)
	assert.True(t, rec.State.Pairs[0].Done, "the first pair finished before the delete")
	assert.False(t, rec.State.Pairs[1].ProvisionAttempted, "nothing of the second")
	assert.Equal(t, time.Duration(300*time.Second), rec.Plan.Spec.DrainTimeout.Duration, "the edit was not applied")
	st := e.status(plan.Metadata.Name)
	require.NotNil(t, st)
	assert.Equal(t, api.PhaseFrozen, st.Status.Phase)
	require.NotEmpty(t, st.Status.Warnings)
	joined := strings.Join(st.Status.Warnings, "\n")
	assert.Contains(t, joined, "edited on main after it started")
	assert.Contains(t, joined, "deleted")
}

func TestStopSwitchFreezesWithGitDownThenResumeFinishes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "switch")
	old0, old1 := e.node("old-0"), e.node("old-1")
	plan := e.plan("local", "5a5a5a", old0, old1)
	e.mergePlan(plan)
	e.stopSwitch(false)

	r, _ := e.reconciler("a", nil)
	e.provider.onProvision = func() {
		if e.provider.provisions.Load() == 1 {
			e.srv.FailNext(1_000_000, 503) // git goes down
			e.stopSwitch(true)
		}
	}
	require.NoError(t, r.Pass(e.ctx))
	require.Eventually(t, func() bool {
		rec := e.record(plan.Metadata.Name)
		return rec != nil && rec.State.Phase == api.PhaseFrozen
	}, time.Minute, 100*time.Millisecond, "the plan freezes with git down")
	rec := e.record(plan.Metadata.Name)
	assert.Equal(t, executor.FrozenByStopSwitch, rec.State.FrozenBy)
	assert.False(t, rec.State.Pairs[1].ProvisionAttempted)
	assert.Equal(t, int32(1), e.provider.provisions.Load())

	e.srv.FailNext(0, 0) // git is back: the outbox drains, Frozen reaches git
	r.Wait()
	st := e.status(plan.Metadata.Name)
	require.NotNil(t, st)
	assert.Equal(t, api.PhaseFrozen, st.Status.Phase)

	// While the switch is on, a pass leaves the plan frozen.
	require.NoError(t, r.PassAndWait(e.ctx))
	assert.Equal(t, api.PhaseFrozen, e.record(plan.Metadata.Name).State.Phase)

	e.stopSwitch(false) // rebalancer resume
	require.NoError(t, r.PassAndWait(e.ctx))
	st = e.status(plan.Metadata.Name)
	require.NotNil(t, st)
	assert.Equal(t, api.PhaseSucceeded, st.Status.Phase, st.Status.Message)
	assert.Equal(t, int32(2), e.provider.provisions.Load())
	phases := e.phases(plan.Metadata.Name)
	assert.Equal(t, []string{"Pending", "Running"}, phases[:2])
	assert.Less(t, indexOf(phases, "Frozen"), lastIndexOf(phases, "Running"), "Frozen, then Running again: %v", phases)
	assert.Equal(t, "Succeeded", phases[len(phases)-1])
}

func indexOf(xs []string, x string) int {
	for i, v := range xs {
		if v == x {
			return i
		}
	}
	return -1
}

func lastIndexOf(xs []string, x string) int {
	for i := len(xs) - 1; i >= 0; i-- {
		if xs[i] == x {
			return i
		}
	}
	return -1
}

func TestRemoteDownMidPlanPlanFinishesAndStatusesArriveInOrder(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "middown")
	old0, old1 := e.node("old-0"), e.node("old-1")
	plan := e.plan("local", "3d3d3d", old0, old1)
	e.mergePlan(plan)

	r, _ := e.reconciler("a", nil)
	e.provider.onProvision = func() { e.srv.FailNext(1_000_000, 503) }
	require.NoError(t, r.Pass(e.ctx))
	require.Eventually(t, func() bool {
		rec := e.record(plan.Metadata.Name)
		return rec != nil && rec.State.Phase == api.PhaseSucceeded
	}, time.Minute, 100*time.Millisecond, "the plan goes on with git down")
	rec := e.record(plan.Metadata.Name)
	assert.NotEmpty(t, rec.State.Outbox, "the outbox holds what git has not seen")
	nodes := e.groupNodes()
	assert.NotContains(t, nodes, old0)
	assert.NotContains(t, nodes, old1)
	st := e.status(plan.Metadata.Name)
	require.NotNil(t, st)
	assert.Equal(t, api.PhaseRunning, st.Status.Phase, "git still says Running")

	e.srv.FailNext(0, 0)
	r.Wait()
	phases := e.phases(plan.Metadata.Name)
	assert.Equal(t, []string{"Pending", "Running"}, phases[:2])
	assert.Equal(t, "Succeeded", phases[len(phases)-1], "%v", phases)
	assert.Equal(t, 1, countOf(phases, "Succeeded"))
	st = e.status(plan.Metadata.Name)
	assert.Equal(t, api.PhaseSucceeded, st.Status.Phase)
	assert.Len(t, st.Status.CordonedNodes, 2)
	assert.Zero(t, e.records(), "the record went once the final status was in git")
}

func TestPushRaceWithAPersonIsRebasedAndLands(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "race")
	plan := e.plan("local", "7a7a7a", e.node("old-0"))
	e.mergePlan(plan)

	r, _ := e.reconciler("a", nil)
	e.provider.onProvision = func() {
		// Someone pushes to main while the plan runs: our next status push is
		// rejected as non-fast-forward and must be rebased onto theirs.
		e.merge(map[string]string{"README.md": "someone else's change\n"})
	}
	require.NoError(t, r.PassAndWait(e.ctx))
	st := e.status(plan.Metadata.Name)
	require.NotNil(t, st)
	assert.Equal(t, api.PhaseSucceeded, st.Status.Phase)
	readme, ok := e.srv.Show(t, e.name, "main", "README.md")
	require.True(t, ok, "their commit was kept")
	assert.Equal(t, "someone else's change\n", readme)
	log := e.srv.GitIn(t, e.name, "log", "--first-parent", "--format=%s", "main")
	assert.Less(t, strings.Index(log, "rebalancer: "+plan.Metadata.Name+" Succeeded"), strings.Index(log, "merge plans"),
		"the final status landed on top of their commit:\n%s", log)
}

func TestStatusRootOfAnotherClusterIsRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "foreign")
	theirs := e.plan("local", "f0f0f0", "some-node")
	st := gittest.Status(theirs, api.PhaseSucceeded, time.Now().Add(-48*time.Hour).UTC().Truncate(time.Second))
	st.Status.ClusterUID = "uid-of-another-cluster"
	ours := e.plan("local", "0f0f0f", e.node("old-0"))
	f, c := e.planFile(ours)
	ft, ct := e.planFile(theirs)
	e.merge(map[string]string{ft: ct, e.layout.StatusFile(theirs.Metadata.Name): gittest.YAML(t, st), f: c})

	r, _ := e.reconciler("a", nil)
	err := r.PassAndWait(e.ctx)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "written by another cluster")
	assert.Contains(t, err.Error(), "uid-of-another-cluster")
	assert.Contains(t, err.Error(), "--path")
	assert.Nil(t, e.status(ours.Metadata.Name), "nothing was written")
	assert.Zero(t, e.provider.provisions.Load())
	assert.Zero(t, e.records())
}

func TestKilledControllerMidPlanIsResumedByAnother(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "killed")
	old0, old1 := e.node("old-0"), e.node("old-1")
	plan := e.plan("local", "4b4b4b", old0, old1)
	e.mergePlan(plan)

	ctx1, kill := context.WithCancel(e.ctx)
	defer kill()
	r1, _ := e.reconciler("a", nil)
	var once sync.Once
	e.provider.onProvision = func() {
		// The first controller dies while the first replacement comes up.
		once.Do(func() { time.AfterFunc(300*time.Millisecond, kill) })
	}
	require.NoError(t, r1.Pass(ctx1))
	r1.Wait()
	require.NotNil(t, e.record(plan.Metadata.Name), "the killed controller left its record")

	r2, _ := e.reconciler("b", nil)
	require.NoError(t, r2.PassAndWait(e.ctx))
	st := e.status(plan.Metadata.Name)
	require.NotNil(t, st)
	assert.Equal(t, api.PhaseSucceeded, st.Status.Phase, st.Status.Message)
	nodes := e.groupNodes()
	assert.Len(t, nodes, 2, "one replacement per candidate, none leaked: %v", nodes)
	assert.NotContains(t, nodes, old0)
	assert.NotContains(t, nodes, old1)
	assert.Zero(t, e.records())
	assert.Equal(t, 1, countOf(e.phases(plan.Metadata.Name), "Succeeded"))
}
