package localcluster

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// certValidity is long enough for any test run; clocks are shared, so no skew handling beyond a
// small backdating is needed.
const certValidity = 7 * 24 * time.Hour

// certAuthority is the cluster's client CA: the API server trusts it for client certificates and
// kube-controller-manager signs kubelet certificates with it, exactly as in a kubeadm cluster
// where both use /etc/kubernetes/pki/ca.{crt,key}.
type certAuthority struct {
	cert    *x509.Certificate
	key     crypto.Signer
	certPEM []byte
	keyPEM  []byte
}

func newCertAuthority(commonName string) (*certAuthority, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate ca key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(certValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("self-sign ca: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse ca: %w", err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	return &certAuthority{
		cert:    cert,
		key:     key,
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  keyPEM,
	}, nil
}

// clientCert issues a client certificate the API server maps to user and groups (CN and O).
func (ca *certAuthority) clientCert(user string, groups []string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate client key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: user, Organization: groups},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(certValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return nil, nil, fmt.Errorf("sign client certificate for %q: %w", user, err)
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM, nil
}

// writeFiles stores the CA where the API server (client-ca-file) and kube-controller-manager
// (cluster-signing-*-file) read it.
func (ca *certAuthority) writeFiles(dir string) (certFile, keyFile string, err error) {
	certFile = filepath.Join(dir, "client-ca.crt")
	keyFile = filepath.Join(dir, "client-ca.key")
	if err := os.WriteFile(certFile, ca.certPEM, 0o600); err != nil {
		return "", "", fmt.Errorf("write client ca certificate: %w", err)
	}
	if err := os.WriteFile(keyFile, ca.keyPEM, 0o600); err != nil {
		return "", "", fmt.Errorf("write client ca key: %w", err)
	}
	return certFile, keyFile, nil
}

func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

func randomSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generate serial number: %w", err)
	}
	return serial, nil
}

// caAuthn plugs the cluster's own client CA into envtest, replacing envtest's private one, so
// that certificates kube-controller-manager signs for kubelets authenticate at the API server.
type caAuthn struct {
	ca     *certAuthority
	caFile string
}

var _ envtest.Authn = &caAuthn{}

// Configure points the API server at the CA file, which Start already wrote.
func (a *caAuthn) Configure(_ string, args *envtest.Arguments) error {
	args.Set("client-ca-file", a.caFile)
	return nil
}

// Start has nothing to do: the CA file is written before envtest starts.
func (a *caAuthn) Start() error { return nil }

// AddUser is how envtest provisions its admin user: a certificate from the same CA.
func (a *caAuthn) AddUser(user envtest.User, baseCfg *rest.Config) (*rest.Config, error) {
	certPEM, keyPEM, err := a.ca.clientCert(user.Name, user.Groups)
	if err != nil {
		return nil, err
	}
	cfg := rest.CopyConfig(baseCfg)
	cfg.CertData = certPEM
	cfg.KeyData = keyPEM
	return cfg, nil
}

// Stop has nothing to do: the CA file lives in the work dir, which Cluster.Stop removes.
func (a *caAuthn) Stop() error { return nil }
