package gitops_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"

	"github.com/rebalancer-dev/rebalancer/gitops"
)

// sshGitServer serves the repositories under root over SSH as a forge does: the
// client's key must be authorized, and `git-upload-pack '<path>'` /
// `git-receive-pack '<path>'` run git itself.
func sshGitServer(t *testing.T, root string, authorized ssh.PublicKey) (addr string, hostKey ssh.PublicKey) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	signer, err := ssh.NewSignerFromKey(priv)
	require.NoError(t, err)
	cfg := &ssh.ServerConfig{PublicKeyCallback: func(_ ssh.ConnMetadata, k ssh.PublicKey) (*ssh.Permissions, error) {
		if string(k.Marshal()) == string(authorized.Marshal()) {
			return nil, nil
		}
		return nil, fmt.Errorf("unknown key")
	}}
	cfg.AddHostKey(signer)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go serveSSH(c, cfg, root)
		}
	}()
	return l.Addr().String(), signer.PublicKey()
}

func serveSSH(c net.Conn, cfg *ssh.ServerConfig, root string) {
	defer c.Close()
	_, chans, reqs, err := ssh.NewServerConn(c, cfg)
	if err != nil {
		return
	}
	go ssh.DiscardRequests(reqs)
	for nc := range chans {
		if nc.ChannelType() != "session" {
			_ = nc.Reject(ssh.UnknownChannelType, "session only")
			continue
		}
		ch, requests, err := nc.Accept()
		if err != nil {
			return
		}
		go func() {
			defer ch.Close()
			for req := range requests {
				if req.Type != "exec" {
					_ = req.Reply(false, nil)
					continue
				}
				var p struct{ Command string }
				_ = ssh.Unmarshal(req.Payload, &p)
				verb, arg, _ := strings.Cut(p.Command, " ")
				if verb != "git-upload-pack" && verb != "git-receive-pack" {
					_ = req.Reply(false, nil)
					return
				}
				_ = req.Reply(true, nil)
				repo := filepath.Join(root, filepath.Clean("/"+strings.Trim(arg, "'")))
				cmd := exec.Command("git", strings.TrimPrefix(verb, "git-"), repo)
				cmd.Stdin, cmd.Stdout, cmd.Stderr = ch, ch, ch.Stderr()
				status := uint32(0)
				if err := cmd.Run(); err != nil {
					status = 1
				}
				var b [4]byte
				binary.BigEndian.PutUint32(b[:], status)
				_, _ = ch.SendRequest("exit-status", false, b[:])
				return
			}
		}()
	}
}

func TestSSHAuthChecksTheHostKey(t *testing.T) {
	t.Parallel()
	srv, w := fixture(t)
	client := newSSHKey(t, "bot@example.com")
	clientKey, _, _, _, err := ssh.ParseAuthorizedKey([]byte(client.authorized))
	require.NoError(t, err)
	addr, hostKey := sshGitServer(t, srv.Root, clientKey)
	host, port, _ := net.SplitHostPort(addr)
	url := fmt.Sprintf("ssh://git@%s:%s/fleet.git", host, port)
	knownHosts := filepath.Join(t.TempDir(), "known_hosts")
	line := fmt.Sprintf("[%s]:%s %s", host, port, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(hostKey))))
	require.NoError(t, os.WriteFile(knownHosts, []byte(line+"\n"), 0o600))

	auth, err := gitops.SSHKeyAuth("git", client.private, "", knownHosts)
	require.NoError(t, err)
	r, err := gitops.Open(context.Background(), gitops.Options{URL: url, Auth: auth, Author: bot, Timeout: 20 * time.Second})
	require.NoError(t, err)
	head, err := r.Head("main")
	require.NoError(t, err)
	assert.Equal(t, w.Head(), head.String())
	res, err := r.CommitFiles(context.Background(), "main", map[string][]byte{"rebalancer/status/p.yaml": []byte("x\n")}, "over ssh", nil)
	require.NoError(t, err)
	assert.Equal(t, res.Commit.String(), srv.Rev(t, "fleet", "main"), "pushed over SSH")

	// A known_hosts that names another key for this host: refused, not retried.
	_, other, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	otherSigner, err := ssh.NewSignerFromKey(other)
	require.NoError(t, err)
	wrong := filepath.Join(t.TempDir(), "known_hosts")
	require.NoError(t, os.WriteFile(wrong, []byte(fmt.Sprintf("[%s]:%s %s", host, port, ssh.MarshalAuthorizedKey(otherSigner.PublicKey()))), 0o600))
	auth, err = gitops.SSHKeyAuth("git", client.private, "", wrong)
	require.NoError(t, err)
	_, err = gitops.Open(context.Background(), gitops.Options{URL: url, Auth: auth, Author: bot, Timeout: 20 * time.Second})
	require.Error(t, err)
	assert.ErrorIs(t, err, gitops.ErrAuth)

	_, err = gitops.SSHKeyAuth("git", client.private, "", "")
	assert.Error(t, err, "no known_hosts, no SSH")
}
