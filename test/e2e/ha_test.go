package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	certificatesv1 "k8s.io/api/certificates/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tlsbootstrap/tls-bootstrap-operator/api/v1alpha1"
	"github.com/tlsbootstrap/tls-bootstrap-operator/internal/testcsr"
	"github.com/tlsbootstrap/tls-bootstrap-operator/test/localcluster"
)

// Leader election timings of the replicas here: shorter than the deployment's 15s/10s/2s
// so a takeover fits a spec, in the same proportions.
const (
	haLease  = 8 * time.Second
	haRenew  = 5 * time.Second
	haRetry  = time.Second
	haLeaseN = "tls-bootstrap-operator.tlsbootstrap.io"
)

// These specs kill, restart and cut off real processes. The suite's own operator would
// act beside the replicas started here, so it is stopped for them and started again after.
var _ = Describe("Under failure", Ordered, func() {
	BeforeAll(pauseSuiteOperator)

	It("approves every CSR of a 300-CSR burst exactly once when the leader is SIGKILLed mid-burst", func(ctx SpecContext) {
		replicas := map[string]*localcluster.Operator{}
		for _, name := range []string{"replica-a", "replica-b"} {
			replicas[name] = startReplica(ctx, name, "--leader-elect",
				"--leader-election-lease-duration="+haLease.String(),
				"--leader-election-renew-deadline="+haRenew.String(),
				"--leader-election-retry-period="+haRetry.String())
		}
		leaderName := leaderOf(ctx, replicas)
		p := createPolicy(ctx, workerPolicy("ha"))
		bootstrapper := bootstrapClient(publishedKubeconfig(ctx, p))

		const n = 300
		requests := make([][]byte, n)
		for i := range requests {
			pem, _, err := testcsr.NewPEM(testcsr.Options{Key: testcsr.ECDSAP256,
				CommonName: fmt.Sprintf("system:node:worker-ha-%d", i), Organization: []string{"system:nodes"}})
			Expect(err).NotTo(HaveOccurred())
			requests[i] = pem
		}
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for w := range 8 {
			wg.Go(func() {
				defer GinkgoRecover()
				for i := w; i < n; i += 8 {
					obj := testcsr.Object(fmt.Sprintf("ha-%03d", i), certificatesv1.KubeAPIServerClientKubeletSignerName,
						"", nil, testcsr.ClientUsages(), requests[i])
					obj.Spec.Username, obj.Spec.Groups = "", nil
					_, err := bootstrapper.CertificatesV1().CertificateSigningRequests().Create(ctx, obj, metav1.CreateOptions{})
					errs <- err
				}
			})
		}

		By("killing the leader once it has approved a part of the burst")
		Eventually(func(g Gomega) {
			g.Expect(countApproved(ctx, g, "ha-")).To(BeNumerically(">=", 20))
		}).WithContext(ctx).WithPolling(50 * time.Millisecond).Should(Succeed())
		lastRenew := lease(ctx, Default).Spec.RenewTime.Time
		Expect(replicas[leaderName].Kill()).To(Succeed())
		wg.Wait()
		close(errs)
		for err := range errs {
			Expect(err).NotTo(HaveOccurred())
		}

		By("the follower taking over within the lease")
		var follower string
		for name := range replicas {
			if name != leaderName {
				follower = name
			}
		}
		Eventually(func(g Gomega) {
			g.Expect(logOf(g, replicas[follower])).To(ContainSubstring("Successfully acquired lease"))
		}).WithContext(ctx).Should(Succeed())
		taken := lease(ctx, Default).Spec.AcquireTime.Time
		// A follower tries every retry period, jittered by up to 1.2 times it (client-go's
		// leaderelection), so it acquires at most that long after the lease ran out.
		Expect(taken.Sub(lastRenew)).To(BeNumerically("<=", haLease+haRetry*22/10))

		By("every CSR ending Approved, once, by the policy")
		Eventually(func(g Gomega) {
			g.Expect(countApproved(ctx, g, "ha-")).To(Equal(n))
		}).WithContext(ctx).WithTimeout(2 * time.Minute).Should(Succeed())
		list, err := adminClient.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
		Expect(err).NotTo(HaveOccurred())
		for _, c := range list.Items {
			if !strings.HasPrefix(c.Name, "ha-") {
				continue
			}
			Expect(c.Status.Conditions).To(HaveLen(1), c.Name)
			Expect(c.Status.Conditions[0].Type).To(Equal(certificatesv1.CertificateApproved), c.Name)
			Expect(c.Status.Conditions[0].Message).To(ContainSubstring(`BootstrapPolicy "ha"`), c.Name)
		}
		// A decision is logged by the replica that wrote it; none may be written twice.
		decided := decisionsLogged(logOf(Default, replicas["replica-a"]) + logOf(Default, replicas["replica-b"]))
		Expect(decided).NotTo(BeEmpty())
		for name, times := range decided {
			Expect(times).To(Equal(1), name)
		}

		By("leaving exactly the one token the policy reports")
		expectOnlyCurrentToken(ctx, Default, p)
	}, SpecTimeout(5*time.Minute))

	It("keeps exactly one current token when the manager is killed in the middle of a rotation", func(ctx SpecContext) {
		op := startReplica(ctx, "rotator")
		p := createPolicy(ctx, workerPolicy("midrotate"))
		for round := range 3 {
			oldID := p.Status.Tokens[0].ID
			old := publishedKubeconfig(ctx, p)
			tokens, err := adminClient.CoreV1().Secrets(metav1.NamespaceSystem).List(ctx, policyTokens(p))
			Expect(err).NotTo(HaveOccurred())
			w, err := adminClient.CoreV1().Secrets(metav1.NamespaceSystem).Watch(ctx, withVersion(policyTokens(p), tokens.ResourceVersion))
			Expect(err).NotTo(HaveOccurred())

			patch := client.MergeFrom(p.DeepCopy())
			p.Annotations = map[string]string{v1alpha1.RotateAnnotation: fmt.Sprintf("round-%d", round)}
			Expect(k8sClient.Patch(ctx, p, patch)).To(Succeed())

			By("killing the manager the moment the successor token exists")
			Eventually(w.ResultChan()).WithContext(ctx).Should(Receive(Satisfy(func(e watch.Event) bool {
				s, ok := e.Object.(*corev1.Secret)
				return ok && e.Type == watch.Added && s.Name != "bootstrap-token-"+oldID
			})))
			w.Stop()
			Expect(op.Kill()).To(Succeed())
			op = startReplica(ctx, fmt.Sprintf("rotator-%d", round))

			Eventually(func(g Gomega) {
				g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(p), p)).To(Succeed())
				g.Expect(p.Status.Tokens).To(HaveLen(1))
				g.Expect(p.Status.Tokens[0].ID).NotTo(Equal(oldID))
				expectOnlyCurrentToken(ctx, g, p)
				g.Expect(tokenOf(publishedKubeconfig(ctx, p))).To(HavePrefix(p.Status.Tokens[0].ID + "."))
			}).WithContext(ctx).Should(Succeed())
			// The API server caches a token's successful authentication for 10s
			// (kube-apiserver's token success cache): a revoked token that was just used
			// works until that entry expires.
			Eventually(func() error { return whoAmIWith(ctx, old) }).WithContext(ctx).WithTimeout(15 * time.Second).
				Should(MatchError(apierrors.IsUnauthorized, "IsUnauthorized"))
			Expect(whoAmIWith(ctx, publishedKubeconfig(ctx, p))).To(Succeed())
		}
	}, SpecTimeout(3*time.Minute))

	It("survives a restart of the API server and approves the CSRs created after it", func(ctx SpecContext) {
		op := startReplica(ctx, "survivor", "--leader-elect")
		p := createPolicy(ctx, workerPolicy("apirestart"))
		bootstrapper := bootstrapClient(publishedKubeconfig(ctx, p))
		pid := op.Pid()

		Expect(cluster.RestartAPIServer()).To(Succeed())

		name := createCSR(ctx, bootstrapper, "system:node:worker-after-restart")
		Eventually(func(g Gomega) {
			csr := getCSR(ctx, g, name)
			g.Expect(condition(*csr, certificatesv1.CertificateApproved)).NotTo(BeNil())
			g.Expect(csr.Status.Certificate).NotTo(BeEmpty())
		}).WithContext(ctx).Should(Succeed())
		Expect(op.Running()).To(BeTrue(), "the manager exited: %v", op.ExitError())
		Expect(op.Pid()).To(Equal(pid))
	}, SpecTimeout(3*time.Minute))
})

// startReplica starts an operator process named name with extra flags, stopped when the
// spec ends.
func startReplica(ctx context.Context, name string, args ...string) *localcluster.Operator {
	GinkgoHelper()
	op, err := cluster.StartOperator(ctx, localcluster.OperatorOptions{Name: name, Args: args})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(op.Stop)
	return op
}

// leaderOf waits until one of the replicas holds the lease and returns its name.
func leaderOf(ctx context.Context, replicas map[string]*localcluster.Operator) string {
	GinkgoHelper()
	var leader string
	Eventually(func(g Gomega) {
		var holders []string
		for name, op := range replicas {
			if strings.Contains(logOf(g, op), "Successfully acquired lease") {
				holders = append(holders, name)
			}
		}
		g.Expect(holders).To(HaveLen(1))
		leader = holders[0]
	}).WithContext(ctx).Should(Succeed())
	return leader
}

func lease(ctx context.Context, g Gomega) *coordinationv1.Lease {
	l, err := adminClient.CoordinationV1().Leases(metav1.NamespaceSystem).Get(ctx, haLeaseN, metav1.GetOptions{})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(l.Spec.RenewTime).NotTo(BeNil())
	return l
}

func logOf(g Gomega, op *localcluster.Operator) string {
	raw, err := os.ReadFile(op.LogPath())
	g.Expect(err).NotTo(HaveOccurred())
	return string(raw)
}

// decisionsLogged counts the "csr decided" lines of the manager's JSON logs by CSR name.
func decisionsLogged(logs string) map[string]int {
	n := map[string]int{}
	for line := range strings.Lines(logs) {
		var entry struct {
			Msg  string `json:"msg"`
			Name string `json:"name"`
		}
		if json.Unmarshal([]byte(line), &entry) == nil && entry.Msg == "csr decided" {
			n[entry.Name]++
		}
	}
	return n
}

// bootstrapClient is a clientset authenticating with a bootstrap kubeconfig's token, fast
// enough for a burst.
func bootstrapClient(kc []byte) kubernetes.Interface {
	GinkgoHelper()
	cfg, err := clientcmd.RESTConfigFromKubeConfig(kc)
	Expect(err).NotTo(HaveOccurred())
	cfg.QPS, cfg.Burst = 500, 1000
	cs, err := kubernetes.NewForConfig(cfg)
	Expect(err).NotTo(HaveOccurred())
	return cs
}

// countApproved counts the CSRs named with prefix that carry an Approved condition.
func countApproved(ctx context.Context, g Gomega, prefix string) int {
	list, err := adminClient.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
	g.Expect(err).NotTo(HaveOccurred())
	n := 0
	for _, c := range list.Items {
		if strings.HasPrefix(c.Name, prefix) && condition(c, certificatesv1.CertificateApproved) != nil {
			n++
		}
	}
	return n
}

func policyTokens(p *v1alpha1.BootstrapPolicy) metav1.ListOptions {
	return metav1.ListOptions{LabelSelector: v1alpha1.PolicyLabel + "=" + p.Name, FieldSelector: "type=bootstrap.kubernetes.io/token"}
}

func withVersion(o metav1.ListOptions, rv string) metav1.ListOptions {
	o.ResourceVersion = rv
	return o
}

// expectOnlyCurrentToken checks that the policy's token Secrets are exactly the ones its
// status reports, each owned by it: nothing duplicated, nothing orphaned.
func expectOnlyCurrentToken(ctx context.Context, g Gomega, p *v1alpha1.BootstrapPolicy) {
	g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(p), p)).To(Succeed())
	g.Expect(p.Status.Tokens).To(HaveLen(1))
	secrets, err := adminClient.CoreV1().Secrets(metav1.NamespaceSystem).List(ctx, policyTokens(p))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(secrets.Items).To(HaveLen(1))
	g.Expect(secrets.Items[0].Name).To(Equal(p.Status.Tokens[0].SecretName))
	g.Expect(secrets.Items[0].OwnerReferences).To(ContainElement(HaveField("UID", p.UID)))
}
