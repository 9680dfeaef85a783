package e2e

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tlsbootstrap/tls-bootstrap-operator/api/v1alpha1"
	"github.com/tlsbootstrap/tls-bootstrap-operator/internal/kubeconfig"
	"github.com/tlsbootstrap/tls-bootstrap-operator/internal/testcsr"
	"github.com/tlsbootstrap/tls-bootstrap-operator/test/localcluster"
)

// These specs run the operator as its own process, under its generated RBAC, with
// kube-controller-manager signing but not approving: every approval is the operator's.
var _ = Describe("A kubelet joining through the operator", func() {
	It("joins with the published bootstrap kubeconfig and becomes system:node:<name>", func(ctx SpecContext) {
		p := createPolicy(ctx, workerPolicy("join"))
		k := startKubelet(ctx, localcluster.KubeletOptions{Name: "worker-join", BootstrapKubeconfig: publishedKubeconfig(ctx, p)})
		expectKubeletIdentity(ctx, k)

		first := onlyCSR(ctx, k.Name, certificatesv1.KubeAPIServerClientKubeletSignerName)
		Expect(first.Spec.Username).To(Equal("system:bootstrap:" + p.Status.Tokens[0].ID))
		expectApprovedByPolicy(first, p.Name)

		By("keeping the token out of the operator's log")
		log, err := os.ReadFile(operator.LogPath())
		Expect(err).NotTo(HaveOccurred())
		token := tokenOf(publishedKubeconfig(ctx, p))
		_, secret, _ := strings.Cut(token, ".")
		Expect(string(log)).To(ContainSubstring("csr decided"), "the log is the operator's")
		Expect(string(log)).NotTo(ContainSubstring(secret))
	}, SpecTimeout(3*time.Minute))

	It("gets the kubelet a serving certificate for its own addresses", func(ctx SpecContext) {
		p := createPolicy(ctx, workerPolicy("serve", func(p *v1alpha1.BootstrapPolicy) {
			p.Spec.Approval.Serving = v1alpha1.ServingApproval{Enabled: true, AllowedCIDRs: []string{"127.0.0.0/8"}}
		}))
		k := startKubelet(ctx, localcluster.KubeletOptions{
			Name: "worker-serve", BootstrapKubeconfig: publishedKubeconfig(ctx, p), ServerTLSBootstrap: true,
		})
		expectKubeletIdentity(ctx, k)

		var cert *x509.Certificate
		Eventually(func(g Gomega) {
			raw, err := os.ReadFile(filepath.Join(k.CertDir, "kubelet-server-current.pem"))
			g.Expect(err).NotTo(HaveOccurred())
			block, _ := pem.Decode(raw)
			g.Expect(block).NotTo(BeNil())
			cert, err = x509.ParseCertificate(block.Bytes)
			g.Expect(err).NotTo(HaveOccurred())
		}).WithContext(ctx).Should(Succeed())
		Expect(cert.Subject.CommonName).To(Equal("system:node:" + k.Name))
		Expect(cert.DNSNames).To(ConsistOf(k.Name))
		Expect(cert.IPAddresses).To(ConsistOf(BeComparableTo(net.ParseIP(k.NodeIP).To4())))
		Expect(cert.ExtKeyUsage).To(ConsistOf(x509.ExtKeyUsageServerAuth))

		node, err := adminClient.CoreV1().Nodes().Get(ctx, k.Name, metav1.GetOptions{})
		Expect(err).NotTo(HaveOccurred())
		Expect(node.Status.Addresses).To(ContainElement(corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: k.NodeIP}))
		expectApprovedByPolicy(onlyCSR(ctx, k.Name, certificatesv1.KubeletServingSignerName), p.Name)
	}, SpecTimeout(3*time.Minute))

	It("denies a kubelet whose name the policy's nodeNamePattern refuses", func(ctx SpecContext) {
		p := createPolicy(ctx, workerPolicy("pattern"))
		k := startKubelet(ctx, localcluster.KubeletOptions{Name: "rogue-pattern", BootstrapKubeconfig: publishedKubeconfig(ctx, p)})

		var denied certificatesv1.CertificateSigningRequest
		Eventually(func(g Gomega) {
			denied = onlyCSRg(ctx, g, k.Name, certificatesv1.KubeAPIServerClientKubeletSignerName)
			g.Expect(condition(denied, certificatesv1.CertificateDenied)).NotTo(BeNil())
		}).WithContext(ctx).Should(Succeed())
		c := condition(denied, certificatesv1.CertificateDenied)
		Expect(c.Reason).To(Equal("PolicyViolation"))
		Expect(c.Message).To(ContainSubstring(p.Name))
		Expect(c.Message).To(ContainSubstring("nodeNamePattern"))
		Expect(condition(denied, certificatesv1.CertificateApproved)).To(BeNil())

		Consistently(func(g Gomega) {
			csr, err := adminClient.CertificatesV1().CertificateSigningRequests().Get(ctx, denied.Name, metav1.GetOptions{})
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(csr.Status.Certificate).To(BeEmpty())
			g.Expect(filepath.Join(k.CertDir, "kubelet-client-current.pem")).NotTo(BeAnExistingFile())
		}).WithContext(ctx).WithTimeout(5 * time.Second).Should(Succeed())
	}, SpecTimeout(3*time.Minute))

	It("approves a joined kubelet's renewal and denies a renewal naming another node", func(ctx SpecContext) {
		p := createPolicy(ctx, workerPolicy("renew"))
		k := startKubelet(ctx, localcluster.KubeletOptions{Name: "worker-renew", BootstrapKubeconfig: publishedKubeconfig(ctx, p)})
		expectKubeletIdentity(ctx, k)
		cfg, err := k.RESTConfig()
		Expect(err).NotTo(HaveOccurred())
		asNode, err := kubernetes.NewForConfig(cfg)
		Expect(err).NotTo(HaveOccurred())

		// What the kubelet's certificate manager sends when its client certificate ages.
		renewal := createCSR(ctx, asNode, "system:node:"+k.Name)
		Eventually(func(g Gomega) {
			csr := getCSR(ctx, g, renewal)
			g.Expect(csr.Spec.Username).To(Equal("system:node:" + k.Name))
			g.Expect(condition(*csr, certificatesv1.CertificateApproved)).NotTo(BeNil())
			g.Expect(csr.Status.Certificate).NotTo(BeEmpty(), "kube-controller-manager signs what the operator approved")
			g.Expect(condition(*csr, certificatesv1.CertificateApproved).Message).To(ContainSubstring("renewal"))
		}).WithContext(ctx).Should(Succeed())

		By("NodeRestriction refusing another node's name before any approver sees it")
		_, err = createCSRAs(ctx, asNode, "system:node:worker-victim")
		Expect(err).To(MatchError(apierrors.IsForbidden, "IsForbidden"))
		Expect(err).To(MatchError(ContainSubstring("can only create a node CSR with CN=system:node:" + k.Name)))
	}, SpecTimeout(3*time.Minute))

	It("stops the old token bootstrapping at once when the rotate annotation changes", func(ctx SpecContext) {
		p := createPolicy(ctx, workerPolicy("rotate"))
		old := publishedKubeconfig(ctx, p)
		oldID := p.Status.Tokens[0].ID

		patch := client.MergeFrom(p.DeepCopy())
		p.Annotations = map[string]string{v1alpha1.RotateAnnotation: "leaked"}
		Expect(k8sClient.Patch(ctx, p, patch)).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(p), p)).To(Succeed())
			g.Expect(p.Status.Tokens).To(HaveLen(1))
			g.Expect(p.Status.Tokens[0].ID).NotTo(Equal(oldID))
			g.Expect(tokenOf(publishedKubeconfig(ctx, p))).To(HavePrefix(p.Status.Tokens[0].ID + "."))
		}).WithContext(ctx).Should(Succeed())
		// The API server's token authenticator reads Secrets from its own informer: a deleted
		// token stops working as soon as that has seen the deletion.
		Eventually(func() error { return whoAmIWith(ctx, old) }).WithContext(ctx).WithTimeout(5 * time.Second).
			Should(MatchError(apierrors.IsUnauthorized, "IsUnauthorized"))

		stale := startKubelet(ctx, localcluster.KubeletOptions{Name: "worker-stale", BootstrapKubeconfig: old})
		fresh := startKubelet(ctx, localcluster.KubeletOptions{Name: "worker-fresh", BootstrapKubeconfig: publishedKubeconfig(ctx, p)})
		expectKubeletIdentity(ctx, fresh)
		// The stale kubelet is turned away before it can even ask for a certificate.
		Eventually(func(g Gomega) {
			log, err := os.ReadFile(stale.LogPath())
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(string(log)).To(ContainSubstring("Unauthorized"))
		}).WithContext(ctx).Should(Succeed())
		Expect(csrsOf(ctx, Default, stale.Name, certificatesv1.KubeAPIServerClientKubeletSignerName)).To(BeEmpty())
		Expect(filepath.Join(stale.CertDir, "kubelet-client-current.pem")).NotTo(BeAnExistingFile())
	}, SpecTimeout(3*time.Minute))

	It("removes the tokens, kubeconfig Secret and RBAC of a deleted policy, and the token stops working", func(ctx SpecContext) {
		p := createPolicy(ctx, workerPolicy("delete"))
		kc := publishedKubeconfig(ctx, p)
		Expect(whoAmIWith(ctx, kc)).To(Succeed())
		tokenSecret := p.Status.Tokens[0].SecretName
		owned := client.MatchingLabels{v1alpha1.PolicyLabel: p.Name}
		var bindings rbacv1.ClusterRoleBindingList
		Expect(k8sClient.List(ctx, &bindings, owned)).To(Succeed())
		Expect(bindings.Items).NotTo(BeEmpty())

		Expect(k8sClient.Delete(ctx, p)).To(Succeed())
		Eventually(func(g Gomega) {
			err := k8sClient.Get(ctx, client.ObjectKey{Namespace: metav1.NamespaceSystem, Name: tokenSecret}, &corev1.Secret{})
			g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "token Secret: %v", err)
			err = k8sClient.Get(ctx, client.ObjectKey{Namespace: provisioningNamespace, Name: p.Spec.Kubeconfig.SecretRef.Name}, &corev1.Secret{})
			g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "kubeconfig Secret: %v", err)
			var roles rbacv1.ClusterRoleList
			g.Expect(k8sClient.List(ctx, &bindings, owned)).To(Succeed())
			g.Expect(k8sClient.List(ctx, &roles, owned)).To(Succeed())
			g.Expect(bindings.Items).To(BeEmpty())
			g.Expect(roles.Items).To(BeEmpty())
		}).WithContext(ctx).Should(Succeed())
		Eventually(func() error { return whoAmIWith(ctx, kc) }).WithContext(ctx).Should(MatchError(apierrors.IsUnauthorized, "IsUnauthorized"))
	}, SpecTimeout(3*time.Minute))
})

var _ = Describe("A policy that leaves approval to kube-controller-manager", Ordered, func() {
	BeforeAll(useKubeControllerManagerApprover)

	It("lets the kubelet join with the seed's RBAC alone, and the operator writes no decision", func(ctx SpecContext) {
		p := createPolicy(ctx, workerPolicy("kcm", func(p *v1alpha1.BootstrapPolicy) {
			p.Spec.Approval.Approver = v1alpha1.ApproverKubeControllerManager
		}))
		var binding rbacv1.ClusterRoleBinding
		Expect(k8sClient.Get(ctx, client.ObjectKey{Name: "tls-bootstrap:kcm:auto-approve-csrs-for-group"}, &binding)).To(Succeed())
		Expect(binding.Subjects).To(ConsistOf(HaveField("Name", p.Spec.Groups[0])))

		k := startKubelet(ctx, localcluster.KubeletOptions{Name: "worker-kcm", BootstrapKubeconfig: publishedKubeconfig(ctx, p)})
		expectKubeletIdentity(ctx, k)
		approved := condition(onlyCSR(ctx, k.Name, certificatesv1.KubeAPIServerClientKubeletSignerName), certificatesv1.CertificateApproved)
		Expect(approved).NotTo(BeNil())
		// kube-controller-manager's own words; the operator's would name the policy.
		Expect(approved.Message).To(ContainSubstring("SubjectAccessReview"))
		Expect(approved.Message).NotTo(ContainSubstring("BootstrapPolicy"))
	}, SpecTimeout(3*time.Minute))
})

// NodeRestriction is what stops a node from asking for another node's name on a cluster
// configured like this suite's. Clusters that turned that check off (the deprecated
// AllowInsecureKubeletCertificateSigningRequests gate) or run without NodeRestriction rely
// on the approver alone, so these specs run one of those, with the operator in charge.
var _ = Describe("On a cluster whose API server lets nodes name any node", Ordered, func() {
	var (
		insecure *localcluster.Cluster
		admin    kubernetes.Interface
	)
	BeforeAll(func(ctx SpecContext) {
		var err error
		insecure, err = localcluster.Start(ctx, localcluster.Options{
			CRDDirectoryPaths: []string{filepath.Join("..", "..", "config", "crd", "bases")},
			ControllerManager: signerOnly,
			APIServerFlags:    map[string]string{"feature-gates": "AllowInsecureKubeletCertificateSigningRequests=true"},
			Out:               GinkgoWriter,
		})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(insecure.Stop)
		admin, err = kubernetes.NewForConfig(insecure.Admin)
		Expect(err).NotTo(HaveOccurred())
		_, err = insecure.StartOperator(ctx, localcluster.OperatorOptions{})
		Expect(err).NotTo(HaveOccurred())

		c, err := client.New(insecure.Admin, client.Options{Scheme: k8sClient.Scheme()})
		Expect(err).NotTo(HaveOccurred())
		p := workerPolicy("insecure")
		p.Spec.Kubeconfig = nil
		Expect(c.Create(ctx, p)).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(c.Get(ctx, client.ObjectKeyFromObject(p), p)).To(Succeed())
			g.Expect(meta.IsStatusConditionTrue(p.Status.Conditions, v1alpha1.ConditionReady)).To(BeTrue())
		}).WithContext(ctx).Should(Succeed())
	}, NodeTimeout(3*time.Minute))

	It("denies a node's renewal for another node's name, and approves its own", func(ctx SpecContext) {
		cfg, err := insecure.UserConfig("system:node:worker-a", []string{"system:nodes"})
		Expect(err).NotTo(HaveOccurred())
		asNode, err := kubernetes.NewForConfig(cfg)
		Expect(err).NotTo(HaveOccurred())

		takeover := createCSR(ctx, asNode, "system:node:worker-b")
		own := createCSR(ctx, asNode, "system:node:worker-a")
		Eventually(func(g Gomega) {
			csr := getCSRFrom(ctx, g, admin, takeover)
			c := condition(*csr, certificatesv1.CertificateDenied)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Reason).To(Equal("PolicyViolation"))
			g.Expect(c.Message).To(ContainSubstring(`"insecure"`))
			g.Expect(condition(*csr, certificatesv1.CertificateApproved)).To(BeNil())
			g.Expect(csr.Status.Certificate).To(BeEmpty())

			csr = getCSRFrom(ctx, g, admin, own)
			g.Expect(condition(*csr, certificatesv1.CertificateApproved)).NotTo(BeNil())
			g.Expect(csr.Status.Certificate).NotTo(BeEmpty())
		}).WithContext(ctx).Should(Succeed())
	}, SpecTimeout(2*time.Minute))
})

// workerPolicy is a policy named name for the group system:bootstrappers:<name> that approves
// client certificates and renewals of nodes named worker-*, and publishes its kubeconfig in
// provisioningNamespace. mutate adjusts it further.
func workerPolicy(name string, mutate ...func(*v1alpha1.BootstrapPolicy)) *v1alpha1.BootstrapPolicy {
	p := &v1alpha1.BootstrapPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.BootstrapPolicySpec{
			Groups: []string{"system:bootstrappers:" + name},
			Token:  v1alpha1.TokenSpec{TTL: metav1.Duration{Duration: time.Hour}},
			Kubeconfig: &v1alpha1.KubeconfigSpec{
				Server:    cluster.Server,
				SecretRef: v1alpha1.SecretReference{Namespace: provisioningNamespace, Name: name + "-bootstrap"},
			},
			Approval: v1alpha1.ApprovalSpec{
				NodeNamePattern: "^worker-[a-z0-9-]+$",
				Client:          v1alpha1.ClientApproval{Enabled: true},
				Renewal:         v1alpha1.RenewalApproval{Enabled: true},
			},
		},
	}
	for _, m := range mutate {
		m(p)
	}
	return p
}

// createPolicy creates p, deletes it when the spec ends, and returns it once it is Ready.
func createPolicy(ctx context.Context, p *v1alpha1.BootstrapPolicy) *v1alpha1.BootstrapPolicy {
	GinkgoHelper()
	Expect(k8sClient.Create(ctx, p)).To(Succeed())
	DeferCleanup(func(ctx SpecContext) {
		Expect(client.IgnoreNotFound(k8sClient.Delete(ctx, p))).To(Succeed())
	})
	Eventually(func(g Gomega) {
		g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(p), p)).To(Succeed())
		ready := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionReady)
		g.Expect(ready).NotTo(BeNil())
		g.Expect(ready.Status).To(Equal(metav1.ConditionTrue), "%s: %s", ready.Reason, ready.Message)
		g.Expect(ready.ObservedGeneration).To(Equal(p.Generation))
	}).WithContext(ctx).Should(Succeed())
	return p
}

// publishedKubeconfig is the bootstrap kubeconfig the policy's Secret holds now.
func publishedKubeconfig(ctx context.Context, p *v1alpha1.BootstrapPolicy) []byte {
	GinkgoHelper()
	s := &corev1.Secret{}
	ref := p.Spec.Kubeconfig.SecretRef
	Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ref.Namespace, Name: ref.Name}, s)).To(Succeed())
	Expect(s.Data).To(HaveKey(kubeconfig.Key))
	return s.Data[kubeconfig.Key]
}

// tokenOf is the bearer token of a bootstrap kubeconfig's only user.
func tokenOf(kc []byte) string {
	GinkgoHelper()
	cfg, err := clientcmd.Load(kc)
	Expect(err).NotTo(HaveOccurred())
	Expect(cfg.AuthInfos).To(HaveLen(1))
	for _, u := range cfg.AuthInfos {
		return u.Token
	}
	return ""
}

// whoAmIWith asks the API server who a kubeconfig's user is.
func whoAmIWith(ctx context.Context, kc []byte) error {
	cfg, err := clientcmd.RESTConfigFromKubeConfig(kc)
	if err != nil {
		return err
	}
	_, err = localcluster.WhoAmI(ctx, cfg)
	return err
}

// createCSR creates a kubelet client CSR for commonName with the given client, as a
// kubelet's certificate manager does, and returns its name.
func createCSR(ctx context.Context, cs kubernetes.Interface, commonName string) string {
	GinkgoHelper()
	name, err := createCSRAs(ctx, cs, commonName)
	Expect(err).NotTo(HaveOccurred())
	return name
}

// createCSRAs is createCSR that returns the API server's refusal. The CSR stays (a node
// may not delete CSRs); every spec uses node names of its own.
func createCSRAs(ctx context.Context, cs kubernetes.Interface, commonName string) (string, error) {
	req, _, err := testcsr.NewPEM(testcsr.Options{Key: testcsr.ECDSAP256, CommonName: commonName, Organization: []string{"system:nodes"}})
	if err != nil {
		return "", err
	}
	obj := testcsr.Object("", certificatesv1.KubeAPIServerClientKubeletSignerName, "", nil, testcsr.ClientUsages(), req)
	obj.GenerateName = "csr-"
	obj.Spec.Username, obj.Spec.Groups = "", nil // the API server sets who asked
	created, err := cs.CertificatesV1().CertificateSigningRequests().Create(ctx, obj, metav1.CreateOptions{})
	if err != nil {
		return "", err
	}
	return created.Name, nil
}

func getCSR(ctx context.Context, g Gomega, name string) *certificatesv1.CertificateSigningRequest {
	return getCSRFrom(ctx, g, adminClient, name)
}

func getCSRFrom(ctx context.Context, g Gomega, cs kubernetes.Interface, name string) *certificatesv1.CertificateSigningRequest {
	csr, err := cs.CertificatesV1().CertificateSigningRequests().Get(ctx, name, metav1.GetOptions{})
	g.Expect(err).NotTo(HaveOccurred())
	return csr
}

// onlyCSR waits for the one CSR the node's kubelet made with signer and returns it.
func onlyCSR(ctx context.Context, node, signer string) certificatesv1.CertificateSigningRequest {
	GinkgoHelper()
	var out certificatesv1.CertificateSigningRequest
	Eventually(func(g Gomega) { out = onlyCSRg(ctx, g, node, signer) }).WithContext(ctx).Should(Succeed())
	return out
}

func onlyCSRg(ctx context.Context, g Gomega, node, signer string) certificatesv1.CertificateSigningRequest {
	csrs := csrsOf(ctx, g, node, signer)
	g.Expect(csrs).To(HaveLen(1))
	return csrs[0]
}

// condition is the CSR's condition of type t, or nil.
func condition(csr certificatesv1.CertificateSigningRequest, t certificatesv1.RequestConditionType) *certificatesv1.CertificateSigningRequestCondition {
	for i := range csr.Status.Conditions {
		if csr.Status.Conditions[i].Type == t {
			return &csr.Status.Conditions[i]
		}
	}
	return nil
}

// expectApprovedByPolicy checks the operator approved the CSR in the policy's name, and that
// kube-controller-manager signed it.
func expectApprovedByPolicy(csr certificatesv1.CertificateSigningRequest, policy string) {
	GinkgoHelper()
	c := condition(csr, certificatesv1.CertificateApproved)
	Expect(c).NotTo(BeNil(), "conditions: %v", csr.Status.Conditions)
	Expect(c.Reason).To(Equal("AutoApproved"))
	Expect(c.Message).To(ContainSubstring(`BootstrapPolicy "` + policy + `"`))
	Expect(condition(csr, certificatesv1.CertificateDenied)).To(BeNil())
	Expect(csr.Status.Certificate).NotTo(BeEmpty())
}
