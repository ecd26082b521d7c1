package executor

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	"k8s.io/kubectl/pkg/drain"

	"github.com/rebalancer-dev/rebalancer/policies"
)

// drainBlocked: pods were still on the node when drainTimeout ran out.
type drainBlocked struct {
	node    string
	timeout time.Duration
	pods    []string
	why     string
}

func (d *drainBlocked) Error() string {
	return fmt.Sprintf("%d pods still on %s after drainTimeout %s (%s): %s", len(d.pods), d.node, d.timeout, d.why, strings.Join(d.pods, ", "))
}

// evictAll evicts every pod a drain must move from node and waits until they are
// gone, within timeout. k8s.io/kubectl/pkg/drain only chooses the pods (skipping
// DaemonSet and mirror pods); the eviction loop is ours: policy/v1 Evictions with
// the pod's UID as precondition (404 and 409 mean it is gone or replaced), 429
// retried with backoff on the injected clock, and never a direct delete.
func (e *Executor) evictAll(ctx context.Context, node string, timeout time.Duration, log *slog.Logger) error {
	helper := &drain.Helper{Ctx: ctx, Client: e.client, Force: true, IgnoreAllDaemonSets: true, DeleteEmptyDirData: true,
		GracePeriodSeconds: -1, Out: discard{}, ErrOut: discard{}}
	deadline := e.clock.Now().Add(timeout)
	began := e.clock.Now().Add(-time.Second) // creation timestamps have second precision
	backoff := e.opts.PollInterval
	evicted := 0
	for {
		list, errs := helper.GetPodsForDeletion(node)
		if len(errs) > 0 {
			return fmt.Errorf("choosing pods to evict from %s: %v", node, errs)
		}
		// A pod that tolerates our taint may be rescheduled onto the node it was
		// evicted from; chasing its successors would never end. Successors created
		// after this drain began are left for the node's termination, as Karpenter
		// does with pods tolerating its disruption taint.
		pods := slices.DeleteFunc(list.Pods(), func(p corev1.Pod) bool {
			return toleratesDisrupting(&p) && p.CreationTimestamp.After(began)
		})
		if len(pods) == 0 {
			if evicted > 0 {
				log.Info("node drained", "evicted", evicted)
			}
			return nil
		}
		var refused []string
		why := "waiting for evicted pods to terminate"
		for i := range pods {
			p := &pods[i]
			if p.DeletionTimestamp != nil {
				continue // evicted already; waiting for it to go
			}
			err := e.client.PolicyV1().Evictions(p.Namespace).Evict(ctx, &policyv1.Eviction{
				ObjectMeta:    metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace},
				DeleteOptions: &metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &p.UID}},
			})
			switch {
			case err == nil:
				evicted++
				log.Debug("pod evicted", "pod", p.Namespace+"/"+p.Name)
			case apierrors.IsNotFound(err) || apierrors.IsConflict(err):
				// gone, or a new pod of the same name: this one is done
			case apierrors.IsTooManyRequests(err):
				refused = append(refused, p.Namespace+"/"+p.Name)
				why = "the PodDisruptionBudget allows no disruption"
			case apierrors.IsInternalError(err) && strings.Contains(err.Error(), "more than one PodDisruptionBudget"):
				return &drainBlocked{node: node, timeout: timeout, pods: []string{p.Namespace + "/" + p.Name},
					why: "the pod is selected by more than one PodDisruptionBudget, which the Eviction API refuses"}
			default:
				return fmt.Errorf("evicting %s/%s from %s: %w", p.Namespace, p.Name, node, err)
			}
		}
		if !e.clock.Now().Before(deadline) {
			left := make([]string, len(pods))
			for i := range pods {
				left[i] = pods[i].Namespace + "/" + pods[i].Name
			}
			slices.Sort(left)
			return &drainBlocked{node: node, timeout: timeout, pods: left, why: why}
		}
		if len(refused) > 0 {
			log.Debug("evictions refused by PDB, backing off", "pods", refused, "backoff", backoff)
			backoff = min(backoff*2, 5*time.Second)
		} else {
			backoff = e.opts.PollInterval
		}
		if err := e.sleep(ctx, backoff); err != nil {
			return err
		}
	}
}

func toleratesDisrupting(p *corev1.Pod) bool {
	taint := corev1.Taint{Key: policies.TaintDisrupting, Effect: corev1.TaintEffectNoSchedule}
	for _, t := range p.Spec.Tolerations {
		if t.ToleratesTaint(klog.Background(), &taint, false) {
			return true
		}
	}
	return false
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
