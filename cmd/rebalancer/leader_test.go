package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	api "github.com/rebalancer-dev/rebalancer/api/v1alpha1"
	"github.com/rebalancer-dev/rebalancer/executor"
	"github.com/rebalancer-dev/rebalancer/gitops"
)

// syncBuffer is a bytes.Buffer safe for a controller writing while a test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// logged reports whether a JSON log line with this msg was written.
func (s *syncBuffer) logged(msg string) bool {
	for _, l := range strings.Split(s.String(), "\n") {
		var line struct{ Msg string }
		if json.Unmarshal([]byte(l), &line) == nil && line.Msg == msg {
			return true
		}
	}
	return false
}

// address is what the controller logged it serves on.
func (s *syncBuffer) address() string {
	for _, l := range strings.Split(s.String(), "\n") {
		var line struct{ Msg, Address string }
		if json.Unmarshal([]byte(l), &line) == nil && line.Msg == "serving" {
			return line.Address
		}
	}
	return ""
}

type replica struct {
	stderr *syncBuffer
	cancel context.CancelFunc
	done   chan int
}

// TestLeaderFailoverResumesThePlan runs two controllers over one repository: only
// the Lease holder acts; when it dies mid-plan the other takes the Lease over and
// resumes the plan from its execution record. Both serve /healthz, /readyz,
// /metrics and a webhook that refuses forged deliveries.
func TestLeaderFailoverResumesThePlan(t *testing.T) {
	c := shared.Get(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const group, ns = "lead", "lead-system"
	olds := []string{"lead-old-0", "lead-old-1", "lead-old-2"}
	e := newControllerEnv(ctx, t, c, group, ns, olds...)
	plan := e.mergePlan(t, "1ead00", olds...)
	srv, catalogFile, tokenFile, layout := e.srv, e.catalogFile, e.tokenFile, gitops.Layout{}
	hookFile := filepath.Join(e.dir, "hook")
	require.NoError(t, os.WriteFile(hookFile, []byte("hook-secret\n"), 0o600))
	start := func(identity string) *replica {
		rctx, rcancel := context.WithCancel(ctx)
		r := &replica{stderr: &syncBuffer{}, cancel: rcancel, done: make(chan int, 1)}
		go func() {
			r.done <- run(rctx, []string{"controller", "--kubeconfig", c.Kubeconfig, "--catalog", catalogFile,
				"--repo", srv.RepoURL(group), "--git-token-file", tokenFile, "--git-username", srv.User, "--cache-dir", "",
				"--cluster-name", "local", "--namespace", ns, "--identity", identity, "--interval", "1s",
				"--http-address", "127.0.0.1:0", "--webhook-secret-file", hookFile,
				"--leader-elect-lease-duration", "4s", "--leader-elect-renew-deadline", "3s", "--leader-elect-retry-period", "500ms"},
				io.Discard, r.stderr)
		}()
		return r
	}
	holder := func() string {
		l, err := c.Client.CoordinationV1().Leases(ns).Get(ctx, "rebalancer-controller", metav1.GetOptions{})
		if err != nil || l.Spec.HolderIdentity == nil {
			return ""
		}
		return *l.Spec.HolderIdentity
	}

	a := start("replica-a")
	require.Eventually(t, func() bool { return holder() == "replica-a" }, 30*time.Second, 100*time.Millisecond)
	b := start("replica-b")
	defer func() { b.cancel(); <-b.done }()
	require.Eventually(t, func() bool { return a.stderr.address() != "" && b.stderr.address() != "" }, 30*time.Second, 100*time.Millisecond)

	// Both replicas serve health and metrics; the webhook refuses a forged delivery.
	for _, r := range []*replica{a, b} {
		base := "http://" + r.stderr.address()
		for _, path := range []string{"/healthz", "/readyz"} {
			resp, err := http.Get(base + path)
			require.NoError(t, err)
			resp.Body.Close()
			assert.Equal(t, http.StatusOK, resp.StatusCode, path)
		}
		req, err := http.NewRequest(http.MethodPost, base+"/hooks/github", strings.NewReader(`{"ref":"refs/heads/main"}`))
		require.NoError(t, err)
		req.Header.Set("X-GitHub-Event", "push")
		req.Header.Set("X-Hub-Signature-256", "sha256=0000000000000000000000000000000000000000000000000000000000000000")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusUnauthorized, resp.StatusCode, "a forged webhook")
	}

	// A valid delivery that reaches the standby is handed to the leader, which passes.
	metricsOf := func(r *replica) string {
		resp, err := http.Get("http://" + r.stderr.address() + "/metrics")
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	body := []byte(`{"ref":"refs/heads/main"}`)
	mac := hmac.New(sha256.New, []byte("hook-secret"))
	mac.Write(body)
	req, err := http.NewRequest(http.MethodPost, "http://"+b.stderr.address()+"/hooks/github", bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("X-GitHub-Event", "push")
	req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	require.Eventually(t, func() bool { return strings.Contains(metricsOf(a), `trigger="webhook"`) }, 20*time.Second, 200*time.Millisecond,
		"the leader ran a webhook pass for the delivery the standby received")

	// A runs the plan; B, a standby, does nothing. A dies once the first pair is done.
	recs := executor.NewRecordStore(c.Client, ns)
	require.Eventually(t, func() bool {
		rec, err := recs.Load(ctx, plan.Metadata.Name)
		return err == nil && len(rec.State.Pairs) > 0 && rec.State.Pairs[0].Done
	}, 90*time.Second, 100*time.Millisecond, "the leader runs the plan")
	assert.False(t, b.stderr.logged("leading"), "the standby never led while A held the Lease")
	rec, err := recs.Load(ctx, plan.Metadata.Name)
	require.NoError(t, err)
	assert.Equal(t, "replica-a", rec.State.Holder)
	a.cancel()
	assert.Equal(t, 0, <-a.done)

	require.Eventually(t, func() bool { return holder() == "replica-b" }, 30*time.Second, 100*time.Millisecond, "B takes the Lease over")
	require.Eventually(t, func() bool {
		out, ok := srv.Show(t, group, "main", layout.StatusFile(plan.Metadata.Name))
		if !ok {
			return false
		}
		st, err := api.DecodeStatus(layout.StatusFile(plan.Metadata.Name), []byte(out))
		return err == nil && st.Status.Phase == api.PhaseSucceeded
	}, 2*time.Minute, 250*time.Millisecond, "B resumes and finishes the plan; B's log:\n%s", b.stderr.String())
	assert.True(t, b.stderr.logged("leading"))

	nodes, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: "pool=" + group})
	require.NoError(t, err)
	assert.Len(t, nodes.Items, 3, "one replacement per candidate, none leaked")
	for _, n := range nodes.Items {
		assert.NotContains(t, olds, n.Name)
	}
	log := srv.GitIn(t, group, "log", "--format=%s", "main")
	for _, phase := range []string{"Pending", "Succeeded"} {
		assert.Equal(t, 1, strings.Count(log, "rebalancer: "+plan.Metadata.Name+" "+phase+"\n"), "one %s commit across the failover:\n%s", phase, log)
	}

	// B's metrics show the git sync and the plan's phase.
	resp, err = http.Get("http://" + b.stderr.address() + "/metrics")
	require.NoError(t, err)
	body, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	for _, m := range []string{"rebalancer_git_last_sync_timestamp_seconds", "rebalancer_reconcile_passes_total", "rebalancer_webhook_requests_total{result=\"unauthorized\"} 1",
		"rebalancer_plan_phase", "rebalancer_step_duration_seconds"} {
		assert.Contains(t, string(body), m)
	}
}

func TestStopAndResumeFlipTheSwitch(t *testing.T) {
	c := shared.Get(t)
	ctx := t.Context()
	const ns = "switch-system"
	_, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	require.NoError(t, err)

	code, out, errOut := runCLI(t, "stop", "--kubeconfig", c.Kubeconfig, "--namespace", ns, "--reason", "incident 42")
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "stop switch on")
	cm, err := c.Client.CoreV1().ConfigMaps(ns).Get(ctx, "rebalancer", metav1.GetOptions{})
	require.NoError(t, err, "stop creates the ConfigMap when it is missing")
	assert.Contains(t, cm.Annotations[executor.StopAnnotation], "incident 42")
	ex := executor.New(c.Client, nil, nil, executor.Options{Namespace: ns})
	on, err := ex.StopSwitchOn(ctx)
	require.NoError(t, err)
	assert.True(t, on, "the executor reads the switch as on")

	code, out, errOut = runCLI(t, "resume", "--kubeconfig", c.Kubeconfig, "--namespace", ns)
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "stop switch off")
	on, err = ex.StopSwitchOn(ctx)
	require.NoError(t, err)
	assert.False(t, on)
	cm, err = c.Client.CoreV1().ConfigMaps(ns).Get(ctx, "rebalancer", metav1.GetOptions{})
	require.NoError(t, err, "resume keeps the ConfigMap")
	assert.NotContains(t, cm.Annotations, executor.StopAnnotation)

	code, _, errOut = runCLI(t, "stop", "--kubeconfig", filepath.Join(t.TempDir(), "missing"), "--namespace", ns)
	assert.Equal(t, 2, code, "a kubeconfig that does not exist is a usage error")
	assert.Contains(t, errOut, "kubeconfig")
	code, _, _ = runCLI(t, "resume", "extra-arg")
	assert.Equal(t, 2, code)
}

// TestControllerProposeLoop runs the controller with --propose-interval: the
// leader opens a proposal for the node group (plain-git forge: a branch) and
// exports the analyzer's nodes by reason.
func TestControllerProposeLoop(t *testing.T) {
	c := shared.Get(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const group, ns = "ploop", "ploop-system"
	e := newControllerEnv(ctx, t, c, group, ns, "ploop-old-0")
	srv, catalogFile, tokenFile := e.srv, e.catalogFile, e.tokenFile

	stderr := &syncBuffer{}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan int, 1)
	go func() {
		done <- run(rctx, []string{"controller", "--kubeconfig", c.Kubeconfig, "--catalog", catalogFile,
			"--repo", srv.RepoURL(group), "--git-token-file", tokenFile, "--git-username", srv.User, "--cache-dir", "",
			"--cluster-name", "local", "--namespace", ns, "--interval", "1h", "--propose-interval", "2s", "--forge", "git",
			"--http-address", "127.0.0.1:0", "--leader-elect=false"}, io.Discard, stderr)
	}()
	defer func() { stop(); <-done }()

	branch := "rebalancer/local/" + group
	require.Eventually(t, func() bool {
		out := srv.GitIn(t, group, "branch", "--list", branch)
		return strings.Contains(out, branch)
	}, time.Minute, 250*time.Millisecond, "the propose loop opened a proposal; log:\n%s", stderr.String())
	files := srv.GitIn(t, group, "diff", "--name-only", "main", branch)
	assert.Contains(t, files, "rebalancer/plans/local-"+group+"-", "the proposal adds one plan file")
	require.Eventually(t, func() bool { return stderr.address() != "" }, 10*time.Second, 50*time.Millisecond)
	resp, err := http.Get("http://" + stderr.address() + "/metrics")
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	assert.Contains(t, string(body), `rebalancer_nodes_by_reason{reason="candidate"}`)
}

func TestControllerUsageErrors(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	require.NoError(t, os.WriteFile(empty, nil, 0o600))
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--archive-after", "1h"}, "--archive-after 1h0m0s: use 0 (never) or at least 24h"},
		{[]string{"--leader-elect-lease-duration", "2s"}, "--leader-elect-lease-duration > --leader-elect-renew-deadline"},
		{[]string{"--require-signed-commits"}, "--require-signed-commits needs --trusted-keys-file"},
		{[]string{"--require-signed-commits", "--trusted-keys-file", filepath.Join(dir, "missing")}, "missing"},
		{[]string{"--webhook-secret-file", empty}, "is empty: the webhook needs a secret"},
		{[]string{"--max-concurrent-plans", "0"}, "--max-concurrent-plans must be 1 or more"},
		{[]string{"--cluster-name", "Not_A_Label"}, "--cluster-name"},
		{[]string{"--log-format", "yaml"}, "yaml"},
	} {
		code, _, errOut := runCLI(t, append([]string{"controller", "--repo", "http://127.0.0.1:1/x.git"}, c.args...)...)
		assert.Equal(t, 2, code, "%v: %s", c.args, errOut)
		assert.Contains(t, errOut, c.want, "%v", c.args)
	}
}
