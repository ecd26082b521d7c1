package policies

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1helpers "k8s.io/component-helpers/scheduling/corev1"
	"k8s.io/component-helpers/scheduling/corev1/nodeaffinity"
	"k8s.io/klog/v2"

	api "github.com/rebalancer-dev/rebalancer/api/v1alpha1"
	"github.com/rebalancer-dev/rebalancer/cloud"
)

// Labels and taints rebalancer owns.
const (
	LabelOffering = "rebalancer.dev/offering"
	// TaintDisrupting is our cordon: removing it never uncordons a node that a person
	// or kured cordoned with spec.unschedulable.
	TaintDisrupting = "rebalancer.dev/disrupting"
	// TaintInitializing keeps pods off a replacement until its labels are set and its
	// DaemonSet pods are Ready.
	TaintInitializing = "rebalancer.dev/initializing"
)

// LabelVPSieOffering is the offering label VPSie's autoscaler puts on the nodes it
// manages.
const LabelVPSieOffering = "autoscaler.vpsie.com/offering"

// NodeOffering finds the catalog offering a node runs on: the label
// rebalancer.dev/offering, else node.kubernetes.io/instance-type, else VPSie's
// autoscaler's autoscaler.vpsie.com/offering, in the node's region. It never
// guesses: an unknown offering is reported as such.
func NodeOffering(n *corev1.Node, offerings []cloud.Offering) (*cloud.Offering, string) {
	name := n.Labels[LabelOffering]
	if name == "" {
		name = n.Labels[corev1.LabelInstanceTypeStable]
	}
	if name == "" {
		name = n.Labels[LabelVPSieOffering]
	}
	dc := n.Labels[corev1.LabelTopologyRegion]
	if name == "" {
		return nil, fmt.Sprintf("the node has neither %s nor %s", LabelOffering, corev1.LabelInstanceTypeStable)
	}
	if dc == "" {
		return nil, fmt.Sprintf("the node has no %s label: its datacenter is unknown", corev1.LabelTopologyRegion)
	}
	for i := range offerings {
		if offerings[i].Name == name && offerings[i].Datacenter == dc {
			return &offerings[i], ""
		}
	}
	return nil, fmt.Sprintf("offering %s in %s is not in the provider's catalog", name, dc)
}

// systemLabelPrefixes are labels kubelets, cloud controllers and autoscalers set;
// everything else on a node is a user label its replacement inherits.
var systemLabelPrefixes = []string{
	"kubernetes.io/", "beta.kubernetes.io/", "node.kubernetes.io/", "topology.kubernetes.io/",
	"failure-domain.beta.kubernetes.io/", "node-role.kubernetes.io/", "karpenter.sh/",
	"autoscaler.vpsie.com/", "cluster-autoscaler.kubernetes.io/", "kwok.x-k8s.io/",
	"rebalancer.dev/offering", "rebalancer.dev/provision-token",
}

// UserLabels are the labels of n that its replacement carries: the group label and
// every other label people or tools put there, not the ones the node reports itself.
func UserLabels(n *corev1.Node) map[string]string {
	out := map[string]string{}
	for k, v := range n.Labels {
		if !slices.ContainsFunc(systemLabelPrefixes, func(p string) bool { return strings.HasPrefix(k, p) }) {
			out[k] = v
		}
	}
	return out
}

// InheritedTaints are the taints of n its replacement starts with: all but the ones
// Kubernetes manages (node.kubernetes.io/*) and our own.
func InheritedTaints(n *corev1.Node) []corev1.Taint {
	var out []corev1.Taint
	for _, t := range n.Spec.Taints {
		if strings.HasPrefix(t.Key, "node.kubernetes.io/") || t.Key == TaintDisrupting || t.Key == TaintInitializing {
			continue
		}
		out = append(out, t)
	}
	return out
}

// ReplacementNode is the node an offering would register as, in place of n: n's user
// labels and taints plus the offering's own labels. Pods are checked against it.
func ReplacementNode(n *corev1.Node, o *cloud.Offering) *corev1.Node {
	rn := replacementNode(n, o)
	rn.Status = corev1.NodeStatus{Allocatable: o.Resources(), Capacity: o.Resources()}
	return rn
}

// replacementNode is ReplacementNode without status, for the fit checks, which take
// the offering's resources separately.
func replacementNode(n *corev1.Node, o *cloud.Offering) *corev1.Node {
	labels := UserLabels(n)
	labels[corev1.LabelHostname] = n.Name + "-replacement"
	labels[corev1.LabelArchStable] = o.Arch
	labels[corev1.LabelOSStable] = "linux"
	labels[corev1.LabelInstanceTypeStable] = o.Name
	labels[corev1.LabelTopologyRegion] = o.Datacenter
	labels[LabelOffering] = o.Name
	if z, ok := n.Labels[corev1.LabelTopologyZone]; ok {
		labels[corev1.LabelTopologyZone] = z
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: labels[corev1.LabelHostname], Labels: labels},
		Spec:       corev1.NodeSpec{Taints: InheritedTaints(n)},
	}
}

// PodFits explains why pod p could not run on node n (labels, taints, arch and
// requests against n's allocatable, as the scheduler's filters would), or "".
func PodFits(p *corev1.Pod, n *corev1.Node) string {
	return podFits(&newPodChecks([]*corev1.Pod{p})[0], n, fromList(n.Status.Allocatable))
}

func podFits(pc *podCheck, n *corev1.Node, alloc requests) string {
	p := pc.pod
	if ok, err := pc.affinity.Match(n); err != nil || !ok {
		return fmt.Sprintf("pod %s: its nodeSelector or required node affinity does not match a %s node", podName(p), n.Labels[corev1.LabelInstanceTypeStable])
	}
	if t, bad := corev1helpers.FindMatchingUntoleratedTaint(klog.Background(), n.Spec.Taints, p.Spec.Tolerations, func(t *corev1.Taint) bool {
		return t.Effect == corev1.TaintEffectNoSchedule || t.Effect == corev1.TaintEffectNoExecute
	}, false); bad {
		return fmt.Sprintf("pod %s does not tolerate taint %s", podName(p), t.ToString())
	}
	if name, ok := pc.requests.fitsIn(alloc); !ok {
		return fmt.Sprintf("pod %s requests %s %s, more than the offering's %s", podName(p), pc.requests.quantity(name), name, alloc.quantity(name))
	}
	return ""
}

// Choice is the best replacement for a node, or why there is none.
type Choice struct {
	Reason      Reason // candidate, already-optimal, below-threshold or incompatible-replacement
	Detail      string
	Current     *cloud.Offering
	Replacement *cloud.Offering
	// SavingsPercent is how much cheaper the replacement is, per hour.
	SavingsPercent float64
}

// Catalog indexes offerings by datacenter and arch, cheapest first, with their
// resources computed once: the analyzer asks it once per node.
type Catalog struct {
	byPlace map[string][]catalogEntry // "dc/arch"
}

type catalogEntry struct {
	offering  *cloud.Offering
	resources requests
}

// NewCatalog indexes offerings; the slice must not change while the catalog is used.
func NewCatalog(offerings []cloud.Offering) *Catalog {
	c := &Catalog{byPlace: map[string][]catalogEntry{}}
	for i := range offerings {
		o := &offerings[i]
		k := o.Datacenter + "/" + o.Arch
		c.byPlace[k] = append(c.byPlace[k], catalogEntry{offering: o, resources: fromList(o.Resources())})
	}
	for _, entries := range c.byPlace {
		sort.SliceStable(entries, func(i, j int) bool {
			if entries[i].offering.HourlyPrice != entries[j].offering.HourlyPrice {
				return entries[i].offering.HourlyPrice < entries[j].offering.HourlyPrice
			}
			return entries[i].offering.Name < entries[j].offering.Name
		})
	}
	return c
}

// podCheck is a pod with what the fit checks need, computed once.
type podCheck struct {
	pod      *corev1.Pod
	requests requests
	affinity nodeaffinity.RequiredNodeAffinity
}

func newPodChecks(pods []*corev1.Pod) []podCheck {
	out := make([]podCheck, len(pods))
	for i, p := range pods {
		aff := p
		if IsDaemonSetPod(p) {
			aff = withoutNodeNamePin(p)
		}
		out[i] = podCheck{pod: p, requests: podRequests(p), affinity: nodeaffinity.GetRequiredNodeAffinity(aff)}
	}
	return out
}

// withoutNodeNamePin returns a DaemonSet pod without the metadata.name field
// selector its controller adds to pin it to its node: the controller pins the
// replacement's own pod to the replacement, so only the DaemonSet's own node
// selector and affinity say whether it will run there.
func withoutNodeNamePin(p *corev1.Pod) *corev1.Pod {
	a := p.Spec.Affinity
	if a == nil || a.NodeAffinity == nil || a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil {
		return p
	}
	var terms []corev1.NodeSelectorTerm
	for _, t := range a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms {
		t = *t.DeepCopy()
		fields := t.MatchFields[:0]
		for _, f := range t.MatchFields {
			if f.Key != metav1.ObjectNameField {
				fields = append(fields, f)
			}
		}
		t.MatchFields = fields
		if len(t.MatchExpressions) == 0 && len(t.MatchFields) == 0 {
			// The term held only the pin: it matches every node now.
			terms = nil
			break
		}
		terms = append(terms, t)
	}
	cp := p.DeepCopy()
	if terms == nil {
		cp.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution = nil
	} else {
		cp.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms = terms
	}
	return cp
}

// ChooseReplacement picks the cheapest offering to replace node n (running on
// current, carrying pods) under the policy: same datacenter and arch, allowed,
// cheaper, big enough by the sizing rule, and able to run every pod. The reason
// says what stopped it: no cheaper offering of the right size (already-optimal),
// cheaper ones the pods cannot run on (incompatible-replacement), or savings under
// the threshold (below-threshold). pods are the ones that will move, daemonPods the
// DaemonSet pods any node of the group runs.
func ChooseReplacement(n *corev1.Node, current *cloud.Offering, pods, daemonPods []*corev1.Pod, catalog *Catalog, spec *api.PolicySpec) Choice {
	checks := newPodChecks(append(append(make([]*corev1.Pod, 0, len(pods)+len(daemonPods)), pods...), daemonPods...))
	need, needPods := sizeNeeded(n, checks, len(pods), spec)
	rn := replacementNode(n, current) // relabelled per offering below
	var firstMisfit string
	sized := 0
	for _, e := range catalog.byPlace[current.Datacenter+"/"+current.Arch] {
		o := e.offering
		if o.HourlyPrice >= current.HourlyPrice {
			break // sorted by price: nothing cheaper follows
		}
		if len(spec.AllowedOfferings) > 0 && !slices.Contains(spec.AllowedOfferings, o.Name) {
			continue
		}
		if _, ok := need.fitsIn(e.resources); !ok || needPods > o.Pods {
			continue
		}
		sized++
		rn.Labels[corev1.LabelInstanceTypeStable] = o.Name
		rn.Labels[LabelOffering] = o.Name
		misfit := ""
		for i := range checks {
			if misfit = podFits(&checks[i], rn, e.resources); misfit != "" {
				break
			}
		}
		if misfit != "" {
			if firstMisfit == "" {
				firstMisfit = fmt.Sprintf("%s: %s", o.Name, misfit)
			}
			continue
		}
		pct := 0.0
		if current.HourlyPrice > 0 {
			pct = 100 * (current.HourlyPrice - o.HourlyPrice) / current.HourlyPrice
		}
		c := Choice{Current: current, Replacement: o, SavingsPercent: pct}
		if pct < spec.SavingsThresholdPercent {
			c.Reason = ReasonBelowThreshold
			c.Detail = fmt.Sprintf("%s saves %.1f%%, under the %g%% threshold", o.Name, pct, spec.SavingsThresholdPercent)
			return c
		}
		c.Reason = ReasonCandidate
		c.Detail = fmt.Sprintf("%s saves %.1f%%", o.Name, pct)
		return c
	}
	if sized == 0 {
		return Choice{Reason: ReasonAlreadyOptimal, Current: current,
			Detail: fmt.Sprintf("no cheaper allowed %s offering in %s is big enough (%s)", current.Arch, current.Datacenter, spec.Sizing)}
	}
	return Choice{Reason: ReasonIncompatible, Current: current, Detail: firstMisfit}
}

// sizeNeeded is what the replacement must offer, and how many pods. match-capacity:
// the old node's allocatable cpu, memory, pods and ephemeral storage. fit-workload:
// the pods' requests (the moving ones and the DaemonSet overhead) plus headroom,
// and never less than the largest moving pod.
func sizeNeeded(n *corev1.Node, checks []podCheck, moving int, spec *api.PolicySpec) (requests, int64) {
	if spec.Sizing != api.SizingFitWorkload {
		alloc := n.Status.Allocatable
		need := requests{cpuMilli: alloc.Cpu().MilliValue(), memory: alloc.Memory().Value(), ephemeral: alloc.StorageEphemeral().Value()}
		return need, alloc.Pods().Value()
	}
	var total, largest requests
	for i, c := range checks {
		total.add(c.requests)
		if i < moving {
			largest.max(c.requests)
		}
	}
	f := 1 + spec.HeadroomPercent/100
	scale := func(v int64) int64 { return int64(float64(v)*f + 0.5) }
	need := requests{cpuMilli: scale(total.cpuMilli), memory: scale(total.memory), ephemeral: scale(total.ephemeral)}
	for k, v := range total.other {
		if need.other == nil {
			need.other = map[corev1.ResourceName]int64{}
		}
		need.other[k] = v // extended resources are whole devices: no headroom
	}
	need.max(largest)
	return need, int64(len(checks))
}
