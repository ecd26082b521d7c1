package main

import (
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/rebalancer-dev/rebalancer/executor"
)

// Log formats of `rebalancer controller --log-format`.
const (
	logFormatJSON     = "json"
	logFormatText     = "text"
	logFormatProgress = "progress"
)

// progressPrinter turns the executor's step reports into one line per step, for
// a person watching a plan run:
//
//	14:02:11  local-general-20260101-3f9a1c  demo-v1-0  provision  Succeeded  0.4s  → std-4vcpu-8gb-v2-x7k2p
//	14:02:19  local-general-20260101-3f9a1c  demo-v1-1  ↩ drain    Succeeded  2.1s  (rollback)
//
// Steps of a rollback are marked with ↩ and "(rollback)". It is safe for
// concurrent use: plans of different node groups run side by side.
type progressPrinter struct {
	mu    sync.Mutex
	out   io.Writer
	clock clock.PassiveClock
}

func newProgressPrinter(out io.Writer, c clock.PassiveClock) *progressPrinter {
	if c == nil {
		c = clock.RealClock{}
	}
	return &progressPrinter{out: out, clock: c}
}

// Print writes the line of one finished step.
func (p *progressPrinter) Print(pr executor.Progress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintln(p.out, progressLine(p.clock.Now(), pr))
}

// progressLine is `HH:MM:SS  <plan>  <node>  <action>  <phase>  <elapsed>`, with
// the new node after a provision and a rollback step marked.
func progressLine(now time.Time, pr executor.Progress) string {
	action := string(pr.Action)
	if pr.Rollback {
		action = "↩ " + action
	}
	line := fmt.Sprintf("%s  %s  %-12s  %-11s  %-9s  %6s", now.Format(time.TimeOnly), pr.Plan, pr.Node, action, pr.Phase, roundElapsed(pr.Elapsed))
	switch {
	case pr.Rollback:
		line += "  (rollback)"
		if pr.NewNode != "" {
			line += " of " + pr.NewNode
		}
	case pr.NewNode != "" && pr.Action == "provision":
		line += "  → " + pr.NewNode
	}
	return line
}

// roundElapsed keeps a step's duration short: 0.4s, 12.3s, 2m5s; "-" when unknown.
func roundElapsed(d time.Duration) string {
	switch {
	case d <= 0:
		return "-"
	case d < time.Minute:
		return fmt.Sprintf("%.1fs", d.Seconds())
	default:
		return d.Round(time.Second).String()
	}
}

// controllerLogging picks the controller's logger and step printer for
// --log-format: json (the default, for log collectors) and text log at INFO to
// stderr and print no progress; progress logs only warnings and errors, as text
// to stderr (client-go's klog lines included), and prints one line per step to
// stdout.
func controllerLogging(format string, stdout, stderr io.Writer) (*slog.Logger, func(executor.Progress), error) {
	switch format {
	case logFormatJSON:
		return slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo})), func(executor.Progress) {}, nil
	case logFormatText:
		return slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo})), func(executor.Progress) {}, nil
	case logFormatProgress:
		log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		// client-go (leader election, informers) logs through klog: route it to the
		// same logger, so its INFO lines do not break the one-line-per-step display.
		klog.SetSlogLogger(log)
		return log, newProgressPrinter(stdout, nil).Print, nil
	}
	return nil, nil, usageError("--log-format %q: use json, text or progress", format)
}
