package e2e

import (
	"net"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"

	"github.com/tlsbootstrap/tls-bootstrap-operator/test/localcluster"
)

// These specs prove the harness without the operator's help: kubeadm-style RBAC lets
// kube-controller-manager approve and sign a real kubelet's bootstrap CSR. No policy names
// the group, so the running operator leaves every CSR here alone.
var _ = Describe("The local cluster harness", Ordered, func() {
	const group = "system:bootstrappers:smoke"

	BeforeAll(useKubeControllerManagerApprover)

	// bootstrapKubeconfig creates a token for group with the kubeadm RBAC and returns the
	// kubeconfig a kubelet bootstraps with.
	bootstrapKubeconfig := func(ctx SpecContext, rbacPrefix string) []byte {
		token := createBootstrapToken(ctx, time.Hour, group)
		grantKubeadmBootstrapRBAC(ctx, rbacPrefix, group)
		kubeconfig, err := localcluster.BootstrapKubeconfig(cluster.Server, cluster.ServingCA, token)
		Expect(err).NotTo(HaveOccurred())
		return kubeconfig
	}

	It("authenticates certificate identities signed by the client CA", func(ctx SpecContext) {
		cfg, err := cluster.UserConfig("smoke-user", []string{"smoke-group"})
		Expect(err).NotTo(HaveOccurred())
		who, err := localcluster.WhoAmI(ctx, cfg)
		Expect(err).NotTo(HaveOccurred())
		Expect(who.Username).To(Equal("smoke-user"))
		Expect(who.Groups).To(ContainElements("smoke-group", "system:authenticated"))
	}, SpecTimeout(time.Minute))

	It("publishes kube-public/cluster-info with the server and serving CA only", func(ctx SpecContext) {
		cm, err := adminClient.CoreV1().ConfigMaps(metav1.NamespacePublic).Get(ctx, bootstrapapi.ConfigMapClusterInfo, metav1.GetOptions{})
		Expect(err).NotTo(HaveOccurred())
		cfg, err := clientcmd.Load([]byte(cm.Data[bootstrapapi.KubeConfigKey]))
		Expect(err).NotTo(HaveOccurred())
		Expect(cfg.Clusters).To(HaveLen(1))
		Expect(cfg.Clusters).To(HaveKey(""))
		Expect(cfg.Clusters[""].Server).To(Equal(cluster.Server))
		Expect(cfg.Clusters[""].CertificateAuthorityData).To(Equal(cluster.ServingCA))
		Expect(cfg.AuthInfos).To(BeEmpty())
	}, SpecTimeout(time.Minute))

	It("bootstraps a kubelet's client certificate and registers its Node", func(ctx SpecContext) {
		k := startKubelet(ctx, localcluster.KubeletOptions{
			Name:                "smoke-client",
			BootstrapKubeconfig: bootstrapKubeconfig(ctx, "smoke-client"),
		})

		expectKubeletIdentity(ctx, k)
		Eventually(func() error {
			_, err := adminClient.CoreV1().Nodes().Get(ctx, k.Name, metav1.GetOptions{})
			return err
		}).WithContext(ctx).Should(Succeed())
	}, SpecTimeout(3*time.Minute))

	It("leaves a kubelet-serving CSR for the node's IP pending", func(ctx SpecContext) {
		k := startKubelet(ctx, localcluster.KubeletOptions{
			Name:                "smoke-serving",
			BootstrapKubeconfig: bootstrapKubeconfig(ctx, "smoke-serving"),
			ServerTLSBootstrap:  true,
		})
		expectKubeletIdentity(ctx, k)

		var serving certificatesv1.CertificateSigningRequest
		Eventually(func(g Gomega) {
			csrs := csrsOf(ctx, g, k.Name, certificatesv1.KubeletServingSignerName)
			g.Expect(csrs).NotTo(BeEmpty())
			serving = csrs[0]
		}).WithContext(ctx).Should(Succeed())

		Expect(serving.Spec.Username).To(Equal("system:node:" + k.Name))
		req := parseCSR(Default, serving.Spec.Request)
		Expect(req.IPAddresses).To(ContainElement(BeComparableTo(net.ParseIP(k.NodeIP))))

		// kube-controller-manager approves client CSRs only; a serving CSR waits for someone else.
		Consistently(func(g Gomega) {
			csr, err := adminClient.CertificatesV1().CertificateSigningRequests().Get(ctx, serving.Name, metav1.GetOptions{})
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(isDecided(*csr)).To(BeFalse(), "conditions: %v", csr.Status.Conditions)
			g.Expect(csr.Status.Certificate).To(BeEmpty())
		}).WithContext(ctx).WithTimeout(5 * time.Second).Should(Succeed())
	}, SpecTimeout(3*time.Minute))
})
