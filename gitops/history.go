package gitops

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// Person is an author or committer.
type Person struct {
	Name  string
	Email string
	When  time.Time
}

// CommitInfo is what rebalancer needs to know of a commit.
type CommitInfo struct {
	Hash      plumbing.Hash
	Parents   []plumbing.Hash
	Author    Person
	Committer Person
	// Subject is the first line of Message.
	Subject  string
	Message  string
	Trailers []Trailer
	// Signed tells whether the commit carries a signature (checked by VerifyCommit).
	Signed bool
}

// ErrStopWalk, returned by a FirstParentLog callback, ends the walk without error.
var ErrStopWalk = errors.New("stop walking")

// CommitInfo reads one commit.
func (r *Repo) CommitInfo(h plumbing.Hash) (CommitInfo, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, err := r.repo.CommitObject(h)
	if err != nil {
		return CommitInfo{}, fmt.Errorf("reading commit %s: %w", h, err)
	}
	return commitInfo(c), nil
}

func commitInfo(c *object.Commit) CommitInfo {
	subject, _, _ := strings.Cut(c.Message, "\n")
	return CommitInfo{Hash: c.Hash, Parents: append([]plumbing.Hash(nil), c.ParentHashes...),
		Author:    Person{c.Author.Name, c.Author.Email, c.Author.When},
		Committer: Person{c.Committer.Name, c.Committer.Email, c.Committer.When},
		Subject:   subject, Message: c.Message, Trailers: ParseTrailers(c.Message), Signed: c.PGPSignature != ""}
}

// FirstParentLog calls fn for from and each of its first parents, newest first —
// the history of a branch as its merges made it, without the commits of merged
// pull request branches. fn returns ErrStopWalk to stop early.
func (r *Repo) FirstParentLog(ctx context.Context, from plumbing.Hash, fn func(CommitInfo) error) error {
	h := from
	for !h.IsZero() {
		if err := ctx.Err(); err != nil {
			return err
		}
		r.mu.Lock()
		c, err := r.repo.CommitObject(h)
		r.mu.Unlock()
		if err != nil {
			return fmt.Errorf("reading commit %s: %w", h, err)
		}
		if err := fn(commitInfo(c)); err != nil {
			if errors.Is(err, ErrStopWalk) {
				return nil
			}
			return err
		}
		h = plumbing.ZeroHash
		if len(c.ParentHashes) > 0 {
			h = c.ParentHashes[0]
		}
	}
	return nil
}

// FileOrigin tells, for a file at a branch's tip, which first-parent commits
// brought it there. For a plan merged through a pull request both are the merge
// (or squash) commit on the watched branch, never a commit of the PR branch.
type FileOrigin struct {
	// Added is the commit since which the file has been there without a break.
	Added   plumbing.Hash
	AddedAt time.Time
	// LastChanged is the newest commit that changed the file (Added, when none since).
	LastChanged   plumbing.Hash
	LastChangedAt time.Time
	// Depth counts the first-parent steps from the tip back to Added: files added
	// earlier have a larger Depth. Plans run in that order.
	Depth int
}

type historyCache struct {
	tip   plumbing.Hash
	files map[string]FileOrigin
}

// FileHistory finds the FileOrigin of every file directly in dir at tip by walking
// first-parent history, skipping commits that did not touch dir. The answer is
// kept: the next call for a later tip walks only the new commits.
func (r *Repo) FileHistory(ctx context.Context, tip plumbing.Hash, dir string) (map[string]FileOrigin, error) {
	dir = strings.Trim(path.Clean("/"+dir), "/")
	r.mu.Lock()
	defer r.mu.Unlock()
	res, err := r.fileHistoryLocked(ctx, tip, dir)
	if err != nil {
		return nil, err
	}
	out := make(map[string]FileOrigin, len(res))
	for k, v := range res {
		out[k] = v
	}
	return out, nil
}

// LastChanged is FileHistory for one file: the commits on tip's first-parent
// history that added it and last changed it. A file missing at tip matches
// fs.ErrNotExist.
func (r *Repo) LastChanged(ctx context.Context, tip plumbing.Hash, file string) (FileOrigin, error) {
	files, err := r.FileHistory(ctx, tip, path.Dir(file))
	if err != nil {
		return FileOrigin{}, err
	}
	o, ok := files[path.Base(file)]
	if !ok {
		return FileOrigin{}, fmt.Errorf("%s at %s: %w", file, shortHash(tip), fs.ErrNotExist)
	}
	return o, nil
}

func (r *Repo) fileHistoryLocked(ctx context.Context, tip plumbing.Hash, dir string) (map[string]FileOrigin, error) {
	cached := r.history[dir]
	if cached != nil && cached.tip == tip {
		return cached.files, nil
	}
	if tip.IsZero() {
		return map[string]FileOrigin{}, nil
	}
	cur, err := r.repo.CommitObject(tip)
	if err != nil {
		return nil, fmt.Errorf("reading commit %s: %w", tip, err)
	}
	curDir, curFiles, err := r.dirAt(cur, dir)
	if err != nil {
		return nil, err
	}
	pending := curFiles // file → its blob in the newer commit of the pair looked at
	result := map[string]FileOrigin{}
	for depth := 0; len(pending) > 0; depth++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if cached != nil && cur.Hash == cached.tip {
			// Everything older is known: take it from the last walk.
			for name := range pending {
				old := cached.files[name]
				o := result[name]
				if o.LastChanged.IsZero() {
					o.LastChanged, o.LastChangedAt = old.LastChanged, old.LastChangedAt
				}
				o.Added, o.AddedAt, o.Depth = old.Added, old.AddedAt, old.Depth+depth
				result[name] = o
			}
			break
		}
		var parent *object.Commit
		parentDir := plumbing.ZeroHash
		parentFiles := map[string]plumbing.Hash{}
		if len(cur.ParentHashes) > 0 {
			if parent, err = r.repo.CommitObject(cur.ParentHashes[0]); err != nil {
				return nil, fmt.Errorf("reading commit %s: %w", cur.ParentHashes[0], err)
			}
			if parentDir, err = r.dirHash(parent, dir); err != nil {
				return nil, err
			}
			if parentDir == curDir {
				cur = parent
				continue // dir untouched by this commit
			}
			if _, parentFiles, err = r.dirAt(parent, dir); err != nil {
				return nil, err
			}
		}
		for name, blob := range pending {
			pb, ok := parentFiles[name]
			if ok && pb == blob {
				continue
			}
			o := result[name]
			if o.LastChanged.IsZero() {
				o.LastChanged, o.LastChangedAt = cur.Hash, cur.Committer.When
			}
			if !ok {
				o.Added, o.AddedAt, o.Depth = cur.Hash, cur.Committer.When, depth
				delete(pending, name)
			} else {
				pending[name] = pb
			}
			result[name] = o
		}
		if parent == nil {
			break
		}
		cur, curDir = parent, parentDir
	}
	r.history[dir] = &historyCache{tip: tip, files: result}
	return result, nil
}

// dirHash is the hash of dir's tree in a commit (zero when missing).
func (r *Repo) dirHash(c *object.Commit, dir string) (plumbing.Hash, error) {
	if dir == "" {
		return c.TreeHash, nil
	}
	t, err := r.repo.TreeObject(c.TreeHash)
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("reading the tree of %s: %w", c.Hash, err)
	}
	e, err := t.FindEntry(dir)
	if err != nil || e.Mode != filemode.Dir {
		return plumbing.ZeroHash, nil
	}
	return e.Hash, nil
}

// dirAt lists the files directly in dir at a commit, with their blobs.
func (r *Repo) dirAt(c *object.Commit, dir string) (plumbing.Hash, map[string]plumbing.Hash, error) {
	h, err := r.dirHash(c, dir)
	if err != nil || h.IsZero() {
		return h, map[string]plumbing.Hash{}, err
	}
	t, err := r.repo.TreeObject(h)
	if err != nil {
		return h, nil, fmt.Errorf("reading %s at %s: %w", dir, c.Hash, err)
	}
	files := make(map[string]plumbing.Hash, len(t.Entries))
	for _, e := range t.Entries {
		if e.Mode != filemode.Dir && e.Mode != filemode.Submodule {
			files[e.Name] = e.Hash
		}
	}
	return h, files, nil
}

// ChangedPaths lists the files that differ between two commits' trees (either may
// be zero), skipping subtrees that are equal.
func (r *Repo) ChangedPaths(from, to plumbing.Hash) ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	a, err := r.treeLocked(from)
	if err != nil {
		return nil, err
	}
	b, err := r.treeLocked(to)
	if err != nil {
		return nil, err
	}
	var out []string
	err = r.diffTrees("", a, b, &out)
	return out, err
}

func (r *Repo) diffTrees(prefix string, a, b *object.Tree, out *[]string) error {
	if a.Hash == b.Hash && !a.Hash.IsZero() {
		return nil
	}
	ae, be := map[string]object.TreeEntry{}, map[string]object.TreeEntry{}
	for _, e := range a.Entries {
		ae[e.Name] = e
	}
	for _, e := range b.Entries {
		be[e.Name] = e
	}
	sub := func(e object.TreeEntry, ok bool) (*object.Tree, error) {
		if !ok || e.Mode != filemode.Dir {
			return &object.Tree{}, nil
		}
		return r.repo.TreeObject(e.Hash)
	}
	names := map[string]bool{}
	for n := range ae {
		names[n] = true
	}
	for n := range be {
		names[n] = true
	}
	for n := range names {
		x, xok := ae[n]
		y, yok := be[n]
		if xok && yok && x.Hash == y.Hash && x.Mode == y.Mode {
			continue
		}
		p := path.Join(prefix, n)
		xDir, yDir := xok && x.Mode == filemode.Dir, yok && y.Mode == filemode.Dir
		if (xok && !xDir) || (yok && !yDir) {
			*out = append(*out, p)
		}
		if xDir || yDir {
			st, err := sub(x, xDir)
			if err != nil {
				return err
			}
			tt, err := sub(y, yDir)
			if err != nil {
				return err
			}
			if err := r.diffTrees(p, st, tt, out); err != nil {
				return err
			}
		}
	}
	return nil
}
