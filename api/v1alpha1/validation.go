package v1alpha1

import (
	"fmt"
	"math"
	"regexp"
	"strings"
	"time"

	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Validate checks a policy and returns every problem with its field path.
func (p *RebalancePolicy) Validate() field.ErrorList {
	errs := validateHeader(p.TypeMeta, KindPolicy)
	errs = append(errs, validateName(p.Metadata.Name, field.NewPath("metadata", "name"))...)
	errs = append(errs, p.Spec.Validate(field.NewPath("spec"))...)
	return errs
}

// Validate checks a policy spec.
func (s *PolicySpec) Validate(path *field.Path) field.ErrorList {
	var errs field.ErrorList
	if s.NodeSelector != nil {
		errs = append(errs, metav1validation.ValidateLabelSelector(s.NodeSelector,
			metav1validation.LabelSelectorValidationOptions{}, path.Child("nodeSelector"))...)
	}
	if s.NodeGroupLabel != "" {
		for _, msg := range validation.IsQualifiedName(s.NodeGroupLabel) {
			errs = append(errs, field.Invalid(path.Child("nodeGroupLabel"), s.NodeGroupLabel, msg))
		}
	}
	errs = append(errs, validateStrategy(s.Strategy, path.Child("strategy"))...)
	errs = append(errs, validatePercent(s.SavingsThresholdPercent, path.Child("savingsThresholdPercent"))...)
	errs = append(errs, validatePositive(s.MinNodeAge, path.Child("minNodeAge"), true)...)
	errs = append(errs, validatePositive(s.CooldownPeriod, path.Child("cooldownPeriod"), true)...)
	errs = append(errs, validateAtLeast(s.MaxConcurrent, 1, path.Child("maxConcurrent"))...)
	errs = append(errs, validatePositive(s.DrainTimeout, path.Child("drainTimeout"), false)...)
	for i, w := range s.MaintenanceWindows {
		if _, err := ParseWindow(w); err != nil {
			errs = append(errs, field.Invalid(path.Child("maintenanceWindows").Index(i), w, err.Error()))
		}
	}
	errs = append(errs, validateTimeZone(s.TimeZone, path.Child("timeZone"))...)
	errs = append(errs, validateAtLeast(s.MaxNodesPerPlan, 1, path.Child("maxNodesPerPlan"))...)
	errs = append(errs, validatePercent(s.MaxUnhealthyPercent, path.Child("maxUnhealthyPercent"))...)
	errs = append(errs, validateAtLeast(s.MaxUnhealthyCount, 0, path.Child("maxUnhealthyCount"))...)
	errs = append(errs, validatePositive(s.PlanTTL, path.Child("planTTL"), false)...)
	switch s.Sizing {
	case SizingMatchCapacity, SizingFitWorkload:
	default:
		errs = append(errs, field.NotSupported(path.Child("sizing"), s.Sizing, []Sizing{SizingMatchCapacity, SizingFitWorkload}))
	}
	errs = append(errs, validatePercent(s.HeadroomPercent, path.Child("headroomPercent"))...)
	seen := map[string]bool{}
	for i, o := range s.AllowedOfferings {
		p := path.Child("allowedOfferings").Index(i)
		if strings.TrimSpace(o) == "" {
			errs = append(errs, field.Invalid(p, o, "must not be empty"))
		} else if seen[o] {
			errs = append(errs, field.Duplicate(p, o))
		}
		seen[o] = true
	}
	switch s.LocalStorage.EmptyDir {
	case EmptyDirAllow, EmptyDirBlock:
	default:
		errs = append(errs, field.NotSupported(path.Child("localStorage", "emptyDir"), s.LocalStorage.EmptyDir, []EmptyDirPolicy{EmptyDirAllow, EmptyDirBlock}))
	}
	for i, m := range s.ManagedNodes {
		switch m {
		case OwnerKarpenter, OwnerClusterAutoscaler, OwnerVPSieAutoscaler:
		default:
			errs = append(errs, field.NotSupported(path.Child("managedNodes").Index(i), m, []string{OwnerKarpenter, OwnerClusterAutoscaler, OwnerVPSieAutoscaler}))
		}
	}
	return errs
}

// Owners of nodes that another autoscaler manages, as a policy names them in managedNodes.
const (
	OwnerKarpenter         = "karpenter"
	OwnerClusterAutoscaler = "cluster-autoscaler"
	OwnerVPSieAutoscaler   = "vpsie-autoscaler"
)

// Validate checks a plan and returns every problem with its field path.
func (p *RebalancePlan) Validate() field.ErrorList {
	errs := validateHeader(p.TypeMeta, KindPlan)
	errs = append(errs, validatePlanName(p.Metadata.Name, p.Spec.Cluster, p.Spec.NodeGroup, field.NewPath("metadata", "name"))...)
	errs = append(errs, p.Spec.Validate(field.NewPath("spec"))...)
	return errs
}

var digestForm = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// Validate checks a plan spec.
func (s *PlanSpec) Validate(path *field.Path) field.ErrorList {
	var errs field.ErrorList
	errs = append(errs, validateRequiredLabel(s.Cluster, path.Child("cluster"))...)
	if s.NodeGroup == "" {
		errs = append(errs, field.Required(path.Child("nodeGroup"), "the node group this plan acts on"))
	} else if IDSegment(s.NodeGroup) == "" {
		errs = append(errs, field.Invalid(path.Child("nodeGroup"), s.NodeGroup, "must contain at least one letter or digit"))
	}
	if s.Policy == "" {
		errs = append(errs, field.Required(path.Child("policy"), "the name of the policy that governs this node group"))
	} else {
		errs = append(errs, validateName(s.Policy, path.Child("policy"))...)
	}
	errs = append(errs, validateStrategy(s.Strategy, path.Child("strategy"))...)
	errs = append(errs, validateAtLeast(s.MaxConcurrent, 1, path.Child("maxConcurrent"))...)
	errs = append(errs, validatePositive(s.DrainTimeout, path.Child("drainTimeout"), false)...)
	if s.NotAfter.IsZero() {
		errs = append(errs, field.Required(path.Child("notAfter"), "the last time the plan may start, in RFC 3339"))
	} else if !s.CreatedAt.IsZero() && !s.NotAfter.After(s.CreatedAt.Time) {
		errs = append(errs, field.Invalid(path.Child("notAfter"), s.NotAfter.Format(time.RFC3339), "must be after createdAt"))
	}
	if s.ContentDigest != "" && !digestForm.MatchString(s.ContentDigest) {
		errs = append(errs, field.Invalid(path.Child("contentDigest"), s.ContentDigest, "must be sha256: followed by 64 lowercase hex digits"))
	} else if s.ContentDigest != "" && len(s.Candidates) > 0 {
		if want := s.ComputeContentDigest(); want != s.ContentDigest {
			errs = append(errs, field.Invalid(path.Child("contentDigest"), s.ContentDigest,
				"does not match the plan's candidates and strategy (they were changed after the plan was proposed); expected "+want))
		}
	}
	cp := path.Child("candidates")
	if len(s.Candidates) == 0 {
		errs = append(errs, field.Required(cp, "a plan needs at least one candidate"))
	}
	nodes := map[string]bool{}
	for i := range s.Candidates {
		c := &s.Candidates[i]
		errs = append(errs, c.validate(cp.Index(i))...)
		if c.Node != "" && nodes[c.Node] {
			errs = append(errs, field.Duplicate(cp.Index(i).Child("node"), c.Node))
		}
		nodes[c.Node] = true
	}
	for i, st := range s.Steps {
		sp := path.Child("steps").Index(i)
		errs = append(errs, validateStep(st, sp, nodes, Actions)...)
	}
	errs = append(errs, validateMoney(s.EstimatedMonthlySavings, path.Child("estimatedMonthlySavings"))...)
	if s.EstimatedDuration.Duration < 0 {
		errs = append(errs, field.Invalid(path.Child("estimatedDuration"), s.EstimatedDuration.String(), "must not be negative"))
	}
	for i, c := range s.SafetyChecks {
		sp := path.Child("safetyChecks").Index(i)
		if c.Name == "" {
			errs = append(errs, field.Required(sp.Child("name"), ""))
		}
		switch c.Result {
		case CheckPass, CheckWarn, CheckWait, CheckFail:
		default:
			errs = append(errs, field.NotSupported(sp.Child("result"), c.Result, []CheckResult{CheckPass, CheckWarn, CheckWait, CheckFail}))
		}
	}
	if s.RetryOf != "" {
		errs = append(errs, validateName(s.RetryOf, path.Child("retryOf"))...)
	}
	switch s.Cancel {
	case "", CancelStop, CancelRollback:
	default:
		errs = append(errs, field.NotSupported(path.Child("cancel"), s.Cancel, []Cancel{CancelStop, CancelRollback}))
	}
	return errs
}

func validateStep(st Step, sp *field.Path, nodes map[string]bool, actions []Action) field.ErrorList {
	var errs field.ErrorList
	if st.Batch < 1 {
		errs = append(errs, field.Invalid(sp.Child("batch"), st.Batch, "must be 1 or more"))
	}
	ok := false
	for _, a := range actions {
		ok = ok || st.Action == a
	}
	if !ok {
		errs = append(errs, field.NotSupported(sp.Child("action"), st.Action, actions))
	}
	if st.Node == "" {
		errs = append(errs, field.Required(sp.Child("node"), "the candidate this step acts on"))
	} else if nodes != nil && !nodes[st.Node] {
		errs = append(errs, field.Invalid(sp.Child("node"), st.Node, "is not one of the plan's candidates"))
	}
	return errs
}

func (c *Candidate) validate(path *field.Path) field.ErrorList {
	var errs field.ErrorList
	if c.Node == "" {
		errs = append(errs, field.Required(path.Child("node"), "the name of the node to replace"))
	} else {
		errs = append(errs, validateName(c.Node, path.Child("node"))...)
	}
	if c.ProviderID == "" {
		errs = append(errs, field.Required(path.Child("providerID"), "the node's spec.providerID, so a recreated node of the same name is not mistaken for it"))
	}
	errs = append(errs, c.Current.validate(path.Child("current"))...)
	errs = append(errs, c.Replacement.validate(path.Child("replacement"))...)
	rp := path.Child("replacement")
	if c.Current.Datacenter != "" && c.Replacement.Datacenter != "" && c.Current.Datacenter != c.Replacement.Datacenter {
		errs = append(errs, field.Invalid(rp.Child("datacenter"), c.Replacement.Datacenter,
			fmt.Sprintf("must be the current node's datacenter %q", c.Current.Datacenter)))
	}
	if c.Current.Arch != "" && c.Replacement.Arch != "" && c.Current.Arch != c.Replacement.Arch {
		errs = append(errs, field.Invalid(rp.Child("arch"), c.Replacement.Arch,
			fmt.Sprintf("must be the current node's arch %q", c.Current.Arch)))
	}
	if c.Replacement.HourlyPrice >= 0 && c.Current.HourlyPrice >= 0 && c.Replacement.HourlyPrice >= c.Current.HourlyPrice {
		errs = append(errs, field.Invalid(rp.Child("hourlyPrice"), c.Replacement.HourlyPrice,
			fmt.Sprintf("must be lower than the current hourly price %v", c.Current.HourlyPrice)))
	}
	errs = append(errs, validateMoney(c.MonthlySavings, path.Child("monthlySavings"))...)
	if c.Age.Duration < 0 {
		errs = append(errs, field.Invalid(path.Child("age"), c.Age.String(), "must not be negative"))
	}
	return errs
}

func (o *Offering) validate(path *field.Path) field.ErrorList {
	var errs field.ErrorList
	if o.Name == "" {
		errs = append(errs, field.Required(path.Child("name"), "the offering's name in the provider's catalog"))
	}
	if o.Datacenter == "" {
		errs = append(errs, field.Required(path.Child("datacenter"), ""))
	}
	if o.Arch == "" {
		errs = append(errs, field.Required(path.Child("arch"), "amd64 or arm64"))
	}
	errs = append(errs, validateMoney(o.HourlyPrice, path.Child("hourlyPrice"))...)
	if o.CPU != nil && o.CPU.Sign() <= 0 {
		errs = append(errs, field.Invalid(path.Child("cpu"), o.CPU.String(), "must be positive"))
	}
	if o.Memory != nil && o.Memory.Sign() <= 0 {
		errs = append(errs, field.Invalid(path.Child("memory"), o.Memory.String(), "must be positive"))
	}
	return errs
}

// Validate checks a status and returns every problem with its field path.
func (s *RebalanceStatus) Validate() field.ErrorList {
	errs := validateHeader(s.TypeMeta, KindStatus)
	errs = append(errs, validateName(s.Metadata.Name, field.NewPath("metadata", "name"))...)
	errs = append(errs, s.Status.Validate(field.NewPath("status"))...)
	return errs
}

// Validate checks a plan status.
func (s *PlanStatus) Validate(path *field.Path) field.ErrorList {
	var errs field.ErrorList
	if s.Phase == "" {
		errs = append(errs, field.Required(path.Child("phase"), "one of "+phaseList()))
	} else if !validPhase(s.Phase) {
		errs = append(errs, field.NotSupported(path.Child("phase"), s.Phase, Phases))
	}
	errs = append(errs, validateRequiredLabel(s.Cluster, path.Child("cluster"))...)
	if !s.StartedAt.IsZero() && !s.FinishedAt.IsZero() && s.FinishedAt.Before(s.StartedAt.Time) {
		errs = append(errs, field.Invalid(path.Child("finishedAt"), s.FinishedAt.Format(time.RFC3339), "must not be before startedAt"))
	}
	if s.PlanDigest != "" && !digestForm.MatchString(s.PlanDigest) {
		errs = append(errs, field.Invalid(path.Child("planDigest"), s.PlanDigest, "must be sha256: followed by 64 lowercase hex digits"))
	}
	errs = append(errs, validateStepStatuses(s.Steps, path.Child("steps"), Actions)...)
	if s.Rollback != nil {
		rp := path.Child("rollback")
		ok := false
		for _, t := range RollbackTriggers {
			ok = ok || s.Rollback.Trigger == t
		}
		if !ok {
			errs = append(errs, field.NotSupported(rp.Child("trigger"), s.Rollback.Trigger, RollbackTriggers))
		}
		errs = append(errs, validateStepStatuses(s.Rollback.Steps, rp.Child("steps"), append([]Action{ActionUncordon}, Actions...))...)
	}
	errs = append(errs, validateMoney(s.RealizedMonthlySavings, path.Child("realizedMonthlySavings"))...)
	return errs
}

func validateStepStatuses(steps []StepStatus, path *field.Path, actions []Action) field.ErrorList {
	var errs field.ErrorList
	for i, st := range steps {
		sp := path.Index(i)
		errs = append(errs, validateStep(st.Step, sp, nil, actions)...)
		ok := false
		for _, p := range StepPhases {
			ok = ok || st.Phase == p
		}
		if !ok {
			errs = append(errs, field.NotSupported(sp.Child("phase"), st.Phase, StepPhases))
		}
	}
	return errs
}

func validPhase(p Phase) bool {
	for _, q := range Phases {
		if p == q {
			return true
		}
	}
	return false
}

func phaseList() string {
	s := make([]string, len(Phases))
	for i, p := range Phases {
		s[i] = string(p)
	}
	return strings.Join(s, ", ")
}

func validateHeader(t TypeMeta, kind string) field.ErrorList {
	var errs field.ErrorList
	if t.APIVersion != APIVersion {
		if t.APIVersion == "" {
			errs = append(errs, field.Required(field.NewPath("apiVersion"), "must be "+APIVersion))
		} else {
			errs = append(errs, field.NotSupported(field.NewPath("apiVersion"), t.APIVersion, []string{APIVersion}))
		}
	}
	if t.Kind != kind {
		if t.Kind == "" {
			errs = append(errs, field.Required(field.NewPath("kind"), "must be "+kind))
		} else {
			errs = append(errs, field.NotSupported(field.NewPath("kind"), t.Kind, []string{kind}))
		}
	}
	return errs
}

func validateName(name string, path *field.Path) field.ErrorList {
	if name == "" {
		return field.ErrorList{field.Required(path, "a DNS-1123 name: lowercase letters, digits and '-'")}
	}
	var errs field.ErrorList
	for _, msg := range validation.IsDNS1123Subdomain(name) {
		errs = append(errs, field.Invalid(path, name, msg))
	}
	return errs
}

func validateRequiredLabel(v string, path *field.Path) field.ErrorList {
	if v == "" {
		return field.ErrorList{field.Required(path, "a DNS-1123 label: lowercase letters, digits and '-', at most 63 characters")}
	}
	var errs field.ErrorList
	for _, msg := range validation.IsDNS1123Label(v) {
		errs = append(errs, field.Invalid(path, v, msg))
	}
	return errs
}

var planIDForm = regexp.MustCompile(`^([a-z0-9-]+)-([0-9]{8})-([0-9a-f]{6})$`)

func validatePlanName(name, cluster, group string, path *field.Path) field.ErrorList {
	if errs := validateName(name, path); len(errs) > 0 {
		return errs
	}
	m := planIDForm.FindStringSubmatch(name)
	if m == nil {
		return field.ErrorList{field.Invalid(path, name, "must have the form <cluster>-<node-group>-<yyyymmdd>-<6 hex digits>")}
	}
	if _, err := time.Parse("20060102", m[2]); err != nil {
		return field.ErrorList{field.Invalid(path, name, fmt.Sprintf("date part %q is not a valid yyyymmdd date", m[2]))}
	}
	if cluster != "" && group != "" {
		want := cluster + "-" + IDSegment(group) + "-"
		if !strings.HasPrefix(name, want) {
			return field.ErrorList{field.Invalid(path, name, fmt.Sprintf("must start with %q (<spec.cluster>-<spec.nodeGroup>-)", want))}
		}
	}
	return nil
}

var notIDChar = regexp.MustCompile(`[^a-z0-9]+`)

// IDSegment turns a node-group label value (which may hold upper case, dots and
// underscores) into the lowercase, dash-separated form plan IDs use.
func IDSegment(s string) string {
	return strings.Trim(notIDChar.ReplaceAllString(strings.ToLower(s), "-"), "-")
}

// PlanID builds a plan's metadata.name: <cluster>-<group>-<yyyymmdd>-<suffix>,
// where suffix is 6 hex digits unique to the proposal.
func PlanID(cluster, group string, at time.Time, suffix string) string {
	return fmt.Sprintf("%s-%s-%s-%s", cluster, IDSegment(group), at.UTC().Format("20060102"), suffix)
}

func validateStrategy(s Strategy, path *field.Path) field.ErrorList {
	for _, v := range Strategies {
		if s == v {
			return nil
		}
	}
	return field.ErrorList{field.NotSupported(path, s, Strategies)}
}

func validatePercent(v float64, path *field.Path) field.ErrorList {
	if math.IsNaN(v) || v < 0 || v > 100 {
		return field.ErrorList{field.Invalid(path, v, "must be a percentage between 0 and 100")}
	}
	return nil
}

func validateAtLeast(v, min int, path *field.Path) field.ErrorList {
	if v < min {
		return field.ErrorList{field.Invalid(path, v, fmt.Sprintf("must be %d or more", min))}
	}
	return nil
}

func validatePositive(d Duration, path *field.Path, zeroOK bool) field.ErrorList {
	if d.Duration < 0 || (!zeroOK && d.Duration == 0) {
		what := "must be positive"
		if zeroOK {
			what = "must not be negative"
		}
		return field.ErrorList{field.Invalid(path, d.String(), what)}
	}
	return nil
}

func validateMoney(v float64, path *field.Path) field.ErrorList {
	if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
		return field.ErrorList{field.Invalid(path, v, "must not be negative")}
	}
	return nil
}

func validateTimeZone(tz string, path *field.Path) field.ErrorList {
	if tz == "" {
		return nil
	}
	if tz == "Local" {
		return field.ErrorList{field.Invalid(path, tz, "name an IANA time zone such as Europe/Berlin; Local depends on the machine")}
	}
	if _, err := time.LoadLocation(tz); err != nil {
		return field.ErrorList{field.Invalid(path, tz, "is not an IANA time zone name such as UTC, Europe/Berlin or America/New_York")}
	}
	return nil
}
