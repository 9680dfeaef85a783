// Package e2e runs the operator's scenarios against real processes: etcd, kube-apiserver,
// kube-controller-manager and kubelets started by test/localcluster on this machine.
package e2e

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
	bootstraputil "k8s.io/cluster-bootstrap/token/util"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/tlsbootstrap/tls-bootstrap-operator/api/v1alpha1"
	"github.com/tlsbootstrap/tls-bootstrap-operator/test/localcluster"
)

var (
	// cluster is the one control plane every spec shares.
	cluster *localcluster.Cluster
	// adminClient is a cluster-admin clientset for cluster.
	adminClient kubernetes.Interface
	// k8sClient is a cluster-admin controller-runtime client that knows BootstrapPolicy.
	k8sClient client.Client
	// operator is the manager process every spec shares, running under its generated RBAC.
	operator *localcluster.Operator
)

// signerOnly are kube-controller-manager's controllers while the operator approves:
// it signs approved CSRs, collects garbage and cleans tokens, but approves nothing.
var signerOnly = []string{"csrsigning", "garbagecollector", "tokencleaner"}

// provisioningNamespace holds the bootstrap kubeconfig Secrets the specs' policies publish.
const provisioningNamespace = "node-provisioning"

func TestE2E(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "e2e suite")
}

var _ = BeforeSuite(func(ctx SpecContext) {
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))
	// Kubelets need a few seconds to bootstrap and register; the default 1s would flake.
	SetDefaultEventuallyTimeout(time.Minute)
	SetDefaultEventuallyPollingInterval(200 * time.Millisecond)
	// Without this, an Eventually given the spec's context waits until the spec times out.
	EnforceDefaultTimeoutsWhenUsingContexts()

	var err error
	cluster, err = localcluster.Start(ctx, localcluster.Options{
		CRDDirectoryPaths: []string{filepath.Join("..", "..", "config", "crd", "bases")},
		ControllerManager: signerOnly,
		Out:               GinkgoWriter,
	})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(cluster.Stop)

	adminClient, err = kubernetes.NewForConfig(cluster.Admin)
	Expect(err).NotTo(HaveOccurred())
	scheme := runtime.NewScheme()
	Expect(clientgoscheme.AddToScheme(scheme)).To(Succeed())
	Expect(v1alpha1.AddToScheme(scheme)).To(Succeed())
	k8sClient, err = client.New(cluster.Admin, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())
	Expect(k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: provisioningNamespace}})).To(Succeed())

	operator, err = cluster.StartOperator(ctx, localcluster.OperatorOptions{})
	Expect(err).NotTo(HaveOccurred())
}, NodeTimeout(5*time.Minute))

// pauseSuiteOperator stops the suite's operator for the specs of an Ordered container that
// run operators of their own (one approver at a time), and starts it again after them.
func pauseSuiteOperator() {
	GinkgoHelper()
	Expect(operator.Stop()).To(Succeed())
	DeferCleanup(func(ctx SpecContext) {
		var err error
		operator, err = cluster.StartOperator(ctx, localcluster.OperatorOptions{})
		Expect(err).NotTo(HaveOccurred())
	})
}

// useKubeControllerManagerApprover turns kube-controller-manager's csrapproving on for the
// specs of an Ordered container, and off again after them.
func useKubeControllerManagerApprover() {
	GinkgoHelper()
	_, err := cluster.StartControllerManager(append([]string{"csrapproving"}, signerOnly...))
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() error {
		_, err := cluster.StartControllerManager(signerOnly)
		return err
	})
}

// createBootstrapToken creates a bootstrap-token Secret by hand, as `kubeadm token create` does,
// valid for authentication for ttl with the given extra groups, and returns the token
// ("<id>.<secret>"). The Secret is deleted when the spec ends.
func createBootstrapToken(ctx context.Context, ttl time.Duration, groups ...string) string {
	GinkgoHelper()
	token, err := bootstraputil.GenerateBootstrapToken()
	Expect(err).NotTo(HaveOccurred())
	id, secret, _ := strings.Cut(token, ".")
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: metav1.NamespaceSystem,
			Name:      bootstraputil.BootstrapTokenSecretName(id),
		},
		Type: bootstrapapi.SecretTypeBootstrapToken,
		StringData: map[string]string{
			bootstrapapi.BootstrapTokenIDKey:               id,
			bootstrapapi.BootstrapTokenSecretKey:           secret,
			bootstrapapi.BootstrapTokenExpirationKey:       time.Now().Add(ttl).UTC().Format(time.RFC3339),
			bootstrapapi.BootstrapTokenDescriptionKey:      "created by the e2e suite",
			bootstrapapi.BootstrapTokenExtraGroupsKey:      strings.Join(groups, ","),
			bootstrapapi.BootstrapTokenUsageAuthentication: "true",
		},
	}
	_, err = adminClient.CoreV1().Secrets(s.Namespace).Create(ctx, s, metav1.CreateOptions{})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func(ctx SpecContext) {
		err := adminClient.CoreV1().Secrets(s.Namespace).Delete(ctx, s.Name, metav1.DeleteOptions{})
		if !apierrors.IsNotFound(err) {
			Expect(err).NotTo(HaveOccurred())
		}
	})
	return token
}

// grantKubeadmBootstrapRBAC binds what kubeadm binds for its default token group, for group:
// creating CSRs (system:node-bootstrapper), kube-controller-manager approving the group's client
// CSRs (nodeclient) and every node's renewals (selfnodeclient for system:nodes). The bindings are
// named after prefix and deleted when the spec ends.
func grantKubeadmBootstrapRBAC(ctx context.Context, prefix, group string) {
	GinkgoHelper()
	bindings := map[string]struct {
		role    string
		subject string
	}{
		prefix + ":kubelet-bootstrap":                     {role: "system:node-bootstrapper", subject: group},
		prefix + ":node-autoapprove-bootstrap":            {role: "system:certificates.k8s.io:certificatesigningrequests:nodeclient", subject: group},
		prefix + ":node-autoapprove-certificate-rotation": {role: "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient", subject: "system:nodes"},
	}
	for name, b := range bindings {
		crb := &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: b.role},
			Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: b.subject}},
		}
		_, err := adminClient.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func(ctx SpecContext) {
			err := adminClient.RbacV1().ClusterRoleBindings().Delete(ctx, crb.Name, metav1.DeleteOptions{})
			if !apierrors.IsNotFound(err) {
				Expect(err).NotTo(HaveOccurred())
			}
		})
	}
}

// startKubelet starts a kubelet and, when the spec ends, stops it and deletes its Node so that
// later specs start from a cluster without it.
func startKubelet(ctx context.Context, o localcluster.KubeletOptions) *localcluster.Kubelet {
	GinkgoHelper()
	k, err := cluster.StartKubelet(ctx, o)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func(ctx SpecContext) {
		err := adminClient.CoreV1().Nodes().Delete(ctx, k.Name, metav1.DeleteOptions{})
		if !apierrors.IsNotFound(err) {
			Expect(err).NotTo(HaveOccurred())
		}
	})
	// Registered last, so it runs first: the kubelet must be gone before its Node is deleted,
	// or it would register it again.
	DeferCleanup(k.Stop)
	return k
}

// expectKubeletIdentity waits until the kubelet's own kubeconfig authenticates as its node. The
// kubelet writes its kubeconfig when bootstrap starts, before the certificate it points at
// exists, so the file alone proves nothing.
func expectKubeletIdentity(ctx context.Context, k *localcluster.Kubelet) {
	GinkgoHelper()
	Eventually(func(g Gomega) {
		g.Expect(k.Running()).To(BeTrue(), "kubelet exited: %v (log: %s)", k.ExitError(), k.LogPath())
		g.Expect(k.KubeconfigPath).To(BeAnExistingFile())
		who, err := k.Identity(ctx)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(who.Username).To(Equal("system:node:" + k.Name))
		g.Expect(who.Groups).To(ContainElement("system:nodes"))
	}).WithContext(ctx).Should(Succeed())
}

// csrsOf lists the CSRs a node's kubelet made with signer (as system:node:<name> or, for its
// first client certificate, naming it in the subject).
func csrsOf(ctx context.Context, g Gomega, node, signer string) []certificatesv1.CertificateSigningRequest {
	list, err := adminClient.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
	g.Expect(err).NotTo(HaveOccurred())
	var out []certificatesv1.CertificateSigningRequest
	for _, csr := range list.Items {
		if csr.Spec.SignerName != signer {
			continue
		}
		req := parseCSR(g, csr.Spec.Request)
		if req.Subject.CommonName == "system:node:"+node {
			out = append(out, csr)
		}
	}
	return out
}

// parseCSR decodes a CSR's PEM request.
func parseCSR(g Gomega, request []byte) *x509.CertificateRequest {
	block, _ := pem.Decode(request)
	g.Expect(block).NotTo(BeNil(), "request is not PEM")
	req, err := x509.ParseCertificateRequest(block.Bytes)
	g.Expect(err).NotTo(HaveOccurred())
	return req
}

// isDecided reports whether a CSR carries an Approved or Denied condition.
func isDecided(csr certificatesv1.CertificateSigningRequest) bool {
	for _, c := range csr.Status.Conditions {
		if c.Type == certificatesv1.CertificateApproved || c.Type == certificatesv1.CertificateDenied {
			return true
		}
	}
	return false
}
