package gitops_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io/fs"
	"net"
	"net/http"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rebalancer-dev/rebalancer/gitops"
	"github.com/rebalancer-dev/rebalancer/gitops/gittest"
)

var bot = gitops.Identity{Name: "rebalancer[bot]", Email: "bot@rebalancer.dev"}

// fixture is a server repository with one commit on main, holding a policy.
func fixture(t *testing.T) (*gittest.Server, *gittest.Workdir) {
	t.Helper()
	srv := gittest.NewServer(t)
	srv.InitBare(t, "fleet")
	w := srv.Clone(t, "fleet", "main")
	w.Write("rebalancer/policies/general.yaml", "kind: RebalancePolicy\n")
	w.Write("README.md", "fleet\n")
	w.Commit("add a policy")
	w.Push("main")
	return srv, w
}

func open(t *testing.T, srv *gittest.Server, mod func(*gitops.Options)) *gitops.Repo {
	t.Helper()
	o := gitops.Options{URL: srv.RepoURL("fleet"), Auth: gitops.BasicAuth(srv.User, srv.Password), Author: bot,
		Backoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, Timeout: 10 * time.Second}
	if mod != nil {
		mod(&o)
	}
	r, err := gitops.Open(context.Background(), o)
	require.NoError(t, err)
	return r
}

func TestOpenReadsTreeWithoutCheckout(t *testing.T) {
	t.Parallel()
	srv, w := fixture(t)
	r := open(t, srv, nil)
	head, err := r.Head("main")
	require.NoError(t, err)
	assert.Equal(t, w.Head(), head.String())

	fsys, err := r.TreeFS(head)
	require.NoError(t, err)
	require.NoError(t, fstest.TestFS(fsys, "README.md", "rebalancer/policies/general.yaml"))
	data, err := r.ReadFile(head, "rebalancer/policies/general.yaml")
	require.NoError(t, err)
	assert.Equal(t, "kind: RebalancePolicy\n", string(data))
	_, err = r.ReadFile(head, "rebalancer/plans/nope.yaml")
	assert.ErrorIs(t, err, fs.ErrNotExist)

	_, err = r.Head("no-such-branch")
	assert.ErrorIs(t, err, gitops.ErrBranchNotFound)
}

func TestCommitFilesPushesAsTheBotWithTrailers(t *testing.T) {
	t.Parallel()
	srv, w := fixture(t)
	r := open(t, srv, nil)
	res, err := r.CommitFiles(context.Background(), "main", map[string][]byte{
		"rebalancer/status/p1.yaml": []byte("phase: Running\n"),
		"README.md":                 nil, // deleted
	}, "rebalancer: p1 Running", []gitops.Trailer{{Key: "Rebalancer-Plan", Value: "p1"}})
	require.NoError(t, err)
	assert.True(t, res.Changed)
	assert.Equal(t, 1, res.Attempts)
	assert.Equal(t, res.Commit.String(), srv.Rev(t, "fleet", "main"))

	got, ok := srv.Show(t, "fleet", "main", "rebalancer/status/p1.yaml")
	require.True(t, ok)
	assert.Equal(t, "phase: Running\n", got)
	_, ok = srv.Show(t, "fleet", "main", "README.md")
	assert.False(t, ok, "README.md was deleted")
	_, ok = srv.Show(t, "fleet", "main", "rebalancer/policies/general.yaml")
	assert.True(t, ok, "other files are kept")
	assert.Equal(t, "rebalancer[bot] <bot@rebalancer.dev>", strings.TrimSpace(srv.GitIn(t, "fleet", "log", "-1", "--format=%an <%ae>", "main")))
	trailers := srv.GitIn(t, "fleet", "log", "-1", "--format=%(trailers:key=Rebalancer-Plan,valueonly)", "main")
	assert.Equal(t, "p1", strings.TrimSpace(trailers), "git itself reads the trailer")
	srv.GitIn(t, "fleet", "fsck", "--strict") // trees are in git's order

	// The same content again: nothing to push.
	before := srv.Pushes.Load()
	res2, err := r.CommitFiles(context.Background(), "main", map[string][]byte{"rebalancer/status/p1.yaml": []byte("phase: Running\n")}, "again", nil)
	require.NoError(t, err)
	assert.False(t, res2.Changed)
	assert.Equal(t, res.Commit, res2.Commit)
	assert.Equal(t, before, srv.Pushes.Load())

	// The clone's local view moved too, without a fetch.
	head, err := r.Head("main")
	require.NoError(t, err)
	assert.Equal(t, res.Commit, head)
	w.Pull()
	assert.Equal(t, res.Commit.String(), w.Head())
}

func TestConcurrentPusherIsRebasedOnto(t *testing.T) {
	t.Parallel()
	srv, w := fixture(t)
	r := open(t, srv, nil)
	// A person pushes after our fetch: our view of main is stale.
	w.Write("rebalancer/policies/other.yaml", "kind: RebalancePolicy\n")
	theirs := w.Commit("another policy")
	w.Push("main")

	res, err := r.CommitFiles(context.Background(), "main", map[string][]byte{"rebalancer/status/p1.yaml": []byte("x\n")}, "status", nil)
	require.NoError(t, err)
	assert.Equal(t, 2, res.Attempts, "first push refused as non-fast-forward, second lands")
	c, err := r.CommitInfo(res.Commit)
	require.NoError(t, err)
	assert.Equal(t, []plumbing.Hash{plumbing.NewHash(theirs)}, c.Parents, "our change re-applied on their commit")
	_, ok := srv.Show(t, "fleet", "main", "rebalancer/policies/other.yaml")
	assert.True(t, ok, "their change is kept")
}

func TestRacingPushersBothLand(t *testing.T) {
	t.Parallel()
	srv, _ := fixture(t)
	a := open(t, srv, nil)
	b := open(t, srv, nil)
	errs := make(chan error, 2)
	for i, r := range []*gitops.Repo{a, b} {
		go func() {
			for n := 0; n < 4; n++ {
				file := "rebalancer/status/p" + string(rune('a'+i)) + string(rune('0'+n)) + ".yaml"
				if _, err := r.CommitFiles(context.Background(), "main", map[string][]byte{file: []byte("x\n")}, "status", nil); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	require.NoError(t, <-errs)
	require.NoError(t, <-errs)
	out := srv.GitIn(t, "fleet", "ls-tree", "--name-only", "main", "rebalancer/status/")
	assert.Len(t, strings.Fields(out), 8, "every commit of both writers landed:\n%s", out)
}

func TestPreReceiveRefusalIsPermanent(t *testing.T) {
	t.Parallel()
	srv, _ := fixture(t)
	srv.RefuseDirectPushes(t, "fleet", "main")
	r := open(t, srv, nil)
	before := srv.Pushes.Load()
	_, err := r.CommitFiles(context.Background(), "main", map[string][]byte{"rebalancer/status/p1.yaml": []byte("x\n")}, "status", nil)
	require.Error(t, err)
	assert.ErrorIs(t, err, gitops.ErrPushRefused)
	assert.NotErrorIs(t, err, gitops.ErrNonFastForward)
	assert.Contains(t, err.Error(), "GH006: Protected branch update failed", "the hook's own words reach the error")
	assert.Equal(t, before+1, srv.Pushes.Load(), "a permanent refusal is not retried")

	// Another branch is still writable.
	res, err := r.Commit(context.Background(), gitops.CommitRequest{Branch: "rebalancer-status",
		Files: map[string][]byte{"rebalancer/status/p1.yaml": []byte("x\n")}, Message: "status"})
	require.NoError(t, err)
	assert.Equal(t, res.Commit.String(), srv.Rev(t, "fleet", "rebalancer-status"))
	c, err := r.CommitInfo(res.Commit)
	require.NoError(t, err)
	assert.Empty(t, c.Parents, "a new status branch starts as an orphan")
}

func TestServerErrorsAreRetriedThenReported(t *testing.T) {
	t.Parallel()
	srv, _ := fixture(t)
	r := open(t, srv, func(o *gitops.Options) { o.Attempts = 3 })

	srv.FailNext(2, http.StatusBadGateway)
	res, err := r.CommitFiles(context.Background(), "main", map[string][]byte{"rebalancer/status/p1.yaml": []byte("x\n")}, "status", nil)
	require.NoError(t, err, "two 502s, then success")
	assert.Equal(t, res.Commit.String(), srv.Rev(t, "fleet", "main"))

	srv.FailNext(100, http.StatusServiceUnavailable)
	before := srv.Rev(t, "fleet", "main")
	_, err = r.CommitFiles(context.Background(), "main", map[string][]byte{"rebalancer/status/p2.yaml": []byte("x\n")}, "status", nil)
	require.Error(t, err)
	assert.ErrorIs(t, err, gitops.ErrUnavailable)
	assert.Contains(t, err.Error(), "3 attempts")
	assert.Equal(t, before, srv.Rev(t, "fleet", "main"), "nothing landed")
	srv.FailNext(0, 0)
	require.NoError(t, r.Fetch(context.Background()))
}

func TestUnreachableAndUnauthorized(t *testing.T) {
	t.Parallel()
	srv, _ := fixture(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close()) // nothing listens there now

	start := time.Now()
	_, err = gitops.Open(context.Background(), gitops.Options{URL: "http://" + addr + "/fleet.git", Author: bot,
		Attempts: 3, Backoff: 5 * time.Millisecond})
	require.Error(t, err)
	assert.ErrorIs(t, err, gitops.ErrUnavailable)
	assert.Less(t, time.Since(start), 5*time.Second)

	_, err = gitops.Open(context.Background(), gitops.Options{URL: srv.RepoURL("fleet"), Author: bot,
		Auth: gitops.BasicAuth(srv.User, "wrong-password")})
	require.Error(t, err)
	assert.ErrorIs(t, err, gitops.ErrAuth)
	assert.NotContains(t, err.Error(), "wrong-password", "secrets never reach an error")

	_, err = gitops.Open(context.Background(), gitops.Options{URL: "https://bot:s3cret@example.com/x.git", Author: bot})
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "s3cret")
}

func TestDeadlineOnEveryRemoteCall(t *testing.T) {
	t.Parallel()
	// A server that accepts and never answers.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	start := time.Now()
	_, err = gitops.Open(context.Background(), gitops.Options{URL: "http://" + l.Addr().String() + "/fleet.git", Author: bot,
		Timeout: 300 * time.Millisecond, Attempts: 2, Backoff: time.Millisecond})
	require.Error(t, err)
	assert.ErrorIs(t, err, gitops.ErrUnavailable)
	assert.Less(t, time.Since(start), 5*time.Second, "two attempts of 300ms each, not a hang")
}

func TestCacheDirIsFetchedIncrementally(t *testing.T) {
	t.Parallel()
	srv, w := fixture(t)
	big := make([]byte, 1<<20)
	_, err := rand.Read(big)
	require.NoError(t, err)
	w.Write("blob.bin", hex.EncodeToString(big))
	w.Commit("a big file")
	w.Push("main")

	cache := t.TempDir()
	srv.FetchBytes.Store(0)
	open(t, srv, func(o *gitops.Options) { o.CacheDir = cache })
	first := srv.FetchBytes.Load()
	assert.Greater(t, first, int64(1<<20), "the first open clones")

	w.Write("rebalancer/policies/small.yaml", "kind: RebalancePolicy\n")
	tip := w.Commit("small change")
	w.Push("main")
	srv.FetchBytes.Store(0)
	r := open(t, srv, func(o *gitops.Options) { o.CacheDir = cache })
	assert.Less(t, srv.FetchBytes.Load(), int64(64<<10), "the second open fetches only the new commit")
	head, err := r.Head("main")
	require.NoError(t, err)
	assert.Equal(t, tip, head.String())
}

func TestProposalBranchReplaceUsesALease(t *testing.T) {
	t.Parallel()
	srv, w := fixture(t)
	r := open(t, srv, nil)
	ctx := context.Background()
	req := gitops.CommitRequest{Branch: "rebalancer/prod/general", StartFrom: "main", Replace: true,
		Files: map[string][]byte{"rebalancer/plans/a.yaml": []byte("a\n")}, Message: "plan a"}
	first, err := r.Commit(ctx, req)
	require.NoError(t, err)
	c, err := r.CommitInfo(first.Commit)
	require.NoError(t, err)
	assert.Equal(t, []plumbing.Hash{plumbing.NewHash(w.Head())}, c.Parents, "one commit on top of main")

	again, err := r.Commit(ctx, req)
	require.NoError(t, err)
	assert.False(t, again.Changed, "the branch already holds exactly this")

	req.Files = map[string][]byte{"rebalancer/plans/b.yaml": []byte("b\n")}
	second, err := r.Commit(ctx, req)
	require.NoError(t, err)
	changed, err := r.ChangedPaths(plumbing.NewHash(w.Head()), second.Commit)
	require.NoError(t, err)
	assert.Equal(t, []string{"rebalancer/plans/b.yaml"}, changed, "the branch was replaced: it adds exactly one file")

	require.NoError(t, r.DeleteBranch(ctx, "rebalancer/prod/general"))
	assert.Empty(t, srv.Rev(t, "fleet", "rebalancer/prod/general"))
	require.NoError(t, r.DeleteBranch(ctx, "rebalancer/prod/general"), "deleting twice is fine")
	branches, err := r.Branches("rebalancer/")
	require.NoError(t, err)
	assert.Empty(t, branches)
}

func TestNonFastForwardIsTyped(t *testing.T) {
	t.Parallel()
	srv, w := fixture(t)
	r := open(t, srv, func(o *gitops.Options) { o.Attempts = 1 })
	w.Write("x", "y")
	w.Commit("move main")
	w.Push("main")
	_, err := r.CommitFiles(context.Background(), "main", map[string][]byte{"a": []byte("b")}, "m", nil)
	require.Error(t, err)
	assert.True(t, errors.Is(err, gitops.ErrNonFastForward), "%v", err)
	var pe *gitops.PushError
	assert.True(t, errors.As(err, &pe))
}
