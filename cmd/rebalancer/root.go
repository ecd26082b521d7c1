package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"
)

func newRootCommand(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "rebalancer",
		Short: "Replace older, more expensive Kubernetes nodes with cheaper offerings, through reviewed pull requests",
		Long: `rebalancer finds nodes that cost more than a cheaper offering that would carry the
same pods, proposes their replacement as a RebalancePlan in a pull request, and once
the plan is merged executes it make-before-break, writing its status back to git.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(newVersionCommand(), newValidateCommand(), newAnalyzeCommand(), newProposeCommand(), newControllerCommand(),
		newStatusCommand(), newHistoryCommand(), newStopCommand(), newResumeCommand(),
		newOfferingsCommand())
	return root
}

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version and commit",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "rebalancer %s (commit %s)\n", version, commit)
			return err
		},
	}
}
