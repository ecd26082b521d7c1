package planner

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	policylisters "k8s.io/client-go/listers/policy/v1"
	"k8s.io/client-go/tools/cache"

	api "github.com/rebalancer-dev/rebalancer/api/v1alpha1"
	"github.com/rebalancer-dev/rebalancer/policies"
)

// ClusterSource reads nodes, pods, PDBs and volumes through shared informers, so a
// long-running analyzer reads a cache instead of listing the API server each time.
type ClusterSource struct {
	factory informers.SharedInformerFactory
	nodes   corelisters.NodeLister
	pods    corelisters.PodLister
	pdbs    policylisters.PodDisruptionBudgetLister
	pvcs    corelisters.PersistentVolumeClaimLister
	pvs     corelisters.PersistentVolumeLister
	synced  []cache.InformerSynced
}

// NewClusterSource prepares informers; Start runs them.
func NewClusterSource(client kubernetes.Interface) *ClusterSource {
	f := informers.NewSharedInformerFactory(client, 0)
	s := &ClusterSource{factory: f,
		nodes: f.Core().V1().Nodes().Lister(), pods: f.Core().V1().Pods().Lister(),
		pdbs: f.Policy().V1().PodDisruptionBudgets().Lister(),
		pvcs: f.Core().V1().PersistentVolumeClaims().Lister(), pvs: f.Core().V1().PersistentVolumes().Lister()}
	s.synced = []cache.InformerSynced{
		f.Core().V1().Nodes().Informer().HasSynced, f.Core().V1().Pods().Informer().HasSynced,
		f.Policy().V1().PodDisruptionBudgets().Informer().HasSynced,
		f.Core().V1().PersistentVolumeClaims().Informer().HasSynced, f.Core().V1().PersistentVolumes().Informer().HasSynced,
	}
	return s
}

// Start runs the informers until ctx ends and waits for their caches to fill.
func (s *ClusterSource) Start(ctx context.Context, timeout time.Duration) error {
	s.factory.Start(ctx.Done())
	syncCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if !cache.WaitForCacheSync(syncCtx.Done(), s.synced...) {
		return fmt.Errorf("reading the cluster: caches did not sync within %s (is the API server reachable, and may we list nodes, pods, PDBs and volumes?)", timeout)
	}
	return nil
}

// Shutdown stops the informers and waits for their goroutines.
func (s *ClusterSource) Shutdown() { s.factory.Shutdown() }

// Snapshot returns the cluster as the caches hold it now. The objects are shared
// with the cache and must not be changed.
func (s *ClusterSource) Snapshot() (*policies.Snapshot, error) {
	nodes, err := s.nodes.List(labels.Everything())
	if err != nil {
		return nil, fmt.Errorf("listing nodes: %w", err)
	}
	pods, err := s.pods.List(labels.Everything())
	if err != nil {
		return nil, fmt.Errorf("listing pods: %w", err)
	}
	pdbs, err := s.pdbs.List(labels.Everything())
	if err != nil {
		return nil, fmt.Errorf("listing PDBs: %w", err)
	}
	pvcs, err := s.pvcs.List(labels.Everything())
	if err != nil {
		return nil, fmt.Errorf("listing PVCs: %w", err)
	}
	pvs, err := s.pvs.List(labels.Everything())
	if err != nil {
		return nil, fmt.Errorf("listing PVs: %w", err)
	}
	return policies.NewSnapshot(nodes, pods, pdbs, pvcs, pvs), nil
}

// HistoryFromTree reads plans/ and status/ under root in fsys — a checkout of the
// GitOps repository — into the History the analyzer needs: nodes of plans without a
// terminal status are pending; a terminal status of a plan that changed something
// starts its group's cooldown.
func HistoryFromTree(fsys fs.FS, root string) (History, error) {
	h := History{PendingNodes: map[string]string{}, LastFinished: map[string]time.Time{}}
	plans, err := readDir(fsys, path.Join(root, "plans"))
	if err != nil {
		return h, err
	}
	statuses := map[string]*api.RebalanceStatus{}
	files, err := readDir(fsys, path.Join(root, "status"))
	if err != nil {
		return h, err
	}
	for file, data := range files {
		st, err := api.DecodeStatus(file, data)
		if err != nil {
			return h, err
		}
		statuses[st.Metadata.Name] = st
	}
	for file, data := range plans {
		plan, err := api.DecodePlan(file, data)
		if err != nil {
			return h, err
		}
		st := statuses[plan.Metadata.Name]
		if st == nil || !st.Status.Phase.Terminal() {
			for _, c := range plan.Spec.Candidates {
				h.PendingNodes[c.Node] = plan.Metadata.Name
			}
			continue
		}
		if ChangedSomething(st) {
			k := GroupKey(plan.Spec.Policy, plan.Spec.NodeGroup)
			if st.Status.FinishedAt.After(h.LastFinished[k]) {
				h.LastFinished[k] = st.Status.FinishedAt.Time
			}
		}
	}
	return h, nil
}

// ChangedSomething reports whether a finished plan touched the cluster, which is
// what starts a node group's cooldown.
func ChangedSomething(st *api.RebalanceStatus) bool {
	if st.Status.Phase == api.PhaseSucceeded {
		return true
	}
	return len(st.Status.ProvisionedNodes) > 0 || len(st.Status.CordonedNodes) > 0
}

func readDir(fsys fs.FS, dir string) (map[string][]byte, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("reading %s: %w", dir, err)
	}
	out := map[string][]byte{}
	for _, e := range entries {
		if e.IsDir() || !(strings.HasSuffix(e.Name(), ".yaml") || strings.HasSuffix(e.Name(), ".yml")) {
			continue
		}
		file := path.Join(dir, e.Name())
		data, err := fs.ReadFile(fsys, file)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", file, err)
		}
		out[file] = data
	}
	return out, nil
}
