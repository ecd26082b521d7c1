package forge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/google/go-github/v60/github"

	"github.com/rebalancer-dev/rebalancer/gitops"
)

// GitHubOptions configure the GitHub forge.
type GitHubOptions struct {
	// APIURL is the REST API's base: empty for github.com, or an Enterprise
	// server's "https://ghe.example.com/api/v3/".
	APIURL string
	// WebURL is where people browse the repository, for links: empty derives it
	// (https://github.com, or the Enterprise host).
	WebURL string
	// Owner and Repo name the repository.
	Owner, Repo string
	// Base is the watched branch proposals merge into.
	Base string
	// Transport authenticates API calls: TokenTransport or an App's
	// AppTokenSource.Transport.
	Transport http.RoundTripper
	// Git is the clone, read to tell whether a plan reached Base.
	Git *gitops.Repo
	// Timeout bounds each API call (default 30s); Attempts and Backoff retry
	// transient failures — 5xx, 429, the network (defaults 5 and 1s, doubling).
	Timeout  time.Duration
	Attempts int
	Backoff  time.Duration
	Logger   *slog.Logger
}

// GitHub is the Forge of github.com and GitHub Enterprise Server.
type GitHub struct {
	o      GitHubOptions
	client *github.Client
	log    *slog.Logger
}

// NewGitHub returns the GitHub forge.
func NewGitHub(o GitHubOptions) (*GitHub, error) {
	if o.Owner == "" || o.Repo == "" || o.Base == "" {
		return nil, errors.New("github: owner, repository and base branch are required")
	}
	if o.Transport == nil {
		return nil, errors.New("github: no credentials (a token or a GitHub App)")
	}
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	if o.Attempts <= 0 {
		o.Attempts = 5
	}
	if o.Backoff <= 0 {
		o.Backoff = time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	client := github.NewClient(&http.Client{Transport: o.Transport})
	if o.APIURL != "" {
		var err error
		if client, err = client.WithEnterpriseURLs(o.APIURL, o.APIURL); err != nil {
			return nil, fmt.Errorf("github API URL: %w", err)
		}
	}
	if o.WebURL == "" {
		o.WebURL = "https://github.com"
		if o.APIURL != "" {
			if u, err := url.Parse(o.APIURL); err == nil {
				o.WebURL = u.Scheme + "://" + u.Host
			}
		}
	}
	return &GitHub{o: o, client: client, log: o.Logger.With("forge", "github", "repo", o.Owner+"/"+o.Repo)}, nil
}

// ParseRepoURL reads owner and repository from a clone URL
// (https://host/owner/repo.git, git@host:owner/repo.git, ssh://git@host/owner/repo).
func ParseRepoURL(raw string) (owner, repo string, err error) {
	p := raw
	if u, perr := url.Parse(raw); perr == nil && u.Scheme != "" {
		p = u.Path
	} else if i := strings.Index(raw, ":"); i >= 0 {
		p = raw[i+1:]
	}
	parts := strings.Split(strings.Trim(strings.TrimSuffix(p, ".git"), "/"), "/")
	if len(parts) < 2 || parts[len(parts)-2] == "" || parts[len(parts)-1] == "" {
		return "", "", fmt.Errorf("cannot tell the owner and repository from %q", raw)
	}
	return parts[len(parts)-2], parts[len(parts)-1], nil
}

// Name implements Forge.
func (g *GitHub) Name() string { return "github" }

// call runs one API call with a deadline, again after a backoff while it fails
// transiently.
func (g *GitHub) call(ctx context.Context, op string, fn func(ctx context.Context) (*github.Response, error)) error {
	wait := g.o.Backoff
	for attempt := 1; ; attempt++ {
		callCtx, cancel := context.WithTimeout(ctx, g.o.Timeout)
		resp, err := fn(callCtx)
		cancel()
		if err == nil {
			return nil
		}
		if !transient(resp, err) || attempt >= g.o.Attempts || ctx.Err() != nil {
			if transient(resp, err) {
				return fmt.Errorf("github: %s: %w: %w (%d attempts)", op, ErrUnavailable, err, attempt)
			}
			return fmt.Errorf("github: %s: %w", op, err)
		}
		g.log.Warn("GitHub API call failed, retrying", "op", op, "attempt", attempt, "wait", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("github: %s: %w", op, ctx.Err())
		case <-t.C:
		}
		wait = min(2*wait, 30*time.Second)
	}
}

// ErrUnavailable means the forge's API failed transiently on every attempt.
var ErrUnavailable = errors.New("forge API unavailable")

func transient(resp *github.Response, err error) bool {
	if resp != nil && resp.Response != nil {
		return resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests
	}
	var nerr net.Error
	return errors.As(err, &nerr) || errors.Is(err, context.DeadlineExceeded)
}

func (g *GitHub) proposal(pr *github.PullRequest) *Proposal {
	p := &Proposal{Number: pr.GetNumber(), URL: pr.GetHTMLURL(), Branch: pr.GetHead().GetRef(), Base: pr.GetBase().GetRef(),
		Title: pr.GetTitle(), Body: pr.GetBody(), HeadSHA: pr.GetHead().GetSHA()}
	for _, l := range pr.Labels {
		p.Labels = append(p.Labels, l.GetName())
	}
	return p
}

// FindOpen implements Forge.
func (g *GitHub) FindOpen(ctx context.Context, branch string) (*Proposal, error) {
	var prs []*github.PullRequest
	err := g.call(ctx, "listing pull requests of "+branch, func(ctx context.Context) (*github.Response, error) {
		var resp *github.Response
		var err error
		prs, resp, err = g.client.PullRequests.List(ctx, g.o.Owner, g.o.Repo, &github.PullRequestListOptions{
			State: "open", Head: g.o.Owner + ":" + branch, Base: g.o.Base})
		return resp, err
	})
	if err != nil {
		return nil, err
	}
	for _, pr := range prs {
		if pr.GetHead().GetRef() == branch {
			return g.proposal(pr), nil
		}
	}
	return nil, nil
}

// Open implements Forge. GitHub answers a second pull request for the same head
// with 422 "A pull request already exists"; that one is adopted.
func (g *GitHub) Open(ctx context.Context, req OpenRequest) (*Proposal, bool, error) {
	var pr *github.PullRequest
	err := g.call(ctx, "opening a pull request for "+req.Branch, func(ctx context.Context) (*github.Response, error) {
		var resp *github.Response
		var err error
		pr, resp, err = g.client.PullRequests.Create(ctx, g.o.Owner, g.o.Repo, &github.NewPullRequest{
			Title: github.String(req.Title), Head: github.String(req.Branch), Base: github.String(req.Base),
			Body: github.String(req.Body), MaintainerCanModify: github.Bool(false)})
		return resp, err
	})
	if alreadyExists(err) {
		p, ferr := g.FindOpen(ctx, req.Branch)
		if ferr != nil {
			return nil, false, ferr
		}
		if p == nil {
			return nil, false, fmt.Errorf("github: a pull request for %s already exists, but none is open: %w", req.Branch, err)
		}
		g.log.Info("adopted the open pull request of the branch", "pr", p.Number, "branch", req.Branch)
		return p, true, nil
	}
	if err != nil {
		return nil, false, err
	}
	p := g.proposal(pr)
	if len(req.Labels) > 0 {
		if err := g.labels(ctx, p.Number, req.Labels); err != nil {
			return p, false, err
		}
		p.Labels = req.Labels
	}
	return p, false, nil
}

func alreadyExists(err error) bool {
	var er *github.ErrorResponse
	if !errors.As(err, &er) || er.Response == nil || er.Response.StatusCode != http.StatusUnprocessableEntity {
		return false
	}
	for _, e := range er.Errors {
		if strings.Contains(e.Message, "A pull request already exists") {
			return true
		}
	}
	return strings.Contains(er.Message, "A pull request already exists")
}

func (g *GitHub) labels(ctx context.Context, number int, labels []string) error {
	return g.call(ctx, fmt.Sprintf("labelling #%d", number), func(ctx context.Context) (*github.Response, error) {
		_, resp, err := g.client.Issues.AddLabelsToIssue(ctx, g.o.Owner, g.o.Repo, number, labels)
		return resp, err
	})
}

// Update implements Forge.
func (g *GitHub) Update(ctx context.Context, p *Proposal, req OpenRequest) error {
	err := g.call(ctx, fmt.Sprintf("updating #%d", p.Number), func(ctx context.Context) (*github.Response, error) {
		_, resp, err := g.client.PullRequests.Edit(ctx, g.o.Owner, g.o.Repo, p.Number, &github.PullRequest{
			Title: github.String(req.Title), Body: github.String(req.Body)})
		return resp, err
	})
	if err != nil {
		return err
	}
	if len(req.Labels) > 0 {
		return g.labels(ctx, p.Number, req.Labels)
	}
	return nil
}

// Close implements Forge: the comment first, so the reason is there when people
// get the notification of the close.
func (g *GitHub) Close(ctx context.Context, p *Proposal, comment string) error {
	if comment != "" {
		if err := g.Comment(ctx, p, comment); err != nil {
			return err
		}
	}
	return g.call(ctx, fmt.Sprintf("closing #%d", p.Number), func(ctx context.Context) (*github.Response, error) {
		_, resp, err := g.client.PullRequests.Edit(ctx, g.o.Owner, g.o.Repo, p.Number, &github.PullRequest{State: github.String("closed")})
		return resp, err
	})
}

// Comment implements Forge.
func (g *GitHub) Comment(ctx context.Context, p *Proposal, comment string) error {
	return g.call(ctx, fmt.Sprintf("commenting on #%d", p.Number), func(ctx context.Context) (*github.Response, error) {
		_, resp, err := g.client.Issues.CreateComment(ctx, g.o.Owner, g.o.Repo, p.Number, &github.IssueComment{Body: github.String(comment)})
		return resp, err
	})
}

// Merged implements Forge: the plan file on the base branch (which is what the
// reconciler runs), whatever GitHub's merge button did.
func (g *GitHub) Merged(_ context.Context, _ *Proposal, planFile string) (bool, error) {
	return planOnBranch(g.o.Git, g.o.Base, planFile)
}

// FileURL implements Forge.
func (g *GitHub) FileURL(branch, file string) string {
	return fmt.Sprintf("%s/%s/%s/blob/%s/%s", strings.TrimSuffix(g.o.WebURL, "/"), g.o.Owner, g.o.Repo, branch, file)
}

// TokenTransport authenticates API calls with a token (a personal access token or
// a fine-grained token).
func TokenTransport(token string) http.RoundTripper {
	return &authTransport{header: func(context.Context) (string, error) { return "Bearer " + token, nil }}
}

type authTransport struct {
	header func(ctx context.Context) (string, error)
	base   http.RoundTripper
}

func (t *authTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	h, err := t.header(req.Context())
	if err != nil {
		return nil, err
	}
	r := req.Clone(req.Context())
	r.Header.Set("Authorization", h)
	base := t.base
	if base == nil {
		base = http.DefaultTransport
	}
	return base.RoundTrip(r)
}
