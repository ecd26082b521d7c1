// Package forge opens, finds, updates and closes the pull requests that carry
// rebalancer's proposals. The Forge interface is small on purpose: GitHub
// implements it with its REST API (go-github), and plain git — for forges without
// an implementation — with branches alone.
package forge

import (
	"context"
)

// Proposal is an open proposal: a pull request, or for plain git a branch.
type Proposal struct {
	// Number is the pull request's number (0 for plain git).
	Number int
	// URL is where a person reviews it ("" for plain git).
	URL string
	// Branch is the head branch; Base the branch it merges into.
	Branch, Base string
	Title, Body  string
	Labels       []string
	// HeadSHA is the branch's tip as the forge last saw it.
	HeadSHA string
}

// Ref names a proposal in text: "#12", or the branch for plain git.
func (p *Proposal) Ref() string {
	if p == nil {
		return ""
	}
	if p.Number > 0 {
		return "#" + itoa(p.Number)
	}
	return "branch " + p.Branch
}

// OpenRequest describes a proposal to open (its branch is pushed already) or the
// new title, body and labels of one being updated.
type OpenRequest struct {
	Branch, Base string
	Title, Body  string
	Labels       []string
}

// Forge is where proposals live.
type Forge interface {
	// Name is "github" or "git".
	Name() string
	// FindOpen returns the open proposal whose head is branch, or nil.
	FindOpen(ctx context.Context, branch string) (*Proposal, error)
	// Open opens a proposal for an already pushed branch. When one is open for that
	// branch already (GitHub's 422 "A pull request already exists"), it is adopted:
	// returned with adopted true.
	Open(ctx context.Context, req OpenRequest) (p *Proposal, adopted bool, err error)
	// Update sets an open proposal's title, body and labels.
	Update(ctx context.Context, p *Proposal, req OpenRequest) error
	// Close closes a proposal with a comment saying why. It does not delete the
	// branch.
	Close(ctx context.Context, p *Proposal, comment string) error
	// Comment adds a comment to a proposal.
	Comment(ctx context.Context, p *Proposal, comment string) error
	// Merged tells whether the proposal's plan file is on the base branch — true
	// after a merge, a squash merge or a rebase merge alike.
	Merged(ctx context.Context, p *Proposal, planFile string) (bool, error)
	// FileURL is a link to a file on a branch for a person to follow, or "".
	FileURL(branch, file string) string
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}
