package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/klog/v2"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/rebalancer-dev/rebalancer/executor"
)

func TestProgressPrinterOneLinePerStep(t *testing.T) {
	clk := clocktesting.NewFakePassiveClock(time.Date(2026, 3, 7, 14, 2, 11, 0, time.UTC))
	var out bytes.Buffer
	p := newProgressPrinter(&out, clk)
	const plan = "local-general-20260307-3f9a1c"
	p.Print(executor.Progress{Plan: plan, Node: "demo-v1-0", NewNode: "std-v2-x7k2p", Action: "provision", Phase: "Succeeded", Elapsed: 412 * time.Millisecond})
	clk.SetTime(clk.Now().Add(8 * time.Second))
	p.Print(executor.Progress{Plan: plan, Node: "demo-v1-0", NewNode: "std-v2-x7k2p", Action: "drain", Phase: "Succeeded", Elapsed: 2*time.Minute + 4600*time.Millisecond})
	p.Print(executor.Progress{Plan: plan, Node: "demo-v1-1", NewNode: "std-v2-q9", Action: "terminate", Phase: "Succeeded", Rollback: true})

	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	require.Len(t, lines, 3, out.String())
	assert.Equal(t, "14:02:11  "+plan+"  demo-v1-0     provision    Succeeded    0.4s  → std-v2-x7k2p", lines[0])
	assert.Equal(t, "14:02:19  "+plan+"  demo-v1-0     drain        Succeeded    2m5s", lines[1])
	assert.Equal(t, "14:02:19  "+plan+"  demo-v1-1     ↩ terminate  Succeeded       -  (rollback) of std-v2-q9", lines[2])
}

func TestControllerLogFormat(t *testing.T) {
	var stdout, stderr bytes.Buffer
	log, printProgress, err := controllerLogging("progress", &stdout, &stderr)
	require.NoError(t, err)
	t.Cleanup(klog.ClearLogger)
	log.Info("claimed") // below WARN: not shown
	klog.InfoS("Attempting to acquire leader lease...", "lock", "ns/name")
	log.Warn("status push failed", "plan", "p")
	klog.ErrorS(errors.New("boom"), "error retrieving resource lock")
	printProgress(executor.Progress{Plan: "p", Node: "n", Action: "cordon", Phase: "Succeeded", Elapsed: time.Second})
	assert.NotContains(t, stderr.String(), "claimed")
	assert.NotContains(t, stderr.String(), "leader lease", "client-go's INFO lines are not shown")
	assert.Contains(t, stderr.String(), `level=ERROR msg="error retrieving resource lock"`, "its errors are")
	assert.Contains(t, stderr.String(), `level=WARN msg="status push failed" plan=p`)
	assert.Regexp(t, `^\d\d:\d\d:\d\d  p  n\s+cordon\s+Succeeded\s+1\.0s\n$`, stdout.String())

	for format, want := range map[string]string{"json": `{"time":`, "text": "level=INFO msg=claimed"} {
		stdout.Reset()
		stderr.Reset()
		log, printProgress, err := controllerLogging(format, &stdout, &stderr)
		require.NoError(t, err)
		log.Info("claimed")
		printProgress(executor.Progress{Plan: "p", Node: "n", Action: "cordon"})
		assert.Contains(t, stderr.String(), want, format)
		assert.Empty(t, stdout.String(), "%s prints no progress lines", format)
	}

	code, _, errOut := runCLI(t, "controller", "--log-format", "yaml", "--repo", "https://example.invalid/x.git")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, `--log-format "yaml": use json, text or progress`)
}
