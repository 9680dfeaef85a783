package csr_test

import (
	"bytes"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/url"
	"strings"
	"testing"

	certificatesv1 "k8s.io/api/certificates/v1"

	"github.com/tlsbootstrap/tls-bootstrap-operator/internal/csr"
	"github.com/tlsbootstrap/tls-bootstrap-operator/internal/testcsr"
)

const (
	bootstrapUser = "system:bootstrap:abcdef"
	nodeUser      = "system:node:worker-1"
	nodeCN        = "system:node:worker-1"
)

var (
	bootstrapGroups = []string{"system:bootstrappers", "system:bootstrappers:workers", "system:authenticated"}
	nodeGroups      = []string{"system:nodes", "system:authenticated"}
	clientUsages    = testcsr.ClientUsages()
	clientUsagesRSA = []certificatesv1.KeyUsage{certificatesv1.UsageKeyEncipherment, certificatesv1.UsageClientAuth, certificatesv1.UsageDigitalSignature}
	servingUsages   = testcsr.ServingUsages()
	servingUsagesKE = []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageKeyEncipherment, certificatesv1.UsageServerAuth}
)

type pkixATV = pkix.AttributeTypeAndValue

// nodeSubject is a kubelet's subject for worker-1 with the given key.
func nodeSubject(k testcsr.KeyType) testcsr.Options {
	return testcsr.Options{Key: k, CommonName: nodeCN, Organization: []string{csr.NodesGroup}}
}

func with(o testcsr.Options, f func(*testcsr.Options)) testcsr.Options {
	f(&o)
	return o
}

func servingSubject(k testcsr.KeyType) testcsr.Options {
	return with(nodeSubject(k), func(o *testcsr.Options) {
		o.DNSNames = []string{"worker-1", "worker-1.example.internal"}
		o.IPs = []net.IP{net.ParseIP("10.0.0.5")}
	})
}

// build returns a CSR object whose request is made by mk.
type build func(t *testing.T) *certificatesv1.CertificateSigningRequest

func client(o testcsr.Options) build {
	return clientAs(bootstrapUser, bootstrapGroups, clientUsages, o)
}

func clientAs(user string, groups []string, usages []certificatesv1.KeyUsage, o testcsr.Options) build {
	return func(t *testing.T) *certificatesv1.CertificateSigningRequest {
		return testcsr.Object("csr-1", csr.SignerClient, user, groups, usages, testcsr.MustPEM(t, o))
	}
}

func renewalAs(user string, groups []string, o testcsr.Options) build {
	return clientAs(user, groups, clientUsages, o)
}

func servingAs(user string, groups []string, usages []certificatesv1.KeyUsage, o testcsr.Options) build {
	return func(t *testing.T) *certificatesv1.CertificateSigningRequest {
		return testcsr.Object("csr-1", csr.SignerServing, user, groups, usages, testcsr.MustPEM(t, o))
	}
}

func serving(o testcsr.Options) build { return servingAs(nodeUser, nodeGroups, servingUsages, o) }

// rawRequest is a client CSR whose spec.request is whatever f makes of a valid PEM.
func rawRequest(f func(t *testing.T, valid []byte) []byte) build {
	return func(t *testing.T) *certificatesv1.CertificateSigningRequest {
		req := f(t, testcsr.MustPEM(t, nodeSubject(testcsr.ECDSAP256)))
		return testcsr.Object("csr-1", csr.SignerClient, bootstrapUser, bootstrapGroups, clientUsages, req)
	}
}

func corrupt(t *testing.T, valid []byte) []byte {
	t.Helper()
	b, err := testcsr.CorruptSignature(valid)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestInspect(t *testing.T) {
	t.Parallel()
	oidCN := asn1.ObjectIdentifier{2, 5, 4, 3}
	oidOU := asn1.ObjectIdentifier{2, 5, 4, 11}

	tests := map[string]struct {
		csr build
		// want holds one distinctive substring per expected violation; the
		// inspection must report exactly these, no more.
		want     []string
		wantKind csr.Kind
		wantNode string
	}{
		// Valid requests of every kind and accepted key type.
		"a first-bootstrap client csr with an ecdsa p-256 key breaks no rule": {
			csr: client(nodeSubject(testcsr.ECDSAP256)), wantKind: csr.KindClient, wantNode: "worker-1",
		},
		"a client csr with an rsa 2048 key and key encipherment breaks no rule": {
			csr:      clientAs(bootstrapUser, bootstrapGroups, clientUsagesRSA, nodeSubject(testcsr.RSA2048)),
			wantKind: csr.KindClient, wantNode: "worker-1",
		},
		"a client csr with an ecdsa p-384 key breaks no rule": {
			csr: client(nodeSubject(testcsr.ECDSAP384)), wantKind: csr.KindClient, wantNode: "worker-1",
		},
		"a client csr with an ed25519 key breaks no rule": {
			csr: client(nodeSubject(testcsr.Ed25519)), wantKind: csr.KindClient, wantNode: "worker-1",
		},
		"a renewal by the node named in the cn breaks no rule": {
			csr: renewalAs(nodeUser, nodeGroups, nodeSubject(testcsr.ECDSAP256)), wantKind: csr.KindRenewal, wantNode: "worker-1",
		},
		"a serving csr for the node's own names breaks no rule": {
			csr: serving(servingSubject(testcsr.ECDSAP256)), wantKind: csr.KindServing, wantNode: "worker-1",
		},
		"a serving csr with an rsa 2048 key and key encipherment breaks no rule": {
			csr:      servingAs(nodeUser, nodeGroups, servingUsagesKE, servingSubject(testcsr.RSA2048)),
			wantKind: csr.KindServing, wantNode: "worker-1",
		},
		"a serving csr with an ed25519 key and only an ip san breaks no rule": {
			csr: serving(with(nodeSubject(testcsr.Ed25519), func(o *testcsr.Options) {
				o.IPs = []net.IP{net.ParseIP("fd00::5")}
			})),
			wantKind: csr.KindServing, wantNode: "worker-1",
		},

		// Rule 2: signer.
		"a csr for another signer is a violation and is not classified": {
			csr: func(t *testing.T) *certificatesv1.CertificateSigningRequest {
				c := client(nodeSubject(testcsr.ECDSAP256))(t)
				c.Spec.SignerName = certificatesv1.KubeAPIServerClientSignerName
				return c
			},
			want: []string{"signer must be"},
		},

		// Rule 3 / 10: the requester identity decides the kind.
		"a client csr from a user who is neither bootstrapper nor node is a violation": {
			csr:  clientAs("alice", []string{"system:authenticated"}, clientUsages, nodeSubject(testcsr.ECDSAP256)),
			want: []string{"client certificate requester must be"},
		},
		"a bootstrap username without the system:bootstrappers group is not a bootstrapper": {
			csr:  clientAs(bootstrapUser, []string{"system:bootstrappers:workers"}, clientUsages, nodeSubject(testcsr.ECDSAP256)),
			want: []string{"client certificate requester must be"},
		},
		"a bootstrap username with a malformed token id is not a bootstrapper": {
			csr:  clientAs("system:bootstrap:ABC", bootstrapGroups, clientUsages, nodeSubject(testcsr.ECDSAP256)),
			want: []string{"client certificate requester must be"},
		},

		// Rule 4: exactly one PEM CERTIFICATE REQUEST whose signature verifies.
		"two pem blocks are a violation": {
			csr:  rawRequest(func(_ *testing.T, valid []byte) []byte { return append(bytes.Clone(valid), valid...) }),
			want: []string{"more than one pem block"}, wantKind: csr.KindClient,
		},
		"trailing garbage after the pem block is a violation": {
			csr:  rawRequest(func(_ *testing.T, valid []byte) []byte { return append(bytes.Clone(valid), "garbage"...) }),
			want: []string{"data after the pem block"}, wantKind: csr.KindClient,
		},
		"garbage before the pem block is a violation": {
			csr:  rawRequest(func(_ *testing.T, valid []byte) []byte { return append([]byte("garbage\n"), valid...) }),
			want: []string{"no pem block at the start"}, wantKind: csr.KindClient,
		},
		"a pem block of type CERTIFICATE is a violation": {
			csr: rawRequest(func(_ *testing.T, valid []byte) []byte {
				b, _ := pem.Decode(valid)
				return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: b.Bytes})
			}),
			want: []string{"pem block type must be CERTIFICATE REQUEST"}, wantKind: csr.KindClient,
		},
		"a signature that does not verify is a violation": {
			csr:  rawRequest(corrupt),
			want: []string{"request signature does not verify"}, wantKind: csr.KindClient,
		},
		"an empty request is a violation": {
			csr:  rawRequest(func(*testing.T, []byte) []byte { return nil }),
			want: []string{"no pem block at the start"}, wantKind: csr.KindClient,
		},

		// Rule 5: subject.
		"organization system:masters is a violation": {
			csr:  client(with(nodeSubject(testcsr.ECDSAP256), func(o *testcsr.Options) { o.Organization = []string{"system:masters"} })),
			want: []string{`subject organization must be exactly [system:nodes] (got "system:masters")`}, wantKind: csr.KindClient, wantNode: "worker-1",
		},
		"an extra organization next to system:nodes is a violation": {
			csr: client(with(nodeSubject(testcsr.ECDSAP256), func(o *testcsr.Options) {
				o.Organization = []string{csr.NodesGroup, "system:masters"}
			})),
			want: []string{"subject organization must be exactly"}, wantKind: csr.KindClient, wantNode: "worker-1",
		},
		"no organization is a violation": {
			csr:  client(with(nodeSubject(testcsr.ECDSAP256), func(o *testcsr.Options) { o.Organization = nil })),
			want: []string{"subject organization must be exactly [system:nodes] (got none)"}, wantKind: csr.KindClient, wantNode: "worker-1",
		},
		"a cn without the system:node: prefix is a violation": {
			csr:  client(with(nodeSubject(testcsr.ECDSAP256), func(o *testcsr.Options) { o.CommonName = "worker-1" })),
			want: []string{"subject common name must be system:node:<name>"}, wantKind: csr.KindClient,
		},
		"a cn with an empty node name is a violation": {
			csr:  client(with(nodeSubject(testcsr.ECDSAP256), func(o *testcsr.Options) { o.CommonName = "system:node:" })),
			want: []string{"subject common name must be"}, wantKind: csr.KindClient,
		},
		"a cn whose node name is not a dns-1123 subdomain is a violation": {
			csr:  client(with(nodeSubject(testcsr.ECDSAP256), func(o *testcsr.Options) { o.CommonName = "system:node:Worker_1" })),
			want: []string{"subject common name must be"}, wantKind: csr.KindClient,
		},
		"two common names are a violation even when both look like nodes": {
			csr: client(with(nodeSubject(testcsr.ECDSAP256), func(o *testcsr.Options) {
				o.CommonName = ""
				o.ExtraSubject = []pkixATV{{Type: oidCN, Value: "system:node:worker-1"}, {Type: oidCN, Value: "system:node:worker-2"}}
			})),
			want: []string{"subject must hold exactly one common name"}, wantKind: csr.KindClient,
		},
		"an organizational unit in the subject is a violation": {
			csr: client(with(nodeSubject(testcsr.ECDSAP256), func(o *testcsr.Options) {
				o.ExtraSubject = []pkixATV{{Type: oidOU, Value: "admins"}}
			})),
			want: []string{"subject must hold exactly one common name"}, wantKind: csr.KindClient, wantNode: "worker-1",
		},

		// Rule 6: usages.
		"server auth on a client csr is a violation": {
			csr: clientAs(bootstrapUser, bootstrapGroups,
				[]certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageServerAuth}, nodeSubject(testcsr.ECDSAP256)),
			want: []string{"usages must be exactly [digital signature, client auth]"}, wantKind: csr.KindClient, wantNode: "worker-1",
		},
		"server auth added to client usages is a violation": {
			csr: clientAs(bootstrapUser, bootstrapGroups,
				append(testcsr.ClientUsages(), certificatesv1.UsageServerAuth), nodeSubject(testcsr.ECDSAP256)),
			want: []string{"usages must be exactly"}, wantKind: csr.KindClient, wantNode: "worker-1",
		},
		"a duplicated usage is a violation": {
			csr: clientAs(bootstrapUser, bootstrapGroups,
				append(testcsr.ClientUsages(), certificatesv1.UsageClientAuth), nodeSubject(testcsr.ECDSAP256)),
			want: []string{"each once"}, wantKind: csr.KindClient, wantNode: "worker-1",
		},
		"a duplicated key encipherment usage is a violation": {
			csr: clientAs(bootstrapUser, bootstrapGroups,
				append(clientUsagesRSA, certificatesv1.UsageKeyEncipherment), nodeSubject(testcsr.RSA2048)),
			want: []string{"each once"}, wantKind: csr.KindClient, wantNode: "worker-1",
		},
		"a missing digital signature usage is a violation": {
			csr: clientAs(bootstrapUser, bootstrapGroups,
				[]certificatesv1.KeyUsage{certificatesv1.UsageClientAuth}, nodeSubject(testcsr.ECDSAP256)),
			want: []string{"usages must be exactly"}, wantKind: csr.KindClient, wantNode: "worker-1",
		},
		"client auth on a serving csr is a violation": {
			csr:  servingAs(nodeUser, nodeGroups, clientUsages, servingSubject(testcsr.ECDSAP256)),
			want: []string{"usages must be exactly [digital signature, server auth]"}, wantKind: csr.KindServing, wantNode: "worker-1",
		},

		// Rule 7: public key.
		"an rsa 1024 key is a violation": {
			csr:  clientAs(bootstrapUser, bootstrapGroups, clientUsagesRSA, nodeSubject(testcsr.RSA1024)),
			want: []string{"public key must be rsa of at least 2048 bits, ecdsa p-256 or p-384, or ed25519 (got rsa 1024 bits)"}, wantKind: csr.KindClient, wantNode: "worker-1",
		},
		"an ecdsa p-224 key is a violation": {
			csr:  client(nodeSubject(testcsr.ECDSAP224)),
			want: []string{"(got ecdsa P-224)"}, wantKind: csr.KindClient, wantNode: "worker-1",
		},

		// Rule 9: no SANs on client certificates.
		"a dns san on a client csr is a violation": {
			csr:  client(with(nodeSubject(testcsr.ECDSAP256), func(o *testcsr.Options) { o.DNSNames = []string{"worker-1"} })),
			want: []string{`client certificate must have no subject alternative names (dns, ip, email or uri) (got "worker-1")`}, wantKind: csr.KindClient, wantNode: "worker-1",
		},
		"an ip san on a client csr is a violation": {
			csr:  client(with(nodeSubject(testcsr.ECDSAP256), func(o *testcsr.Options) { o.IPs = []net.IP{net.ParseIP("10.0.0.5")} })),
			want: []string{`no subject alternative names (dns, ip, email or uri) (got "10.0.0.5")`}, wantKind: csr.KindClient, wantNode: "worker-1",
		},
		"an email san on a client csr is a violation": {
			csr:  client(with(nodeSubject(testcsr.ECDSAP256), func(o *testcsr.Options) { o.Emails = []string{"root@example.com"} })),
			want: []string{`(got "root@example.com")`}, wantKind: csr.KindClient, wantNode: "worker-1",
		},
		"a uri san on a renewal csr is a violation": {
			csr: renewalAs(nodeUser, nodeGroups, with(nodeSubject(testcsr.ECDSAP256), func(o *testcsr.Options) {
				o.URIs = []*url.URL{{Scheme: "spiffe", Host: "cluster.local", Path: "/ns/kube-system/sa/admin"}}
			})),
			want: []string{`(got "spiffe://cluster.local/ns/kube-system/sa/admin")`}, wantKind: csr.KindRenewal, wantNode: "worker-1",
		},

		// Rule 11: renewal identity.
		"a renewal for another node's cn is a violation": {
			csr:  renewalAs("system:node:worker-2", nodeGroups, nodeSubject(testcsr.ECDSAP256)),
			want: []string{`renewal requester "system:node:worker-2" must be the subject common name "system:node:worker-1"`}, wantKind: csr.KindRenewal, wantNode: "worker-2",
		},
		"a renewal whose requester is not in system:nodes is a violation": {
			csr:  renewalAs(nodeUser, []string{"system:authenticated"}, nodeSubject(testcsr.ECDSAP256)),
			want: []string{"renewal requester must be in group system:nodes"}, wantKind: csr.KindRenewal, wantNode: "worker-1",
		},

		// Rule 13: serving identity.
		"a serving csr from a non-node requester is a violation": {
			csr: servingAs("alice", nodeGroups, servingUsages, servingSubject(testcsr.ECDSAP256)),
			want: []string{
				`serving certificate requester must be a node (system:node:<name>) (got "alice")`,
				`serving certificate subject common name "system:node:worker-1" must be the requester "alice"`,
			},
			wantKind: csr.KindServing,
		},
		"a serving csr from a requester outside system:nodes is a violation": {
			csr:  servingAs(nodeUser, []string{"system:authenticated"}, servingUsages, servingSubject(testcsr.ECDSAP256)),
			want: []string{"serving certificate requester must be in group system:nodes"}, wantKind: csr.KindServing, wantNode: "worker-1",
		},
		"a serving csr for another node's cn is a violation": {
			csr:  servingAs("system:node:worker-2", nodeGroups, servingUsages, servingSubject(testcsr.ECDSAP256)),
			want: []string{"must be the requester"}, wantKind: csr.KindServing, wantNode: "worker-2",
		},

		// Rule 14: serving SAN presence and kinds.
		"a serving csr without dns or ip sans is a violation": {
			csr:  serving(nodeSubject(testcsr.ECDSAP256)),
			want: []string{"at least one dns or ip subject alternative name"}, wantKind: csr.KindServing, wantNode: "worker-1",
		},
		"an email san on a serving csr is a violation": {
			csr:  serving(with(servingSubject(testcsr.ECDSAP256), func(o *testcsr.Options) { o.Emails = []string{"a@example.com"} })),
			want: []string{"serving certificate must have no email or uri"}, wantKind: csr.KindServing, wantNode: "worker-1",
		},
		"a uri san on a serving csr is a violation": {
			csr: serving(with(servingSubject(testcsr.ECDSAP256), func(o *testcsr.Options) {
				o.URIs = []*url.URL{{Scheme: "https", Host: "worker-1"}}
			})),
			want: []string{"serving certificate must have no email or uri"}, wantKind: csr.KindServing, wantNode: "worker-1",
		},

		// Rule 15 (the part that needs no Node) and the Node-free part of 16.
		"a wildcard dns san is a violation": {
			csr:  serving(with(servingSubject(testcsr.ECDSAP256), func(o *testcsr.Options) { o.DNSNames = []string{"*.example.internal"} })),
			want: []string{`dns subject alternative names must not be wildcards (got "*.example.internal")`}, wantKind: csr.KindServing, wantNode: "worker-1",
		},
		"a kubernetes.default dns san is a violation": {
			csr:  serving(with(servingSubject(testcsr.ECDSAP256), func(o *testcsr.Options) { o.DNSNames = []string{"kubernetes.default"} })),
			want: []string{`must not be the api server's`}, wantKind: csr.KindServing, wantNode: "worker-1",
		},
		"a bare kubernetes dns san in capitals is a violation": {
			csr:  serving(with(servingSubject(testcsr.ECDSAP256), func(o *testcsr.Options) { o.DNSNames = []string{"KUBERNETES"} })),
			want: []string{`must not be the api server's`}, wantKind: csr.KindServing, wantNode: "worker-1",
		},
		"the api server's fully qualified service name is a violation": {
			csr: serving(with(servingSubject(testcsr.ECDSAP256), func(o *testcsr.Options) {
				o.DNSNames = []string{"kubernetes.default.svc.cluster.local"}
			})),
			want: []string{`must not be the api server's`}, wantKind: csr.KindServing, wantNode: "worker-1",
		},
		"any in-cluster service name is a violation": {
			csr:  serving(with(servingSubject(testcsr.ECDSAP256), func(o *testcsr.Options) { o.DNSNames = []string{"vault.secrets.svc"} })),
			want: []string{`must not be the api server's`}, wantKind: csr.KindServing, wantNode: "worker-1",
		},
		"localhost is a violation": {
			csr:  serving(with(servingSubject(testcsr.ECDSAP256), func(o *testcsr.Options) { o.DNSNames = []string{"localhost"} })),
			want: []string{`must not be the api server's`}, wantKind: csr.KindServing, wantNode: "worker-1",
		},
		"a dns san that is not a dns name is a violation": {
			csr:  serving(with(servingSubject(testcsr.ECDSAP256), func(o *testcsr.Options) { o.DNSNames = []string{"bad_name"} })),
			want: []string{`must be valid dns-1123 subdomains (got "bad_name")`}, wantKind: csr.KindServing, wantNode: "worker-1",
		},
		"an unspecified or multicast ip san is a violation": {
			csr: serving(with(servingSubject(testcsr.ECDSAP256), func(o *testcsr.Options) {
				o.IPs = []net.IP{net.ParseIP("224.0.0.1"), net.IPv6unspecified}
			})),
			want: []string{`must not be unspecified or multicast addresses (got "224.0.0.1", "::")`}, wantKind: csr.KindServing, wantNode: "worker-1",
		},
		"many bad sans make one violation listing three and counting the rest": {
			csr: serving(with(servingSubject(testcsr.ECDSAP256), func(o *testcsr.Options) {
				o.DNSNames = []string{"*.a", "*.b", "*.c", "*.d", "*.e"}
			})),
			want: []string{`(got "*.a", "*.b", "*.c" and 2 more)`}, wantKind: csr.KindServing, wantNode: "worker-1",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c := tc.csr(t)
			got := csr.Inspect(c)
			if got.Kind != tc.wantKind {
				t.Errorf("Kind = %q, want %q", got.Kind, tc.wantKind)
			}
			if got.NodeName != tc.wantNode {
				t.Errorf("NodeName = %q, want %q", got.NodeName, tc.wantNode)
			}
			// The cheap reading agrees with Inspect wherever the request verifies.
			if n := csr.NodeName(c); got.Request != nil && n != got.NodeName {
				t.Errorf("csr.NodeName = %q, Inspect's NodeName = %q", n, got.NodeName)
			}
			assertViolations(t, got.Violations, tc.want)
			if (got.Request == nil) != strings.Contains(strings.Join(got.Violations, "\n"), "request must be one pem") {
				t.Errorf("Request is nil = %v, but violations are %q", got.Request == nil, got.Violations)
			}
			for _, v := range got.Violations {
				if strings.Contains(v, "-----BEGIN") || strings.Contains(v, "MII") || v != strings.ToLower(v[:1])+v[1:] {
					t.Errorf("violation %q leaks the request or is not a lowercase sentence", v)
				}
			}
		})
	}
}

// assertViolations checks that every wanted substring is in exactly one violation and
// that there are no other violations.
func assertViolations(t *testing.T, got, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d violations %q, want %d matching %q", len(got), got, len(want), want)
	}
	for _, w := range want {
		found := false
		for _, g := range got {
			if strings.Contains(g, w) {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("no violation contains %q; got %q", w, got)
		}
	}
}

func TestInspectOfNilIsAViolation(t *testing.T) {
	t.Parallel()
	if got := csr.Inspect(nil); len(got.Violations) != 1 {
		t.Fatalf("Inspect(nil).Violations = %q, want one", got.Violations)
	}
}

func TestParse(t *testing.T) {
	t.Parallel()
	valid := testcsr.MustPEM(t, nodeSubject(testcsr.ECDSAP256))
	block, _ := pem.Decode(valid)

	tests := map[string]struct {
		in      []byte
		wantErr error // nil: must parse
		errText string
	}{
		"a single valid block parses":                      {in: valid},
		"surrounding whitespace is allowed":                {in: append(append([]byte(" \n\t"), valid...), "\r\n \n"...)},
		"two blocks are refused":                           {in: append(bytes.Clone(valid), valid...), wantErr: csr.ErrNotOnePEMBlock, errText: "more than one pem block"},
		"trailing garbage is refused":                      {in: append(bytes.Clone(valid), 'x'), wantErr: csr.ErrNotOnePEMBlock, errText: "data after"},
		"leading garbage is refused":                       {in: append([]byte("x"), valid...), wantErr: csr.ErrNotOnePEMBlock},
		"a truncated block is refused":                     {in: valid[:len(valid)/2], wantErr: csr.ErrNotOnePEMBlock, errText: "malformed"},
		"a request over the size cap is refused":           {in: append(bytes.Clone(valid), bytes.Repeat([]byte{' '}, csr.MaxRequestBytes)...), wantErr: csr.ErrNotOnePEMBlock},
		"nothing at all is refused":                        {in: nil, wantErr: csr.ErrNotOnePEMBlock},
		"an old NEW CERTIFICATE REQUEST type is refused":   {in: pem.EncodeToMemory(&pem.Block{Type: "NEW CERTIFICATE REQUEST", Bytes: block.Bytes}), wantErr: csr.ErrPEMType},
		"a private key block is refused":                   {in: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: block.Bytes}), wantErr: csr.ErrPEMType, errText: `"PRIVATE KEY"`},
		"pem headers are refused":                          {in: pem.EncodeToMemory(&pem.Block{Type: csr.PEMType, Headers: map[string]string{"Proc-Type": "4,ENCRYPTED"}, Bytes: block.Bytes}), wantErr: csr.ErrNotOnePEMBlock, errText: "headers"},
		"a flipped signature byte is refused":              {in: corrupt(t, valid), wantErr: csr.ErrSignature},
		"der that is not a certificate request is refused": {in: pem.EncodeToMemory(&pem.Block{Type: csr.PEMType, Bytes: []byte{0x30, 0x03, 0x02, 0x01, 0x01}}), errText: "parse certificate request"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			req, err := csr.Parse(tc.in)
			if tc.wantErr == nil && tc.errText == "" {
				if err != nil || req == nil {
					t.Fatalf("Parse() = %v, %v; want a request", req, err)
				}
				if req.Subject.CommonName != nodeCN {
					t.Errorf("CN = %q, want %q", req.Subject.CommonName, nodeCN)
				}
				return
			}
			if err == nil || req != nil {
				t.Fatalf("Parse() = %v, %v; want an error", req, err)
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("error %q is not %q", err, tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.errText) {
				t.Errorf("error %q does not contain %q", err, tc.errText)
			}
			if strings.Contains(err.Error(), "MII") || strings.Contains(err.Error(), "-----") {
				t.Errorf("error %q leaks request bytes", err)
			}
		})
	}
}

func TestCorruptedSignatureStillParses(t *testing.T) {
	t.Parallel()
	// The signature test above is only meaningful if the corrupted request parses
	// and fails on the signature alone.
	for _, k := range []testcsr.KeyType{testcsr.RSA2048, testcsr.ECDSAP256, testcsr.Ed25519} {
		bad := corrupt(t, testcsr.MustPEM(t, nodeSubject(k)))
		_, err := csr.Parse(bad)
		if !errors.Is(err, csr.ErrSignature) {
			t.Errorf("%s: Parse(corrupted) = %v, want ErrSignature", k, err)
		}
	}
}

// NodeName reads what a CSR claims without verifying it: the requester's name for a
// renewal or serving CSR, the subject's for a first bootstrap, even under a broken
// signature, and nothing when there is no single well-formed node CN to read.
func TestNodeName(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		csr  build
		want string
	}{
		"a first bootstrap: the subject's node": {csr: client(nodeSubject(testcsr.ECDSAP256)), want: "worker-1"},
		"a first bootstrap whose signature does not verify: still the claimed node": {
			csr: rawRequest(corrupt), want: "worker-1",
		},
		"a renewal: the requester, whatever the subject says": {
			csr:  renewalAs("system:node:worker-2", nodeGroups, nodeSubject(testcsr.ECDSAP256)),
			want: "worker-2",
		},
		"a serving csr: the requester": {csr: serving(servingSubject(testcsr.Ed25519)), want: "worker-1"},
		"a first bootstrap with two common names: none": {
			csr: client(with(nodeSubject(testcsr.ECDSAP256), func(o *testcsr.Options) {
				cn := asn1.ObjectIdentifier{2, 5, 4, 3}
				o.ExtraSubject = []pkixATV{{Type: cn, Value: "system:node:worker-1"}, {Type: cn, Value: "system:node:worker-9"}}
			})),
		},
		"a first bootstrap for an invalid node name: none": {
			csr: client(with(nodeSubject(testcsr.ECDSAP256), func(o *testcsr.Options) { o.CommonName = "system:node:Worker_1" })),
		},
		"two pem blocks: none": {
			csr: rawRequest(func(_ *testing.T, valid []byte) []byte { return append(append([]byte{}, valid...), valid...) }),
		},
		"garbage: none": {csr: rawRequest(func(*testing.T, []byte) []byte { return []byte("not a csr") })},
		"a plain user on the client signer: none": {
			csr: clientAs("alice", nil, clientUsages, nodeSubject(testcsr.ECDSAP256)),
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if got := csr.NodeName(tc.csr(t)); got != tc.want {
				t.Errorf("NodeName() = %q, want %q", got, tc.want)
			}
		})
	}
	if got := csr.NodeName(nil); got != "" {
		t.Errorf("NodeName(nil) = %q", got)
	}
}

func TestClassify(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		signer, user string
		groups       []string
		want         csr.Kind
		wantOK       bool
	}{
		"a bootstrap token user on the client signer is a first bootstrap": {
			signer: csr.SignerClient, user: bootstrapUser, groups: bootstrapGroups, want: csr.KindClient, wantOK: true,
		},
		"a node on the client signer is a renewal": {
			signer: csr.SignerClient, user: nodeUser, groups: nodeGroups, want: csr.KindRenewal, wantOK: true,
		},
		"anyone on the serving signer is a serving csr": {
			signer: csr.SignerServing, user: "alice", want: csr.KindServing, wantOK: true,
		},
		"a bootstrap user missing system:bootstrappers is not classified": {
			signer: csr.SignerClient, user: bootstrapUser, groups: []string{"system:bootstrappers:workers"},
		},
		"a bootstrap user with a seven-character id is not classified": {
			signer: csr.SignerClient, user: "system:bootstrap:abcdefg", groups: bootstrapGroups,
		},
		"a node with an empty name is not classified": {
			signer: csr.SignerClient, user: "system:node:", groups: nodeGroups,
		},
		"a plain user on the client signer is not classified": {
			signer: csr.SignerClient, user: "alice",
		},
		"a near-miss signer name is not classified": {
			signer: csr.SignerClient + "x", user: bootstrapUser, groups: bootstrapGroups,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c := testcsr.Object("c", tc.signer, tc.user, tc.groups, nil, nil)
			got, ok := csr.Classify(c)
			if got != tc.want || ok != tc.wantOK {
				t.Errorf("Classify() = %q, %v; want %q, %v", got, ok, tc.want, tc.wantOK)
			}
		})
	}
	if _, ok := csr.Classify(nil); ok {
		t.Error("Classify(nil) is ok")
	}
}

func TestIsKubeletSigner(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		signer string
		want   bool
	}{
		"the kubelet client signer is one":         {signer: "kubernetes.io/kube-apiserver-client-kubelet", want: true},
		"the kubelet serving signer is one":        {signer: "kubernetes.io/kubelet-serving", want: true},
		"the generic api server client is not one": {signer: "kubernetes.io/kube-apiserver-client"},
		"a custom signer is not one":               {signer: "example.com/kubelet-serving"},
		"a case variant is not one":                {signer: "kubernetes.io/Kubelet-Serving"},
		"nothing is not one":                       {},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if got := csr.IsKubeletSigner(tc.signer); got != tc.want {
				t.Errorf("IsKubeletSigner(%q) = %v, want %v", tc.signer, got, tc.want)
			}
		})
	}
}

func TestDecided(t *testing.T) {
	t.Parallel()
	cond := func(ty certificatesv1.RequestConditionType) *certificatesv1.CertificateSigningRequest {
		c := testcsr.Object("c", csr.SignerClient, nodeUser, nil, nil, nil)
		c.Status.Conditions = []certificatesv1.CertificateSigningRequestCondition{{Type: ty, Status: "True"}}
		return c
	}
	issued := testcsr.Object("c", csr.SignerClient, nodeUser, nil, nil, nil)
	issued.Status.Certificate = []byte("cert")
	tests := map[string]struct {
		csr  *certificatesv1.CertificateSigningRequest
		want bool
	}{
		"a pending csr is not decided":                 {csr: testcsr.Object("c", csr.SignerClient, nodeUser, nil, nil, nil)},
		"an approved csr is decided":                   {csr: cond(certificatesv1.CertificateApproved), want: true},
		"a denied csr is decided":                      {csr: cond(certificatesv1.CertificateDenied), want: true},
		"a failed csr is decided":                      {csr: cond(certificatesv1.CertificateFailed), want: true},
		"a csr with a certificate is decided":          {csr: issued, want: true},
		"a csr with an unrelated condition is not":     {csr: cond("SomethingElse")},
		"a nil csr is not decided (nothing to act on)": {csr: nil},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if got := csr.Decided(tc.csr); got != tc.want {
				t.Errorf("Decided() = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestIsDNS1123Subdomain(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		in   string
		want bool
	}{
		"a single label is valid":           {in: "worker-1", want: true},
		"dotted labels are valid":           {in: "a.b-c.d0", want: true},
		"253 characters are valid":          {in: strings.Repeat("a", 253), want: true},
		"254 characters are not":            {in: strings.Repeat("a", 254)},
		"an empty string is not":            {in: ""},
		"capitals are not":                  {in: "Worker"},
		"an underscore is not":              {in: "a_b"},
		"a leading hyphen is not":           {in: "-a"},
		"a label ending in a hyphen is not": {in: "a-.b"},
		"an empty label is not":             {in: "a..b"},
		"a trailing dot is not":             {in: "a.b."},
		"a wildcard is not":                 {in: "*.a"},
		"a non-ascii letter is not":         {in: "wörker"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if got := csr.IsDNS1123Subdomain(tc.in); got != tc.want {
				t.Errorf("IsDNS1123Subdomain(%q) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

func TestQuoteValuesCutsAndEscapes(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", 500)
	got := csr.QuoteValues([]string{"a\nb", long, "c", "d", "e"})
	if strings.Contains(got, "\n") {
		t.Errorf("QuoteValues kept a raw newline: %q", got)
	}
	if strings.Contains(got, long[:100]) {
		t.Errorf("QuoteValues did not cut a long value: %q", got)
	}
	if !strings.HasSuffix(got, " and 2 more") {
		t.Errorf("QuoteValues = %q, want it to end with the count of the rest", got)
	}
}

func BenchmarkParse(b *testing.B) {
	req, _, err := testcsr.NewPEM(nodeSubject(testcsr.ECDSAP256))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := csr.Parse(req); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkInspectServing(b *testing.B) {
	req, _, err := testcsr.NewPEM(servingSubject(testcsr.ECDSAP256))
	if err != nil {
		b.Fatal(err)
	}
	c := testcsr.Object("c", csr.SignerServing, nodeUser, nodeGroups, servingUsages, req)
	b.ReportAllocs()
	for b.Loop() {
		if in := csr.Inspect(c); len(in.Violations) != 0 {
			b.Fatal(in.Violations)
		}
	}
}

// hugeRSARequest encodes, by hand, a CSR for an RSA key larger than MaxRSABits with a
// zero signature: crypto/x509 refuses to create one, and Parse must refuse it
// before spending time on verification.
func hugeRSARequest(t *testing.T) []byte {
	t.Helper()
	n := new(big.Int).Lsh(big.NewInt(1), csr.MaxRSABits+64)
	n.Add(n, big.NewInt(1))
	spki, err := x509.MarshalPKIXPublicKey(&rsa.PublicKey{N: n, E: 65537})
	if err != nil {
		t.Fatal(err)
	}
	subject, err := asn1.Marshal(pkix.Name{CommonName: nodeCN, Organization: []string{csr.NodesGroup}}.ToRDNSequence())
	if err != nil {
		t.Fatal(err)
	}
	type tbs struct {
		Version       int
		Subject       asn1.RawValue
		PublicKey     asn1.RawValue
		RawAttributes []asn1.RawValue `asn1:"tag:0"`
	}
	type request struct {
		TBS       tbs
		Algorithm pkix.AlgorithmIdentifier
		Signature asn1.BitString
	}
	der, err := asn1.Marshal(request{
		TBS:       tbs{Subject: asn1.RawValue{FullBytes: subject}, PublicKey: asn1.RawValue{FullBytes: spki}, RawAttributes: []asn1.RawValue{}},
		Algorithm: pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}, Parameters: asn1.NullRawValue},
		Signature: asn1.BitString{Bytes: make([]byte, (n.BitLen()+7)/8), BitLength: 8 * ((n.BitLen() + 7) / 8)},
	})
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: csr.PEMType, Bytes: der})
}

func TestParseRefusesHugeRSAKeysBeforeVerifying(t *testing.T) {
	t.Parallel()
	_, err := csr.Parse(hugeRSARequest(t))
	if err == nil || errors.Is(err, csr.ErrSignature) || !strings.Contains(err.Error(), "larger than 8192") {
		t.Fatalf("Parse(huge rsa key) error = %v, want the size refusal", err)
	}
}
