package policies

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Snapshot is the cluster as the gates see it at one moment. Build it with
// NewSnapshot; the gates never change it.
type Snapshot struct {
	Nodes []*corev1.Node
	Pods  []*corev1.Pod
	PDBs  []*policyv1.PodDisruptionBudget
	PVCs  []*corev1.PersistentVolumeClaim
	PVs   []*corev1.PersistentVolume

	nodes      map[string]*corev1.Node
	podsByNode map[string][]*corev1.Pod
	evictable  map[string][]*corev1.Pod
	// PDB selectors indexed by namespace and one of their matchLabels pairs, so that
	// finding a pod's PDBs looks at its own labels instead of every PDB; selectors
	// with only expressions are scanned.
	pdbsByLabel map[string][]pdbSelector // "ns\x00key=value"
	pdbsScan    map[string][]pdbSelector // by namespace
	pvcs        map[string]*corev1.PersistentVolumeClaim
	pvs         map[string]*corev1.PersistentVolume
	podsByPDB   map[*policyv1.PodDisruptionBudget]int
}

type pdbSelector struct {
	pdb *policyv1.PodDisruptionBudget
	sel labels.Selector
}

// NewSnapshot indexes the objects. A PDB with an unparsable selector matches nothing,
// as the disruption controller treats it.
func NewSnapshot(nodes []*corev1.Node, pods []*corev1.Pod, pdbs []*policyv1.PodDisruptionBudget,
	pvcs []*corev1.PersistentVolumeClaim, pvs []*corev1.PersistentVolume) *Snapshot {
	s := &Snapshot{Nodes: nodes, Pods: pods, PDBs: pdbs, PVCs: pvcs, PVs: pvs,
		nodes: make(map[string]*corev1.Node, len(nodes)), podsByNode: map[string][]*corev1.Pod{}, evictable: map[string][]*corev1.Pod{},
		pdbsByLabel: map[string][]pdbSelector{}, pdbsScan: map[string][]pdbSelector{}, pvcs: map[string]*corev1.PersistentVolumeClaim{},
		pvs: map[string]*corev1.PersistentVolume{}, podsByPDB: map[*policyv1.PodDisruptionBudget]int{}}
	for _, n := range nodes {
		s.nodes[n.Name] = n
	}
	for _, p := range pods {
		if p.Spec.NodeName != "" {
			s.podsByNode[p.Spec.NodeName] = append(s.podsByNode[p.Spec.NodeName], p)
			if evictable(p) {
				s.evictable[p.Spec.NodeName] = append(s.evictable[p.Spec.NodeName], p)
			}
		}
	}
	for _, pdb := range pdbs {
		sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
		if err != nil || pdb.Spec.Selector == nil {
			continue
		}
		ps := pdbSelector{pdb: pdb, sel: sel}
		if k, v, ok := firstLabel(pdb.Spec.Selector.MatchLabels); ok {
			key := pdb.Namespace + "\x00" + k + "=" + v
			s.pdbsByLabel[key] = append(s.pdbsByLabel[key], ps)
		} else {
			s.pdbsScan[pdb.Namespace] = append(s.pdbsScan[pdb.Namespace], ps)
		}
	}
	for _, p := range pods {
		if isTerminal(p) {
			continue
		}
		for _, pdb := range s.PDBsFor(p) {
			s.podsByPDB[pdb]++
		}
	}
	for _, c := range pvcs {
		s.pvcs[c.Namespace+"/"+c.Name] = c
	}
	for _, v := range pvs {
		s.pvs[v.Name] = v
	}
	return s
}

// Node returns the named node, or nil.
func (s *Snapshot) Node(name string) *corev1.Node { return s.nodes[name] }

// PodsOn returns the pods bound to a node.
func (s *Snapshot) PodsOn(node string) []*corev1.Pod { return s.podsByNode[node] }

// PDBsFor returns the PDBs whose selector matches the pod.
func (s *Snapshot) PDBsFor(p *corev1.Pod) []*policyv1.PodDisruptionBudget {
	var out []*policyv1.PodDisruptionBudget
	set := labels.Set(p.Labels)
	for k, v := range p.Labels {
		for _, ps := range s.pdbsByLabel[p.Namespace+"\x00"+k+"="+v] {
			if ps.sel.Matches(set) {
				out = append(out, ps.pdb)
			}
		}
	}
	for _, ps := range s.pdbsScan[p.Namespace] {
		if ps.sel.Matches(set) {
			out = append(out, ps.pdb)
		}
	}
	return out
}

// firstLabel returns the smallest key of m with its value: any one pair would do as
// an index key, the smallest makes it deterministic.
func firstLabel(m map[string]string) (string, string, bool) {
	first := ""
	for k := range m {
		if first == "" || k < first {
			first = k
		}
	}
	return first, m[first], first != ""
}

// volumePV returns the PV behind a pod's PVC volume, if bound.
func (s *Snapshot) volumePV(p *corev1.Pod, v corev1.Volume) *corev1.PersistentVolume {
	if v.PersistentVolumeClaim == nil {
		return nil
	}
	c := s.pvcs[p.Namespace+"/"+v.PersistentVolumeClaim.ClaimName]
	if c == nil || c.Spec.VolumeName == "" {
		return nil
	}
	return s.pvs[c.Spec.VolumeName]
}

func isTerminal(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

func podName(p *corev1.Pod) string { return fmt.Sprintf("%s/%s", p.Namespace, p.Name) }
