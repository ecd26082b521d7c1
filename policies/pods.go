package policies

import (
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	api "github.com/rebalancer-dev/rebalancer/api/v1alpha1"
)

// Blocker is a pod that keeps its node from being drained.
type Blocker struct {
	Pod    string // namespace/name
	Reason Reason
	Detail string
}

func (b Blocker) String() string { return fmt.Sprintf("%s: %s", b.Pod, b.Detail) }

// IsDaemonSetPod reports whether a DaemonSet controls the pod: such pods are not
// evicted, they go with their node.
func IsDaemonSetPod(p *corev1.Pod) bool {
	for _, o := range p.OwnerReferences {
		if o.Controller != nil && *o.Controller && o.Kind == "DaemonSet" {
			return true
		}
	}
	return false
}

// IsMirrorPod reports whether the pod is a static pod's mirror.
func IsMirrorPod(p *corev1.Pod) bool {
	_, ok := p.Annotations[corev1.MirrorPodAnnotationKey]
	return ok
}

// Evictable lists the pods a drain of this node must evict: everything bound to it
// but DaemonSet and mirror pods and pods already finished.
func (s *Snapshot) Evictable(node string) []*corev1.Pod { return s.evictable[node] }

func evictable(p *corev1.Pod) bool { return !isTerminal(p) && !IsDaemonSetPod(p) && !IsMirrorPod(p) }

// podOrder is the order blockers are reported in, the same as AllReasons.
var podOrder = []Reason{ReasonOptedOut, ReasonLocalStorage, ReasonPDBNeverAllows, ReasonPodUnderTwoPDBs, ReasonUnmovablePod}

// NodeBlockers lists every pod on the node that cannot be moved, sorted by the
// reason order; the first is the node's reason.
func (s *Snapshot) NodeBlockers(node string, spec *api.PolicySpec) []Blocker {
	var out []Blocker
	for _, p := range s.Evictable(node) {
		out = append(out, s.PodBlockers(p, spec)...)
	}
	slices.SortStableFunc(out, func(a, b Blocker) int {
		return slices.Index(podOrder, a.Reason) - slices.Index(podOrder, b.Reason)
	})
	return out
}

// PodBlockers lists why one pod cannot be moved (none: it can).
func (s *Snapshot) PodBlockers(p *corev1.Pod, spec *api.PolicySpec) []Blocker {
	var out []Blocker
	add := func(r Reason, format string, args ...any) {
		out = append(out, Blocker{Pod: podName(p), Reason: r, Detail: fmt.Sprintf(format, args...)})
	}
	if PodOptedOut(p) {
		add(ReasonOptedOut, "pod opts out of disruption")
	}
	for _, d := range s.localStorage(p, spec) {
		add(ReasonLocalStorage, "%s", d)
	}
	pdbs := s.PDBsFor(p)
	switch {
	case len(pdbs) > 1:
		names := make([]string, len(pdbs))
		for i, b := range pdbs {
			names[i] = b.Name
		}
		slices.Sort(names)
		add(ReasonPodUnderTwoPDBs, "pod is selected by PDBs %s: the Eviction API refuses it", strings.Join(names, ", "))
	case len(pdbs) == 1:
		if why, never := s.NeverAllows(pdbs[0], p); never {
			add(ReasonPDBNeverAllows, "PDB %s %s", pdbs[0].Name, why)
		}
	}
	if why, stuck := unmovable(p, spec); stuck {
		add(ReasonUnmovablePod, "%s", why)
	}
	return out
}

// NeverAllows reports whether a PDB can never admit evicting pod p, however long one
// waits: maxUnavailable 0, minAvailable at 100% or at least the pods it covers. A
// PDB that merely allows no disruption right now (disruptionsAllowed 0) is a reason
// to wait, not this. Under unhealthyPodEvictionPolicy AlwaysAllow a pod that is not
// Ready may always be evicted.
func (s *Snapshot) NeverAllows(pdb *policyv1.PodDisruptionBudget, p *corev1.Pod) (string, bool) {
	if pdb.Spec.UnhealthyPodEvictionPolicy != nil && *pdb.Spec.UnhealthyPodEvictionPolicy == policyv1.AlwaysAllow && !PodReady(p) {
		return "", false
	}
	expected := int(pdb.Status.ExpectedPods)
	if n := s.podsByPDB[pdb]; expected == 0 || n > expected {
		expected = n
	}
	if mu := pdb.Spec.MaxUnavailable; mu != nil {
		if v, err := intstr.GetScaledValueFromIntOrPercent(mu, expected, true); err == nil && v == 0 {
			return fmt.Sprintf("has maxUnavailable %s: it never allows an eviction", mu.String()), true
		}
	}
	if ma := pdb.Spec.MinAvailable; ma != nil {
		if ma.Type == intstr.String && ma.StrVal == "100%" {
			return "has minAvailable 100%: it never allows an eviction", true
		}
		if v, err := intstr.GetScaledValueFromIntOrPercent(ma, expected, true); err == nil && v >= expected {
			return fmt.Sprintf("has minAvailable %s with %d pods: it never allows an eviction", ma.String(), expected), true
		}
	}
	return "", false
}

// TemporarilyBlocked lists the PDBs that cover pods on the node and allow no
// disruption right now: a plan waits for them rather than giving up.
func (s *Snapshot) TemporarilyBlocked(node string) []string {
	seen := map[string]bool{}
	var out []string
	for _, p := range s.Evictable(node) {
		for _, pdb := range s.PDBsFor(p) {
			key := pdb.Namespace + "/" + pdb.Name
			if pdb.Status.DisruptionsAllowed == 0 && !seen[key] {
				if _, never := s.NeverAllows(pdb, p); !never {
					seen[key] = true
					out = append(out, key)
				}
			}
		}
	}
	slices.Sort(out)
	return out
}

// localStorage explains which of a pod's volumes pin it to its node.
func (s *Snapshot) localStorage(p *corev1.Pod, spec *api.PolicySpec) []string {
	disposable := p.Annotations[LocalDataDisposable] == "true"
	var safeLocal map[string]bool
	if list, ok := p.Annotations[SafeToEvictLocalVolumes]; ok {
		safeLocal = map[string]bool{}
		for _, v := range strings.Split(list, ",") {
			if v = strings.TrimSpace(v); v != "" {
				safeLocal[v] = true
			}
		}
	}
	var out []string
	for _, v := range p.Spec.Volumes {
		switch {
		case v.HostPath != nil:
			if !disposable {
				out = append(out, fmt.Sprintf("volume %s is a hostPath (%s): its data stays on the node", v.Name, v.HostPath.Path))
			}
		case v.EmptyDir != nil:
			if spec != nil && spec.LocalStorage.EmptyDir == api.EmptyDirBlock && !safeLocal[v.Name] && !disposable &&
				p.Annotations[SafeToEvict] != "true" {
				out = append(out, fmt.Sprintf("volume %s is an emptyDir and the policy blocks emptyDir (localStorage.emptyDir: block)", v.Name))
			}
		case v.PersistentVolumeClaim != nil:
			if pv := s.volumePV(p, v); pv != nil && pinnedToNode(pv) && !disposable {
				out = append(out, fmt.Sprintf("volume %s is bound to PV %s, which node affinity pins to its node", v.Name, pv.Name))
			}
		}
	}
	return out
}

// pinnedToNode reports whether a PV can only be used on particular nodes by
// hostname: local volumes, hostPath PVs, and provisioners such as
// local-path-provisioner and OpenEBS hostpath, which all set node affinity.
func pinnedToNode(pv *corev1.PersistentVolume) bool {
	if pv.Spec.Local != nil || pv.Spec.HostPath != nil {
		return true
	}
	if pv.Spec.NodeAffinity == nil || pv.Spec.NodeAffinity.Required == nil {
		return false
	}
	for _, term := range pv.Spec.NodeAffinity.Required.NodeSelectorTerms {
		for _, e := range term.MatchExpressions {
			if e.Key == corev1.LabelHostname || e.Key == "openebs.io/nodename" {
				return true
			}
		}
		for _, f := range term.MatchFields {
			if f.Key == "metadata.name" {
				return true
			}
		}
	}
	return false
}

// unmovable explains why a pod cannot be evicted and come back elsewhere.
func unmovable(p *corev1.Pod, spec *api.PolicySpec) (string, bool) {
	ctrl := -1
	for i, o := range p.OwnerReferences {
		if o.Controller != nil && *o.Controller {
			ctrl = i
		}
	}
	if ctrl < 0 {
		return "pod has no controller: evicted, nothing would recreate it", true
	}
	if o := p.OwnerReferences[ctrl]; o.Kind == "Job" && (p.Status.Phase == corev1.PodRunning || p.Status.Phase == corev1.PodPending) {
		return fmt.Sprintf("pod of Job %s is still running", o.Name), true
	}
	if spec != nil && p.Spec.TerminationGracePeriodSeconds != nil {
		grace := time.Duration(*p.Spec.TerminationGracePeriodSeconds) * time.Second
		if grace > spec.DrainTimeout.Duration {
			return fmt.Sprintf("terminationGracePeriodSeconds %s is longer than drainTimeout %s", grace, spec.DrainTimeout), true
		}
	}
	return "", false
}

// PodReady reports whether the pod's Ready condition is True.
func PodReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
