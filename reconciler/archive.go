package reconciler

import (
	"context"
	"time"

	api "github.com/rebalancer-dev/rebalancer/api/v1alpha1"
	"github.com/rebalancer-dev/rebalancer/executor"
	"github.com/rebalancer-dev/rebalancer/gitops"
)

// maxArchivePerCommit bounds one archive commit.
const maxArchivePerCommit = 200

// archive takes out of the tree the files of plans that finished more than
// Options.ArchiveAfter ago, so the tree — which every push makes the git server
// walk — holds recent plans only; history keeps them all. A plan qualifies when
// its status is terminal but not RollbackFailed (its file is what a person
// deletes to clear its node group), it has no execution record, and its notAfter
// has passed, so a plan file put back by a revert could only ever be Expired.
// When statuses go to another branch than the plans, only statuses whose plan
// file is gone from the watched branch are archived: a plan without its status
// would look unfinished.
func (r *Reconciler) archive(ctx context.Context, ix *gitops.PlanIndex, recs []*executor.Record) {
	if r.opts.ArchiveAfter <= 0 {
		return
	}
	now := r.clock.Now()
	old := func(st *api.RebalanceStatus) bool {
		if st == nil || !st.Status.Phase.Terminal() || st.Status.Phase == api.PhaseRollbackFailed {
			return false
		}
		at := st.Status.FinishedAt.Time
		if at.IsZero() {
			at = st.Status.UpdatedAt.Time
		}
		return !at.IsZero() && now.Sub(at) > r.opts.ArchiveAfter
	}
	recorded := map[string]bool{}
	for _, rec := range recs {
		recorded[rec.Plan.Metadata.Name] = true
	}
	var ids []string
	if r.store.StatusBranch() == r.store.WatchedBranch() {
		for _, p := range ix.Plans {
			if recorded[p.ID] || !old(p.Status) {
				continue
			}
			if p.Plan != nil && now.Before(p.Plan.Spec.NotAfter.Time) {
				continue
			}
			ids = append(ids, p.ID)
		}
	}
	for _, st := range ix.Orphans {
		if !recorded[st.Metadata.Name] && old(st) {
			ids = append(ids, st.Metadata.Name)
		}
	}
	if len(ids) == 0 {
		return
	}
	if len(ids) > maxArchivePerCommit {
		ids = ids[:maxArchivePerCommit] // the next pass takes the rest
	}
	if _, err := r.store.Archive(ctx, ids); err != nil {
		r.metrics.gitErrors.WithLabelValues("push").Inc()
		r.log.Warn("archiving finished plans failed; the next pass tries again", "plans", len(ids), "error", err)
		return
	}
	r.log.Info("archived finished plans: their files left the tree, history keeps them", "plans", len(ids),
		"olderThan", r.opts.ArchiveAfter.String(), "since", now.Add(-r.opts.ArchiveAfter).Format(time.RFC3339))
}
