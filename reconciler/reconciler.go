// Package reconciler is the loop that runs merged plans: each pass fetches the
// GitOps repository, walks the plans on the watched branch's first-parent history
// oldest first, re-validates each against the cluster and policy of now, claims
// and runs those that may run, and writes every status transition back to git
// through the StatusStore (DESIGN.md invariants 1–4). Plans run in the
// background: passes go on while they do, so a cancel merged to git reaches a
// running plan before its next step.
package reconciler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
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
	// ClusterUID is the kube-system namespace's UID: recorded in every status, and
	// a status root holding another UID is refused.
	ClusterUID string
	// MaxConcurrentPlans bounds the plans running at once in the cluster (default 1).
	MaxConcurrentPlans int
	// Namespace is where events about plans are recorded (the controller's).
	Namespace string
	// RequireSignedCommits: a plan runs only when the commits its authority rests
	// on are signed by a key in Keyring (gitops.Repo.VerifyPlan).
	RequireSignedCommits bool
	Keyring              *gitops.Keyring
	// ArchiveAfter takes a finished plan's files out of the tree this long after
	// it finished (0: never); git history keeps them. See archive.
	ArchiveAfter time.Duration
	// PushRetry and MaxPushRetry bound the backoff of status pushes while the
	// remote is unreachable (defaults 1s and 30s).
	PushRetry, MaxPushRetry time.Duration
}

// Triggers of a pass.
const (
	TriggerPoll    = "poll"
	TriggerWebhook = "webhook"
	TriggerStart   = "start"
)

// Reconciler runs merged plans. Required dependencies come through New, optional
// ones as options.
type Reconciler struct {
	repo    *gitops.Repo
	store   *gitops.GitStatusStore
	exec    *executor.Executor
	reval   executor.Revalidator
	opts    Options
	clock   clock.PassiveClock
	log     *slog.Logger
	events  record.EventRecorder
	metrics *Metrics

	// passMu makes passes one at a time, whatever triggered them.
	passMu   sync.Mutex
	lastSeen plumbing.Hash // the watched branch's tip at the last full pass
	trigger  chan string

	mu       sync.Mutex
	running  map[string]*execution // plans this process drives now
	cancels  map[string]api.Cancel // what git asks of each recorded plan
	warnings map[string][]string   // per plan, added to every status pushed
	wg       sync.WaitGroup
}

// Option configures a Reconciler.
type Option func(*Reconciler)

// WithClock injects the clock that decides expiry and stamps statuses.
func WithClock(c clock.PassiveClock) Option { return func(r *Reconciler) { r.clock = c } }

// WithLogger sets the logger.
func WithLogger(l *slog.Logger) Option { return func(r *Reconciler) { r.log = l } }

// WithEvents records Events about plans (a refused status push, a rejection).
func WithEvents(e record.EventRecorder) Option { return func(r *Reconciler) { r.events = e } }

// WithMetrics records git sync and pass metrics.
func WithMetrics(m *Metrics) Option { return func(r *Reconciler) { r.metrics = m } }

// New returns a reconciler over a repository, its StatusStore and an executor;
// reval re-checks a plan before it is claimed (the executor re-checks it again
// before each batch). New hooks itself into the executor: the executor reads
// spec.cancel from it and hands it every outbox entry as soon as it is saved.
func New(repo *gitops.Repo, store *gitops.GitStatusStore, exec *executor.Executor, reval executor.Revalidator, opts Options, options ...Option) *Reconciler {
	if opts.MaxConcurrentPlans <= 0 {
		opts.MaxConcurrentPlans = 1
	}
	if opts.Namespace == "" {
		opts.Namespace = "rebalancer-system"
	}
	if opts.PushRetry <= 0 {
		opts.PushRetry = time.Second
	}
	if opts.MaxPushRetry < opts.PushRetry {
		opts.MaxPushRetry = max(30*time.Second, opts.PushRetry)
	}
	r := &Reconciler{repo: repo, store: store, exec: exec, reval: reval, opts: opts, clock: clock.RealClock{},
		log: slog.New(slog.DiscardHandler), events: &record.FakeRecorder{}, trigger: make(chan string, 1),
		running: map[string]*execution{}, cancels: map[string]api.Cancel{}, warnings: map[string][]string{}}
	for _, o := range options {
		o(r)
	}
	if r.metrics == nil {
		r.metrics = NewMetrics(nil)
	}
	exec.SetCancelSource(r.cancelOf)
	exec.SetOutboxHook(r.offer)
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

// ProgressFunc is an optional executor progress callback (executor.WithProgress):
// it wakes the plan's status pusher at once after every step. The outbox hook New
// installs already hands every entry over; this only saves a little latency.
func (r *Reconciler) ProgressFunc() func(executor.Progress) {
	return func(p executor.Progress) {
		r.mu.Lock()
		ex := r.running[p.Plan]
		r.mu.Unlock()
		if ex != nil {
			ex.poke()
		}
	}
}

// Trigger asks for a pass as soon as the current one ends (the webhook's way in).
// Triggers coalesce: many pushes while a pass runs cause one more pass.
func (r *Reconciler) Trigger(reason string) {
	select {
	case r.trigger <- reason:
	default:
	}
}

// Run passes every interval and on every Trigger until ctx ends, then waits for
// the plans it runs to stop (they stop at ctx's end, their records intact).
func (r *Reconciler) Run(ctx context.Context, interval time.Duration) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	reason := TriggerStart
	for {
		if err := r.pass(ctx, reason); err != nil && ctx.Err() == nil {
			r.log.Error("pass failed; trying again next interval", "trigger", reason, "error", err)
		}
		select {
		case <-ctx.Done():
			r.Wait()
			return
		case <-ticker.C:
			reason = TriggerPoll
		case reason = <-r.trigger:
		}
	}
}

// Wait returns once every plan started by a pass has ended, frozen, or stopped
// because the pass's context ended.
func (r *Reconciler) Wait() { r.wg.Wait() }

// Pass runs one reconciliation: fetch; resume the execution records this process
// is not driving (a crashed or deposed controller's plans); then start the plans
// that may start. Plans run in the background (Wait waits for them). Errors about
// one plan are logged and do not stop the others; the error returned is the first
// that kept the pass from looking at all plans.
func (r *Reconciler) Pass(ctx context.Context) error { return r.pass(ctx, TriggerPoll) }

// PassAndWait is Pass, then Wait: what --once does.
func (r *Reconciler) PassAndWait(ctx context.Context) error {
	err := r.pass(ctx, TriggerPoll)
	r.Wait()
	return err
}

func (r *Reconciler) pass(ctx context.Context, trigger string) (err error) {
	r.passMu.Lock()
	defer r.passMu.Unlock()
	result := "ok"
	defer func() {
		if err != nil {
			result = "error"
		}
		r.metrics.passes.WithLabelValues(trigger, result).Inc()
	}()

	recs, err := r.exec.Records().List(ctx)
	if err != nil {
		return fmt.Errorf("listing execution records: %w", err)
	}
	fetchCtx, cancel := context.WithTimeout(ctx, 2*r.repo.Timeout())
	err = r.repo.Fetch(fetchCtx)
	cancel()
	if err != nil {
		r.metrics.gitErrors.WithLabelValues("fetch").Inc()
		// Plans already started go on with what git said last; their statuses wait
		// in their outboxes.
		r.resume(ctx, recs)
		return fmt.Errorf("fetching: %w", err)
	}
	r.metrics.lastSync.SetToCurrentTime()
	head, err := r.repo.Head(r.store.WatchedBranch())
	if err != nil {
		r.resume(ctx, recs)
		return fmt.Errorf("reading %s: %w", r.store.WatchedBranch(), err)
	}
	if trigger == TriggerWebhook && !r.lastSeen.IsZero() && r.allDriven(recs) {
		changed, err := r.store.TriggersReconcile(ctx, r.lastSeen, head)
		if err == nil && !changed {
			// Our own status commits, or nothing: a webhook for them starts no pass.
			result = "skipped"
			r.log.Debug("the push changed nothing outside status/: nothing to do", "head", head)
			return nil
		}
	}
	ix, err := r.store.Plans(ctx)
	if err != nil {
		r.resume(ctx, recs)
		return fmt.Errorf("listing plans: %w", err)
	}
	r.lastSeen = head
	r.readControls(ix, recs)
	r.resume(ctx, recs)
	if err := r.checkRoot(ix); err != nil {
		return err
	}
	r.startNew(ctx, ix, recs, head)
	r.archive(ctx, ix, recs)
	return nil
}

// allDriven reports whether this process drives every record: nothing to resume.
func (r *Reconciler) allDriven(recs []*executor.Record) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rec := range recs {
		if r.running[rec.Plan.Metadata.Name] == nil {
			return false
		}
	}
	return true
}

// resume drives, in the background, every record this process is not driving.
func (r *Reconciler) resume(ctx context.Context, recs []*executor.Record) {
	for _, rec := range recs {
		r.launch(ctx, rec, false)
	}
}

// readControls records what git asks of each recorded plan: spec.cancel, or stop
// when the plan file is gone from the watched branch. Any other edit after start
// is ignored, with a warning in the plan's status.
func (r *Reconciler) readControls(ix *gitops.PlanIndex, recs []*executor.Record) {
	for _, rec := range recs {
		id := rec.Plan.Metadata.Name
		p := ix.Get(id)
		var want api.Cancel
		var warn string
		switch {
		case p == nil:
			want = api.CancelStop
			warn = fmt.Sprintf("the plan file was deleted from %s: the plan is stopped (as spec.cancel: stop)", r.store.WatchedBranch())
		case p.Plan == nil:
			// An edit that broke the file: keep what the last good version asked.
			r.mu.Lock()
			want = r.cancels[id]
			r.mu.Unlock()
			warn = fmt.Sprintf("the plan file on %s no longer validates (%v); the plan as claimed goes on, and spec.cancel cannot be read until the file is fixed", r.store.WatchedBranch(), p.Err)
		default:
			want = p.Plan.Spec.Cancel
			if edited(rec.Plan, p.Plan) {
				warn = fmt.Sprintf("the plan was edited on %s after it started (commit %s): only spec.cancel is read after start; the edit is ignored", r.store.WatchedBranch(), short(p.Origin.LastChanged.String()))
			}
		}
		r.mu.Lock()
		if r.cancels[id] != want {
			r.log.Warn("git asks a recorded plan to change course", "plan", id, "cancel", want)
		}
		r.cancels[id] = want
		newWarning := warn != "" && !contains(r.warnings[id], warn)
		if newWarning {
			r.warnings[id] = append(r.warnings[id], warn)
		}
		ex := r.running[id]
		r.mu.Unlock()
		if newWarning {
			r.log.Warn(warn, "plan", id)
			r.event(rec, corev1.EventTypeWarning, "PlanEditedAfterStart", warn)
			if ex != nil {
				ex.repushLast()
			}
		}
	}
}

// edited tells whether the plan on the branch differs from the claimed one in
// anything but spec.cancel.
func edited(claimed, now *api.RebalancePlan) bool {
	a, b := claimed.Spec, now.Spec
	a.Cancel, b.Cancel = "", ""
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	if err1 != nil || err2 != nil {
		return !reflect.DeepEqual(a, b)
	}
	return string(ja) != string(jb)
}

func (r *Reconciler) cancelOf(plan string) api.Cancel {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cancels[plan]
}

// checkRoot refuses a status root another cluster writes to: two clusters sharing
// one would read each other's cooldowns and plans.
func (r *Reconciler) checkRoot(ix *gitops.PlanIndex) error {
	if r.opts.ClusterUID == "" {
		return nil
	}
	for _, p := range ix.Plans {
		if p.Status == nil || p.Status.Status.ClusterUID == "" || p.Status.Status.ClusterUID == r.opts.ClusterUID {
			continue
		}
		err := fmt.Errorf("the status root %s was written by another cluster: %s says cluster %q with kube-system UID %s, and this cluster's UID is %s; "+
			"give each cluster its own --path (no plan starts until then)",
			r.store.Layout().StatusDir(), r.store.Layout().StatusFile(p.ID), p.Status.Status.Cluster, p.Status.Status.ClusterUID, r.opts.ClusterUID)
		r.events.Event(&corev1.ObjectReference{Kind: "Namespace", APIVersion: "v1", Name: r.opts.Namespace, Namespace: r.opts.Namespace}, corev1.EventTypeWarning, "ForeignStatusRoot", err.Error())
		return err
	}
	return nil
}

// startNew claims and starts the plans that may start now, oldest merged first.
func (r *Reconciler) startNew(ctx context.Context, ix *gitops.PlanIndex, recs []*executor.Record, head plumbing.Hash) {
	busyGroups := map[string]bool{}
	active := 0
	claimed := map[string]bool{}
	for _, rec := range recs {
		claimed[rec.Plan.Metadata.Name] = true
		if rec.State.Phase.Terminal() {
			continue
		}
		busyGroups[groupKey(rec.Plan)] = true
		if rec.State.Phase != api.PhaseFrozen {
			active++ // a frozen plan holds its group, not the cluster
		}
	}
	// A plan that ended RollbackFailed left two nodes for a person to sort out: its
	// node group runs nothing until that person deletes the plan file.
	stopped := map[string]*gitops.PlanRecord{}
	for _, p := range ix.Plans {
		if p.Plan != nil && p.Status != nil && p.Status.Status.Phase == api.PhaseRollbackFailed {
			stopped[groupKey(p.Plan)] = p
		}
	}
	switchOn, err := r.exec.StopSwitchOn(ctx)
	if err != nil {
		r.log.Error("reading the stop switch: no plan starts this pass", "error", err)
		return
	}
	for _, p := range ix.Plans {
		if p.Finished() || claimed[p.ID] {
			continue
		}
		log := r.log.With("plan", p.ID)
		if switchOn {
			log.Info("the in-cluster stop switch is on: no plan starts")
			continue
		}
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
		if c := p.Plan.Spec.Cancel; c != "" {
			r.finishEarly(ctx, p, p.Plan, api.PhaseCancelled, fmt.Sprintf("cancelled by spec.cancel: %s before it started", c), log)
			continue
		}
		now := r.clock.Now()
		if !now.Before(p.Plan.Spec.NotAfter.Time) {
			r.finishEarly(ctx, p, p.Plan, api.PhaseExpired, fmt.Sprintf("notAfter %s passed before the plan could start", p.Plan.Spec.NotAfter.Format(time.RFC3339)), log)
			continue
		}
		if p.Status == nil {
			// Seen for the first time: the audit log says so before anything else.
			st := r.baseStatus(p, p.Plan, api.PhasePending)
			st.Status.Message = "merged in " + short(p.Origin.LastChanged.String()) + "; re-validated before it starts"
			if _, err := r.store.Append(ctx, st); err != nil {
				r.pushFailed(p.ID, api.PhasePending, err, log)
				continue
			}
		}
		if failed := stopped[groupKey(p.Plan)]; failed != nil {
			r.wait(ctx, p, policies.Decision{Reasons: []string{fmt.Sprintf(
				"node group %s is stopped: plan %s ended RollbackFailed; once its nodes are sorted out, delete %s on %s to clear it",
				p.Plan.Spec.NodeGroup, failed.ID, failed.File, r.store.WatchedBranch())}}, log)
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
		if r.opts.RequireSignedCommits {
			if _, err := r.repo.VerifyPlan(ctx, head, p.File, r.store.Layout().PoliciesDir(), r.opts.Keyring); err != nil {
				r.finishEarly(ctx, p, p.Plan, api.PhaseRejected, "--require-signed-commits: "+err.Error(), log)
				continue
			}
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
		r.mu.Lock()
		r.cancels[p.ID] = ""
		r.mu.Unlock()
		log.Info("claimed; pushing the Running status before the first change")
		r.launch(ctx, rec, true)
	}
}

func groupKey(p *api.RebalancePlan) string {
	return p.Spec.Cluster + "/" + p.Spec.Policy + "/" + p.Spec.NodeGroup
}

// finishEarly commits a terminal status for a plan that never started.
func (r *Reconciler) finishEarly(ctx context.Context, p *gitops.PlanRecord, plan *api.RebalancePlan, phase api.Phase, msg string, log *slog.Logger) {
	st := r.baseStatus(p, plan, phase)
	st.Status.FinishedAt = api.NewTime(r.clock.Now().UTC().Truncate(time.Second))
	st.Status.Message = msg
	if _, err := r.store.Append(ctx, st); err != nil {
		r.pushFailed(p.ID, phase, err, log)
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
		r.pushFailed(p.ID, api.PhaseWaiting, err, log)
		return
	}
	log.Info("plan waits", "reason", why)
}

func (r *Reconciler) baseStatus(p *gitops.PlanRecord, plan *api.RebalancePlan, phase api.Phase) *api.RebalanceStatus {
	st := &api.RebalanceStatus{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: api.KindStatus},
		Metadata: api.ObjectMeta{Name: p.ID},
		Status: api.PlanStatus{Phase: phase, Cluster: r.opts.ClusterName, ClusterUID: r.opts.ClusterUID, PlanCommit: p.Origin.LastChanged.String(),
			UpdatedAt: api.NewTime(r.clock.Now().UTC().Truncate(time.Second))}}
	if plan != nil {
		st.Status.PlanDigest = plan.Spec.ContentDigest
	}
	return st
}

// pushFailed reports a status commit of a plan not started that did not land: the
// plan stays where it is until a later pass lands it. A refusal (branch
// protection, credentials) gets an Event with the remote's reason.
func (r *Reconciler) pushFailed(id string, phase api.Phase, err error, log *slog.Logger) {
	r.metrics.gitErrors.WithLabelValues("push").Inc()
	log.Error("committing the status failed: the plan does not move until it lands", "phase", phase, "error", err)
	if errors.Is(err, gitops.ErrPushRefused) || errors.Is(err, gitops.ErrAuth) {
		r.events.Event(&corev1.ObjectReference{Kind: "Namespace", APIVersion: "v1", Name: r.opts.Namespace, Namespace: r.opts.Namespace}, corev1.EventTypeWarning, "StatusPushRefused",
			fmt.Sprintf("plan %s: the status branch %s refused the %s status commit: %v", id, r.store.StatusBranch(), phase, err))
	}
}

func (r *Reconciler) event(rec *executor.Record, kind, reason, msg string) {
	ref := &corev1.ObjectReference{Kind: "ConfigMap", APIVersion: "v1", Namespace: r.opts.Namespace, Name: rec.Name()}
	r.events.Event(ref, kind, reason, msg)
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}
