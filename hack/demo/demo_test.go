package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	api "github.com/rebalancer-dev/rebalancer/api/v1alpha1"
)

// TestDemo runs `make demo`'s driver against a freshly built rebalancer binary and
// checks what a person would see and what the cluster and git hold afterwards.
func TestDemo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	bin := filepath.Join(t.TempDir(), "rebalancer")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "../../cmd/rebalancer")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "building rebalancer: %s", out)

	var shown bytes.Buffer
	var w io.Writer = &shown
	if testing.Verbose() {
		w = io.MultiWriter(&shown, os.Stderr)
	}
	res, err := run(ctx, options{Bin: bin, Examples: "../../deploy/examples/demo", Out: w})
	require.NoError(t, err, shown.String())
	t.Logf("the demo took %s", res.Took)

	// analyze: one row per node, and more reasons than candidates.
	assert.Regexp(t, `(?m)^demo-v1-2\s+general\s+std-4vcpu-8gb-v1.*local-storage\s+shop/db-0: volume data is bound to PV local-pv-1`, res.Analyze)
	assert.Regexp(t, `(?m)^demo-v1-5\s+general.*opted-out\s+shop/report-`, res.Analyze)
	assert.Contains(t, res.Analyze, "6 nodes: candidate 4, local-storage 1, opted-out 1")

	// propose pushed a branch; the reviewer saw it, its summary and diff, and merged it.
	assert.Regexp(t, `^local/general: opened branch rebalancer/local/general plan local-general-\d{8}-[0-9a-f]{6}\n$`, res.Propose)
	for _, want := range []string{"$ git -C fleet branch -r\n  origin/main\n  origin/rebalancer/local/general",
		"Replace 4 nodes of node group general in cluster local, rolling, saving $58.40 per month",
		"+kind: RebalancePlan", "$ git -C fleet push -q origin main"} {
		assert.Contains(t, shown.String(), want)
	}

	// The controller printed one line per step (4 nodes × 6 steps, in the rolling
	// order) and nothing else on stdout.
	lines := strings.Split(strings.TrimSpace(res.Controller), "\n")
	require.Len(t, lines, 24, res.Controller)
	step := regexp.MustCompile(`^\d\d:\d\d:\d\d  ` + regexp.QuoteMeta(res.Plan) + `  (demo-v1-\d)\s+(\w+)\s+Succeeded\s+\d+\.\ds(  → \S+)?$`)
	actions := []string{"provision", "waitReady", "cordon", "drain", "verify", "terminate"}
	nodes := []string{"demo-v1-0", "demo-v1-1", "demo-v1-3", "demo-v1-4"}
	for i, l := range lines {
		m := step.FindStringSubmatch(l)
		require.NotNil(t, m, "line %d: %q", i, l)
		assert.Equal(t, nodes[i/6], m[1], l)
		assert.Equal(t, actions[i%6], m[2], l)
	}

	// git: the plan Succeeded; every status commit is the plan's, Running first.
	require.NotNil(t, res.Status)
	st := res.Status.Status
	assert.Equal(t, api.PhaseSucceeded, st.Phase, st.Message)
	assert.Len(t, st.ProvisionedNodes, 4)
	assert.InDelta(t, 58.4, st.RealizedMonthlySavings, 1e-9)
	assert.Nil(t, st.Rollback)
	// Status commits, phase changes in order: Pending (merged, seen), Running (before
	// the first change; progress within it coalesced), Succeeded.
	var phases []api.Phase
	for _, p := range res.Phases {
		if len(phases) == 0 || phases[len(phases)-1] != p {
			phases = append(phases, p)
		}
	}
	assert.Equal(t, []api.Phase{api.PhasePending, api.PhaseRunning, api.PhaseSucceeded}, phases, "%v", res.Phases)
	assert.Regexp(t, `(?m)^TIME\s+PLAN\s+PHASE\s+AUTHOR\s+COMMIT$`, res.History)
	assert.Regexp(t, `(?m)^TIME.*\n\S+\s+`+regexp.QuoteMeta(res.Plan)+`\s+Pending\s+rebalancer\[bot\]\s+[0-9a-f]{10}$`, res.History, "Pending is the first entry")
	assert.Regexp(t, `(?m)^\S+\s+`+regexp.QuoteMeta(res.Plan)+`\s+Running\s+rebalancer\[bot\]\s+[0-9a-f]{10}$`, res.History)
	assert.Regexp(t, `(?m)^\S+\s+`+regexp.QuoteMeta(res.Plan)+`\s+Succeeded\s+rebalancer\[bot\]\s+[0-9a-f]{10}\n*$`, res.History, "Succeeded is the last entry")
	assert.Regexp(t, `(?m)^[0-9a-f]{7} rebalancer: `+regexp.QuoteMeta(res.Plan)+` Succeeded$`, shown.String(), "git log --oneline of the status branch")
	assert.Regexp(t, `Realized savings:\s+58\.40/month`, shown.String())

	// The cluster: 6 v1 nodes before; after, the two left out are still there and
	// the 4 candidates were replaced by v2 nodes.
	require.Len(t, res.NodesBefore, 6)
	for _, off := range res.NodesBefore {
		assert.Equal(t, "std-4vcpu-8gb-v1", off)
	}
	assert.Len(t, res.NodesAfter, 6, "%v", res.NodesAfter)
	assert.Equal(t, "std-4vcpu-8gb-v1", res.NodesAfter["demo-v1-2"])
	assert.Equal(t, "std-4vcpu-8gb-v1", res.NodesAfter["demo-v1-5"])
	for _, n := range nodes {
		assert.NotContains(t, res.NodesAfter, n, "replaced")
	}
	for _, n := range st.ProvisionedNodes {
		assert.Equal(t, "std-4vcpu-8gb-v2", res.NodesAfter[n], n)
	}

	// Nothing is left behind: no process names the demo's directory, which is gone.
	assert.Empty(t, processesUnder(res.Dir))
	_, err = os.Stat(res.Dir)
	assert.True(t, os.IsNotExist(err), "%s removed", res.Dir)
	assert.Contains(t, shown.String(), "no process of the demo is left running")
	assert.Less(t, res.Took, 3*time.Minute, "the demo's own budget")
}
