package controllers_test

import (
	"context"
	"net"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tlsbootstrap/tls-bootstrap-operator/api/v1alpha1"
	"github.com/tlsbootstrap/tls-bootstrap-operator/internal/testcsr"
)

// bootstrapClient is a client that authenticates with the policy's current bootstrap
// token, as a joining kubelet does.
func bootstrapClient(ctx context.Context, policy string) kubernetes.Interface {
	p := readyPolicy(policy)
	s, err := tokenSecret(ctx, p.Status.Tokens[0].ID)
	Expect(err).NotTo(HaveOccurred())
	cfg := rest.AnonymousClientConfig(adminCfg)
	cfg.BearerToken = tokenString(s)
	cs, err := kubernetes.NewForConfig(cfg)
	Expect(err).NotTo(HaveOccurred())
	return cs
}

// nodeClient is a client that authenticates as a joined node.
func nodeClient(name string) kubernetes.Interface {
	cs, err := kubernetes.NewForConfig(userConfig("system:node:"+name, []string{"system:nodes"}))
	Expect(err).NotTo(HaveOccurred())
	return cs
}

type csrSpec struct {
	signer string
	opts   testcsr.Options
	usages []certificatesv1.KeyUsage
}

func clientCSR(node string, mutate ...func(*testcsr.Options)) csrSpec {
	o := testcsr.Options{Key: testcsr.ECDSAP256, CommonName: "system:node:" + node, Organization: []string{"system:nodes"}}
	for _, m := range mutate {
		m(&o)
	}
	return csrSpec{signer: certificatesv1.KubeAPIServerClientKubeletSignerName, opts: o, usages: testcsr.ClientUsages()}
}

func servingCSR(node string, dns []string, ips ...string) csrSpec {
	o := testcsr.Options{Key: testcsr.ECDSAP256, CommonName: "system:node:" + node, Organization: []string{"system:nodes"}, DNSNames: dns}
	for _, ip := range ips {
		o.IPs = append(o.IPs, net.ParseIP(ip))
	}
	return csrSpec{signer: certificatesv1.KubeletServingSignerName, opts: o, usages: testcsr.ServingUsages()}
}

func submit(ctx context.Context, cs kubernetes.Interface, s csrSpec) string {
	pemBytes, _, err := testcsr.NewPEM(s.opts)
	Expect(err).NotTo(HaveOccurred())
	created, err := cs.CertificatesV1().CertificateSigningRequests().Create(ctx, &certificatesv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "csr-"},
		Spec:       certificatesv1.CertificateSigningRequestSpec{Request: pemBytes, SignerName: s.signer, Usages: s.usages},
	}, metav1.CreateOptions{})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() {
		_ = admin.Delete(context.Background(), &certificatesv1.CertificateSigningRequest{ObjectMeta: metav1.ObjectMeta{Name: created.Name}})
	})
	return created.Name
}

func conditionsOf(g Gomega, name string) []certificatesv1.CertificateSigningRequestCondition {
	c := &certificatesv1.CertificateSigningRequest{}
	g.Expect(admin.Get(context.Background(), client.ObjectKey{Name: name}, c)).To(Succeed())
	return c.Status.Conditions
}

func expectApproved(name, message string) {
	Eventually(func(g Gomega) {
		g.Expect(conditionsOf(g, name)).To(ConsistOf(And(
			HaveField("Type", certificatesv1.CertificateApproved),
			HaveField("Reason", "AutoApproved"),
			HaveField("Message", ContainSubstring(message)))))
	}).Should(Succeed())
}

func expectDenied(name string, messages ...string) {
	Eventually(func(g Gomega) {
		conds := conditionsOf(g, name)
		g.Expect(conds).To(ConsistOf(And(HaveField("Type", certificatesv1.CertificateDenied), HaveField("Reason", "PolicyViolation"))))
		for _, m := range messages {
			g.Expect(conds[0].Message).To(ContainSubstring(m))
		}
	}).Should(Succeed())
}

func expectUntouched(name string) {
	Consistently(func(g Gomega) {
		g.Expect(conditionsOf(g, name)).To(BeEmpty())
	}, 3*time.Second, 250*time.Millisecond).Should(Succeed())
}

func createPolicy(ctx context.Context, p *v1alpha1.BootstrapPolicy) {
	Expect(admin.Create(ctx, p)).To(Succeed())
	DeferCleanup(admin.Delete, ctx, p)
	readyPolicy(p.Name)
}

func createNode(ctx context.Context, name string, ready corev1.ConditionStatus, addrs ...corev1.NodeAddress) {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	Expect(admin.Create(ctx, n)).To(Succeed())
	DeferCleanup(admin.Delete, ctx, n)
	n.Status.Addresses = addrs
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: ready, LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}}
	Expect(admin.Status().Update(ctx, n)).To(Succeed())
}

var _ = Describe("CSR approver", func() {
	ctx := context.Background()

	It("approves a first-bootstrap client CSR from the policy's group and denies one asking for system:masters", func() {
		createPolicy(ctx, newPolicy("boot"))
		cs := bootstrapClient(ctx, "boot")

		good := submit(ctx, cs, clientCSR("boot-1"))
		expectApproved(good, `BootstrapPolicy "boot"`)

		bad := submit(ctx, cs, clientCSR("boot-2", func(o *testcsr.Options) { o.Organization = []string{"system:masters"} }))
		expectDenied(bad, "system:nodes")

		weak := submit(ctx, cs, clientCSR("boot-3", func(o *testcsr.Options) { o.Key = testcsr.RSA1024 }))
		expectDenied(weak, "2048")

		Eventually(func(g Gomega) {
			var evs eventsv1.EventList
			g.Expect(admin.List(ctx, &evs)).To(Succeed())
			g.Expect(evs.Items).To(ContainElement(And(HaveField("Regarding.Name", good), HaveField("Reason", "AutoApproved"))))
			g.Expect(evs.Items).To(ContainElement(And(HaveField("Regarding.Name", bad), HaveField("Reason", "PolicyViolation"))))
		}).Should(Succeed())
	})

	It("leaves another signer's CSR and an ungoverned CSR alone", func() {
		createPolicy(ctx, newPolicy("lonely"))
		createPolicy(ctx, newPolicy("ungoverned", func(p *v1alpha1.BootstrapPolicy) {
			// Only the token is wanted: this policy approves nothing the test sends.
			p.Spec.Approval.Client.Enabled = false
		}))
		other := clientCSR("lonely-1")
		other.signer = certificatesv1.KubeAPIServerClientSignerName
		otherName := submit(ctx, bootstrapClient(ctx, "lonely"), other)
		ungoverned := submit(ctx, bootstrapClient(ctx, "ungoverned"), clientCSR("ungoverned-1"))
		expectUntouched(otherName)
		expectUntouched(ungoverned)
	})

	It("never overrides a human's decision, even when a policy changes", func() {
		createPolicy(ctx, newPolicy("human", func(p *v1alpha1.BootstrapPolicy) { p.Spec.Approval.Client.Enabled = false }))
		name := submit(ctx, bootstrapClient(ctx, "human"), clientCSR("human-1"))
		c := &certificatesv1.CertificateSigningRequest{}
		Expect(admin.Get(ctx, client.ObjectKey{Name: name}, c)).To(Succeed())
		c.Status.Conditions = append(c.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{
			Type: certificatesv1.CertificateDenied, Status: corev1.ConditionTrue, Reason: "HumanSaidNo", Message: "not this one"})
		Expect(admin.SubResource("approval").Update(ctx, c)).To(Succeed())

		p := getPolicy(Default, "human")
		p.Spec.Approval.Client.Enabled = true // now the policy would approve it
		Expect(admin.Update(ctx, p)).To(Succeed())
		readyPolicy("human")
		Consistently(func(g Gomega) {
			g.Expect(conditionsOf(g, name)).To(ConsistOf(HaveField("Reason", "HumanSaidNo")))
		}, 3*time.Second, 250*time.Millisecond).Should(Succeed())
	})

	It("writes no condition for a DryRun policy, only an Event", func() {
		createPolicy(ctx, newPolicy("dry", func(p *v1alpha1.BootstrapPolicy) { p.Spec.Approval.Mode = v1alpha1.ModeDryRun }))
		name := submit(ctx, bootstrapClient(ctx, "dry"), clientCSR("dry-1"))
		Eventually(func(g Gomega) {
			var evs eventsv1.EventList
			g.Expect(admin.List(ctx, &evs)).To(Succeed())
			g.Expect(evs.Items).To(ContainElement(And(HaveField("Regarding.Name", name), HaveField("Reason", "DryRun"),
				HaveField("Note", ContainSubstring("would Approve")))))
		}).Should(Succeed())
		expectUntouched(name)
	})

	It("leaves KubeControllerManager-approved policies' CSRs to kube-controller-manager", func() {
		createPolicy(ctx, newPolicy("bykcm", func(p *v1alpha1.BootstrapPolicy) {
			p.Spec.Approval.Approver = v1alpha1.ApproverKubeControllerManager
		}))
		expectUntouched(submit(ctx, bootstrapClient(ctx, "bykcm"), clientCSR("bykcm-1")))
	})

	It("caps pending CSRs per node", func() {
		createPolicy(ctx, newPolicy("flood-src", func(p *v1alpha1.BootstrapPolicy) { p.Spec.Approval.Client.Enabled = false }))
		createPolicy(ctx, newPolicy("flood", func(p *v1alpha1.BootstrapPolicy) { p.Spec.Approval.MaxPendingPerNode = 2 }))
		src := bootstrapClient(ctx, "flood-src")
		for range 2 {
			expectUntouched(submit(ctx, src, clientCSR("flood-1")))
		}
		capped := submit(ctx, bootstrapClient(ctx, "flood"), clientCSR("flood-1"))
		expectDenied(capped, "pending")
		// Another node is not held back by flood-1's pile.
		expectApproved(submit(ctx, bootstrapClient(ctx, "flood"), clientCSR("flood-2")), `BootstrapPolicy "flood"`)
	})

	It("refuses to hand a Ready node's name to a bootstrap token, unless re-join is allowed", func() {
		createPolicy(ctx, newPolicy("takeover"))
		createNode(ctx, "takeover-ready", corev1.ConditionTrue)
		createNode(ctx, "takeover-down", corev1.ConditionFalse)
		cs := bootstrapClient(ctx, "takeover")
		expectDenied(submit(ctx, cs, clientCSR("takeover-ready")), "takeover-ready")
		expectApproved(submit(ctx, cs, clientCSR("takeover-down")), `BootstrapPolicy "takeover"`)

		createPolicy(ctx, newPolicy("rejoin", func(p *v1alpha1.BootstrapPolicy) { p.Spec.Approval.Client.AllowRejoin = true }))
		expectApproved(submit(ctx, bootstrapClient(ctx, "rejoin"), clientCSR("takeover-ready")), `BootstrapPolicy "rejoin"`)
	})

	It("approves a node's renewal of its own client certificate, and only for nodes its pattern names", func() {
		createPolicy(ctx, newPolicy("renew", func(p *v1alpha1.BootstrapPolicy) { p.Spec.Approval.NodeNamePattern = "renew-[0-9]+" }))
		cs := nodeClient("renew-1")
		expectApproved(submit(ctx, cs, clientCSR("renew-1")), "renewal")

		By("NodeRestriction refuses another node's name before the approver sees it; the approver's own rule is in internal/csr's table")
		pemBytes, _, err := testcsr.NewPEM(clientCSR("renew-2").opts)
		Expect(err).NotTo(HaveOccurred())
		_, err = cs.CertificatesV1().CertificateSigningRequests().Create(ctx, &certificatesv1.CertificateSigningRequest{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "csr-"},
			Spec: certificatesv1.CertificateSigningRequestSpec{Request: pemBytes,
				SignerName: certificatesv1.KubeAPIServerClientKubeletSignerName, Usages: testcsr.ClientUsages()},
		}, metav1.CreateOptions{})
		Expect(err).To(MatchError(ContainSubstring("can only create a node CSR with CN=system:node:renew-1")))

		By("a node outside the policy's pattern is not governed")
		expectUntouched(submit(ctx, nodeClient("other-1"), clientCSR("other-1")))
	})

	It("approves serving certificates only for the Node's own addresses", func() {
		createPolicy(ctx, newPolicy("serve", func(p *v1alpha1.BootstrapPolicy) {
			p.Spec.Approval.NodeNamePattern = "serve-[0-9]+"
			p.Spec.Approval.Serving = v1alpha1.ServingApproval{Enabled: true, AllowedCIDRs: []string{"10.0.0.0/8"}}
		}))
		createNode(ctx, "serve-1", corev1.ConditionTrue,
			corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "10.1.2.3"},
			corev1.NodeAddress{Type: corev1.NodeHostName, Address: "serve-1"})
		cs := nodeClient("serve-1")
		expectApproved(submit(ctx, cs, servingCSR("serve-1", []string{"serve-1"}, "10.1.2.3")), "serving")
		expectDenied(submit(ctx, cs, servingCSR("serve-1", []string{"serve-1"}, "10.9.9.9")), "10.9.9.9")
		expectDenied(submit(ctx, cs, servingCSR("serve-1", []string{"kubernetes.default"}, "10.1.2.3")), "kubernetes.default")

		By("a serving CSR for a node that has no Node object: its addresses cannot be checked")
		expectDenied(submit(ctx, nodeClient("serve-2"), servingCSR("serve-2", []string{"serve-2"}, "10.1.2.4")), "serve-2")
	})
})
