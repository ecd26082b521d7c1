package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"

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
	cms := client.CoreV1().ConfigMaps(namespace)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cm, err := cms.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			if value == nil {
				return nil // no ConfigMap: the switch is off already
			}
			_, err = cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace,
				Annotations: map[string]string{executor.StopAnnotation: *value}}}, metav1.CreateOptions{})
			return err
		}
		if err != nil {
			return err
		}
		if value == nil {
			if _, ok := cm.Annotations[executor.StopAnnotation]; !ok {
				return nil
			}
			delete(cm.Annotations, executor.StopAnnotation)
		} else {
			if cm.Annotations == nil {
				cm.Annotations = map[string]string{}
			}
			cm.Annotations[executor.StopAnnotation] = *value
		}
		_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("setting the stop switch on ConfigMap %s/%s: %w", namespace, name, err)
	}
	return nil
}
