package reconciler

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	api "github.com/rebalancer-dev/rebalancer/api/v1alpha1"
	"github.com/rebalancer-dev/rebalancer/gitops/gittest"
)

func TestArchiveTakesOldFinishedPlansOutOfTheTree(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "archive")
	e.archiveAfter = 30 * 24 * time.Hour
	now := time.Now().UTC().Truncate(time.Second)
	day := 24 * time.Hour
	old := gittest.Plan("local", e.name, "a0a0a0", now.Add(-40*day), "n-old")
	recent := gittest.Plan("local", e.name, "b0b0b0", now.Add(-3*day), "n-recent")
	failed := gittest.Plan("local", e.name, "c0c0c0", now.Add(-40*day), "n-failed")
	orphan := gittest.Plan("local", e.name, "d0d0d0", now.Add(-40*day), "n-orphan")
	files := map[string]string{}
	for _, c := range []struct {
		plan     *api.RebalancePlan
		phase    api.Phase
		finished time.Time
		withPlan bool
	}{{old, api.PhaseSucceeded, now.Add(-35 * day), true}, {recent, api.PhaseSucceeded, now.Add(-2 * day), true},
		{failed, api.PhaseRollbackFailed, now.Add(-35 * day), true}, {orphan, api.PhaseRolledBack, now.Add(-35 * day), false}} {
		if c.withPlan {
			f, content := e.planFile(c.plan)
			files[f] = content
		}
		files[e.layout.StatusFile(c.plan.Metadata.Name)] = gittest.YAML(t, gittest.Status(c.plan, c.phase, c.finished))
	}
	e.merge(files)

	r, _ := e.reconciler("a", nil)
	require.NoError(t, r.PassAndWait(e.ctx))
	exists := func(path string) bool { _, ok := e.srv.Show(t, e.name, "main", path); return ok }
	assert.False(t, exists(e.layout.PlanFile(old.Metadata.Name)), "a plan finished 35 days ago left the tree")
	assert.False(t, exists(e.layout.StatusFile(old.Metadata.Name)))
	assert.False(t, exists(e.layout.StatusFile(orphan.Metadata.Name)), "an old status without its plan left too")
	assert.True(t, exists(e.layout.PlanFile(recent.Metadata.Name)), "finished 2 days ago: kept")
	assert.True(t, exists(e.layout.StatusFile(recent.Metadata.Name)))
	assert.True(t, exists(e.layout.PlanFile(failed.Metadata.Name)), "RollbackFailed stays until a person clears it")
	assert.True(t, exists(e.layout.StatusFile(failed.Metadata.Name)))

	msg := e.srv.GitIn(t, e.name, "log", "-1", "--format=%B", "main")
	assert.Contains(t, msg, "rebalancer: archive 2 finished plans")
	assert.Contains(t, msg, "Rebalancer-Archived: "+old.Metadata.Name)
	assert.Contains(t, msg, "Rebalancer-Archived: "+orphan.Metadata.Name)
	assert.Contains(t, msg, "[skip ci]")
	// History keeps every version: the audit log is still there.
	logged := e.srv.GitIn(t, e.name, "log", "--format=%H", "main", "--", e.layout.StatusFile(old.Metadata.Name))
	assert.Len(t, strings.Fields(logged), 2, "the commit that added it and the one that archived it")

	head := e.srv.Rev(t, e.name, "main")
	require.NoError(t, r.PassAndWait(e.ctx))
	assert.Equal(t, head, e.srv.Rev(t, e.name, "main"), "nothing more to archive: no commit")
}
