package gitops

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
)

// Typed errors. Each is matched with errors.Is; the error returned carries the
// remote's own words.
var (
	// ErrNonFastForward means the branch on the remote moved since we read it:
	// someone else pushed first. CommitFiles fetches, re-applies its change and
	// pushes again before it gives up with this error.
	ErrNonFastForward = errors.New("non-fast-forward: the remote branch moved since it was fetched")
	// ErrPushRefused means the remote refused the push for good: a protected
	// branch, a pre-receive hook, or a ref the credentials may not write. Retrying
	// does not help; a person must change something.
	ErrPushRefused = errors.New("push refused by the remote")
	// ErrAuth means the remote did not accept the credentials (HTTP 401 or 403, an
	// SSH key or host key that was refused).
	ErrAuth = errors.New("authentication to the git remote failed")
	// ErrRepositoryNotFound means the remote has no repository at the URL (or hides
	// it from these credentials).
	ErrRepositoryNotFound = errors.New("git repository not found")
	// ErrBranchNotFound means the branch does not exist on the remote (as of the last
	// fetch).
	ErrBranchNotFound = errors.New("branch not found")
	// ErrUnavailable means the remote could not be reached or answered with a server
	// error, every attempt of a bounded retry.
	ErrUnavailable = errors.New("git remote unavailable")
)

// PushError is a push the remote answered with "ng": the ref and the remote's reason,
// plus what the remote printed (a hook's message).
type PushError struct {
	Ref    string
	Reason string
	// Remote is what the server printed on its side channel, such as a pre-receive
	// hook's explanation.
	Remote string
	kind   error
}

func (e *PushError) Error() string {
	msg := fmt.Sprintf("%s: pushing %s: %s", e.kind, e.Ref, e.Reason)
	if r := strings.TrimSpace(e.Remote); r != "" {
		msg += " (remote said: " + oneLine(r) + ")"
	}
	return msg
}

// Is makes errors.Is(err, ErrNonFastForward) and errors.Is(err, ErrPushRefused) work.
func (e *PushError) Is(target error) bool { return target == e.kind }

// classifyPushStatus turns a receive-pack "ng" reason into a typed error. Git says
// "non-fast-forward" or "fetch first" when receive.denyNonFastForwards is set, and
// "failed to lock" / "cannot lock ref" / "stale info" when the old value did not
// match because someone else updated the ref in between; all of them mean "fetch
// and try again". Anything else — "pre-receive hook declined", GitHub's
// "protected branch hook declined", "deny updating a hidden ref" — is permanent.
func classifyPushStatus(reason string) error {
	r := strings.ToLower(reason)
	for _, s := range []string{"non-fast-forward", "fetch first", "failed to lock", "cannot lock ref", "stale info", "incorrect old value", "failed to update ref"} {
		if strings.Contains(r, s) {
			return ErrNonFastForward
		}
	}
	return ErrPushRefused
}

// classifyTransport wraps a transport error into a typed one and tells whether
// trying again may help.
func classifyTransport(op string, err error) (wrapped error, transient bool) {
	if err == nil {
		return nil, false
	}
	switch {
	case errors.Is(err, transport.ErrAuthenticationRequired), errors.Is(err, transport.ErrAuthorizationFailed),
		errors.Is(err, transport.ErrInvalidAuthMethod):
		return fmt.Errorf("%s: %w: %w", op, ErrAuth, err), false
	case errors.Is(err, transport.ErrRepositoryNotFound):
		return fmt.Errorf("%s: %w: %w", op, ErrRepositoryNotFound, err), false
	case errors.Is(err, ErrNonFastForward), errors.Is(err, ErrPushRefused), errors.Is(err, ErrAuth):
		return fmt.Errorf("%s: %w", op, err), false
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("%s: %w", op, err), false
	}
	if strings.Contains(err.Error(), "ssh: handshake failed") || strings.Contains(err.Error(), "knownhosts:") ||
		strings.Contains(err.Error(), "unable to authenticate") {
		return fmt.Errorf("%s: %w: %w", op, ErrAuth, err), false
	}
	var herr *githttp.Err
	var uerr *plumbing.UnexpectedError
	if errors.As(err, &uerr) {
		errors.As(uerr.Err, &herr) // go-git's UnexpectedError does not unwrap
	}
	if herr != nil || errors.As(err, &herr) {
		if herr.StatusCode() >= 500 || herr.StatusCode() == 429 {
			return fmt.Errorf("%s: %w: %w", op, ErrUnavailable, err), true
		}
		return fmt.Errorf("%s: %w", op, err), false
	}
	var nerr net.Error
	if errors.As(err, &nerr) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w: %w", op, ErrUnavailable, err), true
	}
	msg := err.Error()
	for _, s := range []string{"connection refused", "connection reset", "EOF", "timeout", "no such host", "broken pipe"} {
		if strings.Contains(msg, s) {
			return fmt.Errorf("%s: %w: %w", op, ErrUnavailable, err), true
		}
	}
	return fmt.Errorf("%s: %w", op, err), false
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " ")), " ")
}
