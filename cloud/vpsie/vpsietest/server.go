// Package vpsietest is an in-process contract server for VPSie's API: the paths
// and shapes the vpsie package relies on, backed by an in-memory account (
// datacenters, plans, one or more managed Kubernetes clusters with node groups
// and nodes), with faults to inject — refused or expired tokens, 429 with
// Retry-After, 5xx bursts, HTTP 200 with "error": true, malformed JSON, slow
// answers, an add-node whose node never appears, and an answer lost after the
// work was done.
package vpsietest

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// Routes, as http.ServeMux patterns; faults are injected per route.
const (
	RouteAuth         = "POST /apps/v2/auth/from/api"
	RouteDatacenters  = "GET /apps/v2/datacenter"
	RouteCategories   = "GET /api/v2/plans/category"
	RouteResources    = "POST /apps/v2/resources"
	RouteVMs          = "GET /api/v2/vm"
	RouteVM           = "GET /api/v2/vm/{identifier}"
	RouteNodeGroups   = "GET /apps/v2/k8s/node/groups/byClusterId/{cluster}"
	RouteAddNodeGroup = "POST /apps/v2/k8s/cluster/add/group"
	RouteAddNode      = "POST /apps/v2/k8s/cluster/byId/{cluster}/add/slave/group/{group}"
	RouteDeleteNode   = "DELETE /apps/v2/k8s/cluster/byId/{cluster}/delete/slave"
	RouteCluster      = "GET /apps/v2/k8s/cluster/byId/{cluster}"
)

// Fault is one misbehaviour of one request.
type Fault struct {
	// Status answers with this HTTP status and {"error": true}.
	Status int
	// RetryAfter is sent as the Retry-After header (with Status).
	RetryAfter string
	// BodyError answers HTTP 200 with {"error": true, "message": BodyError}.
	BodyError string
	// Malformed answers HTTP 200 with a body that is not JSON.
	Malformed bool
	// Delay holds the answer this long (or until the client gives up).
	Delay time.Duration
	// LoseResponse does the work, then drops the connection without an answer.
	LoseResponse bool
	// NeverAppears (add-node only) answers success but no node is ever added.
	NeverAppears bool
}

// Datacenter is a datacenter of the account.
type Datacenter struct {
	Identifier string `json:"identifier"`
	DcName     string `json:"dc_name"`
	State      string `json:"state"`
	Country    string `json:"country"`
	IsActive   int    `json:"is_active"`
	IsPrivate  int    `json:"is_private"`
}

// Category is a plan category.
type Category struct {
	Identifier string `json:"identifier"`
	Name       string `json:"name"`
}

// Plan is a plan with its monthly price, sold in some datacenters.
type Plan struct {
	Identifier  string   `json:"identifier"`
	Nickname    string   `json:"nickname"`
	CPU         int      `json:"cpu"`
	RAM         int      `json:"ram"`
	SSD         int      `json:"ssd"`
	Traffic     int      `json:"traffic"`
	Price       float64  `json:"price"`
	Category    string   `json:"-"`
	Datacenters []string `json:"-"`
}

// VM is a virtual machine, here always a node of a cluster.
type VM struct {
	Identifier   string `json:"identifier"`
	Hostname     string `json:"hostname"`
	BoxsizeID    string `json:"boxsize_id"`
	DcIdentifier string `json:"dcIdentifier"`
	CPU          int    `json:"cpu"`
	RAM          int    `json:"ram"`
	SSD          int    `json:"ssd"`
	DefaultIP    string `json:"default_ip"`
	PrivateIP    string `json:"private_ip"`
	CreatedOn    string `json:"created_on"`
	Cluster      string `json:"-"`
	GroupID      int    `json:"-"`
}

// Group is a node group.
type Group struct {
	ID         int    `json:"id"`
	GroupName  string `json:"group_name"`
	BoxsizeID  string `json:"boxsize_id"`
	CPU        int    `json:"cpu"`
	RAM        int    `json:"ram"`
	SSD        int    `json:"ssd"`
	NodesCount int    `json:"nodes_count"`
}

type cluster struct {
	identifier, name, dc string
	groups               []*Group
}

// Server is the contract server. Its zero value is not usable: call New.
type Server struct {
	*httptest.Server

	// ClientID and ClientSecret are the credentials the auth call accepts.
	ClientID, ClientSecret string
	// TokenTTL is how long an issued token lives (on Clock).
	TokenTTL time.Duration
	// Clock dates tokens; the tests share it with the client.
	Clock clock.PassiveClock

	mu          sync.Mutex
	tokens      map[string]time.Time
	issued      []string
	staticToken map[string]bool
	datacenters []Datacenter
	categories  []Category
	plans       []Plan
	clusters    map[string]*cluster
	vms         map[string]*VM
	nextGroup   int
	nextVM      int
	faults      map[string][]Fault
	calls       map[string]int
	log         []string
	hooks       sync.WaitGroup
	onNodeAdded func(VM)
}

// New starts a server with no data; the test adds datacenters, plans and clusters.
func New() *Server {
	s := &Server{ClientID: "client-id", ClientSecret: "client-secret", TokenTTL: time.Hour, Clock: clock.RealClock{},
		tokens: map[string]time.Time{}, staticToken: map[string]bool{}, clusters: map[string]*cluster{}, vms: map[string]*VM{},
		nextGroup: 100, faults: map[string][]Fault{}, calls: map[string]int{}}
	mux := http.NewServeMux()
	handle := func(route string, h func(http.ResponseWriter, *http.Request) (any, int)) {
		mux.HandleFunc(route, func(w http.ResponseWriter, r *http.Request) { s.serve(route, w, r, h) })
	}
	handle(RouteAuth, s.auth)
	handle(RouteDatacenters, s.listDatacenters)
	handle(RouteCategories, s.listCategories)
	handle(RouteResources, s.resources)
	handle(RouteVMs, s.listVMs)
	handle(RouteVM, s.getVM)
	handle(RouteNodeGroups, s.listGroups)
	handle(RouteAddNodeGroup, s.addGroup)
	handle(RouteAddNode, s.addNode)
	handle(RouteDeleteNode, s.deleteNode)
	handle(RouteCluster, s.getCluster)
	s.Server = httptest.NewServer(mux)
	return s
}

// Close waits for the OnNodeAdded hooks and stops the server.
func (s *Server) Close() {
	s.hooks.Wait()
	s.Server.Close()
}

// OnNodeAdded sets a function called (on its own goroutine) after each node the
// API adds, as VPSie would boot the VM and it would join the cluster.
func (s *Server) OnNodeAdded(f func(VM)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onNodeAdded = f
}

// AddToken makes token valid forever (a token given directly).
func (s *Server) AddToken(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.staticToken[token] = true
}

// ExpireTokens invalidates every issued token (not the static ones): the next
// call with one gets 401.
func (s *Server) ExpireTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens = map[string]time.Time{}
}

// Issued lists every access and refresh token the server has handed out.
func (s *Server) Issued() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.issued...)
}

// AddDatacenter adds a datacenter.
func (s *Server) AddDatacenter(d Datacenter) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.datacenters = append(s.datacenters, d)
}

// AddCategory adds a plan category.
func (s *Server) AddCategory(c Category) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.categories = append(s.categories, c)
}

// AddPlan adds a plan.
func (s *Server) AddPlan(p Plan) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.plans = append(s.plans, p)
}

// SetPrice changes a plan's monthly price.
func (s *Server) SetPrice(identifier string, monthly float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.plans {
		if s.plans[i].Identifier == identifier {
			s.plans[i].Price = monthly
		}
	}
}

// AddCluster adds a managed Kubernetes cluster in datacenter dc.
func (s *Server) AddCluster(identifier, name, dc string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clusters[identifier] = &cluster{identifier: identifier, name: name, dc: dc}
}

// AddGroup adds a node group of plan's size to a cluster and returns its ID.
func (s *Server) AddGroup(clusterID, name, plan string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.newGroupLocked(s.clusters[clusterID], name, plan)
	return g.ID
}

// AddNode adds a node to a group directly (an existing node), without hooks.
func (s *Server) AddNode(clusterID string, group int) VM {
	s.mu.Lock()
	defer s.mu.Unlock()
	return *s.addNodeLocked(s.clusters[clusterID], s.groupLocked(s.clusters[clusterID], group))
}

// Inject queues faults for route: each request to it takes the next one.
func (s *Server) Inject(route string, faults ...Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults[route] = append(s.faults[route], faults...)
}

// Calls counts the requests to route (faulty ones included).
func (s *Server) Calls(route string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[route]
}

// Log is every request as "ROUTE -> status", in order.
func (s *Server) Log() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.log...)
}

// Nodes lists a cluster's nodes (their VMs), sorted by identifier.
func (s *Server) Nodes(clusterID string) []VM {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []VM
	for _, v := range s.vms {
		if v.Cluster == clusterID {
			out = append(out, *v)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Identifier < out[j].Identifier })
	return out
}

// Groups lists a cluster's node groups.
func (s *Server) Groups(clusterID string) []Group {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Group
	for _, g := range s.clusters[clusterID].groups {
		out = append(out, *g)
	}
	return out
}

type errorBody struct {
	Error   bool   `json:"error"`
	Code    int    `json:"code,omitempty"`
	Message string `json:"message"`
}

func (s *Server) serve(route string, w http.ResponseWriter, r *http.Request, h func(http.ResponseWriter, *http.Request) (any, int)) {
	status := http.StatusOK
	defer func() {
		s.mu.Lock()
		s.log = append(s.log, fmt.Sprintf("%s -> %d", route, status))
		s.mu.Unlock()
	}()
	// ORDER: authentication first, so an injected fault is never used up by a
	// request that was refused anyway.
	authorized := route == RouteAuth || s.authorized(r.Header.Get("Vpsie-Auth"))
	s.mu.Lock()
	s.calls[route]++
	var f Fault
	if q := s.faults[route]; len(q) > 0 && authorized {
		f, s.faults[route] = q[0], q[1:]
	}
	s.mu.Unlock()
	if f.Delay > 0 {
		select {
		case <-time.After(f.Delay):
		case <-r.Context().Done():
			status = 0
			return
		}
		// The token may have expired while the request waited.
		authorized = route == RouteAuth || s.authorized(r.Header.Get("Vpsie-Auth"))
	}
	if !authorized {
		status = http.StatusUnauthorized
		writeJSON(w, status, errorBody{Error: true, Code: status, Message: "Unauthorized: invalid or expired token"})
		return
	}
	switch {
	case f.Status != 0:
		status = f.Status
		if f.RetryAfter != "" {
			w.Header().Set("Retry-After", f.RetryAfter)
		}
		writeJSON(w, status, errorBody{Error: true, Code: status, Message: http.StatusText(status)})
		return
	case f.BodyError != "":
		writeJSON(w, status, errorBody{Error: true, Message: f.BodyError})
		return
	case f.Malformed:
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"error": false, "data": [{"identifier": `))
		return
	}
	if f.NeverAppears {
		writeJSON(w, status, map[string]any{"error": false, "data": true})
		return
	}
	body, code := h(w, r)
	status = code
	if f.LoseResponse {
		status = -1
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				_ = conn.Close()
				return
			}
		}
		// Cannot drop the connection: an unreadable answer is as good as none.
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"error": fal`))
		return
	}
	writeJSON(w, code, body)
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

func (s *Server) authorized(token string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.staticToken[token] {
		return true
	}
	exp, ok := s.tokens[token]
	return ok && s.Clock.Now().Before(exp)
}

func ok(data any) map[string]any { return map[string]any{"error": false, "data": data} }

func notFound(what string) (any, int) {
	return errorBody{Error: true, Code: http.StatusNotFound, Message: what + " not found"}, http.StatusNotFound
}

func badRequest(msg string) (any, int) {
	return errorBody{Error: true, Code: http.StatusBadRequest, Message: msg}, http.StatusBadRequest
}

func randomID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (s *Server) auth(_ http.ResponseWriter, r *http.Request) (any, int) {
	var req struct {
		ClientID     string `json:"clientId"`
		ClientSecret string `json:"clientSecret"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		return badRequest("invalid JSON")
	}
	if req.ClientID != s.ClientID || req.ClientSecret != s.ClientSecret {
		// VPSie reports bad credentials in the body.
		return errorBody{Error: true, Message: "Invalid client credentials"}, http.StatusOK
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.Clock.Now()
	access, refresh := "acc-"+randomID(), "ref-"+randomID()
	s.tokens[access] = now.Add(s.TokenTTL)
	s.issued = append(s.issued, access, refresh)
	return map[string]any{"error": false, "token": map[string]any{
		"access":  map[string]any{"token": access, "expires": now.Add(s.TokenTTL).UTC().Format(time.RFC3339)},
		"refresh": map[string]any{"token": refresh, "expires": now.Add(30 * 24 * time.Hour).UTC().Format(time.RFC3339)},
	}}, http.StatusOK
}

func page(r *http.Request, n int) (int, int) {
	off, _ := strconv.Atoi(r.URL.Query().Get("offset"))
	limit, err := strconv.Atoi(r.URL.Query().Get("limit"))
	if err != nil || limit <= 0 {
		limit = 25
	}
	off = min(max(off, 0), n)
	return off, min(off+limit, n)
}

func (s *Server) listDatacenters(_ http.ResponseWriter, r *http.Request) (any, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	from, to := page(r, len(s.datacenters))
	return map[string]any{"error": false, "data": s.datacenters[from:to], "total": len(s.datacenters)}, http.StatusOK
}

func (s *Server) listCategories(_ http.ResponseWriter, _ *http.Request) (any, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return ok(s.categories), http.StatusOK
}

func (s *Server) resources(_ http.ResponseWriter, r *http.Request) (any, int) {
	if err := r.ParseForm(); err != nil {
		return badRequest("invalid form")
	}
	dc, cat := r.PostForm.Get("dcIdentifier"), r.PostForm.Get("planCatIdentifier")
	if dc == "" || r.PostForm.Get("isCustom") != "0" {
		return badRequest("dcIdentifier and isCustom=0 are required")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []Plan{}
	for _, p := range s.plans {
		if p.Category == cat && contains(p.Datacenters, dc) {
			out = append(out, p)
		}
	}
	return ok(out), http.StatusOK
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

func (s *Server) listVMs(_ http.ResponseWriter, r *http.Request) (any, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var all []VM
	for _, v := range s.vms {
		all = append(all, *v)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Identifier < all[j].Identifier })
	from, to := page(r, len(all))
	return map[string]any{"error": false, "data": all[from:to], "total": len(all)}, http.StatusOK
}

func (s *Server) getVM(_ http.ResponseWriter, r *http.Request) (any, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, found := s.vms[r.PathValue("identifier")]
	if !found {
		return notFound("VM")
	}
	return ok(map[string]any{"vmData": v}), http.StatusOK
}

func (s *Server) listGroups(_ http.ResponseWriter, r *http.Request) (any, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.clusters[r.PathValue("cluster")]
	if c == nil {
		return notFound("cluster")
	}
	out := []Group{}
	for _, g := range c.groups {
		out = append(out, *g)
	}
	return ok(out), http.StatusOK
}

func (s *Server) planLocked(id string) *Plan {
	for i := range s.plans {
		if s.plans[i].Identifier == id {
			return &s.plans[i]
		}
	}
	return nil
}

func (s *Server) newGroupLocked(c *cluster, name, plan string) *Group {
	s.nextGroup++
	g := &Group{ID: s.nextGroup, GroupName: name, BoxsizeID: plan}
	if p := s.planLocked(plan); p != nil {
		g.CPU, g.RAM, g.SSD = p.CPU, p.RAM, p.SSD
	}
	c.groups = append(c.groups, g)
	return g
}

func (s *Server) groupLocked(c *cluster, id int) *Group {
	if c == nil {
		return nil
	}
	for _, g := range c.groups {
		if g.ID == id {
			return g
		}
	}
	return nil
}

func (s *Server) addGroup(_ http.ResponseWriter, r *http.Request) (any, int) {
	var req struct {
		ClusterIdentifier string          `json:"clusterIdentifier"`
		GroupName         string          `json:"groupName"`
		KubeSizeID        json.RawMessage `json:"KubeSizeID"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		return badRequest("invalid JSON")
	}
	var size string
	if json.Unmarshal(req.KubeSizeID, &size) != nil {
		size = string(req.KubeSizeID)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.clusters[req.ClusterIdentifier]
	if c == nil {
		return notFound("cluster")
	}
	if req.GroupName == "" || s.planLocked(size) == nil {
		return errorBody{Error: true, Message: "groupName and a valid KubeSizeID are required"}, http.StatusOK
	}
	for _, g := range c.groups {
		if g.GroupName == req.GroupName {
			return errorBody{Error: true, Message: "a group with this name exists"}, http.StatusOK
		}
	}
	g := s.newGroupLocked(c, req.GroupName, size)
	return ok(map[string]any{"id": g.ID}), http.StatusOK
}

func (s *Server) addNodeLocked(c *cluster, g *Group) *VM {
	s.nextVM++
	v := &VM{Identifier: fmt.Sprintf("vm-%s-%04d", randomID()[:6], s.nextVM), Hostname: fmt.Sprintf("%s-%s-%d", c.name, g.GroupName, s.nextVM),
		BoxsizeID: g.BoxsizeID, DcIdentifier: c.dc, CPU: g.CPU, RAM: g.RAM, SSD: g.SSD,
		DefaultIP: fmt.Sprintf("198.51.100.%d", s.nextVM%250+1), PrivateIP: fmt.Sprintf("10.0.0.%d", s.nextVM%250+1),
		CreatedOn: s.Clock.Now().UTC().Format("2006-01-02 15:04:05"), Cluster: c.identifier, GroupID: g.ID}
	s.vms[v.Identifier] = v
	g.NodesCount++
	return v
}

func (s *Server) addNode(_ http.ResponseWriter, r *http.Request) (any, int) {
	s.mu.Lock()
	c := s.clusters[r.PathValue("cluster")]
	if c == nil {
		s.mu.Unlock()
		return notFound("cluster")
	}
	gid, _ := strconv.Atoi(r.PathValue("group"))
	g := s.groupLocked(c, gid)
	if g == nil {
		s.mu.Unlock()
		return notFound("node group")
	}
	v := *s.addNodeLocked(c, g)
	hook := s.onNodeAdded
	if hook != nil {
		s.hooks.Add(1)
	}
	s.mu.Unlock()
	if hook != nil {
		go func() { defer s.hooks.Done(); hook(v) }()
	}
	// The real answer is a bare true: no identifier.
	return ok(true), http.StatusOK
}

func (s *Server) deleteNode(_ http.ResponseWriter, r *http.Request) (any, int) {
	var req struct {
		Identifier string `json:"identifier"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		return badRequest("invalid JSON")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.clusters[r.PathValue("cluster")]
	v := s.vms[req.Identifier]
	if c == nil || v == nil || v.Cluster != c.identifier {
		return notFound("node")
	}
	delete(s.vms, v.Identifier)
	if g := s.groupLocked(c, v.GroupID); g != nil {
		g.NodesCount--
	}
	return ok(true), http.StatusOK
}

func (s *Server) getCluster(_ http.ResponseWriter, r *http.Request) (any, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.clusters[r.PathValue("cluster")]
	if c == nil {
		return notFound("cluster")
	}
	nodes := []map[string]any{}
	var ids []string
	for id, v := range s.vms {
		if v.Cluster == c.identifier {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	for _, id := range ids {
		v := s.vms[id]
		nodes = append(nodes, map[string]any{"identifier": v.Identifier, "hostname": v.Hostname, "group_id": v.GroupID, "created_on": v.CreatedOn})
	}
	return ok(map[string]any{"identifier": c.identifier, "cluster_name": c.name, "dcIdentifier": c.dc, "nodes": nodes}), http.StatusOK
}
