package reconciler

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// BenchmarkMergeToFirstAction measures, for a 3-node rolling plan, the time from
// its merge landing on main to the executor's first action (a provision) when
// GitHub's push webhook fires, and counts the commits the plan writes with the
// production pacing of progress commits (5s). No target: figures for the README.
//
//	go test -run '^$' -bench MergeToFirstAction -benchtime 3x ./reconciler/
func BenchmarkMergeToFirstAction(b *testing.B) {
	var latency time.Duration
	commits := 0
	for i := 0; i < b.N; i++ {
		e := newEnv(b, fmt.Sprintf("bench%d", i))
		e.progressInterval = 5 * time.Second
		nodes := []string{e.node("old-0"), e.node("old-1"), e.node("old-2")}
		plan := e.plan("local", fmt.Sprintf("be%04x", i), nodes...)
		f, c := e.planFile(plan)
		r, _ := e.reconciler("bench", nil)
		hook, err := NewWebhook([]byte(hookSecret), r, slog.New(slog.DiscardHandler))
		require.NoError(b, err)
		srv := httptest.NewServer(hook)
		ctx, cancel := context.WithCancel(e.ctx)
		done := make(chan struct{})
		go func() { r.Run(ctx, time.Hour); close(done) }()
		require.Eventually(b, func() bool { return value(r.metrics.passes.WithLabelValues(TriggerStart, "ok")) == 1 }, 30*time.Second, 10*time.Millisecond)

		first := make(chan time.Time, 1)
		e.provider.onProvision = func() {
			select {
			case first <- time.Now():
			default:
			}
		}
		e.merge(map[string]string{f: c})
		merged := time.Now()
		body := []byte(`{"ref":"refs/heads/main"}`)
		req, err := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader(string(body)))
		require.NoError(b, err)
		req.Header.Set("X-GitHub-Event", "push")
		req.Header.Set("X-Hub-Signature-256", sign(body, hookSecret))
		resp, err := http.DefaultClient.Do(req)
		require.NoError(b, err)
		resp.Body.Close()
		select {
		case at := <-first:
			latency += at.Sub(merged)
		case <-time.After(time.Minute):
			b.Fatal("no executor action a minute after the merge")
		}
		require.Eventually(b, func() bool {
			st := e.status(plan.Metadata.Name)
			return st != nil && st.Status.Phase.Terminal() && e.records() == 0
		}, 2*time.Minute, 100*time.Millisecond)
		cancel()
		<-done
		srv.Close()
		commits += len(e.phases(plan.Metadata.Name))
	}
	b.ReportMetric(float64(latency.Milliseconds())/float64(b.N), "ms-merge-to-first-action")
	b.ReportMetric(float64(commits)/float64(b.N), "commits/3-node-plan")
}
