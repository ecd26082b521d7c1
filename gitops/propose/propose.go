// Package propose keeps the proposals of one cluster in step with the analyzer's
// plans: at most one open proposal per node group, on branch
// rebalancer/<cluster>/<group>, adding exactly one file, the plan. An unchanged
// contentDigest changes nothing (no push, no API write); a changed one becomes a
// new plan in a new proposal and the old one is closed with a link to it; a group
// without candidates has its proposal closed with a comment saying why. It works
// with any forge.Forge and is used by `rebalancer propose` and the reconciler's
// propose loop alike.
package propose

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"sort"
	"strings"

	api "github.com/rebalancer-dev/rebalancer/api/v1alpha1"
	"github.com/rebalancer-dev/rebalancer/gitops"
	"github.com/rebalancer-dev/rebalancer/gitops/forge"
)

// Group is what the analyzer wants for one node group now.
type Group struct {
	Cluster, Policy, NodeGroup string
	// Plan is the plan to propose; nil when the group has no candidates now.
	Plan *api.RebalancePlan
	// Why explains a nil Plan in the comment that closes an open proposal.
	Why string
	// LeftOut counts the group's nodes that are not in the plan, per reason.
	LeftOut map[string]int
	// Retry names the earlier plan of the group that did not succeed, when Plan
	// retries it (Plan.Spec.RetryOf is set to its ID).
	Retry *Earlier
}

// Earlier is a finished plan a new one retries.
type Earlier struct {
	ID    string
	Phase api.Phase
	// StatusFile and StatusBranch locate its status, for the link in the body.
	StatusFile, StatusBranch string
}

// Action is what Sync did for a group.
type Action string

// Actions.
const (
	// Unchanged: the open proposal holds the same contentDigest; nothing was written.
	Unchanged Action = "unchanged"
	// Opened: a new proposal.
	Opened Action = "opened"
	// Adopted: a proposal for the branch was open already (another proposer's).
	Adopted Action = "adopted"
	// Superseded: the candidates changed; a new proposal replaced the old one.
	Superseded Action = "superseded"
	// Closed: no candidates any more; the proposal was closed with a comment.
	Closed Action = "closed"
	// Nothing: no proposal, and none needed.
	Nothing Action = "nothing"
	// Skipped: the group's policy does not validate; its proposal is left alone.
	Skipped Action = "skipped"
)

// Result is the outcome for one group.
type Result struct {
	Cluster, NodeGroup string
	Action             Action
	PlanID             string
	Proposal           *forge.Proposal
	// Previous is the proposal closed or superseded.
	Previous *forge.Proposal
	Err      error
}

// Options configure a Proposer.
type Options struct {
	Repo   *gitops.Repo
	Forge  forge.Forge
	Layout gitops.Layout
	// Base is the watched branch proposals merge into.
	Base    string
	Cluster string
	// Attempts bounds how often a group is looked at again after another proposer
	// pushed its branch first (default 3).
	Attempts int
	Logger   *slog.Logger
}

// Proposer syncs proposals.
type Proposer struct {
	o   Options
	log *slog.Logger
}

// New returns a Proposer.
func New(o Options) *Proposer {
	if o.Attempts <= 0 {
		o.Attempts = 3
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Proposer{o: o, log: o.Logger.With("cluster", o.Cluster)}
}

// BranchName is the branch of a node group's proposal.
func BranchName(cluster, group string) string {
	return "rebalancer/" + cluster + "/" + api.IDSegment(group)
}

// Labels are the labels of a node group's proposal.
func Labels(cluster, group string) []string {
	return []string{"rebalancer", "cluster/" + cluster, "nodegroup/" + group}
}

// Sync brings every group's proposal in step. Groups are independent: one
// failing does not stop the others; each Result carries its own error. Open
// proposals of this cluster for groups not in groups are closed, unless their
// policy is in skipPolicies (a policy whose file does not validate: its groups are
// left exactly as they are). The caller fetches before.
func (p *Proposer) Sync(ctx context.Context, groups []Group, skipPolicies map[string]bool) []Result {
	byBranch := map[string]Group{}
	for _, g := range groups {
		byBranch[BranchName(p.o.Cluster, g.NodeGroup)] = g
	}
	branches, err := p.o.Repo.Branches("rebalancer/" + p.o.Cluster + "/")
	if err != nil {
		return []Result{{Cluster: p.o.Cluster, Err: err}}
	}
	for _, b := range gitops.BranchNames(branches) {
		if _, ok := byBranch[b]; ok {
			continue
		}
		st, err := p.branchPlan(b)
		if err != nil || st == nil {
			continue
		}
		g := Group{Cluster: p.o.Cluster, NodeGroup: strings.TrimPrefix(b, "rebalancer/"+p.o.Cluster+"/"),
			Why: "no node of this group is a candidate any more: the group is gone from the cluster, or no policy selects it"}
		if st.plan != nil {
			g.Policy, g.NodeGroup = st.plan.Spec.Policy, st.plan.Spec.NodeGroup
		}
		byBranch[b] = g
	}
	names := make([]string, 0, len(byBranch))
	for b := range byBranch {
		names = append(names, b)
	}
	sort.Strings(names)
	var out []Result
	for _, b := range names {
		g := byBranch[b]
		if skipPolicies[g.Policy] {
			out = append(out, Result{Cluster: p.o.Cluster, NodeGroup: g.NodeGroup, Action: Skipped,
				Err: fmt.Errorf("node group %s: policy %s does not validate; its proposal is left as it is", g.NodeGroup, g.Policy)})
			continue
		}
		out = append(out, p.syncGroup(ctx, b, g))
	}
	return out
}

// errRaced means another proposer pushed the branch first: look again.
var errRaced = errors.New("another proposer pushed the branch first")

func (p *Proposer) syncGroup(ctx context.Context, branch string, g Group) Result {
	log := p.log.With("nodeGroup", g.NodeGroup, "branch", branch)
	for attempt := 1; ; attempt++ {
		res, err := p.syncOnce(ctx, branch, g, log)
		res.Cluster, res.NodeGroup = p.o.Cluster, g.NodeGroup
		if !errors.Is(err, errRaced) || attempt >= p.o.Attempts {
			res.Err = err
			if err != nil {
				res.Err = fmt.Errorf("node group %s: %w", g.NodeGroup, err)
			}
			return res
		}
		log.Info("another proposer pushed first, looking again", "attempt", attempt)
		if err := p.o.Repo.Fetch(ctx); err != nil {
			res.Err = fmt.Errorf("node group %s: %w", g.NodeGroup, err)
			return res
		}
	}
}

func (p *Proposer) syncOnce(ctx context.Context, branch string, g Group, log *slog.Logger) (Result, error) {
	open, err := p.o.Forge.FindOpen(ctx, branch)
	if err != nil {
		return Result{}, err
	}
	cur, err := p.branchPlan(branch)
	if err != nil {
		return Result{}, err
	}
	if g.Plan == nil {
		if open != nil {
			comment := "Closed by rebalancer: " + g.Why + "."
			if err := p.o.Forge.Close(ctx, open, comment); err != nil {
				return Result{}, err
			}
			log.Info("closed the proposal: no candidates", "proposal", open.Ref())
		}
		// The branch goes too: with nothing to propose, a branch left behind would
		// be a proposal without a pull request (or, merged, just clutter).
		if _, err := p.o.Repo.Head(branch); err == nil {
			if err := p.o.Repo.DeleteBranch(ctx, branch); err != nil {
				return Result{Action: Closed, Previous: open}, fmt.Errorf("deleting branch %s: %w", branch, err)
			}
		}
		if open != nil {
			return Result{Action: Closed, Previous: open}, nil
		}
		return Result{Action: Nothing}, nil
	}
	same := cur != nil && cur.plan != nil && cur.plan.Spec.ContentDigest == g.Plan.Spec.ContentDigest
	switch {
	case open != nil && same:
		return Result{Action: Unchanged, PlanID: cur.plan.Metadata.Name, Proposal: open}, nil
	case open == nil && same:
		// The branch holds this content but no proposal is open: an earlier run
		// stopped between push and open, or another proposer is between them now.
		prop, adopted, err := p.open(ctx, branch, g, cur.plan)
		if err != nil {
			return Result{}, err
		}
		return Result{Action: actionOf(adopted), PlanID: cur.plan.Metadata.Name, Proposal: prop}, nil
	}

	plan := g.Plan
	if open != nil {
		// Close before pushing new content to its branch: an approval of the old
		// content must never cover the new.
		comment := fmt.Sprintf("Closed by rebalancer: the candidates changed (%s → %s). Plan %s replaces this proposal; its pull request is linked below once open.",
			digestOf(cur), short(plan.Spec.ContentDigest), plan.Metadata.Name)
		if err := p.o.Forge.Close(ctx, open, comment); err != nil {
			return Result{}, err
		}
	}
	data, err := api.Marshal(plan)
	if err != nil {
		return Result{}, err
	}
	file := p.o.Layout.PlanFile(plan.Metadata.Name)
	_, err = p.o.Repo.Commit(ctx, gitops.CommitRequest{Branch: branch, StartFrom: p.o.Base, Replace: true, NoRetry: true,
		Files: map[string][]byte{file: data}, Message: fmt.Sprintf("rebalancer: propose %s\n\n%s", plan.Metadata.Name, Summary(plan)),
		Trailers: []gitops.Trailer{{Key: gitops.TrailerPlan, Value: plan.Metadata.Name}}})
	if errors.Is(err, gitops.ErrNonFastForward) {
		return Result{}, fmt.Errorf("%w: %w", errRaced, err)
	}
	if err != nil {
		return Result{}, fmt.Errorf("pushing %s: %w", branch, err)
	}
	prop, adopted, err := p.open(ctx, branch, g, plan)
	if err != nil {
		return Result{}, err
	}
	res := Result{Action: actionOf(adopted), PlanID: plan.Metadata.Name, Proposal: prop}
	if open != nil {
		res.Action, res.Previous = Superseded, open
		link := prop.Ref()
		if prop.URL != "" {
			link = fmt.Sprintf("[%s](%s)", prop.Ref(), prop.URL)
		}
		if err := p.o.Forge.Comment(ctx, open, fmt.Sprintf("Superseded by %s (plan %s).", link, plan.Metadata.Name)); err != nil {
			return res, err
		}
	}
	log.Info("proposal", "action", res.Action, "plan", plan.Metadata.Name, "proposal", prop.Ref())
	return res, nil
}

// open opens (or adopts) the proposal of a pushed branch. When that fails the
// branch is deleted, so no branch is left without its proposal.
func (p *Proposer) open(ctx context.Context, branch string, g Group, plan *api.RebalancePlan) (*forge.Proposal, bool, error) {
	req := forge.OpenRequest{Branch: branch, Base: p.o.Base, Title: Title(plan), Body: Body(plan, g, p.o.Layout, p.o.Forge),
		Labels: Labels(p.o.Cluster, plan.Spec.NodeGroup)}
	prop, adopted, err := p.o.Forge.Open(ctx, req)
	if err != nil {
		// A fresh context: the caller's may be what ran out.
		cleanCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.o.Repo.Timeout())
		defer cancel()
		if derr := p.o.Repo.DeleteBranch(cleanCtx, branch); derr != nil {
			return nil, false, fmt.Errorf("opening the proposal: %w (and deleting branch %s failed: %v)", err, branch, derr)
		}
		return nil, false, fmt.Errorf("opening the proposal: %w (branch %s deleted again: nothing left half-written)", err, branch)
	}
	if adopted && prop.Body != req.Body {
		if err := p.o.Forge.Update(ctx, prop, req); err != nil {
			return prop, adopted, err
		}
	}
	return prop, adopted, nil
}

func actionOf(adopted bool) Action {
	if adopted {
		return Adopted
	}
	return Opened
}

// branchState is what a proposal branch adds to the base: its plan.
type branchState struct {
	plan *api.RebalancePlan // nil when the file does not decode
	file string
	head string
}

// branchPlan reads the plan a proposal branch adds (a plans/ file that is not on
// the base branch), or nil when the branch is missing or adds none.
func (p *Proposer) branchPlan(branch string) (*branchState, error) {
	head, err := p.o.Repo.Head(branch)
	if errors.Is(err, gitops.ErrBranchNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	base, err := p.o.Repo.Head(p.o.Base)
	if err != nil {
		return nil, err
	}
	onBranch, err := p.o.Repo.ListDir(head, p.o.Layout.PlansDir())
	if err != nil {
		return nil, err
	}
	onBase, err := p.o.Repo.ListDir(base, p.o.Layout.PlansDir())
	if err != nil {
		return nil, err
	}
	var added []string
	for name := range onBranch {
		if _, ok := onBase[name]; !ok && gitops.IDFromFile(name) != "" {
			added = append(added, name)
		}
	}
	if len(added) == 0 {
		return nil, nil
	}
	sort.Strings(added)
	file := path.Join(p.o.Layout.PlansDir(), added[0])
	st := &branchState{file: file, head: head.String()}
	data, err := p.o.Repo.ReadBlob(onBranch[added[0]])
	if err != nil {
		return nil, err
	}
	if plan, err := api.DecodePlan(file, data); err == nil && len(added) == 1 {
		st.plan = plan
	}
	return st, nil
}

func digestOf(st *branchState) string {
	if st == nil || st.plan == nil {
		return "unreadable"
	}
	return short(st.plan.Spec.ContentDigest)
}

func short(digest string) string {
	if len(digest) > len("sha256:")+12 {
		return digest[:len("sha256:")+12]
	}
	return digest
}
