package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	api "github.com/rebalancer-dev/rebalancer/api/v1alpha1"
	"github.com/rebalancer-dev/rebalancer/cloud"
	"github.com/rebalancer-dev/rebalancer/cloud/kwok"
	"github.com/rebalancer-dev/rebalancer/planner"
	"github.com/rebalancer-dev/rebalancer/policies"
)

// kubeFlags are the flags every command that talks to a cluster takes.
type kubeFlags struct {
	kubeconfig, context string
}

func (k *kubeFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&k.kubeconfig, "kubeconfig", "", "path to a kubeconfig (default: $KUBECONFIG, then ~/.kube/config, then in-cluster)")
	cmd.Flags().StringVar(&k.context, "context", "", "kubeconfig context to use")
}

func (k *kubeFlags) client() (kubernetes.Interface, string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if k.kubeconfig != "" {
		rules.ExplicitPath = k.kubeconfig
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: k.context}).ClientConfig()
	if err != nil {
		return nil, "", usageError("loading kubeconfig: %v", err)
	}
	cfg.Timeout = 30 * time.Second
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, "", fmt.Errorf("kubernetes client: %w", err)
	}
	return c, cfg.Host, nil
}

// providerFlags choose the cloud provider.
type providerFlags struct {
	provider, catalog string
	vpsie             vpsieFlags
}

func (p *providerFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&p.provider, "provider", "kwok", "cloud provider: kwok or vpsie")
	cmd.Flags().StringVar(&p.catalog, "catalog", "", "offerings catalog file (kwok provider)")
	p.vpsie.register(cmd.Flags())
}

func (p *providerFlags) build(client kubernetes.Interface) (cloud.Provider, error) {
	switch p.provider {
	case "kwok":
		if p.catalog == "" {
			return nil, usageError("--provider kwok needs --catalog FILE (an OfferingCatalog)")
		}
		offerings, err := kwok.LoadCatalog(p.catalog)
		if err != nil {
			return nil, &exitError{code: 1, err: err}
		}
		return kwok.New(client, offerings), nil
	case "vpsie":
		vp, err := p.vpsie.provider(true)
		if err != nil {
			return nil, err
		}
		return vp, nil
	}
	return nil, usageError("--provider %q: supported providers are kwok and vpsie", p.provider)
}

func newAnalyzeCommand() *cobra.Command {
	var kf kubeFlags
	var pf providerFlags
	var repoDir, root, output, clusterName string
	var maxNodes int
	cmd := &cobra.Command{
		Use:   "analyze",
		Short: "Show the plans rebalancer would propose, or with -o table one row per node and its reason; changes nothing",
		Long: `analyze reads the cluster, the provider's offerings and the policies in a GitOps
repository checkout, and prints the plans it would propose as YAML. With -o table it
prints one row per node — group, offering, price, best replacement, savings, reason —
and a count per reason. It is read-only: nothing changes anywhere.

Every node gets exactly one reason: ` + reasonList() + `.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "yaml" && output != "table" {
				return usageError("--output %q: use yaml or table", output)
			}
			ctx := cmd.Context()
			treeRoot := filepath.Join(repoDir, root)
			pols, err := policies.LoadPolicies(os.DirFS(repoDir), root)
			if err != nil {
				return &exitError{code: 1, err: fmt.Errorf("policies in %s: %w", treeRoot, err)}
			}
			ps, err := policies.NewPolicies(pols)
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			history, err := planner.HistoryFromTree(os.DirFS(repoDir), root)
			if err != nil {
				return &exitError{code: 1, err: fmt.Errorf("plans and statuses in %s: %w", treeRoot, err)}
			}
			client, host, err := kf.client()
			if err != nil {
				return err
			}
			provider, err := pf.build(client)
			if err != nil {
				return err
			}
			a, err := analyze(ctx, client, host, provider, ps, history, clusterName, maxNodes)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if output == "table" {
				return printTable(out, a)
			}
			if len(a.Plans) == 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "no plan: no node is a candidate (-o table shows why)\n")
			}
			for i, p := range a.Plans {
				b, err := api.Marshal(p)
				if err != nil {
					return err
				}
				if i > 0 {
					fmt.Fprintln(out, "---")
				}
				fmt.Fprintf(out, "# rebalancer/plans/%s.yaml\n%s", p.Metadata.Name, b)
			}
			return nil
		},
	}
	kf.register(cmd)
	pf.register(cmd)
	cmd.Flags().StringVar(&repoDir, "repo-dir", ".", "checkout of the GitOps repository holding the policies")
	cmd.Flags().StringVar(&root, "path", "rebalancer", "directory of the rebalancer files inside the repository")
	cmd.Flags().StringVarP(&output, "output", "o", "yaml", "output: yaml (the plans) or table (one row per node)")
	cmd.Flags().StringVar(&clusterName, "cluster-name", "local", "this cluster's name, as plans record it")
	cmd.Flags().IntVar(&maxNodes, "max-nodes-per-plan", 0, "hard limit on candidates per plan (0: the policy's)")
	return cmd
}

func analyze(ctx context.Context, client kubernetes.Interface, host string, provider cloud.Provider, ps *policies.Policies,
	history planner.History, clusterName string, maxNodes int) (*planner.Analysis, error) {
	src := planner.NewClusterSource(client)
	defer src.Shutdown()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // deferred last, runs first: the informers stop before Shutdown waits
	if err := src.Start(ctx, 60*time.Second); err != nil {
		return nil, fmt.Errorf("cluster at %s: %w", host, err)
	}
	snap, err := src.Snapshot()
	if err != nil {
		return nil, err
	}
	offCtx, offCancel := context.WithTimeout(ctx, 30*time.Second)
	defer offCancel()
	offerings, err := provider.Offerings(offCtx)
	if err != nil {
		return nil, fmt.Errorf("offerings from %s: %w", provider.Name(), err)
	}
	return planner.Analyze(planner.Inputs{Cluster: clusterName, Snapshot: snap, Policies: ps, Offerings: offerings,
		History: history, Now: time.Now(), MaxNodesPerPlan: maxNodes})
}

func printTable(out io.Writer, a *planner.Analysis) error {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tGROUP\tOFFERING\t$/HOUR\tREPLACEMENT\t$/HOUR\tSAVES/MONTH\tREASON\tDETAIL")
	for _, n := range a.Nodes {
		price, repl, rprice, saves := "-", "-", "-", "-"
		if n.HourlyPrice > 0 {
			price = fmt.Sprintf("%.4f", n.HourlyPrice)
		}
		if n.Replacement != "" {
			repl, rprice, saves = n.Replacement, fmt.Sprintf("%.4f", n.ReplacementPrice), fmt.Sprintf("%.2f", n.MonthlySavings)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", n.Node, dash(n.Group), dash(n.Offering), price, repl, rprice, saves, n.Reason, n.Detail)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	counts := a.Counts()
	reasons := make([]string, 0, len(counts))
	for r := range counts {
		reasons = append(reasons, string(r))
	}
	sort.Strings(reasons)
	parts := make([]string, len(reasons))
	for i, r := range reasons {
		parts[i] = fmt.Sprintf("%s %d", r, counts[policies.Reason(r)])
	}
	fmt.Fprintf(out, "\n%d nodes: %s\n", len(a.Nodes), strings.Join(parts, ", "))
	total := 0.0
	for _, p := range a.Plans {
		total += p.Spec.EstimatedMonthlySavings
		fmt.Fprintf(out, "plan %s: %d nodes, saves %.2f/month, strategy %s\n", p.Metadata.Name, len(p.Spec.Candidates), p.Spec.EstimatedMonthlySavings, p.Spec.Strategy)
	}
	if len(a.Plans) == 0 {
		fmt.Fprintln(out, "no plan: no node is a candidate")
	} else {
		fmt.Fprintf(out, "estimated savings: %.2f/month\n", total)
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func reasonList() string {
	s := make([]string, len(policies.AllReasons))
	for i, r := range policies.AllReasons {
		s[i] = string(r)
	}
	return strings.Join(s, ", ")
}
