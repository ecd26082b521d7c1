package executor

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
)

// SetConfigMapAnnotation sets key to *value on a ConfigMap, creating it when it is
// missing, or removes key when value is nil (a missing ConfigMap then stays
// missing). The stop switch and webhook hand-offs to the leader are written this
// way; conflicts are retried.
func SetConfigMapAnnotation(ctx context.Context, client kubernetes.Interface, namespace, name, key string, value *string) error {
	cms := client.CoreV1().ConfigMaps(namespace)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cm, err := cms.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			if value == nil {
				return nil
			}
			_, err = cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace,
				Annotations: map[string]string{key: *value}}}, metav1.CreateOptions{})
			return err
		}
		if err != nil {
			return err
		}
		if value == nil {
			if _, ok := cm.Annotations[key]; !ok {
				return nil
			}
			delete(cm.Annotations, key)
		} else {
			if cm.Annotations == nil {
				cm.Annotations = map[string]string{}
			}
			cm.Annotations[key] = *value
		}
		_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("setting %s on ConfigMap %s/%s: %w", key, namespace, name, err)
	}
	return nil
}
