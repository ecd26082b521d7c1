package v1alpha1

// Phase is where a plan's execution stands.
type Phase string

// Phases. A plan with a terminal phase is never executed again.
const (
	PhasePending        Phase = "Pending"
	PhaseWaiting        Phase = "Waiting"
	PhaseRunning        Phase = "Running"
	PhaseSucceeded      Phase = "Succeeded"
	PhaseFailed         Phase = "Failed"
	PhaseRollingBack    Phase = "RollingBack"
	PhaseRolledBack     Phase = "RolledBack"
	PhaseRollbackFailed Phase = "RollbackFailed"
	PhaseRejected       Phase = "Rejected"
	PhaseCancelled      Phase = "Cancelled"
	PhaseExpired        Phase = "Expired"
	PhaseFrozen         Phase = "Frozen"
)

// Phases lists every phase.
var Phases = []Phase{PhasePending, PhaseWaiting, PhaseRunning, PhaseSucceeded, PhaseFailed,
	PhaseRollingBack, PhaseRolledBack, PhaseRollbackFailed, PhaseRejected, PhaseCancelled,
	PhaseExpired, PhaseFrozen}

// Terminal reports whether no further execution follows this phase. Frozen is not
// terminal: a person decides what happens next. Failed is followed by a rollback.
func (p Phase) Terminal() bool {
	switch p {
	case PhaseSucceeded, PhaseRolledBack, PhaseRollbackFailed, PhaseRejected, PhaseCancelled, PhaseExpired:
		return true
	}
	return false
}

// RebalanceStatus records how a plan's execution went. It lives at
// rebalancer/status/<plan-id>.yaml and is written only by the reconciler.
type RebalanceStatus struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta `json:"metadata"`
	Status   PlanStatus `json:"status"`
}

// PlanStatus is the execution record as committed to git.
type PlanStatus struct {
	Phase Phase `json:"phase"`
	// Cluster and ClusterUID (the kube-system namespace's UID) bind a status root to
	// one cluster, so two clusters never share one.
	Cluster    string `json:"cluster"`
	ClusterUID string `json:"clusterUID,omitempty"`
	// PlanCommit is the commit on the watched branch that added or last changed the plan.
	PlanCommit string `json:"planCommit,omitempty"`
	PlanDigest string `json:"planDigest,omitempty"`
	StartedAt  Time   `json:"startedAt,omitzero"`
	FinishedAt Time   `json:"finishedAt,omitzero"`
	UpdatedAt  Time   `json:"updatedAt,omitzero"`
	// WaitingFor says why a Waiting plan waits; NextAttempt when it may start.
	WaitingFor             string       `json:"waitingFor,omitempty"`
	NextAttempt            Time         `json:"nextAttempt,omitzero"`
	Steps                  []StepStatus `json:"steps,omitempty"`
	ProvisionedNodes       []string     `json:"provisionedNodes,omitempty"`
	CordonedNodes          []string     `json:"cordonedNodes,omitempty"`
	SkippedCandidates      []Skipped    `json:"skippedCandidates,omitempty"`
	Rollback               *Rollback    `json:"rollback,omitempty"`
	RealizedMonthlySavings float64      `json:"realizedMonthlySavings,omitempty"`
	Message                string       `json:"message,omitempty"`
	// Warnings are things people did that the reconciler ignored, such as an edit
	// of a plan after it started.
	Warnings []string `json:"warnings,omitempty"`
}

// StepPhase is where one step stands.
type StepPhase string

// Step phases.
const (
	StepPending   StepPhase = "Pending"
	StepRunning   StepPhase = "Running"
	StepSucceeded StepPhase = "Succeeded"
	StepFailed    StepPhase = "Failed"
	StepSkipped   StepPhase = "Skipped"
)

// StepPhases lists every step phase.
var StepPhases = []StepPhase{StepPending, StepRunning, StepSucceeded, StepFailed, StepSkipped}

// StepStatus is one step of the plan (or of a rollback) as executed.
type StepStatus struct {
	Step       `json:",inline"`
	Phase      StepPhase `json:"phase"`
	NewNode    string    `json:"newNode,omitempty"`
	StartedAt  Time      `json:"startedAt,omitzero"`
	FinishedAt Time      `json:"finishedAt,omitzero"`
	Message    string    `json:"message,omitempty"`
}

// Skipped is a candidate left alone mid-plan because it no longer qualified.
type Skipped struct {
	Node   string `json:"node"`
	Reason string `json:"reason"`
}

// RollbackTrigger is why a rollback started (the seed's four triggers, plus a person).
type RollbackTrigger string

// Rollback triggers.
const (
	TriggerProvisionFailed   RollbackTrigger = "provision-failed"
	TriggerDrainTimeout      RollbackTrigger = "drain-timeout"
	TriggerWorkloadUnhealthy RollbackTrigger = "workload-unhealthy"
	TriggerClusterUnhealthy  RollbackTrigger = "cluster-unhealthy"
	TriggerCancelled         RollbackTrigger = "cancelled"
)

// RollbackTriggers lists every trigger.
var RollbackTriggers = []RollbackTrigger{TriggerProvisionFailed, TriggerDrainTimeout,
	TriggerWorkloadUnhealthy, TriggerClusterUnhealthy, TriggerCancelled}

// Rollback records an undo of the batch in progress.
type Rollback struct {
	Trigger RollbackTrigger `json:"trigger"`
	Reason  string          `json:"reason"`
	Steps   []StepStatus    `json:"steps,omitempty"`
}
