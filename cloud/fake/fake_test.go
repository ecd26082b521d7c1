package fake

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rebalancer-dev/rebalancer/cloud"
)

func TestRecordsCallsAndFailsOnce(t *testing.T) {
	ctx := context.Background()
	p := New(cloud.Offering{Name: "small", Datacenter: "dc1", Arch: "amd64", HourlyPrice: 0.01})
	boom := errors.New("boom")
	p.FailNext("Provision", boom)
	_, err := p.Provision(ctx, cloud.ProvisionRequest{Offering: "small", Datacenter: "dc1", NodeName: "n1", Token: "t"})
	assert.ErrorIs(t, err, boom)
	a, err := p.Provision(ctx, cloud.ProvisionRequest{Offering: "small", Datacenter: "dc1", NodeName: "n1", Token: "t"})
	require.NoError(t, err, "the preset error is used once")
	b, err := p.Provision(ctx, cloud.ProvisionRequest{Offering: "small", Datacenter: "dc1", NodeName: "n1", Token: "t"})
	require.NoError(t, err)
	assert.Equal(t, a.ProviderID, b.ProviderID, "same token, same instance")
	_, err = p.Provision(ctx, cloud.ProvisionRequest{Offering: "large", Datacenter: "dc1"})
	assert.ErrorIs(t, err, cloud.ErrUnknownOffering)
	require.NoError(t, p.Terminate(ctx, a.ProviderID))
	assert.ErrorIs(t, p.Terminate(ctx, a.ProviderID), cloud.ErrNotFound)
	calls := p.Calls()
	require.Len(t, calls, 6)
	assert.Equal(t, "Provision", calls[0].Method)
	assert.Equal(t, "n1", calls[0].Arg.(cloud.ProvisionRequest).NodeName)
	assert.Equal(t, "Terminate", calls[5].Method)
	assert.Len(t, p.CallsTo("Terminate"), 2)
}

func TestNonIdempotentFakeBuysTwice(t *testing.T) {
	ctx := context.Background()
	p := New(cloud.Offering{Name: "small", Datacenter: "dc1"})
	p.SetCapabilities(cloud.Capabilities{})
	for range 2 {
		inst, err := p.Provision(ctx, cloud.ProvisionRequest{Offering: "small", Datacenter: "dc1", Token: "t"})
		require.NoError(t, err)
		assert.Nil(t, inst)
	}
	list, err := p.List(ctx)
	require.NoError(t, err)
	assert.Len(t, list, 2)
}
