package executor

import (
	"context"
	"fmt"
	"log/slog"

	api "github.com/rebalancer-dev/rebalancer/api/v1alpha1"
)

// What froze a plan (State.FrozenBy).
const (
	FrozenByStopSwitch = "stop-switch"
	FrozenByCancel     = "cancel"
)

// control applies, before every step, what people asked: the in-cluster stop
// switch and spec.cancel in git. It reports whether it changed the plan's phase
// (the caller looks again) — a freeze, a cancel, a rollback, or a frozen plan
// going on because what froze it is gone.
func (e *Executor) control(ctx context.Context, rec *Record, log *slog.Logger) (bool, error) {
	st := rec.State
	if st.Phase != api.PhaseRunning && st.Phase != api.PhaseFrozen {
		return false, nil // rolling back or final: a cancel changes nothing now
	}
	var want api.Cancel
	if e.cancel != nil {
		want = e.cancel(rec.Plan.Metadata.Name)
	}
	if want != "" && !started(st) {
		log.Warn("cancelled before any change", "cancel", want)
		return true, e.finish(ctx, rec, api.PhaseCancelled, fmt.Sprintf("cancelled by spec.cancel: %s before any change", want))
	}
	if want == api.CancelRollback {
		log.Warn("spec.cancel: rollback: rolling back what the plan started")
		return true, e.beginRollback(ctx, rec, &failure{trigger: api.TriggerCancelled, reason: "spec.cancel: rollback was merged"})
	}
	on, err := e.StopSwitchOn(ctx)
	if err != nil {
		return false, err
	}
	switch {
	case st.Phase == api.PhaseRunning && on:
		log.Warn("stop switch is on: freezing before the next change")
		st.FrozenBy = FrozenByStopSwitch
		return true, e.finish(ctx, rec, api.PhaseFrozen, fmt.Sprintf("frozen by the in-cluster stop switch (%s on ConfigMap %s/%s); rebalancer resume lets it go on",
			StopAnnotation, e.opts.Namespace, e.opts.StopConfigMap))
	case st.Phase == api.PhaseRunning && want == api.CancelStop:
		log.Warn("spec.cancel: stop: freezing before the next change")
		st.FrozenBy = FrozenByCancel
		return true, e.finish(ctx, rec, api.PhaseFrozen,
			"frozen by spec.cancel: stop (or the plan file was deleted); set cancel: rollback to undo the batch in progress, or remove cancel to go on")
	case st.Phase == api.PhaseFrozen && want == "" && !on &&
		(st.FrozenBy == FrozenByStopSwitch || st.FrozenBy == FrozenByCancel):
		log.Info("what froze the plan is gone: going on", "frozenBy", st.FrozenBy)
		msg := "resumed: the stop switch was cleared"
		if st.FrozenBy == FrozenByCancel {
			msg = "resumed: spec.cancel was removed"
		}
		st.FrozenBy = ""
		st.Phase = api.PhaseRunning
		st.Message = msg
		e.enqueue(rec, false)
		if err := e.save(ctx, rec); err != nil {
			return true, err
		}
		e.metrics.phase(rec.Plan, api.PhaseRunning)
		return true, nil
	}
	return false, nil
}

// Started reports whether the plan in rec has begun changing anything (a
// provision attempted, a node cordoned or replaced).
func Started(rec *Record) bool { return started(rec.State) }
