package executor

import (
	"time"

	api "github.com/rebalancer-dev/rebalancer/api/v1alpha1"
)

// State is everything the executor knows about a plan's execution; it lives in the
// record, so a fresh executor resumes from it after a crash or a failover.
type State struct {
	// Holder and ClaimID identify the claim, so a retried create whose first
	// response was lost is recognised as ours.
	Holder  string `json:"holder"`
	ClaimID string `json:"claimID"`

	Phase      api.Phase        `json:"phase"`
	PlanCommit string           `json:"planCommit,omitempty"`
	StartedAt  time.Time        `json:"startedAt"`
	FinishedAt time.Time        `json:"finishedAt,omitzero"`
	Steps      []api.StepStatus `json:"steps"`
	Pairs      []Pair           `json:"pairs"`
	Skipped    []api.Skipped    `json:"skipped,omitempty"`
	Rollback   *RollbackState   `json:"rollback,omitempty"`
	// Baseline is the ready pods per owning controller (by UID) seen before the
	// current batch's drains; Verify compares against it.
	Baseline map[string]int `json:"baseline,omitempty"`
	Message  string         `json:"message,omitempty"`
	// FrozenBy says what froze a Frozen plan, and so what lets it go on: the stop
	// switch (cleared by rebalancer resume) or spec.cancel: stop (removed from the
	// plan). A plan frozen by a health incident or a failed re-validation stays
	// frozen until a person rolls it back or removes its record.
	FrozenBy string `json:"frozenBy,omitempty"`
	// Outbox holds status transitions not yet in git, oldest first. The reconciler
	// pushes and acknowledges them; phase changes are never coalesced.
	Outbox []Transition `json:"outbox,omitempty"`
	Seq    int          `json:"seq"`
}

// Pair is one old node and its replacement, with the intents written before each
// action (DESIGN.md invariant 2) and the results after.
type Pair struct {
	Old           string `json:"old"`
	OldProviderID string `json:"oldProviderID"`
	Offering      string `json:"offering"`
	Datacenter    string `json:"datacenter"`
	// Token is the idempotency token of the provision call, written before it.
	Token string `json:"token"`
	// ProvisionAttempted is written before the provider is called.
	ProvisionAttempted bool `json:"provisionAttempted,omitempty"`
	// InstancesBefore is the provider's instance set seen before a call to a
	// provider that cannot provision idempotently: the new instance is the one not
	// in it.
	InstancesBefore []string `json:"instancesBefore,omitempty"`
	NewNode         string   `json:"newNode,omitempty"`
	NewProviderID   string   `json:"newProviderID,omitempty"`
	// Done marks the pair replaced: old node terminated.
	Done bool `json:"done,omitempty"`
	// Cordoned: our taint is on the old node (as far as we know).
	Cordoned bool `json:"cordoned,omitempty"`
	// NewRemoved: rollback removed the replacement.
	NewRemoved bool    `json:"newRemoved,omitempty"`
	Savings    float64 `json:"savings"`
}

// RollbackState records a rollback of the pairs not yet finished.
type RollbackState struct {
	Trigger api.RollbackTrigger `json:"trigger"`
	Reason  string              `json:"reason"`
	// Nodes are the old nodes whose pairs are being undone.
	Nodes []string         `json:"nodes"`
	Steps []api.StepStatus `json:"steps,omitempty"`
	// Freeze: cluster health degraded — nothing is removed, the plan ends Frozen.
	Freeze bool `json:"freeze,omitempty"`
}

// Transition is one status change for git.
type Transition struct {
	Seq int `json:"seq"`
	// Progress marks step progress, which may be coalesced with the next one.
	Progress bool           `json:"progress,omitempty"`
	Status   api.PlanStatus `json:"status"`
}

func (s *State) pair(old string) *Pair {
	for i := range s.Pairs {
		if s.Pairs[i].Old == old {
			return &s.Pairs[i]
		}
	}
	return nil
}

func (s *State) skipped(node string) bool {
	for _, k := range s.Skipped {
		if k.Node == node {
			return true
		}
	}
	return false
}
