package vpsie

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// The API's paths. Managed Kubernetes lives under /apps/v2/k8s.
const (
	pathDatacenters   = "/apps/v2/datacenter"
	pathCategories    = "/api/v2/plans/category"
	pathResources     = "/apps/v2/resources"
	pathVMs           = "/api/v2/vm"
	pathK8s           = "/apps/v2/k8s"
	datacentersPage   = 100
	vmsPage           = 100
	maxPages          = 100
	groupNameMaxChars = 60
)

// Datacenter is one of VPSie's locations.
type Datacenter struct {
	Identifier string
	Name       string // dc_name
	State      string
	Country    string
	Active     bool
	Private    bool
}

type datacenterJSON struct {
	Identifier string   `json:"identifier"`
	DcName     string   `json:"dc_name"`
	State      string   `json:"state"`
	Country    string   `json:"country"`
	IsActive   flexBool `json:"is_active"`
	IsPrivate  flexBool `json:"is_private"`
}

// Datacenters lists every datacenter, page by page.
func (c *Client) Datacenters(ctx context.Context) ([]Datacenter, error) {
	var out []Datacenter
	for page := 0; page < maxPages; page++ {
		var resp struct {
			Data  []datacenterJSON `json:"data"`
			Total flexInt          `json:"total"`
		}
		q := url.Values{"offset": {strconv.Itoa(len(out))}, "limit": {strconv.Itoa(datacentersPage)}}
		if err := c.do(ctx, request{method: http.MethodGet, path: pathDatacenters, query: q, idempotent: true}, &resp); err != nil {
			return nil, fmt.Errorf("listing datacenters: %w", err)
		}
		for _, d := range resp.Data {
			out = append(out, Datacenter{Identifier: d.Identifier, Name: d.DcName, State: d.State, Country: d.Country,
				Active: bool(d.IsActive), Private: bool(d.IsPrivate)})
		}
		if len(resp.Data) == 0 || len(out) >= int(resp.Total) {
			return out, nil
		}
	}
	return nil, fmt.Errorf("listing datacenters: more than %d pages", maxPages)
}

// PlanCategory groups plans (standard, CPU-optimised, ...).
type PlanCategory struct {
	Identifier string `json:"identifier"`
	Name       string `json:"name"`
}

// PlanCategories lists the plan categories.
func (c *Client) PlanCategories(ctx context.Context) ([]PlanCategory, error) {
	var resp struct {
		Data []PlanCategory `json:"data"`
	}
	if err := c.do(ctx, request{method: http.MethodGet, path: pathCategories, idempotent: true}, &resp); err != nil {
		return nil, fmt.Errorf("listing plan categories: %w", err)
	}
	return resp.Data, nil
}

// Plan is a machine size with its monthly price in one datacenter.
type Plan struct {
	Identifier string
	Nickname   string
	CPU        int64
	RAMMB      int64
	SSDGB      int64
	TrafficGB  int64
	Monthly    float64
}

type planJSON struct {
	Identifier flexID    `json:"identifier"`
	Nickname   string    `json:"nickname"`
	CPU        flexInt   `json:"cpu"`
	RAM        flexInt   `json:"ram"`
	SSD        flexInt   `json:"ssd"`
	Traffic    flexInt   `json:"traffic"`
	Price      flexFloat `json:"price"`
}

// Resources lists the plans of a category in a datacenter. The call is a POST
// but reads only, so it is retried like a GET.
func (c *Client) Resources(ctx context.Context, dc, osIdentifier, category string) ([]Plan, error) {
	form := url.Values{"dcIdentifier": {dc}, "osIdentifier": {osIdentifier}, "planCatIdentifier": {category}, "isCustom": {"0"}}
	var resp struct {
		Data []planJSON `json:"data"`
	}
	if err := c.do(ctx, request{method: http.MethodPost, path: pathResources, form: form, idempotent: true}, &resp); err != nil {
		return nil, fmt.Errorf("listing plans of category %s in datacenter %s: %w", category, dc, err)
	}
	out := make([]Plan, 0, len(resp.Data))
	for _, p := range resp.Data {
		out = append(out, Plan{Identifier: string(p.Identifier), Nickname: p.Nickname, CPU: int64(p.CPU), RAMMB: int64(p.RAM),
			SSDGB: int64(p.SSD), TrafficGB: int64(p.Traffic), Monthly: float64(p.Price)})
	}
	return out, nil
}

// VM is a virtual machine (a managed-Kubernetes node is one).
type VM struct {
	Identifier   string
	Hostname     string
	BoxsizeID    string
	DcIdentifier string
	CPU          int64
	RAMMB        int64
	SSDGB        int64
	DefaultIP    string
	PrivateIP    string
	CreatedOn    time.Time
}

type vmJSON struct {
	Identifier   flexID   `json:"identifier"`
	Hostname     string   `json:"hostname"`
	BoxsizeID    flexID   `json:"boxsize_id"`
	DcIdentifier string   `json:"dcIdentifier"`
	CPU          flexInt  `json:"cpu"`
	RAM          flexInt  `json:"ram"`
	SSD          flexInt  `json:"ssd"`
	DefaultIP    string   `json:"default_ip"`
	PrivateIP    string   `json:"private_ip"`
	CreatedOn    flexTime `json:"created_on"`
}

func (v vmJSON) vm() VM {
	return VM{Identifier: string(v.Identifier), Hostname: v.Hostname, BoxsizeID: string(v.BoxsizeID), DcIdentifier: v.DcIdentifier,
		CPU: int64(v.CPU), RAMMB: int64(v.RAM), SSDGB: int64(v.SSD), DefaultIP: v.DefaultIP, PrivateIP: v.PrivateIP, CreatedOn: v.CreatedOn.Time}
}

// VM reads one VM; an unknown identifier is an error matching cloud.ErrNotFound.
func (c *Client) VM(ctx context.Context, identifier string) (*VM, error) {
	var resp struct {
		Data struct {
			VMData vmJSON `json:"vmData"`
		} `json:"data"`
	}
	if err := c.do(ctx, request{method: http.MethodGet, path: pathVMs + "/" + url.PathEscape(identifier), idempotent: true}, &resp); err != nil {
		return nil, fmt.Errorf("reading VM %s: %w", identifier, err)
	}
	vm := resp.Data.VMData.vm()
	if vm.Identifier == "" {
		return nil, fmt.Errorf("reading VM %s: the answer holds no data.vmData.identifier", identifier)
	}
	return &vm, nil
}

// VMs lists every VM of the account, page by page.
func (c *Client) VMs(ctx context.Context) ([]VM, error) {
	var out []VM
	for page := 0; page < maxPages; page++ {
		var resp struct {
			Data  []vmJSON `json:"data"`
			Total flexInt  `json:"total"`
		}
		q := url.Values{"offset": {strconv.Itoa(len(out))}, "limit": {strconv.Itoa(vmsPage)}}
		if err := c.do(ctx, request{method: http.MethodGet, path: pathVMs, query: q, idempotent: true}, &resp); err != nil {
			return nil, fmt.Errorf("listing VMs: %w", err)
		}
		for _, v := range resp.Data {
			out = append(out, v.vm())
		}
		if len(resp.Data) == 0 || int(resp.Total) == 0 || len(out) >= int(resp.Total) {
			return out, nil
		}
	}
	return nil, fmt.Errorf("listing VMs: more than %d pages", maxPages)
}

// NodeGroup is a managed-Kubernetes node group: nodes of one fixed size.
type NodeGroup struct {
	ID         int64
	Name       string
	BoxsizeID  string
	CPU        int64
	RAMMB      int64
	SSDGB      int64
	NodesCount int64
}

type nodeGroupJSON struct {
	ID         flexInt `json:"id"`
	GroupName  string  `json:"group_name"`
	BoxsizeID  flexID  `json:"boxsize_id"`
	CPU        flexInt `json:"cpu"`
	RAM        flexInt `json:"ram"`
	SSD        flexInt `json:"ssd"`
	NodesCount flexInt `json:"nodes_count"`
}

// NodeGroups lists the node groups of a cluster.
func (c *Client) NodeGroups(ctx context.Context, cluster string) ([]NodeGroup, error) {
	var resp struct {
		Data []nodeGroupJSON `json:"data"`
	}
	if err := c.do(ctx, request{method: http.MethodGet, path: pathK8s + "/node/groups/byClusterId/" + url.PathEscape(cluster), idempotent: true}, &resp); err != nil {
		return nil, fmt.Errorf("listing node groups of cluster %s: %w", cluster, err)
	}
	out := make([]NodeGroup, 0, len(resp.Data))
	for _, g := range resp.Data {
		out = append(out, NodeGroup{ID: int64(g.ID), Name: g.GroupName, BoxsizeID: string(g.BoxsizeID), CPU: int64(g.CPU),
			RAMMB: int64(g.RAM), SSDGB: int64(g.SSD), NodesCount: int64(g.NodesCount)})
	}
	return out, nil
}

// AddNodeGroup creates a node group of one size in a cluster. It is not
// idempotent: after an ambiguous failure, list the groups before trying again.
func (c *Client) AddNodeGroup(ctx context.Context, cluster, name, size string) error {
	body := map[string]any{"clusterIdentifier": cluster, "groupName": name, "KubeSizeID": sizeValue(size)}
	if err := c.do(ctx, request{method: http.MethodPost, path: pathK8s + "/cluster/add/group", json: body}, nil); err != nil {
		return fmt.Errorf("creating node group %s (size %s) in cluster %s: %w", name, size, cluster, err)
	}
	return nil
}

// sizeValue sends a numeric size identifier as a number, any other as a string.
func sizeValue(size string) any {
	if n, err := strconv.ParseInt(size, 10, 64); err == nil {
		return n
	}
	return size
}

// AddNode adds one node to a node group. The answer carries no identifier: the
// node is found later in the cluster's node list. It is not idempotent.
func (c *Client) AddNode(ctx context.Context, cluster string, group int64) error {
	path := fmt.Sprintf("%s/cluster/byId/%s/add/slave/group/%d", pathK8s, url.PathEscape(cluster), group)
	if err := c.do(ctx, request{method: http.MethodPost, path: path}, nil); err != nil {
		return fmt.Errorf("adding a node to group %d of cluster %s: %w", group, cluster, err)
	}
	return nil
}

// DeleteNode removes a node from a cluster (and deletes its VM). Repeating it is
// harmless: the second answer is "not found".
func (c *Client) DeleteNode(ctx context.Context, cluster, identifier string) error {
	path := fmt.Sprintf("%s/cluster/byId/%s/delete/slave", pathK8s, url.PathEscape(cluster))
	if err := c.do(ctx, request{method: http.MethodDelete, path: path, json: map[string]string{"identifier": identifier}, idempotent: true}, nil); err != nil {
		return fmt.Errorf("removing node %s from cluster %s: %w", identifier, cluster, err)
	}
	return nil
}

// ClusterNode is a node of a managed cluster as the cluster's record lists it.
type ClusterNode struct {
	Identifier string
	Hostname   string
	// GroupID is the numeric node group, 0 when the record does not say.
	GroupID   int64
	CreatedOn time.Time
}

// Cluster is the record of a managed Kubernetes cluster.
type Cluster struct {
	Identifier   string
	Name         string
	DcIdentifier string
	Nodes        []ClusterNode
}

// Cluster reads a managed cluster's record, GET /apps/v2/k8s/cluster/byId/{id},
// whose data.nodes lists each node's identifier, hostname and group.
func (c *Client) Cluster(ctx context.Context, cluster string) (*Cluster, error) {
	var resp struct {
		Data struct {
			Identifier   flexID `json:"identifier"`
			ClusterName  string `json:"cluster_name"`
			DcIdentifier string `json:"dcIdentifier"`
			Nodes        []struct {
				Identifier flexID   `json:"identifier"`
				Hostname   string   `json:"hostname"`
				GroupID    flexInt  `json:"group_id"`
				CreatedOn  flexTime `json:"created_on"`
			} `json:"nodes"`
		} `json:"data"`
	}
	if err := c.do(ctx, request{method: http.MethodGet, path: pathK8s + "/cluster/byId/" + url.PathEscape(cluster), idempotent: true}, &resp); err != nil {
		return nil, fmt.Errorf("reading cluster %s: %w", cluster, err)
	}
	out := &Cluster{Identifier: string(resp.Data.Identifier), Name: resp.Data.ClusterName, DcIdentifier: resp.Data.DcIdentifier}
	for _, n := range resp.Data.Nodes {
		out.Nodes = append(out.Nodes, ClusterNode{Identifier: string(n.Identifier), Hostname: n.Hostname, GroupID: int64(n.GroupID), CreatedOn: n.CreatedOn.Time})
	}
	return out, nil
}
