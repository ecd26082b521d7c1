package vpsie

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"sigs.k8s.io/yaml"
)

// Environment variables the credentials can come from.
const (
	EnvAccessToken  = "VPSIE_ACCESS_TOKEN"
	EnvClientID     = "VPSIE_CLIENT_ID"
	EnvClientSecret = "VPSIE_CLIENT_SECRET"
)

// credentialsFile is the form of a credentials file, JSON or YAML.
type credentialsFile struct {
	ClientID     string `json:"clientId"`
	ClientSecret string `json:"clientSecret"`
}

// LoadCredentials finds the credentials: a token file, else a credentials file
// ({clientId, clientSecret} as JSON or YAML), else $VPSIE_ACCESS_TOKEN, else
// $VPSIE_CLIENT_ID and $VPSIE_CLIENT_SECRET. getenv is os.Getenv outside tests.
// Errors never quote a file's content.
func LoadCredentials(tokenFile, credentialsPath string, getenv func(string) string) (Credentials, error) {
	if tokenFile != "" && credentialsPath != "" {
		return Credentials{}, errors.New("vpsie credentials: give a token file or a credentials file, not both")
	}
	var c Credentials
	switch {
	case tokenFile != "":
		b, err := os.ReadFile(tokenFile)
		if err != nil {
			return Credentials{}, fmt.Errorf("vpsie token file: %w", err)
		}
		c.Token = strings.TrimSpace(string(b))
		if c.Token == "" {
			return Credentials{}, fmt.Errorf("vpsie token file %s is empty", tokenFile)
		}
	case credentialsPath != "":
		b, err := os.ReadFile(credentialsPath)
		if err != nil {
			return Credentials{}, fmt.Errorf("vpsie credentials file: %w", err)
		}
		var f credentialsFile
		// The parser's message can quote the content: it is not passed on.
		if yaml.UnmarshalStrict(b, &f) != nil {
			return Credentials{}, fmt.Errorf("vpsie credentials file %s: not JSON or YAML of the form {clientId: ..., clientSecret: ...}", credentialsPath)
		}
		c.ClientID, c.ClientSecret = strings.TrimSpace(f.ClientID), strings.TrimSpace(f.ClientSecret)
		if c.ClientID == "" || c.ClientSecret == "" {
			return Credentials{}, fmt.Errorf("vpsie credentials file %s: both clientId and clientSecret are required", credentialsPath)
		}
	case getenv(EnvAccessToken) != "":
		c.Token = strings.TrimSpace(getenv(EnvAccessToken))
	default:
		c.ClientID, c.ClientSecret = strings.TrimSpace(getenv(EnvClientID)), strings.TrimSpace(getenv(EnvClientSecret))
	}
	if err := c.Validate(); err != nil {
		return Credentials{}, fmt.Errorf("%w (--vpsie-token-file, --vpsie-credentials-file, $%s, or $%s and $%s)", err, EnvAccessToken, EnvClientID, EnvClientSecret)
	}
	return c, nil
}
