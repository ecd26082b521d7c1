package policies

// Reason is why a node is, or is not, a candidate. Every node gets exactly one: the
// first that applies in the order of AllReasons.
type Reason string

// The fixed list of reasons, in the order they are tested. Changing the order
// changes which reason a node shows when several apply; keep the cheap, structural
// ones (who owns the node) before the ones that look at pods and prices.
const (
	ReasonControlPlane    Reason = "control-plane"
	ReasonNoPolicy        Reason = "no-policy"
	ReasonPolicyConflict  Reason = "policy-conflict"
	ReasonPaused          Reason = "paused"
	ReasonOptedOut        Reason = "opted-out"
	ReasonInPendingPlan   Reason = "in-pending-plan"
	ReasonCooldown        Reason = "cooldown"
	ReasonTooYoung        Reason = "too-young"
	ReasonUnknownOffering Reason = "unknown-offering"
	ReasonLocalStorage    Reason = "local-storage"
	ReasonPDBNeverAllows  Reason = "pdb-never-allows"
	ReasonPodUnderTwoPDBs Reason = "pod-under-two-pdbs"
	ReasonUnmovablePod    Reason = "unmovable-pod"
	ReasonAlreadyOptimal  Reason = "already-optimal"
	ReasonBelowThreshold  Reason = "below-threshold"
	ReasonIncompatible    Reason = "incompatible-replacement"
	ReasonCandidate       Reason = "candidate"
)

// ManagedByPrefix starts the reason of a node another autoscaler owns:
// managed-by-karpenter, managed-by-cluster-autoscaler, managed-by-vpsie-autoscaler.
const ManagedByPrefix = "managed-by-"

// ManagedBy is the reason for a node owned by owner.
func ManagedBy(owner string) Reason { return Reason(ManagedByPrefix + owner) }

// AllReasons lists the reasons in test order, managed-by-* standing in at its place
// after no-policy/policy-conflict.
var AllReasons = []Reason{
	ReasonControlPlane, ReasonNoPolicy, ReasonPolicyConflict, ManagedBy("<owner>"), ReasonPaused,
	ReasonOptedOut, ReasonInPendingPlan, ReasonCooldown, ReasonTooYoung, ReasonUnknownOffering,
	ReasonLocalStorage, ReasonPDBNeverAllows, ReasonPodUnderTwoPDBs, ReasonUnmovablePod,
	ReasonAlreadyOptimal, ReasonBelowThreshold, ReasonIncompatible, ReasonCandidate,
}
