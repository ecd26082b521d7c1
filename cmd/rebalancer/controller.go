package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/tools/record"

	"github.com/rebalancer-dev/rebalancer/executor"
	"github.com/rebalancer-dev/rebalancer/gitops"
	"github.com/rebalancer-dev/rebalancer/policies"
	"github.com/rebalancer-dev/rebalancer/reconciler"
)

// controllerFlags are the flags of `rebalancer controller`.
type controllerFlags struct {
	kf                 kubeFlags
	pf                 providerFlags
	rf                 repoFlags
	once               bool
	interval           time.Duration
	clusterName        string
	namespace          string
	maxConcurrentPlans int
	maxNodesPerPlan    int
	allowedNodeGroups  []string
	leaseName          string
	identity           string
	leaderElect        bool
}

func newControllerCommand() *cobra.Command {
	var cf controllerFlags
	cmd := &cobra.Command{
		Use:   "controller",
		Short: "Run merged plans: watch the watched branch, re-validate, claim, execute, and commit status to git",
		Long: `controller polls the watched branch every --interval. Each pass fetches, walks the
plans on the branch's first-parent history without a terminal status (oldest merged
first), and for each: a plan for another cluster is Rejected; a plan past notAfter is
Expired; otherwise it is re-validated against the cluster, the policy on the watched
branch and the hard limits, and Rejected, left Waiting, or claimed (an execution
record in --namespace), its Running status pushed to git, and only then executed. Every
status transition reaches git in order; the record is removed once the final status is
there. Only the holder of the Lease --lease-name acts; --once runs one pass under it.

Secrets come from files or the environment, as for propose.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runController(cmd.Context(), cmd, cf)
		},
	}
	cf.kf.register(cmd)
	cf.pf.register(cmd)
	cf.rf.register(cmd)
	fl := cmd.Flags()
	fl.BoolVar(&cf.once, "once", false, "run one pass (under the Lease) and exit")
	fl.DurationVar(&cf.interval, "interval", time.Minute, "time between two passes")
	fl.StringVar(&cf.clusterName, "cluster-name", "local", "this cluster's name: plans for another cluster are rejected")
	fl.StringVar(&cf.namespace, "namespace", "rebalancer-system", "the controller's namespace: execution records, the Lease and the stop-switch ConfigMap")
	fl.IntVar(&cf.maxConcurrentPlans, "max-concurrent-plans", 1, "hard limit on plans running at once in the cluster")
	fl.IntVar(&cf.maxNodesPerPlan, "max-nodes-per-plan", 0, "hard limit on candidates per plan (0: the policy's)")
	fl.StringSliceVar(&cf.allowedNodeGroups, "allowed-node-groups", nil, "node groups plans may act on (default: all)")
	fl.StringVar(&cf.leaseName, "lease-name", "rebalancer-controller", "the Lease only whose holder acts")
	fl.StringVar(&cf.identity, "identity", "", "this replica's name in the Lease and in claims (default: $POD_NAME, then the host name)")
	fl.BoolVar(&cf.leaderElect, "leader-elect", true, "act only while holding the Lease")
	return cmd
}

func runController(ctx context.Context, cmd *cobra.Command, cf controllerFlags) error {
	log := slog.New(slog.NewJSONHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	if msgs := validation.IsDNS1123Label(cf.clusterName); len(msgs) > 0 {
		return usageError("--cluster-name %q: %s", cf.clusterName, strings.Join(msgs, "; "))
	}
	if cf.maxConcurrentPlans < 1 {
		return usageError("--max-concurrent-plans must be 1 or more")
	}
	if cf.interval <= 0 {
		return usageError("--interval must be positive")
	}
	identity := cf.identity
	if identity == "" {
		identity = os.Getenv("POD_NAME")
	}
	if identity == "" {
		host, _ := os.Hostname()
		identity = host + "-" + uuid.NewString()[:8]
	}
	client, _, err := cf.kf.client()
	if err != nil {
		return err
	}
	provider, err := cf.pf.build(client)
	if err != nil {
		return err
	}
	app, err := cf.rf.appSource()
	if err != nil {
		return err
	}
	repo, err := cf.rf.open(ctx, app, log)
	if err != nil {
		return err
	}
	layout := gitops.Layout{Root: cf.rf.root}
	store := gitops.NewStatusStore(repo, gitops.StoreOptions{Layout: layout, WatchedBranch: cf.rf.branch, StatusBranch: cf.rf.statusBranch})
	reval := &executor.ClusterRevalidator{Client: client, Provider: provider, Policies: reconciler.WatchedPolicies(repo, cf.rf.branch, layout),
		Limits: policies.Limits{ClusterName: cf.clusterName, MaxNodesPerPlan: cf.maxNodesPerPlan, MaxConcurrentPlans: cf.maxConcurrentPlans,
			AllowedNodeGroups: cf.allowedNodeGroups}, LastFinished: reconciler.LastFinished(store)}
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	defer broadcaster.Shutdown()
	events := broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "rebalancer-controller", Host: identity})
	var rec *reconciler.Reconciler
	exec := executor.New(client, provider, reval, executor.Options{Namespace: cf.namespace, Identity: identity},
		executor.WithLogger(log), executor.WithEvents(events), executor.WithProgress(func(p executor.Progress) { rec.ProgressFunc()(p) }))
	rec = reconciler.New(repo, store, exec, reval, reconciler.Options{ClusterName: cf.clusterName,
		MaxConcurrentPlans: cf.maxConcurrentPlans, Namespace: cf.namespace}, reconciler.WithLogger(log), reconciler.WithEvents(events))

	loop := func(ctx context.Context) error {
		for {
			if err := rec.Pass(ctx); err != nil {
				if cf.once {
					return &exitError{code: 1, err: err}
				}
				log.Error("pass failed; trying again next interval", "error", err)
			}
			if cf.once {
				return nil
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(cf.interval):
			}
		}
	}
	if !cf.leaderElect {
		return loop(ctx)
	}
	return underLease(ctx, client, cf.namespace, cf.leaseName, identity, log, loop)
}

// underLease runs fn only while holding the Lease; losing the Lease cancels fn's
// context. It returns when fn returns (the Lease is released) or ctx ends.
func underLease(ctx context.Context, client kubernetes.Interface, namespace, name, identity string, log *slog.Logger, fn func(context.Context) error) error {
	lock := &resourcelock.LeaseLock{LeaseMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}, Client: client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: identity}}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// result receives fn's error once it returned; started is closed when it began.
	result := make(chan error, 1)
	started := make(chan struct{})
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock: lock, LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 2 * time.Second,
		ReleaseOnCancel: true, Name: name,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				log.Info("leading", "lease", namespace+"/"+name, "identity", identity)
				close(started)
				result <- fn(ctx)
				cancel()
			},
			OnStoppedLeading: func() { log.Info("not leading", "lease", namespace+"/"+name, "identity", identity) },
		},
	})
	if err != nil {
		return fmt.Errorf("leader election: %w", err)
	}
	le.Run(ctx)
	select {
	case <-started:
		// Wait for fn: it stops soon, its context being cancelled.
		return <-result
	default:
		return nil
	}
}
