// Package v1alpha1 holds the three kinds rebalancer keeps in a GitOps repository —
// RebalancePolicy (written by people), RebalancePlan (proposed by the analyzer,
// merged by people) and RebalanceStatus (written by the reconciler) — with their
// defaults, their validation and the strict decoder that reports every problem as
// `file:line: field.path: message`.
package v1alpha1

import (
	// The controller runs on minimal images without /usr/share/zoneinfo; policies name
	// IANA time zones, so the database travels inside the binary.
	_ "time/tzdata"
)

// Group and version of every kind in this package.
const (
	Group      = "rebalancer.dev"
	Version    = "v1alpha1"
	APIVersion = Group + "/" + Version
)

// Kind names.
const (
	KindPolicy = "RebalancePolicy"
	KindPlan   = "RebalancePlan"
	KindStatus = "RebalanceStatus"
)
