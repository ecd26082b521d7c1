package localcluster

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"

	"github.com/rebalancer-dev/rebalancer/cloud/kwok"
)

// NodeOptions describe a simulated node. Zero values get a 4-CPU, 16 GiB amd64 node.
type NodeOptions struct {
	Labels      map[string]string
	Annotations map[string]string
	Taints      []corev1.Taint
	CPU         string // e.g. "4"
	Memory      string // e.g. "16Gi"
	Pods        string // e.g. "110"
	Arch        string // amd64 (default) or arm64
	ProviderID  string // default kwok://<name>
	// Unschedulable sets spec.unschedulable, as `kubectl cordon` does.
	Unschedulable bool
}

// NewNode builds the Node object KWOK simulates: the hostname and arch labels and
// capacity a kubelet would report, and the annotation that hands it to KWOK.
func NewNode(name string, o NodeOptions) (*corev1.Node, error) {
	q := func(v, def, what string) (resource.Quantity, error) {
		if v == "" {
			v = def
		}
		r, err := resource.ParseQuantity(v)
		if err != nil {
			return r, fmt.Errorf("node %s: %s %q: %w", name, what, v, err)
		}
		return r, nil
	}
	cpu, err := q(o.CPU, "4", "cpu")
	if err != nil {
		return nil, err
	}
	mem, err := q(o.Memory, "16Gi", "memory")
	if err != nil {
		return nil, err
	}
	pods, err := q(o.Pods, "110", "pods")
	if err != nil {
		return nil, err
	}
	arch := o.Arch
	if arch == "" {
		arch = "amd64"
	}
	labels := map[string]string{}
	for k, v := range o.Labels {
		labels[k] = v
	}
	labels[corev1.LabelHostname] = name
	labels[corev1.LabelArchStable] = arch
	labels[corev1.LabelOSStable] = "linux"
	annotations := map[string]string{KwokNodeAnnotation: "fake"}
	for k, v := range o.Annotations {
		annotations[k] = v
	}
	pid := o.ProviderID
	if pid == "" {
		pid = "kwok://" + name
	}
	res := corev1.ResourceList{corev1.ResourceCPU: cpu, corev1.ResourceMemory: mem, corev1.ResourcePods: pods,
		corev1.ResourceEphemeralStorage: resource.MustParse("100Gi")}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels, Annotations: annotations},
		Spec:       corev1.NodeSpec{ProviderID: pid, Taints: o.Taints, Unschedulable: o.Unschedulable},
		Status:     corev1.NodeStatus{Capacity: res, Allocatable: res.DeepCopy()},
	}, nil
}

// AddNode creates a simulated node and waits until it is Ready.
func (c *Cluster) AddNode(ctx context.Context, name string, o NodeOptions) (*corev1.Node, error) {
	n, err := NewNode(name, o)
	if err != nil {
		return nil, err
	}
	if err := kwok.CreateNode(ctx, c.Client, n); err != nil {
		return nil, fmt.Errorf("creating node %s: %w", name, err)
	}
	return c.WaitNodeReady(ctx, name, 30*time.Second)
}

// WaitNodeReady waits for a node's Ready condition to be True.
func (c *Cluster) WaitNodeReady(ctx context.Context, name string, timeout time.Duration) (*corev1.Node, error) {
	var node *corev1.Node
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		n, err := c.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		node = n
		return NodeReady(n), nil
	})
	if err != nil {
		return nil, fmt.Errorf("node %s not Ready within %s: %w (kwok log:\n%s)", name, timeout, err, c.Log("kwok", 10))
	}
	return node, nil
}

// NodeReady reports whether the node's Ready condition is True.
func NodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// UserConfig returns a REST config that authenticates as user in groups, with a
// client certificate signed by the cluster's CA: RBAC applies to it, and the audit
// log names it.
func (c *Cluster) UserConfig(user string, groups ...string) (*rest.Config, error) {
	kp, err := c.ca.sign(user, groups, false)
	if err != nil {
		return nil, err
	}
	return restConfig(c.server, c.ca.certPEM, kp), nil
}

// WriteUserKubeconfig writes a kubeconfig for user in groups to path.
func (c *Cluster) WriteUserKubeconfig(path, user string, groups ...string) error {
	kp, err := c.ca.sign(user, groups, false)
	if err != nil {
		return err
	}
	return writeKubeconfig(path, c.server, c.ca.certPEM, user, kp)
}
