// Package kubeconfig renders the bootstrap kubeconfig a kubelet reads with
// --bootstrap-kubeconfig (server, CA and the policy's current token), and finds the CA
// to put in it. It never talks to the API server.
package kubeconfig

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
	bootstraputil "k8s.io/cluster-bootstrap/token/util"

	"github.com/tlsbootstrap/tls-bootstrap-operator/api/v1alpha1"
	"github.com/tlsbootstrap/tls-bootstrap-operator/internal/render"
)

// Key is the key of the kubeconfig in the published Secret.
const Key = "bootstrap.kubeconfig"

// Names inside the rendered kubeconfig.
const (
	ClusterName = "default-cluster"
	UserName    = "tls-bootstrap"
	ContextName = "tls-bootstrap"
)

// RootCAKey is the key of the CA in the kube-root-ca.crt ConfigMap every namespace holds.
const RootCAKey = "ca.crt"

// Render returns a complete kubeconfig for kubelet TLS bootstrapping. The output is
// deterministic, so the controller can compare it with the published Secret byte for
// byte. Errors never contain the token.
func Render(server string, caPEM []byte, token string) ([]byte, error) {
	if err := validateServer(server); err != nil {
		return nil, err
	}
	if err := ValidateCA(caPEM); err != nil {
		return nil, err
	}
	if token == "" {
		return nil, errors.New("token is empty")
	}
	if !bootstraputil.IsValidBootstrapToken(token) {
		return nil, errors.New("token does not have the bootstrap token format")
	}
	cfg := clientcmdapi.Config{
		Clusters: map[string]*clientcmdapi.Cluster{
			ClusterName: {Server: server, CertificateAuthorityData: caPEM},
		},
		AuthInfos: map[string]*clientcmdapi.AuthInfo{
			UserName: {Token: token},
		},
		Contexts: map[string]*clientcmdapi.Context{
			ContextName: {Cluster: ClusterName, AuthInfo: UserName},
		},
		CurrentContext: ContextName,
	}
	data, err := clientcmd.Write(cfg)
	if err != nil {
		return nil, fmt.Errorf("serializing bootstrap kubeconfig: %w", err)
	}
	return data, nil
}

// TokenID returns the id part of the bootstrap token in a kubeconfig ("" when it holds
// none), so the controller can tell whether it follows the current token without
// handling the secret part.
func TokenID(data []byte) (string, error) {
	cfg, err := clientcmd.Load(data)
	if err != nil {
		return "", fmt.Errorf("loading kubeconfig: %w", err)
	}
	user := UserName
	if ctx, ok := cfg.Contexts[cfg.CurrentContext]; ok && ctx != nil {
		user = ctx.AuthInfo
	}
	auth, ok := cfg.AuthInfos[user]
	if !ok || auth == nil || !bootstraputil.IsValidBootstrapToken(auth.Token) {
		return "", nil
	}
	id, _, _ := strings.Cut(auth.Token, ".")
	return id, nil
}

// RenderSecret builds the Secret spec.kubeconfig.secretRef names, holding data under
// Key, with the operator's labels and the controller ownerReference (never the
// policy's own labels). It returns nil when the policy asks for no kubeconfig.
func RenderSecret(p *v1alpha1.BootstrapPolicy, data []byte) *corev1.Secret {
	if p.Spec.Kubeconfig == nil {
		return nil
	}
	ref := p.Spec.Kubeconfig.SecretRef
	return &corev1.Secret{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{
			Name:            ref.Name,
			Namespace:       ref.Namespace,
			Labels:          render.Labels(p.Name),
			OwnerReferences: []metav1.OwnerReference{render.OwnerReference(p)},
		},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{Key: data},
	}
}

// CAFromClusterInfo extracts the CA from the kube-public/cluster-info ConfigMap's
// "kubeconfig" key: the cluster of the current context, else the only cluster
// (kubeadm writes one cluster named "" and no context). It returns nil when the
// ConfigMap, the key or the CA is absent, and an error when what is there is not a
// kubeconfig or not PEM certificates, so the controller can fall back or report.
func CAFromClusterInfo(cm *corev1.ConfigMap) ([]byte, error) {
	if cm == nil || cm.Data[bootstrapapi.KubeConfigKey] == "" {
		return nil, nil
	}
	cfg, err := clientcmd.Load([]byte(cm.Data[bootstrapapi.KubeConfigKey]))
	if err != nil {
		return nil, fmt.Errorf("loading %s/%s: %w", cm.Namespace, cm.Name, err)
	}
	var cluster *clientcmdapi.Cluster
	if ctx, ok := cfg.Contexts[cfg.CurrentContext]; ok && ctx != nil {
		cluster = cfg.Clusters[ctx.Cluster]
	} else if len(cfg.Clusters) == 1 {
		for _, c := range cfg.Clusters {
			cluster = c
		}
	} else if len(cfg.Clusters) > 1 {
		return nil, fmt.Errorf("%s/%s holds %d clusters and no current context", cm.Namespace, cm.Name, len(cfg.Clusters))
	}
	if cluster == nil || len(cluster.CertificateAuthorityData) == 0 {
		return nil, nil
	}
	if err := ValidateCA(cluster.CertificateAuthorityData); err != nil {
		return nil, fmt.Errorf("%s/%s: %w", cm.Namespace, cm.Name, err)
	}
	return cluster.CertificateAuthorityData, nil
}

// CAFromRootCA extracts the CA from a kube-root-ca.crt ConfigMap (nil if absent), the
// fallback when cluster-info is missing.
func CAFromRootCA(cm *corev1.ConfigMap) ([]byte, error) {
	if cm == nil || cm.Data[RootCAKey] == "" {
		return nil, nil
	}
	ca := []byte(cm.Data[RootCAKey])
	if err := ValidateCA(ca); err != nil {
		return nil, fmt.Errorf("%s/%s: %w", cm.Namespace, cm.Name, err)
	}
	return ca, nil
}

// ValidateCA checks that caPEM holds one or more PEM certificates and no other PEM
// block: a kubelet given no usable CA fails with an opaque TLS error on its first
// connection, and a private key pasted into a CA bundle must not be published.
// Text outside PEM blocks is ignored, as client-go does.
func ValidateCA(caPEM []byte) error {
	if len(caPEM) == 0 {
		return errors.New("certificate authority is empty")
	}
	rest, n := caPEM, 0
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return fmt.Errorf("certificate authority holds a PEM block of type %q, want only CERTIFICATE", block.Type)
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return fmt.Errorf("parsing certificate authority: %w", err)
		}
		n++
	}
	if n == 0 {
		return errors.New("certificate authority holds no PEM certificate")
	}
	return nil
}

// validateServer refuses anything but an https URL with a host: over http, the
// kubelet would send the bootstrap token in clear text.
func validateServer(server string) error {
	if server == "" {
		return errors.New("server is empty")
	}
	u, err := url.Parse(server)
	if err != nil {
		return fmt.Errorf("parsing server: %w", err)
	}
	if u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("server %q is not an https URL", server)
	}
	return nil
}
