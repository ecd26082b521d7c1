package gitops

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"

	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	"github.com/skeema/knownhosts"
)

// Credentials supply the authentication for one remote call. They are asked
// before every call because some expire (a GitHub App installation token lasts an
// hour). Implementations never log or print the secret.
type Credentials interface {
	AuthMethod(ctx context.Context, endpoint *transport.Endpoint) (transport.AuthMethod, error)
}

// TokenAuth authenticates HTTPS with a token as the basic-auth password (GitHub,
// GitLab, Gitea and Bitbucket all accept this). username may be empty: GitHub's
// "x-access-token" is used, which every forge above ignores or accepts.
func TokenAuth(username, token string) Credentials {
	return TokenSourceAuth(username, func(context.Context) (string, error) { return token, nil })
}

// TokenSourceAuth is TokenAuth with a token fetched on each call, such as a GitHub
// App installation token that is renewed before it expires.
func TokenSourceAuth(username string, token func(ctx context.Context) (string, error)) Credentials {
	if username == "" {
		username = "x-access-token"
	}
	return tokenAuth{username: username, token: token}
}

type tokenAuth struct {
	username string
	token    func(ctx context.Context) (string, error)
}

func (a tokenAuth) AuthMethod(ctx context.Context, ep *transport.Endpoint) (transport.AuthMethod, error) {
	if ep.Protocol != "https" && ep.Protocol != "http" {
		return nil, fmt.Errorf("%w: a token authenticates http(s) remotes, not %s", ErrAuth, ep.Protocol)
	}
	tok, err := a.token(ctx)
	if err != nil {
		return nil, fmt.Errorf("getting a token for %s: %w", ep.Host, err)
	}
	return &githttp.BasicAuth{Username: a.username, Password: tok}, nil
}

// BasicAuth authenticates HTTPS with a user name and password.
func BasicAuth(username, password string) Credentials {
	return TokenAuth(username, password)
}

// SSHKeyAuth authenticates an ssh:// (or scp-like) remote with a private key in
// OpenSSH or PEM form, and checks the server's host key against knownHostsFile
// (OpenSSH known_hosts format). The host key is always checked: there is no way
// to turn that off.
func SSHKeyAuth(user string, privateKey []byte, passphrase, knownHostsFile string) (Credentials, error) {
	if knownHostsFile == "" {
		return nil, errors.New("ssh auth needs a known_hosts file: the server's host key is always checked")
	}
	if user == "" {
		user = "git"
	}
	keys, err := gitssh.NewPublicKeys(user, privateKey, passphrase)
	if err != nil {
		return nil, fmt.Errorf("reading the ssh private key: %w", err)
	}
	db, err := gitssh.NewKnownHostsDb(knownHostsFile)
	if err != nil {
		return nil, fmt.Errorf("reading known_hosts %s: %w", knownHostsFile, err)
	}
	return sshAuth{keys: keys, db: db}, nil
}

type sshAuth struct {
	keys *gitssh.PublicKeys
	db   *knownhosts.HostKeyDB
}

func (a sshAuth) AuthMethod(_ context.Context, ep *transport.Endpoint) (transport.AuthMethod, error) {
	if ep.Protocol != "ssh" {
		return nil, fmt.Errorf("%w: an ssh key authenticates ssh remotes, not %s", ErrAuth, ep.Protocol)
	}
	port := ep.Port
	if port == 0 {
		port = 22
	}
	keys := *a.keys
	keys.HostKeyCallback = a.db.HostKeyCallback()
	keys.HostKeyAlgorithms = a.db.HostKeyAlgorithms(net.JoinHostPort(ep.Host, strconv.Itoa(port)))
	return &keys, nil
}
