package reconciler

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the reconciler's collectors: git sync health and passes.
type Metrics struct {
	gitErrors *prometheus.CounterVec
	lastSync  prometheus.Gauge
	passes    *prometheus.CounterVec
	running   prometheus.Gauge
	outbox    *prometheus.GaugeVec
	webhooks  *prometheus.CounterVec
}

// NewMetrics creates the collectors and registers them with reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		gitErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rebalancer_git_sync_errors_total",
			Help: "Failed fetches and status pushes, by operation."}, []string{"op"}),
		lastSync: prometheus.NewGauge(prometheus.GaugeOpts{Name: "rebalancer_git_last_sync_timestamp_seconds",
			Help: "Unix time of the last successful fetch or status push."}),
		passes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rebalancer_reconcile_passes_total",
			Help: "Reconcile passes, by trigger (start, poll, webhook) and result (ok, error, skipped)."}, []string{"trigger", "result"}),
		running: prometheus.NewGauge(prometheus.GaugeOpts{Name: "rebalancer_plans_driven",
			Help: "Execution records this controller drives now (running, frozen, or waiting for git)."}),
		outbox: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "rebalancer_status_outbox_pending",
			Help: "Status transitions of a plan waiting to be pushed to git."}, []string{"plan"}),
		webhooks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rebalancer_webhook_requests_total",
			Help: "GitHub webhook deliveries, by result (triggered, ignored, unauthorized, bad-request)."}, []string{"result"}),
	}
	if reg != nil {
		reg.MustRegister(m.gitErrors, m.lastSync, m.passes, m.running, m.outbox, m.webhooks)
	}
	return m
}
