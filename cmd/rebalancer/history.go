package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/rebalancer-dev/rebalancer/gitops"
)

// historyEntry is one status commit of the audit log, as `history -o json` prints it.
type historyEntry struct {
	Time    time.Time `json:"time"`
	Plan    string    `json:"plan"`
	Phase   string    `json:"phase"`
	Author  string    `json:"author"`
	Commit  string    `json:"commit"`
	Subject string    `json:"subject"`
}

func newHistoryCommand() *cobra.Command {
	var rf repoFlags
	var output, plan string
	var limit int
	cmd := &cobra.Command{
		Use:   "history",
		Short: "Print the audit log: every status commit on the status branch (time, plan, phase, author, commit)",
		Long: `history reads the status branch's first-parent history and prints one row per
status commit — its time, plan, phase (from the Rebalancer-Plan and Rebalancer-Phase
trailers), author and commit — oldest first. Commits without the trailers (people's
commits on a shared branch) are left out. It changes nothing.

  -o table   (default) aligned columns
  -o json    [{"time":…,"plan":…,"phase":…,"author":…,"commit":…,"subject":…}]

Exit status: 0, 1 when the repository cannot be read, 2 on usage errors.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "json" {
				return usageError("--output %q: use table or json", output)
			}
			if plan != "" {
				if msgs := validation.IsDNS1123Subdomain(plan); len(msgs) > 0 {
					return usageError("--plan %q: %s", plan, strings.Join(msgs, "; "))
				}
			}
			if limit < 0 {
				return usageError("--limit must be 0 (everything) or more")
			}
			store, err := openStatusStore(cmd, rf)
			if err != nil {
				return err
			}
			entries := []historyEntry{}
			err = store.Log(cmd.Context(), func(ev gitops.StatusEvent) error {
				if plan == "" || ev.Plan == plan {
					entries = append(entries, historyEntry{Time: ev.Time.UTC(), Plan: ev.Plan, Phase: string(ev.Phase),
						Author: ev.Author, Commit: ev.Commit.String(), Subject: ev.Subject})
				}
				return nil
			})
			if err != nil {
				return &exitError{code: 1, err: fmt.Errorf("reading the status history of %s on %s: %w", rf.url, store.StatusBranch(), err)}
			}
			// Log walks newest first; an audit log reads oldest first.
			for i, j := 0, len(entries)-1; i < j; i, j = i+1, j-1 {
				entries[i], entries[j] = entries[j], entries[i]
			}
			if limit > 0 && len(entries) > limit {
				entries = entries[len(entries)-limit:]
			}
			out := cmd.OutOrStdout()
			if output == "json" {
				return printJSON(out, entries)
			}
			return printHistory(out, entries)
		},
	}
	rf.register(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output: table or json")
	cmd.Flags().StringVar(&plan, "plan", "", "only this plan's status commits")
	cmd.Flags().IntVar(&limit, "limit", 0, "only the newest N entries (0: all)")
	return cmd
}

// openStatusStore opens the repository of the repo flags (a fetch) and returns
// its StatusStore, as the controller and propose see it.
func openStatusStore(cmd *cobra.Command, rf repoFlags) (*gitops.GitStatusStore, error) {
	log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	app, err := rf.appSource()
	if err != nil {
		return nil, err
	}
	repo, err := rf.open(cmd.Context(), app, log)
	if err != nil {
		return nil, err
	}
	return gitops.NewStatusStore(repo, gitops.StoreOptions{Layout: gitops.Layout{Root: rf.root},
		WatchedBranch: rf.branch, StatusBranch: rf.statusBranch}), nil
}

func printHistory(out io.Writer, entries []historyEntry) error {
	if len(entries) == 0 {
		_, err := fmt.Fprintln(out, "no status commits")
		return err
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tPLAN\tPHASE\tAUTHOR\tCOMMIT")
	for _, e := range entries {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.Time.Format(time.RFC3339), e.Plan, e.Phase, e.Author, shortHash(e.Commit))
	}
	return tw.Flush()
}

func shortHash(h string) string {
	if len(h) > 10 {
		return h[:10]
	}
	return h
}

func printJSON(out io.Writer, v any) error {
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
