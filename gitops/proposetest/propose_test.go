package proposetest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/rebalancer-dev/rebalancer/cloud/kwok"
	"github.com/rebalancer-dev/rebalancer/gitops/forge/githubtest"
	"github.com/rebalancer-dev/rebalancer/gitops/gittest"
	"github.com/rebalancer-dev/rebalancer/internal/localcluster"
)

var (
	cluster *localcluster.Cluster
	binary  string
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "proposetest")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "rebalancer")
	build := exec.Command("go", "build", "-o", binary, "../../cmd/rebalancer")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building rebalancer: %v\n%s", err, out)
		os.Exit(1)
	}
	code := localcluster.RunTests(m, localcluster.Options{}, func(c *localcluster.Cluster) { cluster = c })
	os.RemoveAll(dir)
	os.Exit(code)
}

const catalogYAML = `apiVersion: rebalancer.dev/v1alpha1
kind: OfferingCatalog
offerings:
  - {name: gen1-4x8, datacenter: fra1, arch: amd64, cpu: "4", memory: 8Gi, pods: 110, hourlyPrice: 0.08}
  - {name: gen2-4x8, datacenter: fra1, arch: amd64, cpu: "4", memory: 8Gi, pods: 110, hourlyPrice: 0.06}
`

type run struct {
	code           int
	stdout, stderr string
}

// TestProposeEndToEnd: two healthy policies and a broken one; proposals opened,
// left alone when nothing changed, superseded when the candidates change, closed
// when none are left, and a merged plan's nodes not proposed again.
func TestProposeEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	catalog, err := kwok.ParseCatalog("catalog.yaml", []byte(catalogYAML))
	require.NoError(t, err)
	addNode := func(name, pool string) {
		require.NoError(t, kwok.CreateNode(ctx, cluster.Client, kwok.NewNode(name, catalog[0], map[string]string{"pool": pool}, nil, false)))
		_, err := cluster.WaitNodeReady(ctx, name, 30*time.Second)
		require.NoError(t, err)
	}
	for _, n := range []string{"pe-g1", "pe-g2"} {
		addNode(n, "general")
	}
	addNode("pe-b1", "batch")
	addNode("pe-x1", "broken")

	git := gittest.NewServer(t)
	git.InitBare(t, "fleet")
	gh := githubtest.NewServer(t, git, "fleet", "acme", "fleet")
	w := git.Clone(t, "fleet", "main")
	w.Write("rebalancer/policies/general.yaml", gittest.Policy("general"))
	w.Write("rebalancer/policies/batch.yaml", gittest.Policy("batch"))
	w.Write("rebalancer/policies/broken.yaml", strings.Replace(gittest.Policy("broken"), "  minNodeAge: 0s\n", "  minNodeAge: 0s\n  maxConcurent: 2\n", 1))
	w.Commit("policies")
	w.Push("main")

	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
		return p
	}
	args := []string{"propose", "--kubeconfig", cluster.Kubeconfig, "--provider", "kwok", "--catalog", write("catalog.yaml", catalogYAML),
		"--cluster-name", "prod", "--repo", git.RepoURL("fleet"), "--git-username", git.User,
		"--git-token-file", write("git-token", git.Password), "--forge", "github", "--github-url", gh.APIURL, "--github-repo", "acme/fleet",
		"--github-token-file", write("gh-token", gh.Token), "--cache-dir", filepath.Join(dir, "cache")}
	propose := func() run {
		t.Helper()
		cmd := exec.CommandContext(ctx, binary, args...)
		cmd.Env = append(os.Environ(), "GITHUB_TOKEN=", "REBALANCER_GIT_TOKEN=")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		r := run{stdout: stdout.String(), stderr: stderr.String()}
		if ee, ok := err.(*exec.ExitError); ok {
			r.code = ee.ExitCode()
		} else {
			require.NoError(t, err)
		}
		for _, secret := range []string{git.Password, gh.Token} {
			require.NotContains(t, r.stdout+r.stderr, secret, "a secret reached the output")
		}
		return r
	}

	// First run: one PR per healthy group; the broken policy is named and its
	// group gets nothing; exit 1 for the broken file.
	r := propose()
	assert.Equal(t, 1, r.code, "%s\n%s", r.stdout, r.stderr)
	assert.Contains(t, r.stderr, "rebalancer/policies/broken.yaml:")
	assert.Contains(t, r.stderr, "maxConcurent")
	assert.Contains(t, r.stdout, "prod/batch: opened #")
	assert.Contains(t, r.stdout, "prod/general: opened #")
	open := gh.Open()
	require.Len(t, open, 2, "%+v", gh.Pulls())
	heads := []string{open[0].Head, open[1].Head}
	assert.ElementsMatch(t, []string{"rebalancer/prod/general", "rebalancer/prod/batch"}, heads)
	for _, pr := range open {
		assert.Contains(t, pr.Labels, "rebalancer")
		assert.Contains(t, pr.Labels, "cluster/prod")
		files := strings.Fields(git.GitIn(t, "fleet", "diff", "--name-only", "main", pr.Head))
		require.Len(t, files, 1, "exactly one file")
		assert.True(t, strings.HasPrefix(files[0], "rebalancer/plans/prod-"), files[0])
	}

	// Nothing changed: no push, no API write.
	writes, pushes := gh.Writes(), git.Pushes.Load()
	r = propose()
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stdout, "prod/general: unchanged")
	assert.Contains(t, r.stdout, "prod/batch: unchanged")
	assert.Equal(t, writes, gh.Writes(), "no API write")
	assert.Equal(t, pushes, git.Pushes.Load(), "no push")

	// The broken policy is fixed; the batch group grows: a new plan supersedes the
	// old PR; general is still unchanged.
	w.Pull()
	w.Write("rebalancer/policies/broken.yaml", gittest.Policy("broken"))
	w.Commit("fix the broken policy")
	w.Push("main")
	addNode("pe-b2", "batch")
	r = propose()
	assert.Equal(t, 0, r.code, "%s\n%s", r.stdout, r.stderr)
	assert.Contains(t, r.stdout, "prod/batch: superseded #")
	assert.Contains(t, r.stdout, "prod/broken: opened #")
	assert.Contains(t, r.stdout, "prod/general: unchanged")

	// A person squash-merges general's PR: its nodes are in a merged plan that has
	// not run, so nothing new is proposed for them.
	var general githubtest.PullRequest
	for _, pr := range gh.Open() {
		if pr.Head == "rebalancer/prod/general" {
			general = pr
		}
	}
	require.NotZero(t, general.Number)
	gh.Merge(t, general.Number, "squash")
	r = propose()
	assert.Equal(t, 0, r.code, "%s\n%s", r.stdout, r.stderr)
	assert.Contains(t, r.stdout, "prod/general: nothing")

	// The batch nodes opt out: its PR is closed with the reason.
	for _, n := range []string{"pe-b1", "pe-b2"} {
		_, err := cluster.Client.CoreV1().Nodes().Patch(ctx, n, types.MergePatchType,
			[]byte(`{"metadata":{"annotations":{"rebalancer.dev/do-not-disrupt":"true"}}}`), metav1.PatchOptions{})
		require.NoError(t, err)
	}
	r = propose()
	assert.Equal(t, 0, r.code, "%s\n%s", r.stdout, r.stderr)
	assert.Contains(t, r.stdout, "prod/batch: closed")
	var batch githubtest.PullRequest
	for _, pr := range gh.Pulls() {
		if pr.Head == "rebalancer/prod/batch" && pr.State == "closed" && len(pr.Comments) == 1 {
			batch = pr
		}
	}
	require.NotZero(t, batch.Number, "%+v", gh.Pulls())
	assert.Contains(t, batch.Comments[0], "opted-out 2")
	assert.Empty(t, git.Rev(t, "fleet", "rebalancer/prod/batch"), "branch deleted")
}
