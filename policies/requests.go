package policies

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// requests is a pod's resource requests in plain numbers: the analyzer sums and
// compares them for every pod of every node, and resource.Quantity maps made that
// the largest cost of an analysis.
type requests struct {
	cpuMilli, memory, ephemeral int64
	// other holds extended resources (GPUs...), rarely set.
	other map[corev1.ResourceName]int64
}

func (r *requests) add(o requests) {
	r.cpuMilli += o.cpuMilli
	r.memory += o.memory
	r.ephemeral += o.ephemeral
	for k, v := range o.other {
		if r.other == nil {
			r.other = map[corev1.ResourceName]int64{}
		}
		r.other[k] += v
	}
}

func (r *requests) max(o requests) {
	r.cpuMilli = max(r.cpuMilli, o.cpuMilli)
	r.memory = max(r.memory, o.memory)
	r.ephemeral = max(r.ephemeral, o.ephemeral)
	for k, v := range o.other {
		if r.other == nil {
			r.other = map[corev1.ResourceName]int64{}
		}
		r.other[k] = max(r.other[k], v)
	}
}

func fromList(l corev1.ResourceList) requests {
	var r requests
	for name, q := range l {
		switch name {
		case corev1.ResourceCPU:
			r.cpuMilli = q.MilliValue()
		case corev1.ResourceMemory:
			r.memory = q.Value()
		case corev1.ResourceEphemeralStorage:
			r.ephemeral = q.Value()
		case corev1.ResourcePods:
		default:
			if r.other == nil {
				r.other = map[corev1.ResourceName]int64{}
			}
			r.other[name] = q.Value()
		}
	}
	return r
}

// podRequests follows the scheduler's rule: the sum of the app containers (and of
// restartable init containers, which run beside them), or the largest init
// container if that is more, plus the pod's overhead. Pod-level resources, when
// set, take precedence for cpu and memory.
func podRequests(p *corev1.Pod) requests {
	var sum, sidecars, initMax requests
	for i := range p.Spec.Containers {
		sum.add(fromList(p.Spec.Containers[i].Resources.Requests))
	}
	for i := range p.Spec.InitContainers {
		c := &p.Spec.InitContainers[i]
		r := fromList(c.Resources.Requests)
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			sidecars.add(r)
			continue
		}
		// A regular init container runs beside the sidecars started before it.
		r.add(sidecars)
		initMax.max(r)
	}
	sum.add(sidecars)
	sum.max(initMax)
	if p.Spec.Resources != nil {
		pl := fromList(p.Spec.Resources.Requests)
		if pl.cpuMilli > 0 {
			sum.cpuMilli = pl.cpuMilli
		}
		if pl.memory > 0 {
			sum.memory = pl.memory
		}
	}
	sum.add(fromList(p.Spec.Overhead))
	return sum
}

// fitsIn explains the first resource r asks more of than have offers, or "".
func (r requests) fitsIn(have requests) (corev1.ResourceName, bool) {
	switch {
	case r.cpuMilli > have.cpuMilli:
		return corev1.ResourceCPU, false
	case r.memory > have.memory:
		return corev1.ResourceMemory, false
	case r.ephemeral > 0 && r.ephemeral > have.ephemeral:
		return corev1.ResourceEphemeralStorage, false
	}
	for k, v := range r.other {
		if v > 0 && v > have.other[k] {
			return k, false
		}
	}
	return "", true
}

func (r requests) quantity(name corev1.ResourceName) string {
	switch name {
	case corev1.ResourceCPU:
		return resource.NewMilliQuantity(r.cpuMilli, resource.DecimalSI).String()
	case corev1.ResourceMemory:
		return resource.NewQuantity(r.memory, resource.BinarySI).String()
	case corev1.ResourceEphemeralStorage:
		return resource.NewQuantity(r.ephemeral, resource.BinarySI).String()
	}
	return resource.NewQuantity(r.other[name], resource.DecimalSI).String()
}
