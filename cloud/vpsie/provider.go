package vpsie

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/utils/clock"

	"github.com/rebalancer-dev/rebalancer/cloud"
)

// HoursPerMonth turns VPSie's monthly prices into hourly ones.
const HoursPerMonth = 730

// Defaults of the provider.
const (
	DefaultOfferingsTTL = 15 * time.Minute
	// DefaultPods is the pod capacity assumed for a VPSie node (the kubelet's default).
	DefaultPods = 110
	// GroupNamePrefix starts the name of node groups the provider creates.
	GroupNamePrefix = "rebalancer-"
)

// Provider is a cloud.Provider on one VPSie managed Kubernetes cluster.
type Provider struct {
	client         *Client
	cluster        string
	osIdentifier   string
	ttl            time.Duration
	clock          clock.PassiveClock
	log            *slog.Logger
	confirmTimeout time.Duration

	catMu sync.Mutex // one catalog fetch at a time
	mu    sync.Mutex
	cat   *catalog

	// ORDER: provisions run one at a time, so the node count read before an
	// add-node call is the one a lost answer is judged against.
	provisionMu sync.Mutex
}

// Option configures a Provider.
type Option func(*Provider)

// WithOfferingsTTL sets how long offerings and prices are cached (default 15m).
func WithOfferingsTTL(d time.Duration) Option { return func(p *Provider) { p.ttl = d } }

// WithProviderClock injects the clock that ages the offerings cache.
func WithProviderClock(c clock.PassiveClock) Option { return func(p *Provider) { p.clock = c } }

// WithProviderLogger sets the provider's logger.
func WithProviderLogger(l *slog.Logger) Option { return func(p *Provider) { p.log = l } }

// WithOSIdentifier sets the osIdentifier sent when listing plans (some plans are
// offered only with some images).
func WithOSIdentifier(id string) Option { return func(p *Provider) { p.osIdentifier = id } }

// New returns the provider for the managed cluster with identifier cluster. The
// cluster may be empty for a provider that only lists offerings.
func New(client *Client, cluster string, opts ...Option) *Provider {
	p := &Provider{client: client, cluster: cluster, ttl: DefaultOfferingsTTL, clock: clock.RealClock{},
		log: slog.New(slog.DiscardHandler), confirmTimeout: 2 * time.Minute}
	for _, o := range opts {
		o(p)
	}
	return p
}

// Name implements cloud.Provider.
func (p *Provider) Name() string { return "vpsie" }

// Capabilities implements cloud.Provider. VPSie's add-node call takes no token,
// answers no identifier and sets no labels or taints: the executor records the
// node set before the call, finds the new node by set difference, never calls
// twice, and labels and taints the Node itself once it registers.
func (p *Provider) Capabilities() cloud.Capabilities { return cloud.Capabilities{} }

// catalog is the offerings of every active datacenter at one moment.
type catalog struct {
	fetched     time.Time
	datacenters []Datacenter
	offerings   []cloud.Offering
	plans       map[string]Plan   // datacenter/offering name → plan
	names       map[string]string // datacenter/plan identifier → offering name
}

// Datacenters lists VPSie's datacenters (cached with the offerings).
func (p *Provider) Datacenters(ctx context.Context) ([]Datacenter, error) {
	cat, err := p.catalog(ctx)
	if err != nil {
		return nil, err
	}
	return append([]Datacenter(nil), cat.datacenters...), nil
}

// Offerings implements cloud.Provider: every plan of every category in every
// active datacenter, with hourly price = monthly / 730.
func (p *Provider) Offerings(ctx context.Context) ([]cloud.Offering, error) {
	cat, err := p.catalog(ctx)
	if err != nil {
		return nil, err
	}
	return append([]cloud.Offering(nil), cat.offerings...), nil
}

func (p *Provider) cached() *catalog {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cat != nil && p.clock.Since(p.cat.fetched) < p.ttl {
		return p.cat
	}
	return nil
}

func (p *Provider) catalog(ctx context.Context) (*catalog, error) {
	if c := p.cached(); c != nil {
		return c, nil
	}
	p.catMu.Lock()
	defer p.catMu.Unlock()
	if c := p.cached(); c != nil { // fetched while we waited
		return c, nil
	}
	c, err := p.fetchCatalog(ctx)
	if err != nil {
		return nil, fmt.Errorf("vpsie offerings: %w", err)
	}
	p.mu.Lock()
	p.cat = c
	p.mu.Unlock()
	return c, nil
}

func (p *Provider) fetchCatalog(ctx context.Context) (*catalog, error) {
	dcs, err := p.client.Datacenters(ctx)
	if err != nil {
		return nil, err
	}
	cats, err := p.client.PlanCategories(ctx)
	if err != nil {
		return nil, err
	}
	c := &catalog{fetched: p.clock.Now(), plans: map[string]Plan{}, names: map[string]string{}}
	for _, dc := range dcs {
		if !dc.Active {
			continue
		}
		c.datacenters = append(c.datacenters, dc)
		for _, cat := range cats {
			plans, err := p.client.Resources(ctx, dc.Identifier, p.osIdentifier, cat.Identifier)
			if err != nil {
				return nil, err
			}
			for _, pl := range plans {
				if pl.Identifier == "" || c.names[dc.Identifier+"/"+pl.Identifier] != "" {
					continue // listed by another category too
				}
				name := pl.Nickname
				if _, taken := c.plans[dc.Identifier+"/"+name]; name == "" || taken {
					name = pl.Identifier // nicknames are for people; identifiers are unique
				}
				c.plans[dc.Identifier+"/"+name] = pl
				c.names[dc.Identifier+"/"+pl.Identifier] = name
				c.offerings = append(c.offerings, cloud.Offering{
					Name: name, Datacenter: dc.Identifier, Arch: "amd64",
					CPU:              *resource.NewQuantity(pl.CPU, resource.DecimalSI),
					Memory:           *resource.NewQuantity(pl.RAMMB<<20, resource.BinarySI),
					EphemeralStorage: *resource.NewQuantity(pl.SSDGB<<30, resource.BinarySI),
					Pods:             DefaultPods,
					HourlyPrice:      pl.Monthly / HoursPerMonth,
				})
			}
		}
	}
	sort.Slice(c.offerings, func(i, j int) bool { return c.offerings[i].Key() < c.offerings[j].Key() })
	return c, nil
}

// Provision implements cloud.Provider: one node is added to the cluster's node
// group of the offering's size, created first if the cluster has none. It
// returns nil: the node is found later by set difference.
func (p *Provider) Provision(ctx context.Context, req cloud.ProvisionRequest) (*cloud.Instance, error) {
	if p.cluster == "" {
		return nil, errors.New("vpsie: provisioning needs the managed Kubernetes cluster's identifier")
	}
	cat, err := p.catalog(ctx)
	if err != nil {
		return nil, fmt.Errorf("provisioning %s in %s: %w", req.Offering, req.Datacenter, err)
	}
	plan, ok := cat.plans[req.Datacenter+"/"+req.Offering]
	if !ok {
		return nil, fmt.Errorf("provisioning %s in %s: %w", req.Offering, req.Datacenter, cloud.ErrUnknownOffering)
	}
	cl, err := p.client.Cluster(ctx, p.cluster)
	if err != nil {
		return nil, fmt.Errorf("provisioning %s: %w", req.Offering, err)
	}
	if cl.DcIdentifier != "" && cl.DcIdentifier != req.Datacenter {
		return nil, fmt.Errorf("provisioning %s in %s: cluster %s runs in datacenter %s: %w", req.Offering, req.Datacenter, p.cluster, cl.DcIdentifier, cloud.ErrUnknownOffering)
	}

	p.provisionMu.Lock()
	defer p.provisionMu.Unlock()
	group, err := p.groupFor(ctx, plan, req.Offering)
	if err != nil {
		return nil, fmt.Errorf("provisioning %s in %s: %w", req.Offering, req.Datacenter, err)
	}
	log := p.log.With("cluster", p.cluster, "group", group.Name, "groupID", group.ID, "offering", req.Offering)
	err = p.client.AddNode(ctx, p.cluster, group.ID)
	if err == nil {
		log.Info("node added to group")
		return nil, nil
	}
	if !errors.Is(err, ErrAmbiguous) {
		return nil, fmt.Errorf("provisioning %s in %s: %w", req.Offering, req.Datacenter, err)
	}
	// The answer was lost: whether the node was added is read from the group,
	// never learned by asking again (that could buy a second node).
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.confirmTimeout)
	defer cancel()
	after, cerr := p.group(cctx, group.ID)
	if cerr != nil {
		return nil, fmt.Errorf("provisioning %s in %s: %w; and checking whether the node was added failed: %w", req.Offering, req.Datacenter, err, cerr)
	}
	if after != nil && after.NodesCount > group.NodesCount {
		log.Warn("the add-node answer was lost but the group grew: the node was added", "nodesBefore", group.NodesCount, "nodesAfter", after.NodesCount, "error", err.Error())
		return nil, nil
	}
	return nil, fmt.Errorf("provisioning %s in %s: %w (the group still has %d nodes: not added)", req.Offering, req.Datacenter, err, group.NodesCount)
}

func (p *Provider) group(ctx context.Context, id int64) (*NodeGroup, error) {
	groups, err := p.client.NodeGroups(ctx, p.cluster)
	if err != nil {
		return nil, err
	}
	for i := range groups {
		if groups[i].ID == id {
			return &groups[i], nil
		}
	}
	return nil, nil
}

// groupFor returns the cluster's node group of plan's size, creating it if missing.
func (p *Provider) groupFor(ctx context.Context, plan Plan, offering string) (*NodeGroup, error) {
	find := func() (*NodeGroup, error) {
		groups, err := p.client.NodeGroups(ctx, p.cluster)
		if err != nil {
			return nil, err
		}
		sort.Slice(groups, func(i, j int) bool { return groups[i].ID < groups[j].ID })
		for i := range groups {
			if groups[i].BoxsizeID == plan.Identifier {
				return &groups[i], nil
			}
		}
		return nil, nil
	}
	g, err := find()
	if err != nil || g != nil {
		return g, err
	}
	name := GroupName(offering)
	p.log.Info("creating node group", "cluster", p.cluster, "group", name, "size", plan.Identifier)
	if err := p.client.AddNodeGroup(ctx, p.cluster, name, plan.Identifier); err != nil && !errors.Is(err, ErrAmbiguous) {
		return nil, err
	}
	// Created, or an answer lost: the list says which.
	if g, err = find(); err != nil {
		return nil, fmt.Errorf("reading node group %s after creating it: %w", name, err)
	}
	if g == nil {
		return nil, fmt.Errorf("node group %s of size %s was created but does not appear in cluster %s", name, plan.Identifier, p.cluster)
	}
	return g, nil
}

var groupNameInvalid = regexp.MustCompile(`[^a-z0-9-]+`)

// GroupName is the name the provider gives a node group it creates for offering.
func GroupName(offering string) string {
	n := strings.Trim(groupNameInvalid.ReplaceAllString(strings.ToLower(offering), "-"), "-")
	n = GroupNamePrefix + n
	if len(n) > groupNameMaxChars {
		n = strings.TrimRight(n[:groupNameMaxChars], "-")
	}
	return n
}

// List implements cloud.Provider: the cluster's nodes with their offering.
func (p *Provider) List(ctx context.Context) ([]cloud.Instance, error) {
	if p.cluster == "" {
		return nil, errors.New("vpsie: listing nodes needs the managed Kubernetes cluster's identifier")
	}
	cl, err := p.client.Cluster(ctx, p.cluster)
	if err != nil {
		return nil, fmt.Errorf("listing nodes: %w", err)
	}
	groups, err := p.client.NodeGroups(ctx, p.cluster)
	if err != nil {
		return nil, fmt.Errorf("listing nodes: %w", err)
	}
	cat, err := p.catalog(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing nodes: %w", err)
	}
	byID := map[int64]NodeGroup{}
	for _, g := range groups {
		byID[g.ID] = g
	}
	out := make([]cloud.Instance, 0, len(cl.Nodes))
	for _, n := range cl.Nodes {
		if n.Identifier == "" {
			continue
		}
		inst := cloud.Instance{ProviderID: ProviderID(n.Identifier), NodeName: n.Hostname, Datacenter: cl.DcIdentifier,
			State: cloud.StateRunning, CreatedAt: n.CreatedOn}
		size := ""
		if g, ok := byID[n.GroupID]; ok {
			size = g.BoxsizeID
		}
		if size == "" || inst.Datacenter == "" {
			// The record does not say: the VM does.
			vm, err := p.client.VM(ctx, n.Identifier)
			if err != nil && !errors.Is(err, cloud.ErrNotFound) {
				return nil, fmt.Errorf("listing nodes: %w", err)
			}
			if vm != nil {
				size = vm.BoxsizeID
				if inst.Datacenter == "" {
					inst.Datacenter = vm.DcIdentifier
				}
				if inst.CreatedAt.IsZero() {
					inst.CreatedAt = vm.CreatedOn
				}
			}
		}
		inst.Offering = cat.names[inst.Datacenter+"/"+size]
		out = append(out, inst)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ProviderID < out[j].ProviderID })
	return out, nil
}

// Get implements cloud.Provider: the node of the cluster behind providerID.
func (p *Provider) Get(ctx context.Context, providerID string) (*cloud.Instance, error) {
	if _, err := Identifier(providerID); err != nil {
		return nil, err
	}
	insts, err := p.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("getting %s: %w", providerID, err)
	}
	for i := range insts {
		if insts[i].ProviderID == providerID {
			return &insts[i], nil
		}
	}
	return nil, fmt.Errorf("getting %s: not a node of cluster %s: %w", providerID, p.cluster, cloud.ErrNotFound)
}

// Terminate implements cloud.Provider: the node is removed from the cluster (and
// its VM deleted). A node that is not in the cluster is ErrNotFound and nothing
// is deleted.
func (p *Provider) Terminate(ctx context.Context, providerID string) error {
	id, err := Identifier(providerID)
	if err != nil {
		return err
	}
	if _, err := p.Get(ctx, providerID); err != nil {
		return fmt.Errorf("terminating: %w", err)
	}
	if err := p.client.DeleteNode(ctx, p.cluster, id); err != nil {
		return fmt.Errorf("terminating %s: %w", providerID, err)
	}
	p.log.Info("node removed", "cluster", p.cluster, "providerID", providerID)
	return nil
}

var _ cloud.Provider = (*Provider)(nil)
