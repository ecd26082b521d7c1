package v1alpha1

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Strategy is how a plan replaces its nodes; all are make-before-break.
type Strategy string

// Strategies, safest first.
const (
	StrategyRolling   Strategy = "rolling"
	StrategySurge     Strategy = "surge"
	StrategyBlueGreen Strategy = "blue-green"
)

// Strategies lists the valid strategies in the order documentation shows them.
var Strategies = []Strategy{StrategyRolling, StrategySurge, StrategyBlueGreen}

// Sizing is how the analyzer sizes a replacement.
type Sizing string

const (
	// SizingMatchCapacity asks for at least the old node's allocatable capacity.
	SizingMatchCapacity Sizing = "match-capacity"
	// SizingFitWorkload asks for the node's pod requests plus headroom.
	SizingFitWorkload Sizing = "fit-workload"
)

// EmptyDirPolicy says whether pods with emptyDir volumes may be evicted.
type EmptyDirPolicy string

// EmptyDir policies.
const (
	EmptyDirAllow EmptyDirPolicy = "allow"
	EmptyDirBlock EmptyDirPolicy = "block"
)

// RebalancePolicy configures rebalancing for the nodes its selector matches.
// It lives at rebalancer/policies/<name>.yaml and is written by people.
type RebalancePolicy struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta `json:"metadata"`
	Spec     PolicySpec `json:"spec"`
}

// PolicySpec is the configurable part of a policy. Keys from the seed design keep
// its defaults; DefaultPolicySpec has them all.
type PolicySpec struct {
	// NodeSelector picks the nodes this policy governs; empty selects every node.
	NodeSelector *metav1.LabelSelector `json:"nodeSelector,omitempty"`
	// NodeGroupLabel is the node label whose value names a node's group; without it
	// every node of the policy is in one group named after the policy.
	NodeGroupLabel          string       `json:"nodeGroupLabel,omitempty"`
	Strategy                Strategy     `json:"strategy"`
	SavingsThresholdPercent float64      `json:"savingsThresholdPercent"`
	MinNodeAge              Duration     `json:"minNodeAge"`
	CooldownPeriod          Duration     `json:"cooldownPeriod"`
	MaxConcurrent           int          `json:"maxConcurrent"`
	DrainTimeout            Duration     `json:"drainTimeout"`
	MaintenanceWindows      []string     `json:"maintenanceWindows,omitempty"`
	TimeZone                string       `json:"timeZone"`
	MaxNodesPerPlan         int          `json:"maxNodesPerPlan"`
	MaxUnhealthyPercent     float64      `json:"maxUnhealthyPercent"`
	MaxUnhealthyCount       int          `json:"maxUnhealthyCount"`
	PlanTTL                 Duration     `json:"planTTL"`
	Sizing                  Sizing       `json:"sizing"`
	HeadroomPercent         float64      `json:"headroomPercent"`
	AllowedOfferings        []string     `json:"allowedOfferings,omitempty"`
	LocalStorage            LocalStorage `json:"localStorage"`
	Paused                  bool         `json:"paused,omitempty"`
	// ManagedNodes opts in to nodes owned by another autoscaler (karpenter,
	// cluster-autoscaler, vpsie-autoscaler), which are otherwise left alone.
	ManagedNodes []string `json:"managedNodes,omitempty"`
}

// LocalStorage says how pods with node-local data are treated.
type LocalStorage struct {
	EmptyDir EmptyDirPolicy `json:"emptyDir"`
}

// DefaultPolicySpec returns the defaults a policy file starts from.
func DefaultPolicySpec() PolicySpec {
	return PolicySpec{
		Strategy:                StrategyRolling,
		SavingsThresholdPercent: 10,
		MinNodeAge:              Duration{24 * time.Hour},
		CooldownPeriod:          Duration{time.Hour},
		MaxConcurrent:           1,
		DrainTimeout:            Duration{300 * time.Second},
		TimeZone:                "UTC",
		MaxNodesPerPlan:         10,
		MaxUnhealthyPercent:     20,
		MaxUnhealthyCount:       3,
		PlanTTL:                 Days(7),
		Sizing:                  SizingMatchCapacity,
		HeadroomPercent:         10,
		LocalStorage:            LocalStorage{EmptyDir: EmptyDirAllow},
	}
}

// NewPolicy returns a policy with every default set.
func NewPolicy(name string) *RebalancePolicy {
	return &RebalancePolicy{
		TypeMeta: TypeMeta{APIVersion: APIVersion, Kind: KindPolicy},
		Metadata: ObjectMeta{Name: name},
		Spec:     DefaultPolicySpec(),
	}
}

// Location returns the policy's time zone; call it only on a validated policy.
func (s *PolicySpec) Location() (*time.Location, error) {
	if s.TimeZone == "" {
		return time.UTC, nil
	}
	return time.LoadLocation(s.TimeZone)
}
