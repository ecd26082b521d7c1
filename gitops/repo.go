package gitops

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-git/go-billy/v5/osfs"
	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/storage"
	"github.com/go-git/go-git/v5/storage/filesystem"
	"github.com/go-git/go-git/v5/storage/memory"
	"k8s.io/utils/clock"
)

// Identity is who commits: rebalancer's bot account.
type Identity struct {
	Name  string
	Email string
}

// Options configure a Repo. URL and Author are required; the rest has defaults.
type Options struct {
	// URL of the remote: https://host/org/repo.git, ssh://git@host/org/repo.git or
	// git@host:org/repo.git. Credentials never go in the URL; use Auth.
	URL string
	// Auth authenticates every remote call; nil is anonymous.
	Auth Credentials
	// CacheDir keeps the clone between runs, so a repository with a long history is
	// cloned once and fetched incrementally afterwards. Empty keeps it in memory.
	CacheDir string
	// Author is the bot identity of every commit (author and committer).
	Author Identity
	// Signer, when set, signs every commit (PGP or SSH).
	Signer Signer
	// Timeout bounds each remote call (one fetch, one push); default 60s.
	Timeout time.Duration
	// Attempts bounds the tries of one operation that fails transiently (the remote
	// unreachable, a 5xx) or because the branch moved (non-fast-forward); default 5.
	Attempts int
	// Backoff is the first wait between attempts, doubling up to MaxBackoff
	// (defaults 500ms and 15s).
	Backoff, MaxBackoff time.Duration
	// CABundle adds trusted CA certificates for an HTTPS remote (GitHub Enterprise
	// with a private CA).
	CABundle []byte
	// Clock stamps commits and paces retries; default the real clock.
	Clock clock.Clock
	// Logger receives one line per retry; default discards.
	Logger *slog.Logger
}

// Repo is a clone of the GitOps repository. It is safe for concurrent use: every
// operation on the underlying store is serialized.
type Repo struct {
	opts     Options
	endpoint *transport.Endpoint
	// display is the URL as it may appear in logs and errors.
	display string
	log     *slog.Logger
	clock   clock.Clock

	mu      sync.Mutex
	repo    *git.Repository
	storer  storage.Storer
	remote  *git.Remote
	history map[string]*historyCache // FileHistory results by dir, extended incrementally
}

const remoteName = "origin"

// Open opens the clone in Options.CacheDir (creating it the first time) and fetches
// every branch of the remote.
func Open(ctx context.Context, o Options) (*Repo, error) {
	if o.URL == "" {
		return nil, errors.New("gitops: no repository URL")
	}
	if o.Author.Name == "" || o.Author.Email == "" {
		return nil, errors.New("gitops: the bot identity needs a name and an email")
	}
	ep, err := transport.NewEndpoint(o.URL)
	if err != nil {
		return nil, fmt.Errorf("repository URL: %w", err)
	}
	if ep.Password != "" {
		return nil, errors.New("repository URL: credentials do not belong in the URL (they would reach logs); pass a token or key file")
	}
	if o.Timeout <= 0 {
		o.Timeout = 60 * time.Second
	}
	if o.Attempts <= 0 {
		o.Attempts = 5
	}
	if o.Backoff <= 0 {
		o.Backoff = 500 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 15 * time.Second
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Repo{opts: o, endpoint: ep, display: redact(o.URL), clock: o.Clock, history: map[string]*historyCache{}}
	r.log = o.Logger.With("repo", r.display)

	var st storage.Storer
	if o.CacheDir == "" {
		st = memory.NewStorage()
	} else {
		dir := filepath.Join(o.CacheDir, cacheName(o.URL))
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("cache directory: %w", err)
		}
		// ExclusiveAccess: the cache belongs to this process, so go-git may keep
		// its pack index in memory instead of re-reading it for every object.
		st = filesystem.NewStorageWithOptions(osfs.New(dir), cache.NewObjectLRUDefault(), filesystem.Options{ExclusiveAccess: true})
	}
	repo, err := git.Open(st, nil)
	if errors.Is(err, git.ErrRepositoryNotExists) {
		repo, err = git.Init(st, nil)
	}
	if err != nil {
		return nil, fmt.Errorf("opening the clone of %s: %w", r.display, err)
	}
	remote, err := repo.Remote(remoteName)
	if errors.Is(err, git.ErrRemoteNotFound) {
		remote, err = repo.CreateRemote(&config.RemoteConfig{Name: remoteName, URLs: []string{o.URL},
			Fetch: []config.RefSpec{"+refs/heads/*:refs/remotes/origin/*"}})
	}
	if err != nil {
		return nil, fmt.Errorf("remote of the clone of %s: %w", r.display, err)
	}
	if urls := remote.Config().URLs; len(urls) == 0 || urls[0] != o.URL {
		return nil, fmt.Errorf("the cache %s holds a clone of another repository", o.CacheDir)
	}
	r.repo, r.storer, r.remote = repo, st, remote
	if err := r.Fetch(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

// Timeout is the deadline of one remote call.
func (r *Repo) Timeout() time.Duration { return r.opts.Timeout }

// URL is the remote's URL without credentials.
func (r *Repo) URL() string { return r.display }

// Fetch brings every branch of the remote up to date (branches deleted there are
// deleted here). It retries transient failures with backoff.
func (r *Repo) Fetch(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fetchLocked(ctx)
}

func (r *Repo) fetchLocked(ctx context.Context) error {
	return r.retry(ctx, "fetching "+r.display, func(ctx context.Context) error {
		auth, err := r.auth(ctx)
		if err != nil {
			return err
		}
		err = r.remote.FetchContext(ctx, &git.FetchOptions{RemoteName: remoteName, Auth: auth, Tags: git.NoTags,
			Force: true, Prune: true, CABundle: r.opts.CABundle})
		if errors.Is(err, git.NoErrAlreadyUpToDate) || errors.Is(err, transport.ErrEmptyRemoteRepository) {
			return nil
		}
		return err
	})
}

func (r *Repo) auth(ctx context.Context) (transport.AuthMethod, error) {
	if r.opts.Auth == nil {
		return nil, nil
	}
	return r.opts.Auth.AuthMethod(ctx, r.endpoint)
}

// retry runs fn with a deadline per attempt, again after a backoff while it fails
// transiently, at most Options.Attempts times.
func (r *Repo) retry(ctx context.Context, op string, fn func(ctx context.Context) error) error {
	wait := r.opts.Backoff
	for attempt := 1; ; attempt++ {
		callCtx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
		err := fn(callCtx)
		cancel()
		if err == nil {
			return nil
		}
		wrapped, transient := classifyTransport(op, err)
		if !transient {
			return wrapped
		}
		if attempt >= r.opts.Attempts || ctx.Err() != nil {
			return fmt.Errorf("%w (%d attempts)", wrapped, attempt)
		}
		r.log.Warn("git remote call failed, retrying", "op", op, "attempt", attempt, "wait", wait, "err", wrapped)
		if err := r.sleep(ctx, wait); err != nil {
			return fmt.Errorf("%w (gave up after %d attempts: %w)", wrapped, attempt, err)
		}
		wait = min(2*wait, r.opts.MaxBackoff)
	}
}

func (r *Repo) sleep(ctx context.Context, d time.Duration) error {
	t := r.clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C():
		return nil
	}
}

// Head is the commit a branch of the remote pointed at when last fetched.
func (r *Repo) Head(branch string) (plumbing.Hash, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.headLocked(branch)
}

func (r *Repo) headLocked(branch string) (plumbing.Hash, error) {
	ref, err := r.storer.Reference(remoteRef(branch))
	if errors.Is(err, plumbing.ErrReferenceNotFound) {
		return plumbing.ZeroHash, fmt.Errorf("%w: %s on %s", ErrBranchNotFound, branch, r.display)
	}
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("reading branch %s: %w", branch, err)
	}
	return ref.Hash(), nil
}

// Branches lists the remote's branches whose names start with prefix, with the
// commit each pointed at when last fetched.
func (r *Repo) Branches(prefix string) (map[string]plumbing.Hash, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	iter, err := r.storer.IterReferences()
	if err != nil {
		return nil, fmt.Errorf("listing branches: %w", err)
	}
	out := map[string]plumbing.Hash{}
	base := "refs/remotes/" + remoteName + "/"
	err = iter.ForEach(func(ref *plumbing.Reference) error {
		name := ref.Name().String()
		if !strings.HasPrefix(name, base) || ref.Type() != plumbing.HashReference {
			return nil
		}
		if b := strings.TrimPrefix(name, base); strings.HasPrefix(b, prefix) {
			out[b] = ref.Hash()
		}
		return nil
	})
	return out, err
}

// BranchNames is Branches' keys in order.
func BranchNames(m map[string]plumbing.Hash) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func remoteRef(branch string) plumbing.ReferenceName {
	return plumbing.NewRemoteReferenceName(remoteName, branch)
}

// cacheName keys a cache directory by repository, so one --cache-dir serves several.
func cacheName(u string) string {
	sum := sha256.Sum256([]byte(u))
	return "repo-" + hex.EncodeToString(sum[:8])
}

// redact drops any user information from a URL before it is shown.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil || u.Scheme == "" {
		return raw
	}
	if _, hasPassword := u.User.Password(); hasPassword {
		u.User = url.User(u.User.Username())
	}
	return u.String()
}
