package forge

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"

	"github.com/rebalancer-dev/rebalancer/gitops"
)

// Git is the forge of plain git: a proposal is a branch. Opening one is pushing
// the branch (done by the caller), closing one is deleting the branch (also done
// by the caller); comments have nowhere to go and are logged. A plan is merged
// when its file is on the base branch, however it got there.
type Git struct {
	repo *gitops.Repo
	base string
	log  *slog.Logger
}

// NewGit returns the plain-git forge over repo, whose proposals merge into base.
func NewGit(repo *gitops.Repo, base string, log *slog.Logger) *Git {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Git{repo: repo, base: base, log: log}
}

// Name implements Forge.
func (g *Git) Name() string { return "git" }

// FindOpen implements Forge: the branch, when it exists and differs from base.
func (g *Git) FindOpen(_ context.Context, branch string) (*Proposal, error) {
	head, err := g.repo.Head(branch)
	if errors.Is(err, gitops.ErrBranchNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	base, err := g.repo.Head(g.base)
	if err != nil {
		return nil, err
	}
	changed, err := g.repo.ChangedPaths(base, head)
	if err != nil {
		return nil, err
	}
	if len(changed) == 0 {
		return nil, nil // merged and nothing left to propose
	}
	return &Proposal{Branch: branch, Base: g.base, HeadSHA: head.String()}, nil
}

// Open implements Forge: the pushed branch is the proposal.
func (g *Git) Open(_ context.Context, req OpenRequest) (*Proposal, bool, error) {
	head, err := g.repo.Head(req.Branch)
	if err != nil {
		return nil, false, err
	}
	g.log.Info("proposal pushed as a branch", "branch", req.Branch, "title", req.Title)
	return &Proposal{Branch: req.Branch, Base: req.Base, Title: req.Title, Body: req.Body, Labels: req.Labels, HeadSHA: head.String()}, false, nil
}

// Update implements Forge: a branch has no title or body.
func (g *Git) Update(context.Context, *Proposal, OpenRequest) error { return nil }

// Close implements Forge: the comment is logged; the caller deletes the branch.
func (g *Git) Close(_ context.Context, p *Proposal, comment string) error {
	g.log.Info("proposal closed", "branch", p.Branch, "why", comment)
	return nil
}

// Comment implements Forge: logged.
func (g *Git) Comment(_ context.Context, p *Proposal, comment string) error {
	g.log.Info("proposal comment", "branch", p.Branch, "comment", comment)
	return nil
}

// Merged implements Forge.
func (g *Git) Merged(_ context.Context, _ *Proposal, planFile string) (bool, error) {
	return planOnBranch(g.repo, g.base, planFile)
}

// FileURL implements Forge: plain git has no web view.
func (g *Git) FileURL(string, string) string { return "" }

func planOnBranch(repo *gitops.Repo, branch, planFile string) (bool, error) {
	head, err := repo.Head(branch)
	if err != nil {
		return false, err
	}
	_, err = repo.ReadFile(head, planFile)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}
