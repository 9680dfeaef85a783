package controllers

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/tlsbootstrap/tls-bootstrap-operator/api/v1alpha1"
	"github.com/tlsbootstrap/tls-bootstrap-operator/internal/token"
)

// Metric names, exported so the alert rules' test can check every name they use.
const (
	MetricTokenExpiry          = "tls_bootstrap_token_expiry_seconds"
	MetricTokenExpiryTimestamp = "tls_bootstrap_token_expiration_timestamp_seconds"
	MetricTokenRotateBefore    = "tls_bootstrap_token_rotate_before_seconds"
	MetricTokens               = "tls_bootstrap_tokens"
	MetricReconcileErrors      = "tls_bootstrap_policy_reconcile_errors_total"
	MetricDecisions            = "tls_bootstrap_csr_decisions_total"
	MetricDecisionLatency      = "tls_bootstrap_csr_decision_latency_seconds"
	MetricPendingCSRs          = "tls_bootstrap_csr_pending"
	MetricOldestPendingCSR     = "tls_bootstrap_csr_oldest_pending_timestamp_seconds"
	MetricCertExpiry           = "tls_bootstrap_node_certificate_expiration_timestamp_seconds"
)

var (
	policyReconcileErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: MetricReconcileErrors,
		Help: "Failed reconciles of a BootstrapPolicy.",
	}, []string{"policy"})
	tokensPerPolicy = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: MetricTokens,
		Help: "Live bootstrap tokens of a BootstrapPolicy.",
	}, []string{"policy"})
	tokenExpiryTimestamp = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: MetricTokenExpiryTimestamp,
		Help: "Unix time at which the current bootstrap token of a BootstrapPolicy expires.",
	}, []string{"policy"})
	// The current token is rotated once it has rotateBefore left, so a current token with
	// less than that left means rotation is stuck; alerts compare the two.
	tokenRotateBefore = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: MetricTokenRotateBefore,
		Help: "A BootstrapPolicy's effective spec.token.rotateBefore in seconds: its current token is replaced when it has this long left.",
	}, []string{"policy"})
	csrDecisions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: MetricDecisions,
		Help: "CSR decisions by governing policy, kind (client, renewal, serving) and outcome (Approve, Deny, Leave); dry_run says whether only recorded.",
	}, []string{"policy", "kind", "outcome", "dry_run"})
	csrDecisionLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    MetricDecisionLatency,
		Help:    "Seconds from a CSR's creation to the operator's written decision.",
		Buckets: []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300},
	}, []string{"kind", "outcome"})
	tokenExpiry = &expiryCollector{
		desc:    prometheus.NewDesc(MetricTokenExpiry, "Seconds until the current bootstrap token of a BootstrapPolicy expires.", []string{"policy"}, nil),
		expires: map[string]time.Time{},
		now:     time.Now,
	}
)

func init() {
	metrics.Registry.MustRegister(policyReconcileErrors, tokensPerPolicy, tokenExpiryTimestamp, tokenRotateBefore,
		csrDecisions, csrDecisionLatency, tokenExpiry)
}

// tokenMetrics records a policy's tokens after a successful plan.
func tokenMetrics(p *v1alpha1.BootstrapPolicy, plan token.Plan) {
	policy := p.Name
	tokensPerPolicy.WithLabelValues(policy).Set(float64(len(plan.Live)))
	tokenRotateBefore.WithLabelValues(policy).Set(p.Spec.Token.EffectiveRotateBefore().Seconds())
	if plan.Current != nil {
		tokenExpiryTimestamp.WithLabelValues(policy).Set(float64(plan.Current.Expires.Unix()))
		tokenExpiry.set(policy, plan.Current.Expires)
	}
}

// forgetPolicyMetrics drops the series of a deleted policy.
func forgetPolicyMetrics(policy string) {
	tokensPerPolicy.DeleteLabelValues(policy)
	tokenExpiryTimestamp.DeleteLabelValues(policy)
	tokenRotateBefore.DeleteLabelValues(policy)
	policyReconcileErrors.DeleteLabelValues(policy)
	tokenExpiry.forget(policy)
}

// expiryCollector computes "seconds until expiry" at scrape time: a gauge set at
// reconcile time would freeze between reconciles, which are hours apart.
type expiryCollector struct {
	desc    *prometheus.Desc
	mu      sync.Mutex
	expires map[string]time.Time
	now     func() time.Time
}

func (c *expiryCollector) set(policy string, t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.expires[policy] = t
}

func (c *expiryCollector) forget(policy string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.expires, policy)
}

// Describe implements prometheus.Collector.
func (c *expiryCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c *expiryCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	for policy, t := range c.expires {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, t.Sub(now).Seconds(), policy)
	}
}
