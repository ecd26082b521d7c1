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
	"github.com/rebalancer-dev/rebalancer/internal/localcluster"
	"github.com/rebalancer-dev/rebalancer/policies"
)

const controllerCatalog = `apiVersion: rebalancer.dev/v1alpha1
kind: OfferingCatalog
offerings:
  - {name: std-4vcpu-8gb-v1, datacenter: fra1, arch: amd64, cpu: "4", memory: 8Gi, pods: 110, hourlyPrice: 0.08}
  - {name: std-4vcpu-8gb-v2, datacenter: fra1, arch: amd64, cpu: "4", memory: 8Gi, pods: 110, hourlyPrice: 0.06}
`

// controllerEnv is what a controller test starts from: its namespace, old KWOK
// nodes of one group, a git server whose main holds the group's policy, and the
// catalog and token files the controller reads.
type controllerEnv struct {
	group                       string
	srv                         *gittest.Server
	w                           *gittest.Workdir
	dir, catalogFile, tokenFile string
}

func newControllerEnv(ctx context.Context, t *testing.T, c *localcluster.Cluster, group, ns string, olds ...string) *controllerEnv {
	t.Helper()
	_, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	require.NoError(t, err)
	catalog, err := kwok.ParseCatalog("c", []byte(controllerCatalog))
	require.NoError(t, err)
	for _, n := range olds {
		require.NoError(t, kwok.CreateNode(ctx, c.Client, kwok.NewNode(n, catalog[0], map[string]string{"pool": group}, nil, false)))
		_, err = c.WaitNodeReady(ctx, n, 30*time.Second)
		require.NoError(t, err)
	}
	e := &controllerEnv{group: group, srv: gittest.NewServer(t), dir: t.TempDir()}
	e.srv.InitBare(t, group)
	e.w = e.srv.Clone(t, group, "main")
	e.w.Write(gitops.Layout{}.PoliciesDir()+"/"+group+".yaml", gittest.Policy(group))
	e.w.Commit("policy")
	e.w.Push("main")
	e.catalogFile, e.tokenFile = filepath.Join(e.dir, "catalog.yaml"), filepath.Join(e.dir, "token")
	require.NoError(t, os.WriteFile(e.catalogFile, []byte(controllerCatalog), 0o600))
	require.NoError(t, os.WriteFile(e.tokenFile, []byte(e.srv.Password), 0o600))
	return e
}

// mergePlan merges a plan replacing nodes, with the steps the planner generates.
func (e *controllerEnv) mergePlan(t *testing.T, suffix string, nodes ...string) *api.RebalancePlan {
	t.Helper()
	plan := gittest.Plan("local", e.group, suffix, time.Now().UTC().Truncate(time.Second), nodes...)
	s, err := policies.StrategyFor(plan.Spec.Strategy)
	require.NoError(t, err)
	plan.Spec.Steps = s.Steps(nodes, plan.Spec.MaxConcurrent)
	plan.Spec.ContentDigest = plan.Spec.ComputeContentDigest()
	e.w.Write(gitops.Layout{}.PlanFile(plan.Metadata.Name), gittest.YAML(t, plan))
	e.w.Commit("merge plan")
	e.w.Push("main")
	return plan
}

func TestControllerOnceRunsAMergedPlan(t *testing.T) {
	c := shared.Get(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const group = "ctl"
	e := newControllerEnv(ctx, t, c, group, "ctl-system", "ctl-old-0")
	plan := e.mergePlan(t, "c0ffee", "ctl-old-0")
	srv, catalogFile, tokenFile, layout := e.srv, e.catalogFile, e.tokenFile, gitops.Layout{}
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
