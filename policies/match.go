package policies

import (
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	api "github.com/rebalancer-dev/rebalancer/api/v1alpha1"
)

// Policies is the set of policies from a repository, with compiled selectors.
type Policies struct {
	items []compiled
}

type compiled struct {
	policy *api.RebalancePolicy
	sel    labels.Selector
}

// NewPolicies compiles validated policies.
func NewPolicies(ps []*api.RebalancePolicy) (*Policies, error) {
	out := &Policies{}
	for _, p := range ps {
		sel := labels.Everything()
		if p.Spec.NodeSelector != nil {
			s, err := metav1.LabelSelectorAsSelector(p.Spec.NodeSelector)
			if err != nil {
				return nil, fmt.Errorf("policy %s: nodeSelector: %w", p.Metadata.Name, err)
			}
			sel = s
		}
		out.items = append(out.items, compiled{policy: p, sel: sel})
	}
	sort.Slice(out.items, func(i, j int) bool { return out.items[i].policy.Metadata.Name < out.items[j].policy.Metadata.Name })
	return out, nil
}

// Get returns the named policy, or nil.
func (ps *Policies) Get(name string) *api.RebalancePolicy {
	for _, c := range ps.items {
		if c.policy.Metadata.Name == name {
			return c.policy
		}
	}
	return nil
}

// All returns the policies sorted by name.
func (ps *Policies) All() []*api.RebalancePolicy {
	out := make([]*api.RebalancePolicy, len(ps.items))
	for i, c := range ps.items {
		out[i] = c.policy
	}
	return out
}

// Match returns the one policy whose selector matches the node. A node no policy
// matches gets no-policy; one two policies match gets policy-conflict, naming both,
// and is left alone rather than guessed at.
func (ps *Policies) Match(n *corev1.Node) (*api.RebalancePolicy, Reason, string) {
	var hits []*api.RebalancePolicy
	for _, c := range ps.items {
		if c.sel.Matches(labels.Set(n.Labels)) {
			hits = append(hits, c.policy)
		}
	}
	switch len(hits) {
	case 0:
		return nil, ReasonNoPolicy, "no policy selects this node"
	case 1:
		return hits[0], "", ""
	}
	names := make([]string, len(hits))
	for i, h := range hits {
		names[i] = h.Metadata.Name
	}
	return nil, ReasonPolicyConflict, "selected by policies " + strings.Join(names, " and ")
}

// NodeGroup is the node's group under its policy: the value of nodeGroupLabel, or
// the policy's name when the policy has none. A node lacking the label is in no
// group ("").
func NodeGroup(n *corev1.Node, p *api.RebalancePolicy) string {
	if p.Spec.NodeGroupLabel == "" {
		return p.Metadata.Name
	}
	return n.Labels[p.Spec.NodeGroupLabel]
}

// LoadPolicies reads and validates every policy under root/policies in fsys (a repo
// tree at a commit, or a directory). All files' errors are returned together.
func LoadPolicies(fsys fs.FS, root string) ([]*api.RebalancePolicy, error) {
	dir := path.Join(root, "policies")
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", dir, err)
	}
	var out []*api.RebalancePolicy
	var errs api.ErrorList
	seen := map[string]string{}
	for _, e := range entries {
		if e.IsDir() || !(strings.HasSuffix(e.Name(), ".yaml") || strings.HasSuffix(e.Name(), ".yml")) {
			continue
		}
		file := path.Join(dir, e.Name())
		data, err := fs.ReadFile(fsys, file)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", file, err)
		}
		p, err := api.DecodePolicy(file, data)
		if err != nil {
			if l, ok := err.(api.ErrorList); ok {
				errs = append(errs, l...)
				continue
			}
			return nil, err
		}
		if first, dup := seen[p.Metadata.Name]; dup {
			errs = append(errs, api.FileError{File: file, Line: 1, Field: "metadata.name",
				Message: fmt.Sprintf("Duplicate value: %q: also the name of the policy in %s", p.Metadata.Name, first)})
			continue
		}
		seen[p.Metadata.Name] = file
		out = append(out, p)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return out, nil
}
