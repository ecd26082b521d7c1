package localcluster

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"
)

// RunTests is the body of a package's TestMain: it builds the control plane if it is
// missing, starts one cluster for the whole package, runs the tests and stops the
// cluster, whatever they did. A cluster that cannot start fails the package loudly;
// tests are never skipped for want of one.
func RunTests(m *testing.M, opts Options, set func(*Cluster)) int {
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Minute)
	defer cancel()
	if _, err := EnsureBinaries(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "localcluster:", err)
		return 1
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	c, err := Start(ctx, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "localcluster:", err)
		return 1
	}
	defer c.Stop()
	set(c)
	return m.Run()
}

// Shared is a cluster started on first use, for packages where only some tests
// need one: the others run without paying for it. Stop it from TestMain.
type Shared struct {
	Options Options
	once    sync.Once
	c       *Cluster
	err     error
}

// Get returns the running cluster, starting it (and building the binaries if
// needed) on the first call. A cluster that cannot start fails the test.
func (s *Shared) Get(t testing.TB) *Cluster {
	t.Helper()
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 45*time.Minute)
		defer cancel()
		if _, s.err = EnsureBinaries(ctx); s.err != nil {
			return
		}
		s.c, s.err = Start(ctx, s.Options)
	})
	if s.err != nil {
		t.Fatalf("local cluster: %v", s.err)
	}
	return s.c
}

// Stop stops the cluster if it was started.
func (s *Shared) Stop() {
	if s.c != nil {
		s.c.Stop()
	}
}
