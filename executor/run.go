package executor

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	api "github.com/rebalancer-dev/rebalancer/api/v1alpha1"
	"github.com/rebalancer-dev/rebalancer/policies"
)

// runForward runs the next unfinished step. At the start of each batch — before
// any of its steps — it checks the stop switch and re-validates the plan.
func (e *Executor) runForward(ctx context.Context, rec *Record, log *slog.Logger) error {
	st := rec.State
	idx := -1
	for i, s := range st.Steps {
		if s.Phase == api.StepPending || s.Phase == api.StepRunning {
			idx = i
			break
		}
	}
	if idx < 0 {
		return e.complete(ctx, rec, log)
	}
	step := &st.Steps[idx]
	if e.batchNotStarted(st, step.Batch) {
		stop, err := e.stopped(ctx, rec, log)
		if err != nil || stop {
			return err
		}
	}
	pair := st.pair(step.Node)
	if pair == nil {
		return e.finish(ctx, rec, api.PhaseFrozen, fmt.Sprintf("internal error: step %d names %s, not a candidate", idx, step.Node))
	}
	if st.skipped(step.Node) {
		step.Phase = api.StepSkipped
		return e.save(ctx, rec)
	}
	nlog := log.With("node", step.Node, "action", step.Action)
	if step.Phase == api.StepPending {
		step.Phase = api.StepRunning
		step.StartedAt = api.NewTime(e.clock.Now())
		if err := e.save(ctx, rec); err != nil {
			return err
		}
	}
	start := e.clock.Now()
	nlog.Info("step started")
	err := e.do(ctx, rec, pair, step.Action, nlog)
	e.metrics.operation(string(step.Action), err)
	if err != nil {
		return err
	}
	step.Phase = api.StepSucceeded
	step.FinishedAt = api.NewTime(e.clock.Now())
	step.NewNode = pair.NewNode
	e.enqueue(rec, true)
	if err := e.save(ctx, rec); err != nil {
		return err
	}
	elapsed := e.clock.Since(start)
	e.metrics.stepDuration(string(step.Action), elapsed)
	nlog.Info("step succeeded", "elapsed", elapsed.Round(time.Millisecond), "newNode", pair.NewNode)
	e.report(Progress{Plan: rec.Plan.Metadata.Name, Node: step.Node, NewNode: pair.NewNode, Action: step.Action, Phase: api.StepSucceeded, Elapsed: elapsed})
	return nil
}

func (e *Executor) report(p Progress) {
	if e.progress != nil {
		e.progress(p)
	}
}

func (e *Executor) batchNotStarted(st *State, batch int) bool {
	for _, s := range st.Steps {
		if s.Batch == batch && s.Phase != api.StepPending {
			return false
		}
	}
	return true
}

// stopped checks the stop switch and re-validates the plan before a batch. It
// returns true when the plan must not go on now (frozen, skipped work recorded, or
// waiting).
func (e *Executor) stopped(ctx context.Context, rec *Record, log *slog.Logger) (bool, error) {
	if e.reval == nil {
		return false, nil
	}
	st := rec.State
	in := policies.RevalidateInput{Now: e.clock.Now(), Started: started(st), Done: map[string]bool{}, ExcludeFromHealth: map[string]bool{}}
	for _, p := range st.Pairs {
		if p.Done {
			in.Done[p.Old] = true
		}
		if p.NewNode != "" {
			in.ExcludeFromHealth[p.NewNode] = true
		}
	}
	d, err := e.reval.Revalidate(ctx, rec.Plan, in)
	if err != nil {
		return true, fmt.Errorf("re-validating %s: %w", rec.Plan.Metadata.Name, err)
	}
	switch d.Verdict {
	case policies.Run:
		if len(d.Skip) == 0 {
			return false, nil
		}
		for node, why := range d.Skip {
			if st.skipped(node) || st.pair(node) == nil || st.pair(node).Done {
				continue
			}
			log.Warn("candidate no longer qualifies: skipped, never evicted", "node", node, "reason", why)
			st.Skipped = append(st.Skipped, api.Skipped{Node: node, Reason: why})
			for i := range st.Steps {
				if st.Steps[i].Node == node && st.Steps[i].Phase == api.StepPending {
					st.Steps[i].Phase = api.StepSkipped
					st.Steps[i].Message = why
				}
			}
			e.enqueue(rec, true)
			if err := e.save(ctx, rec); err != nil {
				return true, err
			}
			// A replacement already made for it goes again, drained first.
			if p := st.pair(node); p.NewNode != "" || p.Cordoned {
				if _, err := e.undoPair(ctx, rec, p, false, log); err != nil {
					return true, err
				}
			}
		}
		return true, nil // look again: the next step may belong to another batch
	case policies.Wait:
		if in.Started && !d.Health.Healthy {
			return true, e.beginRollback(ctx, rec, &failure{trigger: api.TriggerClusterUnhealthy, reason: d.Health.Message, freeze: true})
		}
		msg := strings.Join(d.Reasons, "; ")
		if st.Message != "waiting: "+msg {
			st.Message = "waiting: " + msg
			e.enqueue(rec, true)
			if err := e.save(ctx, rec); err != nil {
				return true, err
			}
		}
		log.Info("waiting before the next batch", "reason", msg)
		select {
		case <-ctx.Done():
			return true, ctx.Err()
		case <-e.clock.After(e.opts.WaitRetry):
		}
		return true, nil
	default: // reject or expire once started: a person decides
		if !in.Started {
			return true, e.finish(ctx, rec, api.PhaseRejected, strings.Join(d.Reasons, "; "))
		}
		return true, e.finish(ctx, rec, api.PhaseFrozen, "frozen: the plan no longer holds: "+strings.Join(d.Reasons, "; "))
	}
}

func started(st *State) bool {
	for _, p := range st.Pairs {
		if p.ProvisionAttempted || p.Cordoned || p.Done {
			return true
		}
	}
	return false
}

// StopSwitchOn reports whether the stop annotation is set on the controller's
// ConfigMap. It reads the API server, never git, so it works when git is down.
func (e *Executor) StopSwitchOn(ctx context.Context) (bool, error) {
	cm, err := e.client.CoreV1().ConfigMaps(e.opts.Namespace).Get(ctx, e.opts.StopConfigMap, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading the stop switch: %w", err)
	}
	v, ok := cm.Annotations[StopAnnotation]
	return ok && v != "false", nil
}

// complete ends a plan whose steps are all done: the protections put on the new
// nodes for the plan's duration come off, and the plan succeeds.
func (e *Executor) complete(ctx context.Context, rec *Record, log *slog.Logger) error {
	replaced, saved := 0, 0.0
	for _, p := range rec.State.Pairs {
		if p.NewNode != "" && !p.NewRemoved {
			if err := e.releaseNewNode(ctx, p.NewNode); err != nil {
				return err
			}
		}
		if p.Done {
			replaced++
			saved += p.Savings
		}
	}
	e.metrics.replaced(rec.Plan.Spec.Strategy, replaced, saved)
	msg := fmt.Sprintf("%d of %d nodes replaced; saves %.2f per month", replaced, len(rec.State.Pairs), saved)
	if len(rec.State.Skipped) > 0 {
		msg += fmt.Sprintf("; %d skipped", len(rec.State.Skipped))
	}
	log.Info("plan succeeded", "replaced", replaced, "monthlySavings", saved)
	return e.finish(ctx, rec, api.PhaseSucceeded, msg)
}
