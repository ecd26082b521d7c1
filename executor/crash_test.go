package executor

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	api "github.com/rebalancer-dev/rebalancer/api/v1alpha1"
	"github.com/rebalancer-dev/rebalancer/cloud"
	"github.com/rebalancer-dev/rebalancer/cloud/kwok"
	"github.com/rebalancer-dev/rebalancer/policies"
)

var errCrashed = errors.New("injected crash: this executor is gone")

// crashPoint lets mutating call n — to the API server or the provider — through
// and then makes every later call block until released, and fail: the process
// died right after call n. With loseResponse, call n reaches the server but its
// caller sees an error, as when the connection drops after the server acted.
type crashPoint struct {
	mu           sync.Mutex
	n, count     int
	loseResponse bool
	dead         chan struct{}
	release      chan struct{}
}

func newCrashPoint(n int, loseResponse bool) *crashPoint {
	return &crashPoint{n: n, loseResponse: loseResponse, dead: make(chan struct{}), release: make(chan struct{})}
}

type admission int

const (
	admitPass admission = iota
	admitLast
	admitDead
)

func (c *crashPoint) admit(mutating bool) admission {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.dead:
		return admitDead
	default:
	}
	if !mutating {
		return admitPass
	}
	c.count++
	if c.count == c.n {
		return admitLast
	}
	if c.n > 0 && c.count > c.n {
		return admitDead // after the last call, before dead is closed
	}
	return admitPass
}

// call runs f under the crash point.
func (c *crashPoint) call(mutating bool, f func() error) error {
	switch c.admit(mutating) {
	case admitDead:
		<-c.dead
		<-c.release
		return errCrashed
	case admitLast:
		err := f()
		close(c.dead) // only now: the call completed on the server
		if c.loseResponse {
			return errCrashed
		}
		return err
	}
	return f()
}

type crashTransport struct {
	rt http.RoundTripper
	cp *crashPoint
}

func (t *crashTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	mutating := req.Method != http.MethodGet && req.Method != http.MethodHead
	var resp *http.Response
	err := t.cp.call(mutating, func() error {
		var err error
		resp, err = t.rt.RoundTrip(req)
		return err
	})
	if errors.Is(err, errCrashed) {
		if resp != nil {
			resp.Body.Close()
		}
		return nil, err
	}
	return resp, err
}

// crashProvider puts a provider behind a crash point, and fails provisioning for
// the tokens in failTokens (the rollback path).
type crashProvider struct {
	cloud.Provider
	cp         *crashPoint
	failTokens map[string]bool
}

func (p *crashProvider) Provision(ctx context.Context, req cloud.ProvisionRequest) (*cloud.Instance, error) {
	var inst *cloud.Instance
	err := p.cp.call(true, func() error {
		if p.failTokens[req.Token] {
			return fmt.Errorf("injected: %w", cloud.ErrInsufficientCapacity)
		}
		var err error
		inst, err = p.Provider.Provision(ctx, req)
		return err
	})
	return inst, err
}

func (p *crashProvider) Terminate(ctx context.Context, providerID string) error {
	return p.cp.call(true, func() error { return p.Provider.Terminate(ctx, providerID) })
}

func (p *crashProvider) List(ctx context.Context) ([]cloud.Instance, error) {
	var out []cloud.Instance
	err := p.cp.call(false, func() error {
		var err error
		out, err = p.Provider.List(ctx)
		return err
	})
	return out, err
}

func (p *crashProvider) Get(ctx context.Context, id string) (*cloud.Instance, error) {
	var out *cloud.Instance
	err := p.cp.call(false, func() error {
		var err error
		out, err = p.Provider.Get(ctx, id)
		return err
	})
	return out, err
}

// TestResumeAfterCrashAtEveryCall crashes an executor right after each of its
// mutating calls in turn, then resumes the plan with a fresh executor and fresh
// clients, and checks that every run ends Succeeded, RolledBack or Frozen with the
// provider's machines exactly as expected and no node left with our taint.
func TestResumeAfterCrashAtEveryCall(t *testing.T) {
	variants := []struct {
		name          string
		rollback      bool
		nonIdempotent bool
	}{
		{"rolling", false, false},
		{"rollback", true, false},
		{"rolling-non-idempotent", false, true},
	}
	total := 0
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			exercised := 0
			for n := 1; ; n++ {
				finished := crashRun(t, fmt.Sprintf("cr%d%s-%d", len(v.name), v.name[:2], n), n, n%3 == 2, v.rollback, v.nonIdempotent)
				if finished {
					break // the executor made fewer than n mutating calls: every call was a crash point
				}
				exercised++
				if t.Failed() {
					return
				}
			}
			t.Logf("%s: crashed after each of %d mutating calls and resumed", v.name, exercised)
			require.Greater(t, exercised, 10, "a 2-node plan makes many mutating calls")
			total += exercised
		})
	}
	t.Logf("crash points exercised in all: %d", total)
}

// crashRun runs one crash-and-resume. It reports true when the first executor
// finished without reaching call n.
func crashRun(t *testing.T, prefix string, n int, loseResponse, rollback, nonIdempotent bool) bool {
	t.Helper()
	f := newFixture(t, prefix, 2, kwok.Faults{NonIdempotent: nonIdempotent})
	defer f.cleanup()
	f.opts.ProvisionTimeout = 4 * time.Second
	f.deploy("web", 2, 1, nil)
	f.waitPods(2)
	plan := f.plan(api.StrategyRolling, 1, 30*time.Second, f.old...)
	failTokens := map[string]bool{}
	if rollback {
		failTokens[plan.Metadata.Name+"/"+f.old[1]] = true
	}

	// The first executor, which dies after call n.
	cp := newCrashPoint(n, loseResponse)
	cfg, err := cluster.UserConfig(executorUser, "system:masters")
	require.NoError(t, err)
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { return &crashTransport{rt: rt, cp: cp} }
	client, err := kubernetes.NewForConfig(cfg)
	require.NoError(t, err)
	kwokA := kwok.New(cluster.Client, f.catalog, kwok.WithFaults(kwok.Faults{NonIdempotent: nonIdempotent}))
	defer kwokA.Close()
	ignore := goleak.IgnoreCurrent()
	ctxA, cancelA := context.WithCancel(f.ctx)
	a := New(client, &crashProvider{Provider: kwokA, cp: cp, failTokens: failTokens}, f.revalidator(client), f.opts)
	done := make(chan error, 1)
	go func() {
		rec, err := a.Claim(ctxA, plan, "c0ffee")
		if err == nil {
			err = a.Run(ctxA, rec)
		}
		done <- err
	}()
	select {
	case err := <-done:
		cancelA()
		close(cp.release)
		require.NoError(t, err, "without a crash the first executor finishes")
		return true
	case <-cp.dead:
	}
	cancelA()
	close(cp.release)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("crash at call %d: the abandoned executor did not stop", n)
	}
	// None of the abandoned executor's goroutines runs on (connection pools aside).
	assert.NoError(t, goleak.Find(ignore,
		goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreAnyFunction("internal/poll.runtime_pollWait"),
		goleak.IgnoreAnyFunction("golang.org/x/net/http2.(*ClientConn).readLoop"),
		goleak.IgnoreAnyFunction("k8s.io/client-go/util/flowcontrol.(*tokenBucketPassiveRateLimiter).Wait"),
		goleak.IgnoreAnyFunction("k8s.io/apimachinery/pkg/util/wait.BackoffUntilWithContext.func1"),
		goleak.IgnoreAnyFunction("time.Sleep"),
	), "crash at call %d", n)

	// A fresh executor with fresh clients resumes from the record.
	kwokB := kwok.New(cluster.Client, f.catalog, kwok.WithFaults(kwok.Faults{NonIdempotent: nonIdempotent}))
	defer kwokB.Close()
	b := New(f.client, &crashProvider{Provider: kwokB, cp: newCrashPoint(0, false), failTokens: failTokens}, f.revalidator(f.client), f.opts)
	rec, err := b.Records().Load(f.ctx, plan.Metadata.Name)
	require.NoError(t, err, "crash at call %d: the claim is always the first call, so a record exists", n)
	require.NoError(t, b.Run(f.ctx, rec), "crash at call %d", n)

	want := api.PhaseSucceeded
	if rollback {
		want = api.PhaseRolledBack
	}
	if nonIdempotent && rec.State.Phase == api.PhaseRolledBack {
		// The crash fell between the intent and the provider call: nobody can know
		// whether the machine was ordered, so it is never ordered twice; none
		// appeared, so the batch rolled back. That is the safe outcome.
		want = api.PhaseRolledBack
		assert.Equal(t, api.TriggerProvisionFailed, rec.State.Rollback.Trigger)
	}
	require.Equal(t, want, rec.State.Phase, "crash at call %d (lost response %v): %s", n, loseResponse, rec.State.Message)

	// The machines are exactly: a replacement for each finished pair, the old
	// node for each other.
	var wantMachines []string
	for _, p := range rec.State.Pairs {
		if p.Done {
			wantMachines = append(wantMachines, p.NewNode)
		} else {
			wantMachines = append(wantMachines, p.Old)
		}
	}
	require.Eventually(t, func() bool { return equalSets(f.machines(), wantMachines) }, 20*time.Second, 200*time.Millisecond,
		"crash at call %d: machines %v, want %v", n, f.machines(), wantMachines)
	nodes, err := f.admin.CoreV1().Nodes().List(f.ctx, metav1.ListOptions{LabelSelector: "tier=" + prefix})
	require.NoError(t, err)
	for _, node := range nodes.Items {
		assert.False(t, hasTaint(&node, policies.TaintDisrupting), "crash at call %d: %s keeps our taint", n, node.Name)
	}
	return false
}

func (f *fixture) revalidator(client kubernetes.Interface) Revalidator {
	ps, err := policies.NewPolicies([]*api.RebalancePolicy{f.policy})
	require.NoError(f.t, err)
	return &ClusterRevalidator{Client: client, Provider: f.provider, Limits: f.limits,
		Policies: func(context.Context) (*policies.Policies, error) { return ps, nil }}
}

// machines lists the provider's live instances of this fixture.
func (f *fixture) machines() []string {
	insts, err := f.provider.List(f.ctx)
	require.NoError(f.t, err)
	var out []string
	for _, i := range insts {
		// Provider-named machines (non-idempotent mode) start with the offering's
		// name; iterations run one at a time and clean up, so all are this one's.
		if strings.HasPrefix(i.NodeName, f.prefix+"-") || strings.HasPrefix(i.NodeName, "gen2-") {
			if i.State != cloud.StateTerminating {
				out = append(out, i.NodeName)
			}
		}
	}
	return out
}

func equalSets(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	seen := map[string]int{}
	for _, x := range a {
		seen[x]++
	}
	for _, x := range b {
		seen[x]--
	}
	for _, v := range seen {
		if v != 0 {
			return false
		}
	}
	return true
}

// cleanup removes the fixture's nodes and namespace, so iterations do not pile up.
func (f *fixture) cleanup() {
	ctx := context.Background()
	_ = f.admin.CoreV1().Namespaces().Delete(ctx, f.ns, metav1.DeleteOptions{})
	nodes, err := f.admin.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err == nil {
		for _, n := range nodes.Items {
			if n.Labels["tier"] == f.prefix || strings.HasPrefix(n.Name, "gen2-") {
				_ = f.admin.CoreV1().Nodes().Delete(ctx, n.Name, metav1.DeleteOptions{})
			}
		}
	}
	_ = f.admin.CoreV1().ConfigMaps("rebalancer-system").DeleteCollection(ctx, metav1.DeleteOptions{},
		metav1.ListOptions{LabelSelector: RecordLabel + "=true"})
}
