package policies

import (
	"fmt"
	"slices"
	"strings"
	"time"

	api "github.com/rebalancer-dev/rebalancer/api/v1alpha1"
	"github.com/rebalancer-dev/rebalancer/cloud"
)

// Limits are the controller's hard limits, set by flags; no file in the repository
// loosens them.
type Limits struct {
	ClusterName          string
	MaxNodesPerPlan      int      // 0: no limit beyond the policy's
	MaxConcurrentPlans   int      // enforced by the reconciler; recorded here for messages
	AllowedNodeGroups    []string // empty: all
	RequireSignedCommits bool     // enforced by the reconciler
}

// Verdict is what to do with a merged plan now.
type Verdict string

// Verdicts.
const (
	Run    Verdict = "run"
	Wait   Verdict = "wait"
	Reject Verdict = "reject"
	Expire Verdict = "expire"
)

// Decision is Revalidate's answer.
type Decision struct {
	Verdict Verdict
	// Reasons explains a wait, a rejection or an expiry, one line each.
	Reasons []string
	// WaitUntil, for a wait, is the earliest moment worth another look (zero: next pass).
	WaitUntil time.Time
	// Skip names candidates to leave alone mid-plan, with why; they are never evicted.
	Skip map[string]string
	// Health is the cluster-health gate's verdict; a running plan that sees it fail
	// freezes instead of waiting.
	Health Health
}

// RevalidateInput is the world a plan is checked against.
type RevalidateInput struct {
	Snapshot  *Snapshot
	Policies  *Policies // from the watched branch now
	Offerings []cloud.Offering
	Limits    Limits
	Now       time.Time
	// LastFinished is when the node group's last plan that changed something ended.
	LastFinished time.Time
	// Started: the plan has made changes; failing candidates are skipped, not fatal.
	Started bool
	// Done lists candidates already replaced; they are not checked again.
	Done map[string]bool
	// EstimatedDuration is what must fit in the maintenance window to start.
	EstimatedDuration time.Duration
	// ExcludeFromHealth are new nodes not yet past WaitReady.
	ExcludeFromHealth map[string]bool
}

var strategyRisk = map[api.Strategy]int{api.StrategyRolling: 0, api.StrategySurge: 1, api.StrategyBlueGreen: 2}

// Revalidate checks a merged plan against the cluster, the policy on the watched
// branch and the hard limits of now (DESIGN.md invariant 3). Before the first change
// anything wrong rejects the plan, or makes it wait when the cause is temporary;
// once started, a candidate that no longer qualifies is skipped with its reason.
func Revalidate(plan *api.RebalancePlan, in RevalidateInput) Decision {
	var reject, wait []string
	var waitUntil time.Time
	waitFor := func(until time.Time, format string, args ...any) {
		wait = append(wait, fmt.Sprintf(format, args...))
		if !until.IsZero() && (waitUntil.IsZero() || until.After(waitUntil)) {
			waitUntil = until
		}
	}
	spec := &plan.Spec

	if !in.Started && !in.Now.Before(spec.NotAfter.Time) {
		return Decision{Verdict: Expire, Reasons: []string{fmt.Sprintf("notAfter %s has passed", spec.NotAfter.Format(time.RFC3339))}}
	}
	if spec.Cluster != in.Limits.ClusterName {
		reject = append(reject, fmt.Sprintf("the plan is for cluster %q but this controller runs cluster %q", spec.Cluster, in.Limits.ClusterName))
	}
	if len(in.Limits.AllowedNodeGroups) > 0 && !slices.Contains(in.Limits.AllowedNodeGroups, spec.NodeGroup) {
		reject = append(reject, fmt.Sprintf("node group %q is not in --allowed-node-groups (%s)", spec.NodeGroup, strings.Join(in.Limits.AllowedNodeGroups, ", ")))
	}
	if in.Limits.MaxNodesPerPlan > 0 && len(spec.Candidates) > in.Limits.MaxNodesPerPlan {
		reject = append(reject, fmt.Sprintf("%d candidates exceed --max-nodes-per-plan %d", len(spec.Candidates), in.Limits.MaxNodesPerPlan))
	}
	if spec.ContentDigest != "" && spec.ContentDigest != spec.ComputeContentDigest() {
		reject = append(reject, "contentDigest does not match the candidates: the plan was edited after it was proposed")
	}
	if s, err := StrategyFor(spec.Strategy); err != nil {
		reject = append(reject, err.Error())
	} else if len(spec.Steps) > 0 && !slices.Equal(s.Steps(candidateNodes(plan), spec.MaxConcurrent), spec.Steps) {
		reject = append(reject, fmt.Sprintf("the steps differ from what strategy %s with maxConcurrent %d produces: steps are generated, not edited", spec.Strategy, spec.MaxConcurrent))
	}

	policy := in.Policies.Get(spec.Policy)
	if policy == nil {
		reject = append(reject, fmt.Sprintf("policy %q no longer exists on the watched branch", spec.Policy))
		return Decision{Verdict: Reject, Reasons: reject}
	}
	ps := &policy.Spec
	if strategyRisk[spec.Strategy] > strategyRisk[ps.Strategy] {
		reject = append(reject, fmt.Sprintf("strategy %s is riskier than the policy's %s", spec.Strategy, ps.Strategy))
	}
	if spec.MaxConcurrent > ps.MaxConcurrent {
		reject = append(reject, fmt.Sprintf("maxConcurrent %d exceeds the policy's %d", spec.MaxConcurrent, ps.MaxConcurrent))
	}
	if spec.DrainTimeout.Duration > ps.DrainTimeout.Duration {
		reject = append(reject, fmt.Sprintf("drainTimeout %s exceeds the policy's %s", spec.DrainTimeout, ps.DrainTimeout))
	}
	if len(spec.Candidates) > ps.MaxNodesPerPlan {
		reject = append(reject, fmt.Sprintf("%d candidates exceed the policy's maxNodesPerPlan %d", len(spec.Candidates), ps.MaxNodesPerPlan))
	}
	if ps.Paused {
		waitFor(time.Time{}, "policy %s is paused", policy.Metadata.Name)
	}

	skip := map[string]string{}
	for i := range spec.Candidates {
		c := &spec.Candidates[i]
		if in.Done[c.Node] {
			continue
		}
		if why, temporary := checkCandidate(c, plan, policy, in); why != "" {
			switch {
			case temporary: // a PDB at zero now: wait before starting, or before the batch
				waitFor(time.Time{}, "%s: %s", c.Node, why)
			case in.Started:
				skip[c.Node] = why
			default:
				reject = append(reject, fmt.Sprintf("%s: %s", c.Node, why))
			}
		}
	}

	if !in.Started {
		if until, cooling := Cooldown(in.Now, in.LastFinished, ps.CooldownPeriod.Duration); cooling {
			waitFor(until, "node group %s is cooling down until %s", spec.NodeGroup, until.Format(time.RFC3339))
		}
		sched, err := ScheduleFor(policy)
		if err != nil {
			reject = append(reject, err.Error())
		} else if d := sched.Admit(in.Now, in.EstimatedDuration); !d.Allowed {
			if d.NextStart.IsZero() {
				reject = append(reject, d.Reason)
			} else {
				waitFor(d.NextStart, "%s", d.Reason)
			}
		}
	}
	h := ClusterHealth(in.Snapshot.Nodes, in.ExcludeFromHealth, ps.MaxUnhealthyPercent, ps.MaxUnhealthyCount)
	if !h.Healthy {
		waitFor(time.Time{}, "cluster unhealthy: %s", h.Message)
	}
	d := decide(reject, wait, waitUntil, skip)
	d.Health = h
	return d
}

func decide(reject, wait []string, until time.Time, skip map[string]string) Decision {
	switch {
	case len(reject) > 0:
		return Decision{Verdict: Reject, Reasons: reject}
	case len(wait) > 0:
		return Decision{Verdict: Wait, Reasons: wait, WaitUntil: until}
	}
	return Decision{Verdict: Run, Skip: skip}
}

// checkCandidate re-applies the candidate rules to one node. temporary marks causes
// worth waiting for (a PDB at zero right now) rather than rejecting.
func checkCandidate(c *api.Candidate, plan *api.RebalancePlan, policy *api.RebalancePolicy, in RevalidateInput) (why string, temporary bool) {
	n := in.Snapshot.Node(c.Node)
	if n == nil {
		return "the node no longer exists", false
	}
	if n.Spec.ProviderID != c.ProviderID {
		return fmt.Sprintf("providerID is now %q, not %q: it is another machine", n.Spec.ProviderID, c.ProviderID), false
	}
	if IsControlPlane(n) {
		return "the node is a control-plane node", false
	}
	matched, reason, detail := in.Policies.Match(n)
	if matched == nil {
		return fmt.Sprintf("%s: %s", reason, detail), false
	}
	if matched.Metadata.Name != policy.Metadata.Name {
		return fmt.Sprintf("the node now belongs to policy %s", matched.Metadata.Name), false
	}
	if g := NodeGroup(n, policy); g != plan.Spec.NodeGroup {
		return fmt.Sprintf("the node is now in node group %q", g), false
	}
	if owner, other := OwnedByOther(n, policy); other {
		return fmt.Sprintf("the node is now managed by %s", owner), false
	}
	if NodeOptedOut(n) {
		return "the node now opts out of disruption", false
	}
	var current, replacement *cloud.Offering
	for i := range in.Offerings {
		o := &in.Offerings[i]
		if o.Name == c.Current.Name && o.Datacenter == c.Current.Datacenter {
			current = o
		}
		if o.Name == c.Replacement.Name && o.Datacenter == c.Replacement.Datacenter {
			replacement = o
		}
	}
	if replacement == nil {
		return fmt.Sprintf("offering %s is no longer offered in %s", c.Replacement.Name, c.Replacement.Datacenter), false
	}
	if len(policy.Spec.AllowedOfferings) > 0 && !slices.Contains(policy.Spec.AllowedOfferings, replacement.Name) {
		return fmt.Sprintf("offering %s is no longer in the policy's allowedOfferings", replacement.Name), false
	}
	if current == nil {
		return fmt.Sprintf("the node's offering %s in %s is no longer in the catalog, so today's savings cannot be known", c.Current.Name, c.Current.Datacenter), false
	}
	if current.HourlyPrice <= 0 {
		return "the node's offering has no price", false
	}
	pct := 100 * (current.HourlyPrice - replacement.HourlyPrice) / current.HourlyPrice
	if pct < policy.Spec.SavingsThresholdPercent {
		return fmt.Sprintf("at today's prices (%g → %g per hour) %s saves %.1f%%, under the %g%% threshold",
			current.HourlyPrice, replacement.HourlyPrice, replacement.Name, pct, policy.Spec.SavingsThresholdPercent), false
	}
	if blockers := in.Snapshot.NodeBlockers(n.Name, &policy.Spec); len(blockers) > 0 {
		return fmt.Sprintf("%s: %s", blockers[0].Reason, blockers[0]), false
	}
	if blocked := in.Snapshot.TemporarilyBlocked(n.Name); len(blocked) > 0 {
		return fmt.Sprintf("PDB %s allows no disruption right now", strings.Join(blocked, ", ")), true
	}
	return "", false
}

func candidateNodes(plan *api.RebalancePlan) []string {
	out := make([]string, len(plan.Spec.Candidates))
	for i, c := range plan.Spec.Candidates {
		out[i] = c.Node
	}
	return out
}
