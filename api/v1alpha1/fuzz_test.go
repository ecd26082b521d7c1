package v1alpha1

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/conversion"
)

// FuzzDecodePolicy, FuzzDecodePlan, FuzzDecodeStatus and FuzzDecodeAny feed arbitrary
// bytes to Decode, and FuzzDecodeFields arbitrary values to fields of the example
// files; all check properties that hold for every input, not only that nothing
// panics (checkDecode):
//
//   - every FileError names the file it was given, has a line inside the file (1 up
//     to one past its last line) and a non-empty message;
//   - decoding is deterministic;
//   - an accepted file has an object of the kind asked for, which validates cleanly,
//     and round-trips: Marshal succeeds, decoding its output is accepted too and
//     gives an equal object, and marshalling that object gives the same bytes again.
//
// FuzzParseDuration and FuzzParseWindow check the same round trip for durations and
// maintenance windows on their own.
//
// Run them with `make fuzz` (hack/fuzz.sh). Inputs that once failed are kept in the
// regression tables at the end of this file, seed the targets and are run by
// TestFuzzRegressions on every `go test`.

// fileFor is the file name each target decodes under: plans and statuses must be
// named after their plan ID, so the examples are accepted.
var fileFor = map[string]string{
	KindPolicy: "general.yaml",
	KindPlan:   "prod-general-20261127-3f9a1c.yaml",
	KindStatus: "prod-general-20261127-3f9a1c.yaml",
	"":         "prod-general-20261127-3f9a1c.yaml",
}

// semantic compares decoded objects the way their meaning does: quantities by value
// ("500m" is "0.5"), times by instant; nil and empty lists and maps are equal.
var semantic = conversion.EqualitiesOrDie(
	func(a, b resource.Quantity) bool { return a.Cmp(b) == 0 },
	func(a, b Time) bool { return a.Time.Equal(b.Time) },
)

// fuzzSeeds are the example files and variations of them that reach the less
// travelled paths: every kind in every target, crossing-midnight windows, day
// durations, time offsets, rollbacks, syntax errors, aliases, several documents.
func fuzzSeeds(tb testing.TB) [][]byte {
	policy := readExample(tb, "policies/general.yaml")
	plan := readExample(tb, planFile)
	status := readExample(tb, statusFile)
	rep := func(s, old, new string) string {
		if strings.Count(s, old) != 1 {
			tb.Fatalf("seed anchor %q found %d times", old, strings.Count(s, old))
		}
		return strings.Replace(s, old, new, 1)
	}
	seeds := []string{
		policy, plan, status,
		// policy variations
		rep(policy, `    - "Sun 00:00-06:00"`, `    - "Fri 22:00-02:00"`+"\n"+`    - "Sun 22:00-24:00"`),
		rep(rep(policy, "minNodeAge: 24h", "minNodeAge: 1d12h"), "planTTL: 7d", "planTTL: 1.5d"),
		rep(policy, "  nodeSelector:\n    matchLabels:\n      rebalancer.dev/enabled: \"true\"\n",
			"  nodeSelector:\n    matchExpressions:\n      - {key: pool, operator: In, values: [a, b]}\n"),
		rep(policy, "  localStorage:\n    emptyDir: allow\n", "  localStorage: {emptyDir: block}\n  managedNodes: [karpenter]\n  paused: true\n"),
		rep(policy, "  name: general\n", "  name: general\n  labels: {team: infra}\n  annotations:\n    note: |\n      two\n      lines\n"),
		"apiVersion: rebalancer.dev/v1alpha1\nkind: RebalancePolicy\nmetadata: {name: minimal}\nspec: {cooldownPeriod: 0s, maxUnhealthyCount: 0, timeZone: null}\n",
		// plan variations
		rep(plan, "  strategy: rolling\n", "  strategy: rolling\n  cancel: rollback\n  retryOf: prod-general-20261120-000000\n"),
		rep(plan, `createdAt: "2026-11-27T09:00:00Z"`, `createdAt: "2026-11-27T10:00:00+01:00"`),
		rep(plan, "monthlySavings: 14.6\n      age: 180d", "monthlySavings: 1.46e1\n      age: 4320h"),
		rep(plan, `message: "2 PDBs allow disruption"`, `message: "two \"PDBs\"\n\tallow: disruption # not a comment"`),
		// status variations
		rep(status, "  message: 2 nodes replaced\n", "  message: 2 nodes replaced\n  rollback:\n    trigger: drain-timeout\n    reason: \"drain of worker-a2 took over 300s\"\n    steps:\n      - {batch: 2, action: uncordon, node: worker-a2, phase: Succeeded}\n  skippedCandidates:\n    - {node: worker-a3, reason: gone}\n"),
		rep(status, "phase: Succeeded\n  cluster", "phase: Waiting\n  waitingFor: maintenance window\n  nextAttempt: \"2026-11-29T00:00:00+01:00\"\n  cluster"),
		// broken files
		"",
		"---\n",
		"a: [\n",
		"apiVersion: rebalancer.dev/v1alpha1\nkind: RebalancePlan\n---\nkind: RebalancePolicy\n",
		"- kind\n",
		"apiVersion: rebalancer.dev/v1alpha1\nkind: Unknown\n",
		"kind: &k RebalancePolicy\nspec: *k\n",
		"kind: RebalancePolicy\n<<: {a: 1}\n",
		rep(policy, "maxConcurrent: 1", `maxConcurrent: "1"`),
		rep(plan, "hourlyPrice: 0.08, cpu: \"4\", memory: 8Gi}\n      replacement: {name: std-4vcpu-8gb-v2, datacenter: fra1, arch: amd64, hourlyPrice: 0.06, cpu: \"4\", memory: 8Gi}\n      monthlySavings: 14.6\n      age: 180d",
			"hourlyPrice: 0.08, cpu: 4.0, memory: 8e9}\n      replacement: {name: std-4vcpu-8gb-v2, datacenter: fra1, arch: amd64, hourlyPrice: 0.06, cpu: 3500m, memory: 8Gi}\n      monthlySavings: 14.6\n      age: 180d"),
	}
	out := make([][]byte, len(seeds))
	for i, s := range seeds {
		out[i] = []byte(s)
	}
	return out
}

func fuzzDecode(f *testing.F, kind string) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	for _, r := range fuzzRegressions {
		f.Add([]byte(r.input))
	}
	file := fileFor[kind]
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecode(t, file, data, kind)
	})
}

func FuzzDecodePolicy(f *testing.F) { fuzzDecode(f, KindPolicy) }
func FuzzDecodePlan(f *testing.F)   { fuzzDecode(f, KindPlan) }
func FuzzDecodeStatus(f *testing.F) { fuzzDecode(f, KindStatus) }
func FuzzDecodeAny(f *testing.F)    { fuzzDecode(f, "") }

// FuzzDecodeFields puts fuzzed values into the fields of the example files that take
// free-form text, numbers, times and durations, so that the round trip is tried on
// accepted files far more often than byte mutations of whole files manage (those
// mostly break the YAML or a plan's contentDigest).
func FuzzDecodeFields(f *testing.F) {
	f.Add("2 nodes replaced", 29.2, "2026-11-28T00:00:05Z", "7d", "Sat 00:00-06:00")
	f.Add("line one\nline two\n", 0.0, "2026-11-28T01:00:05+01:00", "1d12h", "Fri 22:00-02:00")
	f.Add("  indented: # not a comment", 1e6, "2026-11-28T00:00:05-08:00", "90m", "Sun 22:00-24:00")
	f.Add("\"quoted\" \\ back'slash", 0.000001, "2026-11-28T00:00:05Z", "1.5d", "Mon 09:30-17:45")
	for _, r := range fuzzFieldRegressions {
		f.Add(r.text, r.number, r.at, r.dur, r.window)
	}
	policy := readExample(f, "policies/general.yaml")
	plan := readExample(f, planFile)
	status := readExample(f, statusFile)
	f.Fuzz(func(t *testing.T, text string, number float64, at, dur, window string) {
		for _, d := range fieldDocs(policy, plan, status, text, number, at, dur, window) {
			checkDecode(t, fileFor[d.kind], []byte(d.text), d.kind)
		}
	})
}

type fieldDoc struct{ kind, text string }

// TestFieldDocs makes sure every fuzzed value of FuzzDecodeFields lands in a field,
// so that a change to the examples cannot quietly leave the target fuzzing nothing.
func TestFieldDocs(t *testing.T) {
	docs := fieldDocs(readExample(t, "policies/general.yaml"), readExample(t, planFile), readExample(t, statusFile),
		"fuzzed text", 123.5, "2026-11-20T10:00:00+01:00", "3d", "Tue 01:00-02:00")
	require.Len(t, docs, 3)
	objs := make([]any, len(docs))
	for i, d := range docs {
		doc, errs := Decode(fileFor[d.kind], []byte(d.text), d.kind)
		require.Empty(t, errs, d.text)
		objs[i] = doc.Object
	}
	at := time.Date(2026, 11, 20, 9, 0, 0, 0, time.UTC)

	policy := objs[0].(*RebalancePolicy)
	assert.Equal(t, Days(3), policy.Spec.PlanTTL)
	assert.Equal(t, []string{"Sat 00:00-06:00", "Tue 01:00-02:00"}, policy.Spec.MaintenanceWindows)
	assert.Equal(t, map[string]string{"note": "fuzzed text"}, policy.Metadata.Annotations)

	plan := objs[1].(*RebalancePlan)
	assert.InDelta(t, 123.5, plan.Spec.EstimatedMonthlySavings, 0)
	assert.True(t, at.Equal(plan.Spec.CreatedAt.Time), plan.Spec.CreatedAt)
	assert.Equal(t, Days(3), plan.Spec.Candidates[1].Age)
	assert.Equal(t, "fuzzed text", plan.Spec.SafetyChecks[1].Message)

	status := objs[2].(*RebalanceStatus)
	assert.Equal(t, "fuzzed text", status.Status.Message)
	assert.InDelta(t, 123.5, status.Status.RealizedMonthlySavings, 0)
	assert.True(t, at.Equal(status.Status.NextAttempt.Time), status.Status.NextAttempt)
	assert.Equal(t, "fuzzed text", status.Status.Steps[3].Message)
	assert.True(t, at.Equal(status.Status.Steps[3].StartedAt.Time), status.Status.Steps[3].StartedAt)
}

// fieldDocs writes text, number, at, dur and window into copies of the examples.
// Strings are written as JSON strings, which YAML reads as double-quoted scalars.
func fieldDocs(policy, plan, status, text string, number float64, at, dur, window string) []fieldDoc {
	q := func(s string) string {
		b, _ := json.Marshal(s)
		return string(b)
	}
	num := strconv.FormatFloat(number, 'g', -1, 64)
	r := strings.NewReplacer(
		"planTTL: 7d", "planTTL: "+q(dur),
		`- "Sun 00:00-06:00"`, "- "+q(window),
		"  name: general\n", "  name: general\n  annotations: {note: "+q(text)+"}\n",
	)
	p := r.Replace(policy)
	r = strings.NewReplacer(
		"estimatedMonthlySavings: 29.2", "estimatedMonthlySavings: "+num,
		`createdAt: "2026-11-27T09:00:00Z"`, "createdAt: "+q(at),
		"age: 95d", "age: "+q(dur),
		`message: "2 PDBs allow disruption"`, "message: "+q(text),
	)
	pl := r.Replace(plan)
	r = strings.NewReplacer(
		"message: 2 nodes replaced", "message: "+q(text),
		`startedAt: "2026-11-28T00:00:05Z"
  finishedAt`, `startedAt: "2026-11-28T00:00:05Z"`+"\n  nextAttempt: "+q(at)+"\n  finishedAt",
		"realizedMonthlySavings: 29.2", "realizedMonthlySavings: "+num,
		`message: "7 pods evicted"`, "message: "+q(text)+", startedAt: "+q(at),
	)
	st := r.Replace(status)
	return []fieldDoc{{KindPolicy, p}, {KindPlan, pl}, {KindStatus, st}}
}

// FuzzParseDuration checks that every duration ParseDuration accepts has the sign
// it was written with and is written back by Duration.String as a duration that
// parses to the same value.
func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"24h", "90m", "7d", "1d12h", "1.5d", "-7d", "+1h", "0s", "0d", "300s", "100000d", "1.5h2m", "0.000001d", ""} {
		f.Add(s)
	}
	for _, s := range fuzzDurationRegressions {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		checkDuration(t, s)
	})
}

func checkDuration(t *testing.T, s string) {
	t.Helper()
	d, err := ParseDuration(s)
	if err != nil {
		if d != 0 {
			t.Errorf("ParseDuration(%q) = %v with an error", s, d)
		}
		if !strings.HasPrefix(err.Error(), fmt.Sprintf("invalid duration %q: ", s)) {
			t.Errorf("ParseDuration(%q): error %q does not name the input", s, err)
		}
		return
	}
	if strings.HasPrefix(s, "-") && d > 0 || !strings.HasPrefix(s, "-") && d < 0 {
		t.Fatalf("ParseDuration(%q) = %v: the sign differs from the input's", s, d)
	}
	str := Duration{d}.String()
	back, err := ParseDuration(str)
	if err != nil {
		t.Fatalf("ParseDuration(%q) = %v, written as %q, which does not parse: %v", s, d, str, err)
	}
	if back != d {
		t.Fatalf("ParseDuration(%q) = %v, written as %q, which parses to %v", s, d, str, back)
	}
}

// FuzzParseWindow checks that every window ParseWindow accepts is between a minute
// and 24 hours long, starts within its day, and is written back by Window.String
// as a window that parses to the same value.
func FuzzParseWindow(f *testing.F) {
	for _, s := range []string{"Sat 00:00-06:00", "Fri 22:00-02:00", "Sun 22:00-24:00", "Mon 09:30-17:45", "Sat 22:00-00:00", "Sat 1am-6am", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		w, err := ParseWindow(s)
		if err != nil {
			if w != (Window{}) {
				t.Errorf("ParseWindow(%q) = %+v with an error", s, w)
			}
			return
		}
		if w.Start < 0 || w.Start >= 24*time.Hour || w.End-w.Start < time.Minute || w.End-w.Start > 24*time.Hour {
			t.Fatalf("ParseWindow(%q) = %+v: not a window of a minute to 24h starting within its day", s, w)
		}
		back, err := ParseWindow(w.String())
		if err != nil || back != w {
			t.Fatalf("ParseWindow(%q) = %+v, written as %q, parses to %+v, %v", s, w, w.String(), back, err)
		}
	})
}

// checkDecode asserts the properties every input must have.
func checkDecode(t *testing.T, file string, data []byte, kind string) {
	t.Helper()
	doc, errs := Decode(file, data, kind)
	if doc == nil {
		t.Fatal("Decode returned a nil Document")
	}
	if doc.File != file {
		t.Errorf("Document.File = %q, want %q", doc.File, file)
	}
	lines := bytes.Count(data, []byte("\n")) + 1
	for _, e := range errs {
		if e.File != file {
			t.Errorf("error %q: File = %q, want %q", e.Error(), e.File, file)
		}
		if e.Line < 1 || e.Line > lines+1 {
			t.Errorf("error %q: Line = %d, want 1..%d", e.Error(), e.Line, lines+1)
		}
		if strings.TrimSpace(e.Message) == "" {
			t.Errorf("error %q: empty Message", e.Error())
		}
		if want := fmt.Sprintf("%s:%d: ", file, e.Line); !strings.HasPrefix(e.Error(), want) {
			t.Errorf("error %q does not start with %q", e.Error(), want)
		}
	}
	if _, again := Decode(file, data, kind); fmt.Sprint(again) != fmt.Sprint(errs) {
		t.Fatalf("decoding twice gave different errors:\n%v\n--- then ---\n%v", errs, again)
	}
	if len(errs) > 0 {
		return
	}

	// Accepted: the object is of the kind asked for and is valid on its own.
	gotKind := kindOf(t, doc.Object)
	if kind != "" && gotKind != kind {
		t.Fatalf("accepted as %s when %s was expected", gotKind, kind)
	}
	if verrs := validateObject(doc.Object); len(verrs) > 0 {
		t.Fatalf("accepted object does not validate: %v", verrs)
	}

	// Round trip.
	out, err := Marshal(doc.Object)
	if err != nil {
		t.Fatalf("Marshal of an accepted object: %v", err)
	}
	doc2, errs2 := Decode(file, out, kind)
	if len(errs2) > 0 {
		t.Fatalf("re-decoding the marshalled object:\n%v\n--- input ---\n%s\n--- marshalled ---\n%s", errs2, data, out)
	}
	if !semantic.DeepEqual(doc.Object, doc2.Object) {
		t.Fatalf("round trip changed the object:\n%#v\n--- became ---\n%#v\n--- marshalled ---\n%s", doc.Object, doc2.Object, out)
	}
	out2, err := Marshal(doc2.Object)
	if err != nil {
		t.Fatalf("second Marshal: %v", err)
	}
	if !bytes.Equal(out, out2) {
		t.Fatalf("Marshal is not stable over a round trip:\n%s\n--- became ---\n%s", out, out2)
	}
}

func kindOf(t *testing.T, obj any) string {
	t.Helper()
	switch o := obj.(type) {
	case *RebalancePolicy:
		return o.Kind
	case *RebalancePlan:
		return o.Kind
	case *RebalanceStatus:
		return o.Kind
	}
	t.Fatalf("accepted file decoded to %T", obj)
	return ""
}

func validateObject(obj any) []error {
	var errs []error
	switch o := obj.(type) {
	case *RebalancePolicy:
		for _, e := range o.Validate() {
			errs = append(errs, e)
		}
	case *RebalancePlan:
		for _, e := range o.Validate() {
			errs = append(errs, e)
		}
		if o.Spec.ContentDigest != "" && o.Spec.ContentDigest != o.Spec.ComputeContentDigest() {
			errs = append(errs, fmt.Errorf("contentDigest %s accepted but the content hashes to %s", o.Spec.ContentDigest, o.Spec.ComputeContentDigest()))
		}
	case *RebalanceStatus:
		for _, e := range o.Validate() {
			errs = append(errs, e)
		}
	}
	return errs
}

// fuzzRegressions are inputs that once broke a property above, with what broke.
// They also seed every fuzz target.
var fuzzRegressions = []struct {
	name, kind, input string
}{
	{
		// Time.UnmarshalJSON kept the fraction, MarshalJSON dropped it: accepted as
		// read, "must be after createdAt" once written back. Now rejected as read.
		name: "notAfter half a second after createdAt", kind: KindPlan,
		input: "apiVersion: rebalancer.dev/v1alpha1\nkind: RebalancePlan\nmetadata:\n  name: prod-general-20261127-3f9a1c\n" +
			"spec:\n  cluster: prod\n  nodeGroup: general\n  policy: general\n  strategy: rolling\n  maxConcurrent: 1\n  drainTimeout: 300s\n" +
			"  createdAt: \"2026-11-27T09:00:00Z\"\n  notAfter: \"2026-11-27T09:00:00.5Z\"\n" +
			"  candidates:\n    - node: worker-a1\n      providerID: kwok://worker-a1\n" +
			"      current: {name: v1, datacenter: fra1, arch: amd64, hourlyPrice: 0.08}\n" +
			"      replacement: {name: v2, datacenter: fra1, arch: amd64, hourlyPrice: 0.06}\n" +
			"      monthlySavings: 14.6\n  estimatedMonthlySavings: 14.6\n",
	},
}

// fuzzFieldRegressions are FuzzDecodeFields inputs that once broke a property.
var fuzzFieldRegressions = []struct {
	name, text string
	number     float64
	at, dur    string
	window     string
}{
	// strictyaml.Marshal tagged 1e20, which json.Marshal writes as
	// 100000000000000000000, !!int: emitted as `!!int 100000000000000000000`, which
	// does not decode ("expected a finite number").
	{"number beyond 64-bit integers", "2 nodes replaced", 1e20, "2026-11-28T00:00:05Z", "7d", "Sat 00:00-06:00"},
	// yaml.v3 wrote "\t\\\n" as a literal block without an indentation indicator
	// and could not read it back ("found a tab character where an indentation
	// space is expected").
	{"text starting with a tab, holding a line break", "\t\\\n", 29.2, "2026-11-28T00:00:05Z", "7d", "Sat 00:00-06:00"},
	// The fraction was kept when read and dropped when written: startedAt changed.
	{"fractional seconds", "2 nodes replaced", 29.2, "2026-11-28T00:00:05.5Z", "7d", "Sat 00:00-06:00"},
	// Written in UTC the year became 10000 and -1, which RFC 3339 cannot hold.
	{"offset moving the year past 9999", "2 nodes replaced", 29.2, "9999-12-31T23:59:59-01:00", "7d", "Sat 00:00-06:00"},
	{"offset moving the year before 0000", "2 nodes replaced", 29.2, "0000-01-01T00:00:00+01:00", "7d", "Sat 00:00-06:00"},
	// Duration.String wrote 2400024h as "100001d", over ParseDuration's old limit
	// of 100000 days.
	{"over 100000 whole days", "2 nodes replaced", 29.2, "2026-11-28T00:00:05Z", "2400024h", "Sat 00:00-06:00"},
}

// fuzzDurationRegressions are FuzzParseDuration inputs that once broke a property.
var fuzzDurationRegressions = []string{
	"2400024h",         // written as "100001d", which did not parse
	"-100000d2562047h", // days plus hours wrapped around int64: came out positive
	"100000d2562047h",  // and this one negative
	"106751d24h",       // just past the largest duration
}

func TestFuzzRegressions(t *testing.T) {
	for _, r := range fuzzRegressions {
		t.Run(r.name, func(t *testing.T) {
			checkDecode(t, fileFor[r.kind], []byte(r.input), r.kind)
		})
	}
	policy := readExample(t, "policies/general.yaml")
	plan := readExample(t, planFile)
	status := readExample(t, statusFile)
	for _, r := range fuzzFieldRegressions {
		t.Run(r.name, func(t *testing.T) {
			docs := fieldDocs(policy, plan, status, r.text, r.number, r.at, r.dur, r.window)
			for _, d := range docs {
				checkDecode(t, fileFor[d.kind], []byte(d.text), d.kind)
			}
		})
	}
	for _, s := range fuzzDurationRegressions {
		t.Run("duration "+s, func(t *testing.T) { checkDuration(t, s) })
	}
}

// TestFuzzSeeds runs the properties over the seeds on every `go test`, so a seed
// that breaks them fails without fuzzing; it also makes sure the seeds that should
// be accepted are, or the round-trip properties would go unexercised.
func TestFuzzSeeds(t *testing.T) {
	seeds := fuzzSeeds(t)
	accepted := 0
	for i, s := range seeds {
		for _, kind := range []string{KindPolicy, KindPlan, KindStatus, ""} {
			t.Run(fmt.Sprintf("%d/%s", i, kind), func(t *testing.T) {
				checkDecode(t, fileFor[kind], s, kind)
			})
		}
		if _, errs := Decode(fileFor[""], s, ""); len(errs) == 0 {
			accepted++
		}
	}
	if accepted < 12 {
		t.Errorf("only %d seeds are accepted; the round trip needs valid inputs", accepted)
	}
}
