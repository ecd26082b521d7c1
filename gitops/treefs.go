package gitops

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// TreeFS is the tree of one commit as a read-only fs.FS: policies.LoadPolicies and
// planner.HistoryFromTree read it as they read a directory. Nothing is checked out.
// The zero commit (a branch that does not exist yet) reads as an empty tree.
func (r *Repo) TreeFS(commit plumbing.Hash) (fs.FS, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, err := r.treeLocked(commit)
	if err != nil {
		return nil, err
	}
	c, err := r.repo.CommitObject(commit)
	when := time.Time{}
	if err == nil {
		when = c.Committer.When
	}
	return &treeFS{r: r, root: t, modTime: when}, nil
}

// ReadFile reads one file of a commit's tree. A missing file is an error that
// matches fs.ErrNotExist.
func (r *Repo) ReadFile(commit plumbing.Hash, name string) ([]byte, error) {
	fsys, err := r.TreeFS(commit)
	if err != nil {
		return nil, err
	}
	return fs.ReadFile(fsys, name)
}

func (r *Repo) treeLocked(commit plumbing.Hash) (*object.Tree, error) {
	if commit.IsZero() {
		return &object.Tree{}, nil
	}
	c, err := r.repo.CommitObject(commit)
	if err != nil {
		return nil, fmt.Errorf("reading commit %s: %w", commit, err)
	}
	t, err := c.Tree()
	if err != nil {
		return nil, fmt.Errorf("reading the tree of commit %s: %w", commit, err)
	}
	return t, nil
}

type treeFS struct {
	r       *Repo
	root    *object.Tree
	modTime time.Time
}

var (
	_ fs.ReadFileFS = (*treeFS)(nil)
	_ fs.ReadDirFS  = (*treeFS)(nil)
	_ fs.StatFS     = (*treeFS)(nil)
)

// lookup finds name's entry; the root is a tree without an entry.
func (t *treeFS) lookup(op, name string) (*object.TreeEntry, *object.Tree, error) {
	if !fs.ValidPath(name) {
		return nil, nil, &fs.PathError{Op: op, Path: name, Err: fs.ErrInvalid}
	}
	if name == "." {
		return nil, t.root, nil
	}
	if t.root.Hash.IsZero() && len(t.root.Entries) == 0 {
		return nil, nil, &fs.PathError{Op: op, Path: name, Err: fs.ErrNotExist}
	}
	e, err := t.root.FindEntry(name)
	if err != nil {
		return nil, nil, &fs.PathError{Op: op, Path: name, Err: fs.ErrNotExist}
	}
	if e.Mode == filemode.Dir {
		sub, err := t.r.repo.TreeObject(e.Hash)
		if err != nil {
			return nil, nil, &fs.PathError{Op: op, Path: name, Err: err}
		}
		return e, sub, nil
	}
	return e, nil, nil
}

func (t *treeFS) Open(name string) (fs.File, error) {
	t.r.mu.Lock()
	defer t.r.mu.Unlock()
	e, sub, err := t.lookup("open", name)
	if err != nil {
		return nil, err
	}
	if sub != nil {
		entries, err := t.dirEntries(sub)
		if err != nil {
			return nil, &fs.PathError{Op: "open", Path: name, Err: err}
		}
		return &treeDir{info: t.info(path.Base(name), e, 0), entries: entries}, nil
	}
	data, err := t.blob(e.Hash)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	return &treeFile{info: t.info(path.Base(name), e, int64(len(data))), Reader: bytes.NewReader(data)}, nil
}

func (t *treeFS) ReadFile(name string) ([]byte, error) {
	t.r.mu.Lock()
	defer t.r.mu.Unlock()
	e, sub, err := t.lookup("read", name)
	if err != nil {
		return nil, err
	}
	if sub != nil {
		return nil, &fs.PathError{Op: "read", Path: name, Err: errors.New("is a directory")}
	}
	return t.blob(e.Hash)
}

func (t *treeFS) ReadDir(name string) ([]fs.DirEntry, error) {
	t.r.mu.Lock()
	defer t.r.mu.Unlock()
	_, sub, err := t.lookup("readdir", name)
	if err != nil {
		return nil, err
	}
	if sub == nil {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: errors.New("not a directory")}
	}
	return t.dirEntries(sub)
}

func (t *treeFS) Stat(name string) (fs.FileInfo, error) {
	t.r.mu.Lock()
	defer t.r.mu.Unlock()
	e, sub, err := t.lookup("stat", name)
	if err != nil {
		return nil, err
	}
	if sub != nil || e == nil {
		return t.info(path.Base(name), e, 0), nil
	}
	size, err := t.r.storer.EncodedObjectSize(e.Hash)
	if err != nil {
		return nil, &fs.PathError{Op: "stat", Path: name, Err: err}
	}
	return t.info(path.Base(name), e, size), nil
}

func (t *treeFS) blob(h plumbing.Hash) ([]byte, error) {
	b, err := t.r.repo.BlobObject(h)
	if err != nil {
		return nil, err
	}
	rd, err := b.Reader()
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	return io.ReadAll(rd)
}

func (t *treeFS) dirEntries(tree *object.Tree) ([]fs.DirEntry, error) {
	out := make([]fs.DirEntry, 0, len(tree.Entries))
	for i := range tree.Entries {
		e := &tree.Entries[i]
		var size int64
		if e.Mode != filemode.Dir && e.Mode != filemode.Submodule {
			s, err := t.r.storer.EncodedObjectSize(e.Hash)
			if err != nil {
				return nil, err
			}
			size = s
		}
		out = append(out, fs.FileInfoToDirEntry(t.info(e.Name, e, size)))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name() < out[j].Name() })
	return out, nil
}

func (t *treeFS) info(name string, e *object.TreeEntry, size int64) fs.FileInfo {
	mode := fs.ModeDir | 0o555
	if e != nil && e.Mode != filemode.Dir {
		mode = 0o444
		if e.Mode == filemode.Executable {
			mode = 0o555
		}
		if e.Mode == filemode.Symlink {
			mode = fs.ModeSymlink | 0o444
		}
	}
	return fileInfo{name: name, size: size, mode: mode, mod: t.modTime}
}

type fileInfo struct {
	name string
	size int64
	mode fs.FileMode
	mod  time.Time
}

func (i fileInfo) Name() string       { return i.name }
func (i fileInfo) Size() int64        { return i.size }
func (i fileInfo) Mode() fs.FileMode  { return i.mode }
func (i fileInfo) ModTime() time.Time { return i.mod }
func (i fileInfo) IsDir() bool        { return i.mode.IsDir() }
func (i fileInfo) Sys() any           { return nil }

type treeFile struct {
	info fs.FileInfo
	*bytes.Reader
}

func (f *treeFile) Stat() (fs.FileInfo, error) { return f.info, nil }
func (f *treeFile) Close() error               { return nil }

type treeDir struct {
	info    fs.FileInfo
	entries []fs.DirEntry
	offset  int
}

func (d *treeDir) Stat() (fs.FileInfo, error) { return d.info, nil }
func (d *treeDir) Close() error               { return nil }
func (d *treeDir) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: d.info.Name(), Err: errors.New("is a directory")}
}

func (d *treeDir) ReadDir(n int) ([]fs.DirEntry, error) {
	rest := d.entries[d.offset:]
	if n <= 0 {
		d.offset = len(d.entries)
		return rest, nil
	}
	if len(rest) == 0 {
		return nil, io.EOF
	}
	if n > len(rest) {
		n = len(rest)
	}
	d.offset += n
	return rest[:n], nil
}

// ListDir maps each file directly in dir at commit to its blob hash (nothing when
// dir does not exist). With ReadBlob, callers cache what they decode by content.
func (r *Repo) ListDir(commit plumbing.Hash, dir string) (map[string]plumbing.Hash, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if commit.IsZero() {
		return map[string]plumbing.Hash{}, nil
	}
	c, err := r.repo.CommitObject(commit)
	if err != nil {
		return nil, fmt.Errorf("reading commit %s: %w", commit, err)
	}
	_, files, err := r.dirAt(c, strings.Trim(path.Clean("/"+dir), "/"))
	return files, err
}

// ReadBlob reads a blob by hash.
func (r *Repo) ReadBlob(h plumbing.Hash) ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := treeFS{r: r}
	data, err := t.blob(h)
	if err != nil {
		return nil, fmt.Errorf("reading blob %s: %w", h, err)
	}
	return data, nil
}
