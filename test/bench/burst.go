package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/tlsbootstrap/tls-bootstrap-operator/internal/testcsr"
)

// runLabel marks the CSRs of one burst, so that its watch sees only them and cleanup finds
// them all.
const runLabel = "bench.tlsbootstrap.io/run"

// item is one CSR of a burst, built before timing starts, and the identity that creates it.
type item struct {
	csr    *certificatesv1.CertificateSigningRequest
	client kubernetes.Interface
}

// burstResult is what one burst measured.
type burstResult struct {
	n, approved, denied int
	// elapsed runs from the first Create sent to the last approval seen.
	elapsed  time.Duration
	p50, p99 time.Duration
}

// throughput is approvals per second over the whole burst.
func (r burstResult) throughput() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.approved) / r.elapsed.Seconds()
}

// clientItems builds n kubelet client CSRs for nodes <prefix>-<i>, each with a key of its own
// (ECDSA P-256, what a kubelet generates), spread over the bootstrap-token clients.
func (b *bench) clientItems(run, prefix string, n int) ([]item, error) {
	items := make([]item, 0, n)
	for i := range n {
		name := fmt.Sprintf("%s-%05d", prefix, i)
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("generate key: %w", err)
		}
		pem, _, err := testcsr.NewPEM(testcsr.Options{Signer: key, CommonName: "system:node:" + name, Organization: []string{"system:nodes"}})
		if err != nil {
			return nil, fmt.Errorf("build csr %s: %w", name, err)
		}
		c := testcsr.Object(name, certificatesv1.KubeAPIServerClientKubeletSignerName, "", nil, testcsr.ClientUsages(), pem)
		c.Labels = map[string]string{runLabel: run}
		items = append(items, item{csr: c, client: b.tokens[i%len(b.tokens)]})
	}
	return items, nil
}

// burst creates every item as fast as the creators go and measures, from a watch started
// before the first Create, when each one is approved. Latency runs from the moment its Create
// was sent (creationTimestamp has only second precision) to the moment the watch saw it approved.
func (b *bench) burst(ctx context.Context, run string, items []item, timeout time.Duration) (burstResult, error) {
	res := burstResult{n: len(items)}
	ours := make(map[string]bool, len(items))
	for _, it := range items {
		ours[it.csr.Name] = true
	}
	var (
		mu       sync.Mutex
		approved = make(map[string]time.Time, len(items))
		denied   = map[string]bool{}
		done     = make(chan struct{})
	)
	record := func(o any) {
		c, ok := o.(*certificatesv1.CertificateSigningRequest)
		if !ok {
			return
		}
		now := time.Now()
		mu.Lock()
		defer mu.Unlock()
		if !ours[c.Name] {
			return
		}
		if _, seen := approved[c.Name]; seen || denied[c.Name] {
			return
		}
		switch {
		case hasCondition(c, certificatesv1.CertificateApproved):
			approved[c.Name] = now
		case hasCondition(c, certificatesv1.CertificateDenied):
			denied[c.Name] = true
		default:
			return
		}
		if len(approved)+len(denied) == len(items) {
			close(done)
		}
	}
	stopWatch, err := b.watchCSRs(ctx, run, cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { record(o) },
		UpdateFunc: func(_, o any) { record(o) },
	})
	if err != nil {
		return res, err
	}
	defer stopWatch()

	// Each creator writes only the entries of the items it took; they are read after wg.Wait.
	sentAt := make([]time.Time, len(items))
	var next atomic.Int64
	errs := make(chan error, b.cfg.createWorkers)
	var wg sync.WaitGroup
	for range min(b.cfg.createWorkers, len(items)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(items) || ctx.Err() != nil {
					return
				}
				it := items[i]
				sentAt[i] = time.Now()
				if _, err := it.client.CertificatesV1().CertificateSigningRequests().Create(ctx, it.csr, metav1.CreateOptions{}); err != nil {
					errs <- fmt.Errorf("create csr %s: %w", it.csr.Name, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return res, err
	}

	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
	case <-ctx.Done():
		return res, ctx.Err()
	}

	mu.Lock()
	defer mu.Unlock()
	res.approved, res.denied = len(approved), len(denied)
	latencies := make([]time.Duration, 0, len(approved))
	var last time.Time
	for i, it := range items {
		at, ok := approved[it.csr.Name]
		if !ok {
			continue
		}
		latencies = append(latencies, at.Sub(sentAt[i]))
		if at.After(last) {
			last = at
		}
	}
	if len(latencies) > 0 {
		res.elapsed = last.Sub(slices.MinFunc(sentAt, func(a, b time.Time) int { return a.Compare(b) }))
		slices.Sort(latencies)
		res.p50, res.p99 = percentile(latencies, 0.50), percentile(latencies, 0.99)
	}
	if res.denied > 0 || res.approved < res.n {
		return res, fmt.Errorf("burst %s: %d of %d approved, %d denied within %s", run, res.approved, res.n, res.denied, timeout)
	}
	return res, nil
}

// warm creates one client CSR and waits until it is approved: the approver is then up, its
// caches synced, and the burst measures approving, not starting.
func (b *bench) warm(ctx context.Context, run string) error {
	items, err := b.clientItems(run+"-warm", "bench-"+run+"-warm", 1)
	if err != nil {
		return err
	}
	if _, err := b.burst(ctx, run+"-warm", items, b.cfg.warmTimeout); err != nil {
		return fmt.Errorf("warming up the approver: %w", err)
	}
	return nil
}

// watchCSRs runs an informer over the CSRs labelled run (every bench CSR when run is empty)
// until the returned stop is called; it returns once the informer has synced.
func (b *bench) watchCSRs(ctx context.Context, run string, h cache.ResourceEventHandler) (stop func(), err error) {
	selector := runLabel
	if run != "" {
		selector = runLabel + "=" + run
	}
	lw := cache.NewFilteredListWatchFromClient(b.cs.CertificatesV1().RESTClient(), "certificatesigningrequests", metav1.NamespaceAll,
		func(o *metav1.ListOptions) { o.LabelSelector = selector })
	inf := cache.NewSharedIndexInformer(lw, &certificatesv1.CertificateSigningRequest{}, 0, cache.Indexers{})
	if _, err := inf.AddEventHandler(h); err != nil {
		return nil, fmt.Errorf("watch csrs %s: %w", selector, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		inf.RunWithContext(ctx)
	}()
	stop = func() {
		cancel()
		<-finished
	}
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		stop()
		return nil, fmt.Errorf("watch csrs %s: cache did not sync", selector)
	}
	return stop, nil
}

// startRawApprover approves every pending bench CSR with one UpdateApproval call and no checks
// at all, from workers goroutines sharing one client: the most an approver can do against this
// API server with these client limits.
func (b *bench) startRawApprover(ctx context.Context, cs kubernetes.Interface, workers int) (stop func() error, err error) {
	queue := make(chan *certificatesv1.CertificateSigningRequest, 1<<16)
	enqueue := func(o any) {
		if c, ok := o.(*certificatesv1.CertificateSigningRequest); ok && !hasCondition(c, certificatesv1.CertificateApproved) &&
			!hasCondition(c, certificatesv1.CertificateDenied) {
			queue <- c
		}
	}
	stopWatch, err := b.watchCSRs(ctx, "", cache.ResourceEventHandlerFuncs{AddFunc: enqueue})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	for range workers {
		wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case c := <-queue:
					c = c.DeepCopy()
					c.Status.Conditions = append(c.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{
						Type: certificatesv1.CertificateApproved, Status: corev1.ConditionTrue,
						Reason: "BenchRawApproval", Message: "approved by the bench's raw loop, unchecked",
						LastUpdateTime: metav1.Now(),
					})
					_, err := cs.CertificatesV1().CertificateSigningRequests().UpdateApproval(ctx, c.Name, c, metav1.UpdateOptions{})
					if err != nil && ctx.Err() == nil {
						mu.Lock()
						if firstErr == nil {
							firstErr = fmt.Errorf("approve %s: %w", c.Name, err)
						}
						mu.Unlock()
					}
				}
			}
		})
	}
	return func() error {
		stopWatch()
		cancel()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		return firstErr
	}, nil
}

// cleanupCSRs deletes every bench CSR and waits until they are gone, so each burst starts
// with the same (empty) cache in whichever approver runs next.
func (b *bench) cleanupCSRs(ctx context.Context) error {
	api := b.cs.CertificatesV1().CertificateSigningRequests()
	if err := api.DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: runLabel}); err != nil {
		return fmt.Errorf("delete bench csrs: %w", err)
	}
	return waitUntil(ctx, b.cfg.timeout, "bench csrs to be deleted", func() (bool, error) {
		l, err := api.List(ctx, metav1.ListOptions{LabelSelector: runLabel, Limit: 1})
		if err != nil {
			return false, fmt.Errorf("list bench csrs: %w", err)
		}
		return len(l.Items) == 0, nil
	})
}

// servingItems creates n Nodes with an InternalIP inside servingCIDR and a Hostname address,
// as a kubelet or cloud controller manager reports them, and builds for each a serving CSR
// (SANs: its name and its IP) created by the node's own identity.
func (b *bench) servingItems(ctx context.Context, run string, n int) ([]item, error) {
	items := make([]item, n)
	var next atomic.Int64
	errs := make(chan error, b.cfg.createWorkers)
	var wg sync.WaitGroup
	for range min(b.cfg.createWorkers, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				it, err := b.servingItem(ctx, run, i)
				if err != nil {
					errs <- err
					return
				}
				items[i] = it
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	return items, nil
}

func (b *bench) servingItem(ctx context.Context, run string, i int) (item, error) {
	name := fmt.Sprintf("bench-node-%05d", i)
	ip := net.IPv4(10, byte(128+(i>>16)), byte(i>>8), byte(i))
	node, err := b.cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		return item{}, fmt.Errorf("create node %s: %w", name, err)
	}
	node.Status.Addresses = []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: ip.String()},
		{Type: corev1.NodeHostName, Address: name},
	}
	if _, err := b.cs.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		return item{}, fmt.Errorf("set addresses of node %s: %w", name, err)
	}
	cfg, err := b.cluster.UserConfig("system:node:"+name, []string{"system:nodes"})
	if err != nil {
		return item{}, fmt.Errorf("identity of node %s: %w", name, err)
	}
	// Each node sends one request: its own limit never binds, the API server's does.
	cfg.QPS, cfg.Burst = 100, 100
	cs, err := kubernetes.NewForConfig(protobuf(cfg))
	if err != nil {
		return item{}, fmt.Errorf("clientset of node %s: %w", name, err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return item{}, fmt.Errorf("generate key: %w", err)
	}
	pem, _, err := testcsr.NewPEM(testcsr.Options{Signer: key, CommonName: "system:node:" + name,
		Organization: []string{"system:nodes"}, DNSNames: []string{name}, IPs: []net.IP{ip}})
	if err != nil {
		return item{}, fmt.Errorf("build serving csr of %s: %w", name, err)
	}
	c := testcsr.Object(name+"-serving", certificatesv1.KubeletServingSignerName, "", nil, testcsr.ServingUsages(), pem)
	c.Labels = map[string]string{runLabel: run}
	return item{csr: c, client: cs}, nil
}

func hasCondition(c *certificatesv1.CertificateSigningRequest, t certificatesv1.RequestConditionType) bool {
	for _, cond := range c.Status.Conditions {
		if cond.Type == t {
			return true
		}
	}
	return false
}

// percentile reads the nearest-rank percentile of sorted durations.
func percentile(sorted []time.Duration, p float64) time.Duration {
	i := int(float64(len(sorted))*p+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}
