package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const (
	exampleRepo = "../../deploy/examples/gitops-repo"
	planName    = "prod-general-20261127-3f9a1c.yaml"
)

// runCLI runs the command line and returns its exit code, stdout and stderr.
func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(t.Context(), args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// copyExample copies the example repository's rebalancer/ directory to
// <t.TempDir()>/<rel> and returns the temporary repository root.
func copyExample(t *testing.T, rel string) string {
	t.Helper()
	root := t.TempDir()
	require.NoError(t, os.CopyFS(filepath.Join(root, rel), os.DirFS(filepath.Join(exampleRepo, "rebalancer"))))
	return root
}

// edit replaces old by new, exactly once, in the file at path.
func edit(t *testing.T, path, old, new string) {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, 1, strings.Count(string(b), old), "anchor %q in %s", old, path)
	require.NoError(t, os.WriteFile(path, []byte(strings.Replace(string(b), old, new, 1)), 0o644))
}

func TestValidateExampleRepo(t *testing.T) {
	code, stdout, stderr := runCLI(t, "validate", exampleRepo)
	assert.Equal(t, 0, code, "stderr: %s", stderr)
	assert.Equal(t, "ok: 3 files valid (1 policies, 1 plans, 1 statuses)\n", stdout)
	assert.Empty(t, stderr)
}

func TestValidateExampleRepoJSON(t *testing.T) {
	code, stdout, stderr := runCLI(t, "validate", "-o", "json", exampleRepo)
	assert.Equal(t, 0, code, "stderr: %s", stderr)
	assert.JSONEq(t, "[]", stdout)
}

func TestValidateSingleFiles(t *testing.T) {
	// Files given directly are checked by the kind they declare.
	code, stdout, stderr := runCLI(t, "validate",
		filepath.Join(exampleRepo, "rebalancer/policies/general.yaml"),
		filepath.Join(exampleRepo, "rebalancer/plans", planName))
	assert.Equal(t, 0, code, "stderr: %s", stderr)
	assert.Equal(t, "ok: 2 files valid (1 policies, 1 plans, 0 statuses)\n", stdout)
}

// badPlanRepo is a copy of the example whose plan has a mistyped strategy and a
// duplicate key.
func badPlanRepo(t *testing.T) (root, plan string) {
	root = copyExample(t, "rebalancer")
	plan = filepath.Join(root, "rebalancer", "plans", planName)
	edit(t, plan, "  strategy: rolling\n", "  strategy: rollling\n")
	edit(t, plan, "  maxConcurrent: 1\n", "  maxConcurrent: 1\n  maxConcurrent: 2\n")
	return root, plan
}

func TestValidateBadPlan(t *testing.T) {
	root, plan := badPlanRepo(t)
	code, stdout, stderr := runCLI(t, "validate", root)
	assert.Equal(t, 1, code)
	// Every problem, sorted by line, each as file:line: field: message.
	assert.Equal(t, []string{
		plan + `:9: spec.strategy: Unsupported value: "rollling": supported values: "rolling", "surge", "blue-green"`,
		plan + ":11: spec.maxConcurrent: duplicate key (first defined at line 10)",
		plan + `:15: spec.contentDigest: Invalid value: "sha256:25d7c2ad01c246567eeca2ca0c9c016438f3e481c30f72f2b879e9f866759bab": does not match the plan's candidates and strategy (they were changed after the plan was proposed); expected sha256:`,
	}, clipDigest(strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")))
	assert.NotContains(t, stdout, "ok:")
	assert.Equal(t, "3 problems in 3 files checked\n", stderr)
}

// clipDigest cuts lines after "expected sha256:" so the test does not pin a hash
// of the mistyped content.
func clipDigest(lines []string) []string {
	for i, l := range lines {
		if j := strings.Index(l, "expected sha256:"); j >= 0 {
			lines[i] = l[:j+len("expected sha256:")]
		}
	}
	return lines
}

func TestValidateBadPlanJSON(t *testing.T) {
	root, plan := badPlanRepo(t)
	code, stdout, _ := runCLI(t, "validate", "-o", "json", root)
	assert.Equal(t, 1, code)
	type problem struct {
		File    string `json:"file"`
		Line    int    `json:"line"`
		Field   string `json:"field"`
		Message string `json:"message"`
	}
	var got []problem
	dec := json.NewDecoder(strings.NewReader(stdout))
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(&got), "stdout: %s", stdout)
	require.Len(t, got, 3)
	assert.Equal(t, problem{File: plan, Line: 9, Field: "spec.strategy",
		Message: `Unsupported value: "rollling": supported values: "rolling", "surge", "blue-green"`}, got[0])
	assert.Equal(t, problem{File: plan, Line: 11, Field: "spec.maxConcurrent",
		Message: "duplicate key (first defined at line 10)"}, got[1])
	assert.Equal(t, "spec.contentDigest", got[2].Field)
	assert.Equal(t, 15, got[2].Line)
	// The four keys are the whole format.
	var raw []map[string]any
	require.NoError(t, json.Unmarshal([]byte(stdout), &raw))
	assert.ElementsMatch(t, []string{"file", "line", "field", "message"}, keys(raw[0]))
}

func keys(m map[string]any) []string {
	var k []string
	for key := range m {
		k = append(k, key)
	}
	return k
}

func TestValidateNonexistentPath(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope")
	code, stdout, stderr := runCLI(t, "validate", missing)
	assert.Equal(t, 2, code)
	assert.Empty(t, stdout)
	assert.Equal(t, "error: "+missing+": no such file or directory\n", stderr)
}

func TestValidateDirectoryWithoutRebalancer(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "docs"), 0o755))
	code, stdout, stderr := runCLI(t, "validate", dir)
	assert.Equal(t, 2, code)
	assert.Empty(t, stdout)
	assert.Equal(t, "error: "+dir+": no rebalancer/ directory with policies/, plans/ or status/ in it (set --path to where they live)\n", stderr)
}

func TestValidateUsageErrors(t *testing.T) {
	code, _, stderr := runCLI(t, "validate", "-o", "yaml", exampleRepo)
	assert.Equal(t, 2, code)
	assert.Equal(t, "error: --output \"yaml\": use text or json\n", stderr)

	code, _, stderr = runCLI(t, "validate", "--strict", exampleRepo)
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, "unknown flag: --strict")
}

func TestValidatePlanNamesMissingPolicy(t *testing.T) {
	root := copyExample(t, "rebalancer")
	plan := filepath.Join(root, "rebalancer", "plans", planName)
	edit(t, plan, "  policy: general\n", "  policy: gpu\n")
	code, stdout, _ := runCLI(t, "validate", root)
	assert.Equal(t, 1, code)
	assert.Equal(t, plan+`:8: spec.policy: Not found: "gpu": no policy of that name in `+filepath.Join(root, "rebalancer", "policies")+"\n", stdout)
}

func TestValidatePlanInPoliciesDir(t *testing.T) {
	root := copyExample(t, "rebalancer")
	misplaced := filepath.Join(root, "rebalancer", "policies", planName)
	b, err := os.ReadFile(filepath.Join(root, "rebalancer", "plans", planName))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(misplaced, b, 0o644))
	code, stdout, _ := runCLI(t, "validate", root)
	assert.Equal(t, 1, code)
	assert.Equal(t, misplaced+":2: kind: a RebalancePlan does not belong in policies/: expected kind RebalancePolicy\n", stdout)
}

func TestValidateDuplicatePolicyNames(t *testing.T) {
	root := copyExample(t, "rebalancer")
	policies := filepath.Join(root, "rebalancer", "policies")
	b, err := os.ReadFile(filepath.Join(policies, "general.yaml"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(policies, "general-copy.yaml"), b, 0o644))
	code, stdout, _ := runCLI(t, "validate", root)
	assert.Equal(t, 1, code)
	// Files are read in name order, so general-copy.yaml claims the name first.
	assert.Equal(t, filepath.Join(policies, "general.yaml")+`:6: metadata.name: Duplicate value: "general": also the name of the policy in `+
		filepath.Join(policies, "general-copy.yaml")+"\n", stdout)
}

func TestValidateCustomPath(t *testing.T) {
	root := copyExample(t, "clusters/prod/rebalancer")
	code, stdout, stderr := runCLI(t, "validate", "--path", "clusters/prod/rebalancer", root)
	assert.Equal(t, 0, code, "stderr: %s", stderr)
	assert.Equal(t, "ok: 3 files valid (1 policies, 1 plans, 1 statuses)\n", stdout)

	// Without --path the files are not where rebalancer looks.
	code, _, stderr = runCLI(t, "validate", root)
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, "no rebalancer/ directory")

	// A problem is reported under the custom path.
	plan := filepath.Join(root, "clusters/prod/rebalancer/plans", planName)
	edit(t, plan, "  policy: general\n", "  policy: gpu\n")
	code, stdout, _ = runCLI(t, "validate", "--path", "clusters/prod/rebalancer", root)
	assert.Equal(t, 1, code)
	assert.True(t, strings.HasPrefix(stdout, plan+`:8: spec.policy: Not found: "gpu"`), stdout)
}

func TestVersion(t *testing.T) {
	code, stdout, stderr := runCLI(t, "version")
	assert.Equal(t, 0, code)
	assert.Equal(t, "rebalancer dev (commit unknown)\n", stdout)
	assert.Empty(t, stderr)
}
