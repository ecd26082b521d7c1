package localcluster

import (
	"context"
	"fmt"
	"log/slog"
	"os"
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
