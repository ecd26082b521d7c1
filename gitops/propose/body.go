package propose

import (
	"fmt"
	"sort"
	"strings"

	api "github.com/rebalancer-dev/rebalancer/api/v1alpha1"
	"github.com/rebalancer-dev/rebalancer/gitops"
	"github.com/rebalancer-dev/rebalancer/gitops/forge"
)

// Title is a proposal's title.
func Title(plan *api.RebalancePlan) string {
	s := plan.Spec
	return fmt.Sprintf("rebalancer: replace %s in %s/%s (saves %s/month)", nodes(len(s.Candidates)), s.Cluster, s.NodeGroup, money(s.EstimatedMonthlySavings))
}

// Summary is the one line a reviewer reads first: nodes, strategy, monthly
// savings, estimated duration.
func Summary(plan *api.RebalancePlan) string {
	s := plan.Spec
	return fmt.Sprintf("Replace %s of node group %s in cluster %s, %s, saving %s per month; about %s.",
		nodes(len(s.Candidates)), s.NodeGroup, s.Cluster, s.Strategy, money(s.EstimatedMonthlySavings), s.EstimatedDuration)
}

// Body is a proposal's description, written for the reviewer.
func Body(plan *api.RebalancePlan, g Group, layout gitops.Layout, f forge.Forge) string {
	s := plan.Spec
	var b strings.Builder
	fmt.Fprintf(&b, "**%s**\n\n", Summary(plan))
	fmt.Fprintf(&b, "Plan `%s` under policy `%s`, proposed %s; it must start before %s or it expires. Content digest `%s`.\n\n",
		plan.Metadata.Name, s.Policy, when(s.CreatedAt), when(s.NotAfter), s.ContentDigest)

	b.WriteString("### Candidates\n\n")
	b.WriteString("| node | age | current → replacement | per month before | per month after | saves per month |\n")
	b.WriteString("|---|---|---|---:|---:|---:|\n")
	for _, c := range s.Candidates {
		fmt.Fprintf(&b, "| `%s` | %s | %s → %s (%s, %s) | %s | %s | %s |\n", c.Node, dash(c.Age.String(), c.Age.Duration == 0),
			c.Current.Name, c.Replacement.Name, c.Replacement.Datacenter, c.Replacement.Arch,
			money(c.Current.MonthlyPrice()), money(c.Replacement.MonthlyPrice()), money(c.MonthlySavings))
	}
	fmt.Fprintf(&b, "| **total** | | | | | **%s** |\n\n", money(s.EstimatedMonthlySavings))

	b.WriteString("### Safety checks, as seen now\n\n")
	if len(s.SafetyChecks) == 0 {
		b.WriteString("None recorded.\n\n")
	} else {
		b.WriteString("| check | result | detail |\n|---|---|---|\n")
		for _, c := range s.SafetyChecks {
			fmt.Fprintf(&b, "| %s | %s | %s |\n", c.Name, c.Result, cell(c.Message))
		}
		b.WriteString("\nThe reconciler checks all of them again, against the cluster and the policy of the moment, before the first change and before each batch.\n\n")
	}

	fmt.Fprintf(&b, "### Steps (%s, at most %d node(s) at once, drain timeout %s)\n\n", s.Strategy, s.MaxConcurrent, s.DrainTimeout)
	var batches []int
	steps := map[int][]string{}
	for _, st := range s.Steps {
		if _, ok := steps[st.Batch]; !ok {
			batches = append(batches, st.Batch)
		}
		steps[st.Batch] = append(steps[st.Batch], fmt.Sprintf("%s `%s`", st.Action, st.Node))
	}
	for _, n := range batches {
		fmt.Fprintf(&b, "- **Batch %d**: %s\n", n, strings.Join(steps[n], " → "))
	}
	b.WriteString("\n")

	b.WriteString("### Left out\n\n")
	left := 0
	for _, n := range g.LeftOut {
		left += n
	}
	if left == 0 {
		b.WriteString("Every node of the group that could be replaced is in this plan.\n\n")
	} else {
		reasons := make([]string, 0, len(g.LeftOut))
		for r := range g.LeftOut {
			reasons = append(reasons, r)
		}
		sort.Strings(reasons)
		parts := make([]string, len(reasons))
		for i, r := range reasons {
			parts[i] = fmt.Sprintf("%s %d", r, g.LeftOut[r])
		}
		fmt.Fprintf(&b, "%s of the group left out: %s. `rebalancer analyze -o table` shows each node and why.\n\n", nodes(left), strings.Join(parts, ", "))
	}

	if g.Retry != nil {
		status := fmt.Sprintf("`%s` on branch `%s`", g.Retry.StatusFile, g.Retry.StatusBranch)
		if u := f.FileURL(g.Retry.StatusBranch, g.Retry.StatusFile); u != "" {
			status = fmt.Sprintf("[%s](%s)", g.Retry.StatusFile, u)
		}
		fmt.Fprintf(&b, "### A retry\n\nThis plan retries `%s`, which ended **%s**: see its status, %s.\n\n", g.Retry.ID, g.Retry.Phase, status)
	}

	file := layout.PlanFile(plan.Metadata.Name)
	fmt.Fprintf(&b, "### After merging\n\nThe reconciler runs this plan inside the policy's maintenance windows and writes every status change to `%s`. "+
		"To stop it, merge a change that sets `spec.cancel: stop` in `%s` (it stops before its next change) or `spec.cancel: rollback` "+
		"(it undoes what it started); deleting the file means stop. To discard the proposal, close this pull request: "+
		"rebalancer proposes again only when the candidates change.\n\n",
		layout.StatusFile(plan.Metadata.Name), file)
	fmt.Fprintf(&b, "<!-- rebalancer: plan=%s digest=%s -->\n", plan.Metadata.Name, s.ContentDigest)
	return b.String()
}

func nodes(n int) string {
	if n == 1 {
		return "1 node"
	}
	return fmt.Sprintf("%d nodes", n)
}

func money(v float64) string { return fmt.Sprintf("$%.2f", v) }

func when(t api.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04 UTC")
}

func dash(s string, empty bool) string {
	if empty {
		return "-"
	}
	return s
}

func cell(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "|", "\\|"), "\n", " ")
}
