package reconciler

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"

	api "github.com/rebalancer-dev/rebalancer/api/v1alpha1"
	"github.com/rebalancer-dev/rebalancer/cloud"
	"github.com/rebalancer-dev/rebalancer/cloud/kwok"
	"github.com/rebalancer-dev/rebalancer/executor"
	"github.com/rebalancer-dev/rebalancer/gitops"
	"github.com/rebalancer-dev/rebalancer/gitops/gittest"
	"github.com/rebalancer-dev/rebalancer/internal/localcluster"
	"github.com/rebalancer-dev/rebalancer/policies"
)

var cluster *localcluster.Cluster

func TestMain(m *testing.M) {
	os.Exit(localcluster.RunTests(m, localcluster.Options{}, func(c *localcluster.Cluster) { cluster = c }))
}

const catalogYAML = `apiVersion: rebalancer.dev/v1alpha1
kind: OfferingCatalog
offerings:
  - {name: std-4vcpu-8gb-v1, datacenter: fra1, arch: amd64, cpu: "4", memory: 8Gi, pods: 110, hourlyPrice: 0.08}
  - {name: std-4vcpu-8gb-v2, datacenter: fra1, arch: amd64, cpu: "4", memory: 8Gi, pods: 110, hourlyPrice: 0.06}
`

// watchingProvider records, at its first provision, what the status branch on the
// server said: the Running commit must be there before the first change.
type watchingProvider struct {
	cloud.Provider
	provisions  atomic.Int32
	onProvision func()
}

func (p *watchingProvider) Provision(ctx context.Context, req cloud.ProvisionRequest) (*cloud.Instance, error) {
	if p.provisions.Add(1) == 1 && p.onProvision != nil {
		p.onProvision()
	}
	return p.Provider.Provision(ctx, req)
}

// failingReval wraps a revalidator, calling before() first (to break the remote
// between the fetch and the Running push).
type failingReval struct {
	executor.Revalidator
	before func()
}

func (f *failingReval) Revalidate(ctx context.Context, plan *api.RebalancePlan, in policies.RevalidateInput) (policies.Decision, error) {
	if f.before != nil {
		f.before()
	}
	return f.Revalidator.Revalidate(ctx, plan, in)
}

type env struct {
	t        testing.TB
	ctx      context.Context
	name     string
	srv      *gittest.Server
	work     *gittest.Workdir
	layout   gitops.Layout
	provider *watchingProvider
	catalog  []cloud.Offering
	ns       string
	// progressInterval paces progress commits (default an hour: tests count phases).
	progressInterval time.Duration
	archiveAfter     time.Duration
	keyring          *gitops.Keyring // set: --require-signed-commits
}

func newEnv(t testing.TB, name string) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	catalog, err := kwok.ParseCatalog("catalog.yaml", []byte(catalogYAML))
	require.NoError(t, err)
	srv := gittest.NewServer(t)
	srv.InitBare(t, name)
	e := &env{t: t, ctx: ctx, name: name, srv: srv, layout: gitops.Layout{}, catalog: catalog, ns: name}
	kp := kwok.New(cluster.Client, catalog)
	t.Cleanup(kp.Close)
	e.provider = &watchingProvider{Provider: kp}
	_, err = cluster.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if !apierrors.IsAlreadyExists(err) {
		require.NoError(t, err)
	}
	e.work = srv.Clone(t, name, "main")
	e.work.Write(e.layout.PoliciesDir()+"/"+name+".yaml", gittest.Policy(name))
	e.work.Commit("policy")
	e.work.Push("main")
	return e
}

// node creates an old node of the env's group.
func (e *env) node(suffix string) string {
	name := e.name + "-" + suffix
	n := kwok.NewNode(name, e.catalog[0], map[string]string{"pool": e.name}, nil, false)
	require.NoError(e.t, kwok.CreateNode(e.ctx, cluster.Client, n))
	_, err := cluster.WaitNodeReady(e.ctx, name, 30*time.Second)
	require.NoError(e.t, err)
	return name
}

func (e *env) plan(clusterName, suffix string, nodes ...string) *api.RebalancePlan {
	p := gittest.Plan(clusterName, e.name, suffix, time.Now().UTC().Truncate(time.Second), nodes...)
	s, err := policies.StrategyFor(p.Spec.Strategy)
	require.NoError(e.t, err)
	p.Spec.Steps = s.Steps(nodes, p.Spec.MaxConcurrent) // as the planner generates them
	p.Spec.ContentDigest = p.Spec.ComputeContentDigest()
	return p
}

// merge commits files to main as a merged pull request would land them.
func (e *env) merge(files map[string]string) {
	e.work.Pull() // status commits may have landed on main
	for p, c := range files {
		e.work.Write(p, c)
	}
	e.work.Commit("merge plans")
	e.work.Push("main")
}

// mergePlan merges one plan to main and returns its file.
func (e *env) mergePlan(p *api.RebalancePlan) string {
	f, c := e.planFile(p)
	e.merge(map[string]string{f: c})
	return f
}

func (e *env) planFile(p *api.RebalancePlan) (string, string) {
	return e.layout.PlanFile(p.Metadata.Name), gittest.YAML(e.t, p)
}

// reconciler builds a controller with its own clone, as a separate replica would.
func (e *env) reconciler(identity string, reval func(executor.Revalidator) executor.Revalidator, opts ...Option) (*Reconciler, *gitops.Repo) {
	repo, err := gitops.Open(e.ctx, gitops.Options{URL: e.srv.RepoURL(e.name), Auth: gitops.TokenAuth(e.srv.User, e.srv.Password),
		Author: gitops.Identity{Name: "rebalancer[bot]", Email: "bot@example.com"}, Timeout: 10 * time.Second, Attempts: 2,
		Backoff: 20 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	require.NoError(e.t, err)
	pace := e.progressInterval
	if pace == 0 {
		pace = time.Hour
	}
	store := gitops.NewStatusStore(repo, gitops.StoreOptions{Layout: e.layout, WatchedBranch: "main", ProgressInterval: pace})
	var rv executor.Revalidator = &executor.ClusterRevalidator{Client: cluster.Client, Provider: e.provider,
		Policies: WatchedPolicies(repo, "main", e.layout), Limits: policies.Limits{ClusterName: "local", MaxNodesPerPlan: 10},
		LastFinished: LastFinished(store)}
	if reval != nil {
		rv = reval(rv)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var r *Reconciler
	progress := func(p executor.Progress) { r.ProgressFunc()(p) }
	ex := executor.New(cluster.Client, e.provider, rv, executor.Options{Namespace: e.ns, StopConfigMap: "rebalancer", Identity: identity,
		PollInterval: 100 * time.Millisecond, WaitRetry: 200 * time.Millisecond, VerifyTimeout: 30 * time.Second,
		WaitReadyTimeout: 30 * time.Second, ProvisionTimeout: 15 * time.Second}, executor.WithLogger(log), executor.WithProgress(progress))
	r = New(repo, store, ex, rv, Options{ClusterName: "local", ClusterUID: "uid-local", Namespace: e.ns, PushRetry: 50 * time.Millisecond, MaxPushRetry: 500 * time.Millisecond,
		ArchiveAfter: e.archiveAfter, RequireSignedCommits: e.keyring != nil, Keyring: e.keyring}, append([]Option{WithLogger(log)}, opts...)...)
	return r, repo
}

// status reads a plan's status on the server's main branch.
func (e *env) status(id string) *api.RebalanceStatus {
	out, ok := e.srv.Show(e.t, e.name, "main", e.layout.StatusFile(id))
	if !ok {
		return nil
	}
	st, err := api.DecodeStatus(id, []byte(out))
	require.NoError(e.t, err)
	return st
}

// phases lists the phases of a plan's status commits on main, oldest first.
func (e *env) phases(id string) []string {
	out := e.srv.GitIn(e.t, e.name, "log", "--first-parent", "--reverse", "--format=%s", "main")
	var phases []string
	for _, l := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(l, "rebalancer: "+id+" "); ok {
			phases = append(phases, rest)
		}
	}
	return phases
}

func (e *env) records() int {
	list, err := cluster.Client.CoreV1().ConfigMaps(e.ns).List(e.ctx, metav1.ListOptions{LabelSelector: executor.RecordLabel + "=true"})
	require.NoError(e.t, err)
	return len(list.Items)
}

func TestMergedPlanRunsWithStatusCommitsInOrder(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "merged")
	plan := e.plan("local", "aaaaaa", e.node("old-0"))
	var atFirstChange *api.RebalanceStatus
	e.provider.onProvision = func() { atFirstChange = e.status(plan.Metadata.Name) }
	e.mergePlan(plan)

	r, _ := e.reconciler("a", nil)
	require.NoError(t, r.PassAndWait(e.ctx))

	require.NotNil(t, atFirstChange, "the Running status was in git before the first provision")
	assert.Equal(t, api.PhaseRunning, atFirstChange.Status.Phase)
	phases := e.phases(plan.Metadata.Name)
	require.NotEmpty(t, phases)
	assert.Equal(t, []string{"Pending", "Running"}, phases[:2], "Pending when first seen, then Running before the first change")
	assert.Equal(t, "Succeeded", phases[len(phases)-1])
	final := e.status(plan.Metadata.Name)
	require.NotNil(t, final)
	assert.Equal(t, api.PhaseSucceeded, final.Status.Phase)
	assert.Equal(t, int32(1), e.provider.provisions.Load())
	assert.Zero(t, e.records(), "the record is removed once the final status is in git")

	// A second pass finds nothing to do: a terminal plan never runs again.
	require.NoError(t, r.PassAndWait(e.ctx))
	assert.Equal(t, int32(1), e.provider.provisions.Load())
	assert.Equal(t, phases, e.phases(plan.Metadata.Name))
}

func TestPlanOnPullRequestBranchNeverRuns(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "prbranch")
	plan := e.plan("local", "bbbbbb", e.node("old-0"))
	f, c := e.planFile(plan)
	e.work.Git("checkout", "-q", "-b", "rebalancer/local/prbranch")
	e.work.Write(f, c)
	e.work.Commit("proposal")
	e.work.Push("rebalancer/local/prbranch")

	r, _ := e.reconciler("a", nil)
	require.NoError(t, r.PassAndWait(e.ctx))
	assert.Nil(t, e.status(plan.Metadata.Name))
	assert.Zero(t, e.provider.provisions.Load())
	assert.Zero(t, e.records())
}

func TestPlanForAnotherClusterAndInvalidPlanAreRejected(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "reject")
	other := e.plan("elsewhere", "cccccc", e.node("old-0"))
	good := e.plan("local", "dddddd", e.node("old-1"))
	badID := "local-reject-20260101-eeeeee"
	brokenID := "local-reject-20260101-e0e0e0"
	fo, co := e.planFile(other)
	fg, cg := e.planFile(good)
	e.merge(map[string]string{fo: co, fg: cg,
		e.layout.PlanFile(badID):    "apiVersion: rebalancer.dev/v1alpha1\nkind: RebalancePlan\nmetadata:\n  name: " + badID + "\nspec:\n  cluster: local\n  bogus: 1\n",
		e.layout.PlanFile(brokenID): "apiVersion: rebalancer.dev/v1alpha1\nkind: RebalancePlan\nspec: [unclosed\n"})

	r, _ := e.reconciler("a", nil)
	require.NoError(t, r.PassAndWait(e.ctx))

	st := e.status(other.Metadata.Name)
	require.NotNil(t, st)
	assert.Equal(t, api.PhaseRejected, st.Status.Phase)
	assert.Contains(t, st.Status.Message, `cluster "elsewhere" but this controller runs cluster "local"`)

	bad := e.status(badID)
	require.NotNil(t, bad)
	assert.Equal(t, api.PhaseRejected, bad.Status.Phase)
	assert.Contains(t, bad.Status.Message, "bogus")

	broken := e.status(brokenID)
	require.NotNil(t, broken, "a file that is not even YAML gets a status too")
	assert.Equal(t, api.PhaseRejected, broken.Status.Phase)
	assert.Contains(t, broken.Status.Message, e.layout.PlanFile(brokenID)+":", "the message names the file and line")

	ok := e.status(good.Metadata.Name)
	require.NotNil(t, ok)
	assert.Equal(t, api.PhaseSucceeded, ok.Status.Phase, ok.Status.Message)
	assert.Equal(t, int32(1), e.provider.provisions.Load(), "only the good plan changed anything")
}

func TestSamePlanSeenByTwoPassesRunsOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "once")
	plan := e.plan("local", "ffffff", e.node("old-0"))
	e.mergePlan(plan)

	r1, _ := e.reconciler("a", nil)
	r2, _ := e.reconciler("b", nil)
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, r := range []*Reconciler{r1, r2} {
		wg.Go(func() { errs[i] = r.PassAndWait(e.ctx) })
	}
	wg.Wait()
	require.NoError(t, errs[0])
	require.NoError(t, errs[1])
	// The second may resume the first's record while it runs (no Lease between
	// them here): a provision in flight is repeated with the same token, never a
	// second node.
	assert.LessOrEqual(t, e.provider.provisions.Load(), int32(2))
	nodes := e.groupNodes()
	require.Len(t, nodes, 1, "one replacement, none leaked: %v", nodes)
	assert.NotEqual(t, plan.Spec.Candidates[0].Node, nodes[0])
	phases := e.phases(plan.Metadata.Name)
	assert.Equal(t, 1, countOf(phases, "Running"), "one Running commit: %v", phases)
	require.NotEmpty(t, phases)
	assert.Equal(t, "Succeeded", phases[len(phases)-1])
}

func countOf(xs []string, x string) int {
	n := 0
	for _, v := range xs {
		if v == x {
			n++
		}
	}
	return n
}

func TestRemoteUnreachableBeforeRunningLandsStartsNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "unreachable")
	plan := e.plan("local", "abcdef", e.node("old-0"))
	e.mergePlan(plan)

	var broken atomic.Bool
	r, _ := e.reconciler("a", func(rv executor.Revalidator) executor.Revalidator {
		return &failingReval{Revalidator: rv, before: func() {
			if !broken.Load() {
				return
			}
			e.srv.FailNext(1000, 503) // after the fetch, before the Running push
		}}
	})
	broken.Store(true)
	require.NoError(t, r.PassAndWait(e.ctx))
	assert.Zero(t, e.provider.provisions.Load(), "nothing starts before the Running status is in git")
	e.srv.FailNext(0, 0)
	require.NotNil(t, e.status(plan.Metadata.Name))
	assert.Equal(t, api.PhasePending, e.status(plan.Metadata.Name).Status.Phase, "only Pending reached git")
	rec, err := executor.NewRecordStore(cluster.Client, e.ns).Load(e.ctx, plan.Metadata.Name)
	require.NoError(t, err, "the claim stays, with the Running status in its outbox")
	require.NotEmpty(t, rec.State.Outbox)
	assert.Equal(t, api.PhaseRunning, rec.State.Outbox[0].Status.Phase)

	broken.Store(false)
	require.NoError(t, r.PassAndWait(e.ctx))
	phases := e.phases(plan.Metadata.Name)
	require.NotEmpty(t, phases)
	assert.Equal(t, []string{"Pending", "Running"}, phases[:2])
	assert.Equal(t, "Succeeded", phases[len(phases)-1])
	assert.Equal(t, int32(1), e.provider.provisions.Load())
	assert.Zero(t, e.records())
}

func TestStatusPushRefusedPermanentlyStartsNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "refused")
	plan := e.plan("local", "fedcba", e.node("old-0"))
	e.mergePlan(plan)
	e.srv.RefuseDirectPushes(t, e.name, "main")

	events := record.NewFakeRecorder(10)
	r, _ := e.reconciler("a", nil, WithEvents(events))
	require.NoError(t, r.PassAndWait(e.ctx))
	assert.Zero(t, e.provider.provisions.Load())
	assert.Nil(t, e.status(plan.Metadata.Name))
	assert.Zero(t, e.records(), "the unused claim is given back")
	require.Len(t, events.Events, 1)
	ev := <-events.Events
	assert.Contains(t, ev, "StatusPushRefused")
	assert.Contains(t, ev, "Protected branch update failed", "the event gives the remote's reason")
	assert.Empty(t, e.phases(plan.Metadata.Name), fmt.Sprintf("no status commit on %s", e.name))
}
