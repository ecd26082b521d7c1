// Package githubtest is a GitHub REST API test server for the endpoints rebalancer
// uses, answering with the JSON shapes GitHub documents (in the style of
// go-github's own tests) and backed by a real git repository of a gittest.Server,
// so branches and merges are real. It answers like GitHub on conflicts: a second
// pull request for the same head gets 422 "A pull request already exists".
package githubtest

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/rebalancer-dev/rebalancer/gitops/gittest"
)

// Server is the fake API.
type Server struct {
	// APIURL is the REST base to give go-github (as for GitHub Enterprise).
	APIURL string
	// Token is the one token accepted (besides App installation tokens).
	Token       string
	Owner, Repo string

	git      *gittest.Server
	repoName string
	srv      *httptest.Server

	mu         sync.Mutex
	pulls      []*PullRequest
	calls      []Call
	failNext   int
	failStatus int
	appID      int64
	appKey     *rsa.PublicKey
	appTokens  map[string]bool
}

// PullRequest is the server's record of one pull request.
type PullRequest struct {
	Number   int
	Title    string
	Body     string
	Head     string
	Base     string
	State    string // open, closed
	Merged   bool
	Labels   []string
	Comments []string
}

// Call is one request the server answered.
type Call struct {
	Method, Path string
}

// Write tells whether a call changed something.
func (c Call) Write() bool { return c.Method != http.MethodGet }

// NewServer serves the API for owner/repo over the git server's repository name.
func NewServer(t testing.TB, git *gittest.Server, name, owner, repo string) *Server {
	t.Helper()
	tok := make([]byte, 16)
	if _, err := rand.Read(tok); err != nil {
		t.Fatal(err)
	}
	s := &Server{Token: "ghp_" + hex.EncodeToString(tok), Owner: owner, Repo: repo, git: git, repoName: name, appTokens: map[string]bool{}}
	mux := http.NewServeMux()
	prefix := "/api/v3/repos/" + owner + "/" + repo
	mux.HandleFunc("GET "+prefix+"/pulls", s.listPulls)
	mux.HandleFunc("POST "+prefix+"/pulls", s.createPull)
	mux.HandleFunc("GET "+prefix+"/pulls/{n}", s.getPull)
	mux.HandleFunc("PATCH "+prefix+"/pulls/{n}", s.editPull)
	mux.HandleFunc("GET "+prefix+"/pulls/{n}/merge", s.isMerged)
	mux.HandleFunc("POST "+prefix+"/issues/{n}/comments", s.comment)
	mux.HandleFunc("POST "+prefix+"/issues/{n}/labels", s.addLabels)
	mux.HandleFunc("POST /api/v3/app/installations/{id}/access_tokens", s.installationToken)
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		if s.failNext > 0 {
			s.failNext--
			status := s.failStatus
			s.mu.Unlock()
			writeJSON(w, status, map[string]any{"message": "Server Error"})
			return
		}
		s.calls = append(s.calls, Call{r.Method, r.URL.Path})
		s.mu.Unlock()
		if !strings.Contains(r.URL.Path, "/app/installations/") && !s.authorized(r) {
			writeJSON(w, http.StatusUnauthorized, map[string]any{"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"})
			return
		}
		mux.ServeHTTP(w, r)
	}))
	s.APIURL = s.srv.URL + "/api/v3/"
	t.Cleanup(s.srv.Close)
	return s
}

// SetApp accepts JWTs of an App signed with key, minting installation tokens.
func (s *Server) SetApp(appID int64, key *rsa.PublicKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.appID, s.appKey = appID, key
}

// FailNext makes the next n requests fail with status (a 5xx for outages).
func (s *Server) FailNext(n, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failNext, s.failStatus = n, status
}

// Calls returns the requests answered so far.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Call(nil), s.calls...)
}

// Writes counts the calls that changed something.
func (s *Server) Writes() int {
	n := 0
	for _, c := range s.Calls() {
		if c.Write() && !strings.Contains(c.Path, "/app/installations/") {
			n++
		}
	}
	return n
}

// Pulls returns a copy of every pull request.
func (s *Server) Pulls() []PullRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]PullRequest, len(s.pulls))
	for i, p := range s.pulls {
		out[i] = *p
		out[i].Labels = append([]string(nil), p.Labels...)
		out[i].Comments = append([]string(nil), p.Comments...)
	}
	return out
}

// Open returns the open pull requests.
func (s *Server) Open() []PullRequest {
	var out []PullRequest
	for _, p := range s.Pulls() {
		if p.State == "open" {
			out = append(out, p)
		}
	}
	return out
}

// Merge merges pull request n as a person pressing the button would: method is
// "merge" (a merge commit), "squash" or "rebase"; the head branch is deleted.
func (s *Server) Merge(t testing.TB, n int, method string) {
	t.Helper()
	s.mu.Lock()
	pr := s.find(n)
	s.mu.Unlock()
	if pr == nil || pr.State != "open" {
		t.Fatalf("pull request %d is not open", n)
	}
	w := s.git.Clone(t, s.repoName, pr.Base)
	w.Git("fetch", "-q", "origin", pr.Head)
	switch method {
	case "merge":
		w.Git("merge", "-q", "--no-ff", "-m", fmt.Sprintf("Merge pull request #%d from %s/%s", n, s.Owner, pr.Head), "FETCH_HEAD")
	case "squash":
		w.Git("merge", "-q", "--squash", "FETCH_HEAD")
		w.Commit(fmt.Sprintf("%s (#%d)", pr.Title, n))
	case "rebase":
		w.Git("cherry-pick", "FETCH_HEAD")
	default:
		t.Fatalf("unknown merge method %q", method)
	}
	w.Push(pr.Base, ":"+pr.Head)
	s.mu.Lock()
	pr.State, pr.Merged = "closed", true
	s.mu.Unlock()
}

func (s *Server) authorized(r *http.Request) bool {
	h := r.Header.Get("Authorization")
	tok := strings.TrimPrefix(strings.TrimPrefix(h, "Bearer "), "token ")
	s.mu.Lock()
	defer s.mu.Unlock()
	return tok == s.Token || s.appTokens[tok]
}

func (s *Server) find(n int) *PullRequest {
	for _, p := range s.pulls {
		if p.Number == n {
			return p
		}
	}
	return nil
}

// json renders a pull request as GitHub's API does (the fields go-github reads).
func (s *Server) json(p *PullRequest) map[string]any {
	labels := []map[string]any{}
	for _, l := range p.Labels {
		labels = append(labels, map[string]any{"name": l})
	}
	headSHA := s.git.Rev(nil, s.repoName, p.Head)
	return map[string]any{
		"number": p.Number, "state": p.State, "title": p.Title, "body": p.Body, "merged": p.Merged,
		"html_url": fmt.Sprintf("https://github.example/%s/%s/pull/%d", s.Owner, s.Repo, p.Number),
		"head":     map[string]any{"ref": p.Head, "sha": headSHA, "label": s.Owner + ":" + p.Head},
		"base":     map[string]any{"ref": p.Base, "sha": s.git.Rev(nil, s.repoName, p.Base), "label": s.Owner + ":" + p.Base},
		"labels":   labels,
	}
}

func (s *Server) listPulls(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	state, head, base := q.Get("state"), q.Get("head"), q.Get("base")
	if state == "" {
		state = "open"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []map[string]any{}
	for _, p := range s.pulls {
		if (state != "all" && p.State != state) || (head != "" && head != s.Owner+":"+p.Head) || (base != "" && base != p.Base) {
			continue
		}
		out = append(out, s.json(p))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) createPull(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Title, Head, Base, Body string
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"message": "Problems parsing JSON"})
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.git.Rev(nil, s.repoName, req.Head) == "" {
		validation(w, map[string]any{"resource": "PullRequest", "field": "head", "code": "invalid"})
		return
	}
	for _, p := range s.pulls {
		if p.State == "open" && p.Head == req.Head && p.Base == req.Base {
			validation(w, map[string]any{"resource": "PullRequest", "code": "custom",
				"message": fmt.Sprintf("A pull request already exists for %s:%s.", s.Owner, req.Head)})
			return
		}
	}
	p := &PullRequest{Number: len(s.pulls) + 1, Title: req.Title, Head: req.Head, Base: req.Base, Body: req.Body, State: "open"}
	s.pulls = append(s.pulls, p)
	writeJSON(w, http.StatusCreated, s.json(p))
}

func validation(w http.ResponseWriter, e map[string]any) {
	writeJSON(w, http.StatusUnprocessableEntity, map[string]any{"message": "Validation Failed", "errors": []any{e},
		"documentation_url": "https://docs.github.com/rest/pulls/pulls#create-a-pull-request"})
}

func (s *Server) pull(w http.ResponseWriter, r *http.Request) *PullRequest {
	n, _ := strconv.Atoi(r.PathValue("n"))
	p := s.find(n)
	if p == nil {
		writeJSON(w, http.StatusNotFound, map[string]any{"message": "Not Found"})
	}
	return p
}

func (s *Server) getPull(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.pull(w, r); p != nil {
		writeJSON(w, http.StatusOK, s.json(p))
	}
}

func (s *Server) editPull(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Title, Body, State *string
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"message": "Problems parsing JSON"})
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.pull(w, r)
	if p == nil {
		return
	}
	if req.Title != nil {
		p.Title = *req.Title
	}
	if req.Body != nil {
		p.Body = *req.Body
	}
	if req.State != nil {
		if *req.State == "open" && p.State == "closed" && p.Merged {
			validation(w, map[string]any{"resource": "PullRequest", "code": "custom", "message": "merged pull requests cannot be reopened"})
			return
		}
		p.State = *req.State
	}
	writeJSON(w, http.StatusOK, s.json(p))
}

func (s *Server) isMerged(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.pull(w, r)
	if p == nil {
		return
	}
	if p.Merged {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	writeJSON(w, http.StatusNotFound, map[string]any{"message": "Not Found"})
}

func (s *Server) comment(w http.ResponseWriter, r *http.Request) {
	var req struct{ Body string }
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"message": "Problems parsing JSON"})
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.pull(w, r)
	if p == nil {
		return
	}
	p.Comments = append(p.Comments, req.Body)
	writeJSON(w, http.StatusCreated, map[string]any{"id": len(p.Comments), "body": req.Body})
}

func (s *Server) addLabels(w http.ResponseWriter, r *http.Request) {
	var labels []string
	if err := json.NewDecoder(r.Body).Decode(&labels); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"message": "Problems parsing JSON"})
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.pull(w, r)
	if p == nil {
		return
	}
	have := map[string]bool{}
	for _, l := range p.Labels {
		have[l] = true
	}
	for _, l := range labels {
		if !have[l] {
			p.Labels = append(p.Labels, l)
		}
	}
	sort.Strings(p.Labels)
	out := []map[string]any{}
	for _, l := range p.Labels {
		out = append(out, map[string]any{"name": l})
	}
	writeJSON(w, http.StatusOK, out)
}

var bearer = regexp.MustCompile(`^Bearer (.+)$`)

func (s *Server) installationToken(w http.ResponseWriter, r *http.Request) {
	m := bearer.FindStringSubmatch(r.Header.Get("Authorization"))
	s.mu.Lock()
	key, appID := s.appKey, s.appID
	s.mu.Unlock()
	if m == nil || key == nil {
		writeJSON(w, http.StatusUnauthorized, map[string]any{"message": "A JSON web token could not be decoded"})
		return
	}
	claims := &jwt.RegisteredClaims{}
	_, err := jwt.ParseWithClaims(m[1], claims, func(*jwt.Token) (any, error) { return key, nil }, jwt.WithValidMethods([]string{"RS256"}))
	if err != nil || claims.Issuer != strconv.FormatInt(appID, 10) {
		writeJSON(w, http.StatusUnauthorized, map[string]any{"message": "'Issuer' claim ('iss') must be an Integer"})
		return
	}
	tok := make([]byte, 16)
	_, _ = rand.Read(tok)
	t := "ghs_" + hex.EncodeToString(tok)
	s.mu.Lock()
	s.appTokens[t] = true
	s.mu.Unlock()
	writeJSON(w, http.StatusCreated, map[string]any{"token": t, "expires_at": time.Now().Add(time.Hour).UTC().Format(time.RFC3339)})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
