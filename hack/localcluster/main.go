// Command localcluster starts or stops the local control plane for people:
//
//	go run ./hack/localcluster up   [--dir DIR]   # prints the kubeconfig path
//	go run ./hack/localcluster down [--dir DIR]
//	go run ./hack/localcluster node NAME [--dir DIR]   # adds a KWOK node
//
// `make cluster-up` and `make cluster-down` call it.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/rebalancer-dev/rebalancer/cloud/kwok"
	"github.com/rebalancer-dev/rebalancer/internal/localcluster"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "localcluster:", err)
		os.Exit(1)
	}
}

func run() error {
	if len(os.Args) < 2 {
		return fmt.Errorf("usage: localcluster up|down|node NAME [--dir DIR]")
	}
	verb := os.Args[1]
	fs := flag.NewFlagSet(verb, flag.ContinueOnError)
	dir := fs.String("dir", filepath.Join(".tmp", "cluster"), "cluster state directory")
	args := os.Args[2:]
	var name string
	if verb == "node" && len(args) > 0 {
		name, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Minute)
	defer cancel()
	switch verb {
	case "up":
		if _, err := os.Stat(filepath.Join(abs, "pids")); err == nil {
			return fmt.Errorf("a cluster is already running in %s: run `make cluster-down` first", abs)
		}
		if _, err := localcluster.EnsureBinaries(ctx); err != nil {
			return err
		}
		_ = os.RemoveAll(abs) // a stopped cluster's state is not reused
		log := slog.New(slog.NewTextHandler(os.Stderr, nil))
		c, err := localcluster.Start(ctx, localcluster.Options{Dir: abs, Detached: true, Logger: log})
		if err != nil {
			return err
		}
		fmt.Printf("cluster up in %s\nexport KUBECONFIG=%s\n", c.StartupTime.Round(100*time.Millisecond), c.Kubeconfig)
		return nil
	case "down":
		was, err := localcluster.StopDir(abs)
		if err != nil {
			return err
		}
		if was {
			fmt.Println("cluster stopped")
		} else {
			fmt.Println("no cluster running in", abs)
		}
		return nil
	case "node":
		if name == "" {
			return fmt.Errorf("usage: localcluster node NAME")
		}
		cfg, err := clientcmd.BuildConfigFromFlags("", filepath.Join(abs, "admin.kubeconfig"))
		if err != nil {
			return err
		}
		client, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			return err
		}
		n, err := localcluster.NewNode(name, localcluster.NodeOptions{})
		if err != nil {
			return err
		}
		if err := kwok.CreateNode(ctx, client, n); err != nil {
			return err
		}
		fmt.Println("node", name, "created")
		return nil
	}
	return fmt.Errorf("unknown verb %q: use up, down or node", verb)
}
