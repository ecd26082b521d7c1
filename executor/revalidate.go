package executor

import (
	"context"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	api "github.com/rebalancer-dev/rebalancer/api/v1alpha1"
	"github.com/rebalancer-dev/rebalancer/cloud"
	"github.com/rebalancer-dev/rebalancer/policies"
)

// PolicySource returns the policies on the watched branch now.
type PolicySource func(ctx context.Context) (*policies.Policies, error)

// ClusterRevalidator re-checks plans against a fresh listing of the cluster, the
// provider's offerings of now, the policies from source and the hard limits.
type ClusterRevalidator struct {
	Client   kubernetes.Interface
	Provider cloud.Provider
	Policies PolicySource
	Limits   policies.Limits
	// LastFinished returns when the plan's node group last finished a plan that
	// changed something (zero: never).
	LastFinished func(ctx context.Context, plan *api.RebalancePlan) (time.Time, error)
}

// Revalidate implements Revalidator.
func (r *ClusterRevalidator) Revalidate(ctx context.Context, plan *api.RebalancePlan, in policies.RevalidateInput) (policies.Decision, error) {
	snap, err := ListSnapshot(ctx, r.Client)
	if err != nil {
		return policies.Decision{}, err
	}
	ps, err := r.Policies(ctx)
	if err != nil {
		return policies.Decision{}, fmt.Errorf("reading policies: %w", err)
	}
	offerings, err := r.Provider.Offerings(ctx)
	if err != nil {
		return policies.Decision{}, fmt.Errorf("reading offerings: %w", err)
	}
	in.Snapshot, in.Policies, in.Offerings, in.Limits = snap, ps, offerings, r.Limits
	if r.LastFinished != nil {
		if in.LastFinished, err = r.LastFinished(ctx, plan); err != nil {
			return policies.Decision{}, err
		}
	}
	return policies.Revalidate(plan, in), nil
}

// ListSnapshot lists nodes, pods, PDBs and volumes straight from the API server:
// decisions that precede a change read the freshest state, not a cache.
func ListSnapshot(ctx context.Context, c kubernetes.Interface) (*policies.Snapshot, error) {
	nodes, err := c.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing nodes: %w", err)
	}
	pods, err := c.CoreV1().Pods(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing pods: %w", err)
	}
	pdbs, err := c.PolicyV1().PodDisruptionBudgets(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing PDBs: %w", err)
	}
	pvcs, err := c.CoreV1().PersistentVolumeClaims(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing PVCs: %w", err)
	}
	pvs, err := c.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing PVs: %w", err)
	}
	s := policies.NewSnapshot(ptrs(nodes.Items), ptrs(pods.Items), ptrs(pdbs.Items), ptrs(pvcs.Items), ptrs(pvs.Items))
	return s, nil
}

func ptrs[T any](items []T) []*T {
	out := make([]*T, len(items))
	for i := range items {
		out[i] = &items[i]
	}
	return out
}
