package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	api "github.com/rebalancer-dev/rebalancer/api/v1alpha1"
	"github.com/rebalancer-dev/rebalancer/cloud/kwok"
)

const cliCatalog = `apiVersion: rebalancer.dev/v1alpha1
kind: OfferingCatalog
offerings:
  - {name: old-2x4, datacenter: fra1, arch: amd64, cpu: "2", memory: 4Gi, pods: 110, hourlyPrice: 0.05}
  - {name: new-2x4, datacenter: fra1, arch: amd64, cpu: "2", memory: 4Gi, pods: 110, hourlyPrice: 0.03}
`

const cliPolicy = `apiVersion: rebalancer.dev/v1alpha1
kind: RebalancePolicy
metadata:
  name: cli
spec:
  nodeSelector:
    matchLabels: {tier: cli}
  nodeGroupLabel: pool
  minNodeAge: 0s
`

func TestAnalyzeCommand(t *testing.T) {
	c := shared.Get(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	catalog, err := kwok.ParseCatalog("c", []byte(cliCatalog))
	require.NoError(t, err)
	for _, name := range []string{"cli-a", "cli-b", "cli-c"} {
		labels := map[string]string{"tier": "cli", "pool": "blue"}
		n := kwok.NewNode(name, catalog[0], labels, nil, false)
		if name == "cli-c" {
			n.Annotations["rebalancer.dev/do-not-disrupt"] = "true"
		}
		require.NoError(t, kwok.CreateNode(ctx, c.Client, n))
	}
	for _, name := range []string{"cli-a", "cli-b", "cli-c"} {
		_, err := c.WaitNodeReady(ctx, name, 30*time.Second)
		require.NoError(t, err)
	}
	dir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "repo", "rebalancer", "policies"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "repo", "rebalancer", "policies", "cli.yaml"), []byte(cliPolicy), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "catalog.yaml"), []byte(cliCatalog), 0o644))

	args := []string{"analyze", "--kubeconfig", c.Kubeconfig, "--repo-dir", filepath.Join(dir, "repo"),
		"--provider", "kwok", "--catalog", filepath.Join(dir, "catalog.yaml"), "--cluster-name", "test"}
	var out, errOut bytes.Buffer
	code := run(ctx, append(args, "-o", "table"), &out, &errOut)
	require.Equal(t, 0, code, errOut.String())
	table := out.String()
	for _, want := range []string{"cli-a", "blue", "old-2x4", "new-2x4", "candidate", "opted-out", "14.60"} {
		assert.Contains(t, table, want)
	}
	assert.Regexp(t, `candidate 2`, table)
	assert.Contains(t, table, "opted-out 1")

	out.Reset()
	code = run(ctx, args, &out, &errOut)
	require.Equal(t, 0, code, errOut.String())
	docs := strings.Split(out.String(), "---\n")
	var plan *api.RebalancePlan
	for _, d := range docs {
		if strings.Contains(d, "nodeGroup: blue") {
			p, err := api.DecodePlan("", []byte(d))
			require.NoError(t, err, d)
			plan = p
		}
	}
	require.NotNil(t, plan, "a plan for group blue:\n%s", out.String())
	assert.Len(t, plan.Spec.Candidates, 2)
	assert.True(t, strings.HasPrefix(plan.Metadata.Name, "test-blue-"))

	// Read-only: no taint or annotation of ours on any node.
	nodes, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: "tier=cli"})
	require.NoError(t, err)
	for _, n := range nodes.Items {
		for _, k := range taintKeys(n.Spec.Taints) {
			assert.False(t, strings.HasPrefix(k, "rebalancer.dev/"), "%s: taint %s", n.Name, k)
		}
		assert.NotContains(t, n.Annotations, "rebalancer.dev/plan", n.Name)
	}

	// Bad input: a catalog that does not parse (exit 1, the file and line named), a
	// missing catalog flag (exit 2).
	require.NoError(t, os.WriteFile(filepath.Join(dir, "bad.yaml"), []byte("apiVersion: rebalancer.dev/v1alpha1\nkind: OfferingCatalog\nofferings:\n  - {name: x, datacenter: d, arch: sparc, cpu: \"1\", memory: 1Gi, pods: 1, hourlyPrice: 1}\n"), 0o644))
	errOut.Reset()
	code = run(ctx, []string{"analyze", "--kubeconfig", c.Kubeconfig, "--repo-dir", filepath.Join(dir, "repo"), "--catalog", filepath.Join(dir, "bad.yaml")}, &out, &errOut)
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut.String(), "bad.yaml:4: offerings[0].arch: must be amd64 or arm64")
	errOut.Reset()
	code = run(ctx, []string{"analyze", "--kubeconfig", c.Kubeconfig, "--repo-dir", filepath.Join(dir, "repo")}, &out, &errOut)
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut.String(), "--catalog")
	errOut.Reset()
	code = run(ctx, []string{"analyze", "--kubeconfig", filepath.Join(dir, "nope"), "--catalog", filepath.Join(dir, "catalog.yaml"), "--repo-dir", filepath.Join(dir, "repo")}, &out, &errOut)
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut.String(), "kubeconfig")
}

func taintKeys(ts []corev1.Taint) []string {
	var out []string
	for _, t := range ts {
		out = append(out, t.Key)
	}
	return out
}
