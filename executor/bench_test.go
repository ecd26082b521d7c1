package executor

import (
	"fmt"
	"testing"
	"time"

	api "github.com/rebalancer-dev/rebalancer/api/v1alpha1"
	"github.com/rebalancer-dev/rebalancer/cloud/kwok"
)

// BenchmarkExecutorOverhead measures the executor's own time to replace one node
// on the local cluster — record writes, API calls, polling — with nothing to wait
// for: no provisioning delay, no pods to move. One op is one node replaced by a
// rolling plan; setting up the old node is not timed.
func BenchmarkExecutorOverhead(b *testing.B) {
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		f := newFixture(b, fmt.Sprintf("bench-%d", i), 1, kwok.Faults{})
		f.opts.PollInterval = 20 * time.Millisecond
		plan := f.plan(api.StrategyRolling, 1, time.Minute, f.old...)
		e := f.executor()
		b.StartTimer()
		rec, err := e.Claim(f.ctx, plan, "bench")
		if err != nil {
			b.Fatal(err)
		}
		if err := e.Run(f.ctx, rec); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if rec.State.Phase != api.PhaseSucceeded {
			b.Fatalf("plan ended %s: %s", rec.State.Phase, rec.State.Message)
		}
		f.cleanup()
		b.StartTimer()
	}
}
