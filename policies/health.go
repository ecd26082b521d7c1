package policies

import (
	"fmt"
	"math"

	corev1 "k8s.io/api/core/v1"
)

// Health is the cluster-health gate's verdict.
type Health struct {
	Total, Unhealthy int
	Healthy          bool
	Message          string
}

// ClusterHealth counts NotReady nodes among those given, skipping the names in
// exclude (a plan's new nodes until they pass WaitReady). Being cordoned, by us or
// anyone, is not being unhealthy. The gate fails only when the count exceeds
// maxCount and the share exceeds maxPercent, so a single NotReady node in a small
// cluster does not stop everything; an empty cluster is healthy.
func ClusterHealth(nodes []*corev1.Node, exclude map[string]bool, maxPercent float64, maxCount int) Health {
	h := Health{}
	for _, n := range nodes {
		if exclude[n.Name] {
			continue
		}
		h.Total++
		if !NodeReady(n) {
			h.Unhealthy++
		}
	}
	pct := 0.0
	if h.Total > 0 {
		pct = 100 * float64(h.Unhealthy) / float64(h.Total)
	}
	h.Healthy = !(h.Unhealthy > maxCount && pct > maxPercent)
	h.Message = fmt.Sprintf("%d of %d nodes unhealthy (%.0f%%; limits: more than %s%% and more than %d)",
		h.Unhealthy, h.Total, math.Round(pct), trimFloat(maxPercent), maxCount)
	return h
}

func trimFloat(f float64) string { return fmt.Sprintf("%g", f) }

// NodeReady reports whether a node's Ready condition is True.
func NodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
