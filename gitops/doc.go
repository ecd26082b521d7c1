// Package gitops is rebalancer's view of the user's GitOps repository: a cached
// clone that is fetched incrementally, files read from a commit's tree without a
// checkout (as an fs.FS), first-parent history, commits written as the bot identity
// (optionally signed) and pushed with a bounded retry when someone else pushed
// first, signature verification, the repository layout, and the StatusStore every
// part of rebalancer reads and writes plan status through.
//
// Push errors are typed: errors.Is(err, ErrNonFastForward) when the branch moved
// under us (retried inside CommitFiles), errors.Is(err, ErrPushRefused) when the
// remote refuses for good (a protected branch, a pre-receive hook), and
// errors.Is(err, ErrAuth) when the credentials are not accepted.
//
// gitops imports only package api of rebalancer (see DESIGN.md): callers convert
// what it returns into what their own packages need.
package gitops
