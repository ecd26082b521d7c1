package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/util/validation"

	api "github.com/rebalancer-dev/rebalancer/api/v1alpha1"
	"github.com/rebalancer-dev/rebalancer/gitops"
)

// planRow is one plan of `status` without a plan ID, as -o json prints it.
type planRow struct {
	ID        string    `json:"id"`
	Cluster   string    `json:"cluster,omitempty"`
	NodeGroup string    `json:"nodeGroup,omitempty"`
	Phase     string    `json:"phase"`
	Updated   time.Time `json:"updated,omitzero"`
	Message   string    `json:"message,omitempty"`
}

// noStatus is the phase shown for a merged plan without a status commit yet.
const noStatus = "(none yet)"

func newStatusCommand() *cobra.Command {
	var rf repoFlags
	var output string
	cmd := &cobra.Command{
		Use:   "status [PLAN]",
		Short: "Show a plan's status (phase, steps, rollback, realized savings), or one row per plan on the watched branch",
		Long: `status reads the GitOps repository through the same StatusStore the controller
writes: plans from the watched branch (--branch), statuses from --status-branch.

With a PLAN ID it prints that plan's RebalanceStatus: -o table (default) a summary
and its steps, -o yaml or -o json the status as committed. Without one it prints one
row per plan on the watched branch, oldest merged first: ID, node group, phase,
last update and message.

Exit status: 0, 1 when the repository cannot be read or the plan is unknown, 2 on
usage errors.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "table" && output != "yaml" && output != "json" {
				return usageError("--output %q: use table, yaml or json", output)
			}
			var id string
			if len(args) == 1 {
				id = args[0]
				if msgs := validation.IsDNS1123Subdomain(id); len(msgs) > 0 {
					return usageError("plan ID %q: %s", id, strings.Join(msgs, "; "))
				}
			}
			store, err := openStatusStore(cmd, rf)
			if err != nil {
				return err
			}
			ix, err := store.Plans(cmd.Context())
			if err != nil {
				return &exitError{code: 1, err: fmt.Errorf("listing plans on %s of %s: %w", rf.branch, rf.url, err)}
			}
			out := cmd.OutOrStdout()
			if id == "" {
				return printPlanList(out, output, ix)
			}
			st, err := store.Status(cmd.Context(), id)
			if err != nil {
				return &exitError{code: 1, err: fmt.Errorf("reading the status of %s on %s: %w", id, store.StatusBranch(), err)}
			}
			rec := ix.Get(id)
			if st == nil {
				if rec == nil {
					return &exitError{code: 1, err: fmt.Errorf("no plan %s on %s and no status of it on %s (an archived plan is in history: rebalancer history --plan %s)", id, rf.branch, store.StatusBranch(), id)}
				}
				if output != "table" {
					fmt.Fprintf(cmd.ErrOrStderr(), "plan %s is on %s but has no status yet: merged, not started\n", id, rf.branch)
					return nil
				}
			}
			switch output {
			case "yaml":
				b, err := api.Marshal(st)
				if err != nil {
					return fmt.Errorf("rendering the status of %s: %w", id, err)
				}
				_, err = out.Write(b)
				return err
			case "json":
				return printJSON(out, st)
			}
			return printPlanStatus(out, id, rec, st)
		},
	}
	rf.register(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output: table, yaml or json")
	return cmd
}

func printPlanList(out io.Writer, output string, ix *gitops.PlanIndex) error {
	rows := make([]planRow, 0, len(ix.Plans))
	for _, p := range ix.Plans {
		r := planRow{ID: p.ID, Phase: noStatus}
		switch {
		case p.Plan == nil:
			r.Phase, r.Message = "(invalid)", firstLine(fmt.Sprint(p.Err))
		default:
			r.Cluster, r.NodeGroup = p.Plan.Spec.Cluster, p.Plan.Spec.NodeGroup
		}
		if p.StatusErr != nil {
			r.Phase, r.Message = "(invalid status)", firstLine(p.StatusErr.Error())
		}
		if st := p.Status; st != nil {
			r.Phase, r.Message, r.Updated = string(st.Status.Phase), st.Status.Message, lastUpdate(st.Status)
			if r.Message == "" {
				r.Message = st.Status.WaitingFor
			}
		}
		rows = append(rows, r)
	}
	switch output {
	case "json":
		return printJSON(out, rows)
	case "yaml":
		b, err := api.Marshal(rows)
		if err != nil {
			return err
		}
		_, err = out.Write(b)
		return err
	}
	if len(rows) == 0 {
		_, err := fmt.Fprintln(out, "no plans on the watched branch")
		return err
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PLAN\tNODE GROUP\tPHASE\tUPDATED\tMESSAGE")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.ID, dash(r.NodeGroup), r.Phase, timeOrDash(r.Updated), r.Message)
	}
	return tw.Flush()
}

// lastUpdate is when a status last changed: updatedAt, else the latest of its
// finish and start.
func lastUpdate(st api.PlanStatus) time.Time {
	for _, t := range []api.Time{st.UpdatedAt, st.FinishedAt, st.StartedAt} {
		if !t.IsZero() {
			return t.UTC()
		}
	}
	return time.Time{}
}

func printPlanStatus(out io.Writer, id string, rec *gitops.PlanRecord, st *api.RebalanceStatus) error {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "Plan:\t%s\n", id)
	if rec != nil && rec.Plan != nil {
		s := rec.Plan.Spec
		fmt.Fprintf(tw, "Node group:\t%s (policy %s, cluster %s), %s, %d candidate(s), estimated %.2f/month\n",
			s.NodeGroup, s.Policy, s.Cluster, s.Strategy, len(s.Candidates), s.EstimatedMonthlySavings)
	} else if rec == nil {
		fmt.Fprintf(tw, "Plan file:\tnot on the watched branch any more\n")
	}
	if st == nil {
		fmt.Fprintf(tw, "Phase:\t%s — merged, not started\n", noStatus)
		return tw.Flush()
	}
	s := st.Status
	fmt.Fprintf(tw, "Phase:\t%s\n", s.Phase)
	if s.WaitingFor != "" {
		fmt.Fprintf(tw, "Waiting for:\t%s\n", s.WaitingFor)
	}
	if !s.NextAttempt.IsZero() {
		fmt.Fprintf(tw, "Next attempt:\t%s\n", s.NextAttempt.UTC().Format(time.RFC3339))
	}
	if !s.StartedAt.IsZero() {
		fmt.Fprintf(tw, "Started:\t%s\n", s.StartedAt.UTC().Format(time.RFC3339))
	}
	if !s.FinishedAt.IsZero() {
		took := ""
		if !s.StartedAt.IsZero() {
			took = fmt.Sprintf(" (took %s)", s.FinishedAt.Sub(s.StartedAt.Time))
		}
		fmt.Fprintf(tw, "Finished:\t%s%s\n", s.FinishedAt.UTC().Format(time.RFC3339), took)
	}
	if s.Message != "" {
		fmt.Fprintf(tw, "Message:\t%s\n", s.Message)
	}
	fmt.Fprintf(tw, "Realized savings:\t%.2f/month\n", s.RealizedMonthlySavings)
	if len(s.ProvisionedNodes) > 0 {
		fmt.Fprintf(tw, "New nodes:\t%s\n", strings.Join(s.ProvisionedNodes, ", "))
	}
	for _, sk := range s.SkippedCandidates {
		fmt.Fprintf(tw, "Skipped:\t%s: %s\n", sk.Node, sk.Reason)
	}
	if s.Rollback != nil {
		fmt.Fprintf(tw, "Rollback:\t%s: %s\n", s.Rollback.Trigger, s.Rollback.Reason)
	} else {
		fmt.Fprintf(tw, "Rollback:\tnone\n")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(s.Steps) > 0 {
		fmt.Fprintln(out)
		if err := printSteps(out, s.Steps); err != nil {
			return err
		}
	}
	if s.Rollback != nil && len(s.Rollback.Steps) > 0 {
		fmt.Fprintln(out, "\nRollback steps:")
		return printSteps(out, s.Rollback.Steps)
	}
	return nil
}

func printSteps(out io.Writer, steps []api.StepStatus) error {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BATCH\tACTION\tNODE\tPHASE\tNEW NODE\tTOOK\tMESSAGE")
	for _, s := range steps {
		took := "-"
		if !s.StartedAt.IsZero() && !s.FinishedAt.IsZero() {
			took = s.FinishedAt.Sub(s.StartedAt.Time).String()
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Batch, s.Action, s.Node, s.Phase, dash(s.NewNode), took, s.Message)
	}
	return tw.Flush()
}

func timeOrDash(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Format(time.RFC3339)
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
