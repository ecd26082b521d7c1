package v1alpha1

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const exampleRoot = "../../deploy/examples/gitops-repo/rebalancer"

func readExample(t testing.TB, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(exampleRoot, rel))
	require.NoError(t, err)
	return string(b)
}

const planFile = "plans/prod-general-20261127-3f9a1c.yaml"
const statusFile = "status/prod-general-20261127-3f9a1c.yaml"

func TestExamplesDecode(t *testing.T) {
	p, err := DecodePolicy("general.yaml", []byte(readExample(t, "policies/general.yaml")))
	require.NoError(t, err)
	assert.Equal(t, StrategyRolling, p.Spec.Strategy)
	assert.Equal(t, "Europe/Berlin", p.Spec.TimeZone)
	assert.Equal(t, 7*24, int(p.Spec.PlanTTL.Hours()))

	plan, err := DecodePlan(filepath.Base(planFile), []byte(readExample(t, planFile)))
	require.NoError(t, err)
	require.Len(t, plan.Spec.Candidates, 2)
	assert.Equal(t, "std-4vcpu-8gb-v2", plan.Spec.Candidates[0].Replacement.Name)
	assert.Equal(t, plan.Spec.ComputeContentDigest(), plan.Spec.ContentDigest)
	assert.Equal(t, "8Gi", plan.Spec.Candidates[0].Current.Memory.String())

	st, err := DecodeStatus(filepath.Base(statusFile), []byte(readExample(t, statusFile)))
	require.NoError(t, err)
	assert.Equal(t, PhaseSucceeded, st.Status.Phase)
	assert.True(t, st.Status.Phase.Terminal())
}

func TestPolicyDefaults(t *testing.T) {
	p, err := DecodePolicy("p.yaml", []byte("apiVersion: rebalancer.dev/v1alpha1\nkind: RebalancePolicy\nmetadata:\n  name: minimal\nspec: {}\n"))
	require.NoError(t, err)
	want := DefaultPolicySpec()
	assert.Equal(t, want, p.Spec)
	assert.Equal(t, StrategyRolling, p.Spec.Strategy)
	assert.InDelta(t, 10.0, p.Spec.SavingsThresholdPercent, 0)
	assert.Equal(t, "24h", p.Spec.MinNodeAge.String())
	assert.Equal(t, "1h", p.Spec.CooldownPeriod.String())
	assert.Equal(t, 1, p.Spec.MaxConcurrent)
	assert.Equal(t, "5m", p.Spec.DrainTimeout.String())
	assert.Equal(t, 10, p.Spec.MaxNodesPerPlan)
	assert.InDelta(t, 20.0, p.Spec.MaxUnhealthyPercent, 0)
	assert.Equal(t, 3, p.Spec.MaxUnhealthyCount)
	assert.Equal(t, "7d", p.Spec.PlanTTL.String())
	assert.Equal(t, SizingMatchCapacity, p.Spec.Sizing)
	assert.InDelta(t, 10.0, p.Spec.HeadroomPercent, 0)
	assert.Equal(t, EmptyDirAllow, p.Spec.LocalStorage.EmptyDir)
	assert.Equal(t, "UTC", p.Spec.TimeZone)

	// Without spec at all the defaults hold too; an explicit zero is kept, not defaulted.
	p, err = DecodePolicy("p.yaml", []byte("apiVersion: rebalancer.dev/v1alpha1\nkind: RebalancePolicy\nmetadata:\n  name: zero\nspec:\n  savingsThresholdPercent: 0\n  maxUnhealthyCount: 0\n"))
	require.NoError(t, err)
	assert.Zero(t, p.Spec.SavingsThresholdPercent)
	assert.Zero(t, p.Spec.MaxUnhealthyCount)
	assert.Equal(t, 1, p.Spec.MaxConcurrent)
}

func TestRoundTrip(t *testing.T) {
	for _, rel := range []string{"policies/general.yaml", planFile, statusFile} {
		t.Run(rel, func(t *testing.T) {
			doc, errs := Decode(filepath.Base(rel), []byte(readExample(t, rel)), "")
			require.Empty(t, errs)
			out, err := Marshal(doc.Object)
			require.NoError(t, err)
			doc2, errs := Decode(filepath.Base(rel), out, "")
			require.Empty(t, errs, "re-decoding:\n%s", out)
			assert.Equal(t, doc.Object, doc2.Object)
			assert.True(t, strings.HasPrefix(string(out), "apiVersion: rebalancer.dev/v1alpha1\nkind: "), "field order kept:\n%s", out)
		})
	}
}

// mutate returns the example text with old replaced by new exactly once.
func mutate(t *testing.T, text, old, new string) string {
	t.Helper()
	require.Equal(t, 1, strings.Count(text, old), "mutation anchor %q", old)
	return strings.Replace(text, old, new, 1)
}

// TestBadInputs is the table of bad inputs and the exact line each must produce.
func TestBadInputs(t *testing.T) {
	policy := readExample(t, "policies/general.yaml")
	plan := readExample(t, planFile)
	status := readExample(t, statusFile)
	const planName = "prod-general-20261127-3f9a1c.yaml"
	big := "apiVersion: rebalancer.dev/v1alpha1\nkind: RebalancePolicy\n# " + strings.Repeat("x", MaxFileSize) + "\n"

	cases := []struct {
		name, file, kind, text string
		want                   []string
	}{
		{"empty file", "p.yaml", KindPolicy, "", []string{
			"p.yaml:1: the file is empty: expected one YAML document with apiVersion and kind"}},
		{"only a comment", "p.yaml", "", "# nothing\n", []string{
			"p.yaml:1: the file is empty: expected one YAML document with apiVersion and kind"}},
		{"two documents", "p.yaml", KindPolicy, policy + "---\n" + policy, []string{
			"p.yaml:31: the file holds 2 YAML documents: expected exactly one (one object per file)"}},
		{"over 1 MiB", "p.yaml", KindPolicy, big, []string{
			"p.yaml:1: the file is 1048637 bytes: rebalancer files are limited to 1048576 bytes (1 MiB)"}},
		{"syntax error", "p.yaml", KindPolicy, "kind: RebalancePolicy\nspec: [\n", []string{
			"p.yaml:2: invalid YAML: did not find expected node content"}},
		{"tab indentation", "p.yaml", KindPolicy, "kind: RebalancePolicy\nspec:\n\tstrategy: rolling\n", []string{
			"p.yaml:3: invalid YAML: found character that cannot start any token"}},
		{"top level is a list", "p.yaml", "", "- a\n- b\n", []string{
			"p.yaml:1: the document is a list: expected a mapping with apiVersion, kind and metadata"}},
		{"unknown kind", "x.yaml", "", "apiVersion: v1\nkind: ConfigMap\n", []string{
			`x.yaml:2: kind: Unsupported value: "ConfigMap": supported values: "RebalancePolicy", "RebalancePlan", "RebalanceStatus"`}},
		{"wrong apiVersion", "p.yaml", KindPolicy, mutate(t, policy, "rebalancer.dev/v1alpha1", "rebalancer.dev/v1"), []string{
			`p.yaml:3: apiVersion: Unsupported value: "rebalancer.dev/v1": supported values: "rebalancer.dev/v1alpha1"`}},
		{"plan in policies dir", planName, KindPolicy, plan, []string{
			"prod-general-20261127-3f9a1c.yaml:2: kind: a RebalancePlan does not belong in policies/: expected kind RebalancePolicy"}},
		{"unknown top-level field", "p.yaml", KindPolicy, policy + "status: {}\n", []string{
			"p.yaml:31: status: unknown field; allowed fields are apiVersion, kind, metadata, spec"}},
		{"unknown spec field", "p.yaml", KindPolicy, mutate(t, policy, "  strategy: rolling\n", "  strategy: rolling\n  stratgy: surge\n"), []string{
			"p.yaml:13: spec.stratgy: unknown field; allowed fields are allowedOfferings, cooldownPeriod, drainTimeout, headroomPercent, localStorage, maintenanceWindows, managedNodes, maxConcurrent, maxNodesPerPlan, maxUnhealthyCount, maxUnhealthyPercent, minNodeAge, nodeGroupLabel, nodeSelector, paused, planTTL, savingsThresholdPercent, sizing, strategy, timeZone"}},
		{"server-side metadata", "p.yaml", KindPolicy, mutate(t, policy, "  name: general\n", "  name: general\n  uid: 1234\n"), []string{
			"p.yaml:7: metadata.uid: unknown field; allowed fields are annotations, labels, name"}},
		{"duplicate key", "p.yaml", KindPolicy, mutate(t, policy, "  maxConcurrent: 1\n", "  maxConcurrent: 1\n  maxConcurrent: 2\n"), []string{
			"p.yaml:17: spec.maxConcurrent: duplicate key (first defined at line 16)"}},
		{"wrong type string for int", "p.yaml", KindPolicy, mutate(t, policy, "maxConcurrent: 1", `maxConcurrent: "1"`), []string{
			`p.yaml:16: spec.maxConcurrent: expected an integer, got the string "1"`}},
		{"wrong type float for int", "p.yaml", KindPolicy, mutate(t, policy, "maxNodesPerPlan: 10", "maxNodesPerPlan: 2.5"), []string{
			"p.yaml:22: spec.maxNodesPerPlan: expected an integer, got the number 2.5"}},
		{"wrong type list for string", "p.yaml", KindPolicy, mutate(t, policy, "strategy: rolling", "strategy: [rolling]"), []string{
			"p.yaml:12: spec.strategy: expected a string, got a list (quote it if it is meant as text)"}},
		{"wrong type bool", "p.yaml", KindPolicy, mutate(t, policy, "  localStorage:", "  paused: yes\n  localStorage:"), []string{
			`p.yaml:29: spec.paused: expected true or false, got the string "yes"`}},
		{"yaml alias", "p.yaml", KindPolicy, mutate(t, policy, "  minNodeAge: 24h\n  cooldownPeriod: 1h", "  minNodeAge: &age 24h\n  cooldownPeriod: *age"), []string{
			"p.yaml:14: spec.minNodeAge: YAML anchors and aliases are not supported: write the value out",
			"p.yaml:15: spec.cooldownPeriod: YAML anchors and aliases are not supported: write the value out"}},
		{"unknown strategy", "p.yaml", KindPolicy, mutate(t, policy, "strategy: rolling", "strategy: canary"), []string{
			`p.yaml:12: spec.strategy: Unsupported value: "canary": supported values: "rolling", "surge", "blue-green"`}},
		{"unknown sizing", "p.yaml", KindPolicy, mutate(t, policy, "sizing: match-capacity", "sizing: biggest"), []string{
			`p.yaml:26: spec.sizing: Unsupported value: "biggest": supported values: "match-capacity", "fit-workload"`}},
		{"percent over 100", "p.yaml", KindPolicy, mutate(t, policy, "savingsThresholdPercent: 10", "savingsThresholdPercent: 150"), []string{
			"p.yaml:13: spec.savingsThresholdPercent: Invalid value: 150: must be a percentage between 0 and 100"}},
		{"negative percent", "p.yaml", KindPolicy, mutate(t, policy, "maxUnhealthyPercent: 20", "maxUnhealthyPercent: -1"), []string{
			"p.yaml:23: spec.maxUnhealthyPercent: Invalid value: -1: must be a percentage between 0 and 100"}},
		{"maxConcurrent zero", "p.yaml", KindPolicy, mutate(t, policy, "maxConcurrent: 1", "maxConcurrent: 0"), []string{
			"p.yaml:16: spec.maxConcurrent: Invalid value: 0: must be 1 or more"}},
		{"bad duration", "p.yaml", KindPolicy, mutate(t, policy, "drainTimeout: 300s", "drainTimeout: 5 minutes"), []string{
			`p.yaml:17: spec.drainTimeout: invalid duration "5 minutes": use a number with a unit such as 90s, 30m, 24h or 7d`}},
		{"duration without unit", "p.yaml", KindPolicy, mutate(t, policy, "drainTimeout: 300s", "drainTimeout: 300"), []string{
			"p.yaml:17: spec.drainTimeout: expected a duration string such as 90s, 30m, 24h or 7d, got 300"}},
		{"negative duration", "p.yaml", KindPolicy, mutate(t, policy, "planTTL: 7d", "planTTL: -7d"), []string{
			`p.yaml:25: spec.planTTL: Invalid value: "-7d": must be positive`}},
		{"zero drain timeout", "p.yaml", KindPolicy, mutate(t, policy, "drainTimeout: 300s", "drainTimeout: 0s"), []string{
			`p.yaml:17: spec.drainTimeout: Invalid value: "0s": must be positive`}},
		{"window bad day", "p.yaml", KindPolicy, mutate(t, policy, `"Sun 00:00-06:00"`, `"Sunday 00:00-06:00"`), []string{
			`p.yaml:20: spec.maintenanceWindows[1]: Invalid value: "Sunday 00:00-06:00": unknown day "Sunday": use one of Mon, Tue, Wed, Thu, Fri, Sat, Sun`}},
		{"window bad hour", "p.yaml", KindPolicy, mutate(t, policy, `"Sat 00:00-06:00"`, `"Sat 00:00-25:00"`), []string{
			`p.yaml:19: spec.maintenanceWindows[0]: Invalid value: "Sat 00:00-25:00": time "25:00" is out of range: hours 00-23, minutes 00-59`}},
		{"window 12-hour clock", "p.yaml", KindPolicy, mutate(t, policy, `"Sat 00:00-06:00"`, `"Sat 1am-6am"`), []string{
			`p.yaml:19: spec.maintenanceWindows[0]: Invalid value: "Sat 1am-6am": time "1am" must be HH:MM in 24-hour time`}},
		{"window empty", "p.yaml", KindPolicy, mutate(t, policy, `"Sat 00:00-06:00"`, `"Sat 03:00-03:00"`), []string{
			`p.yaml:19: spec.maintenanceWindows[0]: Invalid value: "Sat 03:00-03:00": start and end are both 03:00: a window must have a length`}},
		{"unknown time zone", "p.yaml", KindPolicy, mutate(t, policy, "timeZone: Europe/Berlin", "timeZone: CEST"), []string{
			`p.yaml:21: spec.timeZone: Invalid value: "CEST": is not an IANA time zone name such as UTC, Europe/Berlin or America/New_York`}},
		{"name not DNS-1123", "p.yaml", KindPolicy, mutate(t, policy, "name: general", "name: General_Pool"), []string{
			`p.yaml:6: metadata.name: Invalid value: "General_Pool": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')`}},
		{"bad label selector", "p.yaml", KindPolicy, mutate(t, policy, "rebalancer.dev/enabled: \"true\"", "rebalancer.dev/enabled: \"not ok!\""), []string{
			`p.yaml:9: spec.nodeSelector.matchLabels: Invalid value: "not ok!": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')`}},
		{"plan name differs from file", "other.yaml", KindPlan, plan, []string{
			`other.yaml:4: metadata.name: Invalid value: "prod-general-20261127-3f9a1c": must equal the file name "other" (files are named after the plan ID)`}},
		{"plan ID form", "prod-general-x.yaml", KindPlan, strings.ReplaceAll(plan, "prod-general-20261127-3f9a1c", "prod-general-x"), []string{
			`prod-general-x.yaml:4: metadata.name: Invalid value: "prod-general-x": must have the form <cluster>-<node-group>-<yyyymmdd>-<6 hex digits>`}},
		{"plan ID date", "prod-general-20261341-3f9a1c.yaml", KindPlan, strings.ReplaceAll(plan, "prod-general-20261127-3f9a1c", "prod-general-20261341-3f9a1c"), []string{
			`prod-general-20261341-3f9a1c.yaml:4: metadata.name: Invalid value: "prod-general-20261341-3f9a1c": date part "20261341" is not a valid yyyymmdd date`}},
		{"plan ID of another cluster", planName, KindPlan, mutate(t, plan, "cluster: prod", "cluster: staging"), []string{
			`prod-general-20261127-3f9a1c.yaml:4: metadata.name: Invalid value: "prod-general-20261127-3f9a1c": must start with "staging-general-" (<spec.cluster>-<spec.nodeGroup>-)`}},
		{"plan without notAfter", planName, KindPlan, mutate(t, plan, "  notAfter: \"2026-12-04T09:00:00Z\"\n", ""), []string{
			"prod-general-20261127-3f9a1c.yaml:5: spec.notAfter: Required value: the last time the plan may start, in RFC 3339"}},
		{"plan notAfter not a time", planName, KindPlan, mutate(t, plan, `notAfter: "2026-12-04T09:00:00Z"`, `notAfter: next week`), []string{
			`prod-general-20261127-3f9a1c.yaml:13: spec.notAfter: invalid time "next week": expected RFC 3339 such as 2026-12-04T00:00:00Z`}},
		{"plan without candidates", planName, KindPlan, plan[:strings.Index(plan, "  candidates:")] + "  candidates: []\n", []string{
			"prod-general-20261127-3f9a1c.yaml:15: spec.candidates: Required value: a plan needs at least one candidate"}},
		{"step names a stranger", planName, KindPlan, mutate(t, plan, "{batch: 2, action: verify, node: worker-a2}", "{batch: 2, action: verify, node: worker-zz}"), []string{
			`prod-general-20261127-3f9a1c.yaml:39: spec.steps[10].node: Invalid value: "worker-zz": is not one of the plan's candidates`}},
		{"step unknown action", planName, KindPlan, mutate(t, plan, "{batch: 1, action: cordon, node: worker-a1}", "{batch: 1, action: reboot, node: worker-a1}"), []string{
			`prod-general-20261127-3f9a1c.yaml:31: spec.steps[2].action: Unsupported value: "reboot": supported values: "provision", "waitReady", "cordon", "drain", "terminate", "verify"`}},
		{"negative price", planName, KindPlan, mutate(t, plan, "std-4vcpu-8gb-v2, datacenter: fra1, arch: amd64, hourlyPrice: 0.06, cpu: \"4\", memory: 8Gi}\n      monthlySavings: 14.6\n      age: 180d", "std-4vcpu-8gb-v2, datacenter: fra1, arch: amd64, hourlyPrice: -0.06, cpu: \"4\", memory: 8Gi}\n      monthlySavings: 14.6\n      age: 180d"), []string{
			"prod-general-20261127-3f9a1c.yaml:19: spec.candidates[0].replacement.hourlyPrice: Invalid value: -0.06: must not be negative"}},
		{"replacement not cheaper", planName, KindPlan, mutate(t, plan, "hourlyPrice: 0.06, cpu: \"4\", memory: 8Gi}\n      monthlySavings: 14.6\n      age: 95d", "hourlyPrice: 0.09, cpu: \"4\", memory: 8Gi}\n      monthlySavings: 14.6\n      age: 95d"), []string{
			"prod-general-20261127-3f9a1c.yaml:25: spec.candidates[1].replacement.hourlyPrice: Invalid value: 0.09: must be lower than the current hourly price 0.08"}},
		{"candidates edited after proposal", planName, KindPlan, mutate(t, plan, "providerID: kwok://worker-a2", "providerID: kwok://worker-b7"), []string{
			"prod-general-20261127-3f9a1c.yaml:14: spec.contentDigest: Invalid value: \"sha256:25d7c2ad01c246567eeca2ca0c9c016438f3e481c30f72f2b879e9f866759bab\": does not match the plan's candidates and strategy (they were changed after the plan was proposed); expected sha256:fde86534ca98b6bb8e5f7e33974e443f0499c20ba5bb3bdd225f9d18efc6e93c"}},
		{"bad cancel", planName, KindPlan, mutate(t, plan, "  strategy: rolling\n", "  strategy: rolling\n  cancel: abort\n"), []string{
			`prod-general-20261127-3f9a1c.yaml:10: spec.cancel: Unsupported value: "abort": supported values: "stop", "rollback"`}},
		{"bad quantity", planName, KindPlan, mutate(t, plan, "hourlyPrice: 0.08, cpu: \"4\", memory: 8Gi}\n      replacement: {name: std-4vcpu-8gb-v2, datacenter: fra1, arch: amd64, hourlyPrice: 0.06, cpu: \"4\", memory: 8Gi}\n      monthlySavings: 14.6\n      age: 180d", "hourlyPrice: 0.08, cpu: \"4\", memory: 8 GB}\n      replacement: {name: std-4vcpu-8gb-v2, datacenter: fra1, arch: amd64, hourlyPrice: 0.06, cpu: \"4\", memory: 8Gi}\n      monthlySavings: 14.6\n      age: 180d"), []string{
			"prod-general-20261127-3f9a1c.yaml:18: spec.candidates[0].current.memory: quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"}},
		{"status unknown phase", "prod-general-20261127-3f9a1c.yaml", KindStatus, mutate(t, status, "phase: Succeeded\n  cluster", "phase: Done\n  cluster"), []string{
			`prod-general-20261127-3f9a1c.yaml:6: status.phase: Unsupported value: "Done": supported values: "Pending", "Waiting", "Running", "Succeeded", "Failed", "RollingBack", "RolledBack", "RollbackFailed", "Rejected", "Cancelled", "Expired", "Frozen"`}},
		{"status finished before started", "prod-general-20261127-3f9a1c.yaml", KindStatus, mutate(t, status, `finishedAt: "2026-11-28T00:19:41Z"`, `finishedAt: "2026-11-27T00:19:41Z"`), []string{
			`prod-general-20261127-3f9a1c.yaml:12: status.finishedAt: Invalid value: "2026-11-27T00:19:41Z": must not be before startedAt`}},
		{"status with spec", "prod-general-20261127-3f9a1c.yaml", KindStatus, mutate(t, status, "status:\n", "spec: {}\nstatus:\n"), []string{
			"prod-general-20261127-3f9a1c.yaml:5: spec: unknown field; allowed fields are apiVersion, kind, metadata, status"}},
	}
	require.GreaterOrEqual(t, len(cases), 30)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, errs := Decode(tc.file, []byte(tc.text), tc.kind)
			require.NotEmpty(t, errs, "input must be rejected")
			if tc.want == nil {
				return
			}
			got := make([]string, len(errs))
			for i, e := range errs {
				got[i] = e.Error()
			}
			assert.Equal(t, tc.want, got)
		})
	}
}
