package gitops

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/go-git/go-git/v5/plumbing"
	"golang.org/x/crypto/ssh"
)

// Signature verification errors, matched with errors.Is.
var (
	// ErrUnsigned: the commit carries no signature.
	ErrUnsigned = errors.New("commit is not signed")
	// ErrUntrustedSignature: the signature is not valid, or not made by a key of the
	// keyring.
	ErrUntrustedSignature = errors.New("commit signature is not by an allowed key")
)

// Keyring holds the public keys allowed to sign: OpenPGP keys (armored blocks) and
// SSH keys (authorized_keys lines, or allowed_signers lines "principal key").
type Keyring struct {
	pgp openpgp.EntityList
	ssh map[string]string // marshaled key → its name (comment or principal)
}

// ParseKeyring reads a keyring file: any number of armored "PGP PUBLIC KEY BLOCK"s
// and, on the other lines, SSH public keys. Blank lines and # comments are ignored.
func ParseKeyring(data []byte) (*Keyring, error) {
	k := &Keyring{ssh: map[string]string{}}
	const begin, end = "-----BEGIN PGP PUBLIC KEY BLOCK-----", "-----END PGP PUBLIC KEY BLOCK-----"
	rest := string(data)
	var lines []string
	for {
		i := strings.Index(rest, begin)
		if i < 0 {
			lines = append(lines, strings.Split(rest, "\n")...)
			break
		}
		lines = append(lines, strings.Split(rest[:i], "\n")...)
		j := strings.Index(rest[i:], end)
		if j < 0 {
			return nil, errors.New("keyring: a PGP PUBLIC KEY BLOCK has no end line")
		}
		block := rest[i : i+j+len(end)]
		ents, err := openpgp.ReadArmoredKeyRing(strings.NewReader(block))
		if err != nil {
			return nil, fmt.Errorf("keyring: reading a PGP key: %w", err)
		}
		k.pgp = append(k.pgp, ents...)
		rest = rest[i+j+len(end):]
	}
	for n, line := range lines {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, name, err := parseSSHKeyLine(line)
		if err != nil {
			return nil, fmt.Errorf("keyring: line %d: %w", n+1, err)
		}
		k.ssh[string(key.Marshal())] = name
	}
	if len(k.pgp) == 0 && len(k.ssh) == 0 {
		return nil, errors.New("keyring: no keys in it")
	}
	return k, nil
}

// parseSSHKeyLine reads "key-type base64 [comment]", optionally preceded by a
// principal and options as in git's gpg.ssh.allowedSignersFile.
func parseSSHKeyLine(line string) (ssh.PublicKey, string, error) {
	fields := strings.Fields(line)
	for i := 0; i < len(fields) && i < 3; i++ {
		key, comment, _, _, err := ssh.ParseAuthorizedKey([]byte(strings.Join(fields[i:], " ")))
		if err == nil {
			name := comment
			if i > 0 {
				name = fields[0]
			}
			return key, name, nil
		}
	}
	return nil, "", errors.New("neither a PGP key block nor an SSH public key")
}

// Verification is one good signature.
type Verification struct {
	Commit plumbing.Hash
	// Kind is "pgp" or "ssh".
	Kind string
	// Key identifies the key: a PGP key ID in hex, or an SSH key's SHA256 fingerprint.
	Key string
	// Signer is the key's identity: a PGP user ID, or the SSH key's comment or principal.
	Signer string
}

// VerifyCommit checks that commit h is signed by a key of kr.
func (r *Repo) VerifyCommit(h plumbing.Hash, kr *Keyring) (Verification, error) {
	r.mu.Lock()
	c, err := r.repo.CommitObject(h)
	if err != nil {
		r.mu.Unlock()
		return Verification{}, fmt.Errorf("reading commit %s: %w", h, err)
	}
	sig := c.PGPSignature
	payload := &plumbing.MemoryObject{}
	err = c.EncodeWithoutSignature(payload)
	r.mu.Unlock()
	if err != nil {
		return Verification{}, err
	}
	if sig == "" {
		return Verification{}, fmt.Errorf("commit %s: %w", shortHash(h), ErrUnsigned)
	}
	data, err := readObject(payload)
	if err != nil {
		return Verification{}, err
	}
	v := Verification{Commit: h}
	switch {
	case strings.Contains(sig, sshsigBegin):
		v.Kind = "ssh"
		key, err := verifySSHSIG(sig, data, sshsigNamespace)
		if err != nil {
			return v, fmt.Errorf("commit %s: %w: %w", shortHash(h), ErrUntrustedSignature, err)
		}
		name, ok := kr.ssh[string(key.Marshal())]
		v.Key = ssh.FingerprintSHA256(key)
		if !ok {
			return v, fmt.Errorf("commit %s: %w: signed by SSH key %s, which is not in the keyring", shortHash(h), ErrUntrustedSignature, v.Key)
		}
		v.Signer = name
	case strings.Contains(sig, "BEGIN PGP SIGNATURE"):
		v.Kind = "pgp"
		ent, err := openpgp.CheckArmoredDetachedSignature(kr.pgp, bytes.NewReader(data), strings.NewReader(sig), nil)
		if err != nil {
			return v, fmt.Errorf("commit %s: %w: %w", shortHash(h), ErrUntrustedSignature, err)
		}
		v.Key = ent.PrimaryKey.KeyIdString()
		for name := range ent.Identities {
			v.Signer = name
			break
		}
	default:
		return v, fmt.Errorf("commit %s: %w: an unknown kind of signature (X.509 is not supported)", shortHash(h), ErrUntrustedSignature)
	}
	return v, nil
}

// verifySSHSIG checks an armored SSHSIG signature over data and returns the key
// that made it.
func verifySSHSIG(armored string, data []byte, namespace string) (ssh.PublicKey, error) {
	body := strings.TrimSpace(armored)
	body = strings.TrimPrefix(body, sshsigBegin)
	body = strings.TrimSuffix(body, sshsigEnd)
	raw, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(body), ""))
	if err != nil {
		return nil, fmt.Errorf("decoding the SSH signature: %w", err)
	}
	if len(raw) < 6 || string(raw[:6]) != sshsigMagic {
		return nil, errors.New("not an SSHSIG signature")
	}
	var blob struct {
		Version   uint32
		PublicKey []byte
		Namespace string
		Reserved  string
		Hash      string
		Signature []byte
	}
	if err := ssh.Unmarshal(raw[6:], &blob); err != nil {
		return nil, fmt.Errorf("decoding the SSH signature: %w", err)
	}
	if blob.Version != 1 {
		return nil, fmt.Errorf("SSHSIG version %d is not supported", blob.Version)
	}
	if blob.Namespace != namespace {
		return nil, fmt.Errorf("the SSH signature is for namespace %q, not %q", blob.Namespace, namespace)
	}
	key, err := ssh.ParsePublicKey(blob.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("the SSH signature's key: %w", err)
	}
	var sig ssh.Signature
	if err := ssh.Unmarshal(blob.Signature, &sig); err != nil {
		return nil, fmt.Errorf("decoding the SSH signature: %w", err)
	}
	h, err := sshsigHash(blob.Hash)
	if err != nil {
		return nil, err
	}
	h.Write(data)
	if err := key.Verify(sshsigSignedData(namespace, blob.Hash, h.Sum(nil)), &sig); err != nil {
		return nil, fmt.Errorf("the SSH signature does not match the commit: %w", err)
	}
	return key, nil
}

// VerifyPlan checks the commits a merged plan's authority rests on, as Flux's
// spec.verify does for a source: the first-parent commit on tip's history that
// added or last changed planFile (for a plan merged in a pull request, the merge or
// squash commit, never a commit of the PR branch), every first-parent commit since
// that changed policiesDir, and the commit that last changed each policy at tip.
// It returns each good signature; the first bad one fails it all.
func (r *Repo) VerifyPlan(ctx context.Context, tip plumbing.Hash, planFile, policiesDir string, kr *Keyring) ([]Verification, error) {
	if kr == nil {
		return nil, errors.New("verifying signatures: no keyring")
	}
	origin, err := r.LastChanged(ctx, tip, planFile)
	if err != nil {
		return nil, fmt.Errorf("finding the commit that merged %s: %w", planFile, err)
	}
	why := map[plumbing.Hash]string{origin.LastChanged: "merged " + planFile}
	policies, err := r.FileHistory(ctx, tip, policiesDir)
	if err != nil {
		return nil, err
	}
	for name, o := range policies {
		if _, ok := why[o.LastChanged]; !ok {
			why[o.LastChanged] = "last changed " + path.Join(policiesDir, name)
		}
	}
	// Policy commits after the plan's, deletions included.
	err = r.FirstParentLog(ctx, tip, func(c CommitInfo) error {
		if c.Hash == origin.LastChanged {
			return ErrStopWalk
		}
		parent := plumbing.ZeroHash
		if len(c.Parents) > 0 {
			parent = c.Parents[0]
		}
		changed, err := r.ChangedPaths(parent, c.Hash)
		if err != nil {
			return err
		}
		for _, p := range changed {
			if strings.HasPrefix(p, strings.TrimSuffix(policiesDir, "/")+"/") {
				if _, ok := why[c.Hash]; !ok {
					why[c.Hash] = "changed " + p
				}
				break
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	hashes := make([]plumbing.Hash, 0, len(why))
	for h := range why {
		hashes = append(hashes, h)
	}
	// The plan's own commit first, so its failure is the one reported.
	sort.Slice(hashes, func(i, j int) bool {
		if (hashes[i] == origin.LastChanged) != (hashes[j] == origin.LastChanged) {
			return hashes[i] == origin.LastChanged
		}
		return hashes[i].String() < hashes[j].String()
	})
	var out []Verification
	for _, h := range hashes {
		v, err := r.VerifyCommit(h, kr)
		if err != nil {
			return out, fmt.Errorf("%s (the commit that %s): %w", planFile, why[h], err)
		}
		out = append(out, v)
	}
	return out, nil
}
