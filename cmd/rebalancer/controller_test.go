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
	"github.com/rebalancer-dev/rebalancer/gitops"
	"github.com/rebalancer-dev/rebalancer/gitops/gittest"
	"github.com/rebalancer-dev/rebalancer/policies"
)

const controllerCatalog = `apiVersion: rebalancer.dev/v1alpha1
kind: OfferingCatalog
offerings:
  - {name: std-4vcpu-8gb-v1, datacenter: fra1, arch: amd64, cpu: "4", memory: 8Gi, pods: 110, hourlyPrice: 0.08}
  - {name: std-4vcpu-8gb-v2, datacenter: fra1, arch: amd64, cpu: "4", memory: 8Gi, pods: 110, hourlyPrice: 0.06}
`

func TestControllerOnceRunsAMergedPlan(t *testing.T) {
	c := shared.Get(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const group = "ctl"
	_, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ctl-system"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	catalog, err := kwok.ParseCatalog("c", []byte(controllerCatalog))
	require.NoError(t, err)
	require.NoError(t, kwok.CreateNode(ctx, c.Client, kwok.NewNode("ctl-old-0", catalog[0], map[string]string{"pool": group}, nil, false)))
	_, err = c.WaitNodeReady(ctx, "ctl-old-0", 30*time.Second)
	require.NoError(t, err)

	srv := gittest.NewServer(t)
	srv.InitBare(t, group)
	w := srv.Clone(t, group, "main")
	layout := gitops.Layout{}
	plan := gittest.Plan("local", group, "c0ffee", time.Now().UTC().Truncate(time.Second), "ctl-old-0")
	s, err := policies.StrategyFor(plan.Spec.Strategy)
	require.NoError(t, err)
	plan.Spec.Steps = s.Steps([]string{"ctl-old-0"}, plan.Spec.MaxConcurrent)
	plan.Spec.ContentDigest = plan.Spec.ComputeContentDigest()
	w.Write(layout.PoliciesDir()+"/"+group+".yaml", gittest.Policy(group))
	w.Write(layout.PlanFile(plan.Metadata.Name), gittest.YAML(t, plan))
	w.Commit("merge plan")
	w.Push("main")

	dir := t.TempDir()
	catalogFile, tokenFile := filepath.Join(dir, "catalog.yaml"), filepath.Join(dir, "token")
	require.NoError(t, os.WriteFile(catalogFile, []byte(controllerCatalog), 0o600))
	require.NoError(t, os.WriteFile(tokenFile, []byte(srv.Password), 0o600))
	var stdout, stderr bytes.Buffer
	code := run(ctx, []string{"controller", "--once", "--kubeconfig", c.Kubeconfig, "--catalog", catalogFile,
		"--repo", srv.RepoURL(group), "--git-token-file", tokenFile, "--git-username", srv.User, "--cache-dir", "",
		"--cluster-name", "local", "--namespace", "ctl-system", "--status-branch", "rebalancer-status"}, &stdout, &stderr)
	require.Equal(t, 0, code, stderr.String())

	out, ok := srv.Show(t, group, "rebalancer-status", layout.StatusFile(plan.Metadata.Name))
	require.True(t, ok, "status on the status branch")
	st, err := api.DecodeStatus(layout.StatusFile(plan.Metadata.Name), []byte(out))
	require.NoError(t, err)
	assert.Equal(t, api.PhaseSucceeded, st.Status.Phase, st.Status.Message)
	_, onMain := srv.Show(t, group, "main", layout.StatusFile(plan.Metadata.Name))
	assert.False(t, onMain, "status goes to --status-branch only")
	log := srv.GitIn(t, group, "log", "--format=%s", "rebalancer-status")
	assert.True(t, strings.Contains(log, "rebalancer: "+plan.Metadata.Name+" Running"), log)
	_, err = c.Client.CoordinationV1().Leases("ctl-system").Get(ctx, "rebalancer-controller", metav1.GetOptions{})
	require.NoError(t, err, "the pass ran under the Lease")
}
