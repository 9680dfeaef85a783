package policy_test

import (
	"fmt"
	"net"
	"strings"
	"testing"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/tlsbootstrap/tls-bootstrap-operator/api/v1alpha1"
	"github.com/tlsbootstrap/tls-bootstrap-operator/internal/csr"
	"github.com/tlsbootstrap/tls-bootstrap-operator/internal/policy"
	"github.com/tlsbootstrap/tls-bootstrap-operator/internal/testcsr"
)

type decideCase struct {
	csr       build
	node      *corev1.Node
	older     int
	policies  []v1alpha1.BootstrapPolicy
	forbidden []net.IP

	want       policy.Outcome
	wantPolicy string
	// wantViolations: one distinctive substring per expected Decision violation, no more.
	wantViolations []string
	// wantMessage: substrings the message must contain.
	wantMessage []string
	// wantVerdicts: policy -> its own outcome, for every governing policy, in name order.
	wantVerdicts []verdict
}

type verdict struct {
	policy  string
	outcome policy.Outcome
}

var (
	p256 = subject(testcsr.ECDSAP256, nodeName)
	one  = func(name string, o policy.Outcome) []verdict { return []verdict{{name, o}} }
)

func TestDecide(t *testing.T) {
	t.Parallel()
	workers := policies(newPolicy("workers"))
	forbidden := []net.IP{net.ParseIP("10.96.0.1"), net.ParseIP("192.0.2.1")}

	tests := map[string]decideCase{
		// Not ours: nothing is evaluated.
		"a csr for another signer is left alone": {
			csr:      object(certificatesv1.KubeAPIServerClientSignerName, bootstrapUser, bootstrapGroups, testcsr.ClientUsages(), p256),
			policies: workers, want: policy.Leave,
		},
		"an already approved csr is left alone": {
			csr: clientCSR(p256, conditioned(certificatesv1.CertificateApproved)), policies: workers, want: policy.Leave,
		},
		"an already denied csr is left alone even though it is valid": {
			csr: clientCSR(p256, conditioned(certificatesv1.CertificateDenied)), policies: workers, want: policy.Leave,
		},
		"a client csr from a user who is neither bootstrapper nor node is left alone": {
			csr:      object(csr.SignerClient, "alice", []string{workersGroup}, testcsr.ClientUsages(), p256),
			policies: workers, want: policy.Leave,
		},

		// Governance.
		"a client csr from another token group is left alone": {
			csr:      clientCSR(p256),
			policies: policies(newPolicy("gpu", func(a *v1alpha1.ApprovalSpec) {})),
			want:     policy.Leave,
		},
		"a policy approved by kube-controller-manager leaves its csrs alone": {
			csr: clientCSR(p256),
			policies: policies(newPolicy("workers", func(a *v1alpha1.ApprovalSpec) {
				a.Approver = v1alpha1.ApproverKubeControllerManager
			})),
			want: policy.Leave,
		},
		"a policy with client approval disabled does not govern first bootstrap": {
			csr:      clientCSR(p256),
			policies: policies(newPolicy("workers", func(a *v1alpha1.ApprovalSpec) { a.Client.Enabled = false })),
			want:     policy.Leave,
		},
		"a policy with renewal disabled does not govern renewals": {
			csr:      renewalCSR(nodeUser, p256),
			policies: policies(newPolicy("workers", func(a *v1alpha1.ApprovalSpec) { a.Renewal.Enabled = false })),
			want:     policy.Leave,
		},
		"a policy with serving disabled does not govern serving csrs": {
			csr:      servingCSR(servingSubject(testcsr.ECDSAP256)),
			node:     workerNode(corev1.ConditionTrue),
			policies: policies(newPolicy("workers", func(a *v1alpha1.ApprovalSpec) { a.Serving.Enabled = false })),
			want:     policy.Leave,
		},
		"a renewal from a node outside the nodeNamePattern is not governed": {
			csr:      renewalCSR(nodeUser, p256),
			policies: policies(newPolicy("db", namePattern("db-[0-9]+"))),
			want:     policy.Leave,
		},
		"a policy whose nodeNamePattern does not compile governs nothing": {
			csr:      clientCSR(p256),
			policies: policies(newPolicy("broken", namePattern("worker-("))),
			want:     policy.Leave,
		},
		"a policy naming the bare system:bootstrappers group governs no client csr": {
			csr: clientCSR(p256),
			policies: func() []v1alpha1.BootstrapPolicy {
				p := newPolicy("everyone")
				p.Spec.Groups = []string{csr.BootstrappersGroup}
				return policies(p)
			}(),
			want: policy.Leave,
		},

		// Approvals, one per kind and per accepted key type.
		"a valid first-bootstrap csr is approved": {
			csr: clientCSR(p256), policies: workers,
			want: policy.Approve, wantPolicy: "workers",
			wantMessage:  []string{`approved by BootstrapPolicy "workers": kubelet client certificate (first bootstrap)`},
			wantVerdicts: one("workers", policy.Approve),
		},
		"a valid first-bootstrap csr with an rsa 2048 key is approved": {
			csr:      object(csr.SignerClient, bootstrapUser, bootstrapGroups, []certificatesv1.KeyUsage{"digital signature", "key encipherment", "client auth"}, subject(testcsr.RSA2048, nodeName)),
			policies: workers, want: policy.Approve, wantPolicy: "workers", wantVerdicts: one("workers", policy.Approve),
		},
		"a valid renewal is approved": {
			csr: renewalCSR(nodeUser, p256), node: workerNode(corev1.ConditionTrue), policies: workers,
			want: policy.Approve, wantPolicy: "workers",
			wantMessage:  []string{`approved by BootstrapPolicy "workers": kubelet client certificate (renewal)`},
			wantVerdicts: one("workers", policy.Approve),
		},
		"a valid serving csr for the node's own addresses is approved": {
			csr: servingCSR(servingSubject(testcsr.ECDSAP256)), node: workerNode(corev1.ConditionTrue), policies: workers,
			want: policy.Approve, wantPolicy: "workers",
			wantMessage:  []string{`approved by BootstrapPolicy "workers": kubelet serving certificate`},
			wantVerdicts: one("workers", policy.Approve),
		},
		"a valid serving csr with an ed25519 key is approved": {
			csr: servingCSR(servingSubject(testcsr.Ed25519)), node: workerNode(corev1.ConditionTrue), policies: workers,
			want: policy.Approve, wantPolicy: "workers", wantVerdicts: one("workers", policy.Approve),
		},
		"dns sans compare with node addresses ignoring case": {
			csr: servingCSR(with(servingSubject(testcsr.ECDSAP256), func(o *testcsr.Options) {
				o.DNSNames = []string{"WORKER-1.Example.Internal"}
			})),
			node: workerNode(corev1.ConditionTrue), policies: workers,
			want: policy.Approve, wantPolicy: "workers", wantVerdicts: one("workers", policy.Approve),
		},

		// Hard rules deny under a Deny policy.
		"a client csr asking for system:masters is denied": {
			csr:      clientCSR(with(p256, func(o *testcsr.Options) { o.Organization = []string{"system:masters"} })),
			policies: workers, want: policy.Deny, wantPolicy: "workers",
			wantViolations: []string{"subject organization must be exactly [system:nodes]"},
			wantMessage:    []string{`denied by BootstrapPolicy "workers": subject organization must be exactly [system:nodes] (got "system:masters")`},
			wantVerdicts:   one("workers", policy.Deny),
		},
		"a client csr with an rsa 1024 key is denied": {
			csr:      object(csr.SignerClient, bootstrapUser, bootstrapGroups, []certificatesv1.KeyUsage{"digital signature", "key encipherment", "client auth"}, subject(testcsr.RSA1024, nodeName)),
			policies: workers, want: policy.Deny, wantPolicy: "workers",
			wantViolations: []string{"public key must be"}, wantVerdicts: one("workers", policy.Deny),
		},
		"a client csr with an ecdsa p-224 key is denied": {
			csr: clientCSR(subject(testcsr.ECDSAP224, nodeName)), policies: workers, want: policy.Deny, wantPolicy: "workers",
			wantViolations: []string{"got ecdsa P-224"}, wantVerdicts: one("workers", policy.Deny),
		},
		"a client csr with an ip san is denied": {
			csr:      clientCSR(with(p256, func(o *testcsr.Options) { o.IPs = []net.IP{net.ParseIP("10.0.0.5")} })),
			policies: workers, want: policy.Deny, wantPolicy: "workers",
			wantViolations: []string{"client certificate must have no subject alternative names"}, wantVerdicts: one("workers", policy.Deny),
		},
		"a renewal for another node's cn is denied": {
			csr: renewalCSR("system:node:worker-2", p256), policies: workers, want: policy.Deny, wantPolicy: "workers",
			wantViolations: []string{`renewal requester "system:node:worker-2" must be the subject common name`}, wantVerdicts: one("workers", policy.Deny),
		},
		"a request with a signature that does not verify is denied": {
			csr: func(t testing.TB) *certificatesv1.CertificateSigningRequest {
				bad, err := testcsr.CorruptSignature(testcsr.MustPEM(t, p256))
				if err != nil {
					t.Fatal(err)
				}
				return testcsr.Object("csr-1", csr.SignerClient, bootstrapUser, bootstrapGroups, testcsr.ClientUsages(), bad)
			},
			policies: workers, want: policy.Deny, wantPolicy: "workers",
			wantViolations: []string{"request signature does not verify"}, wantVerdicts: one("workers", policy.Deny),
		},
		"a request with two pem blocks is denied": {
			csr: func(t testing.TB) *certificatesv1.CertificateSigningRequest {
				p := testcsr.MustPEM(t, p256)
				return testcsr.Object("csr-1", csr.SignerClient, bootstrapUser, bootstrapGroups, testcsr.ClientUsages(), append(p, p...))
			},
			policies: workers, want: policy.Deny, wantPolicy: "workers",
			wantViolations: []string{"more than one pem block"}, wantVerdicts: one("workers", policy.Deny),
		},
		"a serving csr for kubernetes.default is denied twice over": {
			csr: servingCSR(with(servingSubject(testcsr.ECDSAP256), func(o *testcsr.Options) {
				o.DNSNames = []string{nodeName, "kubernetes.default"}
			})),
			node: workerNode(corev1.ConditionTrue), policies: workers, want: policy.Deny, wantPolicy: "workers",
			wantViolations: []string{"must not be the api server's", `node's Hostname, InternalDNS or ExternalDNS addresses (got "kubernetes.default")`},
			wantVerdicts:   one("workers", policy.Deny),
		},
		"a wildcard serving csr is denied": {
			csr: servingCSR(with(servingSubject(testcsr.ECDSAP256), func(o *testcsr.Options) {
				o.DNSNames = []string{"*.example.internal"}
			})),
			node: workerNode(corev1.ConditionTrue), policies: workers, want: policy.Deny, wantPolicy: "workers",
			wantViolations: []string{"must not be wildcards", "must be the node name or one of"},
			wantVerdicts:   one("workers", policy.Deny),
		},

		// Rule 8: maxExpiration.
		"expirationSeconds over maxExpiration is denied": {
			csr: clientCSR(p256, expiring(3601)), policies: policies(newPolicy("workers", maxExpiration("1h"))),
			want: policy.Deny, wantPolicy: "workers",
			wantViolations: []string{"expirationSeconds 3601 must be at most maxExpiration 1h0m0s"}, wantVerdicts: one("workers", policy.Deny),
		},
		"expirationSeconds equal to maxExpiration is approved": {
			csr: clientCSR(p256, expiring(3600)), policies: policies(newPolicy("workers", maxExpiration("1h"))),
			want: policy.Approve, wantPolicy: "workers", wantVerdicts: one("workers", policy.Approve),
		},
		"an unset expirationSeconds passes maxExpiration": {
			csr: clientCSR(p256), policies: policies(newPolicy("workers", maxExpiration("1h"))),
			want: policy.Approve, wantPolicy: "workers", wantVerdicts: one("workers", policy.Approve),
		},

		// Rule 20: pending cap per node.
		"three older pending csrs hit the default cap": {
			csr: clientCSR(p256), older: 3, policies: workers, want: policy.Deny, wantPolicy: "workers",
			wantViolations: []string{`node "worker-1" already has 3 older pending csrs, maxPendingPerNode is 3`}, wantVerdicts: one("workers", policy.Deny),
		},
		"two older pending csrs are under the default cap": {
			csr: clientCSR(p256), older: 2, policies: workers,
			want: policy.Approve, wantPolicy: "workers", wantVerdicts: one("workers", policy.Approve),
		},
		"a raised maxPendingPerNode lets four older pending csrs through": {
			csr: clientCSR(p256), older: 4, policies: policies(newPolicy("workers", func(a *v1alpha1.ApprovalSpec) { a.MaxPendingPerNode = 5 })),
			want: policy.Approve, wantPolicy: "workers", wantVerdicts: one("workers", policy.Approve),
		},
		"maxPendingPerNode 1 stops the second pending csr": {
			csr: renewalCSR(nodeUser, p256), older: 1, policies: policies(newPolicy("workers", func(a *v1alpha1.ApprovalSpec) { a.MaxPendingPerNode = 1 })),
			want: policy.Deny, wantPolicy: "workers",
			wantViolations: []string{"maxPendingPerNode is 1"}, wantVerdicts: one("workers", policy.Deny),
		},

		// Rule 12: takeover.
		"a first bootstrap for a ready node is a takeover and is denied": {
			csr: clientCSR(p256), node: workerNode(corev1.ConditionTrue), policies: workers,
			want: policy.Deny, wantPolicy: "workers",
			wantViolations: []string{`node "worker-1" already exists and is ready`}, wantVerdicts: one("workers", policy.Deny),
		},
		"a first bootstrap for a not-ready node is approved": {
			csr: clientCSR(p256), node: workerNode(corev1.ConditionFalse), policies: workers,
			want: policy.Approve, wantPolicy: "workers", wantVerdicts: one("workers", policy.Approve),
		},
		"a first bootstrap for a node whose readiness is unknown is approved": {
			csr: clientCSR(p256), node: workerNode(corev1.ConditionUnknown), policies: workers,
			want: policy.Approve, wantPolicy: "workers", wantVerdicts: one("workers", policy.Approve),
		},
		"a first bootstrap for a ready node is approved with allowRejoin": {
			csr: clientCSR(p256), node: workerNode(corev1.ConditionTrue), policies: policies(newPolicy("workers", allowRejoin)),
			want: policy.Approve, wantPolicy: "workers", wantVerdicts: one("workers", policy.Approve),
		},

		// nodeNamePattern.
		"a first bootstrap for a node matching nodeNamePattern is approved": {
			csr: clientCSR(p256), policies: policies(newPolicy("workers", namePattern("worker-[0-9]+"))),
			want: policy.Approve, wantPolicy: "workers", wantVerdicts: one("workers", policy.Approve),
		},
		"a first bootstrap for a node outside nodeNamePattern is denied": {
			csr: clientCSR(subject(testcsr.ECDSAP256, "db-1")), policies: policies(newPolicy("workers", namePattern("worker-[0-9]+"))),
			want: policy.Deny, wantPolicy: "workers",
			wantViolations: []string{`node name "db-1" must match the policy's nodeNamePattern`}, wantVerdicts: one("workers", policy.Deny),
		},
		"nodeNamePattern must match the whole name, not a part of it": {
			csr: clientCSR(subject(testcsr.ECDSAP256, "evil-worker-1")), policies: policies(newPolicy("workers", namePattern("worker-[0-9]+"))),
			want: policy.Deny, wantPolicy: "workers",
			wantViolations: []string{`node name "evil-worker-1" must match`}, wantVerdicts: one("workers", policy.Deny),
		},

		// Rules 15-17 with the Node and the policy's lists.
		"a serving csr for a node that does not exist is denied": {
			csr: servingCSR(servingSubject(testcsr.ECDSAP256)), policies: workers, want: policy.Deny, wantPolicy: "workers",
			wantViolations: []string{
				`node "worker-1" must exist for a serving certificate`,
				`ExternalDNS addresses (got "worker-1.example.internal")`,
				`InternalIP or ExternalIP addresses (got "10.0.0.5")`,
			},
			wantVerdicts: one("workers", policy.Deny),
		},
		"a serving dns san that is not the node's is denied": {
			csr: servingCSR(with(servingSubject(testcsr.ECDSAP256), func(o *testcsr.Options) {
				o.DNSNames = []string{nodeName, "auth.example.internal"}
			})),
			node: workerNode(corev1.ConditionTrue), policies: workers, want: policy.Deny, wantPolicy: "workers",
			wantViolations: []string{`(got "auth.example.internal")`}, wantVerdicts: one("workers", policy.Deny),
		},
		"a serving ip san that is not the node's is denied": {
			csr: servingCSR(with(servingSubject(testcsr.ECDSAP256), func(o *testcsr.Options) {
				o.IPs = []net.IP{net.ParseIP("10.0.0.5"), net.ParseIP("10.0.0.9")}
			})),
			node: workerNode(corev1.ConditionTrue), policies: workers, want: policy.Deny, wantPolicy: "workers",
			wantViolations: []string{`InternalIP or ExternalIP addresses (got "10.0.0.9")`}, wantVerdicts: one("workers", policy.Deny),
		},
		"a serving ip san inside allowedCIDRs is approved": {
			csr: servingCSR(servingSubject(testcsr.ECDSAP256)), node: workerNode(corev1.ConditionTrue),
			policies: policies(newPolicy("workers", func(a *v1alpha1.ApprovalSpec) { a.Serving.AllowedCIDRs = []string{"192.168.0.0/16", "10.0.0.0/8"} })),
			want:     policy.Approve, wantPolicy: "workers", wantVerdicts: one("workers", policy.Approve),
		},
		"a serving ip san outside allowedCIDRs is denied even though it is the node's": {
			csr: servingCSR(with(servingSubject(testcsr.ECDSAP256), func(o *testcsr.Options) {
				o.IPs = []net.IP{net.ParseIP("10.0.0.5"), net.ParseIP("203.0.113.5")}
			})),
			node:     workerNode(corev1.ConditionTrue),
			policies: policies(newPolicy("workers", func(a *v1alpha1.ApprovalSpec) { a.Serving.AllowedCIDRs = []string{"10.0.0.0/8"} })),
			want:     policy.Deny, wantPolicy: "workers",
			wantViolations: []string{`must be inside one of serving.allowedCIDRs (got "203.0.113.5")`}, wantVerdicts: one("workers", policy.Deny),
		},
		"a loopback serving ip is denied when no allowedCIDRs lists it": {
			csr: servingCSR(with(servingSubject(testcsr.ECDSAP256), func(o *testcsr.Options) {
				o.DNSNames = []string{"worker-1"}
				o.IPs = []net.IP{net.ParseIP("127.0.0.2")}
			})),
			node:     node("worker-1", corev1.ConditionTrue, addr(corev1.NodeHostName, "worker-1"), addr(corev1.NodeInternalIP, "127.0.0.2")),
			policies: workers, want: policy.Deny, wantPolicy: "workers",
			wantViolations: []string{`must not be loopback addresses unless serving.allowedCIDRs lists them (got "127.0.0.2")`}, wantVerdicts: one("workers", policy.Deny),
		},
		"a loopback serving ip is approved when allowedCIDRs lists the loopback range": {
			csr: servingCSR(with(servingSubject(testcsr.ECDSAP256), func(o *testcsr.Options) {
				o.DNSNames = []string{"worker-1"}
				o.IPs = []net.IP{net.ParseIP("127.0.0.2")}
			})),
			node:     node("worker-1", corev1.ConditionTrue, addr(corev1.NodeHostName, "worker-1"), addr(corev1.NodeInternalIP, "127.0.0.2")),
			policies: policies(newPolicy("workers", func(a *v1alpha1.ApprovalSpec) { a.Serving.AllowedCIDRs = []string{"127.0.0.0/8"} })),
			want:     policy.Approve, wantPolicy: "workers", wantVerdicts: one("workers", policy.Approve),
		},
		"a node-reported ip that is the kubernetes service ip is denied": {
			csr: servingCSR(with(servingSubject(testcsr.ECDSAP256), func(o *testcsr.Options) {
				o.IPs = []net.IP{net.ParseIP("10.96.0.1").To4()}
			})),
			node: workerNode(corev1.ConditionTrue), forbidden: forbidden, policies: workers, want: policy.Deny, wantPolicy: "workers",
			wantViolations: []string{`must not be the api server's or the kubernetes service's addresses (got "10.96.0.1")`}, wantVerdicts: one("workers", policy.Deny),
		},
		"the same node-reported ip is approved when no forbidden ips are known": {
			csr: servingCSR(with(servingSubject(testcsr.ECDSAP256), func(o *testcsr.Options) {
				o.IPs = []net.IP{net.ParseIP("10.96.0.1")}
			})),
			node: workerNode(corev1.ConditionTrue), policies: workers, want: policy.Approve, wantPolicy: "workers", wantVerdicts: one("workers", policy.Approve),
		},
		"a dns san ending with a dotted allowed suffix is approved": {
			csr:      servingCSR(with(servingSubject(testcsr.ECDSAP256), func(o *testcsr.Options) { o.DNSNames = []string{"worker-1.example.internal"} })),
			node:     workerNode(corev1.ConditionTrue),
			policies: policies(newPolicy("workers", func(a *v1alpha1.ApprovalSpec) { a.Serving.AllowedDNSSuffixes = []string{".corp", ".internal"} })),
			want:     policy.Approve, wantPolicy: "workers", wantVerdicts: one("workers", policy.Approve),
		},
		"a dns san without an allowed suffix is denied": {
			csr:      servingCSR(servingSubject(testcsr.ECDSAP256)),
			node:     workerNode(corev1.ConditionTrue),
			policies: policies(newPolicy("workers", func(a *v1alpha1.ApprovalSpec) { a.Serving.AllowedDNSSuffixes = []string{".internal"} })),
			want:     policy.Deny, wantPolicy: "workers",
			wantViolations: []string{`must end with one of serving.allowedDNSSuffixes (got "worker-1")`}, wantVerdicts: one("workers", policy.Deny),
		},
		"an undotted suffix matches at a label boundary": {
			csr:      servingCSR(with(servingSubject(testcsr.ECDSAP256), func(o *testcsr.Options) { o.DNSNames = []string{"worker-1.example.internal"} })),
			node:     workerNode(corev1.ConditionTrue),
			policies: policies(newPolicy("workers", func(a *v1alpha1.ApprovalSpec) { a.Serving.AllowedDNSSuffixes = []string{"internal"} })),
			want:     policy.Approve, wantPolicy: "workers", wantVerdicts: one("workers", policy.Approve),
		},
		"an undotted suffix never matches inside a label": {
			csr: servingCSR(with(servingSubject(testcsr.ECDSAP256), func(o *testcsr.Options) { o.DNSNames = []string{"worker-1.evilinternal"} })),
			node: node(nodeName, corev1.ConditionTrue,
				addr(corev1.NodeInternalDNS, "worker-1.evilinternal"), addr(corev1.NodeInternalIP, "10.0.0.5")),
			policies: policies(newPolicy("workers", func(a *v1alpha1.ApprovalSpec) { a.Serving.AllowedDNSSuffixes = []string{"internal"} })),
			want:     policy.Deny, wantPolicy: "workers",
			wantViolations: []string{`allowedDNSSuffixes (got "worker-1.evilinternal")`}, wantVerdicts: one("workers", policy.Deny),
		},
		"a dotted suffix does not match the bare domain": {
			csr:      servingCSR(with(servingSubject(testcsr.ECDSAP256), func(o *testcsr.Options) { o.DNSNames = []string{"worker-1.example.internal"} })),
			node:     workerNode(corev1.ConditionTrue),
			policies: policies(newPolicy("workers", func(a *v1alpha1.ApprovalSpec) { a.Serving.AllowedDNSSuffixes = []string{".worker-1.example.internal"} })),
			want:     policy.Deny, wantPolicy: "workers",
			wantViolations: []string{"allowedDNSSuffixes"}, wantVerdicts: one("workers", policy.Deny),
		},

		// Several policies, modes and onViolation.
		"an enforcing denial wins over a dry-run approval": {
			csr:  clientCSR(p256),
			node: workerNode(corev1.ConditionTrue),
			policies: policies(
				newPolicy("b-dry", dryRun, allowRejoin),
				newPolicy("a-enforce"),
			),
			want: policy.Deny, wantPolicy: "a-enforce",
			wantViolations: []string{"already exists and is ready"},
			wantVerdicts:   []verdict{{"a-enforce", policy.Deny}, {"b-dry", policy.Approve}},
		},
		"a dry-run denial does not stop an enforcing approval": {
			csr:  clientCSR(p256),
			node: workerNode(corev1.ConditionTrue),
			policies: policies(
				newPolicy("a-dry", dryRun),
				newPolicy("b-enforce", allowRejoin),
			),
			want: policy.Approve, wantPolicy: "b-enforce",
			wantVerdicts: []verdict{{"a-dry", policy.Deny}, {"b-enforce", policy.Approve}},
		},
		"only dry-run policies leave even a valid csr pending": {
			csr: clientCSR(p256), policies: policies(newPolicy("workers", dryRun)),
			want: policy.Leave, wantMessage: []string{`BootstrapPolicy "workers" would approve`},
			wantVerdicts: one("workers", policy.Approve),
		},
		"onViolation Ignore leaves a violating csr pending": {
			csr: clientCSR(p256), node: workerNode(corev1.ConditionTrue), policies: policies(newPolicy("workers", ignore)),
			want: policy.Leave, wantViolations: []string{"already exists and is ready"},
			wantMessage:  []string{`left pending by BootstrapPolicy "workers" (onViolation: Ignore)`},
			wantVerdicts: one("workers", policy.Leave),
		},
		"an empty onViolation means Deny": {
			csr: clientCSR(p256), node: workerNode(corev1.ConditionTrue),
			policies: policies(newPolicy("workers", func(a *v1alpha1.ApprovalSpec) { a.OnViolation = ""; a.Mode = "" })),
			want:     policy.Deny, wantPolicy: "workers", wantViolations: []string{"already exists"}, wantVerdicts: one("workers", policy.Deny),
		},
		"one allowing policy out of two approves": {
			csr: clientCSR(p256),
			policies: policies(
				newPolicy("a-strict", namePattern("db-.*")),
				newPolicy("b-loose"),
			),
			want: policy.Approve, wantPolicy: "b-loose",
			wantMessage:  []string{`approved by BootstrapPolicy "b-loose"`},
			wantVerdicts: []verdict{{"a-strict", policy.Deny}, {"b-loose", policy.Approve}},
		},
		"two denying policies are both named and their own rules attributed": {
			csr:   clientCSR(with(p256, func(o *testcsr.Options) { o.Organization = []string{"system:masters"} })),
			older: 5,
			policies: policies(
				newPolicy("b-second", namePattern("db-.*")),
				newPolicy("a-first"),
			),
			want: policy.Deny, wantPolicy: "a-first",
			wantViolations: []string{
				"subject organization must be exactly",
				`BootstrapPolicy "a-first": node "worker-1" already has 5 older pending csrs`,
				`BootstrapPolicy "b-second": node "worker-1" already has 5 older pending csrs`,
				`BootstrapPolicy "b-second": node name "worker-1" must match`,
			},
			wantMessage:  []string{`denied by BootstrapPolicies "a-first", "b-second": subject organization`},
			wantVerdicts: []verdict{{"a-first", policy.Deny}, {"b-second", policy.Deny}},
		},
		"a denying policy wins over an ignoring one": {
			csr: clientCSR(p256), node: workerNode(corev1.ConditionTrue),
			policies: policies(newPolicy("a-ignore", ignore), newPolicy("b-deny")),
			want:     policy.Deny, wantPolicy: "b-deny",
			wantViolations: []string{`BootstrapPolicy "a-ignore": node`, `BootstrapPolicy "b-deny": node`},
			wantMessage:    []string{`denied by BootstrapPolicy "b-deny":`},
			wantVerdicts:   []verdict{{"a-ignore", policy.Leave}, {"b-deny", policy.Deny}},
		},
		"a policy for another kind or group sits out while the governing one decides": {
			csr: clientCSR(p256),
			policies: policies(
				newPolicy("gpu", func(a *v1alpha1.ApprovalSpec) {}),
				newPolicy("kcm", func(a *v1alpha1.ApprovalSpec) { a.Approver = v1alpha1.ApproverKubeControllerManager }),
				newPolicy("workers"),
			),
			want: policy.Approve, wantPolicy: "workers", wantVerdicts: one("workers", policy.Approve),
		},
		"a node that is not the csr's node leaves the csr pending": {
			csr: renewalCSR(nodeUser, p256), node: node("worker-2", corev1.ConditionTrue), policies: workers,
			want: policy.Leave, wantMessage: []string{"is not the csr's node"},
		},
	}
	// The gpu policy above governs only its own group.
	gpuGroup := "system:bootstrappers:gpu"
	for name, tc := range tests {
		for i := range tc.policies {
			if tc.policies[i].Name == "gpu" {
				tc.policies[i].Spec.Groups = []string{gpuGroup}
			}
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			runDecide(t, tc)
		})
	}
}

func runDecide(t *testing.T, tc decideCase) {
	t.Helper()
	c := tc.csr(t)
	d := policy.Decide(policy.Inputs{
		CSR: c, Node: tc.node, OlderPendingForNode: tc.older, Policies: tc.policies, ForbiddenIPs: tc.forbidden,
	})
	if d.Outcome != tc.want {
		t.Fatalf("Outcome = %s, want %s; message %q, verdicts %+v", d.Outcome, tc.want, d.Message, d.Verdicts)
	}
	if d.Policy != tc.wantPolicy {
		t.Errorf("Policy = %q, want %q", d.Policy, tc.wantPolicy)
	}
	wantReason := map[policy.Outcome]string{policy.Approve: policy.ReasonApproved, policy.Deny: policy.ReasonViolation, policy.Leave: ""}[tc.want]
	if d.Reason != wantReason {
		t.Errorf("Reason = %q, want %q", d.Reason, wantReason)
	}
	if len(d.Violations) != len(tc.wantViolations) {
		t.Fatalf("got %d violations %q, want %d matching %q", len(d.Violations), d.Violations, len(tc.wantViolations), tc.wantViolations)
	}
	for _, w := range tc.wantViolations {
		if !containsSub(d.Violations, w) {
			t.Errorf("no violation contains %q; got %q", w, d.Violations)
		}
		// Every violated rule is in the denial message (messages here stay under the cap).
		if d.Outcome == policy.Deny && !strings.Contains(d.Message, strings.TrimPrefix(w, "(")) {
			t.Errorf("message %q does not list %q", d.Message, w)
		}
	}
	for _, w := range tc.wantMessage {
		if !strings.Contains(d.Message, w) {
			t.Errorf("message %q does not contain %q", d.Message, w)
		}
	}
	if len(d.Verdicts) != len(tc.wantVerdicts) {
		t.Fatalf("got verdicts %+v, want %+v", d.Verdicts, tc.wantVerdicts)
	}
	for i, w := range tc.wantVerdicts {
		if d.Verdicts[i].Policy != w.policy || d.Verdicts[i].Outcome != w.outcome {
			t.Errorf("verdict %d = %s/%s, want %s/%s", i, d.Verdicts[i].Policy, d.Verdicts[i].Outcome, w.policy, w.outcome)
		}
	}
	if tc.want == policy.Approve && len(csr.Inspect(c).Violations) != 0 {
		t.Errorf("approved a csr with hard violations %q", csr.Inspect(c).Violations)
	}
	if len(d.Message) > policy.MaxMessageBytes || strings.Contains(d.Message, "-----BEGIN") {
		t.Errorf("message is too long or leaks the request: %q", d.Message)
	}
}

func containsSub(vals []string, sub string) bool {
	for _, v := range vals {
		if strings.Contains(v, sub) {
			return true
		}
	}
	return false
}

func TestDecideReportsKindAndNodeName(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		csr      build
		wantKind csr.Kind
		wantNode string
	}{
		"a first bootstrap names the node of its cn": {csr: clientCSR(subject(testcsr.ECDSAP256, "worker-7")), wantKind: csr.KindClient, wantNode: "worker-7"},
		"a renewal names the requesting node":        {csr: renewalCSR("system:node:worker-8", subject(testcsr.ECDSAP256, "worker-8")), wantKind: csr.KindRenewal, wantNode: "worker-8"},
		"a serving csr names the requesting node":    {csr: servingCSR(servingSubject(testcsr.ECDSAP256)), wantKind: csr.KindServing, wantNode: nodeName},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			d := policy.Decide(policy.Inputs{CSR: tc.csr(t), Policies: policies(newPolicy("workers"))})
			if d.Kind != tc.wantKind || d.NodeName != tc.wantNode {
				t.Errorf("Kind, NodeName = %q, %q; want %q, %q", d.Kind, d.NodeName, tc.wantKind, tc.wantNode)
			}
		})
	}
}

func TestDecideUsesAGivenInspection(t *testing.T) {
	t.Parallel()
	c := clientCSR(p256)(t)
	insp := csr.Inspect(c)
	insp.Violations = append(insp.Violations, "a violation only the given inspection knows")
	d := policy.Decide(policy.Inputs{CSR: c, Inspection: &insp, Policies: policies(newPolicy("workers"))})
	if d.Outcome != policy.Deny || !containsSub(d.Violations, "only the given inspection knows") {
		t.Errorf("Decide ignored the given inspection: %s %q", d.Outcome, d.Violations)
	}
}

func TestDecideCapsTheMessage(t *testing.T) {
	t.Parallel()
	// Twenty policies that each add their own violations, and long bad SANs.
	long := strings.Repeat("a", 60)
	o := with(servingSubject(testcsr.ECDSAP256), func(o *testcsr.Options) {
		o.DNSNames = []string{"*." + long, long + ".two", long + ".three", long + ".four"}
	})
	var ps []v1alpha1.BootstrapPolicy
	for i := range 20 {
		ps = append(ps, newPolicy(fmt.Sprintf("policy-%02d", i), func(a *v1alpha1.ApprovalSpec) {
			a.Serving.AllowedCIDRs = []string{"192.168.0.0/16"}
		}))
	}
	d := policy.Decide(policy.Inputs{CSR: servingCSR(o)(t), Node: workerNode(corev1.ConditionTrue), OlderPendingForNode: 9, Policies: ps})
	if d.Outcome != policy.Deny {
		t.Fatalf("Outcome = %s, want Deny", d.Outcome)
	}
	if len(d.Message) > policy.MaxMessageBytes || !strings.HasSuffix(d.Message, "...") {
		t.Errorf("message of %d bytes is not capped at %d with an ellipsis", len(d.Message), policy.MaxMessageBytes)
	}
	// The full list stays available to the controller (for logs), one entry per rule and policy.
	if want := 1 + 20*3; len(d.Violations) != want {
		t.Errorf("got %d violations, want %d", len(d.Violations), want)
	}
}

func TestDecideLeavesNilAndEmptyInputs(t *testing.T) {
	t.Parallel()
	if d := policy.Decide(policy.Inputs{}); d.Outcome != policy.Leave {
		t.Errorf("Decide(no csr) = %s, want Leave", d.Outcome)
	}
	if d := policy.Decide(policy.Inputs{CSR: clientCSR(p256)(t)}); d.Outcome != policy.Leave || len(d.Verdicts) != 0 {
		t.Errorf("Decide(no policies) = %s with %d verdicts, want Leave with none", d.Outcome, len(d.Verdicts))
	}
}

func TestGoverns(t *testing.T) {
	t.Parallel()
	client := clientCSR(p256)(t)
	renewal := renewalCSR(nodeUser, p256)(t)
	tests := map[string]struct {
		policy v1alpha1.BootstrapPolicy
		csr    *certificatesv1.CertificateSigningRequest
		kind   csr.Kind
		want   bool
	}{
		"a policy governs client csrs of its group":          {policy: newPolicy("p"), csr: client, kind: csr.KindClient, want: true},
		"an unset approver means Operator":                   {policy: newPolicy("p", func(a *v1alpha1.ApprovalSpec) { a.Approver = "" }), csr: client, kind: csr.KindClient, want: true},
		"an unknown approver governs nothing":                {policy: newPolicy("p", func(a *v1alpha1.ApprovalSpec) { a.Approver = "Someone" }), csr: client, kind: csr.KindClient},
		"a dry-run policy still governs":                     {policy: newPolicy("p", dryRun), csr: client, kind: csr.KindClient, want: true},
		"a renewal matching the pattern is governed":         {policy: newPolicy("p", namePattern("worker-[0-9]")), csr: renewal, kind: csr.KindRenewal, want: true},
		"a renewal matching only part of the pattern is not": {policy: newPolicy("p", namePattern("worker")), csr: renewal, kind: csr.KindRenewal},
		"a renewal kind for a non-node requester is not":     {policy: newPolicy("p"), csr: client, kind: csr.KindRenewal},
		"an unknown kind is not governed":                    {policy: newPolicy("p"), csr: client, kind: "other"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if got := policy.Governs(&tc.policy, tc.csr, tc.kind); got != tc.want {
				t.Errorf("Governs() = %v, want %v", got, tc.want)
			}
		})
	}
	p := newPolicy("p")
	if policy.Governs(nil, client, csr.KindClient) || policy.Governs(&p, nil, csr.KindClient) {
		t.Error("Governs with a nil argument is true")
	}
}

func TestCompilePattern(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		pattern   string
		wantErr   bool
		matches   []string
		unmatched []string
	}{
		"an empty pattern compiles to nil": {pattern: ""},
		"a pattern matches whole names only": {
			pattern: "worker-[0-9]+", matches: []string{"worker-1", "worker-42"}, unmatched: []string{"evil-worker-1", "worker-1.evil", "worker-"},
		},
		"an alternation is anchored as a whole": {
			pattern: "a|b", matches: []string{"a", "b"}, unmatched: []string{"ab", "xa"},
		},
		"an unbalanced pattern cannot escape the anchors": {pattern: "x)|(.*", wantErr: true},
		"an invalid pattern is an error":                  {pattern: "worker-(", wantErr: true},
		"a perl lookahead is not RE2":                     {pattern: "(?=worker)", wantErr: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			re, err := policy.CompilePattern(tc.pattern)
			if tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), "spec.approval.nodeNamePattern") {
					t.Fatalf("CompilePattern(%q) error = %v, want one naming the field", tc.pattern, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("CompilePattern(%q) = %v", tc.pattern, err)
			}
			if tc.pattern == "" {
				if re != nil {
					t.Errorf("CompilePattern(\"\") = %v, want nil", re)
				}
				return
			}
			for _, m := range tc.matches {
				if !re.MatchString(m) {
					t.Errorf("%q does not match %q", tc.pattern, m)
				}
			}
			for _, m := range tc.unmatched {
				if re.MatchString(m) {
					t.Errorf("%q matches %q", tc.pattern, m)
				}
			}
		})
	}
}
