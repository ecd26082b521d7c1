package gittest

import (
	"fmt"
	"testing"
	"time"

	api "github.com/rebalancer-dev/rebalancer/api/v1alpha1"
)

// Plan builds a valid RebalancePlan for cluster and group replacing nodes with a
// cheaper offering, one node per batch; suffix makes the ID unique.
func Plan(cluster, group, suffix string, created time.Time, nodes ...string) *api.RebalancePlan {
	spec := api.PlanSpec{Cluster: cluster, NodeGroup: group, Policy: group, Strategy: api.StrategyRolling,
		MaxConcurrent: 1, DrainTimeout: api.Duration{Duration: 300 * time.Second},
		CreatedAt: api.NewTime(created), NotAfter: api.NewTime(created.Add(7 * 24 * time.Hour))}
	for i, n := range nodes {
		spec.Candidates = append(spec.Candidates, api.Candidate{Node: n, ProviderID: "kwok://" + n,
			Current:        api.Offering{Name: "std-4vcpu-8gb-v1", Datacenter: "fra1", Arch: "amd64", HourlyPrice: 0.08},
			Replacement:    api.Offering{Name: "std-4vcpu-8gb-v2", Datacenter: "fra1", Arch: "amd64", HourlyPrice: 0.06},
			MonthlySavings: 14.6, Age: api.Days(30)})
		for _, a := range api.Actions {
			spec.Steps = append(spec.Steps, api.Step{Batch: i + 1, Action: a, Node: n})
		}
		spec.EstimatedMonthlySavings += 14.6
	}
	spec.EstimatedDuration = api.Duration{Duration: time.Duration(len(nodes)) * 8 * time.Minute}
	spec.ContentDigest = spec.ComputeContentDigest()
	return &api.RebalancePlan{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: api.KindPlan},
		Metadata: api.ObjectMeta{Name: api.PlanID(cluster, group, created, suffix)}, Spec: spec}
}

// Status builds a valid RebalanceStatus of a plan.
func Status(plan *api.RebalancePlan, phase api.Phase, finished time.Time) *api.RebalanceStatus {
	st := &api.RebalanceStatus{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: api.KindStatus},
		Metadata: api.ObjectMeta{Name: plan.Metadata.Name},
		Status:   api.PlanStatus{Phase: phase, Cluster: plan.Spec.Cluster, PlanDigest: plan.Spec.ContentDigest}}
	if phase.Terminal() {
		st.Status.StartedAt = api.NewTime(finished.Add(-10 * time.Minute))
		st.Status.FinishedAt = api.NewTime(finished)
	}
	if phase == api.PhaseSucceeded {
		for _, c := range plan.Spec.Candidates {
			st.Status.CordonedNodes = append(st.Status.CordonedNodes, c.Node)
		}
	}
	return st
}

// YAML renders a plan, status or policy as rebalancer writes it.
func YAML(t testing.TB, obj any) string {
	t.Helper()
	b, err := api.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Policy is a valid RebalancePolicy selecting nodes labelled pool=<name>, one node
// group per policy, no minimum age.
func Policy(name string) string {
	return fmt.Sprintf(`apiVersion: rebalancer.dev/v1alpha1
kind: RebalancePolicy
metadata:
  name: %s
spec:
  nodeSelector:
    matchLabels:
      pool: %s
  minNodeAge: 0s
  cooldownPeriod: 1h
`, name, name)
}
