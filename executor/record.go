package executor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	api "github.com/rebalancer-dev/rebalancer/api/v1alpha1"
)

// Labels and keys of execution records.
const (
	RecordLabel    = "rebalancer.dev/execution-record"
	recordPrefix   = "rebalancer-exec-"
	keyPlan        = "plan.yaml"
	keyState       = "state.json"
	annotationPlan = "rebalancer.dev/plan"
)

// ErrAlreadyClaimed: another execution record exists for the plan (at most once).
var ErrAlreadyClaimed = errors.New("plan already claimed by an execution record")

// ErrDeposed: the record changed under us, so another executor owns it now; the
// caller must stop acting at once.
var ErrDeposed = errors.New("execution record was changed by another executor: stopping")

// Record is a plan's execution record: the claim, the plan as merged, and the state
// with the intents written before each action and the outbox of status transitions.
type Record struct {
	Plan  *api.RebalancePlan
	State *State
	cm    *corev1.ConfigMap
	// saved is the state JSON last written, to recognise our own write whose
	// response was lost.
	saved []byte
}

// Name is the ConfigMap holding the record.
func (r *Record) Name() string { return r.cm.Name }

// RecordStore keeps execution records as ConfigMaps in the controller's namespace.
// Create-if-absent is the claim; every update is a resourceVersion compare-and-swap.
type RecordStore struct {
	client    kubernetes.Interface
	namespace string
}

// NewRecordStore returns a store in namespace.
func NewRecordStore(client kubernetes.Interface, namespace string) *RecordStore {
	return &RecordStore{client: client, namespace: namespace}
}

// RecordName is the ConfigMap name for a plan.
func RecordName(planID string) string { return recordPrefix + planID }

// Claim creates the record for plan: whoever creates it runs the plan. When the
// record already exists it returns ErrAlreadyClaimed with the existing record,
// unless the record is the very one this call wrote (a create whose response was
// lost), which it returns as claimed.
func (s *RecordStore) Claim(ctx context.Context, plan *api.RebalancePlan, state *State) (*Record, error) {
	planYAML, err := api.Marshal(plan)
	if err != nil {
		return nil, fmt.Errorf("encoding plan %s: %w", plan.Metadata.Name, err)
	}
	stateJSON, err := json.Marshal(state)
	if err != nil {
		return nil, fmt.Errorf("encoding state of %s: %w", plan.Metadata.Name, err)
	}
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{
			Name: RecordName(plan.Metadata.Name), Namespace: s.namespace,
			Labels:      map[string]string{RecordLabel: "true"},
			Annotations: map[string]string{annotationPlan: plan.Metadata.Name},
		},
		Data: map[string]string{keyPlan: string(planYAML), keyState: string(stateJSON)},
	}
	created, err := s.client.CoreV1().ConfigMaps(s.namespace).Create(ctx, cm, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		existing, lerr := s.Load(ctx, plan.Metadata.Name)
		if lerr != nil {
			return nil, fmt.Errorf("%w (and reading it failed: %v)", ErrAlreadyClaimed, lerr)
		}
		if existing.State.Holder == state.Holder && existing.State.ClaimID == state.ClaimID {
			return existing, nil
		}
		return existing, fmt.Errorf("plan %s: %w", plan.Metadata.Name, ErrAlreadyClaimed)
	}
	if err != nil {
		return nil, fmt.Errorf("claiming plan %s: %w", plan.Metadata.Name, err)
	}
	return &Record{Plan: plan, State: state, cm: created, saved: stateJSON}, nil
}

// Load reads a plan's record.
func (s *RecordStore) Load(ctx context.Context, planID string) (*Record, error) {
	cm, err := s.client.CoreV1().ConfigMaps(s.namespace).Get(ctx, RecordName(planID), metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("reading execution record of %s: %w", planID, err)
	}
	return decodeRecord(cm)
}

// List returns every record in the namespace: what a new leader resumes.
func (s *RecordStore) List(ctx context.Context) ([]*Record, error) {
	list, err := s.client.CoreV1().ConfigMaps(s.namespace).List(ctx, metav1.ListOptions{LabelSelector: RecordLabel + "=true"})
	if err != nil {
		return nil, fmt.Errorf("listing execution records: %w", err)
	}
	out := make([]*Record, 0, len(list.Items))
	for i := range list.Items {
		r, err := decodeRecord(&list.Items[i])
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

func decodeRecord(cm *corev1.ConfigMap) (*Record, error) {
	plan, err := api.DecodePlan(cm.Annotations[annotationPlan]+".yaml", []byte(cm.Data[keyPlan]))
	if err != nil {
		return nil, fmt.Errorf("execution record %s: plan: %w", cm.Name, err)
	}
	st := &State{}
	if err := json.Unmarshal([]byte(cm.Data[keyState]), st); err != nil {
		return nil, fmt.Errorf("execution record %s: state: %w", cm.Name, err)
	}
	return &Record{Plan: plan, State: st, cm: cm.DeepCopy(), saved: []byte(cm.Data[keyState])}, nil
}

// Save writes the record's state if nobody else changed it since we read it. A
// conflict means another executor holds the plan (ErrDeposed) — unless what is
// stored is exactly what we wrote, when only the response of our last write was
// lost.
func (s *RecordStore) Save(ctx context.Context, r *Record) error {
	stateJSON, err := json.Marshal(r.State)
	if err != nil {
		return fmt.Errorf("encoding state of %s: %w", r.Plan.Metadata.Name, err)
	}
	cm := r.cm.DeepCopy()
	cm.Data[keyState] = string(stateJSON)
	updated, err := s.client.CoreV1().ConfigMaps(s.namespace).Update(ctx, cm, metav1.UpdateOptions{})
	if apierrors.IsConflict(err) {
		cur, gerr := s.client.CoreV1().ConfigMaps(s.namespace).Get(ctx, r.cm.Name, metav1.GetOptions{})
		if gerr == nil && bytes.Equal([]byte(cur.Data[keyState]), stateJSON) {
			r.cm, r.saved = cur, stateJSON
			return nil
		}
		return fmt.Errorf("saving record of %s: %w", r.Plan.Metadata.Name, ErrDeposed)
	}
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("saving record of %s: the record was deleted: %w", r.Plan.Metadata.Name, ErrDeposed)
	}
	if err != nil {
		return fmt.Errorf("saving record of %s: %w", r.Plan.Metadata.Name, err)
	}
	r.cm, r.saved = updated, stateJSON
	return nil
}

// Delete removes a record, only if it is unchanged since we read it. The reconciler
// calls it once the final status is in git.
func (s *RecordStore) Delete(ctx context.Context, r *Record) error {
	rv := r.cm.ResourceVersion
	err := s.client.CoreV1().ConfigMaps(s.namespace).Delete(ctx, r.cm.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: &rv}})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting record of %s: %w", r.Plan.Metadata.Name, err)
	}
	return nil
}
