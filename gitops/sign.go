package gitops

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp"
	"golang.org/x/crypto/ssh"
)

// Signer signs commits: given the commit as git encodes it without a signature, it
// returns the armored signature git stores in the commit's gpgsig header.
type Signer interface {
	Sign(payload []byte) (string, error)
}

// NewPGPSigner signs with the first key of an armored OpenPGP private key ring,
// decrypting it with passphrase when it is protected.
func NewPGPSigner(armoredPrivateKey, passphrase []byte) (Signer, error) {
	ring, err := openpgp.ReadArmoredKeyRing(bytes.NewReader(armoredPrivateKey))
	if err != nil {
		return nil, fmt.Errorf("reading the PGP signing key: %w", err)
	}
	if len(ring) == 0 || ring[0].PrivateKey == nil {
		return nil, errors.New("reading the PGP signing key: no private key in it")
	}
	e := ring[0]
	if e.PrivateKey.Encrypted {
		if err := e.DecryptPrivateKeys(passphrase); err != nil {
			return nil, fmt.Errorf("decrypting the PGP signing key: %w", err)
		}
	}
	return pgpSigner{e}, nil
}

type pgpSigner struct{ e *openpgp.Entity }

func (s pgpSigner) Sign(payload []byte) (string, error) {
	var buf bytes.Buffer
	if err := openpgp.ArmoredDetachSign(&buf, s.e, bytes.NewReader(payload), nil); err != nil {
		return "", err
	}
	return buf.String(), nil
}

// NewSSHSigner signs with an SSH private key (OpenSSH or PEM form), as
// `git -c gpg.format=ssh` does: an SSHSIG signature in the "git" namespace.
func NewSSHSigner(privateKey, passphrase []byte) (Signer, error) {
	var (
		s   ssh.Signer
		err error
	)
	if len(passphrase) > 0 {
		s, err = ssh.ParsePrivateKeyWithPassphrase(privateKey, passphrase)
	} else {
		s, err = ssh.ParsePrivateKey(privateKey)
	}
	if err != nil {
		return nil, fmt.Errorf("reading the SSH signing key: %w", err)
	}
	return sshSigner{s}, nil
}

type sshSigner struct{ s ssh.Signer }

// SSHSIG, as OpenSSH's PROTOCOL.sshsig defines it.
const (
	sshsigMagic     = "SSHSIG"
	sshsigNamespace = "git"
	sshsigBegin     = "-----BEGIN SSH SIGNATURE-----"
	sshsigEnd       = "-----END SSH SIGNATURE-----"
)

func (s sshSigner) Sign(payload []byte) (string, error) {
	const algo = "sha512"
	sum := sha512.Sum512(payload)
	signed := sshsigSignedData(sshsigNamespace, algo, sum[:])
	var (
		sig *ssh.Signature
		err error
	)
	if as, ok := s.s.(ssh.AlgorithmSigner); ok && s.s.PublicKey().Type() == ssh.KeyAlgoRSA {
		sig, err = as.SignWithAlgorithm(rand.Reader, signed, ssh.KeyAlgoRSASHA512)
	} else {
		sig, err = s.s.Sign(rand.Reader, signed)
	}
	if err != nil {
		return "", err
	}
	blob := ssh.Marshal(struct {
		Magic     [6]byte
		Version   uint32
		PublicKey []byte
		Namespace string
		Reserved  string
		Hash      string
		Signature []byte
	}{Version: 1, PublicKey: s.s.PublicKey().Marshal(), Namespace: sshsigNamespace, Hash: algo, Signature: ssh.Marshal(sig)})
	copy(blob[:6], sshsigMagic) // Marshal wrote six zero bytes for the fixed-size magic
	enc := base64.StdEncoding.EncodeToString(blob)
	var b strings.Builder
	b.WriteString(sshsigBegin + "\n")
	for len(enc) > 70 {
		b.WriteString(enc[:70] + "\n")
		enc = enc[70:]
	}
	b.WriteString(enc + "\n" + sshsigEnd + "\n")
	return b.String(), nil
}

// sshsigSignedData is what an SSHSIG signature signs: the magic, the namespace, a
// reserved string, the hash algorithm and the message's hash.
func sshsigSignedData(namespace, algo string, sum []byte) []byte {
	data := ssh.Marshal(struct {
		Namespace string
		Reserved  string
		Hash      string
		Sum       []byte
	}{namespace, "", algo, sum})
	return append([]byte(sshsigMagic), data...)
}

func sshsigHash(algo string) (hash.Hash, error) {
	switch algo {
	case "sha512":
		return sha512.New(), nil
	case "sha256":
		return sha256.New(), nil
	}
	return nil, fmt.Errorf("unsupported SSHSIG hash algorithm %q", algo)
}
