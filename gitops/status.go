package gitops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"sync"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"k8s.io/utils/clock"

	api "github.com/rebalancer-dev/rebalancer/api/v1alpha1"
)

// StatusStore is the one way every part of rebalancer — the analyzer's history,
// propose, the reconciler, `rebalancer status` and `rebalancer history` — reads and
// writes plan status (DESIGN.md invariant 4). Plans are read from the watched
// branch, statuses from the status branch (the watched branch unless
// --status-branch names another). Reads see the repository as last fetched.
type StatusStore interface {
	// Status is a plan's status, or nil (and no error) when it has none yet.
	Status(ctx context.Context, planID string) (*api.RebalanceStatus, error)
	// Plans lists every plan on the watched branch with its status, oldest first
	// by the first-parent commit that added it.
	Plans(ctx context.Context) (*PlanIndex, error)
	// Append records a status transition as a commit on the status branch, message
	// "rebalancer: <plan-id> <phase>" with the Rebalancer-Plan and Rebalancer-Phase
	// trailers and [skip ci]. A phase change is committed at once. A change within
	// the same phase (step progress) is committed at most once per progress
	// interval; in between it is held (AppendResult.Held) and goes out with the
	// plan's next commit or Flush. A permanent refusal matches ErrPushRefused.
	Append(ctx context.Context, st *api.RebalanceStatus) (AppendResult, error)
	// Flush commits every held progress update.
	Flush(ctx context.Context) error
	// Log walks the status branch's first-parent history, newest first, calling fn
	// for each status commit: the audit log.
	Log(ctx context.Context, fn func(StatusEvent) error) error
	// TriggersReconcile tells whether moving the watched branch from old to new
	// changed anything but status files (a push touching only status/ does not).
	TriggersReconcile(ctx context.Context, old, new plumbing.Hash) (bool, error)
}

// AppendResult says what Append did.
type AppendResult struct {
	// Commit is the status commit, when one was pushed.
	Commit plumbing.Hash
	// Held is true when the update was coalesced: it is not in git yet, and goes out
	// with the plan's next commit or Flush.
	Held bool
}

// StatusEvent is one status commit of the audit log.
type StatusEvent struct {
	Commit plumbing.Hash
	Time   time.Time
	Plan   string
	Phase  api.Phase
	Author string
	// Subject is the commit's first line.
	Subject string
}

// PlanRecord is one plan file on the watched branch and its status.
type PlanRecord struct {
	ID   string
	File string
	// Plan is nil when the file does not decode; Err says why (an api.ErrorList
	// with file:line: field: message entries).
	Plan *api.RebalancePlan
	Err  error
	// Status is nil when the plan has none yet; StatusErr when its file does not decode.
	Status    *api.RebalanceStatus
	StatusErr error
	// Origin names the first-parent commits that added and last changed the file.
	Origin FileOrigin
}

// Finished tells whether the plan has a terminal status: it never runs again.
func (p *PlanRecord) Finished() bool { return p.Status != nil && p.Status.Status.Phase.Terminal() }

// GroupKey identifies a node group of a cluster under a policy.
type GroupKey struct {
	Cluster, Policy, NodeGroup string
}

// GroupPlans are a node group's plans, oldest first.
type GroupPlans struct {
	Key        GroupKey
	Finished   []*PlanRecord
	Unfinished []*PlanRecord
}

// PlanIndex is every plan of the watched branch with its status. The plans and
// statuses in it are shared with the store's cache: read them, never change them.
type PlanIndex struct {
	// WatchedCommit and StatusCommit are the commits read (zero: no such branch yet).
	WatchedCommit, StatusCommit plumbing.Hash
	// Plans in the order the watched branch added them (oldest first).
	Plans []*PlanRecord
	// Orphans are statuses whose plan file is no longer on the watched branch.
	Orphans []*api.RebalanceStatus
}

// Groups splits the decodable plans by node group into finished and unfinished.
func (ix *PlanIndex) Groups() map[GroupKey]*GroupPlans {
	out := map[GroupKey]*GroupPlans{}
	for _, p := range ix.Plans {
		if p.Plan == nil {
			continue
		}
		k := GroupKey{p.Plan.Spec.Cluster, p.Plan.Spec.Policy, p.Plan.Spec.NodeGroup}
		g := out[k]
		if g == nil {
			g = &GroupPlans{Key: k}
			out[k] = g
		}
		if p.Finished() {
			g.Finished = append(g.Finished, p)
		} else {
			g.Unfinished = append(g.Unfinished, p)
		}
	}
	return out
}

// Get returns the record of a plan ID, or nil.
func (ix *PlanIndex) Get(id string) *PlanRecord {
	for _, p := range ix.Plans {
		if p.ID == id {
			return p
		}
	}
	return nil
}

// StoreOptions configure a StatusStore over a Repo.
type StoreOptions struct {
	Layout Layout
	// WatchedBranch holds the plans and policies (main).
	WatchedBranch string
	// StatusBranch receives status commits; empty means WatchedBranch. A missing
	// status branch is created by the first status commit, as an orphan branch
	// holding only status files.
	StatusBranch string
	// ProgressInterval is the least time between two commits of one plan in the
	// same phase (default 5s).
	ProgressInterval time.Duration
	// Clock paces progress commits; default the real clock.
	Clock clock.PassiveClock
}

// NewStatusStore returns the StatusStore of repo.
func NewStatusStore(repo *Repo, o StoreOptions) *GitStatusStore {
	if o.StatusBranch == "" {
		o.StatusBranch = o.WatchedBranch
	}
	if o.ProgressInterval <= 0 {
		o.ProgressInterval = 5 * time.Second
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	return &GitStatusStore{repo: repo, o: o, last: map[string]committed{}, held: map[string]*api.RebalanceStatus{}}
}

// GitStatusStore is the StatusStore kept in git.
type GitStatusStore struct {
	repo *Repo
	o    StoreOptions

	mu      sync.Mutex
	last    map[string]committed
	held    map[string]*api.RebalanceStatus
	decoded map[decodeKey]*decoded
}

var _ StatusStore = (*GitStatusStore)(nil)

type committed struct {
	phase api.Phase
	at    time.Time
}

// Layout is the store's layout.
func (s *GitStatusStore) Layout() Layout { return s.o.Layout }

// StatusBranch is the branch status commits go to.
func (s *GitStatusStore) StatusBranch() string { return s.o.StatusBranch }

// WatchedBranch is the branch plans and policies are read from.
func (s *GitStatusStore) WatchedBranch() string { return s.o.WatchedBranch }

// Status implements StatusStore.
func (s *GitStatusStore) Status(_ context.Context, planID string) (*api.RebalanceStatus, error) {
	tip, err := s.statusTip()
	if err != nil || tip.IsZero() {
		return nil, err
	}
	file := s.o.Layout.StatusFile(planID)
	data, err := s.repo.ReadFile(tip, file)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s on %s: %w", file, s.o.StatusBranch, err)
	}
	return api.DecodeStatus(file, data)
}

func (s *GitStatusStore) statusTip() (plumbing.Hash, error) {
	tip, err := s.repo.Head(s.o.StatusBranch)
	if errors.Is(err, ErrBranchNotFound) && s.o.StatusBranch != s.o.WatchedBranch {
		return plumbing.ZeroHash, nil // no status written yet
	}
	return tip, err
}

// Plans implements StatusStore. Decoded files are cached by content (a blob
// hash never changes meaning), so a repository with thousands of plans costs a
// directory listing per call, and a decode only for what changed.
func (s *GitStatusStore) Plans(ctx context.Context) (*PlanIndex, error) {
	watched, err := s.repo.Head(s.o.WatchedBranch)
	if err != nil {
		return nil, err
	}
	statusTip, err := s.statusTip()
	if err != nil {
		return nil, err
	}
	ix := &PlanIndex{WatchedCommit: watched, StatusCommit: statusTip}
	origins, err := s.repo.FileHistory(ctx, watched, s.o.Layout.PlansDir())
	if err != nil {
		return nil, err
	}
	planFiles, err := s.repo.ListDir(watched, s.o.Layout.PlansDir())
	if err != nil {
		return nil, err
	}
	statusFiles, err := s.repo.ListDir(statusTip, s.o.Layout.StatusDir())
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cache := make(map[decodeKey]*decoded, len(planFiles)+len(statusFiles))
	decode := func(dir, name string, h plumbing.Hash, kind string) (*decoded, error) {
		file := path.Join(dir, name)
		key := decodeKey{file: file, blob: h}
		if d, ok := s.decoded[key]; ok {
			cache[key] = d
			return d, nil
		}
		data, err := s.repo.ReadBlob(h)
		if err != nil {
			return nil, err
		}
		d := &decoded{}
		if kind == api.KindPlan {
			d.plan, d.err = api.DecodePlan(file, data)
		} else {
			d.status, d.err = api.DecodeStatus(file, data)
		}
		cache[key] = d
		return d, nil
	}
	statuses := map[string]*decoded{}
	for name, h := range statusFiles {
		if IDFromFile(name) == "" {
			continue
		}
		d, err := decode(s.o.Layout.StatusDir(), name, h, api.KindStatus)
		if err != nil {
			return nil, err
		}
		statuses[IDFromFile(name)] = d
	}
	for name, h := range planFiles {
		id := IDFromFile(name)
		if id == "" {
			continue
		}
		d, err := decode(s.o.Layout.PlansDir(), name, h, api.KindPlan)
		if err != nil {
			return nil, err
		}
		rec := &PlanRecord{ID: id, File: path.Join(s.o.Layout.PlansDir(), name), Origin: origins[name], Plan: d.plan, Err: d.err}
		if st := statuses[id]; st != nil {
			rec.Status, rec.StatusErr = st.status, st.err
			delete(statuses, id)
		}
		ix.Plans = append(ix.Plans, rec)
	}
	s.decoded = cache
	sort.SliceStable(ix.Plans, func(i, j int) bool {
		a, b := ix.Plans[i].Origin.Depth, ix.Plans[j].Origin.Depth
		if a != b {
			return a > b
		}
		return ix.Plans[i].ID < ix.Plans[j].ID
	})
	for _, st := range statuses {
		if st.status != nil {
			ix.Orphans = append(ix.Orphans, st.status)
		}
	}
	sort.Slice(ix.Orphans, func(i, j int) bool { return ix.Orphans[i].Metadata.Name < ix.Orphans[j].Metadata.Name })
	return ix, nil
}

// decodeKey names a decoded file: its path (errors name it) and its content.
type decodeKey struct {
	file string
	blob plumbing.Hash
}

// decoded is a plan or status file as decoded once. Callers must not change it:
// it is shared between calls.
type decoded struct {
	plan   *api.RebalancePlan
	status *api.RebalanceStatus
	err    error
}

// Append implements StatusStore.
func (s *GitStatusStore) Append(ctx context.Context, st *api.RebalanceStatus) (AppendResult, error) {
	if st == nil || st.Metadata.Name == "" {
		return AppendResult{}, errors.New("status without a plan ID")
	}
	if st.Status.Phase == "" {
		return AppendResult{}, fmt.Errorf("status of %s without a phase", st.Metadata.Name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	id := st.Metadata.Name
	if last, ok := s.last[id]; ok && last.phase == st.Status.Phase && s.o.Clock.Since(last.at) < s.o.ProgressInterval {
		cp, err := cloneStatus(st)
		if err != nil {
			return AppendResult{}, err
		}
		s.held[id] = cp
		return AppendResult{Held: true}, nil
	}
	return s.commitLocked(ctx, st)
}

// cloneStatus copies a status, so a caller that keeps changing its own does not
// change the one held for a later commit.
func cloneStatus(st *api.RebalanceStatus) (*api.RebalanceStatus, error) {
	raw, err := json.Marshal(st)
	if err != nil {
		return nil, err
	}
	out := &api.RebalanceStatus{}
	return out, json.Unmarshal(raw, out)
}

// Flush implements StatusStore.
func (s *GitStatusStore) Flush(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]string, 0, len(s.held))
	for id := range s.held {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		if _, err := s.commitLocked(ctx, s.held[id]); err != nil {
			return err
		}
	}
	return nil
}

func (s *GitStatusStore) commitLocked(ctx context.Context, st *api.RebalanceStatus) (AppendResult, error) {
	id, phase := st.Metadata.Name, st.Status.Phase
	out := *st
	out.TypeMeta = api.TypeMeta{APIVersion: api.APIVersion, Kind: api.KindStatus}
	data, err := api.Marshal(&out)
	if err != nil {
		return AppendResult{}, fmt.Errorf("rendering the status of %s: %w", id, err)
	}
	res, err := s.repo.Commit(ctx, CommitRequest{
		Branch:   s.o.StatusBranch,
		Files:    map[string][]byte{s.o.Layout.StatusFile(id): data},
		Message:  fmt.Sprintf("rebalancer: %s %s\n\n%s", id, phase, SkipCI),
		Trailers: []Trailer{{TrailerPlan, id}, {TrailerPhase, string(phase)}},
	})
	if err != nil {
		return AppendResult{}, fmt.Errorf("committing status %s of plan %s to %s: %w", phase, id, s.o.StatusBranch, err)
	}
	delete(s.held, id)
	s.last[id] = committed{phase: phase, at: s.o.Clock.Now()}
	return AppendResult{Commit: res.Commit}, nil
}

// Archive takes finished plans out of the tree in one commit on the status
// branch: their status files and, when the status branch is the watched branch,
// their plan files. Git history keeps every version (the audit log reads
// history, not the tree); the tree stays as small as the plans of the last weeks,
// which is what a push costs a git server (see BenchmarkStatusCommit). The caller
// decides what is old enough; an ID whose files are gone already is ignored.
func (s *GitStatusStore) Archive(ctx context.Context, ids []string) (AppendResult, error) {
	if len(ids) == 0 {
		return AppendResult{}, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	files := map[string][]byte{}
	trailers := make([]Trailer, 0, len(ids))
	for _, id := range ids {
		files[s.o.Layout.StatusFile(id)] = nil
		if s.o.StatusBranch == s.o.WatchedBranch {
			files[s.o.Layout.PlanFile(id)] = nil
		}
		trailers = append(trailers, Trailer{TrailerArchived, id})
	}
	res, err := s.repo.Commit(ctx, CommitRequest{
		Branch:   s.o.StatusBranch,
		Files:    files,
		Message:  fmt.Sprintf("rebalancer: archive %d finished plans\n\nTheir files stay in history.\n\n%s", len(ids), SkipCI),
		Trailers: trailers,
	})
	if err != nil {
		return AppendResult{}, fmt.Errorf("archiving %d plans on %s: %w", len(ids), s.o.StatusBranch, err)
	}
	for _, id := range ids {
		delete(s.held, id)
		delete(s.last, id)
	}
	return AppendResult{Commit: res.Commit}, nil
}

// Log implements StatusStore.
func (s *GitStatusStore) Log(ctx context.Context, fn func(StatusEvent) error) error {
	tip, err := s.statusTip()
	if err != nil || tip.IsZero() {
		return err
	}
	return s.repo.FirstParentLog(ctx, tip, func(c CommitInfo) error {
		plan := TrailerValue(c.Trailers, TrailerPlan)
		if plan == "" {
			return nil
		}
		return fn(StatusEvent{Commit: c.Hash, Time: c.Committer.When, Plan: plan,
			Phase: api.Phase(TrailerValue(c.Trailers, TrailerPhase)), Author: c.Author.Name, Subject: c.Subject})
	})
}

// TriggersReconcile implements StatusStore.
func (s *GitStatusStore) TriggersReconcile(_ context.Context, old, new plumbing.Hash) (bool, error) {
	if old == new {
		return false, nil
	}
	changed, err := s.repo.ChangedPaths(old, new)
	if err != nil {
		return true, err
	}
	return len(changed) > 0 && !s.o.Layout.OnlyStatus(changed), nil
}
