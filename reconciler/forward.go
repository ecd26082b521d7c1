package reconciler

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/rebalancer-dev/rebalancer/executor"
)

// FetchRequestAnnotation on the controller's ConfigMap carries a webhook delivery
// from a standby replica to the leader: the Service sends deliveries to either.
const FetchRequestAnnotation = "rebalancer.dev/fetch-requested"

// FetchRequests hands webhook deliveries that reach a standby to the leader
// through an annotation on the controller's ConfigMap (the stop switch's), so a
// delivery is never left to the next poll. Only the time of the request is
// written: the leader fetches and reads git as it always does.
type FetchRequests struct {
	Client    kubernetes.Interface
	Namespace string
	ConfigMap string
	Log       *slog.Logger
}

// Request asks the leader for a pass.
func (f *FetchRequests) Request(ctx context.Context) error {
	now := time.Now().UTC().Format(time.RFC3339Nano)
	if err := executor.SetConfigMapAnnotation(ctx, f.Client, f.Namespace, f.ConfigMap, FetchRequestAnnotation, &now); err != nil {
		return fmt.Errorf("asking the leader for a pass: %w", err)
	}
	return nil
}

// Watch calls trigger whenever a new request appears, looking every interval,
// until ctx ends. Requests made before Watch started are not replayed.
func (f *FetchRequests) Watch(ctx context.Context, every time.Duration, trigger func()) {
	read := func() (string, bool) {
		cm, err := f.Client.CoreV1().ConfigMaps(f.Namespace).Get(ctx, f.ConfigMap, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return "", true
		}
		if err != nil {
			if ctx.Err() == nil {
				f.Log.Warn("reading webhook requests from standby replicas", "error", err)
			}
			return "", false
		}
		return cm.Annotations[FetchRequestAnnotation], true
	}
	last, _ := read()
	ticker := time.NewTicker(every)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		if v, ok := read(); ok && v != "" && v != last {
			last = v
			f.Log.Info("a standby replica received a webhook: passing")
			trigger()
		}
	}
}
