// Package vpsie is the cloud.Provider for VPSie (https://vpsie.com), in
// managed-Kubernetes mode: the machines are the worker nodes of one VPSie
// Kubernetes cluster, bought by adding a node to a node group of the wanted size
// and sold by removing that node.
//
// It is written from the facts of VPSie's public API (paths, field names, the
// `Vpsie-Auth` header, errors reported as HTTP 200 with `"error": true`), not
// from VPSie's SDK. The Client underneath authenticates with an access token
// given directly or obtained from a client ID and secret (refreshed before it
// expires, one refresh at a time), rate-limits itself, gives every call a
// deadline, retries 429 and 5xx with backoff and jitter honouring Retry-After,
// and names the call that failed in every error. Credentials never reach a log
// line or an error message.
package vpsie

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"
	"k8s.io/utils/clock"

	"github.com/rebalancer-dev/rebalancer/cloud"
)

// DefaultURL is VPSie's API.
const DefaultURL = "https://api.vpsie.com"

// AuthHeader carries the access token on every request.
const AuthHeader = "Vpsie-Auth"

// AuthPath exchanges a client ID and secret for an access token.
const AuthPath = "/apps/v2/auth/from/api"

// maxBody bounds what is read from one response.
const maxBody = 16 << 20

// Credentials authenticate the client: either Token, or ClientID and ClientSecret.
// Its String and LogValue never show the secrets, so a Credentials that reaches a
// log line or an error by mistake leaks nothing.
type Credentials struct {
	// Token is an access token given directly; it cannot be refreshed.
	Token string
	// ClientID and ClientSecret are exchanged for access tokens, refreshed as needed.
	ClientID     string
	ClientSecret string
}

// Mode names the authentication mode, for messages.
func (c Credentials) Mode() string {
	switch {
	case c.Token != "":
		return "access token"
	case c.ClientID != "" || c.ClientSecret != "":
		return "client credentials"
	}
	return "none"
}

// String implements fmt.Stringer without the secrets.
func (c Credentials) String() string { return "vpsie credentials (" + c.Mode() + ", redacted)" }

// GoString keeps %#v from printing the secrets.
func (c Credentials) GoString() string { return c.String() }

// LogValue implements slog.LogValuer without the secrets.
func (c Credentials) LogValue() slog.Value { return slog.StringValue(c.String()) }

// Validate checks that exactly one mode is configured and complete.
func (c Credentials) Validate() error {
	switch {
	case c.Token != "" && (c.ClientID != "" || c.ClientSecret != ""):
		return errors.New("vpsie credentials: give either an access token or a client ID and secret, not both")
	case c.Token != "":
		return nil
	case c.ClientID == "" && c.ClientSecret == "":
		return errors.New("vpsie credentials: none given (an access token, or a client ID and secret)")
	case c.ClientID == "" || c.ClientSecret == "":
		return errors.New("vpsie credentials: a client ID needs its client secret and the other way round")
	}
	return nil
}

// APIError is an answer from VPSie that reports a failure: an HTTP status other
// than 2xx, or a body with "error": true.
type APIError struct {
	Method, Path string
	// Status is the HTTP status code (200 for a body-level error).
	Status int
	// Code is the body's "code" field, when it has one.
	Code    int
	Message string
}

func (e *APIError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	if e.Status == http.StatusOK {
		return fmt.Sprintf("vpsie %s %s: the API answered HTTP 200 with error: %s", e.Method, e.Path, msg)
	}
	return fmt.Sprintf("vpsie %s %s: HTTP %d: %s", e.Method, e.Path, e.Status, msg)
}

// Is makes a 404 (by status or by body code) match cloud.ErrNotFound.
func (e *APIError) Is(target error) bool {
	return target == cloud.ErrNotFound && (e.Status == http.StatusNotFound || e.Code == http.StatusNotFound)
}

// ErrAmbiguous marks a failure after which nobody knows whether the server
// acted: the request may have been processed and its answer lost (a timeout, a
// dropped connection, a 5xx, an unreadable body). Callers of non-idempotent
// calls check the server's state instead of retrying.
var ErrAmbiguous = errors.New("the request may or may not have been processed")

// Client talks to VPSie's API.
type Client struct {
	base        *url.URL
	creds       Credentials
	http        *http.Client
	clock       clock.Clock
	log         *slog.Logger
	limiter     *rate.Limiter
	callTimeout time.Duration
	attempts    int
	backoff     time.Duration
	maxBackoff  time.Duration
	maxWait     time.Duration
	refreshSkew time.Duration
	jitter      func() float64

	mu        sync.Mutex
	token     string
	expires   time.Time // zero: unknown (a token given directly)
	refreshes singleflight.Group
}

// ClientOption configures a Client.
type ClientOption func(*Client)

// WithHTTPClient replaces the HTTP client (its Timeout is left alone; every call
// gets its own deadline from WithCallTimeout).
func WithHTTPClient(h *http.Client) ClientOption { return func(c *Client) { c.http = h } }

// WithClock injects the clock that times backoff, Retry-After, the rate limit and
// token expiry.
func WithClock(clk clock.Clock) ClientOption { return func(c *Client) { c.clock = clk } }

// WithLogger sets the logger; credentials are never passed to it.
func WithLogger(l *slog.Logger) ClientOption { return func(c *Client) { c.log = l } }

// WithRateLimit limits requests to r per second with bursts of burst.
func WithRateLimit(r float64, burst int) ClientOption {
	return func(c *Client) { c.limiter = rate.NewLimiter(rate.Limit(r), burst) }
}

// WithCallTimeout is the deadline of one HTTP request (default 30s).
func WithCallTimeout(d time.Duration) ClientOption { return func(c *Client) { c.callTimeout = d } }

// WithRetry sets how many attempts a call gets (default 5) and the backoff between
// them: exponential from base, capped at max, with full jitter.
func WithRetry(attempts int, base, max time.Duration) ClientOption {
	return func(c *Client) { c.attempts, c.backoff, c.maxBackoff = max1(attempts), base, max }
}

// WithMaxRetryAfter caps how long a Retry-After is honoured before the call gives
// up with a retryable error carrying the wait (default 5m).
func WithMaxRetryAfter(d time.Duration) ClientOption { return func(c *Client) { c.maxWait = d } }

// WithRefreshBefore sets how long before its expiry a token is refreshed (default 2m).
func WithRefreshBefore(d time.Duration) ClientOption { return func(c *Client) { c.refreshSkew = d } }

// WithJitter replaces the source of jitter (a function returning [0,1)), for tests.
func WithJitter(f func() float64) ClientOption { return func(c *Client) { c.jitter = f } }

func max1(n int) int { return max(n, 1) }

// NewClient returns a client for the API at baseURL (DefaultURL when empty).
func NewClient(baseURL string, creds Credentials, opts ...ClientOption) (*Client, error) {
	if baseURL == "" {
		baseURL = DefaultURL
	}
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("vpsie API URL %q: want http(s)://host", baseURL)
	}
	if err := creds.Validate(); err != nil {
		return nil, err
	}
	c := &Client{
		base: u, creds: creds, http: &http.Client{}, clock: clock.RealClock{},
		log:     slog.New(slog.DiscardHandler),
		limiter: rate.NewLimiter(5, 10), callTimeout: 30 * time.Second,
		attempts: 5, backoff: 500 * time.Millisecond, maxBackoff: 30 * time.Second, maxWait: 5 * time.Minute,
		refreshSkew: 2 * time.Minute, jitter: rand.Float64,
		token: creds.Token,
	}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// request is one logical call.
type request struct {
	method, path string
	query        url.Values
	json         any        // a JSON body
	form         url.Values // a form body
	// idempotent calls are retried after ambiguous failures (timeouts, 5xx);
	// the others only after a 429, which promises the request was not processed.
	idempotent bool
	noAuth     bool
}

func (r request) name() string { return r.method + " " + r.path }

// envelope is what every VPSie answer carries.
type envelope struct {
	Error   flexBool `json:"error"`
	Message string   `json:"message"`
	Code    flexInt  `json:"code"`
}

// do runs a call with rate limiting, deadlines, authentication and retries, and
// decodes the answer's body into out (nil: the body is checked and dropped).
func (c *Client) do(ctx context.Context, req request, out any) error {
	refreshed := false
	var last error
	for attempt := 1; ; attempt++ {
		used, err := c.once(ctx, req, out)
		if err == nil {
			return nil
		}
		last = err
		var ae *APIError
		if errors.As(err, &ae) && ae.Status == http.StatusUnauthorized && !req.noAuth && !refreshed && c.canRefresh() {
			// The token was refused before its time (revoked, or the server's clock
			// runs ahead): one refresh, shared with every concurrent caller, then
			// the call again. It does not count as an attempt.
			refreshed = true
			attempt--
			// ORDER: the token this request used is the stale one, not the current
			// one: another caller may have refreshed already.
			if rerr := c.refresh(ctx, used); rerr != nil {
				return fmt.Errorf("vpsie %s: the token was refused and refreshing it failed: %w", req.name(), rerr)
			}
			continue
		}
		wait, retry := c.retryable(req, err, attempt)
		if !retry {
			break
		}
		if wait > c.maxWait {
			return &cloud.RetryableError{Err: fmt.Errorf("vpsie %s: asked to wait %s before retrying: %w", req.name(), wait, err), After: wait}
		}
		c.log.Warn("vpsie call failed; retrying", "call", req.name(), "attempt", attempt, "wait", wait, "error", err.Error())
		if err := c.sleep(ctx, wait); err != nil {
			return fmt.Errorf("vpsie %s: waiting to retry after %v: %w", req.name(), last, err)
		}
	}
	if isTransient(last) {
		return cloud.Retryable(last)
	}
	return last
}

// retryable decides whether a failed attempt is tried again and after how long.
func (c *Client) retryable(req request, err error, attempt int) (time.Duration, bool) {
	if attempt >= c.attempts {
		return 0, false
	}
	var te *transientError
	if !errors.As(err, &te) {
		return 0, false
	}
	if !te.rejected && !req.idempotent {
		return 0, false // it may have been done: never blindly again
	}
	if te.retryAfter > 0 {
		return te.retryAfter, true
	}
	d := c.backoff << (attempt - 1)
	if d > c.maxBackoff || d <= 0 {
		d = c.maxBackoff
	}
	return time.Duration(c.jitter() * float64(d)), true // full jitter
}

func (c *Client) sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := c.clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C():
		return nil
	}
}

// transientError is a failure worth another attempt.
type transientError struct {
	err        error
	retryAfter time.Duration
	// rejected: the server refused the request without processing it (429).
	rejected bool
}

func (e *transientError) Error() string { return e.err.Error() }
func (e *transientError) Unwrap() error { return e.err }

func isTransient(err error) bool {
	var te *transientError
	return errors.As(err, &te)
}

// once makes one HTTP request and returns the token it sent.
func (c *Client) once(ctx context.Context, req request, out any) (token string, _ error) {
	if err := c.wait(ctx); err != nil {
		return token, fmt.Errorf("vpsie %s: waiting for the client-side rate limit: %w", req.name(), err)
	}
	if !req.noAuth {
		var err error
		if token, err = c.validToken(ctx); err != nil {
			return "", fmt.Errorf("vpsie %s: %w", req.name(), err)
		}
	}
	callCtx, cancel := context.WithTimeout(ctx, c.callTimeout)
	defer cancel()
	u := *c.base
	u.Path = c.base.Path + req.path
	u.RawQuery = req.query.Encode()
	var body io.Reader
	contentType := ""
	switch {
	case req.json != nil:
		b, err := json.Marshal(req.json)
		if err != nil {
			return token, fmt.Errorf("vpsie %s: encoding the request: %w", req.name(), err)
		}
		body, contentType = bytes.NewReader(b), "application/json"
	case req.form != nil:
		body, contentType = strings.NewReader(req.form.Encode()), "application/x-www-form-urlencoded"
	}
	hreq, err := http.NewRequestWithContext(callCtx, req.method, u.String(), body)
	if err != nil {
		return token, fmt.Errorf("vpsie %s: %w", req.name(), err)
	}
	hreq.Header.Set("Accept", "application/json")
	if contentType != "" {
		hreq.Header.Set("Content-Type", contentType)
	}
	if token != "" {
		hreq.Header.Set(AuthHeader, token)
	}
	resp, err := c.http.Do(hreq)
	if err != nil {
		// url.Error repeats the URL; ours holds no secret, but keep the message short.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		if ctx.Err() != nil {
			return token, fmt.Errorf("vpsie %s: %w: %w", req.name(), ErrAmbiguous, ctx.Err()) // the caller gave up
		}
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("no answer within the call's deadline of %s: %w", c.callTimeout, err)
		}
		return token, &transientError{err: fmt.Errorf("vpsie %s: %w: %w", req.name(), ErrAmbiguous, err)}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return token, &transientError{err: fmt.Errorf("vpsie %s: reading the answer (HTTP %d): %w: %w", req.name(), resp.StatusCode, ErrAmbiguous, err)}
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		ae := &APIError{Method: req.method, Path: req.path, Status: resp.StatusCode}
		var env envelope
		if json.Unmarshal(data, &env) == nil {
			ae.Message, ae.Code = env.Message, int(env.Code)
		}
		switch {
		case resp.StatusCode == http.StatusTooManyRequests:
			return token, &transientError{err: ae, retryAfter: retryAfter(resp.Header.Get("Retry-After"), c.clock.Now()), rejected: true}
		case resp.StatusCode >= 500:
			return token, &transientError{err: fmt.Errorf("%w (%w)", ae, ErrAmbiguous), retryAfter: retryAfter(resp.Header.Get("Retry-After"), c.clock.Now())}
		}
		return token, ae
	}
	var env envelope
	if err := json.Unmarshal(data, &env); err != nil {
		return token, fmt.Errorf("vpsie %s: the answer (HTTP %d, %d bytes) is not the JSON expected: %w: %w", req.name(), resp.StatusCode, len(data), ErrAmbiguous, err)
	}
	if env.Error {
		return token, &APIError{Method: req.method, Path: req.path, Status: resp.StatusCode, Code: int(env.Code), Message: env.Message}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return token, fmt.Errorf("vpsie %s: decoding the answer: %w: %w", req.name(), ErrAmbiguous, err)
		}
	}
	return token, nil
}

// wait takes a token from the rate limiter, sleeping on the injected clock.
func (c *Client) wait(ctx context.Context) error {
	now := c.clock.Now()
	r := c.limiter.ReserveN(now, 1)
	if !r.OK() {
		return errors.New("the rate limit admits no request")
	}
	if d := r.DelayFrom(now); d > 0 {
		if err := c.sleep(ctx, d); err != nil {
			r.CancelAt(c.clock.Now())
			return err
		}
	}
	return nil
}

// retryAfter reads a Retry-After header: seconds or an HTTP date.
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0)
	}
	return 0
}
