package vpsie_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/rebalancer-dev/rebalancer/cloud"
	"github.com/rebalancer-dev/rebalancer/cloud/vpsie"
	"github.com/rebalancer-dev/rebalancer/cloud/vpsie/vpsietest"
)

// server starts the standard account and stops it with the test.
func server(t *testing.T, oldNodes int) *vpsietest.Server {
	t.Helper()
	s := vpsietest.NewStandard(oldNodes)
	t.Cleanup(s.Close)
	return s
}

// creds are the server's client credentials.
func creds(s *vpsietest.Server) vpsie.Credentials {
	return vpsie.Credentials{ClientID: s.ClientID, ClientSecret: s.ClientSecret}
}

// client returns a client with fast retries, a generous rate limit and a short
// deadline per call.
func client(t *testing.T, s *vpsietest.Server, c vpsie.Credentials, opts ...vpsie.ClientOption) *vpsie.Client {
	t.Helper()
	opts = append([]vpsie.ClientOption{vpsie.WithRetry(4, time.Millisecond, 5*time.Millisecond), vpsie.WithRateLimit(1000, 1000),
		vpsie.WithCallTimeout(2 * time.Second)}, opts...)
	cl, err := vpsie.NewClient(s.URL, c, opts...)
	require.NoError(t, err)
	return cl
}

func TestDirectTokenIsSentAndNeverRefreshed(t *testing.T) {
	s := server(t, 0)
	s.AddToken("static-token")
	c := client(t, s, vpsie.Credentials{Token: "static-token"})
	dcs, err := c.Datacenters(t.Context())
	require.NoError(t, err)
	require.Len(t, dcs, 2)
	assert.Equal(t, vpsie.Datacenter{Identifier: vpsietest.DC, Name: vpsietest.DCName, State: "FRA", Country: "DE", Active: true}, dcs[0])
	assert.False(t, dcs[1].Active)
	assert.Zero(t, s.Calls(vpsietest.RouteAuth), "a token given directly is used as it is")
}

func TestDirectTokenRefusedIsAClearErrorNotRetried(t *testing.T) {
	s := server(t, 0)
	c := client(t, s, vpsie.Credentials{Token: "wrong-token"})
	_, err := c.PlanCategories(t.Context())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "GET /api/v2/plans/category")
	assert.Contains(t, err.Error(), "HTTP 401")
	assert.NotContains(t, err.Error(), "wrong-token")
	assert.False(t, cloud.IsRetryable(err))
	assert.Equal(t, 1, s.Calls(vpsietest.RouteCategories))
	assert.Zero(t, s.Calls(vpsietest.RouteAuth))
}

func TestClientCredentialsGetOneTokenForManyCalls(t *testing.T) {
	s := server(t, 0)
	c := client(t, s, creds(s))
	for range 5 {
		_, err := c.PlanCategories(t.Context())
		require.NoError(t, err)
	}
	assert.Equal(t, 1, s.Calls(vpsietest.RouteAuth))
	assert.Equal(t, 5, s.Calls(vpsietest.RouteCategories))
}

func TestWrongClientCredentialsNameTheAuthCall(t *testing.T) {
	s := server(t, 0)
	c := client(t, s, vpsie.Credentials{ClientID: "someone", ClientSecret: "not-the-secret"})
	_, err := c.PlanCategories(t.Context())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "POST /apps/v2/auth/from/api")
	assert.Contains(t, err.Error(), "Invalid client credentials", "the body-level error of an HTTP 200")
	assert.NotContains(t, err.Error(), "not-the-secret")
	assert.Zero(t, s.Calls(vpsietest.RouteCategories), "nothing is sent without a token")
}

func TestTokenIsRefreshedBeforeItExpires(t *testing.T) {
	s := server(t, 0)
	clk := clocktesting.NewFakeClock(time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC))
	s.Clock, s.TokenTTL = clk, 10*time.Minute
	c := client(t, s, creds(s), vpsie.WithClock(clk), vpsie.WithRefreshBefore(2*time.Minute))
	_, err := c.PlanCategories(t.Context())
	require.NoError(t, err)
	clk.Step(7 * time.Minute) // still 3 minutes to go: no refresh
	_, err = c.PlanCategories(t.Context())
	require.NoError(t, err)
	assert.Equal(t, 1, s.Calls(vpsietest.RouteAuth))
	clk.Step(90 * time.Second) // 90 s to go: refreshed before use
	_, err = c.PlanCategories(t.Context())
	require.NoError(t, err)
	assert.Equal(t, 2, s.Calls(vpsietest.RouteAuth))
	for _, l := range s.Log() {
		assert.NotContains(t, l, "-> 401", "the token never ran out in use")
	}
}

// Tokens expire on the server mid-run (revoked, or the server's clock is ahead):
// every concurrent caller gets 401, exactly one refresh happens, and everyone
// succeeds with the new token.
func TestExpiredTokenMidRunOneRefreshForConcurrentCallers(t *testing.T) {
	s := server(t, 0)
	c := client(t, s, creds(s))
	_, err := c.PlanCategories(t.Context())
	require.NoError(t, err)
	require.Equal(t, 1, s.Calls(vpsietest.RouteAuth))
	// A slow auth answer makes every caller arrive while the refresh is in flight.
	s.Inject(vpsietest.RouteAuth, vpsietest.Fault{Delay: 200 * time.Millisecond})
	s.ExpireTokens()

	const callers = 40
	start := make(chan struct{})
	errs := make([]error, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			<-start
			_, errs[i] = c.PlanCategories(t.Context())
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		require.NoError(t, err, "caller %d", i)
	}
	assert.Equal(t, 2, s.Calls(vpsietest.RouteAuth), "exactly one refresh after the expiry")
}

// A request sent with the old token is refused after another caller already
// refreshed: it uses the new token without refreshing again.
func TestLateRefusalOfTheOldTokenDoesNotRefreshAgain(t *testing.T) {
	s := server(t, 0)
	c := client(t, s, creds(s))
	_, err := c.PlanCategories(t.Context())
	require.NoError(t, err)
	s.Inject(vpsietest.RouteCategories, vpsietest.Fault{Delay: 500 * time.Millisecond})
	late := make(chan error, 1)
	go func() { _, err := c.PlanCategories(t.Context()); late <- err }()
	require.Eventually(t, func() bool { return s.Calls(vpsietest.RouteCategories) == 2 }, 5*time.Second, time.Millisecond)
	s.ExpireTokens()
	_, err = c.Datacenters(t.Context()) // refused, refreshes, succeeds
	require.NoError(t, err)
	require.Equal(t, 2, s.Calls(vpsietest.RouteAuth))
	require.NoError(t, <-late, "the held request is refused with the old token, then succeeds")
	assert.Equal(t, 2, s.Calls(vpsietest.RouteAuth), "no second refresh for the late refusal")
	assert.Contains(t, s.Log(), vpsietest.RouteCategories+" -> 401")
}

// stepper advances a fake clock while a call runs, so backoff and Retry-After
// waits pass without sleeping; it returns how much fake time passed.
func stepper(clk *clocktesting.FakeClock, call func()) time.Duration {
	start := clk.Now()
	done := make(chan struct{})
	go func() { call(); close(done) }()
	for {
		select {
		case <-done:
			return clk.Since(start)
		case <-time.After(time.Millisecond):
			if clk.HasWaiters() {
				clk.Step(500 * time.Millisecond)
			}
		}
	}
}

func Test429HonoursRetryAfter(t *testing.T) {
	s := server(t, 0)
	s.AddToken("tok")
	clk := clocktesting.NewFakeClock(time.Now())
	c := client(t, s, vpsie.Credentials{Token: "tok"}, vpsie.WithClock(clk))
	s.Inject(vpsietest.RouteCategories, vpsietest.Fault{Status: http.StatusTooManyRequests, RetryAfter: "7"})
	var err error
	waited := stepper(clk, func() { _, err = c.PlanCategories(t.Context()) })
	require.NoError(t, err)
	assert.Equal(t, 2, s.Calls(vpsietest.RouteCategories))
	assert.GreaterOrEqual(t, waited, 7*time.Second, "Retry-After: 7 was honoured")
	assert.Less(t, waited, 9*time.Second)
}

func TestRetryAfterBeyondTheCapIsARetryableErrorWithTheWait(t *testing.T) {
	s := server(t, 0)
	s.AddToken("tok")
	c := client(t, s, vpsie.Credentials{Token: "tok"}, vpsie.WithMaxRetryAfter(time.Minute))
	s.Inject(vpsietest.RouteCategories, vpsietest.Fault{Status: http.StatusTooManyRequests, RetryAfter: "3600"})
	_, err := c.PlanCategories(t.Context())
	require.Error(t, err)
	var re *cloud.RetryableError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, time.Hour, re.After)
	assert.Contains(t, err.Error(), "GET /api/v2/plans/category")
	assert.Equal(t, 1, s.Calls(vpsietest.RouteCategories))
}

func Test5xxBurstIsRetriedWithBackoff(t *testing.T) {
	s := server(t, 0)
	s.AddToken("tok")
	clk := clocktesting.NewFakeClock(time.Now())
	c := client(t, s, vpsie.Credentials{Token: "tok"}, vpsie.WithClock(clk), vpsie.WithRetry(5, time.Second, 8*time.Second),
		vpsie.WithJitter(func() float64 { return 0.999 }))
	s.Inject(vpsietest.RouteCategories, vpsietest.Fault{Status: 502}, vpsietest.Fault{Status: 503}, vpsietest.Fault{Status: 500})
	var err error
	waited := stepper(clk, func() { _, err = c.PlanCategories(t.Context()) })
	require.NoError(t, err)
	assert.Equal(t, 4, s.Calls(vpsietest.RouteCategories))
	// Backoff 1s, 2s, 4s with jitter near 1: about 7 s of waiting.
	assert.GreaterOrEqual(t, waited, 6*time.Second)
	assert.Less(t, waited, 9*time.Second)
}

func Test5xxBeyondTheAttemptsIsARetryableError(t *testing.T) {
	s := server(t, 0)
	s.AddToken("tok")
	c := client(t, s, vpsie.Credentials{Token: "tok"})
	for range 4 {
		s.Inject(vpsietest.RouteDatacenters, vpsietest.Fault{Status: http.StatusServiceUnavailable})
	}
	_, err := c.Datacenters(t.Context())
	require.Error(t, err)
	assert.True(t, cloud.IsRetryable(err))
	assert.Contains(t, err.Error(), "GET /apps/v2/datacenter")
	assert.Contains(t, err.Error(), "HTTP 503")
	assert.Equal(t, 4, s.Calls(vpsietest.RouteDatacenters))
}

func TestErrorInA200BodyIsAnError(t *testing.T) {
	s := server(t, 0)
	s.AddToken("tok")
	c := client(t, s, vpsie.Credentials{Token: "tok"})
	s.Inject(vpsietest.RouteNodeGroups, vpsietest.Fault{BodyError: "Cluster is locked by another operation"})
	_, err := c.NodeGroups(t.Context(), vpsietest.Cluster)
	require.Error(t, err)
	var ae *vpsie.APIError
	require.ErrorAs(t, err, &ae)
	assert.Equal(t, http.StatusOK, ae.Status)
	assert.Contains(t, err.Error(), "GET /apps/v2/k8s/node/groups/byClusterId/"+vpsietest.Cluster)
	assert.Contains(t, err.Error(), "Cluster is locked by another operation")
	assert.False(t, cloud.IsRetryable(err), "the server answered: it is not a transient failure")
	assert.Equal(t, 1, s.Calls(vpsietest.RouteNodeGroups))
}

func TestMalformedJSONIsAClearError(t *testing.T) {
	s := server(t, 0)
	s.AddToken("tok")
	c := client(t, s, vpsie.Credentials{Token: "tok"})
	s.Inject(vpsietest.RouteDatacenters, vpsietest.Fault{Malformed: true})
	var err error
	require.NotPanics(t, func() { _, err = c.Datacenters(t.Context()) })
	require.Error(t, err)
	assert.Contains(t, err.Error(), "GET /apps/v2/datacenter")
	assert.Contains(t, err.Error(), "not the JSON expected")
}

func TestSlowEndpointPastTheDeadline(t *testing.T) {
	s := server(t, 0)
	s.AddToken("tok")
	c := client(t, s, vpsie.Credentials{Token: "tok"}, vpsie.WithCallTimeout(100*time.Millisecond), vpsie.WithRetry(3, time.Millisecond, time.Millisecond))

	t.Run("one slow answer is retried", func(t *testing.T) {
		s.Inject(vpsietest.RouteCategories, vpsietest.Fault{Delay: 2 * time.Second})
		cats, err := c.PlanCategories(t.Context())
		require.NoError(t, err)
		assert.Len(t, cats, 2)
	})
	t.Run("always slow fails within the deadlines", func(t *testing.T) {
		for range 3 {
			s.Inject(vpsietest.RouteDatacenters, vpsietest.Fault{Delay: 5 * time.Second})
		}
		start := time.Now()
		_, err := c.Datacenters(t.Context())
		require.Error(t, err)
		assert.Less(t, time.Since(start), 2*time.Second, "three attempts of 100 ms, not the server's 5 s")
		assert.Contains(t, err.Error(), "GET /apps/v2/datacenter")
		assert.Contains(t, err.Error(), "deadline")
		assert.True(t, cloud.IsRetryable(err))
		assert.ErrorIs(t, err, context.DeadlineExceeded)
	})
}

func TestRateLimitSpacesRequests(t *testing.T) {
	s := server(t, 0)
	s.AddToken("tok")
	clk := clocktesting.NewFakeClock(time.Now())
	c := client(t, s, vpsie.Credentials{Token: "tok"}, vpsie.WithClock(clk), vpsie.WithRateLimit(2, 1))
	waited := stepper(clk, func() {
		for range 5 {
			_, err := c.PlanCategories(t.Context())
			require.NoError(t, err)
		}
	})
	// 2 per second, burst 1: the four requests after the first wait 0.5 s each.
	assert.GreaterOrEqual(t, waited, 2*time.Second)
	assert.Equal(t, 5, s.Calls(vpsietest.RouteCategories))
}

// Whatever happens — auth, refresh, retries, failures — neither the client
// secret nor any token reaches a log line or an error message.
func TestCredentialsNeverLogged(t *testing.T) {
	s := server(t, 1)
	var logs bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s.ClientSecret = "s3cr3t-" + strings.Repeat("x", 12)
	cr := creds(s)
	c := client(t, s, cr, vpsie.WithLogger(logger))
	p := vpsie.New(c, vpsietest.Cluster, vpsie.WithProviderLogger(logger))
	ctx := t.Context()
	var errs []error
	collect := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	_, err := p.Offerings(ctx)
	collect(err)
	s.ExpireTokens()
	s.Inject(vpsietest.RouteCluster, vpsietest.Fault{Status: http.StatusTooManyRequests, RetryAfter: "0"}, vpsietest.Fault{Status: 500})
	_, err = p.List(ctx)
	collect(err)
	s.Inject(vpsietest.RouteAddNode, vpsietest.Fault{LoseResponse: true})
	_, err = p.Provision(ctx, cloud.ProvisionRequest{Offering: vpsietest.OfferingNew, Datacenter: vpsietest.DC})
	collect(err)
	s.Inject(vpsietest.RouteCategories, vpsietest.Fault{BodyError: "boom"})
	_, err = c.PlanCategories(ctx)
	collect(err)
	s.Inject(vpsietest.RouteAuth, vpsietest.Fault{Status: 500}, vpsietest.Fault{Status: 500}, vpsietest.Fault{Status: 500}, vpsietest.Fault{Status: 500})
	s.ExpireTokens()
	_, err = c.PlanCategories(ctx)
	collect(err)
	require.Len(t, errs, 2, "the body error and the failed refresh")
	require.NotEmpty(t, logs.String(), "the run logged something")
	require.Contains(t, logs.String(), "retrying")

	secrets := append([]string{cr.ClientSecret}, s.Issued()...)
	require.GreaterOrEqual(t, len(secrets), 5)
	shown := logs.String() + fmt.Sprintf("%v %+v %#v %s", cr, cr, cr, cr)
	for _, e := range errs {
		shown += e.Error()
	}
	for _, secret := range secrets {
		assert.NotContains(t, shown, secret)
	}
}

func TestLoadCredentials(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
		return p
	}
	noEnv := func(string) string { return "" }
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

	c, err := vpsie.LoadCredentials(write("token", "  tok-123\n"), "", env(map[string]string{vpsie.EnvAccessToken: "from-env"}))
	require.NoError(t, err)
	assert.Equal(t, vpsie.Credentials{Token: "tok-123"}, c, "the file wins over the environment")

	c, err = vpsie.LoadCredentials("", write("c.json", `{"clientId": "id1", "clientSecret": "sec1"}`), noEnv)
	require.NoError(t, err)
	assert.Equal(t, vpsie.Credentials{ClientID: "id1", ClientSecret: "sec1"}, c)

	c, err = vpsie.LoadCredentials("", write("c.yaml", "clientId: id2\nclientSecret: sec2\n"), noEnv)
	require.NoError(t, err)
	assert.Equal(t, vpsie.Credentials{ClientID: "id2", ClientSecret: "sec2"}, c)

	c, err = vpsie.LoadCredentials("", "", env(map[string]string{vpsie.EnvAccessToken: "env-tok"}))
	require.NoError(t, err)
	assert.Equal(t, vpsie.Credentials{Token: "env-tok"}, c)

	c, err = vpsie.LoadCredentials("", "", env(map[string]string{vpsie.EnvClientID: "eid", vpsie.EnvClientSecret: "esec"}))
	require.NoError(t, err)
	assert.Equal(t, vpsie.Credentials{ClientID: "eid", ClientSecret: "esec"}, c)

	_, err = vpsie.LoadCredentials("", "", noEnv)
	assert.ErrorContains(t, err, "none given")
	_, err = vpsie.LoadCredentials("", "", env(map[string]string{vpsie.EnvClientID: "eid"}))
	assert.ErrorContains(t, err, "client secret")
	_, err = vpsie.LoadCredentials(write("t2", "x"), write("c2.json", "{}"), noEnv)
	assert.ErrorContains(t, err, "not both")
	_, err = vpsie.LoadCredentials(write("empty", "\n"), "", noEnv)
	assert.ErrorContains(t, err, "empty")

	// A broken file's content never appears in the error.
	_, err = vpsie.LoadCredentials("", write("bad.yaml", "clientId: id3\nclientSecret: [leaky-secret\n"), noEnv)
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "leaky-secret")
	_, err = vpsie.LoadCredentials("", write("typo.yaml", "clientId: id3\nclientSecrte: leaky-secret2\n"), noEnv)
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "leaky-secret2")
	_, err = vpsie.LoadCredentials("", filepath.Join(dir, "missing"), noEnv)
	assert.True(t, errors.Is(err, os.ErrNotExist))
}

func TestVMs(t *testing.T) {
	s := server(t, 2)
	c := client(t, s, creds(s))
	vms, err := c.VMs(t.Context())
	require.NoError(t, err)
	require.Len(t, vms, 2)
	for i, want := range s.Nodes(vpsietest.Cluster) {
		assert.Equal(t, want.Identifier, vms[i].Identifier)
		assert.Equal(t, want.Hostname, vms[i].Hostname)
		assert.Equal(t, vpsietest.PlanOld, vms[i].BoxsizeID)
		assert.Equal(t, vpsietest.DC, vms[i].DcIdentifier)
		assert.Equal(t, int64(8192), vms[i].RAMMB)
		assert.False(t, vms[i].CreatedOn.IsZero())
		one, err := c.VM(t.Context(), want.Identifier)
		require.NoError(t, err)
		assert.Equal(t, vms[i], *one)
	}
	_, err = c.VM(t.Context(), "vm-none")
	assert.ErrorIs(t, err, cloud.ErrNotFound)
	assert.Contains(t, err.Error(), "GET /api/v2/vm/vm-none")
}

func TestNewClientValidates(t *testing.T) {
	_, err := vpsie.NewClient("ftp://x", vpsie.Credentials{Token: "t"})
	assert.ErrorContains(t, err, "http(s)://host")
	_, err = vpsie.NewClient("", vpsie.Credentials{Token: "t", ClientID: "i", ClientSecret: "s"})
	assert.ErrorContains(t, err, "not both")
	c, err := vpsie.NewClient("", vpsie.Credentials{Token: "t"})
	require.NoError(t, err)
	assert.NotNil(t, c)
}
