package gitops_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	api "github.com/rebalancer-dev/rebalancer/api/v1alpha1"
	"github.com/rebalancer-dev/rebalancer/gitops"
	"github.com/rebalancer-dev/rebalancer/gitops/gittest"
)

// historyRepoArchiving makes a server repository whose main holds n plans with their
// statuses. They arrive in at most 200 commits: every commit rewrites the tree of
// the plans directory, so n commits of n files would take git minutes (quadratic)
// to build, and what an append costs depends on the files, not on the commits.
// With window > 0, as --archive-after does, each plan's files leave the tree once
// window newer plans have been added (0: never).
func historyRepoArchiving(b testing.TB, n, window int) *gittest.Server {
	srv := gittest.NewServer(b)
	srv.InitBare(b, "fleet")
	tmpl := gittest.Plan("prod", "general", "000000", t0, "n1", "n2", "n3")
	planYAML := gittest.YAML(b, tmpl)
	statusYAML := gittest.YAML(b, gittest.Status(tmpl, api.PhaseSucceeded, t0.Add(time.Hour)))
	var s strings.Builder
	blob := func(data string) {
		fmt.Fprintf(&s, "data %d\n%s\n", len(data), data)
	}
	s.WriteString("commit refs/heads/main\ncommitter Pat <pat@example.com> 1700000000 +0000\n")
	blob("policies")
	fmt.Fprintf(&s, "M 100644 inline rebalancer/policies/general.yaml\n")
	blob(gittest.Policy("general"))
	perCommit := max(1, n/200)
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("prod-general-20261127-%06x", i)
		if i%perCommit == 0 {
			fmt.Fprintf(&s, "commit refs/heads/main\ncommitter Pat <pat@example.com> %d +0000\n", 1700000000+i)
			blob("merge " + id)
		}
		fmt.Fprintf(&s, "M 100644 inline rebalancer/plans/%s.yaml\n", id)
		blob(strings.ReplaceAll(planYAML, tmpl.Metadata.Name, id))
		fmt.Fprintf(&s, "M 100644 inline rebalancer/status/%s.yaml\n", id)
		blob(strings.ReplaceAll(statusYAML, tmpl.Metadata.Name, id))
		if window > 0 && i >= window {
			old := fmt.Sprintf("prod-general-20261127-%06x", i-window)
			fmt.Fprintf(&s, "D rebalancer/plans/%s.yaml\nD rebalancer/status/%s.yaml\n", old, old)
		}
	}
	srv.FastImport(b, "fleet", s.String())
	// As a hosted forge keeps its repositories: one pack with a reachability bitmap.
	srv.GitIn(b, "fleet", "repack", "-adq", "--write-bitmap-index")
	return srv
}

// BenchmarkStatusCommit appends one status transition — render, commit, push to a
// real git server over HTTP — to a repository whose history holds 10 or 10,000
// plans. With 10,000 the repository is as --archive-after leaves it: each plan's
// files left the tree some time after it finished (here: once 100 newer plans
// came), so the tree holds recent plans only. tree=10000 keeps every plan in the
// tree: what a push costs the server then grows with the tree (receive-pack's
// connectivity check walks the trees next to the tip), not with our client.
func BenchmarkStatusCommit(b *testing.B) {
	for _, c := range []struct {
		name      string
		n, window int
	}{{"history=10", 10, 0}, {"history=10000", 10000, 100}, {"tree=10000", 10000, 0}} {
		b.Run(c.name, func(b *testing.B) {
			srv := historyRepoArchiving(b, c.n, c.window)
			r, err := gitops.Open(context.Background(), gitops.Options{URL: srv.RepoURL("fleet"),
				Auth: gitops.BasicAuth(srv.User, srv.Password), Author: bot, CacheDir: b.TempDir()})
			require.NoError(b, err)
			store := gitops.NewStatusStore(r, gitops.StoreOptions{WatchedBranch: "main"})
			plan := gittest.Plan("prod", "general", "ffffff", t0, "n1", "n2", "n3")
			phases := []api.Phase{api.PhaseRunning, api.PhaseWaiting}
			ctx := context.Background()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				res, err := store.Append(ctx, gittest.Status(plan, phases[i%2], time.Time{}))
				if err != nil || res.Held {
					b.Fatalf("append: %v (held %v)", err, res.Held)
				}
			}
		})
	}
}
