// Command bench measures the operator against the alternatives on one local control plane
// (etcd, kube-apiserver and kube-controller-manager built from source, see test/localcluster):
// how fast a burst of kubelet CSRs is approved by the operator, by kube-controller-manager's
// csrapproving controller at its default and at the operator's client limits, and by a bare
// approval loop with no checks at all (the limit of this API server); how fast it approves
// serving CSRs; its peak memory with many CSRs and Secrets present; and how long 200 policies
// take to become Ready. It prints one table with the targets next to the numbers.
//
// How it measures: every burst's CSRs (keys and requests) are built before timing; creators
// share the bootstrap-token clients; a watch started before the first Create records when each
// CSR is seen approved. Latency runs from the moment a CSR's Create was sent to that moment
// (creationTimestamp has only second precision); throughput is the burst's size over the time
// from the first Create sent to the last approval seen. Exactly one approver acts per burst: the
// operator is stopped for b, c and d, and kube-controller-manager runs csrapproving only for b
// and c; aq is the operator again with --approval-events=false, to show what the Event it
// records per approval costs. The operator runs with the environment its Deployment sets
// (GOMEMLIMIT from config/manager/manager.yaml) unless -deployment-env=false. Its csrsigning runs throughout, so approved CSRs are signed as in a real cluster. Each
// approver first approves one warm-up CSR, so that a burst measures approving, not starting.
//
// Run it with `make bench` (BENCH_ARGS="-scenarios a,d -n 200" for a quick subset; the memory
// and scale scenarios alone: BENCH_ARGS="-scenarios mem,scale").
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"

	"github.com/tlsbootstrap/tls-bootstrap-operator/test/localcluster"
)

// Scenario names accepted by -scenarios, in the order they run.
const (
	scenarioOperator      = "a"
	scenarioOperatorQuiet = "aq"
	scenarioKCMDefault    = "b"
	scenarioKCMEqual      = "c"
	scenarioRaw           = "d"
	scenarioServing       = "serving"
	scenarioMem           = "mem"
	scenarioScale         = "scale"
)

var allScenarios = []string{scenarioOperator, scenarioOperatorQuiet, scenarioKCMDefault, scenarioKCMEqual, scenarioRaw,
	scenarioServing, scenarioMem, scenarioScale}

// config is everything the flags set.
type config struct {
	operatorBin string
	operatorEnv []string
	scenarios   []string

	n, kcmN, servingN    int
	memCSRs, memSecrets  int
	policies, tokens     int
	createWorkers        int
	createQPS            float64
	createBurst          int
	rawWorkers           int
	rawQPS               float64
	rawBurst             int
	kcmEqualQPS          float64
	kcmEqualBurst        int
	timeout, warmTimeout time.Duration
	verbose, keep        bool
}

func parseFlags(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	scenarios := fs.String("scenarios", strings.Join(allScenarios, ","),
		"comma-separated subset of "+strings.Join(allScenarios, ","))
	fs.StringVar(&c.operatorBin, "operator", "bin/manager", "the manager binary")
	deploymentEnv := fs.Bool("deployment-env", true, "run the manager with the environment config/manager/manager.yaml gives it (GOMEMLIMIT), as the Deployment does")
	operatorEnv := fs.String("operator-env", "", "comma-separated KEY=VALUE environment of the manager, after the Deployment's, e.g. GOMEMLIMIT=80MiB (flags stay at their defaults)")
	fs.IntVar(&c.n, "n", 1000, "kubelet client CSRs per burst (scenarios a, c, d)")
	fs.IntVar(&c.kcmN, "kcm-n", 300, "CSRs in the burst for kube-controller-manager at its defaults (scenario b), which approves about 10/s")
	fs.IntVar(&c.servingN, "serving-n", 500, "nodes and serving CSRs (scenario serving)")
	fs.IntVar(&c.memCSRs, "mem-csrs", 10000, "pending CSRs present when the operator starts (scenario mem)")
	fs.IntVar(&c.memSecrets, "mem-secrets", 10000, "unrelated Secrets present when the operator starts (scenario mem)")
	fs.IntVar(&c.policies, "policies", 200, "BootstrapPolicies created before the operator starts (scenario scale)")
	fs.IntVar(&c.tokens, "tokens", 4, "bootstrap tokens (one policy each) the client CSRs are spread over")
	fs.IntVar(&c.createWorkers, "create-workers", 32, "goroutines creating CSRs")
	fs.Float64Var(&c.createQPS, "create-qps", 1000, "client QPS of each CSR creator")
	fs.IntVar(&c.createBurst, "create-burst", 2000, "client burst of each CSR creator")
	fs.IntVar(&c.rawWorkers, "raw-workers", 16, "goroutines of the raw approval loop (the operator's --csr-workers default)")
	fs.Float64Var(&c.rawQPS, "raw-qps", 500, "client QPS of the raw approval loop (the operator's --kube-api-qps default)")
	fs.IntVar(&c.rawBurst, "raw-burst", 1000, "client burst of the raw approval loop (the operator's --kube-api-burst default)")
	fs.Float64Var(&c.kcmEqualQPS, "kcm-equal-qps", 500, "kube-controller-manager --kube-api-qps in scenario c")
	fs.IntVar(&c.kcmEqualBurst, "kcm-equal-burst", 1000, "kube-controller-manager --kube-api-burst in scenario c")
	fs.DurationVar(&c.timeout, "timeout", 10*time.Minute, "longest wait for one step (a burst's approvals, a cleanup, the operator settling)")
	fs.DurationVar(&c.warmTimeout, "warm-timeout", 2*time.Minute, "longest wait for an approver to approve its first CSR after start")
	fs.BoolVar(&c.verbose, "v", false, "stream every process's logs to stderr")
	fs.BoolVar(&c.keep, "keep", false, "keep the cluster's work dir (logs) after the run")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	for s := range strings.SplitSeq(*scenarios, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if !slices.Contains(allScenarios, s) {
			return c, fmt.Errorf("unknown scenario %q (want some of %s)", s, strings.Join(allScenarios, ","))
		}
		if !slices.Contains(c.scenarios, s) {
			c.scenarios = append(c.scenarios, s)
		}
	}
	if *deploymentEnv {
		env, err := deploymentEnvOf(filepath.Join("config", "manager", "manager.yaml"))
		if err != nil {
			return c, err
		}
		c.operatorEnv = env
	}
	for kv := range strings.SplitSeq(*operatorEnv, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		if !strings.Contains(kv, "=") {
			return c, fmt.Errorf("-operator-env: %q is not KEY=VALUE", kv)
		}
		c.operatorEnv = append(c.operatorEnv, kv)
	}
	// Run in the documented order whatever order they were given in.
	slices.SortFunc(c.scenarios, func(a, b string) int {
		return slices.Index(allScenarios, a) - slices.Index(allScenarios, b)
	})
	for name, v := range map[string]int{"n": c.n, "kcm-n": c.kcmN, "serving-n": c.servingN, "mem-csrs": c.memCSRs,
		"mem-secrets": c.memSecrets, "policies": c.policies, "tokens": c.tokens, "create-workers": c.createWorkers,
		"raw-workers": c.rawWorkers} {
		if v < 0 || (v == 0 && name != "mem-secrets") {
			return c, fmt.Errorf("-%s must be positive", name)
		}
	}
	return c, nil
}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	res, err := run(ctx, cfg)
	if res != nil {
		printReport(os.Stdout, cfg, res, time.Since(start))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench failed:", err)
		stop()
		os.Exit(1)
	}
	if res.failed() {
		stop()
		os.Exit(1)
	}
}

// run starts the cluster, runs the chosen scenarios one after the other and always stops
// every process it started. A failing scenario is recorded in its row and the next one runs.
func run(ctx context.Context, cfg config) (*results, error) {
	out := io.Discard
	if cfg.verbose {
		out = os.Stderr
	}
	b, err := newBench(ctx, cfg, out)
	if err != nil {
		return nil, err
	}
	defer func() {
		step("stopping every process")
		if err := b.cluster.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stop:", err)
		}
	}()
	res := &results{}
	if err := b.setup(ctx); err != nil {
		return res, fmt.Errorf("setup: %w", err)
	}
	for _, s := range cfg.scenarios {
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		b.runScenario(ctx, s, res)
	}
	return res, nil
}

func step(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s ==> %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// deploymentEnvOf reads the environment the Deployment in path gives the manager
// container, as KEY=VALUE (only literal values: a valueFrom needs a cluster).
func deploymentEnvOf(path string) ([]string, error) {
	root, err := localcluster.RepoRoot()
	if err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(filepath.Join(root, path))
	if err != nil {
		return nil, fmt.Errorf("read the Deployment: %w", err)
	}
	// manager.yaml holds the Namespace and the Deployment.
	for doc := range strings.SplitSeq(string(raw), "\n---\n") {
		var d appsv1.Deployment
		if err := yaml.Unmarshal([]byte(doc), &d); err != nil {
			return nil, fmt.Errorf("parse %s: %w", path, err)
		}
		if d.Kind != "Deployment" {
			continue
		}
		for _, c := range d.Spec.Template.Spec.Containers {
			if c.Name != "manager" {
				continue
			}
			var env []string
			for _, e := range c.Env {
				if e.ValueFrom == nil {
					env = append(env, e.Name+"="+e.Value)
				}
			}
			return env, nil
		}
	}
	return nil, fmt.Errorf("%s has no Deployment with a manager container", path)
}
