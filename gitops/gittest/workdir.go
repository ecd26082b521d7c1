package gittest

import (
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Workdir is a person's clone of a server repository, driven with the git command
// line.
type Workdir struct {
	t   testing.TB
	Dir string
}

// Clone clones a server repository (empty or not) into a temporary directory and
// checks out branch, creating it when the repository is empty.
func (s *Server) Clone(t testing.TB, name, branch string) *Workdir {
	t.Helper()
	dir := t.TempDir()
	u, err := url.Parse(s.RepoURL(name))
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(s.User, s.Password)
	Git(t, "", "clone", "-q", u.String(), dir)
	w := &Workdir{t: t, Dir: dir}
	if _, err := run("", dir, "checkout", "-q", branch); err != nil {
		w.Git("checkout", "-q", "-b", branch)
	}
	return w
}

// Git runs git in the working directory.
func (w *Workdir) Git(args ...string) string {
	w.t.Helper()
	return Git(w.t, w.Dir, args...)
}

// Write writes a file (creating directories).
func (w *Workdir) Write(path, content string) {
	w.t.Helper()
	p := filepath.Join(w.Dir, filepath.FromSlash(path))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		w.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		w.t.Fatal(err)
	}
}

// Remove deletes a file.
func (w *Workdir) Remove(path string) {
	w.t.Helper()
	w.Git("rm", "-q", path)
}

// Commit stages everything and commits; extra arguments go to git commit (for
// example "-S" with a signing configuration). It returns the new commit's hash.
func (w *Workdir) Commit(message string, extra ...string) string {
	w.t.Helper()
	w.Git("add", "-A")
	w.Git(append([]string{"commit", "-q", "--allow-empty", "-m", message}, extra...)...)
	return w.Head()
}

// Head is the checked-out commit.
func (w *Workdir) Head() string {
	w.t.Helper()
	return strings.TrimSpace(w.Git("rev-parse", "HEAD"))
}

// Push pushes refspecs to origin.
func (w *Workdir) Push(refspecs ...string) {
	w.t.Helper()
	w.Git(append([]string{"push", "-q", "origin"}, refspecs...)...)
}

// Pull fetches and fast-forwards the current branch.
func (w *Workdir) Pull() {
	w.t.Helper()
	w.Git("pull", "-q", "--ff-only")
}
