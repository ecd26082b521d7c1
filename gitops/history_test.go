package gitops_test

import (
	"context"
	"testing"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rebalancer-dev/rebalancer/gitops"
)

// TestFileHistoryFollowsFirstParents merges one plan with a merge commit, squashes
// another, edits the first on main, and checks the commits that added and last
// changed each, before and after more history arrives (the incremental path).
func TestFileHistoryFollowsFirstParents(t *testing.T) {
	t.Parallel()
	srv, w := fixture(t)
	base := w.Head()
	w.Git("checkout", "-q", "-b", "pr-a")
	w.Write("rebalancer/plans/a.yaml", "a1\n")
	prCommit := w.Commit("propose a")
	w.Git("checkout", "-q", "main")
	w.Git("merge", "-q", "--no-ff", "-m", "Merge pull request #1", "pr-a")
	merge := w.Head()

	w.Git("checkout", "-q", "-b", "pr-b")
	w.Write("rebalancer/plans/b.yaml", "b1\n")
	w.Commit("propose b")
	w.Write("rebalancer/plans/b.yaml", "b2\n")
	w.Commit("fix b")
	w.Git("checkout", "-q", "main")
	w.Git("merge", "-q", "--squash", "pr-b")
	squash := w.Commit("propose b (#2)")

	w.Write("rebalancer/plans/a.yaml", "a2\n")
	edit := w.Commit("cancel a")
	w.Write("README.md", "unrelated\n")
	w.Commit("unrelated")
	w.Push("main", "pr-a")

	r := open(t, srv, nil)
	ctx := context.Background()
	tip, err := r.Head("main")
	require.NoError(t, err)
	files, err := r.FileHistory(ctx, tip, "rebalancer/plans")
	require.NoError(t, err)
	require.Len(t, files, 2)
	assert.Equal(t, merge, files["a.yaml"].Added.String(), "the merge commit on main, not the PR's commit %s", prCommit)
	assert.Equal(t, edit, files["a.yaml"].LastChanged.String())
	assert.Equal(t, squash, files["b.yaml"].Added.String())
	assert.Equal(t, squash, files["b.yaml"].LastChanged.String())
	assert.Greater(t, files["a.yaml"].Depth, files["b.yaml"].Depth, "a was added first")

	// More history: a deleted and added again, c added. The cached walk stops
	// at the old tip; a fresh clone walks everything; both agree.
	w.Remove("rebalancer/plans/a.yaml")
	w.Commit("drop a")
	w.Write("rebalancer/plans/a.yaml", "a3\n")
	readd := w.Commit("a again")
	w.Write("rebalancer/plans/c.yaml", "c\n")
	addC := w.Commit("c")
	w.Push("main")
	require.NoError(t, r.Fetch(ctx))
	tip2, err := r.Head("main")
	require.NoError(t, err)
	incremental, err := r.FileHistory(ctx, tip2, "rebalancer/plans")
	require.NoError(t, err)
	fresh, err := open(t, srv, nil).FileHistory(ctx, tip2, "rebalancer/plans")
	require.NoError(t, err)
	assert.Equal(t, fresh, incremental)
	assert.Equal(t, readd, incremental["a.yaml"].Added.String(), "added again after a deletion")
	assert.Equal(t, squash, incremental["b.yaml"].Added.String())
	assert.Equal(t, addC, incremental["c.yaml"].Added.String())
	assert.Equal(t, 0, incremental["c.yaml"].Depth)

	o, err := r.LastChanged(ctx, tip2, "rebalancer/plans/b.yaml")
	require.NoError(t, err)
	assert.Equal(t, squash, o.LastChanged.String())

	var subjects []string
	require.NoError(t, r.FirstParentLog(ctx, tip2, func(c gitops.CommitInfo) error {
		subjects = append(subjects, c.Subject)
		if c.Hash.String() == base {
			return gitops.ErrStopWalk
		}
		return nil
	}))
	assert.Equal(t, []string{"c", "a again", "drop a", "unrelated", "cancel a", "propose b (#2)", "Merge pull request #1", "add a policy"}, subjects,
		"first parents only: the PR's own commits are not on it")

	changed, err := r.ChangedPaths(plumbing.NewHash(readd), tip2)
	require.NoError(t, err)
	assert.Equal(t, []string{"rebalancer/plans/c.yaml"}, changed)
}
