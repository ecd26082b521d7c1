// Package gittest runs a real git server on loopback for tests: git's own
// http-backend behind net/http/cgi with basic auth, so clones, fetches and pushes —
// and their refusals (non-fast-forward, pre-receive hooks) — are git's, not a fake's.
// It also drives the git command line to make commits as a person would.
package gittest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// Server is a git smart-HTTP server over a directory of bare repositories.
type Server struct {
	// URL is the server's base URL; a repository is at URL + "/" + name + ".git".
	URL string
	// Root holds the bare repositories.
	Root string
	// User and Password are the only credentials accepted.
	User, Password string

	srv *httptest.Server

	mu         sync.Mutex
	failNext   int
	failStatus int
	// Requests counts the requests that reached git (after auth and injected failures).
	Requests atomic.Int64
	// Pushes counts receive-pack POSTs that reached git.
	Pushes atomic.Int64
	// FetchBytes counts the bytes of upload-pack answers (what clones and fetches
	// downloaded).
	FetchBytes atomic.Int64
}

type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (w countingWriter) Write(p []byte) (int, error) {
	w.n.Add(int64(len(p)))
	return w.ResponseWriter.Write(p)
}

// NewServer starts a server; it stops when the test ends.
func NewServer(t testing.TB) *Server {
	t.Helper()
	root := t.TempDir()
	pw := make([]byte, 12)
	if _, err := rand.Read(pw); err != nil {
		t.Fatal(err)
	}
	s := &Server{Root: root, User: "rebalancer-bot", Password: hex.EncodeToString(pw)}
	backend := filepath.Join(ExecPath(t), "git-http-backend")
	h := &cgi.Handler{Path: backend, Env: []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1",
		"GIT_CONFIG_NOSYSTEM=1", "HOME=" + root}}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		if !ok || u != s.User || p != s.Password {
			w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
			http.Error(w, "authentication required", http.StatusUnauthorized)
			return
		}
		s.mu.Lock()
		if s.failNext > 0 {
			s.failNext--
			status := s.failStatus
			s.mu.Unlock()
			http.Error(w, "injected failure", status)
			return
		}
		s.mu.Unlock()
		s.Requests.Add(1)
		if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/git-receive-pack") {
			s.Pushes.Add(1)
		}
		if strings.HasSuffix(r.URL.Path, "/git-upload-pack") {
			w = countingWriter{w, &s.FetchBytes}
		}
		h.ServeHTTP(w, r)
	}))
	s.URL = s.srv.URL
	t.Cleanup(s.srv.Close)
	return s
}

// FailNext makes the next n requests (after auth) fail with an HTTP status.
func (s *Server) FailNext(n, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failNext, s.failStatus = n, status
}

// RepoURL is the clone URL of a repository, without credentials.
func (s *Server) RepoURL(name string) string { return s.URL + "/" + name + ".git" }

// RepoDir is a repository's bare directory on disk.
func (s *Server) RepoDir(name string) string { return filepath.Join(s.Root, name+".git") }

// InitBare creates an empty bare repository whose default branch is main, and
// returns its URL. Like an unprotected branch on a forge, any branch may be
// force-pushed; RefuseDirectPushes protects one.
func (s *Server) InitBare(t testing.TB, name string) string {
	t.Helper()
	dir := s.RepoDir(name)
	Git(t, "", "init", "--bare", "-q", "-b", "main", dir)
	Git(t, dir, "config", "http.receivepack", "true")
	return s.RepoURL(name)
}

// SetHook installs a hook script (pre-receive, update...) in a repository.
func (s *Server) SetHook(t testing.TB, name, hook, script string) {
	t.Helper()
	p := filepath.Join(s.RepoDir(name), "hooks", hook)
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
}

// RefuseDirectPushes installs a pre-receive hook that refuses every push to
// branch, as a protected branch on a forge does.
func (s *Server) RefuseDirectPushes(t testing.TB, name, branch string) {
	s.SetHook(t, name, "pre-receive", fmt.Sprintf(`#!/bin/sh
while read old new ref; do
  if [ "$ref" = "refs/heads/%s" ]; then
    echo "error: GH006: Protected branch update failed for refs/heads/%s: changes must be made through a pull request." >&2
    exit 1
  fi
done
exit 0
`, branch, branch))
}

// Rev resolves a revision in a server repository ("" when it does not exist); t
// may be nil.
func (s *Server) Rev(t testing.TB, name, rev string) string {
	if t != nil {
		t.Helper()
	}
	out, err := run("", s.RepoDir(name), "rev-parse", "--verify", "-q", rev+"^{commit}")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(out)
}

// Show prints a file at a revision of a server repository.
func (s *Server) Show(t testing.TB, name, rev, path string) (string, bool) {
	t.Helper()
	out, err := run("", s.RepoDir(name), "show", rev+":"+path)
	return out, err == nil
}

// GitIn runs git in a server repository.
func (s *Server) GitIn(t testing.TB, name string, args ...string) string {
	t.Helper()
	return Git(t, s.RepoDir(name), args...)
}

var execPath struct {
	once sync.Once
	dir  string
	err  error
}

// ExecPath is `git --exec-path`, where git-http-backend lives.
func ExecPath(t testing.TB) string {
	t.Helper()
	execPath.once.Do(func() {
		out, err := exec.Command("git", "--exec-path").Output()
		execPath.dir, execPath.err = strings.TrimSpace(string(out)), err
	})
	if execPath.err != nil {
		t.Fatalf("git --exec-path: %v (is git installed?)", execPath.err)
	}
	return execPath.dir
}

// Git runs the git command line in dir with a clean configuration and fails the
// test when it fails.
func Git(t testing.TB, dir string, args ...string) string {
	t.Helper()
	out, err := run("", dir, args...)
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// GitInput is Git with standard input.
func GitInput(t testing.TB, dir, stdin string, args ...string) string {
	t.Helper()
	out, err := run(stdin, dir, args...)
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func run(stdin, dir string, args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	home := os.TempDir()
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null", "HOME="+home,
		"GIT_AUTHOR_NAME=Pat Person", "GIT_AUTHOR_EMAIL=pat@example.com",
		"GIT_COMMITTER_NAME=Pat Person", "GIT_COMMITTER_EMAIL=pat@example.com", "GIT_TERMINAL_PROMPT=0",
		// git-http-backend behind CGI needs a Content-Length, not a chunked body.
		"GIT_CONFIG_COUNT=1", "GIT_CONFIG_KEY_0=http.postBuffer", "GIT_CONFIG_VALUE_0=104857600")
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// FastImport feeds a git fast-import stream to a server repository: thousands of
// commits in a second, for history-size tests and benchmarks.
func (s *Server) FastImport(t testing.TB, name, stream string) {
	t.Helper()
	GitInput(t, s.RepoDir(name), stream, "fast-import", "--quiet")
}
