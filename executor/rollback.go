package executor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	corev1 "k8s.io/api/core/v1"

	api "github.com/rebalancer-dev/rebalancer/api/v1alpha1"
	"github.com/rebalancer-dev/rebalancer/cloud"
	"github.com/rebalancer-dev/rebalancer/policies"
)

// beginRollback records the trigger and the pairs to undo: every pair whose old
// node is not yet terminated. Finished pairs stay.
func (e *Executor) beginRollback(ctx context.Context, rec *Record, f *failure) error {
	st := rec.State
	for i := range st.Steps {
		if st.Steps[i].Phase == api.StepRunning {
			st.Steps[i].Phase = api.StepFailed
			st.Steps[i].Message = f.reason
			st.Steps[i].FinishedAt = api.NewTime(e.clock.Now())
		}
	}
	st.Phase = api.PhaseFailed
	st.Message = f.Error()
	e.enqueue(rec, false)
	rb := &RollbackState{Trigger: f.trigger, Reason: f.reason, Freeze: f.freeze}
	for _, p := range st.Pairs {
		if !p.Done && !st.skipped(p.Old) {
			rb.Nodes = append(rb.Nodes, p.Old)
		}
	}
	st.Rollback = rb
	st.Phase = api.PhaseRollingBack
	e.enqueue(rec, false)
	e.metrics.rollback()
	return e.save(ctx, rec)
}

// runRollback undoes the recorded pairs. It is resumable: every action checks the
// live cluster and provider first.
func (e *Executor) runRollback(ctx context.Context, rec *Record, log *slog.Logger) error {
	st := rec.State
	rb := st.Rollback
	if rb == nil {
		return e.finish(ctx, rec, api.PhaseFrozen, "internal error: rolling back without a rollback record")
	}
	log = log.With("rollback", rb.Trigger)
	for _, node := range rb.Nodes {
		p := st.pair(node)
		if p == nil {
			continue
		}
		ok, err := e.undoPair(ctx, rec, p, rb.Freeze, log)
		if err != nil {
			return err
		}
		if !ok {
			e.event(p.Old, corev1.EventTypeWarning, "RebalanceRollbackFailed", "plan %s: could not drain replacement %s; both nodes kept", rec.Plan.Metadata.Name, p.NewNode)
			e.metrics.rollbackFailed()
			return e.finish(ctx, rec, api.PhaseRollbackFailed, fmt.Sprintf("rollback (%s: %s) could not drain replacement %s of %s; both nodes are kept and node group %s is stopped until a person clears it (by deleting this plan's file)",
				rb.Trigger, rb.Reason, p.NewNode, p.Old, rec.Plan.Spec.NodeGroup))
		}
	}
	if rb.Freeze {
		for _, n := range rb.Nodes {
			e.event(n, corev1.EventTypeWarning, "RebalanceFrozen", "plan %s frozen: %s", rec.Plan.Metadata.Name, rb.Reason)
		}
		return e.finish(ctx, rec, api.PhaseFrozen, fmt.Sprintf("frozen (%s: %s): old nodes un-tainted, new nodes kept; a person decides", rb.Trigger, rb.Reason))
	}
	return e.finish(ctx, rec, api.PhaseRolledBack, fmt.Sprintf("rolled back (%s: %s)", rb.Trigger, rb.Reason))
}

// undoPair removes our taint from the old node and, unless freeze, drains the
// replacement through the Eviction API and terminates it. It reports false when
// the replacement could not be drained in time: then both nodes stay.
func (e *Executor) undoPair(ctx context.Context, rec *Record, p *Pair, freeze bool, log *slog.Logger) (bool, error) {
	log = log.With("node", p.Old, "newNode", p.NewNode)
	if p.Cordoned {
		if err := e.updateNode(ctx, p.Old, func(n *corev1.Node) {
			removeTaint(n, policies.TaintDisrupting)
			delete(n.Annotations, AnnotationPlan)
			delete(n.Annotations, AnnotationRole)
		}); err != nil {
			return false, err
		}
		p.Cordoned = false
		e.rollbackStep(rec, api.ActionUncordon, p)
		if err := e.save(ctx, rec); err != nil {
			return false, err
		}
		e.event(p.Old, corev1.EventTypeNormal, "RebalanceRolledBack", "plan %s: our taint removed", rec.Plan.Metadata.Name)
	}
	if freeze || p.NewRemoved {
		return true, nil
	}
	if p.NewProviderID == "" && p.ProvisionAttempted {
		// A provision call whose outcome we never learned: find its instance.
		if e.provider.Capabilities().IdempotentProvision {
			inst, err := e.provider.Provision(ctx, cloud.ProvisionRequest{Offering: p.Offering, Datacenter: p.Datacenter, NodeName: nodeNameHint(p), Token: p.Token})
			if err == nil && inst != nil {
				p.NewProviderID, p.NewNode = inst.ProviderID, inst.NodeName
			}
		} else {
			inst, err := e.findNewInstance(ctx, rec, p, e.opts.ProvisionTimeout)
			if err != nil {
				return false, err
			}
			if inst != nil {
				p.NewProviderID, p.NewNode = inst.ProviderID, inst.NodeName
			}
		}
		if err := e.save(ctx, rec); err != nil {
			return false, err
		}
	}
	if p.NewProviderID != "" {
		if p.NewNode != "" {
			err := e.evictAll(ctx, p.NewNode, rec.Plan.Spec.DrainTimeout.Duration, log)
			var blocked *drainBlocked
			if errors.As(err, &blocked) {
				log.Warn("rollback drain timed out", "reason", blocked.Error())
				return false, nil
			}
			if err != nil {
				return false, err
			}
			e.rollbackStep(rec, api.ActionDrain, p)
		}
		if err := e.provider.Terminate(ctx, p.NewProviderID); err != nil && !errors.Is(err, cloud.ErrNotFound) {
			return false, fmt.Errorf("terminating replacement %s: %w", p.NewNode, err)
		}
		if p.NewNode != "" {
			if err := e.deleteNode(ctx, p.NewNode, p.NewProviderID); err != nil {
				return false, err
			}
		}
		e.rollbackStep(rec, api.ActionTerminate, p)
		log.Info("replacement removed")
	}
	p.NewRemoved = true
	return true, e.save(ctx, rec)
}

func (e *Executor) rollbackStep(rec *Record, a api.Action, p *Pair) {
	if rec.State.Rollback == nil {
		return
	}
	now := api.NewTime(e.clock.Now())
	rec.State.Rollback.Steps = append(rec.State.Rollback.Steps, api.StepStatus{
		Step: api.Step{Batch: 1, Action: a, Node: p.Old}, Phase: api.StepSucceeded, NewNode: p.NewNode, StartedAt: now, FinishedAt: now})
	e.enqueue(rec, true)
	e.report(Progress{Plan: rec.Plan.Metadata.Name, Node: p.Old, NewNode: p.NewNode, Action: a, Phase: api.StepSucceeded, Rollback: true})
}
