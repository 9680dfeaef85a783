package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/tlsbootstrap/tls-bootstrap-operator/api/v1alpha1"
	"github.com/tlsbootstrap/tls-bootstrap-operator/internal/testcsr"
)

// fillerLabel marks the CSRs of the memory scenario, which must outlive the bursts' cleanups.
const fillerLabel = "bench.tlsbootstrap.io/filler"

// approver is who approves during a burst; exactly one acts at a time.
type approver int

const (
	approverOperator approver = iota
	// approverOperatorQuiet is the operator with --approval-events=false.
	approverOperatorQuiet
	approverKCMDefault
	approverKCMEqual
	approverRaw
)

// results holds every figure of the run; a scenario that did not run leaves its fields zero.
type results struct {
	rows []row

	memRan                bool
	memPeakRSS, memRSS    uint64 // bytes, VmHWM and VmRSS once settled and after a burst
	memSettle             time.Duration
	memErr                error
	scaleRan              bool
	scaleReady            time.Duration
	scaleReadyN, scaleAll int
	scaleErr              error
}

// row is one burst.
type row struct {
	scenario, what string
	res            burstResult
	err            error
}

func (r *results) row(scenario string) *row {
	for i := range r.rows {
		if r.rows[i].scenario == scenario {
			return &r.rows[i]
		}
	}
	return nil
}

func (r *results) failed() bool {
	for _, row := range r.rows {
		if row.err != nil {
			return true
		}
	}
	return r.memErr != nil || r.scaleErr != nil
}

func (b *bench) runScenario(ctx context.Context, s string, res *results) {
	switch s {
	case scenarioOperator:
		b.clientBurst(ctx, res, s, "operator, default flags", approverOperator, b.cfg.n)
	case scenarioOperatorQuiet:
		b.clientBurst(ctx, res, s, "operator, "+quietFlag+" (no Event per approval)", approverOperatorQuiet, b.cfg.n)
	case scenarioKCMDefault:
		b.clientBurst(ctx, res, s, "kube-controller-manager csrapproving, defaults", approverKCMDefault, b.cfg.kcmN)
	case scenarioKCMEqual:
		b.clientBurst(ctx, res, s, fmt.Sprintf("kube-controller-manager csrapproving, qps %g burst %d",
			b.cfg.kcmEqualQPS, b.cfg.kcmEqualBurst), approverKCMEqual, b.cfg.n)
	case scenarioRaw:
		b.clientBurst(ctx, res, s, fmt.Sprintf("raw UpdateApproval loop, %d workers, qps %g burst %d",
			b.cfg.rawWorkers, b.cfg.rawQPS, b.cfg.rawBurst), approverRaw, b.cfg.n)
	case scenarioServing:
		b.servingBurst(ctx, res)
	case scenarioMem:
		b.memory(ctx, res)
	case scenarioScale:
		b.scale(ctx, res)
	}
}

// quietFlag turns off the Event the operator records for each approval.
const quietFlag = "--approval-events=false"

// use makes a the only approver: the operator stopped unless it is a, csrapproving off unless
// it is a. The raw loop is started here and stopped by the returned func.
func (b *bench) use(ctx context.Context, a approver) (stopRaw func() error, err error) {
	if a != approverOperator && a != approverOperatorQuiet {
		if err := b.stopOperator(); err != nil {
			return nil, err
		}
	}
	switch a {
	case approverKCMDefault:
		err = b.useControllerManager(true)
	case approverKCMEqual:
		err = b.useControllerManager(true,
			"--kube-api-qps="+strconv.FormatFloat(b.cfg.kcmEqualQPS, 'f', -1, 64),
			"--kube-api-burst="+strconv.Itoa(b.cfg.kcmEqualBurst))
	default:
		if b.kcmApproving {
			err = b.useControllerManager(false)
		}
	}
	if err != nil {
		return nil, err
	}
	b.kcmApproving = a == approverKCMDefault || a == approverKCMEqual
	switch a {
	case approverOperator, approverOperatorQuiet:
		var args []string
		if a == approverOperatorQuiet {
			args = []string{quietFlag}
		}
		if err := b.startOperator(ctx, args...); err != nil {
			return nil, err
		}
		return nil, b.waitBenchPolicy(ctx)
	case approverRaw:
		cfg := rest.CopyConfig(b.cluster.Admin)
		cfg.QPS, cfg.Burst = float32(b.cfg.rawQPS), b.cfg.rawBurst
		cs, err := kubernetes.NewForConfig(protobuf(cfg))
		if err != nil {
			return nil, fmt.Errorf("raw approver clientset: %w", err)
		}
		return b.startRawApprover(ctx, cs, b.cfg.rawWorkers)
	}
	return nil, nil
}

// waitBenchPolicy waits until the bench policy is Ready: its RBAC lets the tokens create CSRs.
func (b *bench) waitBenchPolicy(ctx context.Context) error {
	return waitUntil(ctx, b.cfg.timeout, "policy "+benchPolicy+" to be Ready", func() (bool, error) {
		n, err := b.policiesReady(ctx, map[string]bool{benchPolicy: true})
		return n == 1, err
	})
}

// clientBurst measures one approver on a burst of n first-bootstrap client CSRs.
func (b *bench) clientBurst(ctx context.Context, res *results, scenario, what string, a approver, n int) {
	r := row{scenario: scenario, what: what}
	r.res, r.err = b.clientBurstRun(ctx, scenario, a, n)
	res.rows = append(res.rows, r)
	b.report(r)
}

func (b *bench) clientBurstRun(ctx context.Context, scenario string, a approver, n int) (_ burstResult, err error) {
	step("scenario %s: %d client CSRs", scenario, n)
	stopRaw, err := b.use(ctx, a)
	if err != nil {
		return burstResult{}, err
	}
	if stopRaw != nil {
		defer func() {
			if stopErr := stopRaw(); stopErr != nil && err == nil {
				err = fmt.Errorf("raw approver: %w", stopErr)
			}
		}()
	}
	defer func() {
		if cleanErr := b.cleanupCSRs(ctx); cleanErr != nil && err == nil {
			err = cleanErr
		}
	}()
	if err := b.warm(ctx, scenario); err != nil {
		return burstResult{}, err
	}
	items, err := b.clientItems(scenario, "bench-"+scenario, n)
	if err != nil {
		return burstResult{}, err
	}
	return b.burst(ctx, scenario, items, b.cfg.timeout)
}

// servingBurst measures the operator on n serving CSRs from n Nodes, each checked against its
// Node's addresses and the policy's allowedCIDRs.
func (b *bench) servingBurst(ctx context.Context, res *results) {
	r := row{scenario: scenarioServing, what: "operator, serving CSRs checked against Node addresses"}
	r.res, r.err = b.servingRun(ctx)
	res.rows = append(res.rows, r)
	b.report(r)
}

func (b *bench) servingRun(ctx context.Context) (_ burstResult, err error) {
	step("scenario %s: %d Nodes and serving CSRs", scenarioServing, b.cfg.servingN)
	if _, err := b.use(ctx, approverOperator); err != nil {
		return burstResult{}, err
	}
	defer func() {
		if cleanErr := b.cleanupCSRs(ctx); cleanErr != nil && err == nil {
			err = cleanErr
		}
	}()
	if err := b.warm(ctx, scenarioServing); err != nil {
		return burstResult{}, err
	}
	items, err := b.servingItems(ctx, scenarioServing, b.cfg.servingN)
	if err != nil {
		return burstResult{}, err
	}
	return b.burst(ctx, scenarioServing, items, b.cfg.timeout)
}

// memory fills the cluster with CSRs the operator must cache (pending kubelet client CSRs no
// policy governs, so they stay) and Secrets it must not, starts the operator cold, lets it work
// through them, runs a burst, and reads its peak RSS.
func (b *bench) memory(ctx context.Context, res *results) {
	res.memRan = true
	r := row{scenario: scenarioMem, what: fmt.Sprintf("operator, with %d CSRs and %d Secrets present", b.cfg.memCSRs, b.cfg.memSecrets)}
	r.res, r.err = b.memoryRun(ctx, res)
	res.memErr = r.err
	res.rows = append(res.rows, r)
	b.report(r)
	if res.memPeakRSS > 0 {
		step("scenario %s: peak RSS %s, RSS %s, settled %s after start", scenarioMem, mib(res.memPeakRSS), mib(res.memRSS), res.memSettle.Round(time.Millisecond))
	}
}

func (b *bench) memoryRun(ctx context.Context, res *results) (_ burstResult, err error) {
	step("scenario %s: creating %d Secrets and %d CSRs, operator stopped", scenarioMem, b.cfg.memSecrets, b.cfg.memCSRs)
	if err := b.stopOperator(); err != nil {
		return burstResult{}, err
	}
	if err := b.fill(ctx); err != nil {
		return burstResult{}, err
	}
	defer func() {
		if cleanErr := b.unfill(ctx); cleanErr != nil && err == nil {
			err = cleanErr
		}
	}()
	step("scenario %s: starting the operator cold", scenarioMem)
	start := time.Now()
	if _, err := b.use(ctx, approverOperator); err != nil {
		return burstResult{}, err
	}
	// Settled: every pending CSR reconciled once and the queue empty.
	if err := waitUntil(ctx, b.cfg.timeout, "the operator to reconcile every filler CSR", func() (bool, error) {
		m, err := b.operatorMetrics(ctx)
		if err != nil {
			return false, err
		}
		return m.csrReconciles >= float64(b.cfg.memCSRs) && m.csrQueueDepth == 0, nil
	}); err != nil {
		return burstResult{}, err
	}
	res.memSettle = time.Since(start)
	pid := b.operator.Pid()
	defer func() {
		hwm, rss, rssErr := readRSS(pid)
		if rssErr != nil && err == nil {
			err = rssErr
		}
		res.memPeakRSS, res.memRSS = hwm, rss
	}()
	if err := b.warm(ctx, scenarioMem); err != nil {
		return burstResult{}, err
	}
	items, err := b.clientItems(scenarioMem, "bench-"+scenarioMem, b.cfg.n)
	if err != nil {
		return burstResult{}, err
	}
	r, err := b.burst(ctx, scenarioMem, items, b.cfg.timeout)
	if cleanErr := b.cleanupCSRs(ctx); cleanErr != nil && err == nil {
		err = cleanErr
	}
	return r, err
}

// fill creates the memory scenario's Secrets (1 KiB each, unlabelled, in a namespace of their
// own) and its CSRs (created by the admin, so no policy governs them and they stay pending).
func (b *bench) fill(ctx context.Context) error {
	if err := b.ensureNamespace(ctx, unrelatedNamespace); err != nil {
		return err
	}
	data := []byte(strings.Repeat("x", 1024))
	if err := b.parallel(ctx, b.cfg.memSecrets, func(i int) error {
		s := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: unrelatedNamespace, Name: fmt.Sprintf("unrelated-%05d", i)},
			Data:       map[string][]byte{"payload": data},
		}
		if _, err := b.cs.CoreV1().Secrets(unrelatedNamespace).Create(ctx, s, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create secret %s: %w", s.Name, err)
		}
		return nil
	}); err != nil {
		return err
	}
	return b.parallel(ctx, b.cfg.memCSRs, func(i int) error {
		name := fmt.Sprintf("filler-%05d", i)
		// The cached key: these are never approved, so sharing it costs nothing.
		pem, _, err := testcsr.NewPEM(testcsr.Options{CommonName: "system:node:" + name, Organization: []string{"system:nodes"}})
		if err != nil {
			return fmt.Errorf("build csr %s: %w", name, err)
		}
		c := testcsr.Object(name, certificatesv1.KubeAPIServerClientKubeletSignerName, "", nil, testcsr.ClientUsages(), pem)
		c.Labels = map[string]string{fillerLabel: "true"}
		if _, err := b.cs.CertificatesV1().CertificateSigningRequests().Create(ctx, c, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create csr %s: %w", name, err)
		}
		return nil
	})
}

// unfill deletes what fill created, so that later scenarios measure without it.
func (b *bench) unfill(ctx context.Context) error {
	if err := b.cs.CertificatesV1().CertificateSigningRequests().DeleteCollection(ctx, metav1.DeleteOptions{},
		metav1.ListOptions{LabelSelector: fillerLabel}); err != nil {
		return fmt.Errorf("delete filler csrs: %w", err)
	}
	if err := b.cs.CoreV1().Secrets(unrelatedNamespace).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
		return fmt.Errorf("delete unrelated secrets: %w", err)
	}
	return nil
}

// scale creates the policies with the operator stopped, then times a cold start until every
// one of them is Ready.
func (b *bench) scale(ctx context.Context, res *results) {
	res.scaleRan, res.scaleAll = true, b.cfg.policies
	res.scaleErr = b.scaleRun(ctx, res)
	if res.scaleErr != nil {
		step("scenario %s failed: %v", scenarioScale, res.scaleErr)
		return
	}
	step("scenario %s: %d policies Ready %s after the operator started", scenarioScale, b.cfg.policies, res.scaleReady.Round(time.Millisecond))
}

func (b *bench) scaleRun(ctx context.Context, res *results) error {
	step("scenario %s: creating %d policies, operator stopped", scenarioScale, b.cfg.policies)
	if err := b.stopOperator(); err != nil {
		return err
	}
	names := make(map[string]bool, b.cfg.policies)
	for i := range b.cfg.policies {
		names[fmt.Sprintf("scale-%03d", i)] = true
	}
	if err := b.parallel(ctx, b.cfg.policies, func(i int) error {
		name := fmt.Sprintf("scale-%03d", i)
		p := &v1alpha1.BootstrapPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: v1alpha1.BootstrapPolicySpec{
				Groups:   []string{"system:bootstrappers:" + name},
				Approval: v1alpha1.ApprovalSpec{Client: v1alpha1.ClientApproval{Enabled: true}},
			},
		}
		if err := b.cl.Create(ctx, p); err != nil {
			return fmt.Errorf("create policy %s: %w", name, err)
		}
		return nil
	}); err != nil {
		return err
	}
	step("scenario %s: starting the operator cold", scenarioScale)
	start := time.Now()
	if err := b.startOperator(ctx); err != nil {
		return err
	}
	err := waitUntil(ctx, b.cfg.timeout, fmt.Sprintf("%d policies to be Ready", b.cfg.policies), func() (bool, error) {
		n, err := b.policiesReady(ctx, names)
		res.scaleReadyN = n
		return n == len(names), err
	})
	res.scaleReady = time.Since(start)
	return err
}

// parallel runs f(0..n-1) on the creators' worker count and returns the first error.
func (b *bench) parallel(ctx context.Context, n int, f func(i int) error) error {
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		once     sync.Once
		firstErr error
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range min(b.cfg.createWorkers, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := f(i); err != nil {
					once.Do(func() { firstErr = err; cancel() })
					return
				}
			}
		})
	}
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return firstErr
}

// operatorMetrics are the few series the memory scenario waits on.
type operatorMetrics struct {
	csrReconciles, csrQueueDepth float64
}

// operatorMetrics scrapes the operator's plain-HTTP loopback metrics endpoint.
func (b *bench) operatorMetrics(ctx context.Context) (operatorMetrics, error) {
	var m operatorMetrics
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.operator.MetricsURL, nil)
	if err != nil {
		return m, fmt.Errorf("metrics request: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return m, fmt.Errorf("scrape metrics: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return m, fmt.Errorf("scrape metrics: %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		series, value, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		var into *float64
		switch {
		case strings.HasPrefix(series, "controller_runtime_reconcile_total{") && strings.Contains(series, `controller="csr"`):
			into = &m.csrReconciles
		case strings.HasPrefix(series, "workqueue_depth{") && strings.Contains(series, `name="csr"`):
			into = &m.csrQueueDepth
		default:
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			return m, fmt.Errorf("parse metric %q: %w", line, err)
		}
		*into += v
	}
	if err := sc.Err(); err != nil {
		return m, fmt.Errorf("read metrics: %w", err)
	}
	return m, nil
}

// readRSS reads a process's peak resident set (VmHWM) and current one (VmRSS) in bytes.
func readRSS(pid int) (hwm, rss uint64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, fmt.Errorf("read memory of pid %d: %w", pid, err)
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, value, ok := strings.Cut(sc.Text(), ":")
		if !ok || (key != "VmHWM" && key != "VmRSS") {
			continue
		}
		kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("parse %s of pid %d: %w", key, pid, err)
		}
		if key == "VmHWM" {
			hwm = kb << 10
		} else {
			rss = kb << 10
		}
	}
	if err := sc.Err(); err != nil {
		return 0, 0, fmt.Errorf("read memory of pid %d: %w", pid, err)
	}
	return hwm, rss, nil
}

// report prints one burst as it finishes, so a long run shows progress.
func (b *bench) report(r row) {
	if r.err != nil {
		step("scenario %s failed: %v", r.scenario, r.err)
		return
	}
	step("scenario %s: %d approved in %s: %.0f/s, p50 %s, p99 %s", r.scenario, r.res.approved,
		r.res.elapsed.Round(time.Millisecond), r.res.throughput(), r.res.p50.Round(time.Millisecond), r.res.p99.Round(time.Millisecond))
}

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
