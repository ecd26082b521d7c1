// Package fake is an in-memory cloud.Provider for unit tests: it records every call
// and can be told to fail the next one, in the manner of Karpenter's fake provider.
package fake

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/rebalancer-dev/rebalancer/cloud"
)

// Call is one recorded method call.
type Call struct {
	Method string
	// Arg is the request for Provision, the providerID for Get and Terminate.
	Arg any
}

// Provider is a recording fake. The zero value is not usable; use New.
type Provider struct {
	mu        sync.Mutex
	caps      cloud.Capabilities
	offerings []cloud.Offering
	instances map[string]cloud.Instance // by providerID
	calls     []Call
	nextErr   map[string]error
	seq       int
	now       func() time.Time
}

// New returns a fake selling offerings, with every capability on.
func New(offerings ...cloud.Offering) *Provider {
	return &Provider{
		caps:      cloud.Capabilities{IdempotentProvision: true, ReturnsInstance: true, SetsLabelsAndTaints: true},
		offerings: offerings,
		instances: map[string]cloud.Instance{},
		nextErr:   map[string]error{},
		now:       time.Now,
	}
}

// SetCapabilities changes what the fake promises.
func (p *Provider) SetCapabilities(c cloud.Capabilities) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.caps = c
}

// SetOfferings replaces the catalog.
func (p *Provider) SetOfferings(o ...cloud.Offering) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.offerings = o
}

// AddInstance puts an existing machine in place (one a test's old nodes run on).
func (p *Provider) AddInstance(i cloud.Instance) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.instances[i.ProviderID] = i
}

// FailNext makes the next call of method ("Provision", "Get", "List", "Terminate",
// "Offerings") return err, once.
func (p *Provider) FailNext(method string, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.nextErr[method] = err
}

// Calls returns the calls so far, in order.
func (p *Provider) Calls() []Call {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Call(nil), p.calls...)
}

// CallsTo returns the calls of one method.
func (p *Provider) CallsTo(method string) []Call {
	var out []Call
	for _, c := range p.Calls() {
		if c.Method == method {
			out = append(out, c)
		}
	}
	return out
}

func (p *Provider) record(method string, arg any) error {
	p.calls = append(p.calls, Call{Method: method, Arg: arg})
	if err, ok := p.nextErr[method]; ok {
		delete(p.nextErr, method)
		return err
	}
	return nil
}

// Name implements cloud.Provider.
func (p *Provider) Name() string { return "fake" }

// Capabilities implements cloud.Provider.
func (p *Provider) Capabilities() cloud.Capabilities {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.caps
}

// Offerings implements cloud.Provider.
func (p *Provider) Offerings(context.Context) ([]cloud.Offering, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.record("Offerings", nil); err != nil {
		return nil, err
	}
	return append([]cloud.Offering(nil), p.offerings...), nil
}

// Provision implements cloud.Provider.
func (p *Provider) Provision(_ context.Context, req cloud.ProvisionRequest) (*cloud.Instance, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.record("Provision", req); err != nil {
		return nil, err
	}
	found := false
	for _, o := range p.offerings {
		found = found || (o.Name == req.Offering && o.Datacenter == req.Datacenter)
	}
	if !found {
		return nil, fmt.Errorf("provisioning %s in %s: %w", req.Offering, req.Datacenter, cloud.ErrUnknownOffering)
	}
	if p.caps.IdempotentProvision && req.Token != "" {
		for _, i := range p.instances {
			if i.Token == req.Token {
				i := i
				return &i, nil
			}
		}
	}
	p.seq++
	name := req.NodeName
	if name == "" || !p.caps.IdempotentProvision {
		name = fmt.Sprintf("%s-%d", strings.ReplaceAll(req.Offering, ".", "-"), p.seq)
	}
	inst := cloud.Instance{ProviderID: "fake://" + name, NodeName: name, Offering: req.Offering,
		Datacenter: req.Datacenter, State: cloud.StateRunning, CreatedAt: p.now(), Token: req.Token}
	p.instances[inst.ProviderID] = inst
	if !p.caps.ReturnsInstance {
		return nil, nil
	}
	return &inst, nil
}

// Get implements cloud.Provider.
func (p *Provider) Get(_ context.Context, providerID string) (*cloud.Instance, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.record("Get", providerID); err != nil {
		return nil, err
	}
	i, ok := p.instances[providerID]
	if !ok {
		return nil, fmt.Errorf("getting %s: %w", providerID, cloud.ErrNotFound)
	}
	return &i, nil
}

// List implements cloud.Provider.
func (p *Provider) List(context.Context) ([]cloud.Instance, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.record("List", nil); err != nil {
		return nil, err
	}
	out := make([]cloud.Instance, 0, len(p.instances))
	for _, i := range p.instances {
		out = append(out, i)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].ProviderID < out[b].ProviderID })
	return out, nil
}

// Terminate implements cloud.Provider.
func (p *Provider) Terminate(_ context.Context, providerID string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.record("Terminate", providerID); err != nil {
		return err
	}
	if _, ok := p.instances[providerID]; !ok {
		return fmt.Errorf("terminating %s: %w", providerID, cloud.ErrNotFound)
	}
	delete(p.instances, providerID)
	return nil
}

var _ cloud.Provider = (*Provider)(nil)
