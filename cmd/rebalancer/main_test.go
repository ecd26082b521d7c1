package main

import (
	"os"
	"testing"

	"github.com/rebalancer-dev/rebalancer/internal/localcluster"
)

// shared is started only by the tests that talk to a cluster.
var shared localcluster.Shared

func TestMain(m *testing.M) {
	code := m.Run()
	shared.Stop()
	os.Exit(code)
}
