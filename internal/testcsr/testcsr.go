// Package testcsr builds real, signed certificate signing requests for tests: table
// tests of the pure packages, envtest suites and e2e drivers alike. It is a regular
// package (not a _test.go file) so that every test package can import it; production
// code must not.
//
// Generating RSA keys takes tens of milliseconds, so one key per KeyType is generated
// on first use and reused by every later call. Tests that need a key of their own
// (for example one kubelet per node in an e2e test) pass Options.Signer.
package testcsr

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"sync"
	"testing"

	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// KeyType names a private key algorithm and size.
type KeyType string

// The key types tests need: the ones a kubelet uses, and weak ones the approver must refuse.
const (
	// RSA2048 is an RSA key of 2048 bits, the smallest the approver accepts.
	RSA2048 KeyType = "rsa2048"
	// RSA1024 is an RSA key of 1024 bits, too weak for the approver.
	RSA1024 KeyType = "rsa1024"
	// ECDSAP256 is an ECDSA key on P-256, what the kubelet generates; the default.
	ECDSAP256 KeyType = "ecdsa-p256"
	// ECDSAP384 is an ECDSA key on P-384.
	ECDSAP384 KeyType = "ecdsa-p384"
	// ECDSAP224 is an ECDSA key on P-224, a curve the approver refuses.
	ECDSAP224 KeyType = "ecdsa-p224"
	// Ed25519 is an Ed25519 key.
	Ed25519 KeyType = "ed25519"
)

// pemType is the only PEM block type a kubelet CSR may have.
const pemType = "CERTIFICATE REQUEST"

// Options describe the request. Zero values mean "leave out", except Key which
// defaults to ECDSAP256.
type Options struct {
	// Key selects the cached key to sign with; ignored when Signer is set.
	Key KeyType
	// Signer, when set, signs the request instead of the cached key of Key.
	Signer crypto.Signer
	// CommonName is the subject CN, for kubelets "system:node:<name>".
	CommonName string
	// Organization is the subject O, for kubelets ["system:nodes"].
	Organization []string
	// ExtraSubject adds raw subject attributes (a second CN, an OU...). A CN here
	// replaces CommonName, as crypto/x509 encodes only one of them.
	ExtraSubject []pkix.AttributeTypeAndValue
	// DNSNames are the DNS subject alternative names.
	DNSNames []string
	// IPs are the IP subject alternative names.
	IPs []net.IP
	// Emails are the email subject alternative names.
	Emails []string
	// URIs are the URI subject alternative names.
	URIs []*url.URL
}

var (
	keysMu sync.Mutex
	keys   = map[KeyType]crypto.Signer{}
)

// Key returns the cached private key of type t, generating it on first use.
func Key(t KeyType) (crypto.Signer, error) {
	if t == "" {
		t = ECDSAP256
	}
	keysMu.Lock()
	defer keysMu.Unlock()
	if k, ok := keys[t]; ok {
		return k, nil
	}
	k, err := generate(t)
	if err != nil {
		return nil, err
	}
	keys[t] = k
	return k, nil
}

func generate(t KeyType) (crypto.Signer, error) {
	switch t {
	case RSA2048:
		return rsa.GenerateKey(rand.Reader, 2048)
	case RSA1024:
		return rsa.GenerateKey(rand.Reader, 1024)
	case ECDSAP256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case ECDSAP384:
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case ECDSAP224:
		return ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	case Ed25519:
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	default:
		return nil, fmt.Errorf("testcsr: unknown key type %q", t)
	}
}

// NewPEM returns a PEM-encoded CSR signed with the requested key, and that key (only
// for tests that go on to use the signed certificate).
func NewPEM(o Options) (pemBytes []byte, key crypto.Signer, err error) {
	key = o.Signer
	if key == nil {
		if key, err = Key(o.Key); err != nil {
			return nil, nil, err
		}
	}
	tmpl := &x509.CertificateRequest{
		Subject:        pkix.Name{CommonName: o.CommonName, Organization: o.Organization, ExtraNames: o.ExtraSubject},
		DNSNames:       o.DNSNames,
		IPAddresses:    o.IPs,
		EmailAddresses: o.Emails,
		URIs:           o.URIs,
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, nil, fmt.Errorf("testcsr: create certificate request: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemType, Bytes: der}), key, nil
}

// MustPEM is NewPEM for tests: it fails tb on error and drops the key.
func MustPEM(tb testing.TB, o Options) []byte {
	tb.Helper()
	b, _, err := NewPEM(o)
	if err != nil {
		tb.Fatalf("testcsr: %v", err)
	}
	return b
}

// CorruptSignature returns a copy of a PEM CSR whose signature no longer verifies
// while the request still parses: the signature BIT STRING is the last element of
// the DER, so flipping the last byte changes the signature and nothing else.
func CorruptSignature(pemBytes []byte) ([]byte, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil || len(block.Bytes) == 0 {
		return nil, errors.New("testcsr: no pem block to corrupt")
	}
	der := slices.Clone(block.Bytes)
	der[len(der)-1] ^= 0xff
	return pem.EncodeToMemory(&pem.Block{Type: block.Type, Bytes: der}), nil
}

// Object builds a pending CertificateSigningRequest as the API server would store it
// after authenticating the requester: signer, requester identity (spec.username and
// spec.groups) and usages are taken as given.
func Object(name, signer, username string, groups []string, usages []certificatesv1.KeyUsage, pemBytes []byte) *certificatesv1.CertificateSigningRequest {
	return &certificatesv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: certificatesv1.CertificateSigningRequestSpec{
			Request:    slices.Clone(pemBytes),
			SignerName: signer,
			Username:   username,
			Groups:     slices.Clone(groups),
			Usages:     slices.Clone(usages),
		},
	}
}

// ClientUsages returns the usages a kubelet with an ECDSA key asks for on a client CSR.
func ClientUsages() []certificatesv1.KeyUsage {
	return []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth}
}

// ServingUsages returns the usages a kubelet with an ECDSA key asks for on a serving CSR.
func ServingUsages() []certificatesv1.KeyUsage {
	return []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageServerAuth}
}
