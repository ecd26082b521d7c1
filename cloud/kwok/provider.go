// Package kwok is a cloud.Provider whose machines are Node objects on a real API
// server, made Ready by KWOK. It serves the tests and the demo, and it can misbehave
// on request — slow provisioning, a failing Nth call, nodes that never turn Ready,
// and a non-idempotent mode that answers like VPSie's managed-Kubernetes API (no
// token honoured, nothing returned, the node appears later) — so the executor's
// careful paths run here long before a real cloud.
package kwok

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/clock"

	"github.com/rebalancer-dev/rebalancer/cloud"
)

// Labels and annotations the provider reads and writes.
const (
	// NodeAnnotation hands a node to KWOK (the local cluster's kwok manages nodes with it).
	NodeAnnotation = "kwok.x-k8s.io/node"
	// LabelOffering names the offering a node runs on.
	LabelOffering = "rebalancer.dev/offering"
	// LabelTokenHash finds the node a provision token created (labels hold 63 characters,
	// tokens may be longer: the label holds a hash, the annotation the token).
	LabelTokenHash       = "rebalancer.dev/provision-token-hash"
	AnnotationToken      = "rebalancer.dev/provision-token"
	AnnotationNeverReady = "rebalancer.dev/kwok-never-ready"
	// ProviderIDPrefix starts every providerID this provider hands out.
	ProviderIDPrefix = "kwok://"
)

// Faults make the provider misbehave, for rollback and crash tests.
type Faults struct {
	// ProvisionDelay is how long a machine takes: Provision blocks this long before
	// creating the node, or (non-idempotent) the node appears this long after the call.
	ProvisionDelay time.Duration
	// FailProvisionCall makes the Nth Provision call (1-based, counted from the last
	// SetFaults) fail with FailProvisionErr (default cloud.ErrInsufficientCapacity).
	FailProvisionCall int
	FailProvisionErr  error
	// NeverReady: new nodes never turn Ready.
	NeverReady bool
	// NonIdempotent behaves as VPSie's managed-Kubernetes "add node" call: the token is
	// ignored, nothing is returned, the provider picks the name and the labels and
	// taints are not applied.
	NonIdempotent bool
}

// Provider implements cloud.Provider on KWOK nodes.
type Provider struct {
	client  kubernetes.Interface
	catalog []cloud.Offering
	clock   clock.WithTicker

	mu     sync.Mutex
	faults Faults
	calls  int
	wg     sync.WaitGroup
	stop   chan struct{}
}

// Option configures a Provider.
type Option func(*Provider)

// WithClock injects the clock that times provisioning delays.
func WithClock(c clock.WithTicker) Option { return func(p *Provider) { p.clock = c } }

// WithFaults starts the provider with faults.
func WithFaults(f Faults) Option { return func(p *Provider) { p.faults = f } }

// New returns a provider selling catalog on the cluster client talks to.
func New(client kubernetes.Interface, catalog []cloud.Offering, opts ...Option) *Provider {
	p := &Provider{client: client, catalog: catalog, clock: clock.RealClock{}, stop: make(chan struct{})}
	for _, o := range opts {
		o(p)
	}
	return p
}

// SetFaults replaces the faults and restarts the call count.
func (p *Provider) SetFaults(f Faults) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.faults, p.calls = f, 0
}

// Close stops nodes still waiting to appear (non-idempotent mode) and waits for
// their goroutines.
func (p *Provider) Close() {
	p.mu.Lock()
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// Name implements cloud.Provider.
func (p *Provider) Name() string { return "kwok" }

// Capabilities implements cloud.Provider.
func (p *Provider) Capabilities() cloud.Capabilities {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.faults.NonIdempotent {
		return cloud.Capabilities{}
	}
	return cloud.Capabilities{IdempotentProvision: true, ReturnsInstance: true, SetsLabelsAndTaints: true}
}

// Offerings implements cloud.Provider.
func (p *Provider) Offerings(context.Context) ([]cloud.Offering, error) {
	return append([]cloud.Offering(nil), p.catalog...), nil
}

// SetCatalog replaces the offerings (a price change, an offering withdrawn).
func (p *Provider) SetCatalog(c []cloud.Offering) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.catalog = c
}

func (p *Provider) offering(name, dc string) (cloud.Offering, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, o := range p.catalog {
		if o.Name == name && o.Datacenter == dc {
			return o, true
		}
	}
	return cloud.Offering{}, false
}

// Provision implements cloud.Provider.
func (p *Provider) Provision(ctx context.Context, req cloud.ProvisionRequest) (*cloud.Instance, error) {
	off, ok := p.offering(req.Offering, req.Datacenter)
	if !ok {
		return nil, fmt.Errorf("provisioning %s in %s: %w", req.Offering, req.Datacenter, cloud.ErrUnknownOffering)
	}
	p.mu.Lock()
	p.calls++
	f, n := p.faults, p.calls
	p.mu.Unlock()
	if f.FailProvisionCall > 0 && n == f.FailProvisionCall {
		err := f.FailProvisionErr
		if err == nil {
			err = cloud.ErrInsufficientCapacity
		}
		return nil, fmt.Errorf("provisioning %s in %s (injected failure of call %d): %w", req.Offering, req.Datacenter, n, err)
	}
	if f.NonIdempotent {
		name := randomName(off.Name)
		node := NewNode(name, off, nil, nil, f.NeverReady)
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			select {
			case <-p.clock.After(f.ProvisionDelay):
			case <-p.stop:
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_ = CreateNode(ctx, p.client, node) // like a cloud's async create: nobody hears of a failure
		}()
		return nil, nil
	}

	// Idempotent path: the token finds the node an earlier call made.
	if req.Token != "" {
		if inst, err := p.byToken(ctx, req.Token); err != nil || inst != nil {
			return inst, err
		}
	}
	if f.ProvisionDelay > 0 {
		select {
		case <-p.clock.After(f.ProvisionDelay):
		case <-ctx.Done():
			return nil, fmt.Errorf("provisioning %s: %w", req.Offering, ctx.Err())
		}
	}
	name := req.NodeName
	if name == "" {
		name = randomName(off.Name)
	}
	labels := map[string]string{}
	for k, v := range req.Labels {
		labels[k] = v
	}
	annotations := map[string]string{}
	if req.Token != "" {
		labels[LabelTokenHash] = tokenHash(req.Token)
		annotations[AnnotationToken] = req.Token
	}
	node := NewNode(name, off, labels, req.Taints, f.NeverReady)
	for k, v := range annotations {
		node.Annotations[k] = v
	}
	if err := CreateNode(ctx, p.client, node); err != nil {
		if apierrors.IsAlreadyExists(err) && req.Token != "" {
			// Lost a race with ourselves, or a retry: the token decides.
			if inst, terr := p.byToken(ctx, req.Token); terr == nil && inst != nil {
				return inst, nil
			}
		}
		return nil, fmt.Errorf("provisioning %s: %w", name, classify(err))
	}
	created, err := p.client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("reading new node %s: %w", name, classify(err))
	}
	inst := instanceOf(created)
	return &inst, nil
}

func (p *Provider) byToken(ctx context.Context, token string) (*cloud.Instance, error) {
	list, err := p.client.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: LabelTokenHash + "=" + tokenHash(token)})
	if err != nil {
		return nil, fmt.Errorf("looking up provision token: %w", classify(err))
	}
	for i := range list.Items {
		if list.Items[i].Annotations[AnnotationToken] == token {
			inst := instanceOf(&list.Items[i])
			return &inst, nil
		}
	}
	return nil, nil
}

// Get implements cloud.Provider.
func (p *Provider) Get(ctx context.Context, providerID string) (*cloud.Instance, error) {
	name, err := nodeName(providerID)
	if err != nil {
		return nil, err
	}
	n, err := p.client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) || (err == nil && n.Spec.ProviderID != providerID) {
		return nil, fmt.Errorf("getting %s: %w", providerID, cloud.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("getting %s: %w", providerID, classify(err))
	}
	inst := instanceOf(n)
	return &inst, nil
}

// List implements cloud.Provider.
func (p *Provider) List(ctx context.Context) ([]cloud.Instance, error) {
	list, err := p.client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing nodes: %w", classify(err))
	}
	var out []cloud.Instance
	for i := range list.Items {
		if strings.HasPrefix(list.Items[i].Spec.ProviderID, ProviderIDPrefix) {
			out = append(out, instanceOf(&list.Items[i]))
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].ProviderID < out[b].ProviderID })
	return out, nil
}

// Terminate implements cloud.Provider.
func (p *Provider) Terminate(ctx context.Context, providerID string) error {
	if _, err := p.Get(ctx, providerID); err != nil {
		return err
	}
	name, _ := nodeName(providerID)
	// Preconditions: never delete a node of the same name that replaced this one.
	n, err := p.client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("terminating %s: %w", providerID, classify(err))
	}
	err = p.client.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &n.UID}})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return fmt.Errorf("terminating %s: %w", providerID, cloud.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("terminating %s: %w", providerID, classify(err))
	}
	return nil
}

// NewNode builds the Node a machine of offering off registers: the labels a kubelet
// and cloud controller would set (hostname, arch, instance type, region), ours, and
// capacity from the offering.
func NewNode(name string, off cloud.Offering, labels map[string]string, taints []corev1.Taint, neverReady bool) *corev1.Node {
	l := map[string]string{}
	for k, v := range labels {
		l[k] = v
	}
	l[corev1.LabelHostname] = name
	l[corev1.LabelArchStable] = off.Arch
	l[corev1.LabelOSStable] = "linux"
	l[corev1.LabelInstanceTypeStable] = off.Name
	l[corev1.LabelTopologyRegion] = off.Datacenter
	l[LabelOffering] = off.Name
	a := map[string]string{NodeAnnotation: "fake"}
	if neverReady {
		a[AnnotationNeverReady] = "true"
	}
	res := off.Resources()
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: l, Annotations: a},
		Spec:       corev1.NodeSpec{ProviderID: ProviderIDPrefix + name, Taints: taints},
		Status:     corev1.NodeStatus{Capacity: res, Allocatable: res.DeepCopy()},
	}
}

// CreateNode creates node and sets its capacity. The API server drops status on
// create, and KWOK may write the node's conditions in between, so capacity is set
// by a status update retried on conflict.
func CreateNode(ctx context.Context, client kubernetes.Interface, node *corev1.Node) error {
	status := node.Status
	if _, err := client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		return err
	}
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n, err := client.CoreV1().Nodes().Get(ctx, node.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		n.Status.Capacity = status.Capacity
		n.Status.Allocatable = status.Allocatable
		_, err = client.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
		return err
	})
}

func instanceOf(n *corev1.Node) cloud.Instance {
	state := cloud.StatePending
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
			state = cloud.StateRunning
		}
	}
	if n.DeletionTimestamp != nil {
		state = cloud.StateTerminating
	}
	return cloud.Instance{
		ProviderID: n.Spec.ProviderID,
		NodeName:   n.Name,
		Offering:   n.Labels[LabelOffering],
		Datacenter: n.Labels[corev1.LabelTopologyRegion],
		State:      state,
		CreatedAt:  n.CreationTimestamp.Time,
		Token:      n.Annotations[AnnotationToken],
	}
}

func nodeName(providerID string) (string, error) {
	name, ok := strings.CutPrefix(providerID, ProviderIDPrefix)
	if !ok || name == "" {
		return "", fmt.Errorf("providerID %q is not a KWOK providerID (%s<node>): %w", providerID, ProviderIDPrefix, cloud.ErrNotFound)
	}
	return name, nil
}

func tokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:16])
}

func randomName(offering string) string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	base := strings.Trim(strings.ToLower(strings.NewReplacer(".", "-", "_", "-").Replace(offering)), "-")
	if len(base) > 50 {
		base = base[:50]
	}
	return base + "-" + hex.EncodeToString(b)
}

// classify marks API errors worth retrying.
func classify(err error) error {
	if apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) || apierrors.IsTooManyRequests(err) ||
		apierrors.IsServiceUnavailable(err) || apierrors.IsInternalError(err) || errors.Is(err, context.DeadlineExceeded) {
		return cloud.Retryable(err)
	}
	return err
}

var _ cloud.Provider = (*Provider)(nil)
