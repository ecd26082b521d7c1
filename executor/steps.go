package executor

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"

	api "github.com/rebalancer-dev/rebalancer/api/v1alpha1"
	"github.com/rebalancer-dev/rebalancer/cloud"
	"github.com/rebalancer-dev/rebalancer/policies"
)

// Protections a new node carries until its plan ends, so neighbours leave it be.
var protections = map[string]string{
	policies.ScaleDownDisabled:     "true",
	policies.KarpenterDoNotDisrupt: "true",
}

func (e *Executor) do(ctx context.Context, rec *Record, p *Pair, a api.Action, log *slog.Logger) error {
	switch a {
	case api.ActionProvision:
		return e.provision(ctx, rec, p, log)
	case api.ActionWaitReady:
		return e.waitReady(ctx, rec, p, log)
	case api.ActionCordon:
		return e.cordon(ctx, rec, p)
	case api.ActionDrain:
		return e.drain(ctx, rec, p, log)
	case api.ActionTerminate:
		return e.terminate(ctx, rec, p, log)
	case api.ActionVerify:
		return e.verify(ctx, rec, p, log)
	}
	return fmt.Errorf("unknown action %q", a)
}

// nodeNameHint names a replacement after the node it replaces, unique per plan.
func nodeNameHint(p *Pair) string {
	sum := sha256.Sum256([]byte(p.Token))
	base := p.Old
	if len(base) > 56 {
		base = base[:56]
	}
	return strings.TrimRight(base, "-.") + "-" + hex.EncodeToString(sum[:])[:6]
}

func (e *Executor) provision(ctx context.Context, rec *Record, p *Pair, log *slog.Logger) error {
	if p.NewProviderID != "" {
		return nil
	}
	old, err := e.client.CoreV1().Nodes().Get(ctx, p.Old, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("reading node %s: %w", p.Old, err)
	}
	req := cloud.ProvisionRequest{
		Offering: p.Offering, Datacenter: p.Datacenter, NodeName: nodeNameHint(p), Token: p.Token,
		Labels: policies.UserLabels(old),
		Taints: append(policies.InheritedTaints(old), corev1.Taint{Key: policies.TaintInitializing, Effect: corev1.TaintEffectNoSchedule}),
	}
	caps := e.provider.Capabilities()
	// A provider that cannot provision idempotently is called at most once per
	// pair: after a crash its new instance is found by set difference.
	if caps.IdempotentProvision || !p.ProvisionAttempted {
		if !caps.IdempotentProvision {
			insts, err := e.provider.List(ctx)
			if err != nil {
				return fmt.Errorf("listing instances before provisioning for %s: %w", p.Old, err)
			}
			p.InstancesBefore = providerIDs(insts)
		}
		p.ProvisionAttempted = true
		if err := e.save(ctx, rec); err != nil { // the intent, before the call
			return err
		}
		e.event(p.Old, corev1.EventTypeNormal, "RebalanceProvisioning", "plan %s: provisioning %s in %s to replace this node", rec.Plan.Metadata.Name, p.Offering, p.Datacenter)
		inst, err := e.provider.Provision(ctx, req)
		if err != nil {
			if cloud.IsRetryable(err) && caps.IdempotentProvision {
				return fmt.Errorf("provisioning a replacement for %s: %w", p.Old, err)
			}
			return fail(api.TriggerProvisionFailed, "provisioning %s for %s: %v", p.Offering, p.Old, err)
		}
		if inst != nil {
			p.NewProviderID, p.NewNode = inst.ProviderID, inst.NodeName
			log.Info("replacement provisioned", "newNode", p.NewNode, "providerID", p.NewProviderID)
			return e.save(ctx, rec)
		}
	}
	inst, err := e.findNewInstance(ctx, rec, p, e.opts.ProvisionTimeout)
	if err != nil {
		return err
	}
	if inst == nil {
		return fail(api.TriggerProvisionFailed, "no new %s instance appeared within %s after the provision call for %s", p.Offering, e.opts.ProvisionTimeout, p.Old)
	}
	p.NewProviderID, p.NewNode = inst.ProviderID, inst.NodeName
	log.Info("replacement found by set difference", "newNode", p.NewNode, "providerID", p.NewProviderID)
	return e.save(ctx, rec)
}

// findNewInstance waits up to timeout for an instance that was not there before
// the provision call and that no other pair of the plan has taken.
func (e *Executor) findNewInstance(ctx context.Context, rec *Record, p *Pair, timeout time.Duration) (*cloud.Instance, error) {
	before := map[string]bool{}
	for _, id := range p.InstancesBefore {
		before[id] = true
	}
	for _, o := range rec.State.Pairs {
		if o.NewProviderID != "" {
			before[o.NewProviderID] = true
		}
	}
	deadline := e.clock.Now().Add(timeout)
	for {
		insts, err := e.provider.List(ctx)
		if err != nil {
			return nil, fmt.Errorf("listing instances to find the replacement of %s: %w", p.Old, err)
		}
		for i := range insts {
			if !before[insts[i].ProviderID] && insts[i].Offering == p.Offering && insts[i].Datacenter == p.Datacenter {
				return &insts[i], nil
			}
		}
		if !e.clock.Now().Before(deadline) {
			return nil, nil
		}
		if err := e.sleep(ctx, e.opts.PollInterval); err != nil {
			return nil, err
		}
	}
}

func providerIDs(insts []cloud.Instance) []string {
	out := make([]string, len(insts))
	for i, in := range insts {
		out[i] = in.ProviderID
	}
	slices.Sort(out)
	return out
}

func (e *Executor) sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-e.clock.After(d):
		return nil
	}
}

// waitReady waits for the replacement to register and turn Ready, gives it the old
// node's labels and taints if the provider could not, marks it, waits for the
// DaemonSet pods it should run, and then lifts the initializing taint.
func (e *Executor) waitReady(ctx context.Context, rec *Record, p *Pair, log *slog.Logger) error {
	deadline := e.clock.Now().Add(e.opts.WaitReadyTimeout)
	var node *corev1.Node
	for {
		n, err := e.nodeByProviderID(ctx, p.NewNode, p.NewProviderID)
		if err != nil {
			return err
		}
		if n != nil && policies.NodeReady(n) {
			node = n
			break
		}
		if !e.clock.Now().Before(deadline) {
			return fail(api.TriggerProvisionFailed, "replacement %s for %s did not turn Ready within %s", p.NewNode, p.Old, e.opts.WaitReadyTimeout)
		}
		if err := e.sleep(ctx, e.opts.PollInterval); err != nil {
			return err
		}
	}
	if p.NewNode != node.Name {
		p.NewNode = node.Name
		if err := e.save(ctx, rec); err != nil {
			return err
		}
	}
	old, err := e.client.CoreV1().Nodes().Get(ctx, p.Old, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("reading node %s: %w", p.Old, err)
	}
	if err := e.updateNode(ctx, node.Name, func(n *corev1.Node) {
		if n.Labels == nil {
			n.Labels = map[string]string{}
		}
		for k, v := range policies.UserLabels(old) {
			n.Labels[k] = v
		}
		for _, t := range policies.InheritedTaints(old) {
			if !hasTaint(n, t.Key) {
				n.Spec.Taints = append(n.Spec.Taints, t)
			}
		}
		if n.Annotations == nil {
			n.Annotations = map[string]string{}
		}
		n.Annotations[AnnotationPlan] = rec.Plan.Metadata.Name
		n.Annotations[AnnotationRole] = "replacement"
		for k, v := range protections {
			n.Annotations[k] = v
		}
	}); err != nil {
		return err
	}
	if err := e.waitDaemonSets(ctx, node.Name, deadline, log); err != nil {
		return err
	}
	return e.updateNode(ctx, node.Name, func(n *corev1.Node) { removeTaint(n, policies.TaintInitializing) })
}

// waitDaemonSets waits until every DaemonSet that would place a pod on the node —
// its template fits the node, our initializing taint included — has a Ready pod
// there. DaemonSets that do not tolerate the initializing taint come after it lifts.
func (e *Executor) waitDaemonSets(ctx context.Context, nodeName string, deadline time.Time, log *slog.Logger) error {
	for {
		node, err := e.client.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("reading node %s: %w", nodeName, err)
		}
		dss, err := e.client.AppsV1().DaemonSets(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
		if err != nil {
			return fmt.Errorf("listing DaemonSets: %w", err)
		}
		pods, err := e.podsOn(ctx, nodeName)
		if err != nil {
			return err
		}
		var missing []string
		for i := range dss.Items {
			ds := &dss.Items[i]
			tmpl := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ds.Namespace, Name: ds.Name}, Spec: ds.Spec.Template.Spec}
			if policies.PodFits(tmpl, node) != "" {
				continue
			}
			ready := false
			for _, p := range pods {
				if ownedBy(p, ds.UID) && policies.PodReady(p) {
					ready = true
				}
			}
			if !ready {
				missing = append(missing, ds.Namespace+"/"+ds.Name)
			}
		}
		if len(missing) == 0 {
			return nil
		}
		if !e.clock.Now().Before(deadline) {
			return fail(api.TriggerProvisionFailed, "DaemonSet pods %s not Ready on %s in time", strings.Join(missing, ", "), nodeName)
		}
		log.Debug("waiting for DaemonSet pods", "missing", missing)
		if err := e.sleep(ctx, e.opts.PollInterval); err != nil {
			return err
		}
	}
}

func (e *Executor) cordon(ctx context.Context, rec *Record, p *Pair) error {
	if !p.Cordoned {
		p.Cordoned = true
		if err := e.save(ctx, rec); err != nil { // the intent, before the taint
			return err
		}
	}
	return e.updateNode(ctx, p.Old, func(n *corev1.Node) {
		if !hasTaint(n, policies.TaintDisrupting) {
			n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: policies.TaintDisrupting, Value: rec.Plan.Metadata.Name, Effect: corev1.TaintEffectNoSchedule})
		}
		if n.Annotations == nil {
			n.Annotations = map[string]string{}
		}
		n.Annotations[AnnotationPlan] = rec.Plan.Metadata.Name
		n.Annotations[AnnotationRole] = "replaced"
	})
}

func (e *Executor) drain(ctx context.Context, rec *Record, p *Pair, log *slog.Logger) error {
	if err := e.recordBaseline(ctx, rec, p.Old); err != nil {
		return err
	}
	e.event(p.Old, corev1.EventTypeNormal, "RebalanceDraining", "plan %s: draining through the Eviction API", rec.Plan.Metadata.Name)
	err := e.evictAll(ctx, p.Old, rec.Plan.Spec.DrainTimeout.Duration, log)
	var blocked *drainBlocked
	if errors.As(err, &blocked) {
		return fail(api.TriggerDrainTimeout, "%v", blocked)
	}
	return err
}

func (e *Executor) terminate(ctx context.Context, rec *Record, p *Pair, log *slog.Logger) error {
	if p.Done {
		return nil
	}
	// The node's pods are listed again: whatever arrived since the drain is evicted
	// first, never deleted.
	err := e.evictAll(ctx, p.Old, rec.Plan.Spec.DrainTimeout.Duration, log)
	var blocked *drainBlocked
	if errors.As(err, &blocked) {
		return fail(api.TriggerDrainTimeout, "%v", blocked)
	}
	if err != nil {
		return err
	}
	if err := e.provider.Terminate(ctx, p.OldProviderID); err != nil && !errors.Is(err, cloud.ErrNotFound) {
		return fmt.Errorf("terminating %s: %w", p.Old, err)
	}
	if err := e.deleteNode(ctx, p.Old, p.OldProviderID); err != nil {
		return err
	}
	p.Done = true
	e.event(p.Old, corev1.EventTypeNormal, "RebalanceTerminated", "plan %s: replaced by %s", rec.Plan.Metadata.Name, p.NewNode)
	log.Info("old node terminated", "replacement", p.NewNode)
	return e.save(ctx, rec)
}

// deleteNode removes the Node object if it is still the one with providerID.
func (e *Executor) deleteNode(ctx context.Context, name, providerID string) error {
	n, err := e.client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading node %s: %w", name, err)
	}
	if n.Spec.ProviderID != providerID {
		return nil // another machine took the name: not ours to delete
	}
	err = e.client.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &n.UID}})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("deleting node %s: %w", name, err)
	}
	return nil
}

// recordBaseline counts the ready pods of every controller owning a pod on the node,
// before it is drained.
func (e *Executor) recordBaseline(ctx context.Context, rec *Record, node string) error {
	pods, err := e.podsOn(ctx, node)
	if err != nil {
		return err
	}
	if rec.State.Baseline == nil {
		rec.State.Baseline = map[string]int{}
	}
	changed := false
	for _, p := range pods {
		ref := metav1.GetControllerOf(p)
		if ref == nil || policies.IsDaemonSetPod(p) || policies.IsMirrorPod(p) {
			continue
		}
		key := p.Namespace + "/" + string(ref.UID)
		if _, ok := rec.State.Baseline[key]; ok {
			continue
		}
		n, _, err := e.ownerPods(ctx, p.Namespace, string(ref.UID))
		if err != nil {
			return err
		}
		rec.State.Baseline[key] = n
		changed = true
	}
	if changed {
		return e.save(ctx, rec)
	}
	return nil
}

// ownerPods counts the Ready pods of a controller, and its Pending ones.
func (e *Executor) ownerPods(ctx context.Context, ns, uid string) (ready, pending int, err error) {
	list, err := e.client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return 0, 0, fmt.Errorf("listing pods in %s: %w", ns, err)
	}
	for i := range list.Items {
		p := &list.Items[i]
		ref := metav1.GetControllerOf(p)
		if ref == nil || string(ref.UID) != uid || p.DeletionTimestamp != nil {
			continue
		}
		if policies.PodReady(p) {
			ready++
		} else if p.Status.Phase == corev1.PodPending {
			pending++
		}
	}
	return ready, pending, nil
}

// verify waits until every controller that had pods on drained nodes is back at
// its baseline of Ready pods and none of its pods is Pending.
func (e *Executor) verify(ctx context.Context, rec *Record, p *Pair, log *slog.Logger) error {
	deadline := e.clock.Now().Add(e.opts.VerifyTimeout)
	for {
		var short []string
		for key, want := range rec.State.Baseline {
			ns, uid, _ := strings.Cut(key, "/")
			ready, pending, err := e.ownerPods(ctx, ns, uid)
			if err != nil {
				return err
			}
			if ready < want || pending > 0 {
				short = append(short, fmt.Sprintf("%s: %d of %d ready, %d pending", key, ready, want, pending))
			}
		}
		if len(short) == 0 {
			rec.State.Baseline = nil
			return e.save(ctx, rec)
		}
		if !e.clock.Now().Before(deadline) {
			slices.Sort(short)
			return fail(api.TriggerWorkloadUnhealthy, "workloads did not recover within %s after draining %s: %s", e.opts.VerifyTimeout, p.Old, strings.Join(short, "; "))
		}
		log.Debug("waiting for workloads", "short", short)
		if err := e.sleep(ctx, e.opts.PollInterval); err != nil {
			return err
		}
	}
}

func (e *Executor) podsOn(ctx context.Context, node string) ([]*corev1.Pod, error) {
	list, err := e.client.CoreV1().Pods(metav1.NamespaceAll).List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node})
	if err != nil {
		return nil, fmt.Errorf("listing pods on %s: %w", node, err)
	}
	out := make([]*corev1.Pod, len(list.Items))
	for i := range list.Items {
		out[i] = &list.Items[i]
	}
	return out, nil
}

func ownedBy(p *corev1.Pod, uid types.UID) bool {
	ref := metav1.GetControllerOf(p)
	return ref != nil && ref.UID == uid
}

// nodeByProviderID finds the replacement's Node: by name when known, else by
// providerID.
func (e *Executor) nodeByProviderID(ctx context.Context, name, providerID string) (*corev1.Node, error) {
	if name != "" {
		n, err := e.client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err == nil && n.Spec.ProviderID == providerID {
			return n, nil
		}
		if err != nil && !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("reading node %s: %w", name, err)
		}
	}
	list, err := e.client.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: labels.Everything().String()})
	if err != nil {
		return nil, fmt.Errorf("listing nodes: %w", err)
	}
	for i := range list.Items {
		if list.Items[i].Spec.ProviderID == providerID {
			return &list.Items[i], nil
		}
	}
	return nil, nil
}

// updateNode applies change to a fresh copy of the node, retrying on conflict; a
// node that is gone is left alone.
func (e *Executor) updateNode(ctx context.Context, name string, change func(*corev1.Node)) error {
	err := retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		n, err := e.client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		n = n.DeepCopy()
		before := n.DeepCopy()
		change(n)
		if equalNode(before, n) {
			return nil
		}
		_, err = e.client.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{})
		return err
	})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("updating node %s: %w", name, err)
	}
	return nil
}

func equalNode(a, b *corev1.Node) bool {
	return fmt.Sprint(a.Labels) == fmt.Sprint(b.Labels) && fmt.Sprint(a.Annotations) == fmt.Sprint(b.Annotations) &&
		fmt.Sprint(a.Spec.Taints) == fmt.Sprint(b.Spec.Taints)
}

// releaseNewNode lifts the protections a replacement carried during the plan.
func (e *Executor) releaseNewNode(ctx context.Context, name string) error {
	return e.updateNode(ctx, name, func(n *corev1.Node) {
		for k := range protections {
			delete(n.Annotations, k)
		}
		removeTaint(n, policies.TaintInitializing)
	})
}

func hasTaint(n *corev1.Node, key string) bool {
	for _, t := range n.Spec.Taints {
		if t.Key == key {
			return true
		}
	}
	return false
}

func removeTaint(n *corev1.Node, key string) {
	out := n.Spec.Taints[:0]
	for _, t := range n.Spec.Taints {
		if t.Key != key {
			out = append(out, t)
		}
	}
	n.Spec.Taints = out
}

func (e *Executor) event(node, kind, reason, format string, args ...any) {
	e.events.Eventf(&corev1.ObjectReference{Kind: "Node", Name: node, UID: "", APIVersion: "v1"}, kind, reason, format, args...)
}
