package policies

import (
	"fmt"

	api "github.com/rebalancer-dev/rebalancer/api/v1alpha1"
)

// Strategy turns a plan's candidates, in order, into the ordered steps the executor
// runs. Steps live here, not in the planner, because the executor regenerates them
// before it acts and refuses a plan whose written steps differ; both must use one
// implementation.
type Strategy interface {
	Name() api.Strategy
	Steps(nodes []string, maxConcurrent int) []api.Step
}

// Strategies in the order documentation presents them, safest first.
var strategies = []Strategy{rolling{}, surge{cordonAllFirst: false}, surge{cordonAllFirst: true}}

// StrategyFor returns the named strategy.
func StrategyFor(name api.Strategy) (Strategy, error) {
	for _, s := range strategies {
		if s.Name() == name {
			return s, nil
		}
	}
	return nil, fmt.Errorf("unknown strategy %q", name)
}

// rolling replaces maxConcurrent nodes at a time; each batch's replacements are
// Ready before its old nodes are cordoned and drained. Workloads are verified
// before the old nodes are terminated, so a failed verification can still roll the
// batch back onto them.
type rolling struct{}

func (rolling) Name() api.Strategy { return api.StrategyRolling }

func (rolling) Steps(nodes []string, maxConcurrent int) []api.Step {
	var steps []api.Step
	for b, batch := range chunk(nodes, maxConcurrent) {
		for _, a := range []api.Action{api.ActionProvision, api.ActionWaitReady, api.ActionCordon, api.ActionDrain, api.ActionVerify, api.ActionTerminate} {
			steps = append(steps, each(b+1, a, batch)...)
		}
	}
	return steps
}

// surge provisions every replacement first, then cordons and drains old nodes
// maxConcurrent at a time, verifying workloads after each batch, and terminates
// them at the end. Blue-green is surge with every old node cordoned the moment all
// replacements are Ready, so no evicted pod lands on a node drained later.
type surge struct{ cordonAllFirst bool }

func (s surge) Name() api.Strategy {
	if s.cordonAllFirst {
		return api.StrategyBlueGreen
	}
	return api.StrategySurge
}

func (s surge) Steps(nodes []string, maxConcurrent int) []api.Step {
	steps := append(each(1, api.ActionProvision, nodes), each(1, api.ActionWaitReady, nodes)...)
	if s.cordonAllFirst {
		steps = append(steps, each(1, api.ActionCordon, nodes)...)
	}
	batches := chunk(nodes, maxConcurrent)
	for i, batch := range batches {
		b := i + 2
		if !s.cordonAllFirst {
			steps = append(steps, each(b, api.ActionCordon, batch)...)
		}
		steps = append(steps, each(b, api.ActionDrain, batch)...)
		steps = append(steps, each(b, api.ActionVerify, batch)...)
	}
	return append(steps, each(len(batches)+2, api.ActionTerminate, nodes)...)
}

func each(batch int, a api.Action, nodes []string) []api.Step {
	out := make([]api.Step, len(nodes))
	for i, n := range nodes {
		out[i] = api.Step{Batch: batch, Action: a, Node: n}
	}
	return out
}

func chunk(nodes []string, size int) [][]string {
	if size < 1 {
		size = 1
	}
	var out [][]string
	for i := 0; i < len(nodes); i += size {
		out = append(out, nodes[i:min(i+size, len(nodes))])
	}
	return out
}
