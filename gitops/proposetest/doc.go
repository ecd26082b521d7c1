// Package proposetest runs `rebalancer propose` end to end, as a CronJob would: the
// built binary against a real local control plane with KWOK nodes, a real git
// server and the GitHub API test server. It is a package of its own so the other
// gitops tests run without a cluster.
package proposetest
