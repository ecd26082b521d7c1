package vpsie

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/rebalancer-dev/rebalancer/cloud"
)

// How a Kubernetes node names its VPSie machine.
const (
	// ProviderIDPrefix starts the spec.providerID VPSie's cloud-controller-manager
	// sets: vpsie://<identifier>.
	ProviderIDPrefix = "vpsie://"
	// LabelOffering is set by VPSie's autoscaler on the nodes it manages.
	LabelOffering = "autoscaler.vpsie.com/offering"
	// AnnotationVPSID is set by VPSie's autoscaler: the node's VM identifier.
	AnnotationVPSID = "autoscaler.vpsie.com/vps-id"
)

// ProviderID is the providerID of the VM with identifier.
func ProviderID(identifier string) string { return ProviderIDPrefix + identifier }

// Identifier returns the VM identifier in a vpsie:// providerID; any other form
// is an error matching cloud.ErrNotFound (the provider has no such instance).
func Identifier(providerID string) (string, error) {
	id, ok := strings.CutPrefix(providerID, ProviderIDPrefix)
	if !ok || id == "" || strings.Contains(id, "/") {
		return "", fmt.Errorf("providerID %q is not a VPSie providerID (%s<identifier>): %w", providerID, ProviderIDPrefix, cloud.ErrNotFound)
	}
	return id, nil
}

// NodeIdentifier returns the VPSie identifier of a node's VM: from its
// providerID, or from the annotation VPSie's autoscaler writes. Empty if neither
// says.
func NodeIdentifier(n *corev1.Node) string {
	if id, err := Identifier(n.Spec.ProviderID); err == nil {
		return id
	}
	return strings.TrimSpace(n.Annotations[AnnotationVPSID])
}

// NodeProviderID is NodeIdentifier as a providerID, empty if unknown.
func NodeProviderID(n *corev1.Node) string {
	if id := NodeIdentifier(n); id != "" {
		return ProviderID(id)
	}
	return ""
}

// NodeOffering returns the offering a node runs on: VPSie's autoscaler label,
// then rebalancer's, then the well-known instance-type label.
func NodeOffering(n *corev1.Node) string {
	for _, k := range []string{LabelOffering, "rebalancer.dev/offering", corev1.LabelInstanceTypeStable} {
		if v := n.Labels[k]; v != "" {
			return v
		}
	}
	return ""
}
