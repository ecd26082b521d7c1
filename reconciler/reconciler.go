// Package reconciler is the loop that runs merged plans: each pass fetches the
// GitOps repository, walks the plans on the watched branch's first-parent history
// oldest first, re-validates each against the cluster and policy of now, claims
// and runs those that may run, and writes every status transition back to git
// through the StatusStore (DESIGN.md invariants 1–4).
package reconciler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"

	api "github.com/rebalancer-dev/rebalancer/api/v1alpha1"
	"github.com/rebalancer-dev/rebalancer/executor"
	"github.com/rebalancer-dev/rebalancer/gitops"
	"github.com/rebalancer-dev/rebalancer/policies"
)

// Options are the controller's hard limits and identity.
type Options struct {
	// ClusterName must equal spec.cluster of every plan run here.
	ClusterName string
	// MaxConcurrentPlans bounds the plans running at once in the cluster (default 1).
	MaxConcurrentPlans int
	// Namespace is where events about plans are recorded (the controller's).
	Namespace string
}

// Reconciler runs merged plans. Required dependencies come through New, optional
// ones as options.
type Reconciler struct {
	repo   *gitops.Repo
	store  *gitops.GitStatusStore
	exec   *executor.Executor
	reval  executor.Revalidator
	opts   Options
	clock  clock.PassiveClock
	log    *slog.Logger
	events record.EventRecorder

	// pushed is, per plan, the highest outbox sequence number handed to the
	// StatusStore during the current run (held progress included).
	mu     sync.Mutex
	pushed map[string]int
	recs   map[string]*executor.Record
}

// Option configures a Reconciler.
type Option func(*Reconciler)

// WithClock injects the clock that decides expiry and stamps statuses.
func WithClock(c clock.PassiveClock) Option { return func(r *Reconciler) { r.clock = c } }

// WithLogger sets the logger.
func WithLogger(l *slog.Logger) Option { return func(r *Reconciler) { r.log = l } }

// WithEvents records Events about plans (a refused status push, a rejection).
func WithEvents(e record.EventRecorder) Option { return func(r *Reconciler) { r.events = e } }

// New returns a reconciler over a repository, its StatusStore and an executor;
// reval re-checks a plan before it is claimed (the executor re-checks it again
// before each batch).
func New(repo *gitops.Repo, store *gitops.GitStatusStore, exec *executor.Executor, reval executor.Revalidator, opts Options, options ...Option) *Reconciler {
	if opts.MaxConcurrentPlans <= 0 {
		opts.MaxConcurrentPlans = 1
	}
	if opts.Namespace == "" {
		opts.Namespace = "rebalancer-system"
	}
	r := &Reconciler{repo: repo, store: store, exec: exec, reval: reval, opts: opts, clock: clock.RealClock{},
		log: slog.New(slog.DiscardHandler), events: &record.FakeRecorder{}, pushed: map[string]int{}, recs: map[string]*executor.Record{}}
	for _, o := range options {
		o(r)
	}
	return r
}

// WatchedPolicies returns the policies on the watched branch as last fetched: the
// PolicySource of the revalidator the reconciler and the executor share.
func WatchedPolicies(repo *gitops.Repo, branch string, layout gitops.Layout) executor.PolicySource {
	return func(context.Context) (*policies.Policies, error) {
		head, err := repo.Head(branch)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", branch, err)
		}
		tree, err := repo.TreeFS(head)
		if err != nil {
			return nil, fmt.Errorf("reading the tree of %s: %w", branch, err)
		}
		ps, err := policies.LoadPolicies(tree, layout.RootDir())
		if err != nil {
			return nil, fmt.Errorf("loading policies at %s: %w", head, err)
		}
		return policies.NewPolicies(ps)
	}
}

// ProgressFunc is to be passed to the executor (executor.WithProgress): after
// every step it pushes the record's new outbox entries, so phase changes and
// progress reach git while the plan runs, not only at its end.
func (r *Reconciler) ProgressFunc() func(executor.Progress) {
	return func(p executor.Progress) {
		r.mu.Lock()
		rec := r.recs[p.Plan]
		r.mu.Unlock()
		if rec == nil {
			return
		}
		// Called on the executor's goroutine between steps: rec is not changing.
		ctx, cancel := context.WithTimeout(context.Background(), 2*r.repo.Timeout())
		defer cancel()
		if err := r.push(ctx, rec); err != nil {
			r.log.Warn("status push failed; the outbox keeps it for later", "plan", p.Plan, "error", err)
		}
	}
}

// Pass runs one reconciliation: resume the execution records found, fetch, then
// start the plans that may start. It returns when every plan it ran has ended or
// frozen. Errors about one plan are logged and do not stop the others; the error
// returned is the first that kept the pass from looking at all plans.
func (r *Reconciler) Pass(ctx context.Context) error {
	recs, err := r.exec.Records().List(ctx)
	if err != nil {
		return err
	}
	// Resume first (a crashed or deposed controller's plans), before anything new.
	busyGroups := map[string]bool{}
	active := 0
	claimed := map[string]bool{}
	var wg sync.WaitGroup
	for _, rec := range recs {
		claimed[rec.Plan.Metadata.Name] = true
		if !rec.State.Phase.Terminal() {
			busyGroups[groupKey(rec.Plan)] = true
			active++
		}
		wg.Go(func() { r.drive(ctx, rec) })
	}
	wg.Wait()

	fetchCtx, cancel := context.WithTimeout(ctx, 2*r.repo.Timeout())
	err = r.repo.Fetch(fetchCtx)
	cancel()
	if err != nil {
		return fmt.Errorf("fetching: %w", err)
	}
	ix, err := r.store.Plans(ctx)
	if err != nil {
		return fmt.Errorf("listing plans: %w", err)
	}
	for _, p := range ix.Plans {
		if p.Finished() || claimed[p.ID] {
			continue
		}
		log := r.log.With("plan", p.ID)
		if p.Plan == nil {
			r.finishEarly(ctx, p, nil, api.PhaseRejected, fmt.Sprintf("the plan file %s does not validate: %v", p.File, p.Err), log)
			continue
		}
		if p.Status != nil && p.Status.Status.Phase != api.PhaseWaiting && p.Status.Status.Phase != api.PhasePending {
			// Running, Frozen...: a status without an execution record. Only a person
			// removing the record gets here; never start it twice.
			log.Warn("plan has a non-terminal status but no execution record: left alone", "phase", p.Status.Status.Phase)
			continue
		}
		if p.Plan.Spec.Cluster != r.opts.ClusterName {
			r.finishEarly(ctx, p, p.Plan, api.PhaseRejected,
				fmt.Sprintf("the plan is for cluster %q but this controller runs cluster %q (--cluster-name)", p.Plan.Spec.Cluster, r.opts.ClusterName), log)
			continue
		}
		now := r.clock.Now()
		if !now.Before(p.Plan.Spec.NotAfter.Time) {
			r.finishEarly(ctx, p, p.Plan, api.PhaseExpired, fmt.Sprintf("notAfter %s passed before the plan could start", p.Plan.Spec.NotAfter.Format(time.RFC3339)), log)
			continue
		}
		if busyGroups[groupKey(p.Plan)] {
			log.Info("node group has a running plan: later")
			continue
		}
		if active >= r.opts.MaxConcurrentPlans {
			log.Info("--max-concurrent-plans reached: later", "max", r.opts.MaxConcurrentPlans)
			continue
		}
		d, err := r.reval.Revalidate(ctx, p.Plan, policies.RevalidateInput{Now: now, EstimatedDuration: p.Plan.Spec.EstimatedDuration.Duration})
		if err != nil {
			log.Warn("re-validation failed: next pass", "error", err)
			continue
		}
		switch d.Verdict {
		case policies.Reject:
			r.finishEarly(ctx, p, p.Plan, api.PhaseRejected, "re-validation failed: "+strings.Join(d.Reasons, "; "), log)
			continue
		case policies.Expire:
			r.finishEarly(ctx, p, p.Plan, api.PhaseExpired, strings.Join(d.Reasons, "; "), log)
			continue
		case policies.Wait:
			r.wait(ctx, p, d, log)
			continue
		}
		rec, err := r.exec.Claim(ctx, p.Plan, p.Origin.LastChanged.String())
		if errors.Is(err, executor.ErrAlreadyClaimed) {
			log.Info("plan already claimed by another executor")
			continue
		}
		if err != nil {
			log.Error("claiming the plan", "error", err)
			continue
		}
		busyGroups[groupKey(p.Plan)] = true
		active++
		log.Info("claimed; pushing the Running status before the first change")
		wg.Go(func() { r.start(ctx, rec, log) })
	}
	wg.Wait()
	return nil
}

func groupKey(p *api.RebalancePlan) string {
	return p.Spec.Cluster + "/" + p.Spec.Policy + "/" + p.Spec.NodeGroup
}

// start pushes a freshly claimed plan's Running status and runs it only once that
// is in git (DESIGN.md invariant 4).
func (r *Reconciler) start(ctx context.Context, rec *executor.Record, log *slog.Logger) {
	if err := r.push(ctx, rec); err != nil {
		id := rec.Plan.Metadata.Name
		if errors.Is(err, gitops.ErrPushRefused) || errors.Is(err, gitops.ErrAuth) {
			// Nothing was changed: give the claim back, so the plan starts once the
			// status branch accepts our pushes.
			msg := fmt.Sprintf("plan %s not started: the status branch %s refused the Running status commit: %v", id, r.store.StatusBranch(), err)
			log.Error(msg)
			r.event(rec, corev1.EventTypeWarning, "StatusPushRefused", msg)
			if derr := r.exec.Records().Delete(ctx, rec); derr != nil {
				log.Error("removing the unused claim", "error", derr)
			}
			return
		}
		// Unreachable: the record keeps the claim and its outbox; the next pass
		// pushes the Running status and only then runs the plan.
		log.Warn("Running status not in git yet: the plan does not start", "error", err)
		r.event(rec, corev1.EventTypeWarning, "StatusPushFailed", fmt.Sprintf("plan %s waits to start: %v", id, err))
		return
	}
	r.drive(ctx, rec)
}

// drive resumes a record: its outbox first, then the executor unless the plan is
// final or frozen, then the outbox again; the record goes once its final status
// is in git.
func (r *Reconciler) drive(ctx context.Context, rec *executor.Record) {
	id := rec.Plan.Metadata.Name
	log := r.log.With("plan", id)
	if err := r.drain(ctx, rec); err != nil {
		log.Warn("status outbox not drained: the plan waits for git", "error", err)
		return
	}
	if !rec.State.Phase.Terminal() && rec.State.Phase != api.PhaseFrozen {
		r.mu.Lock()
		r.recs[id] = rec
		r.mu.Unlock()
		err := r.exec.Run(ctx, rec)
		r.mu.Lock()
		delete(r.recs, id)
		r.mu.Unlock()
		if err != nil {
			log.Error("executing the plan", "error", err)
			if errors.Is(err, executor.ErrDeposed) {
				return
			}
		}
	}
	if err := r.drain(ctx, rec); err != nil {
		log.Warn("status outbox not drained: the record keeps it for the next pass", "error", err)
		return
	}
	if rec.State.Phase.Terminal() {
		if err := r.exec.Records().Delete(ctx, rec); err != nil {
			log.Error("removing the execution record", "error", err)
			return
		}
		log.Info("final status in git; execution record removed", "phase", rec.State.Phase)
	}
}

// push hands the outbox entries not yet handed over to the StatusStore, in order.
// It does not write the record (the executor may be using it).
func (r *Reconciler) push(ctx context.Context, rec *executor.Record) error {
	id := rec.Plan.Metadata.Name
	for _, t := range rec.State.Outbox {
		r.mu.Lock()
		done := r.pushed[id] >= t.Seq
		r.mu.Unlock()
		if done {
			continue
		}
		st := &api.RebalanceStatus{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: api.KindStatus},
			Metadata: api.ObjectMeta{Name: id}, Status: t.Status}
		if _, err := r.store.Append(ctx, st); err != nil {
			return fmt.Errorf("pushing status %s (seq %d) of %s: %w", t.Status.Phase, t.Seq, id, err)
		}
		r.mu.Lock()
		r.pushed[id] = t.Seq
		r.mu.Unlock()
	}
	return nil
}

// drain pushes the whole outbox, flushes held progress, and acknowledges what is
// now in git in the record.
func (r *Reconciler) drain(ctx context.Context, rec *executor.Record) error {
	if len(rec.State.Outbox) == 0 {
		return nil
	}
	if err := r.push(ctx, rec); err != nil {
		return err
	}
	if err := r.store.Flush(ctx); err != nil {
		return fmt.Errorf("flushing held progress: %w", err)
	}
	last := rec.State.Outbox[len(rec.State.Outbox)-1].Seq
	executor.Ack(rec, last)
	if err := r.exec.Records().Save(ctx, rec); err != nil {
		return fmt.Errorf("acknowledging the outbox up to %d: %w", last, err)
	}
	r.mu.Lock()
	delete(r.pushed, rec.Plan.Metadata.Name)
	r.mu.Unlock()
	return nil
}

// finishEarly commits a terminal status for a plan that never started.
func (r *Reconciler) finishEarly(ctx context.Context, p *gitops.PlanRecord, plan *api.RebalancePlan, phase api.Phase, msg string, log *slog.Logger) {
	st := r.baseStatus(p, plan, phase)
	st.Status.FinishedAt = api.NewTime(r.clock.Now().UTC().Truncate(time.Second))
	st.Status.Message = msg
	if _, err := r.store.Append(ctx, st); err != nil {
		log.Error("committing the status", "phase", phase, "error", err)
		return
	}
	log.Warn("plan will not run", "phase", phase, "reason", msg)
}

// wait commits a Waiting status, once per cause.
func (r *Reconciler) wait(ctx context.Context, p *gitops.PlanRecord, d policies.Decision, log *slog.Logger) {
	why := strings.Join(d.Reasons, "; ")
	if p.Status != nil && p.Status.Status.Phase == api.PhaseWaiting && p.Status.Status.WaitingFor == why {
		return
	}
	st := r.baseStatus(p, p.Plan, api.PhaseWaiting)
	st.Status.WaitingFor = why
	if !d.WaitUntil.IsZero() {
		st.Status.NextAttempt = api.NewTime(d.WaitUntil)
	}
	if _, err := r.store.Append(ctx, st); err != nil {
		log.Error("committing the Waiting status", "error", err)
		return
	}
	log.Info("plan waits", "reason", why)
}

func (r *Reconciler) baseStatus(p *gitops.PlanRecord, plan *api.RebalancePlan, phase api.Phase) *api.RebalanceStatus {
	st := &api.RebalanceStatus{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: api.KindStatus},
		Metadata: api.ObjectMeta{Name: p.ID},
		Status: api.PlanStatus{Phase: phase, Cluster: r.opts.ClusterName, PlanCommit: p.Origin.LastChanged.String(),
			UpdatedAt: api.NewTime(r.clock.Now().UTC().Truncate(time.Second))}}
	if plan != nil {
		st.Status.Cluster, st.Status.PlanDigest = plan.Spec.Cluster, plan.Spec.ContentDigest
	}
	return st
}

func (r *Reconciler) event(rec *executor.Record, kind, reason, msg string) {
	ref := &corev1.ObjectReference{Kind: "ConfigMap", APIVersion: "v1", Namespace: r.opts.Namespace, Name: rec.Name()}
	r.events.Event(ref, kind, reason, msg)
}
