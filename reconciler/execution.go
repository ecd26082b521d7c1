package reconciler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"

	api "github.com/rebalancer-dev/rebalancer/api/v1alpha1"
	"github.com/rebalancer-dev/rebalancer/executor"
	"github.com/rebalancer-dev/rebalancer/gitops"
)

// execution is one plan this process drives: its record and the queue of status
// transitions on their way to git. The executor hands transitions over on its own
// goroutine (offer); one pusher goroutine commits them in order, retrying while
// the remote is unreachable, so the plan never waits for git once it has started.
type execution struct {
	id  string
	rec *executor.Record
	log *slog.Logger

	mu      sync.Mutex
	pending []executor.Transition // handed over, not yet in git, oldest first
	handed  int                   // highest sequence number handed over
	last    *executor.Transition  // the last transition pushed
	closed  bool                  // no more will be handed over
	wake    chan struct{}
	done    chan struct{}
	err     error // why the pusher stopped before the queue was empty
}

func newExecution(rec *executor.Record, log *slog.Logger) *execution {
	return &execution{id: rec.Plan.Metadata.Name, rec: rec, log: log, wake: make(chan struct{}, 1), done: make(chan struct{})}
}

func (ex *execution) poke() {
	select {
	case ex.wake <- struct{}{}:
	default:
	}
}

// take queues the outbox entries of rec not handed over yet. A progress entry
// replaces a queued progress entry: only the newest progress matters.
func (ex *execution) take(rec *executor.Record) {
	ex.mu.Lock()
	for _, t := range rec.State.Outbox {
		if t.Seq <= ex.handed {
			continue
		}
		ex.handed = t.Seq
		if n := len(ex.pending); t.Progress && n > 0 && ex.pending[n-1].Progress {
			ex.pending[n-1] = t
			continue
		}
		ex.pending = append(ex.pending, t)
	}
	ex.mu.Unlock()
	ex.poke()
}

// repushLast queues the last pushed transition again, so a new warning reaches
// git without waiting for the next step.
func (ex *execution) repushLast() {
	ex.mu.Lock()
	if ex.last != nil && len(ex.pending) == 0 && !ex.closed {
		ex.pending = append(ex.pending, *ex.last)
	}
	ex.mu.Unlock()
	ex.poke()
}

func (ex *execution) close() {
	ex.mu.Lock()
	ex.closed = true
	ex.mu.Unlock()
	ex.poke()
}

// next returns the oldest queued transition; ok is false when the queue is empty,
// and finished is true when it is empty and closed.
func (ex *execution) next() (t executor.Transition, ok, finished bool) {
	ex.mu.Lock()
	defer ex.mu.Unlock()
	if len(ex.pending) == 0 {
		return t, false, ex.closed
	}
	return ex.pending[0], true, false
}

func (ex *execution) pushed(t executor.Transition) {
	ex.mu.Lock()
	if len(ex.pending) > 0 && ex.pending[0].Seq == t.Seq {
		ex.pending = ex.pending[1:]
	}
	ex.last = &t
	ex.mu.Unlock()
}

func (ex *execution) queued() int {
	ex.mu.Lock()
	defer ex.mu.Unlock()
	return len(ex.pending)
}

// offer is the executor's outbox hook.
func (r *Reconciler) offer(rec *executor.Record) {
	r.mu.Lock()
	ex := r.running[rec.Plan.Metadata.Name]
	r.mu.Unlock()
	if ex != nil {
		ex.take(rec)
	}
}

// launch drives rec in the background unless this process already does.
func (r *Reconciler) launch(ctx context.Context, rec *executor.Record, fresh bool) {
	id := rec.Plan.Metadata.Name
	r.mu.Lock()
	if r.running[id] != nil {
		r.mu.Unlock()
		return
	}
	ex := newExecution(rec, r.log.With("plan", id))
	r.running[id] = ex
	r.mu.Unlock()
	r.metrics.running.Inc()
	r.wg.Go(func() {
		defer func() {
			r.mu.Lock()
			delete(r.running, id)
			r.mu.Unlock()
			r.metrics.running.Dec()
		}()
		r.drive(ctx, ex, fresh)
	})
}

// drive runs a record to its end: its outbox first — before any change, the
// Running status must be in git (invariant 4) — then the executor unless the
// plan is final, with a pusher committing its transitions meanwhile; the record
// goes once its final status is in git.
func (r *Reconciler) drive(ctx context.Context, ex *execution, fresh bool) {
	rec, log := ex.rec, ex.log
	if !rec.State.Phase.Terminal() && !executor.Started(rec) {
		if err := r.pushAll(ctx, ex); err != nil {
			r.notStarted(ctx, ex, fresh, err)
			return
		}
	}
	go r.pushLoop(ctx, ex)
	ex.take(rec)
	if !rec.State.Phase.Terminal() {
		err := r.exec.Run(ctx, rec)
		ex.take(rec)
		if err != nil {
			log.Error("executing the plan", "error", err)
			if errors.Is(err, executor.ErrDeposed) {
				// Another controller holds the record now: it pushes the outbox.
				ex.close()
				<-ex.done
				return
			}
		}
	}
	ex.close()
	<-ex.done
	if ex.err != nil {
		log.Warn("status outbox not in git: the record keeps it for the next pass", "error", ex.err)
		return
	}
	if err := r.retry(ctx, "flushing held progress", func() error { return r.store.Flush(ctx) }); err != nil {
		log.Warn("held progress not in git: the record keeps it for the next pass", "error", err)
		return
	}
	if n := len(rec.State.Outbox); n > 0 {
		executor.Ack(rec, rec.State.Outbox[n-1].Seq)
		if err := r.exec.Records().Save(ctx, rec); err != nil {
			log.Error("acknowledging the outbox", "error", err)
			return
		}
	}
	if rec.State.Phase.Terminal() {
		if err := r.exec.Records().Delete(ctx, rec); err != nil {
			log.Error("removing the execution record", "error", err)
			return
		}
		r.mu.Lock()
		delete(r.cancels, ex.id)
		delete(r.warnings, ex.id)
		r.mu.Unlock()
		log.Info("final status in git; execution record removed", "phase", rec.State.Phase)
	}
}

// notStarted handles a plan whose outbox could not reach git before its first
// change: a permanent refusal gives a fresh claim back (nothing was changed, and
// the Event says why); an unreachable remote leaves the claim for the next pass.
func (r *Reconciler) notStarted(ctx context.Context, ex *execution, fresh bool, err error) {
	rec, log := ex.rec, ex.log
	if errors.Is(err, gitops.ErrPushRefused) || errors.Is(err, gitops.ErrAuth) {
		msg := fmt.Sprintf("plan %s not started: the status branch %s refused the Running status commit: %v", ex.id, r.store.StatusBranch(), err)
		log.Error(msg)
		r.event(rec, corev1.EventTypeWarning, "StatusPushRefused", msg)
		if derr := r.exec.Records().Delete(ctx, rec); derr != nil {
			log.Error("removing the unused claim", "error", derr)
		}
		return
	}
	log.Warn("Running status not in git yet: the plan does not start", "error", err, "claimedNow", fresh)
	r.event(rec, corev1.EventTypeWarning, "StatusPushFailed", fmt.Sprintf("plan %s waits to start: %v", ex.id, err))
}

// pushAll commits the record's whole outbox now, once (the repository retries
// non-fast-forwards itself).
func (r *Reconciler) pushAll(ctx context.Context, ex *execution) error {
	ex.take(ex.rec)
	for {
		t, ok, _ := ex.next()
		if !ok {
			return nil
		}
		if err := r.append(ctx, ex.id, t); err != nil {
			return err
		}
		ex.pushed(t)
	}
}

// pushLoop commits queued transitions in order until the queue is closed and
// empty, backing off while the remote fails. It gives up only when ctx ends.
func (r *Reconciler) pushLoop(ctx context.Context, ex *execution) {
	defer close(ex.done)
	backoff := r.opts.PushRetry
	for {
		r.metrics.outbox.WithLabelValues(ex.id).Set(float64(ex.queued()))
		t, ok, finished := ex.next()
		if finished {
			r.metrics.outbox.DeleteLabelValues(ex.id)
			return
		}
		if !ok {
			select {
			case <-ex.wake:
			case <-ctx.Done():
				ex.err = ctx.Err()
				return
			}
			continue
		}
		if err := r.append(ctx, ex.id, t); err != nil {
			ex.log.Warn("status push failed; the plan goes on and the outbox keeps it", "phase", t.Status.Phase, "seq", t.Seq, "retryIn", backoff, "error", err)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				ex.err = ctx.Err()
				return
			}
			backoff = min(2*backoff, r.opts.MaxPushRetry)
			continue
		}
		backoff = r.opts.PushRetry
		ex.pushed(t)
	}
}

// append commits one transition as the plan's status.
func (r *Reconciler) append(ctx context.Context, id string, t executor.Transition) error {
	st := &api.RebalanceStatus{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: api.KindStatus},
		Metadata: api.ObjectMeta{Name: id}, Status: t.Status}
	st.Status.ClusterUID = r.opts.ClusterUID
	r.mu.Lock()
	st.Status.Warnings = append([]string(nil), r.warnings[id]...)
	r.mu.Unlock()
	if _, err := r.store.Append(ctx, st); err != nil {
		r.metrics.gitErrors.WithLabelValues("push").Inc()
		return fmt.Errorf("pushing status %s (seq %d) of %s: %w", t.Status.Phase, t.Seq, id, err)
	}
	r.metrics.lastSync.SetToCurrentTime()
	return nil
}

// retry runs f until it succeeds or ctx ends, backing off between attempts.
func (r *Reconciler) retry(ctx context.Context, what string, f func() error) error {
	backoff := r.opts.PushRetry
	for {
		err := f()
		if err == nil {
			return nil
		}
		r.metrics.gitErrors.WithLabelValues("push").Inc()
		r.log.Warn(what+" failed; retrying", "retryIn", backoff, "error", err)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (last error: %v)", what, ctx.Err(), err)
		}
		backoff = min(2*backoff, r.opts.MaxPushRetry)
	}
}
