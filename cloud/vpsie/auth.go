package vpsie

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// authRequest is the body of POST /apps/v2/auth/from/api.
type authRequest struct {
	ClientID     string `json:"clientId"`
	ClientSecret string `json:"clientSecret"`
}

// authResponse is its answer.
type authResponse struct {
	Token struct {
		Access struct {
			Token   string   `json:"token"`
			Expires flexTime `json:"expires"`
		} `json:"access"`
		Refresh struct {
			Token   string   `json:"token"`
			Expires flexTime `json:"expires"`
		} `json:"refresh"`
	} `json:"token"`
}

// canRefresh: only client credentials can mint a new token.
func (c *Client) canRefresh() bool { return c.creds.Token == "" }

func (c *Client) currentToken() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.token
}

// validToken returns a token that is not about to expire, refreshing it first
// when it is.
func (c *Client) validToken(ctx context.Context) (string, error) {
	c.mu.Lock()
	tok, exp := c.token, c.expires
	c.mu.Unlock()
	if !c.canRefresh() {
		return tok, nil
	}
	if tok != "" && (exp.IsZero() || c.clock.Now().Before(exp.Add(-c.refreshSkew))) {
		return tok, nil
	}
	if err := c.refresh(ctx, tok); err != nil {
		return "", err
	}
	return c.currentToken(), nil
}

// refresh replaces the token stale with a new one. Concurrent callers share one
// request; a caller whose stale token was already replaced gets the new one
// without another request. ORDER: the check of the current token happens inside
// the single flight, so a caller arriving just after a refresh finished does not
// start a second one.
func (c *Client) refresh(ctx context.Context, stale string) error {
	_, err, _ := c.refreshes.Do("token", func() (any, error) {
		c.mu.Lock()
		tok, exp := c.token, c.expires
		c.mu.Unlock()
		if tok != "" && tok != stale && (exp.IsZero() || c.clock.Now().Before(exp.Add(-c.refreshSkew))) {
			return nil, nil
		}
		// The flight is shared: it must not die with the caller that started it.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.callTimeout*time.Duration(c.attempts)+time.Minute)
		defer cancel()
		var out authResponse
		err := c.do(fctx, request{method: http.MethodPost, path: AuthPath, noAuth: true, idempotent: true,
			json: authRequest{ClientID: c.creds.ClientID, ClientSecret: c.creds.ClientSecret}}, &out)
		if err != nil {
			return nil, fmt.Errorf("getting an access token with the client credentials: %w", err)
		}
		if out.Token.Access.Token == "" {
			return nil, errors.New("getting an access token with the client credentials: the answer holds no token.access.token")
		}
		c.mu.Lock()
		c.token, c.expires = out.Token.Access.Token, out.Token.Access.Expires.Time
		c.mu.Unlock()
		c.log.Info("vpsie access token obtained", "expires", out.Token.Access.Expires.Time)
		return nil, nil
	})
	return err
}
