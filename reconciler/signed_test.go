package reconciler

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"

	api "github.com/rebalancer-dev/rebalancer/api/v1alpha1"
	"github.com/rebalancer-dev/rebalancer/gitops"
	"github.com/rebalancer-dev/rebalancer/gitops/gittest"
)

// TestRequireSignedCommits: with --require-signed-commits a plan merged by an
// unsigned commit is Rejected before any change, and one merged (with its policy)
// by a commit signed with a trusted key runs.
func TestRequireSignedCommits(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "signed")
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	block, err := ssh.MarshalPrivateKey(priv, "reviewer")
	require.NoError(t, err)
	keyFile := filepath.Join(t.TempDir(), "id_ed25519")
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(block), 0o600))
	sp, err := ssh.NewPublicKey(pub)
	require.NoError(t, err)
	e.keyring, err = gitops.ParseKeyring([]byte(strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp))) + " reviewer\n"))
	require.NoError(t, err)

	unsigned := e.plan("local", "05e05e", e.node("old-0"))
	e.mergePlan(unsigned)
	r, _ := e.reconciler("a", nil)
	require.NoError(t, r.PassAndWait(e.ctx))
	st := e.status(unsigned.Metadata.Name)
	require.NotNil(t, st)
	assert.Equal(t, api.PhaseRejected, st.Status.Phase)
	assert.Contains(t, st.Status.Message, "--require-signed-commits")
	assert.Zero(t, e.provider.provisions.Load(), "nothing was touched")

	// A reviewer merges the next plan, and re-approves the policy, in a signed commit.
	signed := e.plan("local", "5e5e5e", e.node("old-1"))
	f, c := e.planFile(signed)
	e.work.Pull()
	e.work.Write(f, c)
	e.work.Write(e.layout.PoliciesDir()+"/"+e.name+".yaml", gittest.Policy(e.name)+"# reviewed\n")
	e.work.Git("add", "-A")
	e.work.Git("-c", "gpg.format=ssh", "-c", "user.signingkey="+keyFile, "commit", "-q", "-S", "-m", "merge the plan, signed")
	e.work.Push("main")
	require.NoError(t, r.PassAndWait(e.ctx))
	st = e.status(signed.Metadata.Name)
	require.NotNil(t, st)
	assert.Equal(t, api.PhaseSucceeded, st.Status.Phase, st.Status.Message)
}
