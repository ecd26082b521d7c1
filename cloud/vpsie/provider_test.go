package vpsie_test

import (
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/rebalancer-dev/rebalancer/cloud"
	"github.com/rebalancer-dev/rebalancer/cloud/vpsie"
	"github.com/rebalancer-dev/rebalancer/cloud/vpsie/vpsietest"
)

func provider(t *testing.T, s *vpsietest.Server, opts ...vpsie.Option) *vpsie.Provider {
	t.Helper()
	return vpsie.New(client(t, s, creds(s)), vpsietest.Cluster, opts...)
}

func providerIDs(insts []cloud.Instance) []string {
	var out []string
	for _, i := range insts {
		out = append(out, i.ProviderID)
	}
	return out
}

func newRequest() cloud.ProvisionRequest {
	return cloud.ProvisionRequest{Offering: vpsietest.OfferingNew, Datacenter: vpsietest.DC, NodeName: "hint", Token: "tok",
		Labels: map[string]string{"pool": "a"}}
}

func TestCapabilitiesAreHonest(t *testing.T) {
	p := vpsie.New(nil, "c")
	assert.Equal(t, cloud.Capabilities{}, p.Capabilities(), "no idempotent provisioning, no instance returned, no labels or taints")
	assert.Equal(t, "vpsie", p.Name())
}

func TestOfferingsWithMonthlyAndHourlyPrices(t *testing.T) {
	s := server(t, 0)
	offs, err := provider(t, s).Offerings(t.Context())
	require.NoError(t, err)
	// The inactive datacenter's plans are not offered; each plan once per datacenter.
	require.Len(t, offs, 3)
	byName := map[string]cloud.Offering{}
	for _, o := range offs {
		assert.Equal(t, vpsietest.DC, o.Datacenter)
		byName[o.Name] = o
	}
	n := byName[vpsietest.OfferingNew]
	assert.InDelta(t, vpsietest.PriceNew/730, n.HourlyPrice, 1e-12)
	assert.InDelta(t, vpsietest.PriceNew, n.MonthlyPrice(), 1e-9)
	assert.True(t, n.CPU.Equal(resource.MustParse("4")))
	assert.True(t, n.Memory.Equal(resource.MustParse("8Gi")))
	assert.True(t, n.EphemeralStorage.Equal(resource.MustParse("160Gi")))
	assert.Equal(t, int64(110), n.Pods)
	assert.Equal(t, "amd64", n.Arch)
	assert.InDelta(t, vpsietest.PriceSmall/730, byName[vpsietest.OfferingSmall].HourlyPrice, 1e-12)
}

func TestOfferingsAreCachedForTheTTL(t *testing.T) {
	s := server(t, 0)
	clk := clocktesting.NewFakeClock(time.Now())
	p := provider(t, s, vpsie.WithProviderClock(clk), vpsie.WithOfferingsTTL(10*time.Minute))
	_, err := p.Offerings(t.Context())
	require.NoError(t, err)
	calls := s.Calls(vpsietest.RouteResources)
	require.Equal(t, 2, calls, "one active datacenter × two categories")

	s.SetPrice(vpsietest.PlanNew, 30)
	clk.Step(9 * time.Minute)
	offs, err := p.Offerings(t.Context())
	require.NoError(t, err)
	assert.Equal(t, calls, s.Calls(vpsietest.RouteResources), "served from the cache")
	assert.InDelta(t, vpsietest.PriceNew/730, find(offs, vpsietest.OfferingNew).HourlyPrice, 1e-12)

	clk.Step(2 * time.Minute)
	offs, err = p.Offerings(t.Context())
	require.NoError(t, err)
	assert.Equal(t, 2*calls, s.Calls(vpsietest.RouteResources), "refetched after the TTL")
	assert.InDelta(t, 30.0/730, find(offs, vpsietest.OfferingNew).HourlyPrice, 1e-12, "today's price")
}

func find(offs []cloud.Offering, name string) cloud.Offering {
	for _, o := range offs {
		if o.Name == name {
			return o
		}
	}
	return cloud.Offering{}
}

func TestOfferingsFailureNamesTheCall(t *testing.T) {
	s := server(t, 0)
	s.Inject(vpsietest.RouteResources, vpsietest.Fault{BodyError: "osIdentifier is required"})
	_, err := provider(t, s).Offerings(t.Context())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "POST /apps/v2/resources")
	assert.Contains(t, err.Error(), "osIdentifier is required")
}

func TestListShowsTheClusterNodesWithTheirOffering(t *testing.T) {
	s := server(t, 2)
	insts, err := provider(t, s).List(t.Context())
	require.NoError(t, err)
	nodes := s.Nodes(vpsietest.Cluster)
	require.Len(t, insts, 2)
	for i, in := range insts {
		assert.Equal(t, vpsie.ProviderID(nodes[i].Identifier), in.ProviderID)
		assert.Equal(t, nodes[i].Hostname, in.NodeName)
		assert.Equal(t, vpsietest.OfferingOld, in.Offering)
		assert.Equal(t, vpsietest.DC, in.Datacenter)
		assert.False(t, in.CreatedAt.IsZero())
	}
}

func TestGet(t *testing.T) {
	s := server(t, 1)
	p := provider(t, s)
	vm := s.Nodes(vpsietest.Cluster)[0]
	in, err := p.Get(t.Context(), vpsie.ProviderID(vm.Identifier))
	require.NoError(t, err)
	assert.Equal(t, vm.Hostname, in.NodeName)
	assert.Equal(t, vpsietest.OfferingOld, in.Offering)

	_, err = p.Get(t.Context(), vpsie.ProviderID("vm-gone"))
	assert.ErrorIs(t, err, cloud.ErrNotFound)
	_, err = p.Get(t.Context(), "kwok://node-a")
	assert.ErrorIs(t, err, cloud.ErrNotFound)
}

func TestProvisionAddsToTheGroupOfTheSize(t *testing.T) {
	s := server(t, 1)
	p := provider(t, s)
	before, err := p.List(t.Context())
	require.NoError(t, err)
	req := newRequest()
	req.Offering = vpsietest.OfferingOld // the existing group's size
	inst, err := p.Provision(t.Context(), req)
	require.NoError(t, err)
	assert.Nil(t, inst, "the add-node call answers no identifier")
	assert.Zero(t, s.Calls(vpsietest.RouteAddNodeGroup), "the group exists")
	groups := s.Groups(vpsietest.Cluster)
	require.Len(t, groups, 1)
	assert.Equal(t, 2, groups[0].NodesCount)

	after, err := p.List(t.Context())
	require.NoError(t, err)
	added := newInstances(before, after)
	require.Len(t, added, 1, "found by set difference")
	assert.Equal(t, vpsietest.OfferingOld, added[0].Offering)
	assert.Equal(t, vpsietest.DC, added[0].Datacenter)
}

func newInstances(before, after []cloud.Instance) []cloud.Instance {
	old := providerIDs(before)
	var out []cloud.Instance
	for _, in := range after {
		if !slices.Contains(old, in.ProviderID) {
			out = append(out, in)
		}
	}
	return out
}

func TestProvisionCreatesTheGroupWhenMissing(t *testing.T) {
	s := server(t, 1)
	p := provider(t, s)
	inst, err := p.Provision(t.Context(), newRequest())
	require.NoError(t, err)
	assert.Nil(t, inst)
	assert.Equal(t, 1, s.Calls(vpsietest.RouteAddNodeGroup))
	groups := s.Groups(vpsietest.Cluster)
	require.Len(t, groups, 2)
	assert.Equal(t, "rebalancer-cpu-4vcpu-8gb", groups[1].GroupName)
	assert.Equal(t, vpsietest.PlanNew, groups[1].BoxsizeID)
	assert.Equal(t, 1, groups[1].NodesCount)

	// A second provision of the size reuses the group.
	_, err = p.Provision(t.Context(), newRequest())
	require.NoError(t, err)
	assert.Equal(t, 1, s.Calls(vpsietest.RouteAddNodeGroup))
	assert.Equal(t, 2, s.Groups(vpsietest.Cluster)[1].NodesCount)
}

func TestProvisionUnknownOffering(t *testing.T) {
	s := server(t, 0)
	p := provider(t, s)
	req := newRequest()
	req.Offering = "no-such-plan"
	_, err := p.Provision(t.Context(), req)
	assert.ErrorIs(t, err, cloud.ErrUnknownOffering)
	req = newRequest()
	req.Datacenter = vpsietest.InactiveDC
	_, err = p.Provision(t.Context(), req)
	assert.ErrorIs(t, err, cloud.ErrUnknownOffering)
	assert.Zero(t, s.Calls(vpsietest.RouteAddNode))
}

// The add-node answer is lost after the node was added: Provision reads the
// group, sees it grew, and reports success without a second call.
func TestProvisionLostAnswerAfterTheNodeWasAdded(t *testing.T) {
	s := server(t, 1)
	p := provider(t, s)
	s.Inject(vpsietest.RouteAddNode, vpsietest.Fault{LoseResponse: true})
	inst, err := p.Provision(t.Context(), newRequest())
	require.NoError(t, err)
	assert.Nil(t, inst)
	assert.Equal(t, 1, s.Calls(vpsietest.RouteAddNode), "never asked twice")
	assert.Len(t, s.Nodes(vpsietest.Cluster), 2, "exactly one node added")
}

// A 5xx on add-node may or may not have added a node; the group says it did not:
// an error, and no second call.
func TestProvision5xxWithoutANodeIsAnErrorAndNotRepeated(t *testing.T) {
	s := server(t, 1)
	p := provider(t, s)
	s.Inject(vpsietest.RouteAddNode, vpsietest.Fault{Status: http.StatusBadGateway})
	_, err := p.Provision(t.Context(), newRequest())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "/add/slave/group/")
	assert.Contains(t, err.Error(), "HTTP 502")
	assert.Contains(t, err.Error(), "not added")
	assert.Equal(t, 1, s.Calls(vpsietest.RouteAddNode))
	assert.Len(t, s.Nodes(vpsietest.Cluster), 1)
}

// A 429 promises the request was not processed: retried, one node.
func TestProvision429IsRetried(t *testing.T) {
	s := server(t, 1)
	p := provider(t, s)
	s.Inject(vpsietest.RouteAddNode, vpsietest.Fault{Status: http.StatusTooManyRequests, RetryAfter: "0"})
	_, err := p.Provision(t.Context(), newRequest())
	require.NoError(t, err)
	assert.Equal(t, 2, s.Calls(vpsietest.RouteAddNode))
	assert.Len(t, s.Nodes(vpsietest.Cluster), 2)
}

func TestProvisionBodyErrorIsReported(t *testing.T) {
	s := server(t, 1)
	p := provider(t, s)
	s.Inject(vpsietest.RouteAddNode, vpsietest.Fault{BodyError: "Not enough resources in datacenter"})
	_, err := p.Provision(t.Context(), newRequest())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "Not enough resources in datacenter")
	assert.Equal(t, 1, s.Calls(vpsietest.RouteAddNode))
	assert.Len(t, s.Nodes(vpsietest.Cluster), 1)
}

// The add-node call succeeds but the node never appears: Provision cannot know,
// List never shows a new instance (the executor's wait for it times out).
func TestProvisionWhoseNodeNeverAppears(t *testing.T) {
	s := server(t, 1)
	p := provider(t, s)
	before, err := p.List(t.Context())
	require.NoError(t, err)
	s.Inject(vpsietest.RouteAddNode, vpsietest.Fault{NeverAppears: true})
	inst, err := p.Provision(t.Context(), newRequest())
	require.NoError(t, err)
	assert.Nil(t, inst)
	after, err := p.List(t.Context())
	require.NoError(t, err)
	assert.Empty(t, newInstances(before, after))
}

func TestTerminate(t *testing.T) {
	s := server(t, 2)
	p := provider(t, s)
	nodes := s.Nodes(vpsietest.Cluster)
	require.NoError(t, p.Terminate(t.Context(), vpsie.ProviderID(nodes[0].Identifier)))
	left := s.Nodes(vpsietest.Cluster)
	require.Len(t, left, 1)
	assert.Equal(t, nodes[1].Identifier, left[0].Identifier)
	assert.Equal(t, 1, s.Groups(vpsietest.Cluster)[0].NodesCount)

	err := p.Terminate(t.Context(), vpsie.ProviderID(nodes[0].Identifier))
	assert.ErrorIs(t, err, cloud.ErrNotFound, "already gone")
	assert.Equal(t, 1, s.Calls(vpsietest.RouteDeleteNode), "nothing deleted for a node not in the cluster")
}

// The delete answer is lost after the node was removed: the retry's 404 says it
// is gone.
func TestTerminateLostAnswer(t *testing.T) {
	s := server(t, 2)
	p := provider(t, s)
	nodes := s.Nodes(vpsietest.Cluster)
	s.Inject(vpsietest.RouteDeleteNode, vpsietest.Fault{LoseResponse: true})
	err := p.Terminate(t.Context(), vpsie.ProviderID(nodes[0].Identifier))
	assert.ErrorIs(t, err, cloud.ErrNotFound)
	assert.Len(t, s.Nodes(vpsietest.Cluster), 1)
	assert.Equal(t, 2, s.Calls(vpsietest.RouteDeleteNode))
}

func TestNodeHelpers(t *testing.T) {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "a", Labels: map[string]string{vpsie.LabelOffering: "std-4vcpu-8gb",
		corev1.LabelInstanceTypeStable: "other"}}, Spec: corev1.NodeSpec{ProviderID: "vpsie://abc-123"}}
	assert.Equal(t, "abc-123", vpsie.NodeIdentifier(n))
	assert.Equal(t, "vpsie://abc-123", vpsie.NodeProviderID(n))
	assert.Equal(t, "std-4vcpu-8gb", vpsie.NodeOffering(n), "VPSie's autoscaler label first")

	m := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "b", Annotations: map[string]string{vpsie.AnnotationVPSID: "vps-9"},
		Labels: map[string]string{corev1.LabelInstanceTypeStable: "small"}}}
	assert.Equal(t, "vps-9", vpsie.NodeIdentifier(m), "from the autoscaler's annotation")
	assert.Equal(t, "small", vpsie.NodeOffering(m))
	assert.Empty(t, vpsie.NodeProviderID(&corev1.Node{}))

	_, err := vpsie.Identifier("vpsie://")
	assert.ErrorIs(t, err, cloud.ErrNotFound)
	assert.Equal(t, "rebalancer-std-4vcpu-8gb", vpsie.GroupName("Std 4vCPU/8GB"))
}
