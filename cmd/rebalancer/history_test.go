package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	api "github.com/rebalancer-dev/rebalancer/api/v1alpha1"
	"github.com/rebalancer-dev/rebalancer/gitops"
	"github.com/rebalancer-dev/rebalancer/gitops/gittest"
)

// statusRepo is a repository on a real git server with two merged plans and
// status commits written through the StatusStore to a status branch, in this
// order: a Pending, b Pending, a Running, a Succeeded, b Running.
type statusRepo struct {
	srv       *gittest.Server
	url       string
	tokenFile string
	a, b      *api.RebalancePlan
	// commits are the status commits in the order they were made.
	commits []string
	phases  []string // "<plan> <phase>", same order
}

func newStatusRepo(t *testing.T) *statusRepo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv := gittest.NewServer(t)
	url := srv.InitBare(t, "fleet")
	w := srv.Clone(t, "fleet", "main")
	layout := gitops.Layout{}
	created := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	a := gittest.Plan("prod", "general", "aaaaaa", created, "old-1", "old-2")
	b := gittest.Plan("prod", "batch", "bbbbbb", created.Add(time.Hour), "old-3")
	w.Write(layout.PoliciesDir()+"/general.yaml", gittest.Policy("general"))
	w.Write(layout.PoliciesDir()+"/batch.yaml", gittest.Policy("batch"))
	w.Write(layout.PlanFile(a.Metadata.Name), gittest.YAML(t, a))
	w.Commit("merge plan a")
	w.Write(layout.PlanFile(b.Metadata.Name), gittest.YAML(t, b))
	w.Commit("merge plan b")
	w.Push("main")

	repo, err := gitops.Open(ctx, gitops.Options{URL: url, Auth: gitops.TokenAuth(srv.User, srv.Password),
		Author: gitops.Identity{Name: "rebalancer[bot]", Email: "bot@example.com"}})
	require.NoError(t, err)
	store := gitops.NewStatusStore(repo, gitops.StoreOptions{Layout: layout, WatchedBranch: "main", StatusBranch: "rebalancer-status"})
	r := &statusRepo{srv: srv, url: url, a: a, b: b}
	started := time.Date(2026, 3, 7, 1, 0, 0, 0, time.UTC)
	appendStatus := func(plan *api.RebalancePlan, phase api.Phase, edit func(*api.PlanStatus)) {
		st := gittest.Status(plan, phase, started.Add(10*time.Minute))
		st.Status.UpdatedAt = api.NewTime(started.Add(time.Duration(len(r.commits)) * time.Minute))
		if edit != nil {
			edit(&st.Status)
		}
		res, err := store.Append(ctx, st)
		require.NoError(t, err)
		require.False(t, res.Held, "a phase change is committed at once")
		r.commits = append(r.commits, res.Commit.String())
		r.phases = append(r.phases, plan.Metadata.Name+" "+string(phase))
	}
	appendStatus(a, api.PhasePending, nil)
	appendStatus(b, api.PhasePending, nil)
	appendStatus(a, api.PhaseRunning, func(s *api.PlanStatus) { s.StartedAt = api.NewTime(started) })
	appendStatus(a, api.PhaseSucceeded, func(s *api.PlanStatus) {
		for _, st := range a.Spec.Steps {
			s.Steps = append(s.Steps, api.StepStatus{Step: st, Phase: api.StepSucceeded,
				StartedAt: api.NewTime(started), FinishedAt: api.NewTime(started.Add(90 * time.Second))})
		}
		s.ProvisionedNodes = []string{"new-1", "new-2"}
		s.RealizedMonthlySavings = 29.2
		s.Message = "2 nodes replaced"
	})
	appendStatus(b, api.PhaseRunning, func(s *api.PlanStatus) { s.Message = "replacing old-3" })

	r.tokenFile = filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(r.tokenFile, []byte(srv.Password), 0o600))
	return r
}

// args are the repo flags every command of these tests takes.
func (r *statusRepo) args(cmd ...string) []string {
	return append(cmd, "--repo", r.url, "--git-token-file", r.tokenFile, "--git-username", r.srv.User,
		"--cache-dir", "", "--status-branch", "rebalancer-status")
}

func runRepoCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	code = run(ctx, args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestHistoryPrintsTheAuditLogOldestFirst(t *testing.T) {
	r := newStatusRepo(t)

	code, out, errOut := runRepoCLI(t, r.args("history", "-o", "json")...)
	require.Equal(t, 0, code, errOut)
	var entries []historyEntry
	require.NoError(t, json.Unmarshal([]byte(out), &entries), out)
	require.Len(t, entries, len(r.commits))
	for i, e := range entries {
		assert.Equal(t, r.commits[i], e.Commit, "entry %d", i)
		assert.Equal(t, r.phases[i], e.Plan+" "+e.Phase, "entry %d", i)
		assert.Equal(t, "rebalancer[bot]", e.Author)
		assert.Equal(t, "rebalancer: "+e.Plan+" "+e.Phase, e.Subject)
		assert.False(t, e.Time.IsZero())
		if i > 0 {
			assert.False(t, e.Time.Before(entries[i-1].Time), "oldest first")
		}
	}

	code, out, errOut = runRepoCLI(t, r.args("history")...)
	require.Equal(t, 0, code, errOut)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 1+len(r.commits), out)
	assert.Regexp(t, `^TIME\s+PLAN\s+PHASE\s+AUTHOR\s+COMMIT$`, lines[0])
	for i, line := range lines[1:] {
		f := strings.Fields(line)
		require.Len(t, f, 5, line)
		_, err := time.Parse(time.RFC3339, f[0])
		assert.NoError(t, err, line)
		assert.Equal(t, r.phases[i], f[1]+" "+f[2], line)
		assert.Equal(t, "rebalancer[bot]", f[3])
		assert.True(t, strings.HasPrefix(r.commits[i], f[4]), "%s is a prefix of %s", f[4], r.commits[i])
	}

	// --plan keeps one plan's commits, in order; --limit the newest.
	code, out, errOut = runRepoCLI(t, r.args("history", "-o", "json", "--plan", r.a.Metadata.Name)...)
	require.Equal(t, 0, code, errOut)
	entries = nil
	require.NoError(t, json.Unmarshal([]byte(out), &entries))
	var phases []string
	for _, e := range entries {
		assert.Equal(t, r.a.Metadata.Name, e.Plan)
		phases = append(phases, e.Phase)
	}
	assert.Equal(t, []string{"Pending", "Running", "Succeeded"}, phases)
	code, out, errOut = runRepoCLI(t, r.args("history", "--limit", "2")...)
	require.Equal(t, 0, code, errOut)
	lines = strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 3, out)
	assert.Regexp(t, r.a.Metadata.Name+`\s+Succeeded\s`, lines[1])
	assert.Regexp(t, r.b.Metadata.Name+`\s+Running\s`, lines[2])

	// A plan without status commits: an empty list, not null.
	code, out, errOut = runRepoCLI(t, r.args("history", "-o", "json", "--plan", "prod-none-20260101-cccccc")...)
	require.Equal(t, 0, code, errOut)
	assert.Equal(t, "[]\n", out)
}

func TestStatusListsPlansAndShowsOne(t *testing.T) {
	r := newStatusRepo(t)
	a, b := r.a.Metadata.Name, r.b.Metadata.Name

	code, out, errOut := runRepoCLI(t, r.args("status")...)
	require.Equal(t, 0, code, errOut)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 3, out)
	assert.Regexp(t, `^PLAN\s+NODE GROUP\s+PHASE\s+UPDATED\s+MESSAGE$`, lines[0])
	assert.Regexp(t, `^`+a+`\s+general\s+Succeeded\s+2026-03-07T01:03:00Z\s+2 nodes replaced$`, lines[1], "oldest merged first")
	assert.Regexp(t, `^`+b+`\s+batch\s+Running\s+2026-03-07T01:04:00Z\s+replacing old-3$`, lines[2])

	code, out, errOut = runRepoCLI(t, r.args("status", "-o", "json")...)
	require.Equal(t, 0, code, errOut)
	var rows []planRow
	require.NoError(t, json.Unmarshal([]byte(out), &rows))
	require.Len(t, rows, 2)
	assert.Equal(t, planRow{ID: a, Cluster: "prod", NodeGroup: "general", Phase: "Succeeded",
		Updated: time.Date(2026, 3, 7, 1, 3, 0, 0, time.UTC), Message: "2 nodes replaced"}, rows[0])

	code, out, errOut = runRepoCLI(t, r.args("status", a)...)
	require.Equal(t, 0, code, errOut)
	assert.Regexp(t, `Phase:\s+Succeeded`, out)
	assert.Regexp(t, `Realized savings:\s+29\.20/month`, out)
	assert.Regexp(t, `Finished:\s+2026-03-07T01:10:00Z \(took 10m0s\)`, out)
	assert.Regexp(t, `Rollback:\s+none`, out)
	assert.Regexp(t, `New nodes:\s+new-1, new-2`, out)
	assert.Regexp(t, `(?m)^1\s+provision\s+old-1\s+Succeeded\s+-\s+1m30s`, out)
	assert.Regexp(t, `(?m)^2\s+terminate\s+old-2\s+Succeeded`, out)

	code, out, errOut = runRepoCLI(t, r.args("status", a, "-o", "yaml")...)
	require.Equal(t, 0, code, errOut)
	st, err := api.DecodeStatus(a+".yaml", []byte(out))
	require.NoError(t, err, out)
	assert.Equal(t, api.PhaseSucceeded, st.Status.Phase)
	assert.InDelta(t, 29.2, st.Status.RealizedMonthlySavings, 1e-9)
	assert.Len(t, st.Status.Steps, len(r.a.Spec.Steps))

	code, out, errOut = runRepoCLI(t, r.args("status", b, "-o", "json")...)
	require.Equal(t, 0, code, errOut)
	var js api.RebalanceStatus
	require.NoError(t, json.Unmarshal([]byte(out), &js), out)
	assert.Equal(t, api.PhaseRunning, js.Status.Phase)
	assert.Equal(t, b, js.Metadata.Name)

	code, _, errOut = runRepoCLI(t, r.args("status", "prod-general-20260101-dddddd")...)
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "no plan prod-general-20260101-dddddd on main and no status of it on rebalancer-status")
}

func TestStatusAndHistoryShowAStatusWithARollback(t *testing.T) {
	srv := gittest.NewServer(t)
	url := srv.InitBare(t, "rb")
	w := srv.Clone(t, "rb", "main")
	layout := gitops.Layout{}
	plan := gittest.Plan("prod", "general", "eeeeee", time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC), "old-1")
	w.Write(layout.PoliciesDir()+"/general.yaml", gittest.Policy("general"))
	w.Write(layout.PlanFile(plan.Metadata.Name), gittest.YAML(t, plan))
	w.Commit("merge")
	w.Push("main")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	repo, err := gitops.Open(ctx, gitops.Options{URL: url, Auth: gitops.TokenAuth(srv.User, srv.Password),
		Author: gitops.Identity{Name: "rebalancer[bot]", Email: "bot@example.com"}})
	require.NoError(t, err)
	// Status on the watched branch itself (no --status-branch).
	store := gitops.NewStatusStore(repo, gitops.StoreOptions{Layout: layout, WatchedBranch: "main"})
	st := gittest.Status(plan, api.PhaseRolledBack, time.Date(2026, 3, 7, 1, 10, 0, 0, time.UTC))
	st.Status.Rollback = &api.Rollback{Trigger: api.TriggerDrainTimeout, Reason: "drain of old-1 passed 300s",
		Steps: []api.StepStatus{{Step: api.Step{Batch: 1, Action: "drain", Node: "old-1"}, Phase: api.StepSucceeded, NewNode: "new-1"}}}
	_, err = store.Append(ctx, st)
	require.NoError(t, err)
	tokenFile := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(tokenFile, []byte(srv.Password), 0o600))
	flags := []string{"--repo", url, "--git-token-file", tokenFile, "--git-username", srv.User, "--cache-dir", ""}

	code, out, errOut := runRepoCLI(t, append([]string{"status", plan.Metadata.Name}, flags...)...)
	require.Equal(t, 0, code, errOut)
	assert.Regexp(t, `Phase:\s+RolledBack`, out)
	assert.Regexp(t, `Rollback:\s+drain-timeout: drain of old-1 passed 300s`, out)
	assert.Regexp(t, `Rollback steps:\nBATCH.*\n1\s+drain\s+old-1\s+Succeeded\s+new-1`, out)

	code, out, errOut = runRepoCLI(t, append([]string{"history"}, flags...)...)
	require.Equal(t, 0, code, errOut)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 2, "the person's merge commit has no trailers and is left out:\n%s", out)
	assert.Regexp(t, plan.Metadata.Name+`\s+RolledBack\s`, lines[1])
}

func TestStatusAndHistoryUsageAndRemoteErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"history bad output", []string{"history", "--repo", "https://example.invalid/x.git", "-o", "xml"}, `--output "xml": use table or json`},
		{"history bad plan ID", []string{"history", "--repo", "https://example.invalid/x.git", "--plan", "Not_A_Plan"}, `--plan "Not_A_Plan"`},
		{"history without repo", []string{"history"}, "--repo URL is required"},
		{"history extra argument", []string{"history", "plan-x", "--repo", "https://example.invalid/x.git"}, "unknown command"},
		{"history unknown flag", []string{"history", "--nope"}, "unknown flag: --nope"},
		{"status bad output", []string{"status", "--repo", "https://example.invalid/x.git", "-o", "wide"}, `--output "wide": use table, yaml or json`},
		{"status two plans", []string{"status", "a", "b", "--repo", "https://example.invalid/x.git"}, "accepts at most 1 arg(s), received 2"},
		{"status bad plan ID", []string{"status", "UPPER", "--repo", "https://example.invalid/x.git"}, `plan ID "UPPER"`},
		{"status without repo", []string{"status"}, "--repo URL is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := runRepoCLI(t, tc.args...)
			assert.Equal(t, 2, code, errOut)
			assert.Contains(t, errOut, tc.want)
		})
	}

	// A remote nobody listens on: exit 1, and the error names the repository and the cause.
	for _, cmd := range []string{"history", "status"} {
		t.Run(cmd+" unreachable", func(t *testing.T) {
			code, out, errOut := runRepoCLI(t, cmd, "--repo", "http://127.0.0.1:9/fleet.git", "--cache-dir", "", "--git-timeout", "2s")
			assert.Equal(t, 1, code, errOut)
			assert.Empty(t, out)
			assert.Contains(t, errOut, "error: ")
			assert.Contains(t, errOut, "http://127.0.0.1:9/fleet.git")
			assert.Contains(t, errOut, "connection refused")
		})
	}
}
