package gitops_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clocktesting "k8s.io/utils/clock/testing"

	api "github.com/rebalancer-dev/rebalancer/api/v1alpha1"
	"github.com/rebalancer-dev/rebalancer/gitops"
	"github.com/rebalancer-dev/rebalancer/gitops/gittest"
)

var t0 = time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)

func TestStatusStoreAppendCoalescesProgress(t *testing.T) {
	t.Parallel()
	srv, w := fixture(t)
	plan := gittest.Plan("prod", "general", "aaaaaa", t0, "n1", "n2")
	w.Write("rebalancer/plans/"+plan.Metadata.Name+".yaml", gittest.YAML(t, plan))
	w.Commit("merge plan")
	w.Push("main")
	r := open(t, srv, nil)
	clk := clocktesting.NewFakePassiveClock(t0)
	store := gitops.NewStatusStore(r, gitops.StoreOptions{Layout: gitops.Layout{Root: "rebalancer"}, WatchedBranch: "main", Clock: clk})
	ctx := context.Background()

	st, err := store.Status(ctx, plan.Metadata.Name)
	require.NoError(t, err)
	assert.Nil(t, st, "no status yet")

	running := gittest.Status(plan, api.PhaseRunning, time.Time{})
	res, err := store.Append(ctx, running)
	require.NoError(t, err)
	require.False(t, res.Held)
	assert.Equal(t, res.Commit.String(), srv.Rev(t, "fleet", "main"))
	msg := srv.GitIn(t, "fleet", "log", "-1", "--format=%B", "main")
	assert.Equal(t, "rebalancer: "+plan.Metadata.Name+" Running\n\n[skip ci]\n\nRebalancer-Plan: "+plan.Metadata.Name+"\nRebalancer-Phase: Running\n", strings.TrimRight(msg, "\n")+"\n")

	// Step progress within the interval is held, then goes out with Flush.
	running.Status.Steps = []api.StepStatus{{Step: api.Step{Batch: 1, Action: api.ActionProvision, Node: "n1"}, Phase: api.StepRunning}}
	clk.SetTime(t0.Add(time.Second))
	res, err = store.Append(ctx, running)
	require.NoError(t, err)
	assert.True(t, res.Held)
	running.Status.Steps[0].Phase = api.StepSucceeded
	clk.SetTime(t0.Add(2 * time.Second))
	res, err = store.Append(ctx, running)
	require.NoError(t, err)
	assert.True(t, res.Held, "still within 5s")
	assert.Equal(t, "1", strings.TrimSpace(srv.GitIn(t, "fleet", "rev-list", "--count", "main", "--", "rebalancer/status")))
	require.NoError(t, store.Flush(ctx))
	got, err := store.Status(ctx, plan.Metadata.Name)
	require.NoError(t, err)
	require.Len(t, got.Status.Steps, 1)
	assert.Equal(t, api.StepSucceeded, got.Status.Steps[0].Phase, "the latest held progress was committed")

	// Past the interval progress is committed at once; a phase change always is.
	clk.SetTime(t0.Add(10 * time.Second))
	running.Status.Steps = append(running.Status.Steps, api.StepStatus{Step: api.Step{Batch: 1, Action: api.ActionWaitReady, Node: "n1"}, Phase: api.StepRunning})
	res, err = store.Append(ctx, running)
	require.NoError(t, err)
	assert.False(t, res.Held)
	done := gittest.Status(plan, api.PhaseSucceeded, t0.Add(11*time.Second))
	res, err = store.Append(ctx, done)
	require.NoError(t, err)
	assert.False(t, res.Held, "a phase change is committed at once")

	var events []string
	require.NoError(t, store.Log(ctx, func(e gitops.StatusEvent) error {
		events = append(events, string(e.Phase))
		assert.Equal(t, plan.Metadata.Name, e.Plan)
		assert.Equal(t, bot.Name, e.Author)
		return nil
	}))
	assert.Equal(t, []string{"Succeeded", "Running", "Running", "Running"}, events)

	ix, err := store.Plans(ctx)
	require.NoError(t, err)
	require.Len(t, ix.Plans, 1)
	assert.True(t, ix.Plans[0].Finished())
	g := ix.Groups()[gitops.GroupKey{Cluster: "prod", Policy: "general", NodeGroup: "general"}]
	require.NotNil(t, g)
	assert.Len(t, g.Finished, 1)
	assert.Empty(t, g.Unfinished)
}

func TestStatusStorePlansPerGroupInMergeOrder(t *testing.T) {
	t.Parallel()
	srv, w := fixture(t)
	p1 := gittest.Plan("prod", "general", "111111", t0, "n1")
	p2 := gittest.Plan("prod", "general", "222222", t0.Add(time.Hour), "n2")
	p3 := gittest.Plan("prod", "batch", "333333", t0, "b1")
	for _, p := range []*api.RebalancePlan{p2, p1, p3} { // p2 merged first
		w.Write("rebalancer/plans/"+p.Metadata.Name+".yaml", gittest.YAML(t, p))
		w.Commit("merge " + p.Metadata.Name)
	}
	w.Write("rebalancer/status/"+p2.Metadata.Name+".yaml", gittest.YAML(t, gittest.Status(p2, api.PhaseSucceeded, t0.Add(2*time.Hour))))
	w.Write("rebalancer/plans/prod-general-20261127-badbad.yaml", "apiVersion: rebalancer.dev/v1alpha1\nkind: RebalancePlan\nmetadata: {name: prod-general-20261127-badbad}\nspec: {strategy: rollling}\n")
	w.Write("rebalancer/status/prod-gone-20261127-000000.yaml", gittest.YAML(t, gittest.Status(gittest.Plan("prod", "gone", "000000", t0), api.PhaseCancelled, t0)))
	w.Commit("status and a broken plan")
	w.Push("main")

	store := gitops.NewStatusStore(open(t, srv, nil), gitops.StoreOptions{Layout: gitops.Layout{}, WatchedBranch: "main"})
	ix, err := store.Plans(context.Background())
	require.NoError(t, err)
	var ids []string
	for _, p := range ix.Plans {
		ids = append(ids, p.ID)
	}
	assert.Equal(t, []string{p2.Metadata.Name, p1.Metadata.Name, p3.Metadata.Name, "prod-general-20261127-badbad"}, ids, "in merge order")
	bad := ix.Get("prod-general-20261127-badbad")
	require.NotNil(t, bad)
	require.Error(t, bad.Err)
	assert.Contains(t, bad.Err.Error(), "rebalancer/plans/prod-general-20261127-badbad.yaml:")
	groups := ix.Groups()
	general := groups[gitops.GroupKey{Cluster: "prod", Policy: "general", NodeGroup: "general"}]
	require.NotNil(t, general)
	require.Len(t, general.Finished, 1)
	assert.Equal(t, p2.Metadata.Name, general.Finished[0].ID)
	require.Len(t, general.Unfinished, 1)
	assert.Equal(t, p1.Metadata.Name, general.Unfinished[0].ID)
	require.Len(t, ix.Orphans, 1)
	assert.Equal(t, "prod-gone-20261127-000000", ix.Orphans[0].Metadata.Name)
}

func TestStatusBranchForProtectedMain(t *testing.T) {
	t.Parallel()
	srv, w := fixture(t)
	plan := gittest.Plan("prod", "general", "aaaaaa", t0, "n1")
	w.Write("rebalancer/plans/"+plan.Metadata.Name+".yaml", gittest.YAML(t, plan))
	w.Commit("merge plan")
	w.Push("main")
	srv.RefuseDirectPushes(t, "fleet", "main")
	r := open(t, srv, nil)
	ctx := context.Background()

	onMain := gitops.NewStatusStore(r, gitops.StoreOptions{WatchedBranch: "main"})
	_, err := onMain.Append(ctx, gittest.Status(plan, api.PhaseRunning, time.Time{}))
	require.Error(t, err)
	assert.ErrorIs(t, err, gitops.ErrPushRefused, "the reconciler must not start the plan")
	assert.Contains(t, err.Error(), "Protected branch")

	store := gitops.NewStatusStore(r, gitops.StoreOptions{WatchedBranch: "main", StatusBranch: "rebalancer-status"})
	ix, err := store.Plans(ctx)
	require.NoError(t, err)
	require.Len(t, ix.Plans, 1)
	assert.Nil(t, ix.Plans[0].Status, "no status branch yet")
	_, err = store.Append(ctx, gittest.Status(plan, api.PhaseRunning, time.Time{}))
	require.NoError(t, err)
	_, ok := srv.Show(t, "fleet", "rebalancer-status", "rebalancer/status/"+plan.Metadata.Name+".yaml")
	assert.True(t, ok, "status landed on the status branch")
	ix, err = store.Plans(ctx)
	require.NoError(t, err)
	require.NotNil(t, ix.Plans[0].Status)
	assert.Equal(t, api.PhaseRunning, ix.Plans[0].Status.Status.Phase, "plans from main, status from the status branch")
}

func TestOnlyStatusPushesDoNotTrigger(t *testing.T) {
	t.Parallel()
	srv, w := fixture(t)
	r := open(t, srv, nil)
	store := gitops.NewStatusStore(r, gitops.StoreOptions{WatchedBranch: "main"})
	ctx := context.Background()
	before, err := r.Head("main")
	require.NoError(t, err)
	plan := gittest.Plan("prod", "general", "aaaaaa", t0, "n1")
	res, err := store.Append(ctx, gittest.Status(plan, api.PhaseRunning, time.Time{}))
	require.NoError(t, err)
	trig, err := store.TriggersReconcile(ctx, before, res.Commit)
	require.NoError(t, err)
	assert.False(t, trig, "our own status commit wakes nobody")

	w.Pull()
	w.Write("rebalancer/policies/general.yaml", "changed\n")
	w.Commit("policy change")
	w.Push("main")
	require.NoError(t, r.Fetch(ctx))
	after, err := r.Head("main")
	require.NoError(t, err)
	trig, err = store.TriggersReconcile(ctx, res.Commit, after)
	require.NoError(t, err)
	assert.True(t, trig)
	trig, err = store.TriggersReconcile(ctx, after, after)
	require.NoError(t, err)
	assert.False(t, trig)
	assert.False(t, gitops.Layout{}.OnlyStatus(nil))
	assert.True(t, gitops.Layout{Root: "clusters/prod/rebalancer"}.OnlyStatus([]string{"clusters/prod/rebalancer/status/x.yaml"}))
	assert.False(t, gitops.Layout{}.OnlyStatus([]string{"rebalancer/status/x.yaml", "rebalancer/plans/x.yaml"}))
}
