package csr

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"slices"
	"strconv"
	"strings"

	certificatesv1 "k8s.io/api/certificates/v1"
)

// MinRSABits is the smallest RSA key accepted (rule 7).
const MinRSABits = 2048

// Violations of rules whose text does not depend on the request.
const (
	violationSigner          = "signer must be " + SignerClient + " or " + SignerServing
	violationClientRequester = "client certificate requester must be a bootstrap token user (" + BootstrapUserPrefix + "<id> in group " + BootstrappersGroup + ") or a node (" + NodeUserPrefix + "<name>)"
	violationSubjectShape    = "subject must hold exactly one common name and one organization and nothing else"
	violationRenewalGroup    = "renewal requester must be in group " + NodesGroup
	violationServingUser     = "serving certificate requester must be a node (" + NodeUserPrefix + "<name>)"
	violationServingGroup    = "serving certificate requester must be in group " + NodesGroup
	violationServingNoSAN    = "serving certificate must have at least one dns or ip subject alternative name"
)

var (
	oidCommonName   = asn1.ObjectIdentifier{2, 5, 4, 3}
	oidOrganization = asn1.ObjectIdentifier{2, 5, 4, 10}
)

// Inspection is what Inspect found out about a CSR.
type Inspection struct {
	// Kind is the CSR's kind from Classify; "" when it could not be classified.
	Kind Kind
	// NodeName is the node the CSR is for: for KindClient the <name> of the subject's
	// CN system:node:<name> ("" when the request does not parse or the CN is not a
	// valid node name); for KindRenewal and KindServing the <name> of the requester
	// system:node:<name>, since identity comes from the API server (rule 3) and a CN
	// that differs from it is a violation anyway.
	NodeName string
	// SubjectNodeName is the <name> of the subject's CN system:node:<name> when the
	// request parses and <name> is a valid node name, else "".
	SubjectNodeName string
	// Request is the parsed request, nil if it does not parse or its signature does not verify.
	Request *x509.CertificateRequest
	// Violations lists every hard rule broken, each a short lowercase sentence naming
	// the rule. Never key material; requester-supplied values are quoted and cut short.
	Violations []string
}

// Inspect applies every hard rule that needs no policy and no Node: rules 2-7, 9,
// 11, 13, 14, and the no-wildcard / no API-server-name part of 15 (see the package
// comment for the exact, strict reading). Classification uses Classify.
func Inspect(c *certificatesv1.CertificateSigningRequest) Inspection {
	var in Inspection
	if c == nil {
		in.Violations = []string{"certificate signing request is missing"}
		return in
	}
	var v []string
	signer := c.Spec.SignerName
	if !IsKubeletSigner(signer) {
		v = append(v, violationSigner)
	}
	kind, ok := Classify(c)
	in.Kind = kind
	if signer == SignerClient && !ok {
		v = append(v, violationClientRequester)
	}

	req, err := Parse(c.Spec.Request)
	if err != nil {
		v = append(v, "request must be one pem certificate request whose signature verifies: "+err.Error())
	} else {
		in.Request = req
		v = checkSubject(req, v, &in)
		v = checkPublicKey(req, v)
	}

	switch signer {
	case SignerClient:
		v = checkUsages(c.Spec.Usages, certificatesv1.UsageClientAuth, v)
		if req != nil {
			v = checkNoSANs(req, v)
		}
	case SignerServing:
		v = checkUsages(c.Spec.Usages, certificatesv1.UsageServerAuth, v)
		if req != nil {
			v = checkServingSANs(req, v)
		}
	}

	switch kind {
	case KindClient:
		in.NodeName = in.SubjectNodeName
	case KindRenewal:
		in.NodeName, _ = NodeNameFromUsername(c.Spec.Username)
		v = checkRenewalIdentity(c, req, v)
	case KindServing:
		in.NodeName, _ = NodeNameFromUsername(c.Spec.Username)
		v = checkServingIdentity(c, req, v)
	}
	in.Violations = v
	return in
}

// checkSubject applies rule 5 and records the CN's node name.
func checkSubject(req *x509.CertificateRequest, v []string, in *Inspection) []string {
	subj := req.Subject
	if len(subj.Organization) != 1 || subj.Organization[0] != NodesGroup {
		v = append(v, "subject organization must be exactly ["+NodesGroup+"] (got "+gotValues(subj.Organization)+")")
	}
	name, cns, extra := subjectNode(subj)
	if cns > 1 || extra {
		v = append(v, violationSubjectShape)
	}
	if name == "" {
		return append(v, "subject common name must be "+NodeUserPrefix+"<name> with <name> a lowercase dns-1123 subdomain (got "+gotValues([]string{subj.CommonName})+")")
	}
	if cns == 1 {
		in.SubjectNodeName = name
	}
	return v
}

// subjectNode reads a subject's node: <name> of its CN system:node:<name> when <name>
// is a lowercase DNS-1123 subdomain (else ""), how many CN attributes it holds, and
// whether it holds anything but CN and O. Go's parser keeps only the last CN in
// CommonName, so the raw attributes are counted: a second CN (or anything else the
// signer might copy) cannot slip through.
func subjectNode(subj pkix.Name) (name string, cns int, extra bool) {
	for _, atv := range subj.Names {
		switch {
		case atv.Type.Equal(oidCommonName):
			cns++
		case atv.Type.Equal(oidOrganization):
		default:
			extra = true
		}
	}
	name, found := strings.CutPrefix(subj.CommonName, NodeUserPrefix)
	if !found || !IsDNS1123Subdomain(name) {
		return "", cns, extra
	}
	return name, cns, extra
}

// NodeName is the node a kubelet CSR is for, as Inspect's NodeName reads it, but
// without verifying the request's signature or applying any rule: cheap enough for a
// cache index, which sees every update of every CSR. For a first-bootstrap request it
// is only what the unverified subject claims, so it may pick which CSRs to look at,
// never decide one.
func NodeName(c *certificatesv1.CertificateSigningRequest) string {
	kind, ok := Classify(c)
	if !ok {
		return ""
	}
	if kind != KindClient {
		name, _ := NodeNameFromUsername(c.Spec.Username)
		return name
	}
	req, err := parseUnverified(c.Spec.Request)
	if err != nil {
		return ""
	}
	if name, cns, _ := subjectNode(req.Subject); cns == 1 {
		return name
	}
	return ""
}

// checkPublicKey applies rule 7.
func checkPublicKey(req *x509.CertificateRequest, v []string) []string {
	var got string
	switch k := req.PublicKey.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() >= MinRSABits {
			return v
		}
		got = "rsa " + strconv.Itoa(k.N.BitLen()) + " bits"
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() || k.Curve == elliptic.P384() {
			return v
		}
		got = "ecdsa " + k.Curve.Params().Name
	case ed25519.PublicKey:
		return v
	default:
		got = req.PublicKeyAlgorithm.String()
	}
	return append(v, "public key must be rsa of at least "+strconv.Itoa(MinRSABits)+" bits, ecdsa p-256 or p-384, or ed25519 (got "+got+")")
}

// checkUsages applies rule 6: exactly {digital signature, auth} or {digital
// signature, key encipherment, auth}, in any order, each once.
func checkUsages(usages []certificatesv1.KeyUsage, auth certificatesv1.KeyUsage, v []string) []string {
	ds, ke, au, other := 0, 0, 0, 0
	for _, u := range usages {
		switch u {
		case certificatesv1.UsageDigitalSignature:
			ds++
		case certificatesv1.UsageKeyEncipherment:
			ke++
		case auth:
			au++
		default:
			other++
		}
	}
	if other == 0 && ds == 1 && au == 1 && ke <= 1 {
		return v
	}
	got := make([]string, len(usages))
	for i, u := range usages {
		got[i] = string(u)
	}
	return append(v, fmt.Sprintf("usages must be exactly [digital signature, %s] or [digital signature, key encipherment, %s], each once (got %s)",
		auth, auth, gotValues(got)))
}

// checkNoSANs applies rule 9: a client certificate names a node in its subject only.
func checkNoSANs(req *x509.CertificateRequest, v []string) []string {
	var got ValueList
	for _, n := range req.DNSNames {
		got.Add(n)
	}
	for _, ip := range req.IPAddresses {
		got.Add(ip.String())
	}
	for _, e := range req.EmailAddresses {
		got.Add(e)
	}
	for _, u := range req.URIs {
		got.Add(u.String())
	}
	return appendIf(v, got.Violation("client certificate must have no subject alternative names (dns, ip, email or uri)"))
}

// checkServingSANs applies rule 14 and the parts of 15 and 16 that need no Node.
func checkServingSANs(req *x509.CertificateRequest, v []string) []string {
	if len(req.DNSNames) == 0 && len(req.IPAddresses) == 0 {
		v = append(v, violationServingNoSAN)
	}
	var other ValueList
	for _, e := range req.EmailAddresses {
		other.Add(e)
	}
	for _, u := range req.URIs {
		other.Add(u.String())
	}
	v = appendIf(v, other.Violation("serving certificate must have no email or uri subject alternative names"))

	var wildcard, reserved, invalid ValueList
	for _, n := range req.DNSNames {
		lower := strings.ToLower(n)
		switch {
		case strings.Contains(n, "*"):
			wildcard.Add(n)
		case reservedDNSName(lower):
			reserved.Add(n)
		case !IsDNS1123Subdomain(lower):
			invalid.Add(n)
		}
	}
	v = appendIf(v, wildcard.Violation("dns subject alternative names must not be wildcards"))
	v = appendIf(v, reserved.Violation("dns subject alternative names must not be the api server's, an in-cluster service's or pod's, or localhost"))
	v = appendIf(v, invalid.Violation("dns subject alternative names must be valid dns-1123 subdomains"))

	var badIP ValueList
	for _, ip := range req.IPAddresses {
		// Loopback is judged by the policy: refused unless serving.allowedCIDRs names it.
		if ip.IsUnspecified() || ip.IsMulticast() {
			badIP.Add(ip.String())
		}
	}
	return appendIf(v, badIP.Violation("ip subject alternative names must not be unspecified or multicast addresses"))
}

// reservedDNSName reports whether a lowercased DNS name belongs to the cluster or the
// local host rather than to a node: a certificate for it, signed by a CA that pods and
// components trust, would let a node impersonate the API server or a Service.
func reservedDNSName(n string) bool {
	n = strings.TrimSuffix(n, ".")
	switch n {
	case "kubernetes", "kubernetes.default", "localhost", "localhost.localdomain":
		return true
	}
	if strings.HasSuffix(n, ".localhost") {
		return true
	}
	// <service>.<namespace>.svc[.<zone>] (kubernetes.default.svc... is the API
	// server) and <ip>.<namespace>.pod[.<zone>].
	_, rest, ok := strings.Cut(n, ".")
	if !ok {
		return false
	}
	_, rest, ok = strings.Cut(rest, ".")
	if !ok {
		return false
	}
	third, _, _ := strings.Cut(rest, ".")
	return third == "svc" || third == "pod"
}

// checkRenewalIdentity applies rule 11: a node renews only its own certificate.
func checkRenewalIdentity(c *certificatesv1.CertificateSigningRequest, req *x509.CertificateRequest, v []string) []string {
	if req != nil && req.Subject.CommonName != c.Spec.Username {
		v = append(v, "renewal requester "+gotValues([]string{c.Spec.Username})+" must be the subject common name "+gotValues([]string{req.Subject.CommonName}))
	}
	if !slices.Contains(c.Spec.Groups, NodesGroup) {
		v = append(v, violationRenewalGroup)
	}
	return v
}

// checkServingIdentity applies rule 13: a node asks only for its own serving certificate.
func checkServingIdentity(c *certificatesv1.CertificateSigningRequest, req *x509.CertificateRequest, v []string) []string {
	if _, ok := NodeNameFromUsername(c.Spec.Username); !ok {
		v = append(v, violationServingUser+" (got "+gotValues([]string{c.Spec.Username})+")")
	}
	if !slices.Contains(c.Spec.Groups, NodesGroup) {
		v = append(v, violationServingGroup)
	}
	if req != nil && req.Subject.CommonName != c.Spec.Username {
		v = append(v, "serving certificate subject common name "+gotValues([]string{req.Subject.CommonName})+" must be the requester "+gotValues([]string{c.Spec.Username}))
	}
	return v
}

// gotValues is QuoteValues, or "none" for an empty list.
func gotValues(vals []string) string {
	if len(vals) == 0 {
		return "none"
	}
	return QuoteValues(vals)
}

func appendIf(v []string, s string) []string {
	if s == "" {
		return v
	}
	return append(v, s)
}
