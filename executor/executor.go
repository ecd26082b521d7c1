// Package executor runs merged plans: provision, wait Ready, cordon (our taint),
// drain through the Eviction API within PodDisruptionBudgets, terminate, verify —
// for the rolling, surge and blue-green strategies — and rolls back the pairs not
// yet finished when something goes wrong. Every action is preceded by an intent in
// the plan's execution record, so a fresh executor resumes a crashed one from any
// point without acting twice.
package executor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"

	api "github.com/rebalancer-dev/rebalancer/api/v1alpha1"
	"github.com/rebalancer-dev/rebalancer/cloud"
	"github.com/rebalancer-dev/rebalancer/policies"
)

// Annotations and labels the executor puts on nodes. They are discovery hints for
// people and tools; the record is the truth.
const (
	AnnotationPlan = "rebalancer.dev/plan"
	AnnotationRole = "rebalancer.dev/role"
	// StopAnnotation on the controller's ConfigMap freezes every running plan
	// before its next change (DESIGN.md invariant 8).
	StopAnnotation = "rebalancer.dev/stop"
)

// Revalidator re-checks a plan against the world of now (policies.Revalidate over
// a fresh snapshot, the policy on the watched branch and the hard limits).
type Revalidator interface {
	Revalidate(ctx context.Context, plan *api.RebalancePlan, in policies.RevalidateInput) (policies.Decision, error)
}

// Options tune an executor.
type Options struct {
	// Namespace of the controller: records and the stop-switch ConfigMap live there.
	Namespace string
	// StopConfigMap is the ConfigMap whose StopAnnotation freezes plans.
	StopConfigMap string
	// Identity names this executor in claims (the pod name).
	Identity string
	// WaitReadyTimeout bounds how long a replacement may take to turn Ready.
	WaitReadyTimeout time.Duration
	// ProvisionTimeout bounds how long a non-idempotent provider's new instance may
	// take to appear.
	ProvisionTimeout time.Duration
	// VerifyTimeout bounds how long workloads may take to recover after a drain.
	VerifyTimeout time.Duration
	// PollInterval is how often waits look again.
	PollInterval time.Duration
	// WaitRetry is how long a plan told to wait (a PDB at zero, a closed window)
	// sleeps before the next look.
	WaitRetry time.Duration
}

func (o *Options) defaults() {
	if o.Namespace == "" {
		o.Namespace = "rebalancer-system"
	}
	if o.StopConfigMap == "" {
		o.StopConfigMap = "rebalancer"
	}
	if o.Identity == "" {
		o.Identity = "rebalancer-" + uuid.NewString()[:8]
	}
	if o.WaitReadyTimeout == 0 {
		o.WaitReadyTimeout = 10 * time.Minute
	}
	if o.ProvisionTimeout == 0 {
		o.ProvisionTimeout = 15 * time.Minute
	}
	if o.VerifyTimeout == 0 {
		o.VerifyTimeout = 5 * time.Minute
	}
	if o.PollInterval == 0 {
		o.PollInterval = 500 * time.Millisecond
	}
	if o.WaitRetry == 0 {
		o.WaitRetry = 30 * time.Second
	}
}

// Executor runs plans. Required dependencies come through New, optional ones as
// options.
type Executor struct {
	client   kubernetes.Interface
	provider cloud.Provider
	records  *RecordStore
	reval    Revalidator
	opts     Options
	clock    clock.WithTicker
	log      *slog.Logger
	metrics  *Metrics
	events   record.EventRecorder
	progress func(Progress)
	cancel   func(plan string) api.Cancel
	outbox   func(*Record)
}

// Option configures an Executor.
type Option func(*Executor)

// WithClock injects the clock every wait and backoff uses.
func WithClock(c clock.WithTicker) Option { return func(e *Executor) { e.clock = c } }

// WithLogger sets the logger; every line carries the plan ID and node.
func WithLogger(l *slog.Logger) Option { return func(e *Executor) { e.log = l } }

// WithMetrics records the seed's metrics.
func WithMetrics(m *Metrics) Option { return func(e *Executor) { e.metrics = m } }

// WithEvents emits Events on nodes.
func WithEvents(r record.EventRecorder) Option { return func(e *Executor) { e.events = r } }

// WithProgress calls f after every step, for the one-line-per-step progress display.
func WithProgress(f func(Progress)) Option { return func(e *Executor) { e.progress = f } }

// SetCancelSource gives the executor what people asked of each plan in git
// (spec.cancel; a deleted plan file reads as stop). f is called before every
// step, so it must answer from memory. Set it before the first Run.
func (e *Executor) SetCancelSource(f func(plan string) api.Cancel) { e.cancel = f }

// SetOutboxHook registers f, called on the executor's goroutine after every save
// of a record whose outbox holds entries, so the reconciler can push them while
// the plan goes on. Set it before the first Run.
func (e *Executor) SetOutboxHook(f func(*Record)) { e.outbox = f }

// Progress is one finished step.
type Progress struct {
	Plan, Node, NewNode string
	Action              api.Action
	Phase               api.StepPhase
	Elapsed             time.Duration
	Rollback            bool
}

// New returns an executor.
func New(client kubernetes.Interface, provider cloud.Provider, reval Revalidator, opts Options, options ...Option) *Executor {
	opts.defaults()
	e := &Executor{client: client, provider: provider, reval: reval, opts: opts,
		records: NewRecordStore(client, opts.Namespace), clock: clock.RealClock{},
		log: slog.New(slog.DiscardHandler), events: &record.FakeRecorder{}}
	for _, o := range options {
		o(e)
	}
	if e.metrics == nil {
		e.metrics = NewMetrics(nil)
	}
	return e
}

// Records returns the executor's record store.
func (e *Executor) Records() *RecordStore { return e.records }

// Claim creates the plan's execution record with phase Running and the Running
// transition in its outbox: the reconciler pushes that to git before calling Run,
// so no change happens without its record (DESIGN.md invariant 4).
func (e *Executor) Claim(ctx context.Context, plan *api.RebalancePlan, planCommit string) (*Record, error) {
	st := &State{Holder: e.opts.Identity, ClaimID: uuid.NewString(), Phase: api.PhaseRunning,
		PlanCommit: planCommit, StartedAt: e.clock.Now().UTC().Truncate(time.Second)}
	for _, s := range plan.Spec.Steps {
		st.Steps = append(st.Steps, api.StepStatus{Step: s, Phase: api.StepPending})
	}
	for _, c := range plan.Spec.Candidates {
		st.Pairs = append(st.Pairs, Pair{Old: c.Node, OldProviderID: c.ProviderID, Offering: c.Replacement.Name,
			Datacenter: c.Replacement.Datacenter, Token: plan.Metadata.Name + "/" + c.Node, Savings: c.MonthlySavings})
	}
	rec := &Record{Plan: plan, State: st}
	e.enqueue(rec, false)
	return e.records.Claim(ctx, plan, st)
}

// ErrStopped: Run returned because the plan froze or must wait; the record says why.
var ErrStopped = errors.New("plan stopped")

// Run executes, or resumes, the plan in rec until it reaches a terminal phase or
// Frozen. It returns nil when the plan finished (whatever the phase), ErrDeposed
// when another executor took the record over, and ctx's error when cancelled.
func (e *Executor) Run(ctx context.Context, rec *Record) error {
	log := e.log.With("plan", rec.Plan.Metadata.Name)
	// This executor now answers for the plan: its phase gauge says where it is,
	// Running included (the stuck-plan alert reads it).
	e.metrics.phase(rec.Plan, rec.State.Phase)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if acted, err := e.control(ctx, rec, log); err != nil {
			return err
		} else if acted {
			continue
		}
		st := rec.State
		switch st.Phase {
		case api.PhaseRunning:
			err := e.runForward(ctx, rec, log)
			if err == nil {
				continue
			}
			var f *failure
			if errors.As(err, &f) {
				log.Warn("plan failed, rolling back", "trigger", f.trigger, "reason", f.reason)
				if err := e.beginRollback(ctx, rec, f); err != nil {
					return err
				}
				continue
			}
			return err
		case api.PhaseFailed, api.PhaseRollingBack:
			if err := e.runRollback(ctx, rec, log); err != nil {
				return err
			}
		default:
			// Succeeded, RolledBack, RollbackFailed, Frozen, Cancelled...: nothing to do.
			return nil
		}
	}
}

// failure is a rollback trigger raised by a step.
type failure struct {
	trigger api.RollbackTrigger
	reason  string
	freeze  bool
}

func (f *failure) Error() string { return fmt.Sprintf("%s: %s", f.trigger, f.reason) }

func fail(trigger api.RollbackTrigger, format string, args ...any) error {
	return &failure{trigger: trigger, reason: fmt.Sprintf(format, args...)}
}

// save writes the record; a conflict ends this executor's work on the plan.
func (e *Executor) save(ctx context.Context, rec *Record) error {
	if err := e.records.Save(ctx, rec); err != nil {
		return err
	}
	if e.outbox != nil && len(rec.State.Outbox) > 0 {
		e.outbox(rec)
	}
	return nil
}

// enqueue appends the current status to the outbox. A progress entry replaces a
// trailing progress entry not yet pushed, so the record stays small; phase changes
// are always kept.
func (e *Executor) enqueue(rec *Record, progress bool) {
	st := rec.State
	st.Seq++
	t := Transition{Seq: st.Seq, Progress: progress, Status: e.status(rec)}
	if progress && len(st.Outbox) > 0 && st.Outbox[len(st.Outbox)-1].Progress {
		st.Outbox[len(st.Outbox)-1] = t
		return
	}
	st.Outbox = append(st.Outbox, t)
}

// Ack removes transitions up to seq from the outbox once they are in git.
func Ack(rec *Record, seq int) {
	out := rec.State.Outbox[:0]
	for _, t := range rec.State.Outbox {
		if t.Seq > seq {
			out = append(out, t)
		}
	}
	rec.State.Outbox = out
}

// Status renders the record as the RebalanceStatus written to git.
func (e *Executor) status(rec *Record) api.PlanStatus {
	st := rec.State
	ps := api.PlanStatus{Phase: st.Phase, Cluster: rec.Plan.Spec.Cluster, PlanCommit: st.PlanCommit,
		PlanDigest: rec.Plan.Spec.ContentDigest, StartedAt: api.NewTime(st.StartedAt), UpdatedAt: api.NewTime(e.clock.Now()),
		Steps: append([]api.StepStatus(nil), st.Steps...), SkippedCandidates: st.Skipped, Message: st.Message}
	if !st.FinishedAt.IsZero() {
		ps.FinishedAt = api.NewTime(st.FinishedAt)
	}
	saved := 0.0
	for _, p := range st.Pairs {
		if p.NewNode != "" {
			ps.ProvisionedNodes = append(ps.ProvisionedNodes, p.NewNode)
		}
		if p.Cordoned || p.Done {
			ps.CordonedNodes = append(ps.CordonedNodes, p.Old)
		}
		if p.Done {
			saved += p.Savings
		}
	}
	ps.RealizedMonthlySavings = float64(int(saved*100+0.5)) / 100
	if st.Rollback != nil {
		ps.Rollback = &api.Rollback{Trigger: st.Rollback.Trigger, Reason: st.Rollback.Reason, Steps: st.Rollback.Steps}
	}
	return ps
}

// finish moves the plan to a final (or Frozen) phase and records it.
func (e *Executor) finish(ctx context.Context, rec *Record, phase api.Phase, message string) error {
	rec.State.Phase = phase
	rec.State.Message = message
	if phase.Terminal() {
		rec.State.FinishedAt = e.clock.Now().UTC().Truncate(time.Second)
	}
	e.enqueue(rec, false)
	if err := e.save(ctx, rec); err != nil {
		return err
	}
	e.metrics.phase(rec.Plan, phase)
	return nil
}
