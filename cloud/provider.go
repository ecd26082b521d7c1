// Package cloud is the seam between rebalancer and whatever sells machines: the
// Provider interface (offerings with prices, provision, get, list, terminate) and
// the capabilities the executor reads to decide how carefully it must act. It is
// kept small, in the spirit of Karpenter's CloudProvider, so that a KWOK simulation
// and VPSie's API both fit it.
package cloud

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// Provider provisions and terminates the machines behind Kubernetes nodes.
type Provider interface {
	// Name identifies the provider in logs and metrics ("kwok", "vpsie").
	Name() string
	// Capabilities says what the executor may rely on.
	Capabilities() Capabilities
	// Offerings lists what can be bought now, with prices, in every datacenter.
	Offerings(ctx context.Context) ([]Offering, error)
	// Provision asks for one new machine. When Capabilities().IdempotentProvision is
	// false the token is ignored and a retry may buy a second machine; when
	// ReturnsInstance is false the result is nil and the caller finds the new
	// instance in List by set difference.
	Provision(ctx context.Context, req ProvisionRequest) (*Instance, error)
	// Get returns the instance behind a node's spec.providerID, or ErrNotFound.
	Get(ctx context.Context, providerID string) (*Instance, error)
	// List returns every instance the provider manages.
	List(ctx context.Context) ([]Instance, error)
	// Terminate deletes the instance behind providerID; ErrNotFound when it is gone.
	Terminate(ctx context.Context, providerID string) error
}

// Capabilities are what a provider can promise.
type Capabilities struct {
	// IdempotentProvision: a repeated Provision with the same token returns the same
	// instance instead of buying another. Without it the executor records the
	// instance set before the call and never retries blindly.
	IdempotentProvision bool
	// ReturnsInstance: Provision returns the new instance (VPSie's managed-Kubernetes
	// "add node" answers only `true`).
	ReturnsInstance bool
	// SetsLabelsAndTaints: the new node carries the requested labels and taints from
	// its first moment. Without it the executor applies them once the node appears,
	// and relies on the initializing taint it can add to keep pods off until then.
	SetsLabelsAndTaints bool
}

// Offering is a kind of machine for sale in one datacenter.
type Offering struct {
	Name             string
	Datacenter       string
	Arch             string // amd64, arm64
	CPU              resource.Quantity
	Memory           resource.Quantity
	Pods             int64
	EphemeralStorage resource.Quantity
	GPUs             int64
	HourlyPrice      float64
}

// MonthlyPrice is the hourly price over an average month of 730 hours.
func (o Offering) MonthlyPrice() float64 { return o.HourlyPrice * 730 }

// Resources is what a machine of the offering offers to pods, as a node reports it.
func (o Offering) Resources() corev1.ResourceList {
	r := corev1.ResourceList{
		corev1.ResourceCPU:              o.CPU,
		corev1.ResourceMemory:           o.Memory,
		corev1.ResourcePods:             *resource.NewQuantity(o.Pods, resource.DecimalSI),
		corev1.ResourceEphemeralStorage: o.EphemeralStorage,
	}
	if o.GPUs > 0 {
		r["nvidia.com/gpu"] = *resource.NewQuantity(o.GPUs, resource.DecimalSI)
	}
	return r
}

// Key identifies an offering: the same name can be priced differently per datacenter.
func (o Offering) Key() string { return o.Datacenter + "/" + o.Name }

// ProvisionRequest asks for one machine.
type ProvisionRequest struct {
	Offering   string
	Datacenter string
	// NodeName is a hint; a provider may choose another name.
	NodeName string
	Labels   map[string]string
	Taints   []corev1.Taint
	// Token makes the request idempotent where the provider supports it: the
	// executor writes it to its record before calling, so a retry after a crash asks
	// for the same machine.
	Token string
}

// InstanceState is a machine's life stage as the provider reports it.
type InstanceState string

// Instance states.
const (
	StatePending     InstanceState = "pending"
	StateRunning     InstanceState = "running"
	StateTerminating InstanceState = "terminating"
)

// Instance is one machine.
type Instance struct {
	// ProviderID is what the node's spec.providerID holds, e.g. kwok://node-a.
	ProviderID string
	// NodeName is the Kubernetes node's name, when known.
	NodeName   string
	Offering   string
	Datacenter string
	State      InstanceState
	CreatedAt  time.Time
	// Token is the idempotency token the instance was provisioned with, if the
	// provider keeps it.
	Token string
}

// Typed errors. Callers test them with errors.Is; providers wrap them with context.
var (
	// ErrNotFound: the instance does not exist (any more).
	ErrNotFound = errors.New("instance not found")
	// ErrInsufficientCapacity: the offering is sold out in that datacenter now.
	ErrInsufficientCapacity = errors.New("insufficient capacity")
	// ErrUnknownOffering: no such offering in that datacenter.
	ErrUnknownOffering = errors.New("unknown offering")
)

// RetryableError marks a failure worth retrying with backoff (a timeout, a 5xx, a
// rate limit). Anything not marked is final.
type RetryableError struct {
	Err error
	// After, when set, is how long the provider asked us to wait.
	After time.Duration
}

func (e *RetryableError) Error() string { return fmt.Sprintf("retryable: %v", e.Err) }
func (e *RetryableError) Unwrap() error { return e.Err }

// Retryable wraps err as retryable.
func Retryable(err error) error { return &RetryableError{Err: err} }

// IsRetryable reports whether err, or anything it wraps, is a RetryableError.
func IsRetryable(err error) bool {
	var r *RetryableError
	return errors.As(err, &r)
}
