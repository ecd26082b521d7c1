package kwok_test

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/rebalancer-dev/rebalancer/cloud"
	"github.com/rebalancer-dev/rebalancer/cloud/kwok"
	"github.com/rebalancer-dev/rebalancer/internal/localcluster"
)

var cluster *localcluster.Cluster

func TestMain(m *testing.M) {
	os.Exit(localcluster.RunTests(m, localcluster.Options{}, func(c *localcluster.Cluster) { cluster = c }))
}

const catalogYAML = `apiVersion: rebalancer.dev/v1alpha1
kind: OfferingCatalog
offerings:
  - {name: std-4vcpu-8gb-v1, datacenter: fra1, arch: amd64, cpu: "4", memory: 8Gi, pods: 110, hourlyPrice: 0.08}
  - {name: std-4vcpu-8gb-v2, datacenter: fra1, arch: amd64, cpu: "4", memory: 8Gi, pods: 110, hourlyPrice: 0.06}
  - {name: arm-4vcpu-8gb, datacenter: fra1, arch: arm64, cpu: "4", memory: 8Gi, pods: 110, hourlyPrice: 0.04}
`

func newProvider(t *testing.T, opts ...kwok.Option) *kwok.Provider {
	t.Helper()
	catalog, err := kwok.ParseCatalog("catalog.yaml", []byte(catalogYAML))
	require.NoError(t, err)
	p := kwok.New(cluster.Client, catalog, opts...)
	t.Cleanup(p.Close)
	return p
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestProvisionMakesReadyNodeTheSchedulerUses(t *testing.T) {
	ctx := ctxFor(t)
	p := newProvider(t)
	taint := corev1.Taint{Key: "dedicated", Value: "batch", Effect: corev1.TaintEffectNoSchedule}
	inst, err := p.Provision(ctx, cloud.ProvisionRequest{
		Offering: "std-4vcpu-8gb-v2", Datacenter: "fra1", NodeName: "prov-a",
		Labels: map[string]string{"pool": "batch"}, Taints: []corev1.Taint{taint}, Token: "plan-1/prov-a",
	})
	require.NoError(t, err)
	require.NotNil(t, inst)
	assert.Equal(t, "kwok://prov-a", inst.ProviderID)
	assert.Equal(t, "std-4vcpu-8gb-v2", inst.Offering)

	node, err := cluster.WaitNodeReady(ctx, "prov-a", 30*time.Second)
	require.NoError(t, err)
	assert.Equal(t, "batch", node.Labels["pool"])
	assert.Equal(t, "std-4vcpu-8gb-v2", node.Labels[corev1.LabelInstanceTypeStable])
	assert.Equal(t, "fra1", node.Labels[corev1.LabelTopologyRegion])
	assert.Equal(t, "amd64", node.Labels[corev1.LabelArchStable])
	assert.Equal(t, "prov-a", node.Labels[corev1.LabelHostname])
	assert.Equal(t, "std-4vcpu-8gb-v2", node.Labels[kwok.LabelOffering])
	assert.Contains(t, node.Spec.Taints, taint)
	assert.Equal(t, "4", node.Status.Allocatable.Cpu().String())
	assert.Equal(t, "8Gi", node.Status.Allocatable.Memory().String())

	got, err := p.Get(ctx, inst.ProviderID)
	require.NoError(t, err)
	assert.Equal(t, cloud.StateRunning, got.State)

	// The scheduler places a pod that selects the label and tolerates the taint there,
	// and nowhere else can it go.
	ns := "prov-sched"
	_, err = cluster.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = cluster.Client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "batch"},
		Spec: corev1.PodSpec{
			NodeSelector: map[string]string{"pool": "batch"},
			Tolerations:  []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "batch", Effect: corev1.TaintEffectNoSchedule}},
			Containers:   []corev1.Container{{Name: "c", Image: "batch"}},
		},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		pod, err := cluster.Client.CoreV1().Pods(ns).Get(ctx, "batch", metav1.GetOptions{})
		return err == nil && pod.Spec.NodeName == "prov-a" && pod.Status.Phase == corev1.PodRunning, nil
	}))

	// Terminate removes the machine; a second Terminate and a Get say not found.
	require.NoError(t, p.Terminate(ctx, inst.ProviderID))
	_, err = cluster.Client.CoreV1().Nodes().Get(ctx, "prov-a", metav1.GetOptions{})
	assert.True(t, err != nil, "node deleted")
	_, err = p.Get(ctx, inst.ProviderID)
	assert.ErrorIs(t, err, cloud.ErrNotFound)
	assert.ErrorIs(t, p.Terminate(ctx, inst.ProviderID), cloud.ErrNotFound)
}

func TestSameTokenTwiceMakesOneNode(t *testing.T) {
	ctx := ctxFor(t)
	p := newProvider(t)
	req := cloud.ProvisionRequest{Offering: "std-4vcpu-8gb-v2", Datacenter: "fra1", NodeName: "tok-a", Token: "plan-2/tok-a/a-token-longer-than-sixty-three-characters-to-prove-hashing-works"}
	first, err := p.Provision(ctx, req)
	require.NoError(t, err)
	// A retry after a lost response, even with another name hint, finds the same machine.
	req.NodeName = "tok-b"
	second, err := p.Provision(ctx, req)
	require.NoError(t, err)
	assert.Equal(t, first.ProviderID, second.ProviderID)
	list, err := p.List(ctx)
	require.NoError(t, err)
	n := 0
	for _, i := range list {
		if i.Token == req.Token {
			n++
		}
	}
	assert.Equal(t, 1, n, "one machine for one token")
	_, err = cluster.Client.CoreV1().Nodes().Get(ctx, "tok-b", metav1.GetOptions{})
	assert.Error(t, err, "no second node")
	require.NoError(t, p.Terminate(ctx, first.ProviderID))
}

func TestNonIdempotentModeMakesTwoNodesFoundBySetDifference(t *testing.T) {
	ctx := ctxFor(t)
	p := newProvider(t, kwok.WithFaults(kwok.Faults{NonIdempotent: true, ProvisionDelay: 300 * time.Millisecond}))
	assert.Equal(t, cloud.Capabilities{}, p.Capabilities(), "promises nothing, like VPSie's managed API")
	before, err := p.List(ctx)
	require.NoError(t, err)
	req := cloud.ProvisionRequest{Offering: "std-4vcpu-8gb-v1", Datacenter: "fra1", NodeName: "ignored", Token: "same"}
	for range 2 {
		inst, err := p.Provision(ctx, req)
		require.NoError(t, err)
		assert.Nil(t, inst, "nothing returned")
	}
	var added []cloud.Instance
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		after, err := p.List(ctx)
		if err != nil {
			return false, err
		}
		added = difference(after, before)
		return len(added) == 2, nil
	}), "both machines appear in List")
	for _, i := range added {
		assert.NotEqual(t, "ignored", i.NodeName, "the provider chose the name")
		assert.Equal(t, "std-4vcpu-8gb-v1", i.Offering)
		_, err := cluster.WaitNodeReady(ctx, i.NodeName, 30*time.Second)
		require.NoError(t, err)
		require.NoError(t, p.Terminate(ctx, i.ProviderID))
	}
}

func TestFaults(t *testing.T) {
	ctx := ctxFor(t)
	p := newProvider(t, kwok.WithFaults(kwok.Faults{FailProvisionCall: 2}))
	a, err := p.Provision(ctx, cloud.ProvisionRequest{Offering: "std-4vcpu-8gb-v2", Datacenter: "fra1", NodeName: "fault-a", Token: "fa"})
	require.NoError(t, err)
	_, err = p.Provision(ctx, cloud.ProvisionRequest{Offering: "std-4vcpu-8gb-v2", Datacenter: "fra1", NodeName: "fault-b", Token: "fb"})
	assert.ErrorIs(t, err, cloud.ErrInsufficientCapacity, "the second call fails")
	_, err = cluster.Client.CoreV1().Nodes().Get(ctx, "fault-b", metav1.GetOptions{})
	assert.Error(t, err, "a failed call makes no node")

	_, err = p.Provision(ctx, cloud.ProvisionRequest{Offering: "nope", Datacenter: "fra1"})
	assert.ErrorIs(t, err, cloud.ErrUnknownOffering)
	_, err = p.Get(ctx, "aws:///i-123")
	assert.ErrorIs(t, err, cloud.ErrNotFound)

	p.SetFaults(kwok.Faults{NeverReady: true})
	nr, err := p.Provision(ctx, cloud.ProvisionRequest{Offering: "std-4vcpu-8gb-v2", Datacenter: "fra1", NodeName: "fault-never", Token: "fn"})
	require.NoError(t, err)
	_, err = cluster.WaitNodeReady(ctx, "fault-never", 3*time.Second)
	assert.Error(t, err, "the node never turns Ready")
	got, err := p.Get(ctx, nr.ProviderID)
	require.NoError(t, err)
	assert.Equal(t, cloud.StatePending, got.State)

	p.SetFaults(kwok.Faults{ProvisionDelay: 50 * time.Millisecond, FailProvisionCall: 1, FailProvisionErr: cloud.Retryable(errors.New("503 from the API"))})
	_, err = p.Provision(ctx, cloud.ProvisionRequest{Offering: "std-4vcpu-8gb-v2", Datacenter: "fra1", Token: "fr"})
	assert.True(t, cloud.IsRetryable(err), "injected retryable error stays retryable: %v", err)

	for _, i := range []*cloud.Instance{a, nr} {
		require.NoError(t, p.Terminate(ctx, i.ProviderID))
	}
}

func TestCatalogErrors(t *testing.T) {
	_, err := kwok.ParseCatalog("c.yaml", []byte("apiVersion: rebalancer.dev/v1alpha1\nkind: OfferingCatalog\nofferings:\n  - {name: a, datacenter: x, arch: sparc, cpu: \"0\", memory: 1Gi, pods: 10, hourlyPrice: -1}\n  - {name: a, datacenter: x, arch: amd64, cpu: \"1\", memory: 1Gi, pods: 10, hourlyPrice: 1, colour: red}\n"))
	require.Error(t, err)
	assert.Equal(t, "c.yaml:5: offerings[1].colour: unknown field; allowed fields are arch, cpu, datacenter, ephemeralStorage, gpus, hourlyPrice, memory, name, pods", err.Error())
	_, err = kwok.ParseCatalog("c.yaml", []byte("apiVersion: rebalancer.dev/v1alpha1\nkind: OfferingCatalog\nofferings:\n  - {name: a, datacenter: x, arch: sparc, cpu: \"0\", memory: 1Gi, pods: 10, hourlyPrice: -1}\n  - {name: a, datacenter: x, arch: amd64, cpu: \"1\", memory: 1Gi, pods: 10, hourlyPrice: 1}\n"))
	require.Error(t, err)
	assert.Equal(t, `c.yaml:4: offerings[0].arch: must be amd64 or arm64, got "sparc"
c.yaml:4: offerings[0].cpu: must be positive
c.yaml:4: offerings[0].hourlyPrice: must not be negative
c.yaml:5: offerings[1]: duplicate offering a in x (first at offerings[0])`, err.Error())
}

func difference(after, before []cloud.Instance) []cloud.Instance {
	seen := map[string]bool{}
	for _, i := range before {
		seen[i.ProviderID] = true
	}
	var out []cloud.Instance
	for _, i := range after {
		if !seen[i.ProviderID] {
			out = append(out, i)
		}
	}
	return out
}
