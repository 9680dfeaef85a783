package policy_test

import (
	"net"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tlsbootstrap/tls-bootstrap-operator/api/v1alpha1"
	"github.com/tlsbootstrap/tls-bootstrap-operator/internal/csr"
	"github.com/tlsbootstrap/tls-bootstrap-operator/internal/testcsr"
)

const (
	workersGroup  = "system:bootstrappers:workers"
	bootstrapUser = "system:bootstrap:abcdef"
	nodeName      = "worker-1"
	nodeUser      = "system:node:" + nodeName
)

var (
	bootstrapGroups = []string{csr.BootstrappersGroup, workersGroup, "system:authenticated"}
	nodeGroups      = []string{csr.NodesGroup, "system:authenticated"}
)

// subject is a kubelet's subject for the named node.
func subject(k testcsr.KeyType, node string) testcsr.Options {
	return testcsr.Options{Key: k, CommonName: csr.NodeUserPrefix + node, Organization: []string{csr.NodesGroup}}
}

// servingSubject is what a kubelet on worker-1 asks for: its name, FQDN and InternalIP.
func servingSubject(k testcsr.KeyType) testcsr.Options {
	o := subject(k, nodeName)
	o.DNSNames = []string{nodeName, "worker-1.example.internal"}
	o.IPs = []net.IP{net.ParseIP("10.0.0.5")}
	return o
}

func with(o testcsr.Options, f func(*testcsr.Options)) testcsr.Options {
	f(&o)
	return o
}

// build makes the CSR under test; builders take *testing.T so key errors fail the test.
type build func(t testing.TB) *certificatesv1.CertificateSigningRequest

func object(signer, user string, groups []string, usages []certificatesv1.KeyUsage, o testcsr.Options, mut ...func(*certificatesv1.CertificateSigningRequest)) build {
	return func(t testing.TB) *certificatesv1.CertificateSigningRequest {
		c := testcsr.Object("csr-1", signer, user, groups, usages, testcsr.MustPEM(t, o))
		for _, m := range mut {
			m(c)
		}
		return c
	}
}

func clientCSR(o testcsr.Options, mut ...func(*certificatesv1.CertificateSigningRequest)) build {
	return object(csr.SignerClient, bootstrapUser, bootstrapGroups, testcsr.ClientUsages(), o, mut...)
}

func renewalCSR(user string, o testcsr.Options, mut ...func(*certificatesv1.CertificateSigningRequest)) build {
	return object(csr.SignerClient, user, nodeGroups, testcsr.ClientUsages(), o, mut...)
}

func servingCSR(o testcsr.Options, mut ...func(*certificatesv1.CertificateSigningRequest)) build {
	return object(csr.SignerServing, nodeUser, nodeGroups, testcsr.ServingUsages(), o, mut...)
}

func expiring(seconds int32) func(*certificatesv1.CertificateSigningRequest) {
	return func(c *certificatesv1.CertificateSigningRequest) { c.Spec.ExpirationSeconds = &seconds }
}

func conditioned(ty certificatesv1.RequestConditionType) func(*certificatesv1.CertificateSigningRequest) {
	return func(c *certificatesv1.CertificateSigningRequest) {
		c.Status.Conditions = append(c.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{Type: ty, Status: corev1.ConditionTrue})
	}
}

// newPolicy is an Enforce/Deny Operator policy for the workers group with every kind
// enabled; muts adjust it.
func newPolicy(name string, muts ...func(*v1alpha1.ApprovalSpec)) v1alpha1.BootstrapPolicy {
	p := v1alpha1.BootstrapPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.BootstrapPolicySpec{
			Groups: []string{workersGroup},
			Approval: v1alpha1.ApprovalSpec{
				Approver:    v1alpha1.ApproverOperator,
				Mode:        v1alpha1.ModeEnforce,
				OnViolation: v1alpha1.ViolationDeny,
				Client:      v1alpha1.ClientApproval{Enabled: true},
				Renewal:     v1alpha1.RenewalApproval{Enabled: true},
				Serving:     v1alpha1.ServingApproval{Enabled: true},
			},
		},
	}
	for _, m := range muts {
		m(&p.Spec.Approval)
	}
	return p
}

func policies(ps ...v1alpha1.BootstrapPolicy) []v1alpha1.BootstrapPolicy { return ps }

func dryRun(a *v1alpha1.ApprovalSpec)      { a.Mode = v1alpha1.ModeDryRun }
func ignore(a *v1alpha1.ApprovalSpec)      { a.OnViolation = v1alpha1.ViolationIgnore }
func allowRejoin(a *v1alpha1.ApprovalSpec) { a.Client.AllowRejoin = true }

func namePattern(p string) func(*v1alpha1.ApprovalSpec) {
	return func(a *v1alpha1.ApprovalSpec) { a.NodeNamePattern = p }
}

func maxExpiration(d string) func(*v1alpha1.ApprovalSpec) {
	return func(a *v1alpha1.ApprovalSpec) {
		dur, err := time.ParseDuration(d)
		if err != nil {
			panic(err)
		}
		a.MaxExpiration = &metav1.Duration{Duration: dur}
	}
}

// node is worker-1 (or name) with the addresses a kubelet reports.
func node(name string, ready corev1.ConditionStatus, addrs ...corev1.NodeAddress) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if ready != "" {
		n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: ready}}
	}
	n.Status.Addresses = addrs
	return n
}

func addr(t corev1.NodeAddressType, a string) corev1.NodeAddress {
	return corev1.NodeAddress{Type: t, Address: a}
}

// workerNode is worker-1 as its kubelet reports it: hostname, FQDN, an InternalIP, and
// an InternalIP that happens to be the kubernetes Service's (self-reported, so hostile).
func workerNode(ready corev1.ConditionStatus) *corev1.Node {
	return node(nodeName, ready,
		addr(corev1.NodeHostName, nodeName),
		addr(corev1.NodeInternalDNS, "worker-1.example.internal"),
		addr(corev1.NodeInternalIP, "10.0.0.5"),
		addr(corev1.NodeExternalIP, "203.0.113.5"),
		addr(corev1.NodeInternalIP, "10.96.0.1"),
	)
}
