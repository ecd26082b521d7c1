// Package planner is the analyzer: it gives every node exactly one reason, picks
// the best replacement for each candidate, and turns the candidates of each node
// group into a RebalancePlan with ordered steps, savings, an estimated duration and
// the safety checks a reviewer needs. Every rule it applies comes from package
// policies, so the executor re-checks a merged plan with the same rules.
package planner

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	api "github.com/rebalancer-dev/rebalancer/api/v1alpha1"
	"github.com/rebalancer-dev/rebalancer/cloud"
	"github.com/rebalancer-dev/rebalancer/policies"
)

// History is what the analyzer needs to know of earlier plans; the caller fills it
// from the StatusStore, so this package never touches git.
type History struct {
	// PendingNodes maps nodes in an open proposal or a merged plan that has not
	// finished to that plan's ID.
	PendingNodes map[string]string
	// LastFinished maps GroupKey(policy, group) to when the group's last plan that
	// changed something finished.
	LastFinished map[string]time.Time
}

// GroupKey identifies a node group under a policy.
func GroupKey(policy, group string) string { return policy + "/" + group }

// Inputs is everything one analysis looks at.
type Inputs struct {
	Cluster   string
	Snapshot  *policies.Snapshot
	Policies  *policies.Policies
	Offerings []cloud.Offering
	History   History
	Now       time.Time
	// MaxNodesPerPlan is the controller's hard limit (0: only the policy's).
	MaxNodesPerPlan int
}

// NodeReport is one row of the analysis: a node and its one reason.
type NodeReport struct {
	Node        string
	Policy      string
	Group       string
	Offering    string
	Datacenter  string
	HourlyPrice float64
	// Replacement is the best offering found, when one was (candidates, and nodes
	// under the threshold).
	Replacement      string
	ReplacementPrice float64
	MonthlySavings   float64
	SavingsPercent   float64
	Age              time.Duration
	Reason           policies.Reason
	Detail           string
}

// Analysis is the outcome: a report per node and a plan per node group with candidates.
type Analysis struct {
	Nodes []NodeReport
	Plans []*api.RebalancePlan
}

// Counts tallies the nodes per reason.
func (a *Analysis) Counts() map[policies.Reason]int {
	out := map[policies.Reason]int{}
	for _, n := range a.Nodes {
		out[n.Reason]++
	}
	return out
}

// Analyze classifies every node and builds plans. It is a pure function of its
// inputs: no I/O, the clock passed in.
func Analyze(in Inputs) (*Analysis, error) {
	a := &Analysis{Nodes: make([]NodeReport, 0, len(in.Snapshot.Nodes))}
	daemonPods := map[string][]*corev1.Pod{}
	for _, n := range in.Snapshot.Nodes {
		for _, p := range in.Snapshot.PodsOn(n.Name) {
			if policies.IsDaemonSetPod(p) {
				daemonPods[n.Name] = append(daemonPods[n.Name], p)
			}
		}
	}
	type groupKey struct{ policy, group string }
	groups := map[groupKey][]NodeReport{}
	localStorage := map[groupKey]int{}
	catalog := policies.NewCatalog(in.Offerings)
	for _, n := range in.Snapshot.Nodes {
		r := classify(n, in, catalog, daemonPods[n.Name])
		a.Nodes = append(a.Nodes, r)
		k := groupKey{r.Policy, r.Group}
		switch r.Reason {
		case policies.ReasonCandidate:
			groups[k] = append(groups[k], r)
		case policies.ReasonLocalStorage:
			localStorage[k]++
		}
	}
	sort.Slice(a.Nodes, func(i, j int) bool { return a.Nodes[i].Node < a.Nodes[j].Node })
	keys := make([]groupKey, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].policy != keys[j].policy {
			return keys[i].policy < keys[j].policy
		}
		return keys[i].group < keys[j].group
	})
	for _, k := range keys {
		plan, err := buildPlan(in, in.Policies.Get(k.policy), k.group, groups[k], localStorage[k])
		if err != nil {
			return nil, err
		}
		a.Plans = append(a.Plans, plan)
	}
	return a, nil
}

// classify gives a node its one reason, testing in the order of policies.AllReasons.
func classify(n *corev1.Node, in Inputs, catalog *policies.Catalog, daemonPods []*corev1.Pod) NodeReport {
	r := NodeReport{Node: n.Name, Age: in.Now.Sub(n.CreationTimestamp.Time)}
	if n.CreationTimestamp.IsZero() {
		r.Age = 0
	}
	r.Offering = n.Labels[policies.LabelOffering]
	if r.Offering == "" {
		r.Offering = n.Labels[corev1.LabelInstanceTypeStable]
	}
	r.Datacenter = n.Labels[corev1.LabelTopologyRegion]
	set := func(reason policies.Reason, format string, args ...any) NodeReport {
		r.Reason, r.Detail = reason, fmt.Sprintf(format, args...)
		return r
	}
	if policies.IsControlPlane(n) {
		return set(policies.ReasonControlPlane, "control-plane nodes are never replaced")
	}
	policy, reason, detail := in.Policies.Match(n)
	if policy == nil {
		return set(reason, "%s", detail)
	}
	r.Policy = policy.Metadata.Name
	spec := &policy.Spec
	r.Group = policies.NodeGroup(n, policy)
	if r.Group == "" {
		return set(policies.ReasonNoPolicy, "policy %s selects this node but it lacks the node group label %s", policy.Metadata.Name, spec.NodeGroupLabel)
	}
	if owner, other := policies.OwnedByOther(n, policy); other {
		return set(policies.ManagedBy(owner), "owned by %s; the policy does not opt in (managedNodes)", owner)
	}
	if spec.Paused {
		return set(policies.ReasonPaused, "policy %s is paused", policy.Metadata.Name)
	}
	if policies.NodeOptedOut(n) {
		return set(policies.ReasonOptedOut, "the node opts out of disruption")
	}
	if id, ok := in.History.PendingNodes[n.Name]; ok {
		return set(policies.ReasonInPendingPlan, "in plan %s, not finished", id)
	}
	if until, cooling := policies.Cooldown(in.Now, in.History.LastFinished[GroupKey(r.Policy, r.Group)], spec.CooldownPeriod.Duration); cooling {
		return set(policies.ReasonCooldown, "node group %s rests until %s", r.Group, until.UTC().Format(time.RFC3339))
	}
	if r.Age < spec.MinNodeAge.Duration {
		return set(policies.ReasonTooYoung, "%s old, younger than minNodeAge %s", r.Age.Round(time.Minute), spec.MinNodeAge)
	}
	current, why := policies.NodeOffering(n, in.Offerings)
	if current == nil {
		return set(policies.ReasonUnknownOffering, "%s", why)
	}
	r.HourlyPrice = current.HourlyPrice
	if blockers := in.Snapshot.NodeBlockers(n.Name, spec); len(blockers) > 0 {
		extra := ""
		if len(blockers) > 1 {
			extra = fmt.Sprintf(" (and %d more)", len(blockers)-1)
		}
		return set(blockers[0].Reason, "%s%s", blockers[0], extra)
	}
	choice := policies.ChooseReplacement(n, current, in.Snapshot.Evictable(n.Name), daemonPods, catalog, spec)
	if choice.Replacement != nil {
		r.Replacement = choice.Replacement.Name
		r.ReplacementPrice = choice.Replacement.HourlyPrice
		r.SavingsPercent = choice.SavingsPercent
		r.MonthlySavings = money((current.HourlyPrice - choice.Replacement.HourlyPrice) * api.HoursPerMonth)
	}
	return set(choice.Reason, "%s", choice.Detail)
}

// Estimates behind a plan's estimatedDuration: a replacement's provisioning, and a
// drain (bounded by drainTimeout) with its verification.
const (
	provisionEstimate = 5 * time.Minute
	drainEstimate     = 3 * time.Minute
)

func buildPlan(in Inputs, policy *api.RebalancePolicy, group string, cands []NodeReport, localStorageExcluded int) (*api.RebalancePlan, error) {
	spec := &policy.Spec
	sort.Slice(cands, func(i, j int) bool {
		if cands[i].MonthlySavings != cands[j].MonthlySavings {
			return cands[i].MonthlySavings > cands[j].MonthlySavings
		}
		return cands[i].Node < cands[j].Node
	})
	limit := spec.MaxNodesPerPlan
	if in.MaxNodesPerPlan > 0 && in.MaxNodesPerPlan < limit {
		limit = in.MaxNodesPerPlan
	}
	if len(cands) > limit {
		cands = cands[:limit]
	}
	offerings := map[string]*cloud.Offering{}
	for i := range in.Offerings {
		offerings[in.Offerings[i].Key()] = &in.Offerings[i]
	}
	ps := api.PlanSpec{
		Cluster: in.Cluster, NodeGroup: group, Policy: policy.Metadata.Name, Strategy: spec.Strategy,
		MaxConcurrent: spec.MaxConcurrent, DrainTimeout: spec.DrainTimeout,
		CreatedAt: api.NewTime(in.Now), NotAfter: api.NewTime(in.Now.Add(spec.PlanTTL.Duration)),
	}
	nodes := make([]string, len(cands))
	total := 0.0
	for i, c := range cands {
		nodes[i] = c.Node
		n := in.Snapshot.Node(c.Node)
		cur, repl := offerings[c.Datacenter+"/"+c.Offering], offerings[c.Datacenter+"/"+c.Replacement]
		if cur == nil || repl == nil {
			return nil, fmt.Errorf("internal error: offering of candidate %s vanished", c.Node)
		}
		ps.Candidates = append(ps.Candidates, api.Candidate{
			Node: c.Node, ProviderID: n.Spec.ProviderID,
			Current: apiOffering(cur), Replacement: apiOffering(repl),
			MonthlySavings: c.MonthlySavings, Age: api.Duration{Duration: c.Age.Round(time.Minute)},
		})
		total += c.MonthlySavings
	}
	ps.EstimatedMonthlySavings = money(total)
	strategy, err := policies.StrategyFor(spec.Strategy)
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", policy.Metadata.Name, err)
	}
	ps.Steps = strategy.Steps(nodes, spec.MaxConcurrent)
	ps.EstimatedDuration = api.Duration{Duration: EstimateDuration(spec.Strategy, len(nodes), spec.MaxConcurrent, spec.DrainTimeout.Duration)}
	ps.ContentDigest = ps.ComputeContentDigest()
	ps.SafetyChecks = safetyChecks(in, policy, group, nodes, ps.EstimatedDuration.Duration, localStorageExcluded)

	sum := sha256.Sum256([]byte(fmt.Sprintf("%s %d", ps.ContentDigest, in.Now.UnixNano())))
	id := api.PlanID(in.Cluster, group, in.Now, hex.EncodeToString(sum[:])[:6])
	return &api.RebalancePlan{
		TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: api.KindPlan},
		Metadata: api.ObjectMeta{Name: id},
		Spec:     ps,
	}, nil
}

// EstimateDuration guesses how long a plan runs: each batch provisions and drains
// in turn (rolling), or all provisioning happens once and drains follow in batches
// (surge, blue-green).
func EstimateDuration(s api.Strategy, nodes, maxConcurrent int, drainTimeout time.Duration) time.Duration {
	if maxConcurrent < 1 {
		maxConcurrent = 1
	}
	batches := (nodes + maxConcurrent - 1) / maxConcurrent
	drain := min(drainEstimate, drainTimeout)
	if s == api.StrategyRolling {
		return time.Duration(batches) * (provisionEstimate + drain)
	}
	return provisionEstimate + time.Duration(batches)*drain
}

func safetyChecks(in Inputs, policy *api.RebalancePolicy, group string, nodes []string, duration time.Duration, localStorageExcluded int) []api.SafetyCheck {
	spec := &policy.Spec
	var out []api.SafetyCheck
	h := policies.ClusterHealth(in.Snapshot.Nodes, nil, spec.MaxUnhealthyPercent, spec.MaxUnhealthyCount)
	out = append(out, api.SafetyCheck{Name: "cluster-health", Result: passIf(h.Healthy, api.CheckWait), Message: h.Message})

	var blocked []string
	for _, n := range nodes {
		blocked = append(blocked, in.Snapshot.TemporarilyBlocked(n)...)
	}
	blocked = uniq(blocked)
	if len(blocked) > 0 {
		out = append(out, api.SafetyCheck{Name: "pdbs", Result: api.CheckWait,
			Message: "allow no disruption right now, execution will wait: " + strings.Join(blocked, ", ")})
	} else {
		out = append(out, api.SafetyCheck{Name: "pdbs", Result: api.CheckPass, Message: "every PDB covering these nodes allows disruption"})
	}
	out = append(out, api.SafetyCheck{Name: "local-storage", Result: api.CheckPass,
		Message: fmt.Sprintf("no candidate holds node-local data (emptyDir: %s)%s", spec.LocalStorage.EmptyDir, plural(localStorageExcluded))})

	sched, err := policies.ScheduleFor(policy)
	switch {
	case err != nil:
		out = append(out, api.SafetyCheck{Name: "maintenance-window", Result: api.CheckFail, Message: err.Error()})
	case sched.Always():
		out = append(out, api.SafetyCheck{Name: "maintenance-window", Result: api.CheckPass, Message: "no maintenance windows: may start at any time"})
	default:
		d := sched.Admit(in.Now, duration)
		msg := "fits in the current window"
		res := api.CheckPass
		if !d.Allowed {
			res, msg = api.CheckWait, d.Reason
			if d.NextStart.IsZero() {
				res = api.CheckFail
			}
		}
		out = append(out, api.SafetyCheck{Name: "maintenance-window", Result: res,
			Message: fmt.Sprintf("%s (%s, %s)", msg, strings.Join(spec.MaintenanceWindows, ", "), spec.TimeZone)})
	}
	if until, cooling := policies.Cooldown(in.Now, in.History.LastFinished[GroupKey(policy.Metadata.Name, group)], spec.CooldownPeriod.Duration); cooling {
		out = append(out, api.SafetyCheck{Name: "cooldown", Result: api.CheckWait, Message: "node group rests until " + until.UTC().Format(time.RFC3339)})
	} else {
		out = append(out, api.SafetyCheck{Name: "cooldown", Result: api.CheckPass, Message: fmt.Sprintf("cooldownPeriod %s", spec.CooldownPeriod)})
	}
	return out
}

func plural(n int) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprintf("; %d node(s) of the group left out for it", n)
}

func passIf(ok bool, otherwise api.CheckResult) api.CheckResult {
	if ok {
		return api.CheckPass
	}
	return otherwise
}

func uniq(s []string) []string {
	sort.Strings(s)
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

func apiOffering(o *cloud.Offering) api.Offering {
	cpu, mem := o.CPU.DeepCopy(), o.Memory.DeepCopy()
	return api.Offering{Name: o.Name, Datacenter: o.Datacenter, Arch: o.Arch, HourlyPrice: o.HourlyPrice, CPU: &cpu, Memory: &mem}
}

// money rounds to cents.
func money(v float64) float64 { return math.Round(v*100) / 100 }
