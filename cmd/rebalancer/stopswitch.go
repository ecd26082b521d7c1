package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"

	"github.com/rebalancer-dev/rebalancer/executor"
)

// newStopCommand and newResumeCommand flip the in-cluster stop switch: an
// annotation on the controller's ConfigMap, read by the executor before every
// change. They talk to the API server only, so they work when git is down.
func newStopCommand() *cobra.Command {
	var kf kubeFlags
	var namespace, configMap, reason string
	cmd := &cobra.Command{
		Use:   "stop",
		Short: "Freeze every running plan before its next change (the in-cluster stop switch; works when git is down)",
		Long: `stop sets the ` + executor.StopAnnotation + ` annotation on the controller's ConfigMap
(created if missing). Each running plan freezes before its next change, its state
recorded in its execution record and, once git is reachable, in its status. No plan
starts while the switch is on. rebalancer resume clears it; plans frozen by the switch
then go on from where they stopped.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			client, _, err := kf.client()
			if err != nil {
				return err
			}
			if reason == "" {
				reason = "stopped with rebalancer stop"
			}
			value := fmt.Sprintf("%s (%s)", reason, time.Now().UTC().Format(time.RFC3339))
			if err := setStopSwitch(cmd.Context(), client, namespace, configMap, &value); err != nil {
				return &exitError{code: 1, err: err}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "stop switch on (%s/%s): running plans freeze before their next change\n", namespace, configMap)
			return nil
		},
	}
	kf.register(cmd)
	stopSwitchFlags(cmd, &namespace, &configMap)
	cmd.Flags().StringVar(&reason, "reason", "", "why, recorded in the annotation")
	return cmd
}

func newResumeCommand() *cobra.Command {
	var kf kubeFlags
	var namespace, configMap string
	cmd := &cobra.Command{
		Use:   "resume",
		Short: "Clear the in-cluster stop switch: plans it froze go on",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			client, _, err := kf.client()
			if err != nil {
				return err
			}
			if err := setStopSwitch(cmd.Context(), client, namespace, configMap, nil); err != nil {
				return &exitError{code: 1, err: err}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "stop switch off (%s/%s): plans it froze go on at the controller's next pass\n", namespace, configMap)
			return nil
		},
	}
	kf.register(cmd)
	stopSwitchFlags(cmd, &namespace, &configMap)
	return cmd
}

func stopSwitchFlags(cmd *cobra.Command, namespace, configMap *string) {
	cmd.Flags().StringVar(namespace, "namespace", "rebalancer-system", "the controller's namespace")
	cmd.Flags().StringVar(configMap, "stop-configmap", "rebalancer", "the controller's stop-switch ConfigMap (its --stop-configmap)")
}

// setStopSwitch sets the annotation to *value, or removes it when value is nil.
func setStopSwitch(ctx context.Context, client kubernetes.Interface, namespace, name string, value *string) error {
	return executor.SetConfigMapAnnotation(ctx, client, namespace, name, executor.StopAnnotation, value)
}
