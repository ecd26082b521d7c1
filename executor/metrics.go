package executor

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	api "github.com/rebalancer-dev/rebalancer/api/v1alpha1"
)

// Metrics are the seed design's metrics, names kept exactly, plus step durations
// and plan phases.
type Metrics struct {
	operations     *prometheus.CounterVec
	nodesReplaced  *prometheus.CounterVec
	costSavings    prometheus.Counter
	rollbacks      prometheus.Counter
	rollbackFails  prometheus.Counter
	stepDurations  *prometheus.HistogramVec
	planPhaseGauge *prometheus.GaugeVec
}

// NewMetrics creates the collectors and registers them with reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		operations: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rebalancer_operations_total",
			Help: "Executor operations by kind and result."}, []string{"operation", "result"}),
		nodesReplaced: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rebalancer_nodes_replaced_total",
			Help: "Nodes replaced, by strategy."}, []string{"strategy"}),
		costSavings: prometheus.NewCounter(prometheus.CounterOpts{Name: "rebalancer_cost_savings_total",
			Help: "Cumulative monthly savings (in the catalog's currency) of finished plans."}),
		rollbacks: prometheus.NewCounter(prometheus.CounterOpts{Name: "rebalancer_rollback_total",
			Help: "Rollbacks started."}),
		rollbackFails: prometheus.NewCounter(prometheus.CounterOpts{Name: "rebalancer_rollback_failed_total",
			Help: "Rollbacks that could not drain a replacement (RollbackFailed)."}),
		stepDurations: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "rebalancer_step_duration_seconds",
			Help: "Duration of executor steps.", Buckets: prometheus.ExponentialBuckets(0.1, 2, 14)}, []string{"action"}),
		planPhaseGauge: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "rebalancer_plan_phase",
			Help: "1 for the phase each known plan is in."}, []string{"plan", "node_group", "phase"}),
	}
	if reg != nil {
		reg.MustRegister(m.operations, m.nodesReplaced, m.costSavings, m.rollbacks, m.rollbackFails, m.stepDurations, m.planPhaseGauge)
	}
	return m
}

func (m *Metrics) operation(op string, err error) {
	result := "success"
	if err != nil {
		result = "error"
	}
	m.operations.WithLabelValues(op, result).Inc()
}

func (m *Metrics) stepDuration(action string, d time.Duration) {
	m.stepDurations.WithLabelValues(action).Observe(d.Seconds())
}

func (m *Metrics) replaced(s api.Strategy, n int, savings float64) {
	m.nodesReplaced.WithLabelValues(string(s)).Add(float64(n))
	m.costSavings.Add(savings)
}

func (m *Metrics) rollback()       { m.rollbacks.Inc() }
func (m *Metrics) rollbackFailed() { m.rollbackFails.Inc() }

func (m *Metrics) phase(plan *api.RebalancePlan, p api.Phase) {
	m.planPhaseGauge.DeletePartialMatch(prometheus.Labels{"plan": plan.Metadata.Name})
	m.planPhaseGauge.WithLabelValues(plan.Metadata.Name, plan.Spec.NodeGroup, string(p)).Set(1)
}
