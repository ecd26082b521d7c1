package policies

import (
	"slices"

	corev1 "k8s.io/api/core/v1"

	api "github.com/rebalancer-dev/rebalancer/api/v1alpha1"
)

// Opt-out and coexistence annotations (DESIGN.md invariant 6).
const (
	// DoNotDisrupt on a node or pod keeps rebalancer away from it ("true").
	DoNotDisrupt = "rebalancer.dev/do-not-disrupt"
	// KarpenterDoNotDisrupt is honoured on nodes and pods: any value but "false".
	KarpenterDoNotDisrupt = "karpenter.sh/do-not-disrupt"
	// SafeToEvict "false" on a pod is Cluster Autoscaler's opt-out, honoured here.
	SafeToEvict = "cluster-autoscaler.kubernetes.io/safe-to-evict"
	// SafeToEvictLocalVolumes lists a pod's emptyDir volumes that may be lost.
	SafeToEvictLocalVolumes = "cluster-autoscaler.kubernetes.io/safe-to-evict-local-volumes"
	// LocalDataDisposable "true" on a pod is the only override for hostPath and
	// node-pinned persistent volumes.
	LocalDataDisposable = "rebalancer.dev/local-data-disposable"
	// ScaleDownDisabled protects our new nodes from Cluster Autoscaler during a plan.
	ScaleDownDisabled = "cluster-autoscaler.kubernetes.io/scale-down-disabled"
)

// Labels that say who owns a node.
var (
	controlPlaneLabels = []string{"node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master"}
	ownerLabels        = []struct{ owner, label string }{
		{api.OwnerKarpenter, "karpenter.sh/nodepool"},
		{api.OwnerKarpenter, "karpenter.sh/provisioner-name"},
		{api.OwnerKarpenter, "karpenter.sh/registered"},
		{api.OwnerClusterAutoscaler, "cluster-autoscaler.kubernetes.io/node-group"},
		{api.OwnerVPSieAutoscaler, "autoscaler.vpsie.com/nodegroup"},
		{api.OwnerVPSieAutoscaler, "autoscaler.vpsie.com/managed"},
	}
)

// IsControlPlane reports whether a node runs the control plane: never touched.
func IsControlPlane(n *corev1.Node) bool {
	for _, l := range controlPlaneLabels {
		if _, ok := n.Labels[l]; ok {
			return true
		}
	}
	return false
}

// Owner names the autoscaler that owns a node ("" for none): karpenter,
// cluster-autoscaler or vpsie-autoscaler, told by the labels each one sets.
func Owner(n *corev1.Node) string {
	for _, o := range ownerLabels {
		if _, ok := n.Labels[o.label]; ok {
			return o.owner
		}
	}
	return ""
}

// OwnedByOther reports the owner of a node the policy has not opted in to.
func OwnedByOther(n *corev1.Node, p *api.RebalancePolicy) (string, bool) {
	o := Owner(n)
	if o == "" || (p != nil && slices.Contains(p.Spec.ManagedNodes, o)) {
		return "", false
	}
	return o, true
}

// NodeOptedOut reports whether a node carries an opt-out, as an annotation or label.
func NodeOptedOut(n *corev1.Node) bool {
	return optedOut(n.Annotations) || optedOut(n.Labels)
}

// PodOptedOut reports whether a pod opts out of disruption.
func PodOptedOut(p *corev1.Pod) bool {
	return optedOut(p.Annotations) || p.Annotations[SafeToEvict] == "false"
}

func optedOut(m map[string]string) bool {
	if v, ok := m[DoNotDisrupt]; ok && v != "false" {
		return true
	}
	if v, ok := m[KarpenterDoNotDisrupt]; ok && v != "false" {
		return true
	}
	return false
}
