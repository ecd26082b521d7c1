package propose_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	api "github.com/rebalancer-dev/rebalancer/api/v1alpha1"
	"github.com/rebalancer-dev/rebalancer/gitops"
	"github.com/rebalancer-dev/rebalancer/gitops/forge"
	"github.com/rebalancer-dev/rebalancer/gitops/forge/githubtest"
	"github.com/rebalancer-dev/rebalancer/gitops/gittest"
	"github.com/rebalancer-dev/rebalancer/gitops/propose"
)

var t0 = time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)

type env struct {
	git *gittest.Server
	gh  *githubtest.Server
	w   *gittest.Workdir
}

func newEnv(t *testing.T) *env {
	t.Helper()
	srv := gittest.NewServer(t)
	srv.InitBare(t, "fleet")
	w := srv.Clone(t, "fleet", "main")
	w.Write("rebalancer/policies/general.yaml", gittest.Policy("general"))
	w.Commit("policies")
	w.Push("main")
	return &env{git: srv, gh: githubtest.NewServer(t, srv, "fleet", "acme", "fleet"), w: w}
}

func (e *env) repo(t *testing.T) *gitops.Repo {
	t.Helper()
	r, err := gitops.Open(context.Background(), gitops.Options{URL: e.git.RepoURL("fleet"), Auth: gitops.BasicAuth(e.git.User, e.git.Password),
		Author: gitops.Identity{Name: "rebalancer[bot]", Email: "bot@rebalancer.dev"}, Backoff: 5 * time.Millisecond})
	require.NoError(t, err)
	return r
}

func (e *env) github(t *testing.T, r *gitops.Repo) *forge.GitHub {
	t.Helper()
	f, err := forge.NewGitHub(forge.GitHubOptions{APIURL: e.gh.APIURL, Owner: "acme", Repo: "fleet", Base: "main",
		Transport: forge.TokenTransport(e.gh.Token), Git: r, Attempts: 3, Backoff: 5 * time.Millisecond})
	require.NoError(t, err)
	return f
}

func (e *env) proposer(t *testing.T, f func(*gitops.Repo) forge.Forge) (*propose.Proposer, *gitops.Repo) {
	t.Helper()
	r := e.repo(t)
	return propose.New(propose.Options{Repo: r, Forge: f(r), Layout: gitops.Layout{}, Base: "main", Cluster: "prod"}), r
}

func group(plan *api.RebalancePlan) propose.Group {
	return propose.Group{Cluster: "prod", Policy: plan.Spec.Policy, NodeGroup: plan.Spec.NodeGroup, Plan: plan,
		LeftOut: map[string]int{"too-young": 2, "local-storage": 1}}
}

func sync1(t *testing.T, p *propose.Proposer, r *gitops.Repo, groups ...propose.Group) propose.Result {
	t.Helper()
	require.NoError(t, r.Fetch(context.Background()))
	res := p.Sync(context.Background(), groups, nil)
	require.Len(t, res, 1)
	return res[0]
}

func TestProposalLifecycleOnGitHub(t *testing.T) {
	e := newEnv(t)
	p, r := e.proposer(t, func(r *gitops.Repo) forge.Forge { return e.github(t, r) })
	plan1 := gittest.Plan("prod", "general", "aaaaaa", t0, "n1", "n2")

	res := sync1(t, p, r, group(plan1))
	require.NoError(t, res.Err)
	assert.Equal(t, propose.Opened, res.Action)
	open := e.gh.Open()
	require.Len(t, open, 1)
	pr := open[0]
	assert.Equal(t, "rebalancer/prod/general", pr.Head)
	assert.Equal(t, []string{"cluster/prod", "nodegroup/general", "rebalancer"}, pr.Labels)
	for _, want := range []string{"Replace 2 nodes of node group general in cluster prod, rolling, saving $29.20 per month; about 16m.",
		"| `n1` | 30d | std-4vcpu-8gb-v1 → std-4vcpu-8gb-v2 (fra1, amd64) | $58.40 | $43.80 | $14.60 |",
		"- **Batch 1**: provision `n1` → waitReady `n1` → cordon `n1` → drain `n1` → terminate `n1` → verify `n1`",
		"3 nodes of the group left out: local-storage 1, too-young 2.", "spec.cancel: stop", plan1.Spec.ContentDigest} {
		assert.Contains(t, pr.Body, want)
	}
	changed := strings.Fields(e.git.GitIn(t, "fleet", "diff", "--name-status", "main", "rebalancer/prod/general"))
	assert.Equal(t, []string{"A", "rebalancer/plans/" + plan1.Metadata.Name + ".yaml"}, changed, "the PR adds exactly one file")

	// Same candidates, a new analysis (new ID): no push, no API write.
	writes, pushes := e.gh.Writes(), e.git.Pushes.Load()
	same := gittest.Plan("prod", "general", "bbbbbb", t0.Add(time.Hour), "n2", "n1")
	res = sync1(t, p, r, group(same))
	require.NoError(t, res.Err)
	assert.Equal(t, propose.Unchanged, res.Action)
	assert.Equal(t, plan1.Metadata.Name, res.PlanID)
	assert.Equal(t, writes, e.gh.Writes(), "no API write")
	assert.Equal(t, pushes, e.git.Pushes.Load(), "no push")

	// Changed candidates: a new plan in a new PR, the old closed with a link.
	plan2 := gittest.Plan("prod", "general", "cccccc", t0.Add(2*time.Hour), "n1", "n3")
	res = sync1(t, p, r, group(plan2))
	require.NoError(t, res.Err)
	assert.Equal(t, propose.Superseded, res.Action)
	pulls := e.gh.Pulls()
	require.Len(t, pulls, 2)
	assert.Equal(t, "closed", pulls[0].State)
	assert.Equal(t, "open", pulls[1].State)
	require.Len(t, pulls[0].Comments, 2)
	assert.Contains(t, pulls[0].Comments[0], "the candidates changed")
	assert.Contains(t, pulls[0].Comments[1], "Superseded by [#2](https://github.example/acme/fleet/pull/2) (plan "+plan2.Metadata.Name+")")
	changed = strings.Fields(e.git.GitIn(t, "fleet", "diff", "--name-status", "main", "rebalancer/prod/general"))
	assert.Equal(t, []string{"A", "rebalancer/plans/" + plan2.Metadata.Name + ".yaml"}, changed)

	// No candidates any more: closed with a comment, branch deleted.
	res = sync1(t, p, r, propose.Group{Cluster: "prod", Policy: "general", NodeGroup: "general", Why: "no node is a candidate: cooldown 3"})
	require.NoError(t, res.Err)
	assert.Equal(t, propose.Closed, res.Action)
	assert.Empty(t, e.gh.Open())
	last := e.gh.Pulls()[1]
	assert.Equal(t, []string{"Closed by rebalancer: no node is a candidate: cooldown 3."}, last.Comments)
	assert.Empty(t, e.git.Rev(t, "fleet", "rebalancer/prod/general"), "branch deleted")
}

func TestSquashMergeIsMergedAndNextProposalStartsFresh(t *testing.T) {
	e := newEnv(t)
	p, r := e.proposer(t, func(r *gitops.Repo) forge.Forge { return e.github(t, r) })
	gh := e.github(t, r)
	plan1 := gittest.Plan("prod", "general", "aaaaaa", t0, "n1")
	res := sync1(t, p, r, group(plan1))
	require.NoError(t, res.Err)
	e.gh.Merge(t, res.Proposal.Number, "squash")
	require.NoError(t, r.Fetch(context.Background()))
	merged, err := gh.Merged(context.Background(), res.Proposal, "rebalancer/plans/"+plan1.Metadata.Name+".yaml")
	require.NoError(t, err)
	assert.True(t, merged, "a squash merge puts the plan on main")
	open, err := gh.FindOpen(context.Background(), "rebalancer/prod/general")
	require.NoError(t, err)
	assert.Nil(t, open)

	plan2 := gittest.Plan("prod", "general", "bbbbbb", t0, "n2")
	res = sync1(t, p, r, group(plan2))
	require.NoError(t, res.Err)
	assert.Equal(t, propose.Opened, res.Action)
	changed := strings.Fields(e.git.GitIn(t, "fleet", "diff", "--name-status", "main", "rebalancer/prod/general"))
	assert.Equal(t, []string{"A", "rebalancer/plans/" + plan2.Metadata.Name + ".yaml"}, changed)
}

func TestTwoProposersAtOnceMakeOnePR(t *testing.T) {
	e := newEnv(t)
	var wg sync.WaitGroup
	results := make([]propose.Result, 2)
	for i := range 2 {
		p, _ := e.proposer(t, func(r *gitops.Repo) forge.Forge { return e.github(t, r) })
		plan := gittest.Plan("prod", "general", []string{"aaaaaa", "bbbbbb"}[i], t0, "n1", "n2")
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = p.Sync(context.Background(), []propose.Group{group(plan)}, nil)[0]
		}()
	}
	wg.Wait()
	require.NoError(t, results[0].Err)
	require.NoError(t, results[1].Err)
	open := e.gh.Open()
	require.Len(t, open, 1, "one PR: %+v", e.gh.Pulls())
	assert.Len(t, e.gh.Pulls(), 1)
	assert.Equal(t, results[0].PlanID, results[1].PlanID, "both name the plan on the branch")
	assert.Contains(t, open[0].Body, results[0].PlanID)
	changed := strings.Fields(e.git.GitIn(t, "fleet", "diff", "--name-status", "main", "rebalancer/prod/general"))
	assert.Equal(t, []string{"A", "rebalancer/plans/" + results[0].PlanID + ".yaml"}, changed)
}

func TestAPIOutageLeavesNothingHalfWritten(t *testing.T) {
	e := newEnv(t)
	p, r := e.proposer(t, func(r *gitops.Repo) forge.Forge { return e.github(t, r) })
	plan := gittest.Plan("prod", "general", "aaaaaa", t0, "n1")

	// A short outage is retried.
	require.NoError(t, r.Fetch(context.Background()))
	e.gh.FailNext(2, http.StatusBadGateway)
	_, err := e.github(t, r).FindOpen(context.Background(), "rebalancer/prod/general")
	require.NoError(t, err, "two 502s, then an answer")

	// A long one: a clear error, and nothing written.
	e.gh.FailNext(100, http.StatusServiceUnavailable)
	out := p.Sync(context.Background(), []propose.Group{group(plan)}, nil)
	require.Len(t, out, 1)
	require.Error(t, out[0].Err)
	assert.ErrorIs(t, out[0].Err, forge.ErrUnavailable)
	assert.Contains(t, out[0].Err.Error(), "3 attempts")
	e.gh.FailNext(0, 0)
	assert.Empty(t, e.gh.Pulls(), "no PR")
	assert.Empty(t, e.git.Rev(t, "fleet", "rebalancer/prod/general"), "no branch")

	// Only the create fails: the pushed branch is deleted again.
	require.NoError(t, r.Fetch(context.Background()))
	f := &failingOpen{Forge: e.github(t, r)}
	p2 := propose.New(propose.Options{Repo: r, Forge: f, Layout: gitops.Layout{}, Base: "main", Cluster: "prod"})
	out = p2.Sync(context.Background(), []propose.Group{group(plan)}, nil)
	require.Error(t, out[0].Err)
	assert.Contains(t, out[0].Err.Error(), "nothing left half-written")
	assert.Empty(t, e.git.Rev(t, "fleet", "rebalancer/prod/general"), "no branch without a PR")
	assert.Empty(t, e.gh.Pulls())

	// The outage ends: the next run proposes.
	require.NoError(t, r.Fetch(context.Background()))
	out = p.Sync(context.Background(), []propose.Group{group(plan)}, nil)
	require.NoError(t, out[0].Err)
	assert.Len(t, e.gh.Open(), 1)
}

type failingOpen struct{ forge.Forge }

func (f *failingOpen) Open(context.Context, forge.OpenRequest) (*forge.Proposal, bool, error) {
	return nil, false, forge.ErrUnavailable
}

func TestBrokenPolicyLeavesItsProposalAlone(t *testing.T) {
	e := newEnv(t)
	p, r := e.proposer(t, func(r *gitops.Repo) forge.Forge { return e.github(t, r) })
	plan := gittest.Plan("prod", "general", "aaaaaa", t0, "n1")
	require.NoError(t, sync1(t, p, r, group(plan)).Err)
	writes := e.gh.Writes()
	require.NoError(t, r.Fetch(context.Background()))
	out := p.Sync(context.Background(), nil, map[string]bool{"general": true})
	require.Len(t, out, 1)
	assert.Equal(t, propose.Skipped, out[0].Action)
	assert.Error(t, out[0].Err)
	assert.Len(t, e.gh.Open(), 1, "not closed for want of candidates")
	assert.Equal(t, writes, e.gh.Writes())
}

func TestPlainGitForge(t *testing.T) {
	e := newEnv(t)
	p, r := e.proposer(t, func(r *gitops.Repo) forge.Forge { return forge.NewGit(r, "main", nil) })
	plan := gittest.Plan("prod", "general", "aaaaaa", t0, "n1")
	res := sync1(t, p, r, group(plan))
	require.NoError(t, res.Err)
	assert.Equal(t, propose.Opened, res.Action)
	assert.NotEmpty(t, e.git.Rev(t, "fleet", "rebalancer/prod/general"))

	pushes := e.git.Pushes.Load()
	res = sync1(t, p, r, group(gittest.Plan("prod", "general", "bbbbbb", t0, "n1")))
	require.NoError(t, res.Err)
	assert.Equal(t, propose.Unchanged, res.Action)
	assert.Equal(t, pushes, e.git.Pushes.Load())

	// A person rebases the branch onto main: merged, so no longer open.
	e.w.Git("fetch", "-q", "origin")
	e.w.Git("cherry-pick", "origin/rebalancer/prod/general")
	e.w.Push("main")
	require.NoError(t, r.Fetch(context.Background()))
	g := forge.NewGit(r, "main", nil)
	merged, err := g.Merged(context.Background(), nil, "rebalancer/plans/"+plan.Metadata.Name+".yaml")
	require.NoError(t, err)
	assert.True(t, merged)
	open, err := g.FindOpen(context.Background(), "rebalancer/prod/general")
	require.NoError(t, err)
	assert.Nil(t, open, "the branch adds nothing main lacks")

	res = sync1(t, p, r, propose.Group{Cluster: "prod", Policy: "general", NodeGroup: "general", Why: "in-pending-plan 1"})
	require.NoError(t, res.Err)
	assert.Empty(t, e.git.Rev(t, "fleet", "rebalancer/prod/general"), "the merged branch is cleaned up")
}

func TestGitHubAppAuth(t *testing.T) {
	e := newEnv(t)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	e.gh.SetApp(4242, &key.PublicKey)
	src, err := forge.NewAppTokenSource(4242, 7, pemKey, e.gh.APIURL)
	require.NoError(t, err)
	r := e.repo(t)
	gh, err := forge.NewGitHub(forge.GitHubOptions{APIURL: e.gh.APIURL, Owner: "acme", Repo: "fleet", Base: "main", Transport: src.Transport(), Git: r})
	require.NoError(t, err)
	p := propose.New(propose.Options{Repo: r, Forge: gh, Layout: gitops.Layout{}, Base: "main", Cluster: "prod"})
	res := sync1(t, p, r, group(gittest.Plan("prod", "general", "aaaaaa", t0, "n1")))
	require.NoError(t, res.Err)
	assert.Len(t, e.gh.Open(), 1)
	tok1, err := src.Token(context.Background())
	require.NoError(t, err)
	tok2, err := src.Token(context.Background())
	require.NoError(t, err)
	assert.Equal(t, tok1, tok2, "the installation token is reused until it nears expiry")
	assert.True(t, strings.HasPrefix(tok1, "ghs_"))

	wrong, err := forge.NewAppTokenSource(9999, 7, pemKey, e.gh.APIURL)
	require.NoError(t, err)
	_, err = wrong.Token(context.Background())
	assert.Error(t, err)
}

func TestParseRepoURL(t *testing.T) {
	for _, u := range []string{"https://github.com/acme/fleet.git", "git@github.com:acme/fleet.git", "ssh://git@ghe.example.com/acme/fleet"} {
		o, r, err := forge.ParseRepoURL(u)
		require.NoError(t, err, u)
		assert.Equal(t, [2]string{"acme", "fleet"}, [2]string{o, r}, u)
	}
	_, _, err := forge.ParseRepoURL("https://github.com/fleet")
	assert.Error(t, err)
}
