package reconciler

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	api "github.com/rebalancer-dev/rebalancer/api/v1alpha1"
	"github.com/rebalancer-dev/rebalancer/gitops/gittest"
	"github.com/rebalancer-dev/rebalancer/policies"
)

func TestWaitingIsCommittedOncePerCause(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "paused")
	plan := e.plan("local", "111111", e.node("old-0"))
	f, c := e.planFile(plan)
	e.merge(map[string]string{f: c, e.layout.PoliciesDir() + "/paused.yaml": gittest.Policy("paused") + "  paused: true\n"})

	r, _ := e.reconciler("a", nil)
	require.NoError(t, r.PassAndWait(e.ctx))
	require.NoError(t, r.PassAndWait(e.ctx))
	assert.Equal(t, []string{"Pending", "Waiting"}, e.phases(plan.Metadata.Name), "one Waiting commit for two passes")
	st := e.status(plan.Metadata.Name)
	require.NotNil(t, st)
	assert.Contains(t, st.Status.WaitingFor, "paused")
	assert.Zero(t, e.provider.provisions.Load())
	assert.Zero(t, e.records())

	// Un-pausing on main lets the next pass run it.
	e.merge(map[string]string{e.layout.PoliciesDir() + "/paused.yaml": gittest.Policy("paused")})
	require.NoError(t, r.PassAndWait(e.ctx))
	phases := e.phases(plan.Metadata.Name)
	assert.Equal(t, []string{"Pending", "Waiting", "Running", "Succeeded"}, phases)
}

func TestExpiredPlanNeverStarts(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "expired")
	node := e.node("old-0")
	plan := gittest.Plan("local", e.name, "222222", time.Now().UTC().Add(-8*24*time.Hour).Truncate(time.Second), node)
	s, err := policies.StrategyFor(plan.Spec.Strategy)
	require.NoError(t, err)
	plan.Spec.Steps = s.Steps([]string{node}, plan.Spec.MaxConcurrent)
	plan.Spec.ContentDigest = plan.Spec.ComputeContentDigest()
	e.mergePlan(plan)

	r, _ := e.reconciler("a", nil)
	require.NoError(t, r.PassAndWait(e.ctx))
	st := e.status(plan.Metadata.Name)
	require.NotNil(t, st)
	assert.Equal(t, api.PhaseExpired, st.Status.Phase)
	assert.Contains(t, st.Status.Message, "notAfter")
	assert.Zero(t, e.provider.provisions.Load())
}

func TestOneRunningPlanPerNodeGroupOldestFirstThenCooldown(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "ordered")
	first := e.plan("local", "333333", e.node("old-0"))
	second := e.plan("local", "000000", e.node("old-1")) // sorts first by ID, merged later
	f1, c1 := e.planFile(first)
	e.merge(map[string]string{f1: c1})
	f2, c2 := e.planFile(second)
	e.merge(map[string]string{f2: c2})

	r, _ := e.reconciler("a", nil)
	require.NoError(t, r.PassAndWait(e.ctx))
	st := e.status(first.Metadata.Name)
	require.NotNil(t, st)
	assert.Equal(t, api.PhaseSucceeded, st.Status.Phase, st.Status.Message)
	require.NotNil(t, e.status(second.Metadata.Name))
	assert.Equal(t, api.PhasePending, e.status(second.Metadata.Name).Status.Phase, "the group had a running plan: the later one waits for the next pass")
	assert.Equal(t, int32(1), e.provider.provisions.Load())

	// The next pass finds the group cooling down (cooldownPeriod 1h from the
	// first plan's finishedAt in git): the later plan waits and changes nothing.
	require.NoError(t, r.PassAndWait(e.ctx))
	st = e.status(second.Metadata.Name)
	require.NotNil(t, st)
	assert.Equal(t, api.PhaseWaiting, st.Status.Phase)
	assert.Contains(t, st.Status.WaitingFor, "cooling down")
	assert.False(t, st.Status.NextAttempt.IsZero(), "a cooldown says when the plan may start")
	assert.Equal(t, int32(1), e.provider.provisions.Load())
}

func TestRollbackFailedStopsTheNodeGroupUntilThePlanFileIsDeleted(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "rbfailed")
	failed := e.plan("local", "fa11ed", "gone-node")
	st := gittest.Status(failed, api.PhaseRollbackFailed, time.Now().Add(-48*time.Hour).UTC().Truncate(time.Second))
	next := e.plan("local", "0e0e0e", e.node("old-0"))
	ff, cf := e.planFile(failed)
	fn, cn := e.planFile(next)
	e.merge(map[string]string{ff: cf, e.layout.StatusFile(failed.Metadata.Name): gittest.YAML(t, st), fn: cn})

	r, _ := e.reconciler("a", nil)
	require.NoError(t, r.PassAndWait(e.ctx))
	got := e.status(next.Metadata.Name)
	require.NotNil(t, got)
	assert.Equal(t, api.PhaseWaiting, got.Status.Phase)
	assert.Contains(t, got.Status.WaitingFor, "ended RollbackFailed")
	assert.Contains(t, got.Status.WaitingFor, ff, "the message says how to clear it")
	assert.Zero(t, e.provider.provisions.Load())

	// A person sorts the nodes out and deletes the failed plan's file: the group runs again.
	e.work.Pull()
	e.work.Remove(ff)
	e.work.Commit("clear the RollbackFailed plan")
	e.work.Push("main")
	require.NoError(t, r.PassAndWait(e.ctx))
	got = e.status(next.Metadata.Name)
	require.NotNil(t, got)
	assert.Equal(t, api.PhaseSucceeded, got.Status.Phase, got.Status.Message)
}
