package gitops

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"sort"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp/capability"
	"github.com/go-git/go-git/v5/plumbing/transport/client"
)

// CommitRequest is one change to one branch.
type CommitRequest struct {
	Branch string
	// Files maps a path in the repository to its new content; a nil content deletes
	// the file.
	Files map[string][]byte
	// Message is the commit message without trailers.
	Message  string
	Trailers []Trailer
	// StartFrom is the branch a missing Branch starts from; empty starts it as a new
	// root commit (an orphan branch, as a status branch is).
	StartFrom string
	// Replace makes the commit's parent StartFrom's tip whatever Branch holds, and
	// the push replaces Branch — only if it still holds what was fetched (a lease),
	// so a concurrent writer is never overwritten blindly. Proposal branches are
	// written this way: one commit adding one file on top of the watched branch.
	Replace bool
	// NoRetry returns ErrNonFastForward at once instead of fetching and
	// re-applying: for callers that must look again before they write.
	NoRetry bool
}

// CommitResult says what CommitFiles did.
type CommitResult struct {
	// Commit is the branch's tip afterwards.
	Commit plumbing.Hash
	// Changed is false when the branch already held these files: nothing was pushed.
	Changed bool
	// Attempts counts the pushes tried (more than 1 after non-fast-forwards).
	Attempts int
}

// CommitFiles commits files to branch as the bot and pushes. When someone else
// pushed first it fetches, re-applies the change on the new tip and pushes again,
// with backoff, at most Options.Attempts times; after that the error matches
// ErrNonFastForward. A permanent refusal (protected branch, pre-receive hook)
// matches ErrPushRefused and is not retried.
func (r *Repo) CommitFiles(ctx context.Context, branch string, files map[string][]byte, message string, trailers []Trailer) (CommitResult, error) {
	return r.Commit(ctx, CommitRequest{Branch: branch, Files: files, Message: message, Trailers: trailers})
}

// Commit is CommitFiles with every option.
func (r *Repo) Commit(ctx context.Context, req CommitRequest) (CommitResult, error) {
	if req.Branch == "" {
		return CommitResult{}, errors.New("commit: no branch")
	}
	if len(req.Files) == 0 {
		return CommitResult{}, errors.New("commit: no files")
	}
	for p := range req.Files {
		if !fs.ValidPath(p) || p == "." {
			return CommitResult{}, fmt.Errorf("commit: invalid path %q", p)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	wait := r.opts.Backoff
	for attempt := 1; ; attempt++ {
		res, err := r.commitOnce(ctx, req)
		res.Attempts = attempt
		if err == nil || !errors.Is(err, ErrNonFastForward) {
			return res, err
		}
		if req.NoRetry {
			return res, fmt.Errorf("committing to %s: %w", req.Branch, err)
		}
		if attempt >= r.opts.Attempts {
			return res, fmt.Errorf("committing to %s: gave up after %d attempts: %w", req.Branch, attempt, err)
		}
		// Someone else pushed first: wait a little (jittered, so two racing
		// writers do not collide again), fetch their commits and re-apply ours.
		jittered := wait/2 + rand.N(wait/2+1)
		r.log.Info("branch moved while pushing, fetching and re-applying", "branch", req.Branch, "attempt", attempt, "wait", jittered)
		if err := r.sleep(ctx, jittered); err != nil {
			return res, fmt.Errorf("committing to %s: %w", req.Branch, err)
		}
		wait = min(2*wait, r.opts.MaxBackoff)
		if err := r.fetchLocked(ctx); err != nil {
			return res, fmt.Errorf("committing to %s: %w", req.Branch, err)
		}
	}
}

func (r *Repo) commitOnce(ctx context.Context, req CommitRequest) (CommitResult, error) {
	old, err := r.headLocked(req.Branch)
	exists := err == nil
	if err != nil && !errors.Is(err, ErrBranchNotFound) {
		return CommitResult{}, err
	}
	parent := old
	if req.Replace || !exists {
		parent = plumbing.ZeroHash
		if req.StartFrom != "" {
			if parent, err = r.headLocked(req.StartFrom); err != nil {
				return CommitResult{}, fmt.Errorf("starting %s: %w", req.Branch, err)
			}
		}
	}
	base, err := r.treeLocked(parent)
	if err != nil {
		return CommitResult{}, err
	}
	var created []plumbing.Hash
	treeHash, err := r.writeTree(base, splitFiles(req.Files), &created)
	if err != nil {
		return CommitResult{}, fmt.Errorf("writing the tree: %w", err)
	}
	if exists && r.alreadyHolds(old, parent, treeHash, req.Replace) {
		return CommitResult{Commit: old}, nil
	}
	now := r.clock.Now()
	sig := object.Signature{Name: r.opts.Author.Name, Email: r.opts.Author.Email, When: now.Truncate(time.Second)}
	c := &object.Commit{Author: sig, Committer: sig, Message: FormatMessage(req.Message, req.Trailers), TreeHash: treeHash}
	if !parent.IsZero() {
		c.ParentHashes = []plumbing.Hash{parent}
	}
	if r.opts.Signer != nil {
		unsigned := &plumbing.MemoryObject{}
		if err := c.EncodeWithoutSignature(unsigned); err != nil {
			return CommitResult{}, err
		}
		payload, err := readObject(unsigned)
		if err != nil {
			return CommitResult{}, err
		}
		if c.PGPSignature, err = r.opts.Signer.Sign(payload); err != nil {
			return CommitResult{}, fmt.Errorf("signing the commit: %w", err)
		}
	}
	obj := r.storer.NewEncodedObject()
	if err := c.Encode(obj); err != nil {
		return CommitResult{}, err
	}
	h, err := r.storer.SetEncodedObject(obj)
	if err != nil {
		return CommitResult{}, fmt.Errorf("storing the commit: %w", err)
	}
	created = append(created, h)
	if err := r.pushLocked(ctx, req.Branch, old, h, created); err != nil {
		return CommitResult{Commit: old}, err
	}
	return CommitResult{Commit: h, Changed: true}, nil
}

// alreadyHolds tells whether the branch's tip old already is the commit we would
// write: same tree, and for a replace the same parent.
func (r *Repo) alreadyHolds(old, parent, tree plumbing.Hash, replace bool) bool {
	c, err := r.repo.CommitObject(old)
	if err != nil || c.TreeHash != tree {
		return false
	}
	if !replace {
		return true
	}
	return len(c.ParentHashes) == 1 && c.ParentHashes[0] == parent
}

// DeleteBranch deletes a branch on the remote, only if it still points where it
// did at the last fetch. A branch that is already gone is not an error.
func (r *Repo) DeleteBranch(ctx context.Context, branch string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for attempt := 1; ; attempt++ {
		old, err := r.headLocked(branch)
		if errors.Is(err, ErrBranchNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		err = r.pushLocked(ctx, branch, old, plumbing.ZeroHash, nil)
		if err == nil || !errors.Is(err, ErrNonFastForward) || attempt >= r.opts.Attempts {
			return err
		}
		if err := r.fetchLocked(ctx); err != nil {
			return fmt.Errorf("deleting %s: %w", branch, err)
		}
	}
}

// pushLocked moves branch on the remote from old to new, sending exactly the
// objects this process created (the parent is on the remote already). go-git's own
// Push walks the whole tree of the new commit to decide what to send, which grows
// with the repository; this stays proportional to the change.
func (r *Repo) pushLocked(ctx context.Context, branch string, old, new plumbing.Hash, objs []plumbing.Hash) error {
	var pack []byte
	if !new.IsZero() {
		var buf bytes.Buffer
		if _, err := packfile.NewEncoder(&buf, r.storer, false).Encode(objs, 0); err != nil {
			return fmt.Errorf("packing the commit: %w", err)
		}
		pack = buf.Bytes()
	}
	ref := plumbing.NewBranchReferenceName(branch)
	err := r.retry(ctx, "pushing "+branch+" to "+r.display, func(ctx context.Context) error {
		auth, err := r.auth(ctx)
		if err != nil {
			return err
		}
		tr, err := client.NewClient(r.endpoint)
		if err != nil {
			return err
		}
		sess, err := tr.NewReceivePackSession(r.endpoint, auth)
		if err != nil {
			return err
		}
		defer sess.Close()
		adv, err := sess.AdvertisedReferencesContext(ctx)
		if err != nil {
			return err
		}
		refs, err := adv.AllReferences()
		if err != nil {
			return err
		}
		current := plumbing.ZeroHash
		if cur, err := refs.Reference(ref); err == nil {
			current = cur.Hash()
		}
		if current != old {
			return &PushError{Ref: ref.String(), kind: ErrNonFastForward,
				Reason: fmt.Sprintf("the remote has %s, this change was made on %s", shortHash(current), shortHash(old))}
		}
		req := packp.NewReferenceUpdateRequestFromCapabilities(adv.Capabilities)
		var remoteSaid bytes.Buffer
		if adv.Capabilities.Supports(capability.Sideband64k) {
			req.Capabilities.Set(capability.Sideband64k)
			req.Progress = &remoteSaid
		}
		req.Commands = []*packp.Command{{Name: ref, Old: old, New: new}}
		if pack != nil {
			req.Packfile = io.NopCloser(bytes.NewReader(pack))
		}
		report, err := sess.ReceivePack(ctx, req)
		if report != nil {
			if report.UnpackStatus != "ok" && report.UnpackStatus != "" {
				return &PushError{Ref: ref.String(), Reason: "unpack: " + report.UnpackStatus, Remote: remoteSaid.String(), kind: ErrPushRefused}
			}
			for _, cs := range report.CommandStatuses {
				if cs.Status != "ok" {
					return &PushError{Ref: cs.ReferenceName.String(), Reason: cs.Status, Remote: remoteSaid.String(), kind: classifyPushStatus(cs.Status)}
				}
			}
		}
		if err != nil && remoteSaid.Len() > 0 {
			return fmt.Errorf("%w (remote said: %s)", err, oneLine(remoteSaid.String()))
		}
		return err
	})
	if err != nil {
		return err
	}
	if new.IsZero() {
		return r.storer.RemoveReference(remoteRef(branch))
	}
	return r.storer.SetReference(plumbing.NewHashReference(remoteRef(branch), new))
}

// writeTree writes base with changes applied and returns its hash, appending every
// object it created to created.
func (r *Repo) writeTree(base *object.Tree, changes *dirChanges, created *[]plumbing.Hash) (plumbing.Hash, error) {
	entries := map[string]object.TreeEntry{}
	if base != nil {
		for _, e := range base.Entries {
			entries[e.Name] = e
		}
	}
	for name, content := range changes.files {
		if content == nil {
			if e, ok := entries[name]; ok && e.Mode != filemode.Dir {
				delete(entries, name)
			}
			continue
		}
		h, err := r.writeObject(plumbing.BlobObject, content)
		if err != nil {
			return plumbing.ZeroHash, err
		}
		if e, ok := entries[name]; ok && e.Mode == filemode.Dir {
			return plumbing.ZeroHash, fmt.Errorf("%s is a directory", name)
		}
		if e, ok := entries[name]; !ok || e.Hash != h {
			*created = append(*created, h)
		}
		entries[name] = object.TreeEntry{Name: name, Mode: filemode.Regular, Hash: h}
	}
	for name, sub := range changes.dirs {
		var subBase *object.Tree
		if e, ok := entries[name]; ok {
			if e.Mode != filemode.Dir {
				return plumbing.ZeroHash, fmt.Errorf("%s is a file, not a directory", name)
			}
			t, err := r.repo.TreeObject(e.Hash)
			if err != nil {
				return plumbing.ZeroHash, err
			}
			subBase = t
		}
		h, err := r.writeTree(subBase, sub, created)
		if err != nil {
			return plumbing.ZeroHash, err
		}
		if h.IsZero() {
			delete(entries, name)
		} else {
			entries[name] = object.TreeEntry{Name: name, Mode: filemode.Dir, Hash: h}
		}
	}
	if len(entries) == 0 {
		return plumbing.ZeroHash, nil // an empty directory does not exist in git
	}
	t := &object.Tree{Entries: make([]object.TreeEntry, 0, len(entries))}
	for _, e := range entries {
		t.Entries = append(t.Entries, e)
	}
	// Git orders tree entries by name, a directory's name compared as if it ended
	// in "/". Any other order makes a tree git fsck rejects.
	sort.Slice(t.Entries, func(i, j int) bool { return treeKey(t.Entries[i]) < treeKey(t.Entries[j]) })
	obj := r.storer.NewEncodedObject()
	if err := t.Encode(obj); err != nil {
		return plumbing.ZeroHash, err
	}
	if base != nil && obj.Hash() == base.Hash {
		return base.Hash, nil
	}
	h, err := r.storer.SetEncodedObject(obj)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	*created = append(*created, h)
	return h, nil
}

func treeKey(e object.TreeEntry) string {
	if e.Mode == filemode.Dir {
		return e.Name + "/"
	}
	return e.Name
}

func (r *Repo) writeObject(t plumbing.ObjectType, content []byte) (plumbing.Hash, error) {
	obj := r.storer.NewEncodedObject()
	obj.SetType(t)
	obj.SetSize(int64(len(content)))
	w, err := obj.Writer()
	if err != nil {
		return plumbing.ZeroHash, err
	}
	if _, err := w.Write(content); err != nil {
		return plumbing.ZeroHash, err
	}
	if err := w.Close(); err != nil {
		return plumbing.ZeroHash, err
	}
	return r.storer.SetEncodedObject(obj)
}

// dirChanges is a set of file changes split by directory.
type dirChanges struct {
	files map[string][]byte
	dirs  map[string]*dirChanges
}

func splitFiles(files map[string][]byte) *dirChanges {
	root := &dirChanges{files: map[string][]byte{}, dirs: map[string]*dirChanges{}}
	for p, content := range files {
		d := root
		parts := strings.Split(p, "/")
		for _, dir := range parts[:len(parts)-1] {
			next := d.dirs[dir]
			if next == nil {
				next = &dirChanges{files: map[string][]byte{}, dirs: map[string]*dirChanges{}}
				d.dirs[dir] = next
			}
			d = next
		}
		d.files[parts[len(parts)-1]] = content
	}
	return root
}

func readObject(o plumbing.EncodedObject) ([]byte, error) {
	rd, err := o.Reader()
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	return io.ReadAll(rd)
}

func shortHash(h plumbing.Hash) string {
	if h.IsZero() {
		return "nothing (no such branch)"
	}
	return h.String()[:12]
}
