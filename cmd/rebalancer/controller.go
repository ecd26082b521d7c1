package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
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
	"github.com/rebalancer-dev/rebalancer/planner"
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
	logFormat          string
	httpAddress        string
	webhookSecretFile  string
	proposeInterval    time.Duration
	forgeName          string
	ghTokenFile        string
	requireSigned      bool
	trustedKeysFile    string
	stopConfigMap      string
	archiveAfter       time.Duration
	lease              leaseTimings
}

// leaseTimings are the leader election's durations, named as kube-controller-manager's.
type leaseTimings struct {
	duration, renewDeadline, retryPeriod time.Duration
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
there. Only the holder of the Lease --lease-name acts; --once runs one pass under it
and waits for the plans it started.

Plans run in the background while passes go on, so a change merged to git reaches a
running plan before its next step: spec.cancel: stop freezes it, spec.cancel: rollback
rolls back what it started, and deleting the plan file means stop. The in-cluster stop
switch (rebalancer stop / rebalancer resume) works even when git is down.

--http-address serves /metrics, /healthz, /readyz and, with --webhook-secret-file,
the GitHub push webhook at /hooks/github: a delivery whose X-Hub-Signature-256 does
not match gets 401; a valid one only triggers a fetch.

Secrets come from files or the environment, as for propose: the webhook secret from
--webhook-secret-file or $REBALANCER_WEBHOOK_SECRET.`,
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
	fl.DurationVar(&cf.lease.duration, "leader-elect-lease-duration", 15*time.Second, "how long a standby waits after the leader's last renewal before taking over")
	fl.DurationVar(&cf.lease.renewDeadline, "leader-elect-renew-deadline", 10*time.Second, "how long the leader keeps trying to renew before it stops acting")
	fl.DurationVar(&cf.lease.retryPeriod, "leader-elect-retry-period", 2*time.Second, "time between two tries to acquire or renew the Lease")
	fl.StringVar(&cf.httpAddress, "http-address", ":8080", `address of /metrics, /healthz, /readyz and /hooks/github ("" turns it off)`)
	fl.StringVar(&cf.webhookSecretFile, "webhook-secret-file", "", "file holding the GitHub webhook secret (default: $REBALANCER_WEBHOOK_SECRET; neither: no webhook)")
	fl.DurationVar(&cf.proposeInterval, "propose-interval", 0, "the leader also runs propose this often (0: never; run it as a CronJob instead)")
	fl.StringVar(&cf.forgeName, "forge", "", "where the propose loop's proposals go: github or git (default github for github.com URLs)")
	fl.StringVar(&cf.ghTokenFile, "github-token-file", "", "GitHub API token for the propose loop (default: $GITHUB_TOKEN, then the git token)")
	fl.BoolVar(&cf.requireSigned, "require-signed-commits", false, "run a plan only when the commits that merged it and its policy are signed by a key in --trusted-keys-file")
	fl.StringVar(&cf.trustedKeysFile, "trusted-keys-file", "", "armored PGP public keys and/or SSH allowed-signers lines trusted to sign (with --require-signed-commits)")
	fl.DurationVar(&cf.archiveAfter, "archive-after", 0, "take a finished plan's files out of the tree this long after it finished (history keeps them; 0: never; at least 24h)")
	fl.StringVar(&cf.stopConfigMap, "stop-configmap", "rebalancer", "the ConfigMap in --namespace whose "+executor.StopAnnotation+" annotation freezes every plan")
	fl.StringVar(&cf.logFormat, "log-format", logFormatJSON, "json or text logs at INFO to stderr, or progress: one line per step to stdout and only warnings to stderr")
	return cmd
}

func runController(ctx context.Context, cmd *cobra.Command, cf controllerFlags) error {
	log, printProgress, err := controllerLogging(cf.logFormat, cmd.OutOrStdout(), cmd.ErrOrStderr())
	if err != nil {
		return err
	}
	if msgs := validation.IsDNS1123Label(cf.clusterName); len(msgs) > 0 {
		return usageError("--cluster-name %q: %s", cf.clusterName, strings.Join(msgs, "; "))
	}
	if cf.maxConcurrentPlans < 1 {
		return usageError("--max-concurrent-plans must be 1 or more")
	}
	if cf.interval <= 0 {
		return usageError("--interval must be positive")
	}
	if cf.archiveAfter != 0 && cf.archiveAfter < 24*time.Hour {
		return usageError("--archive-after %s: use 0 (never) or at least 24h, longer than every policy's cooldownPeriod", cf.archiveAfter)
	}
	if l := cf.lease; l.retryPeriod <= 0 || l.renewDeadline <= l.retryPeriod || l.duration <= l.renewDeadline {
		return usageError("leader election needs --leader-elect-lease-duration > --leader-elect-renew-deadline > --leader-elect-retry-period > 0")
	}
	identity := cf.identity
	if identity == "" {
		identity = os.Getenv("POD_NAME")
	}
	if identity == "" {
		host, _ := os.Hostname()
		identity = host + "-" + uuid.NewString()[:8]
	}
	var keyring *gitops.Keyring
	if cf.requireSigned {
		if cf.trustedKeysFile == "" {
			return usageError("--require-signed-commits needs --trusted-keys-file")
		}
		data, err := os.ReadFile(cf.trustedKeysFile)
		if err != nil {
			return usageError("reading %s: %v", cf.trustedKeysFile, err)
		}
		if keyring, err = gitops.ParseKeyring(data); err != nil {
			return usageError("%s: %v", cf.trustedKeysFile, err)
		}
	}
	var webhookSecret string
	if cf.httpAddress != "" {
		if webhookSecret, err = secret(cf.webhookSecretFile, "REBALANCER_WEBHOOK_SECRET"); err != nil {
			return err
		}
		if cf.webhookSecretFile != "" && webhookSecret == "" {
			return usageError("%s is empty: the webhook needs a secret", cf.webhookSecretFile)
		}
	}
	client, _, err := cf.kf.client()
	if err != nil {
		return err
	}
	ks, err := client.CoreV1().Namespaces().Get(ctx, metav1.NamespaceSystem, metav1.GetOptions{})
	if err != nil {
		return &exitError{code: 1, err: fmt.Errorf("reading the kube-system namespace, whose UID names this cluster in every status: %w", err)}
	}
	clusterUID := string(ks.UID)
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
			AllowedNodeGroups: cf.allowedNodeGroups, RequireSignedCommits: cf.requireSigned}, LastFinished: reconciler.LastFinished(store)}
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	defer broadcaster.Shutdown()
	events := broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "rebalancer-controller", Host: identity})
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	var rec *reconciler.Reconciler
	exec := executor.New(client, provider, reval, executor.Options{Namespace: cf.namespace, Identity: identity, StopConfigMap: cf.stopConfigMap},
		executor.WithLogger(log), executor.WithEvents(events), executor.WithMetrics(executor.NewMetrics(reg)),
		executor.WithProgress(func(p executor.Progress) { printProgress(p); rec.ProgressFunc()(p) }))
	rec = reconciler.New(repo, store, exec, reval, reconciler.Options{ClusterName: cf.clusterName, ClusterUID: clusterUID,
		MaxConcurrentPlans: cf.maxConcurrentPlans, Namespace: cf.namespace, RequireSignedCommits: cf.requireSigned, Keyring: keyring,
		ArchiveAfter: cf.archiveAfter},
		reconciler.WithLogger(log), reconciler.WithEvents(events), reconciler.WithMetrics(reconciler.NewMetrics(reg)))
	blocked := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "rebalancer_nodes_by_reason",
		Help: "Nodes by the analyzer's reason at the last propose run (candidate, pdb-blocked, local-storage...)."}, []string{"reason"})
	reg.MustRegister(blocked)

	var leading atomic.Bool
	fetchRequests := &reconciler.FetchRequests{Client: client, Namespace: cf.namespace, ConfigMap: cf.stopConfigMap, Log: log}
	if cf.httpAddress != "" && !cf.once {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
		mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
			role := "standby"
			if leading.Load() {
				role = "leader"
			}
			_, _ = io.WriteString(w, "ok ("+role+")\n")
		})
		if webhookSecret != "" {
			hook, err := reconciler.NewWebhook([]byte(webhookSecret), rec, log)
			if err != nil {
				return usageError("%v", err)
			}
			hook.SetTrigger(func(reason string) {
				if leading.Load() || !cf.leaderElect {
					rec.Trigger(reason)
					return
				}
				// The Service sent it to a standby: hand it to the leader.
				rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				if err := fetchRequests.Request(rctx); err != nil {
					log.Warn("webhook on a standby replica not handed to the leader; its next poll picks the change up", "error", err)
				}
			})
			mux.Handle("/hooks/github", hook)
		}
		srv := &http.Server{Addr: cf.httpAddress, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		lis, err := net.Listen("tcp", cf.httpAddress)
		if err != nil {
			return usageError("--http-address %s: %v", cf.httpAddress, err)
		}
		log.Info("serving", "address", lis.Addr().String(), "webhook", webhookSecret != "")
		go func() {
			if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("http server stopped", "error", err)
			}
		}()
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
		}()
	}

	proposeLoop := func(ctx context.Context) {
		prf := cf.rf
		if prf.cacheDir != "" {
			prf.cacheDir = filepath.Join(prf.cacheDir, "propose") // its own clone: passes use the other
		}
		prepo, err := prf.open(ctx, app, log)
		if err != nil {
			log.Error("propose loop: opening the repository", "error", err)
			return
		}
		f, err := buildForge(cf.forgeName, prf, app, cf.ghTokenFile, prepo, log)
		if err != nil {
			log.Error("propose loop: the forge", "error", err)
			return
		}
		for {
			if err := prepo.Fetch(ctx); err != nil {
				log.Warn("propose loop: fetching", "error", err)
			} else if err := runPropose(ctx, io.Discard, logWriter{log}, proposeInput{repo: prepo, forge: f, rf: prf, kf: cf.kf, pf: cf.pf,
				cluster: cf.clusterName, maxNodes: cf.maxNodesPerPlan, log: log, onAnalysis: func(a *planner.Analysis) {
					blocked.Reset()
					for reason, n := range a.Counts() {
						blocked.WithLabelValues(string(reason)).Set(float64(n))
					}
				}}); err != nil {
				log.Warn("propose loop: a run failed", "error", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(cf.proposeInterval):
			}
		}
	}
	loop := func(ctx context.Context) error {
		leading.Store(true)
		defer leading.Store(false)
		if cf.once {
			if err := rec.PassAndWait(ctx); err != nil {
				return &exitError{code: 1, err: err}
			}
			return nil
		}
		if cf.proposeInterval > 0 {
			go proposeLoop(ctx)
		}
		if webhookSecret != "" && cf.leaderElect {
			go fetchRequests.Watch(ctx, 2*time.Second, func() { rec.Trigger(reconciler.TriggerWebhook) })
		}
		rec.Run(ctx, cf.interval)
		return nil
	}
	if !cf.leaderElect {
		return loop(ctx)
	}
	return underLease(ctx, client, cf.namespace, cf.leaseName, identity, cf.lease, log, loop)
}

// logWriter turns what propose prints on stderr into warnings in the log.
type logWriter struct{ log *slog.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	if msg := strings.TrimSpace(string(p)); msg != "" {
		w.log.Warn("propose loop: " + msg)
	}
	return len(p), nil
}

// underLease runs fn only while holding the Lease; losing the Lease cancels fn's
// context. It returns when fn returns (the Lease is released) or ctx ends.
func underLease(ctx context.Context, client kubernetes.Interface, namespace, name, identity string, timings leaseTimings, log *slog.Logger, fn func(context.Context) error) error {
	lock := &resourcelock.LeaseLock{LeaseMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}, Client: client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: identity}}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// result receives fn's error once it returned; started is closed when it began.
	result := make(chan error, 1)
	started := make(chan struct{})
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock: lock, LeaseDuration: timings.duration, RenewDeadline: timings.renewDeadline, RetryPeriod: timings.retryPeriod,
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
