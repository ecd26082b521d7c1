package gitops_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"

	"github.com/rebalancer-dev/rebalancer/gitops"
	"github.com/rebalancer-dev/rebalancer/gitops/gittest"
)

type sshKey struct {
	privateFile string
	private     []byte
	authorized  string
}

func newSSHKey(t *testing.T, comment string) sshKey {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	block, err := ssh.MarshalPrivateKey(priv, comment)
	require.NoError(t, err)
	data := pem.EncodeToMemory(block)
	file := filepath.Join(t.TempDir(), "id_ed25519")
	require.NoError(t, os.WriteFile(file, data, 0o600))
	sp, err := ssh.NewPublicKey(pub)
	require.NoError(t, err)
	return sshKey{privateFile: file, private: data, authorized: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp))) + " " + comment}
}

func newPGPKey(t *testing.T, name string) (private []byte, public string) {
	t.Helper()
	e, err := openpgp.NewEntity(name, "", name+"@example.com", nil)
	require.NoError(t, err)
	var priv, pub bytes.Buffer
	w, err := armor.Encode(&priv, openpgp.PrivateKeyType, nil)
	require.NoError(t, err)
	require.NoError(t, e.SerializePrivate(w, nil))
	require.NoError(t, w.Close())
	w, err = armor.Encode(&pub, openpgp.PublicKeyType, nil)
	require.NoError(t, err)
	require.NoError(t, e.Serialize(w))
	require.NoError(t, w.Close())
	return priv.Bytes(), pub.String()
}

// sshSign makes git sign with an SSH key through ssh-keygen, as a person's git does.
func sshSign(k sshKey) []string {
	return []string{"-c", "gpg.format=ssh", "-c", "user.signingkey=" + k.privateFile}
}

func TestVerifyCommitSignatures(t *testing.T) {
	t.Parallel()
	srv, w := fixture(t)
	alice := newSSHKey(t, "alice@example.com")
	mallory := newSSHKey(t, "mallory@example.com")
	pgpPriv, pgpPub := newPGPKey(t, "Rebalancer Bot")
	_, otherPGP := newPGPKey(t, "Someone Else")

	w.Write("a", "1")
	w.Git("add", "-A")
	w.Git(append(sshSign(alice), "commit", "-q", "-S", "-m", "signed by alice")...)
	byAlice := w.Head()
	w.Write("a", "2")
	w.Git("add", "-A")
	w.Git(append(sshSign(mallory), "commit", "-q", "-S", "-m", "signed by mallory")...)
	byMallory := w.Head()
	w.Write("a", "3")
	unsigned := w.Commit("unsigned")
	w.Push("main")

	kr, err := gitops.ParseKeyring([]byte("# allowed signers\nalice@example.com " + alice.authorized + "\n\n" + pgpPub))
	require.NoError(t, err)
	r := open(t, srv, nil)

	v, err := r.VerifyCommit(plumbing.NewHash(byAlice), kr)
	require.NoError(t, err, "a signature made by OpenSSH verifies")
	assert.Equal(t, "ssh", v.Kind)
	assert.Equal(t, "alice@example.com", v.Signer)
	assert.True(t, strings.HasPrefix(v.Key, "SHA256:"))

	_, err = r.VerifyCommit(plumbing.NewHash(byMallory), kr)
	assert.ErrorIs(t, err, gitops.ErrUntrustedSignature)
	assert.Contains(t, err.Error(), "not in the keyring")

	_, err = r.VerifyCommit(plumbing.NewHash(unsigned), kr)
	assert.ErrorIs(t, err, gitops.ErrUnsigned)

	// Commits we sign ourselves: PGP and SSH.
	pgpSigner, err := gitops.NewPGPSigner(pgpPriv, nil)
	require.NoError(t, err)
	pgpRepo := open(t, srv, func(o *gitops.Options) { o.Signer = pgpSigner })
	res, err := pgpRepo.CommitFiles(context.Background(), "main", map[string][]byte{"b": []byte("1")}, "pgp-signed", nil)
	require.NoError(t, err)
	v, err = r.VerifyCommit(res.Commit, kr)
	require.Error(t, err, "r has not fetched it")
	require.NoError(t, r.Fetch(context.Background()))
	v, err = r.VerifyCommit(res.Commit, kr)
	require.NoError(t, err)
	assert.Equal(t, "pgp", v.Kind)
	assert.Contains(t, v.Signer, "Rebalancer Bot")
	otherKR, err := gitops.ParseKeyring([]byte(otherPGP))
	require.NoError(t, err)
	_, err = r.VerifyCommit(res.Commit, otherKR)
	assert.ErrorIs(t, err, gitops.ErrUntrustedSignature)

	sshSigner, err := gitops.NewSSHSigner(alice.private, nil)
	require.NoError(t, err)
	sshRepo := open(t, srv, func(o *gitops.Options) { o.Signer = sshSigner })
	res, err = sshRepo.CommitFiles(context.Background(), "main", map[string][]byte{"b": []byte("2")}, "ssh-signed", nil)
	require.NoError(t, err)
	require.NoError(t, r.Fetch(context.Background()))
	v, err = r.VerifyCommit(res.Commit, kr)
	require.NoError(t, err)
	assert.Equal(t, "alice@example.com", v.Signer)

	// OpenSSH agrees with our SSH signature.
	allowed := filepath.Join(t.TempDir(), "allowed_signers")
	require.NoError(t, os.WriteFile(allowed, []byte("pat@example.com "+alice.authorized+"\n"), 0o644))
	out := srv.GitIn(t, "fleet", "-c", "gpg.ssh.allowedSignersFile="+allowed, "verify-commit", "-v", res.Commit.String())
	assert.Contains(t, out, "Good \"git\" signature")
}

func TestVerifyPlanChecksTheMergeCommitAndLaterPolicyCommits(t *testing.T) {
	t.Parallel()
	srv, w := fixture(t)
	lead := newSSHKey(t, "lead@example.com")
	kr, err := gitops.ParseKeyring([]byte(lead.authorized))
	require.NoError(t, err)
	// The policy commit of the fixture is unsigned: sign a new version of it.
	w.Write("rebalancer/policies/general.yaml", "kind: RebalancePolicy # v2\n")
	w.Git("add", "-A")
	w.Git(append(sshSign(lead), "commit", "-q", "-S", "-m", "policy v2")...)

	// A PR with an unsigned commit, merged with a signed merge commit.
	w.Git("checkout", "-q", "-b", "rebalancer/prod/general")
	plan := gittest.Plan("prod", "general", "aaaaaa", t0, "n1")
	planFile := "rebalancer/plans/" + plan.Metadata.Name + ".yaml"
	w.Write(planFile, gittest.YAML(t, plan))
	w.Commit("propose")
	w.Git("checkout", "-q", "main")
	w.Git(append(sshSign(lead), "merge", "-q", "--no-ff", "-S", "-m", "Merge pull request #7", "rebalancer/prod/general")...)
	w.Push("main")

	r := open(t, srv, nil)
	ctx := context.Background()
	tip, err := r.Head("main")
	require.NoError(t, err)
	vs, err := r.VerifyPlan(ctx, tip, planFile, "rebalancer/policies", kr)
	require.NoError(t, err, "the merge commit on main is what counts, not the PR's unsigned commit")
	assert.Len(t, vs, 2, "the merge commit and the policy commit")

	// An unsigned policy change after the merge fails verification.
	w.Write("rebalancer/policies/general.yaml", "kind: RebalancePolicy # loosened\n")
	loosened := w.Commit("loosen the policy")
	w.Push("main")
	require.NoError(t, r.Fetch(ctx))
	tip, err = r.Head("main")
	require.NoError(t, err)
	_, err = r.VerifyPlan(ctx, tip, planFile, "rebalancer/policies", kr)
	require.Error(t, err)
	assert.ErrorIs(t, err, gitops.ErrUnsigned)
	assert.Contains(t, err.Error(), loosened[:12])

	// A PR commit signed but merged with an unsigned merge commit fails too.
	srv2, w2 := fixture(t)
	w2.Git("checkout", "-q", "-b", "pr")
	w2.Write(planFile, gittest.YAML(t, plan))
	w2.Git("add", "-A")
	w2.Git(append(sshSign(lead), "commit", "-q", "-S", "-m", "signed proposal")...)
	w2.Git("checkout", "-q", "main")
	w2.Git("merge", "-q", "--no-ff", "-m", "unsigned merge", "pr")
	w2.Push("main")
	r2 := open(t, srv2, nil)
	tip2, err := r2.Head("main")
	require.NoError(t, err)
	_, err = r2.VerifyPlan(ctx, tip2, planFile, "rebalancer/policies", kr)
	require.Error(t, err)
	assert.ErrorIs(t, err, gitops.ErrUnsigned)
	assert.Contains(t, err.Error(), "merged "+planFile)
}
