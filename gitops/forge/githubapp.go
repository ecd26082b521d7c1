package forge

import (
	"context"
	"crypto/rsa"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-github/v60/github"

	"github.com/rebalancer-dev/rebalancer/gitops"
)

// AppTokenSource mints GitHub App installation tokens with go-github v60's Apps
// API: a JWT signed with the App's private key buys a token that lasts an hour;
// it is renewed five minutes before it expires. It authenticates both the REST
// API (Transport) and git over HTTPS (it is a gitops.Credentials).
type AppTokenSource struct {
	appID, installationID int64
	key                   *rsa.PrivateKey
	client                *github.Client
	now                   func() time.Time

	mu      sync.Mutex
	token   string
	expires time.Time
}

var _ gitops.Credentials = (*AppTokenSource)(nil)

// NewAppTokenSource reads the App's PEM private key. apiURL is empty for
// github.com, or an Enterprise server's API base.
func NewAppTokenSource(appID, installationID int64, privateKeyPEM []byte, apiURL string) (*AppTokenSource, error) {
	if appID <= 0 || installationID <= 0 {
		return nil, errors.New("github app: the App ID and installation ID are required")
	}
	key, err := jwt.ParseRSAPrivateKeyFromPEM(privateKeyPEM)
	if err != nil {
		return nil, fmt.Errorf("github app: reading the private key: %w", err)
	}
	s := &AppTokenSource{appID: appID, installationID: installationID, key: key, now: time.Now}
	client := github.NewClient(&http.Client{Transport: &authTransport{header: s.jwtHeader}, Timeout: 30 * time.Second})
	if apiURL != "" {
		if client, err = client.WithEnterpriseURLs(apiURL, apiURL); err != nil {
			return nil, fmt.Errorf("github API URL: %w", err)
		}
	}
	s.client = client
	return s, nil
}

func (s *AppTokenSource) jwtHeader(context.Context) (string, error) {
	now := s.now()
	// Issued a minute in the past to allow for clock drift, as GitHub advises;
	// valid for at most ten minutes.
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.RegisteredClaims{
		IssuedAt: jwt.NewNumericDate(now.Add(-time.Minute)), ExpiresAt: jwt.NewNumericDate(now.Add(9 * time.Minute)),
		Issuer: fmt.Sprint(s.appID)})
	signed, err := tok.SignedString(s.key)
	if err != nil {
		return "", fmt.Errorf("github app: signing the JWT: %w", err)
	}
	return "Bearer " + signed, nil
}

// Token returns a valid installation token, minting one when needed.
func (s *AppTokenSource) Token(ctx context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.token != "" && s.now().Before(s.expires.Add(-5*time.Minute)) {
		return s.token, nil
	}
	it, _, err := s.client.Apps.CreateInstallationToken(ctx, s.installationID, nil)
	if err != nil {
		return "", fmt.Errorf("github app: minting an installation token: %w", err)
	}
	s.token, s.expires = it.GetToken(), it.GetExpiresAt().Time
	return s.token, nil
}

// Transport authenticates REST API calls with the installation token.
func (s *AppTokenSource) Transport() http.RoundTripper {
	return &authTransport{header: func(ctx context.Context) (string, error) {
		t, err := s.Token(ctx)
		return "Bearer " + t, err
	}}
}

// AuthMethod implements gitops.Credentials: git over HTTPS with the installation
// token as the password of x-access-token.
func (s *AppTokenSource) AuthMethod(ctx context.Context, ep *transport.Endpoint) (transport.AuthMethod, error) {
	return gitops.TokenSourceAuth("x-access-token", s.Token).AuthMethod(ctx, ep)
}
