package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/rebalancer-dev/rebalancer/cloud"
	"github.com/rebalancer-dev/rebalancer/cloud/vpsie"
)

// vpsieFlags configure the VPSie provider.
type vpsieFlags struct {
	tokenFile, credentialsFile, cluster, url string
}

func (v *vpsieFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&v.tokenFile, "vpsie-token-file", "", "file holding a VPSie access token (default: $"+vpsie.EnvAccessToken+")")
	fs.StringVar(&v.credentialsFile, "vpsie-credentials-file", "", "JSON or YAML file {clientId, clientSecret} for VPSie (default: $"+vpsie.EnvClientID+" and $"+vpsie.EnvClientSecret+")")
	fs.StringVar(&v.cluster, "vpsie-cluster", "", "identifier of the VPSie managed Kubernetes cluster whose nodes are rebalanced")
	fs.StringVar(&v.url, "vpsie-url", vpsie.DefaultURL, "VPSie API URL")
}

// provider builds the VPSie provider; needCluster: the command provisions or
// lists nodes, not only offerings.
func (v *vpsieFlags) provider(needCluster bool) (*vpsie.Provider, error) {
	if needCluster && v.cluster == "" {
		return nil, usageError("--provider vpsie needs --vpsie-cluster ID (the managed Kubernetes cluster's identifier)")
	}
	creds, err := vpsie.LoadCredentials(v.tokenFile, v.credentialsFile, os.Getenv)
	if err != nil {
		return nil, usageError("%v", err)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	c, err := vpsie.NewClient(v.url, creds, vpsie.WithLogger(logger))
	if err != nil {
		return nil, usageError("--vpsie-url: %v", err)
	}
	return vpsie.New(c, v.cluster, vpsie.WithProviderLogger(logger)), nil
}

// datacenterLister is a provider that names its datacenters (VPSie does).
type datacenterLister interface {
	Datacenters(ctx context.Context) ([]vpsie.Datacenter, error)
}

type datacenterRow struct {
	Identifier string `json:"identifier"`
	Name       string `json:"name,omitempty"`
	Country    string `json:"country,omitempty"`
	Offerings  int    `json:"offerings"`
}

type offeringRow struct {
	Datacenter   string  `json:"datacenter"`
	Name         string  `json:"name"`
	Arch         string  `json:"arch"`
	CPU          string  `json:"cpu"`
	Memory       string  `json:"memory"`
	Disk         string  `json:"disk"`
	MonthlyPrice float64 `json:"monthlyPrice"`
	HourlyPrice  float64 `json:"hourlyPrice"`
}

type offeringsOutput struct {
	Provider    string          `json:"provider"`
	Datacenters []datacenterRow `json:"datacenters"`
	Offerings   []offeringRow   `json:"offerings"`
}

func newOfferingsCommand() *cobra.Command {
	var pf providerFlags
	var datacenter, output string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "offerings",
		Short: "List the provider's datacenters and offerings with monthly and hourly prices (checks credentials)",
		Long: `offerings asks the cloud provider for what it sells now — every datacenter and
every offering with its CPU, memory, disk and price per month and per hour (a month
is 730 hours) — and prints them. Run it first: it proves the credentials work and
shows the prices the analyzer will compare.`,
		Example: `  rebalancer offerings --provider vpsie --vpsie-token-file ~/.vpsie-token
  rebalancer offerings --provider vpsie --datacenter "New York" -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "json" {
				return usageError("--output %q: use table or json", output)
			}
			var provider cloud.Provider
			var err error
			if pf.provider == "vpsie" {
				provider, err = pf.vpsie.provider(false) // offerings need no cluster
			} else {
				provider, err = pf.build(nil) // kwok reads its catalog; no cluster needed
			}
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			out, err := listOfferings(ctx, provider, datacenter)
			if err != nil {
				return err
			}
			if output == "json" {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(out)
			}
			return printOfferings(cmd.OutOrStdout(), out)
		},
	}
	pf.register(cmd)
	cmd.Flags().StringVar(&datacenter, "datacenter", "", "only this datacenter (identifier or name, case-insensitive)")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	cmd.Flags().DurationVar(&timeout, "timeout", 2*time.Minute, "give up after this long")
	return cmd
}

func listOfferings(ctx context.Context, provider cloud.Provider, datacenter string) (*offeringsOutput, error) {
	offs, err := provider.Offerings(ctx)
	if err != nil {
		return nil, &exitError{code: 1, err: fmt.Errorf("listing %s offerings: %w", provider.Name(), err)}
	}
	out := &offeringsOutput{Provider: provider.Name(), Datacenters: []datacenterRow{}, Offerings: []offeringRow{}}
	var dcs []datacenterRow
	if dl, ok := provider.(datacenterLister); ok {
		list, err := dl.Datacenters(ctx)
		if err != nil {
			return nil, &exitError{code: 1, err: fmt.Errorf("listing %s datacenters: %w", provider.Name(), err)}
		}
		for _, d := range list {
			dcs = append(dcs, datacenterRow{Identifier: d.Identifier, Name: d.Name, Country: d.Country})
		}
	} else {
		seen := map[string]bool{}
		for _, o := range offs {
			if !seen[o.Datacenter] {
				seen[o.Datacenter] = true
				dcs = append(dcs, datacenterRow{Identifier: o.Datacenter})
			}
		}
	}
	want := strings.ToLower(strings.TrimSpace(datacenter))
	keep := map[string]int{}
	for _, d := range dcs {
		if want == "" || strings.ToLower(d.Identifier) == want || strings.ToLower(d.Name) == want {
			keep[d.Identifier] = len(out.Datacenters)
			out.Datacenters = append(out.Datacenters, d)
		}
	}
	if len(out.Datacenters) == 0 && want != "" {
		var known []string
		for _, d := range dcs {
			known = append(known, d.Identifier)
		}
		return nil, &exitError{code: 1, err: fmt.Errorf("no datacenter %q at %s (known: %s)", datacenter, provider.Name(), strings.Join(known, ", "))}
	}
	for _, o := range offs {
		i, ok := keep[o.Datacenter]
		if !ok {
			continue
		}
		out.Datacenters[i].Offerings++
		out.Offerings = append(out.Offerings, offeringRow{Datacenter: o.Datacenter, Name: o.Name, Arch: o.Arch, CPU: o.CPU.String(),
			Memory: o.Memory.String(), Disk: o.EphemeralStorage.String(), MonthlyPrice: o.MonthlyPrice(), HourlyPrice: o.HourlyPrice})
	}
	sort.SliceStable(out.Offerings, func(i, j int) bool {
		a, b := out.Offerings[i], out.Offerings[j]
		if a.Datacenter != b.Datacenter {
			return a.Datacenter < b.Datacenter
		}
		if a.MonthlyPrice != b.MonthlyPrice {
			return a.MonthlyPrice < b.MonthlyPrice
		}
		return a.Name < b.Name
	})
	return out, nil
}

func printOfferings(w io.Writer, out *offeringsOutput) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DATACENTER\tNAME\tCOUNTRY\tOFFERINGS")
	for _, d := range out.Datacenters {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\n", d.Identifier, dash(d.Name), dash(d.Country), d.Offerings)
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "DATACENTER\tOFFERING\tARCH\tCPU\tMEMORY\tDISK\tMONTHLY\tHOURLY")
	for _, o := range out.Offerings {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%.2f\t%.4f\n", o.Datacenter, o.Name, o.Arch, o.CPU, o.Memory, o.Disk, o.MonthlyPrice, o.HourlyPrice)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("writing the table: %w", err)
	}
	if len(out.Offerings) == 0 {
		return &exitError{code: 1, err: errors.New("the provider offers nothing here")}
	}
	return nil
}
