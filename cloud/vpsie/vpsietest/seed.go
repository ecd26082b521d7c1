package vpsietest

// The standard account: what most tests need.
const (
	DC         = "dc-fra1"
	DCName     = "Frankfurt 1"
	InactiveDC = "dc-old"
	Cluster    = "k8s-demo"
	// PlanOld is the expensive plan existing nodes run on; PlanNew is the cheaper
	// one of the same size, in another category; PlanSmall is a third.
	PlanOld   = "plan-std-4"
	PlanNew   = "plan-cpu-4"
	PlanSmall = "plan-std-2"
	// Their offering names (the plans' nicknames).
	OfferingOld   = "std-4vcpu-8gb"
	OfferingNew   = "cpu-4vcpu-8gb"
	OfferingSmall = "std-2vcpu-4gb"
	// Monthly prices.
	PriceOld   = 60.0
	PriceNew   = 40.0
	PriceSmall = 20.0
)

// NewStandard starts a server holding the standard account: two datacenters
// (one inactive), two categories, three plans, and the managed cluster Cluster
// with a node group "workers" of PlanOld holding oldNodes nodes.
func NewStandard(oldNodes int) *Server { return NewStandardCluster("demo", oldNodes) }

// NewStandardCluster is NewStandard with the cluster's name, which starts its
// nodes' hostnames (tests sharing one Kubernetes cluster need distinct ones).
func NewStandardCluster(name string, oldNodes int) *Server {
	s := New()
	s.AddDatacenter(Datacenter{Identifier: DC, DcName: DCName, State: "FRA", Country: "DE", IsActive: 1})
	s.AddDatacenter(Datacenter{Identifier: InactiveDC, DcName: "Retired", State: "AMS", Country: "NL", IsActive: 0})
	s.AddCategory(Category{Identifier: "cat-std", Name: "Standard"})
	s.AddCategory(Category{Identifier: "cat-cpu", Name: "CPU optimised"})
	s.AddPlan(Plan{Identifier: PlanSmall, Nickname: OfferingSmall, CPU: 2, RAM: 4096, SSD: 80, Traffic: 2000, Price: PriceSmall, Category: "cat-std", Datacenters: []string{DC, InactiveDC}})
	s.AddPlan(Plan{Identifier: PlanOld, Nickname: OfferingOld, CPU: 4, RAM: 8192, SSD: 160, Traffic: 4000, Price: PriceOld, Category: "cat-std", Datacenters: []string{DC, InactiveDC}})
	s.AddPlan(Plan{Identifier: PlanNew, Nickname: OfferingNew, CPU: 4, RAM: 8192, SSD: 160, Traffic: 4000, Price: PriceNew, Category: "cat-cpu", Datacenters: []string{DC}})
	s.AddCluster(Cluster, name, DC)
	g := s.AddGroup(Cluster, "workers", PlanOld)
	for range oldNodes {
		s.AddNode(Cluster, g)
	}
	return s
}
