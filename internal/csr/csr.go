// Package csr recognises kubelet certificate signing requests and applies the hard
// rules of TLS bootstrapping that need neither a BootstrapPolicy nor a Node
// (/work/shared/reference/csr-validation.md, rules 1-7, 9, 11, 13, 14 and the
// name part of 15). It never talks to the API server.
//
// Identity always comes from what the API server recorded (spec.username,
// spec.groups), never from the request's content (rule 3): Classify looks at the
// signer and the requester only, and the request's subject is then checked against
// that identity.
//
// Where the rules are silent this package picks the stricter reading:
//   - Decided also counts a Failed condition: a CSR someone else has touched is not ours.
//   - A first-bootstrap requester must be system:bootstrap:<id> with a well-formed
//     token id ([a-z0-9]{6}) and in the group system:bootstrappers; anything else on
//     the client signer that is not system:node:<name> is not classified at all.
//   - Parse accepts nothing but whitespace before and after the single PEM block,
//     no PEM headers, at most MaxRequestBytes, and RSA keys of at most MaxRSABits
//     (a huge modulus makes signature verification a CPU sink for a hostile client).
//   - The subject holds exactly one CN and one O attribute and nothing else, so a
//     second CN cannot hide behind the one Go's parser reports.
//   - Serving DNS SANs may not be wildcards, the API server's names (kubernetes,
//     kubernetes.default, kubernetes.default.svc...), any in-cluster Service or Pod
//     name (<a>.<b>.svc... or <a>.<b>.pod...), localhost, or anything that is not a
//     DNS-1123 subdomain once lowercased. Serving IP SANs may not be unspecified or
//     multicast addresses (loopback ones only where a policy's allowedCIDRs names
//     them: internal/policy).
package csr

import (
	"slices"
	"strings"

	certificatesv1 "k8s.io/api/certificates/v1"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
)

// The two signers the operator acts on (rule 2); every other signer is ignored.
const (
	// SignerClient issues kubelet client certificates (first bootstrap and renewal).
	SignerClient = certificatesv1.KubeAPIServerClientKubeletSignerName
	// SignerServing issues kubelet serving certificates.
	SignerServing = certificatesv1.KubeletServingSignerName
)

// Identity strings the API server gives kubelets and bootstrap-token users.
const (
	// NodeUserPrefix starts the username of a node: system:node:<name>.
	NodeUserPrefix = "system:node:"
	// NodesGroup is the group every node is in, and the only organization a kubelet
	// certificate may carry.
	NodesGroup = "system:nodes"
	// BootstrapUserPrefix starts the username of a bootstrap-token user: system:bootstrap:<id>.
	BootstrapUserPrefix = bootstrapapi.BootstrapUserPrefix
	// BootstrappersGroup is the group of every bootstrap-token user.
	BootstrappersGroup = bootstrapapi.BootstrapDefaultGroup
	// BootstrapperExtraGroupPrefix starts every extra group a bootstrap token may carry.
	BootstrapperExtraGroupPrefix = bootstrapapi.BootstrapDefaultGroup + ":"
)

// Kind is what a kubelet CSR asks for.
type Kind string

const (
	// KindClient is a first-bootstrap client certificate, requested with a bootstrap token.
	KindClient Kind = "client"
	// KindRenewal is a node renewing its own client certificate.
	KindRenewal Kind = "renewal"
	// KindServing is a node's serving certificate.
	KindServing Kind = "serving"
)

// Description is the human name of the kind, used in condition messages.
func (k Kind) Description() string {
	switch k {
	case KindClient:
		return "kubelet client certificate (first bootstrap)"
	case KindRenewal:
		return "kubelet client certificate (renewal)"
	case KindServing:
		return "kubelet serving certificate"
	default:
		return "unrecognised certificate request"
	}
}

// IsKubeletSigner reports whether signer is one of the two exact signer names.
func IsKubeletSigner(signer string) bool {
	return signer == SignerClient || signer == SignerServing
}

// Decided reports whether the CSR already has an Approved or Denied condition or a
// certificate (rule 1). A Failed condition counts too: it is only ever written
// after someone else acted on the CSR.
func Decided(c *certificatesv1.CertificateSigningRequest) bool {
	if c == nil {
		return false
	}
	if len(c.Status.Certificate) > 0 {
		return true
	}
	for i := range c.Status.Conditions {
		switch c.Status.Conditions[i].Type {
		case certificatesv1.CertificateApproved, certificatesv1.CertificateDenied, certificatesv1.CertificateFailed:
			return true
		}
	}
	return false
}

// Classify says which kind a CSR is from its signer and its requester identity
// (spec.username, spec.groups), never from the request's content:
//   - client signer, username system:bootstrap:<id> with a valid token id and group
//     system:bootstrappers: KindClient;
//   - client signer, username system:node:<name>: KindRenewal;
//   - serving signer: KindServing (whoever asks; Inspect checks the requester);
//   - anything else: ok is false.
func Classify(c *certificatesv1.CertificateSigningRequest) (kind Kind, ok bool) {
	if c == nil {
		return "", false
	}
	switch c.Spec.SignerName {
	case SignerClient:
		if id, found := strings.CutPrefix(c.Spec.Username, BootstrapUserPrefix); found {
			if validTokenID(id) && slices.Contains(c.Spec.Groups, BootstrappersGroup) {
				return KindClient, true
			}
			return "", false
		}
		if _, found := NodeNameFromUsername(c.Spec.Username); found {
			return KindRenewal, true
		}
	case SignerServing:
		return KindServing, true
	}
	return "", false
}

// NodeNameFromUsername returns <name> of a username system:node:<name>, and whether
// the username has that form with a non-empty name.
func NodeNameFromUsername(username string) (string, bool) {
	name, found := strings.CutPrefix(username, NodeUserPrefix)
	if !found || name == "" {
		return "", false
	}
	return name, true
}

// validTokenID reports whether id matches [a-z0-9]{6}, the id of a bootstrap token
// (k8s.io/cluster-bootstrap's BootstrapTokenIDPattern), without a regexp on the hot path.
func validTokenID(id string) bool {
	if len(id) != 6 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if !isLowerAlnum(id[i]) {
			return false
		}
	}
	return true
}

func isLowerAlnum(b byte) bool {
	return (b >= 'a' && b <= 'z') || (b >= '0' && b <= '9')
}

// IsDNS1123Subdomain reports whether s is a lowercase RFC 1123 subdomain as
// Kubernetes object names require (same as k8s.io/apimachinery's
// validation.IsDNS1123Subdomain, without its regexp and allocations).
func IsDNS1123Subdomain(s string) bool {
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	labelStart := 0
	for i := 0; i <= len(s); i++ {
		if i < len(s) && s[i] != '.' {
			b := s[i]
			if !isLowerAlnum(b) && b != '-' {
				return false
			}
			continue
		}
		// s[labelStart:i] is one label.
		if i == labelStart || s[labelStart] == '-' || s[i-1] == '-' {
			return false
		}
		labelStart = i + 1
	}
	return true
}
