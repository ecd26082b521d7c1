package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rebalancer-dev/rebalancer/cloud/vpsie"
	"github.com/rebalancer-dev/rebalancer/cloud/vpsie/vpsietest"
)

// vpsieServer starts the contract server and clears the VPSie environment, so
// only what a test gives counts.
func vpsieServer(t *testing.T) *vpsietest.Server {
	t.Helper()
	for _, k := range []string{vpsie.EnvAccessToken, vpsie.EnvClientID, vpsie.EnvClientSecret} {
		t.Setenv(k, "")
	}
	s := vpsietest.NewStandard(1)
	t.Cleanup(s.Close)
	return s
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
	return p
}

func TestOfferingsTableWithTokenFile(t *testing.T) {
	s := vpsieServer(t)
	s.AddToken("cli-token")
	code, stdout, stderr := runCLI(t, "offerings", "--provider", "vpsie", "--vpsie-url", s.URL,
		"--vpsie-token-file", writeFile(t, "token", "cli-token\n"))
	require.Equal(t, 0, code, stderr)
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	require.Len(t, lines, 1+1+1+1+3, stdout) // datacenter header + row, blank, offering header + 3 rows
	assert.Regexp(t, `^DATACENTER\s+NAME\s+COUNTRY\s+OFFERINGS$`, lines[0])
	assert.Regexp(t, `^dc-fra1\s+Frankfurt 1\s+DE\s+3$`, lines[1])
	assert.Regexp(t, `^DATACENTER\s+OFFERING\s+ARCH\s+CPU\s+MEMORY\s+DISK\s+MONTHLY\s+HOURLY$`, lines[3])
	// Cheapest first, hourly = monthly / 730.
	assert.Regexp(t, `^dc-fra1\s+std-2vcpu-4gb\s+amd64\s+2\s+4Gi\s+80Gi\s+20\.00\s+0\.0274$`, lines[4])
	assert.Regexp(t, `^dc-fra1\s+cpu-4vcpu-8gb\s+amd64\s+4\s+8Gi\s+160Gi\s+40\.00\s+0\.0548$`, lines[5])
	assert.Regexp(t, `^dc-fra1\s+std-4vcpu-8gb\s+amd64\s+4\s+8Gi\s+160Gi\s+60\.00\s+0\.0822$`, lines[6])
	assert.NotContains(t, stdout, vpsietest.InactiveDC, "inactive datacenters are not listed")
	assert.Zero(t, s.Calls(vpsietest.RouteAuth))
}

func TestOfferingsJSONWithClientCredentialsFromEnv(t *testing.T) {
	s := vpsieServer(t)
	t.Setenv(vpsie.EnvClientID, s.ClientID)
	t.Setenv(vpsie.EnvClientSecret, s.ClientSecret)
	code, stdout, stderr := runCLI(t, "offerings", "--provider", "vpsie", "--vpsie-url", s.URL, "-o", "json")
	require.Equal(t, 0, code, stderr)
	var out offeringsOutput
	require.NoError(t, json.Unmarshal([]byte(stdout), &out))
	assert.Equal(t, "vpsie", out.Provider)
	require.Len(t, out.Datacenters, 1)
	assert.Equal(t, datacenterRow{Identifier: vpsietest.DC, Name: vpsietest.DCName, Country: "DE", Offerings: 3}, out.Datacenters[0])
	require.Len(t, out.Offerings, 3)
	for _, o := range out.Offerings {
		assert.InDelta(t, o.MonthlyPrice/730, o.HourlyPrice, 1e-12, o.Name)
	}
	assert.Equal(t, vpsietest.OfferingNew, out.Offerings[1].Name)
	assert.InDelta(t, vpsietest.PriceNew, out.Offerings[1].MonthlyPrice, 1e-9)
	assert.Equal(t, 1, s.Calls(vpsietest.RouteAuth))
}

func TestOfferingsCredentialsFileAndDatacenterFilter(t *testing.T) {
	s := vpsieServer(t)
	credFile := writeFile(t, "creds.yaml", "clientId: "+s.ClientID+"\nclientSecret: "+s.ClientSecret+"\n")
	code, stdout, stderr := runCLI(t, "offerings", "--provider", "vpsie", "--vpsie-url", s.URL, "--vpsie-credentials-file", credFile,
		"--datacenter", "FRANKFURT 1")
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, vpsietest.OfferingOld)

	code, _, stderr = runCLI(t, "offerings", "--provider", "vpsie", "--vpsie-url", s.URL, "--vpsie-credentials-file", credFile,
		"--datacenter", "atlantis")
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, `no datacenter "atlantis"`)
	assert.Contains(t, stderr, vpsietest.DC, "the known datacenters are named")
}

func TestOfferingsAPIFailureExitsOneAndNamesTheCall(t *testing.T) {
	s := vpsieServer(t)
	credFile := writeFile(t, "creds.json", `{"clientId": "`+s.ClientID+`", "clientSecret": "wrong-secret-value"}`)
	code, stdout, stderr := runCLI(t, "offerings", "--provider", "vpsie", "--vpsie-url", s.URL, "--vpsie-credentials-file", credFile)
	assert.Equal(t, 1, code)
	assert.Empty(t, stdout)
	assert.Contains(t, stderr, "POST /apps/v2/auth/from/api")
	assert.Contains(t, stderr, "Invalid client credentials")
	assert.NotContains(t, stderr, "wrong-secret-value")

	s.AddToken("tok")
	s.Inject(vpsietest.RouteDatacenters, vpsietest.Fault{BodyError: "Service temporarily disabled"})
	code, _, stderr = runCLI(t, "offerings", "--provider", "vpsie", "--vpsie-url", s.URL, "--vpsie-token-file", writeFile(t, "t", "tok"))
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "GET /apps/v2/datacenter")
	assert.Contains(t, stderr, "Service temporarily disabled")
}

func TestOfferingsUsageErrors(t *testing.T) {
	s := vpsieServer(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"offerings", "--provider", "vpsie", "-o", "xml"}, `--output "xml"`},
		{[]string{"offerings", "--provider", "nimbus"}, "supported providers are kwok and vpsie"},
		{[]string{"offerings", "--provider", "kwok"}, "--catalog"},
		{[]string{"offerings", "--provider", "vpsie", "--vpsie-url", s.URL}, "--vpsie-token-file"},
		{[]string{"offerings", "--provider", "vpsie", "--vpsie-url", "ftp://x", "--vpsie-token-file", writeFile(t, "t", "tok")}, "--vpsie-url"},
		{[]string{"offerings", "--provider", "vpsie", "--vpsie-token-file", writeFile(t, "t", "a"), "--vpsie-credentials-file", writeFile(t, "c", "{}")}, "not both"},
		{[]string{"offerings", "extra-arg"}, "unknown command"},
	} {
		code, _, stderr := runCLI(t, tc.args...)
		assert.Equal(t, 2, code, "%v: %s", tc.args, stderr)
		assert.Contains(t, stderr, tc.want, tc.args)
	}
	assert.Zero(t, s.Calls(vpsietest.RouteDatacenters), "no usage error reaches the API")
}

func TestOfferingsKwokCatalog(t *testing.T) {
	catalog := writeFile(t, "catalog.yaml", `apiVersion: rebalancer.dev/v1alpha1
kind: OfferingCatalog
offerings:
  - {name: gen1, datacenter: fra1, arch: amd64, cpu: "4", memory: 8Gi, pods: 110, hourlyPrice: 0.08}
  - {name: gen2, datacenter: ams1, arch: arm64, cpu: "4", memory: 8Gi, pods: 110, hourlyPrice: 0.06}
`)
	code, stdout, stderr := runCLI(t, "offerings", "--catalog", catalog, "--datacenter", "ams1")
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "gen2")
	assert.NotContains(t, stdout, "gen1")
	assert.Contains(t, stdout, "43.80", "0.06 × 730")
}

// analyze, propose and controller build their provider through the same flags.
func TestOfferingsProviderFlagsBuildVPSie(t *testing.T) {
	s := vpsieServer(t)
	pf := providerFlags{provider: "vpsie", vpsie: vpsieFlags{url: s.URL, tokenFile: writeFile(t, "t", "tok")}}
	_, err := pf.build(nil)
	var ee *exitError
	require.ErrorAs(t, err, &ee)
	assert.Equal(t, 2, ee.code)
	assert.Contains(t, err.Error(), "--vpsie-cluster")

	s.AddToken("tok")
	pf.vpsie.cluster = vpsietest.Cluster
	p, err := pf.build(nil)
	require.NoError(t, err)
	assert.Equal(t, "vpsie", p.Name())
	insts, err := p.List(t.Context())
	require.NoError(t, err)
	assert.Len(t, insts, 1, "the cluster's node, through the flags' credentials and URL")
}
