package policy_test

import (
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

// FuzzDecide feeds arbitrary requests and identities to Decide under a permissive
// Enforce policy (so that anything passing the hard rules would be approved), a
// DryRun one and an Ignore one. Decide must never panic, never approve what
// csr.Inspect finds a hard violation in, and keep its messages short and free of PEM.
func FuzzDecide(f *testing.F) {
	mustPEM := func(o testcsr.Options) []byte {
		b, _, err := testcsr.NewPEM(o)
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	client := mustPEM(subject(testcsr.ECDSAP256, nodeName))
	serving := mustPEM(servingSubject(testcsr.ECDSAP256))
	corrupted, err := testcsr.CorruptSignature(client)
	if err != nil {
		f.Fatal(err)
	}
	const clientUsages = "digital signature,client auth"
	const servingUsages = "digital signature,server auth"

	// pem, serving signer, username, groups, usages, expirationSeconds, older pending, node ready
	f.Add(client, false, bootstrapUser, strings.Join(bootstrapGroups, ","), clientUsages, int32(0), uint8(0), false)
	f.Add(client, false, nodeUser, strings.Join(nodeGroups, ","), clientUsages, int32(3600), uint8(1), true)
	f.Add(serving, true, nodeUser, strings.Join(nodeGroups, ","), servingUsages, int32(0), uint8(0), true)
	f.Add(mustPEM(subject(testcsr.RSA2048, nodeName)), false, bootstrapUser, strings.Join(bootstrapGroups, ","), "digital signature,key encipherment,client auth", int32(0), uint8(0), false)
	f.Add(mustPEM(subject(testcsr.Ed25519, nodeName)), false, bootstrapUser, strings.Join(bootstrapGroups, ","), clientUsages, int32(0), uint8(0), false)
	f.Add(mustPEM(subject(testcsr.RSA1024, nodeName)), false, bootstrapUser, strings.Join(bootstrapGroups, ","), clientUsages, int32(0), uint8(0), false)
	f.Add(mustPEM(subject(testcsr.ECDSAP224, nodeName)), false, bootstrapUser, strings.Join(bootstrapGroups, ","), clientUsages, int32(0), uint8(0), false)
	f.Add(mustPEM(with(subject(testcsr.ECDSAP256, nodeName), func(o *testcsr.Options) { o.Organization = []string{"system:masters"} })),
		false, bootstrapUser, strings.Join(bootstrapGroups, ","), clientUsages, int32(0), uint8(0), false)
	f.Add(mustPEM(with(servingSubject(testcsr.ECDSAP256), func(o *testcsr.Options) { o.DNSNames = []string{"kubernetes.default", "*.x"} })),
		true, nodeUser, strings.Join(nodeGroups, ","), servingUsages, int32(0), uint8(0), true)
	f.Add(corrupted, false, bootstrapUser, strings.Join(bootstrapGroups, ","), clientUsages, int32(0), uint8(0), false)
	f.Add(append(append([]byte{}, client...), client...), false, bootstrapUser, strings.Join(bootstrapGroups, ","), clientUsages, int32(0), uint8(0), false)
	f.Add(append(append([]byte{}, client...), "trailing"...), false, bootstrapUser, strings.Join(bootstrapGroups, ","), clientUsages, int32(0), uint8(0), false)
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n"), true, "alice", "", "", int32(-1), uint8(255), true)
	f.Add([]byte{}, false, "system:bootstrap:", "system:bootstrappers", "", int32(0), uint8(0), false)
	f.Add(client, false, "system:node:worker-2", csr.NodesGroup, clientUsages+",client auth", int32(600), uint8(3), true)

	permissive := newPolicy("a-enforce", allowRejoin, func(a *v1alpha1.ApprovalSpec) { a.MaxPendingPerNode = 100 })
	ps := policies(
		permissive,
		newPolicy("b-dry", dryRun, maxExpiration("1h")),
		newPolicy("c-ignore", ignore, namePattern("worker-[0-9]+")),
		newPolicy("d-kcm", func(a *v1alpha1.ApprovalSpec) { a.Approver = v1alpha1.ApproverKubeControllerManager }),
	)
	forbidden := []net.IP{net.ParseIP("10.96.0.1")}

	f.Fuzz(func(t *testing.T, req []byte, servingSigner bool, username, groups, usages string, expiration int32, older uint8, ready bool) {
		signer := csr.SignerClient
		if servingSigner {
			signer = csr.SignerServing
		}
		var us []certificatesv1.KeyUsage
		for _, u := range strings.Split(usages, ",") {
			if u != "" {
				us = append(us, certificatesv1.KeyUsage(u))
			}
		}
		c := testcsr.Object("fuzz", signer, username, strings.Split(groups, ","), us, req)
		if expiration != 0 {
			c.Spec.ExpirationSeconds = &expiration
		}
		insp := csr.Inspect(c)
		var n *corev1.Node
		if insp.NodeName != "" {
			status := corev1.ConditionFalse
			if ready {
				status = corev1.ConditionTrue
			}
			n = workerNode(status)
			n.Name = insp.NodeName
		}

		d := policy.Decide(policy.Inputs{CSR: c, Node: n, OlderPendingForNode: int(older), Policies: ps, ForbiddenIPs: forbidden})

		if insp.Request != nil && csr.NodeName(c) != insp.NodeName {
			t.Fatalf("csr.NodeName = %q, Inspect's NodeName = %q", csr.NodeName(c), insp.NodeName)
		}
		if d.Outcome == policy.Approve && len(insp.Violations) > 0 {
			t.Fatalf("approved a csr with hard violations %q", insp.Violations)
		}
		switch d.Outcome {
		case policy.Approve:
			if d.Reason != policy.ReasonApproved || !enforcingApproval(d) {
				t.Fatalf("approval without reason or approving Enforce verdict: %+v", d)
			}
		case policy.Deny:
			if d.Reason != policy.ReasonViolation || len(d.Violations) == 0 {
				t.Fatalf("denial without reason or violations: %+v", d)
			}
		case policy.Leave:
			if d.Reason != "" {
				t.Fatalf("leave with a reason: %+v", d)
			}
		default:
			t.Fatalf("unknown outcome %q", d.Outcome)
		}
		if len(d.Message) > policy.MaxMessageBytes || strings.Contains(d.Message, "-----BEGIN") {
			t.Fatalf("message too long or leaking the request: %q", d.Message)
		}
		for _, v := range d.Verdicts {
			if v.Policy == "d-kcm" {
				t.Fatalf("a KubeControllerManager policy governed: %+v", d.Verdicts)
			}
		}
	})
}

func enforcingApproval(d policy.Decision) bool {
	for _, v := range d.Verdicts {
		if v.Policy == d.Policy && v.Mode == v1alpha1.ModeEnforce && v.Outcome == policy.Approve && len(v.Violations) == 0 {
			return true
		}
	}
	return false
}

func BenchmarkDecideClient(b *testing.B) {
	c := clientCSR(p256)(b)
	ps := policies(newPolicy("gpu"), newPolicy("workers", namePattern("worker-[0-9]+")), newPolicy("dry", dryRun))
	ps[0].Spec.Groups = []string{"system:bootstrappers:gpu"}
	in := policy.Inputs{CSR: c, Node: workerNode(corev1.ConditionFalse), OlderPendingForNode: 1, Policies: ps}
	b.ReportAllocs()
	for b.Loop() {
		if d := policy.Decide(in); d.Outcome != policy.Approve {
			b.Fatal(d.Message)
		}
	}
}

func BenchmarkDecideServing(b *testing.B) {
	c := servingCSR(servingSubject(testcsr.ECDSAP256))(b)
	ps := policies(newPolicy("workers", namePattern("worker-[0-9]+"), func(a *v1alpha1.ApprovalSpec) {
		a.Serving.AllowedCIDRs = []string{"10.0.0.0/8"}
		a.Serving.AllowedDNSSuffixes = []string{"worker-1", ".internal"}
	}), newPolicy("dry", dryRun))
	in := policy.Inputs{CSR: c, Node: workerNode(corev1.ConditionTrue), Policies: ps, ForbiddenIPs: []net.IP{net.ParseIP("10.96.0.1")}}
	b.ReportAllocs()
	for b.Loop() {
		if d := policy.Decide(in); d.Outcome != policy.Approve {
			b.Fatal(d.Message)
		}
	}
}
