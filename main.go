// Command manager runs the tls-bootstrap-operator: the BootstrapPolicy reconciler
// (tokens, bootstrap kubeconfig, RBAC) and the kubelet CSR approver.
package main

import (
	"crypto/tls"
	"flag"
	"os"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	bootstrapv1alpha1 "github.com/tlsbootstrap/tls-bootstrap-operator/api/v1alpha1"
	"github.com/tlsbootstrap/tls-bootstrap-operator/controllers"
)

var scheme = runtime.NewScheme()

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(bootstrapv1alpha1.AddToScheme(scheme))
}

func main() {
	var (
		metricsAddr, probeAddr, leaderElectionNamespace     string
		enableLeaderElection, secureMetrics, approvalEvents bool
		qps                                                 float64
		burst, csrWorkers, policyWorkers                    int
		leaseDuration, renewDeadline, retryPeriod           time.Duration
	)
	flag.StringVar(&metricsAddr, "metrics-bind-address", "0",
		"Address of the metrics endpoint, e.g. :8443 (HTTPS) or :8080 (HTTP); 0 disables it.")
	flag.BoolVar(&secureMetrics, "metrics-secure", true,
		"Serve metrics over HTTPS, with authentication and authorization through the API server.")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "Address of the health and readiness probes.")
	flag.BoolVar(&enableLeaderElection, "leader-elect", false,
		"Elect a leader so that only one replica reconciles and approves at a time.")
	flag.StringVar(&leaderElectionNamespace, "leader-election-namespace", "",
		"Namespace of the leader election Lease; defaults to the pod's namespace in a cluster.")
	flag.DurationVar(&leaseDuration, "leader-election-lease-duration", 15*time.Second,
		"How long followers wait before taking over from a leader that stopped renewing.")
	flag.DurationVar(&renewDeadline, "leader-election-renew-deadline", 10*time.Second,
		"How long the leader retries renewing before it gives up leadership; below the lease duration.")
	flag.DurationVar(&retryPeriod, "leader-election-retry-period", 2*time.Second,
		"How often replicas try to acquire or renew the lease.")
	// One approval is one API write; the defaults let a burst of a thousand CSRs go at the
	// API server's pace rather than at client-go's default 5 QPS.
	flag.Float64Var(&qps, "kube-api-qps", 500, "Queries per second to the API server.")
	flag.IntVar(&burst, "kube-api-burst", 1000, "Burst of queries to the API server.")
	flag.IntVar(&csrWorkers, "csr-workers", 16, "CSRs decided concurrently.")
	flag.IntVar(&policyWorkers, "policy-workers", 4, "BootstrapPolicies reconciled concurrently.")
	flag.BoolVar(&approvalEvents, "approval-events", true,
		"Record an Event on every CSR the operator approves; denials and DryRun verdicts always get one. "+
			"Off saves one API write per approval (the Approved condition carries the same message).")
	opts := zap.Options{Development: false}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))
	log := ctrl.Log.WithName("setup")

	cfg := ctrl.GetConfigOrDie()
	cfg.QPS, cfg.Burst = float32(qps), burst

	metricsOpts := metricsserver.Options{
		BindAddress:   metricsAddr,
		SecureServing: secureMetrics,
		// HTTP/2 is off: CVE-2023-44487 and CVE-2023-39325 (rapid reset) hit it.
		TLSOpts: []func(*tls.Config){func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} }},
	}
	if secureMetrics {
		metricsOpts.FilterProvider = filters.WithAuthenticationAndAuthorization
	}

	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                        scheme,
		Metrics:                       metricsOpts,
		HealthProbeBindAddress:        probeAddr,
		LeaderElection:                enableLeaderElection,
		LeaderElectionID:              "tls-bootstrap-operator.tlsbootstrap.io",
		LeaderElectionNamespace:       leaderElectionNamespace,
		LeaderElectionReleaseOnCancel: true,
		LeaseDuration:                 &leaseDuration,
		RenewDeadline:                 &renewDeadline,
		RetryPeriod:                   &retryPeriod,
		Cache:                         controllers.CacheOptions(),
	})
	if err != nil {
		log.Error(err, "unable to create manager")
		os.Exit(1)
	}

	clk := clock.RealClock{}
	if err := (&controllers.BootstrapPolicyReconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Recorder:  mgr.GetEventRecorder("tls-bootstrap-operator"),
		Clock:     clk,
	}).SetupWithManager(mgr, policyWorkers); err != nil {
		log.Error(err, "unable to create controller", "controller", "BootstrapPolicy")
		os.Exit(1)
	}
	if err := (&controllers.CSRReconciler{
		Client:         mgr.GetClient(),
		Recorder:       mgr.GetEventRecorder("tls-bootstrap-operator"),
		Clock:          clk,
		QuietApprovals: !approvalEvents,
	}).SetupWithManager(mgr, csrWorkers); err != nil {
		log.Error(err, "unable to create controller", "controller", "CertificateSigningRequest")
		os.Exit(1)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		log.Error(err, "unable to set up health check")
		os.Exit(1)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		log.Error(err, "unable to set up ready check")
		os.Exit(1)
	}

	log.Info("starting manager")
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		log.Error(err, "problem running manager")
		os.Exit(1)
	}
}
