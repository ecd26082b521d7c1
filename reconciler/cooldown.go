package reconciler

import (
	"context"
	"fmt"
	"time"

	api "github.com/rebalancer-dev/rebalancer/api/v1alpha1"
	"github.com/rebalancer-dev/rebalancer/gitops"
	"github.com/rebalancer-dev/rebalancer/planner"
)

// LastFinished returns, from the StatusStore as last fetched, when a plan's node
// group last finished a plan that changed something: where its cooldown starts
// (executor.ClusterRevalidator.LastFinished).
func LastFinished(store gitops.StatusStore) func(ctx context.Context, plan *api.RebalancePlan) (time.Time, error) {
	return func(ctx context.Context, plan *api.RebalancePlan) (time.Time, error) {
		ix, err := store.Plans(ctx)
		if err != nil {
			return time.Time{}, fmt.Errorf("reading statuses for the cooldown of %s: %w", plan.Metadata.Name, err)
		}
		var last time.Time
		for _, p := range ix.Plans {
			if p.Plan == nil || p.ID == plan.Metadata.Name || !p.Finished() || !planner.ChangedSomething(p.Status) {
				continue
			}
			s := p.Plan.Spec
			if s.Cluster != plan.Spec.Cluster || s.Policy != plan.Spec.Policy || s.NodeGroup != plan.Spec.NodeGroup {
				continue
			}
			if t := p.Status.Status.FinishedAt.Time; t.After(last) {
				last = t
			}
		}
		return last, nil
	}
}
