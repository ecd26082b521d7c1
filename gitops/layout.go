package gitops

import (
	"path"
	"strings"
)

// Layout is where rebalancer's files live in the repository (DESIGN.md):
//
//	<root>/policies/<name>.yaml     RebalancePolicy — written by people
//	<root>/plans/<plan-id>.yaml     RebalancePlan   — proposed in a PR, merged by people
//	<root>/status/<plan-id>.yaml    RebalanceStatus — written only by the reconciler
//
// Root is "rebalancer" by default (--path); a multi-cluster repository has one
// root per cluster.
type Layout struct {
	Root string
}

// DefaultRoot is the default Layout root.
const DefaultRoot = "rebalancer"

func (l Layout) root() string {
	r := strings.Trim(path.Clean("/"+l.Root), "/")
	if r == "" && l.Root == "" {
		return DefaultRoot
	}
	return r
}

// PoliciesDir is <root>/policies.
func (l Layout) PoliciesDir() string { return path.Join(l.root(), "policies") }

// PlansDir is <root>/plans.
func (l Layout) PlansDir() string { return path.Join(l.root(), "plans") }

// StatusDir is <root>/status.
func (l Layout) StatusDir() string { return path.Join(l.root(), "status") }

// RootDir is the root itself, cleaned.
func (l Layout) RootDir() string { return l.root() }

// PlanFile is <root>/plans/<id>.yaml.
func (l Layout) PlanFile(id string) string { return path.Join(l.PlansDir(), id+".yaml") }

// StatusFile is <root>/status/<id>.yaml.
func (l Layout) StatusFile(id string) string { return path.Join(l.StatusDir(), id+".yaml") }

// OnlyStatus tells whether every path is a status file: a push that changes only
// these never wakes the reconciler (its own status commits would otherwise trigger
// it again). An empty list is not "only status".
func (l Layout) OnlyStatus(paths []string) bool {
	if len(paths) == 0 {
		return false
	}
	prefix := l.StatusDir() + "/"
	for _, p := range paths {
		if !strings.HasPrefix(p, prefix) {
			return false
		}
	}
	return true
}

// IDFromFile is the plan ID a plan or status file is named after.
func IDFromFile(file string) string {
	base := path.Base(file)
	for _, ext := range []string{".yaml", ".yml"} {
		if strings.HasSuffix(base, ext) {
			return strings.TrimSuffix(base, ext)
		}
	}
	return ""
}
