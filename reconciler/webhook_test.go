package reconciler

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const hookSecret = "s3cret-for-tests"

func value(c prometheus.Counter) float64 {
	m := &dto.Metric{}
	if err := c.Write(m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}

func sign(body []byte, secret string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

func deliver(t *testing.T, url, event string, body []byte, sig string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-GitHub-Event", event)
	req.Header.Set("X-GitHub-Delivery", "d-1")
	if sig != "" {
		req.Header.Set("X-Hub-Signature-256", sig)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	return resp
}

func TestWebhookVerifiesTheSignatureAndOnlyTriggers(t *testing.T) {
	var mu sync.Mutex
	var triggers []string
	h := &Webhook{secret: []byte(hookSecret), log: slog.New(slog.DiscardHandler), metrics: NewMetrics(nil),
		trigger: func(r string) { mu.Lock(); triggers = append(triggers, r); mu.Unlock() }}
	srv := httptest.NewServer(h)
	defer srv.Close()
	body := []byte(`{"ref":"refs/heads/main","after":"0123456789abcdef0123456789abcdef01234567"}`)

	assert.Equal(t, http.StatusUnauthorized, deliver(t, srv.URL, "push", body, "").StatusCode, "no signature")
	assert.Equal(t, http.StatusUnauthorized, deliver(t, srv.URL, "push", body, sign(body, "wrong")).StatusCode, "forged")
	assert.Equal(t, http.StatusUnauthorized, deliver(t, srv.URL, "push", body, "sha1=abcd").StatusCode, "not sha256")
	tampered := append([]byte(nil), body...)
	tampered[len(tampered)-3] = 'x'
	assert.Equal(t, http.StatusUnauthorized, deliver(t, srv.URL, "push", tampered, sign(body, hookSecret)).StatusCode, "payload changed after signing")
	mu.Lock()
	assert.Empty(t, triggers, "nothing refused triggers a pass")
	mu.Unlock()
	assert.Equal(t, 4.0, value(h.metrics.webhooks.WithLabelValues("unauthorized")))

	assert.Equal(t, http.StatusOK, deliver(t, srv.URL, "ping", body, sign(body, hookSecret)).StatusCode)
	assert.Equal(t, http.StatusNoContent, deliver(t, srv.URL, "issues", body, sign(body, hookSecret)).StatusCode)
	assert.Equal(t, http.StatusAccepted, deliver(t, srv.URL, "push", body, sign(body, hookSecret)).StatusCode)
	mu.Lock()
	assert.Equal(t, []string{TriggerWebhook}, triggers, "only a valid push triggers, once")
	mu.Unlock()

	resp, err := http.Get(srv.URL)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)

	_, err = NewWebhook(nil, &Reconciler{}, slog.New(slog.DiscardHandler))
	assert.ErrorContains(t, err, "secret is empty")
}

// A validly signed push naming a pull request branch's commit runs nothing: the
// webhook only triggers a fetch, and the pass reads the watched branch.
func TestSignedWebhookNamingAPullRequestCommitRunsNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "hookpr")
	plan := e.plan("local", "b0b0b0", e.node("old-0"))
	f, c := e.planFile(plan)
	branch := "rebalancer/local/hookpr"
	e.work.Git("checkout", "-q", "-b", branch)
	e.work.Write(f, c)
	sha := strings.TrimSpace(e.work.Commit("proposal"))
	e.work.Push(branch)
	if len(sha) != 40 {
		sha = strings.TrimSpace(e.work.Git("rev-parse", "HEAD"))
	}

	r, _ := e.reconciler("a", nil)
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan struct{})
	go func() { r.Run(ctx, time.Hour); close(done) }()
	defer func() { cancel(); <-done }()
	hook, err := NewWebhook([]byte(hookSecret), r, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	srv := httptest.NewServer(hook)
	defer srv.Close()

	passes := func() float64 {
		return value(r.metrics.passes.WithLabelValues(TriggerWebhook, "ok")) +
			value(r.metrics.passes.WithLabelValues(TriggerWebhook, "skipped"))
	}
	require.Eventually(t, func() bool { return value(r.metrics.passes.WithLabelValues(TriggerStart, "ok")) == 1 },
		30*time.Second, 50*time.Millisecond, "the first pass ran")
	body := fmt.Appendf(nil, `{"ref":"refs/heads/%s","after":"%s","head_commit":{"id":"%s"},"repository":{"default_branch":"%s"}}`, branch, sha, sha, branch)
	resp := deliver(t, srv.URL, "push", body, sign(body, hookSecret))
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	require.Eventually(t, func() bool { return passes() == 1 }, 30*time.Second, 50*time.Millisecond, "the webhook triggered a pass")
	r.Wait()
	assert.Nil(t, e.status(plan.Metadata.Name), "nothing about the PR branch's plan was written")
	assert.Zero(t, e.provider.provisions.Load())
	assert.Zero(t, e.records())
}

// The same merged plan, seen at once by a poll, a webhook-triggered pass and
// --once in three controllers, runs once.
func TestSamePlanSeenByPollWebhookAndOnceRunsOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "thrice")
	plan := e.plan("local", "3c3c3c", e.node("old-0"))
	e.mergePlan(plan)

	poll, _ := e.reconciler("poll", nil)
	hooked, _ := e.reconciler("hook", nil)
	once, _ := e.reconciler("once", nil)
	hook, err := NewWebhook([]byte(hookSecret), hooked, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	srv := httptest.NewServer(hook)
	defer srv.Close()
	body := []byte(`{"ref":"refs/heads/main"}`)

	ctx, cancel := context.WithCancel(e.ctx)
	var wg sync.WaitGroup
	errs := make([]error, 2)
	wg.Go(func() { errs[0] = poll.PassAndWait(e.ctx) })
	wg.Go(func() { errs[1] = once.PassAndWait(e.ctx) })
	hookDone := make(chan struct{})
	go func() { hooked.Run(ctx, time.Hour); close(hookDone) }()
	assert.Equal(t, http.StatusAccepted, deliver(t, srv.URL, "push", body, sign(body, hookSecret)).StatusCode)
	wg.Wait()
	require.NoError(t, errs[0])
	require.NoError(t, errs[1])
	require.Eventually(t, func() bool {
		st := e.status(plan.Metadata.Name)
		return st != nil && st.Status.Phase.Terminal() && e.records() == 0
	}, time.Minute, 100*time.Millisecond)
	cancel()
	<-hookDone
	// Without a Lease between them (the controller and --once share one in
	// production), a second controller may resume the record the first claimed
	// while it runs; the record's compare-and-swap deposes one of them, and a
	// provision it had in flight is repeated with the same idempotency token. So
	// the plan runs once: one Running commit, one replacement, no leak.
	assert.LessOrEqual(t, e.provider.provisions.Load(), int32(2))
	nodes := e.groupNodes()
	require.Len(t, nodes, 1, "one replacement, none leaked: %v", nodes)
	assert.NotEqual(t, plan.Spec.Candidates[0].Node, nodes[0])
	phases := e.phases(plan.Metadata.Name)
	assert.Equal(t, 1, countOf(phases, "Running"), "one Running commit: %v", phases)
	assert.Equal(t, "Succeeded", phases[len(phases)-1])
}
