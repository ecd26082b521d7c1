package v1alpha1

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"sort"
)

// ComputeContentDigest computes a plan's contentDigest: a SHA-256 over its strategy and,
// for each candidate in node order, the node, its providerID and the names,
// datacenters and architectures of its current and replacement offerings. Prices
// are left out on purpose: a price change alone does not make a new proposal.
func (s *PlanSpec) ComputeContentDigest() string {
	type offering struct {
		Name       string `json:"name"`
		Datacenter string `json:"datacenter"`
		Arch       string `json:"arch"`
	}
	type candidate struct {
		Node        string   `json:"node"`
		ProviderID  string   `json:"providerID"`
		Current     offering `json:"current"`
		Replacement offering `json:"replacement"`
	}
	content := struct {
		Strategy   Strategy    `json:"strategy"`
		Candidates []candidate `json:"candidates"`
	}{Strategy: s.Strategy}
	for _, c := range s.Candidates {
		content.Candidates = append(content.Candidates, candidate{
			Node: c.Node, ProviderID: c.ProviderID,
			Current:     offering{c.Current.Name, c.Current.Datacenter, c.Current.Arch},
			Replacement: offering{c.Replacement.Name, c.Replacement.Datacenter, c.Replacement.Arch},
		})
	}
	sort.Slice(content.Candidates, func(i, j int) bool { return content.Candidates[i].Node < content.Candidates[j].Node })
	raw, _ := json.Marshal(content) // plain structs of strings: cannot fail
	sum := sha256.Sum256(raw)
	return "sha256:" + hex.EncodeToString(sum[:])
}
