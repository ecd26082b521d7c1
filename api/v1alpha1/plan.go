package v1alpha1

import (
	"k8s.io/apimachinery/pkg/api/resource"
)

// RebalancePlan is a proposal to replace some nodes of one node group. The analyzer
// writes it to rebalancer/plans/<metadata.name>.yaml in a pull request; once merged,
// the reconciler executes it.
type RebalancePlan struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta `json:"metadata"`
	Spec     PlanSpec   `json:"spec"`
}

// PlanSpec is what a reviewer approves.
type PlanSpec struct {
	Cluster       string   `json:"cluster"`
	NodeGroup     string   `json:"nodeGroup"`
	Policy        string   `json:"policy"`
	Strategy      Strategy `json:"strategy"`
	MaxConcurrent int      `json:"maxConcurrent"`
	DrainTimeout  Duration `json:"drainTimeout"`
	// CreatedAt is when the analyzer proposed the plan.
	CreatedAt Time `json:"createdAt,omitzero"`
	// NotAfter is the last moment the plan may start; a later start is Expired.
	NotAfter Time `json:"notAfter"`
	// ContentDigest covers candidates, replacements and strategy, not prices: an
	// approval is valid for exactly the content the reviewer saw.
	ContentDigest           string        `json:"contentDigest,omitempty"`
	Candidates              []Candidate   `json:"candidates"`
	Steps                   []Step        `json:"steps,omitempty"`
	EstimatedMonthlySavings float64       `json:"estimatedMonthlySavings"`
	EstimatedDuration       Duration      `json:"estimatedDuration,omitzero"`
	SafetyChecks            []SafetyCheck `json:"safetyChecks,omitempty"`
	// RetryOf names the earlier plan this one retries after it did not succeed.
	RetryOf string `json:"retryOf,omitempty"`
	// Cancel is set by people on a merged plan: stop before the next change, or roll back.
	Cancel Cancel `json:"cancel,omitempty"`
}

// Candidate is one node to replace and what replaces it.
type Candidate struct {
	Node        string   `json:"node"`
	ProviderID  string   `json:"providerID"`
	Current     Offering `json:"current"`
	Replacement Offering `json:"replacement"`
	// MonthlySavings is (current - replacement) hourly price × 730 hours.
	MonthlySavings float64 `json:"monthlySavings"`
	// Age is how old the node was when the plan was proposed.
	Age Duration `json:"age,omitzero"`
}

// Offering is a kind of machine the cloud sells in one datacenter, at a price.
type Offering struct {
	Name        string             `json:"name"`
	Datacenter  string             `json:"datacenter"`
	Arch        string             `json:"arch"`
	HourlyPrice float64            `json:"hourlyPrice"`
	CPU         *resource.Quantity `json:"cpu,omitempty"`
	Memory      *resource.Quantity `json:"memory,omitempty"`
}

// HoursPerMonth converts hourly prices to monthly ones (365 × 24 / 12).
const HoursPerMonth = 730

// MonthlyPrice is the offering's price over an average month.
func (o Offering) MonthlyPrice() float64 { return o.HourlyPrice * HoursPerMonth }

// Action is one kind of step the executor performs.
type Action string

// Actions, in the order one node goes through them.
const (
	ActionProvision Action = "provision"
	ActionWaitReady Action = "waitReady"
	ActionCordon    Action = "cordon"
	ActionDrain     Action = "drain"
	ActionTerminate Action = "terminate"
	ActionVerify    Action = "verify"
	// ActionUncordon appears only in rollbacks: our taint removed from an old node.
	ActionUncordon Action = "uncordon"
)

// Actions lists every action a plan's steps may hold.
var Actions = []Action{ActionProvision, ActionWaitReady, ActionCordon, ActionDrain, ActionTerminate, ActionVerify}

// Step is one action on one candidate. Provision and waitReady act on the
// candidate's replacement; the others on the candidate node itself.
type Step struct {
	Batch  int    `json:"batch"`
	Action Action `json:"action"`
	Node   string `json:"node"`
}

// CheckResult is the outcome of one safety check when the plan was proposed.
type CheckResult string

// Check results.
const (
	CheckPass CheckResult = "pass"
	CheckWarn CheckResult = "warn"
	CheckWait CheckResult = "wait"
	CheckFail CheckResult = "fail"
)

// SafetyCheck is one gate as the analyzer saw it, for the reviewer.
type SafetyCheck struct {
	Name    string      `json:"name"`
	Result  CheckResult `json:"result"`
	Message string      `json:"message,omitempty"`
}

// Cancel is what a person asks of a merged plan.
type Cancel string

// Cancel values.
const (
	CancelStop     Cancel = "stop"
	CancelRollback Cancel = "rollback"
)
