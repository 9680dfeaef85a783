package localcluster

import (
	"context"
	"fmt"
	"os"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Names used inside the kubeconfigs written here; kubeadm's bootstrap kubeconfig uses the same
// user name, which makes files from this harness look like the real thing when debugging.
const (
	kubeconfigCluster     = "local"
	kubeconfigUser        = "user"
	kubeconfigContext     = "local"
	bootstrapKubeconfigID = "tls-bootstrap-token-user"
)

// KubeconfigBytes renders cfg (server, CA, and client certificate, token or their files) as a
// kubeconfig with a single context.
func KubeconfigBytes(cfg *rest.Config) ([]byte, error) {
	return clientcmd.Write(*kubeconfigFromREST(cfg, kubeconfigUser))
}

// WriteKubeconfig writes cfg as a kubeconfig file (mode 0600: it holds credentials) for kubectl
// and child processes.
func (c *Cluster) WriteKubeconfig(cfg *rest.Config, path string) error {
	return WriteKubeconfig(cfg, path)
}

// WriteKubeconfig writes cfg as a kubeconfig file with mode 0600.
func WriteKubeconfig(cfg *rest.Config, path string) error {
	data, err := KubeconfigBytes(cfg)
	if err != nil {
		return fmt.Errorf("render kubeconfig: %w", err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("write kubeconfig %s: %w", path, err)
	}
	return nil
}

// BootstrapKubeconfig renders what a kubelet's --bootstrap-kubeconfig holds: the API server URL,
// the CA that signs its serving certificate, and a bootstrap token ("<id>.<secret>").
func BootstrapKubeconfig(server string, caPEM []byte, token string) ([]byte, error) {
	cfg := &rest.Config{Host: server, BearerToken: token}
	cfg.CAData = caPEM
	return clientcmd.Write(*kubeconfigFromREST(cfg, bootstrapKubeconfigID))
}

// ClusterInfoKubeconfig renders the kubeconfig kubeadm publishes in kube-public/cluster-info:
// one cluster with the server and its CA, no users and no contexts.
func ClusterInfoKubeconfig(server string, caPEM []byte) ([]byte, error) {
	return clientcmd.Write(clientcmdapi.Config{
		Clusters: map[string]*clientcmdapi.Cluster{
			"": {Server: server, CertificateAuthorityData: caPEM},
		},
	})
}

// RESTConfigFromKubeconfig loads a kubeconfig file, for example a kubelet's after bootstrap.
func RESTConfigFromKubeconfig(path string) (*rest.Config, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, fmt.Errorf("load kubeconfig %s: %w", path, err)
	}
	return cfg, nil
}

// WhoAmI asks the API server who cfg authenticates as (authentication.k8s.io/v1
// SelfSubjectReview, what `kubectl auth whoami` does).
func WhoAmI(ctx context.Context, cfg *rest.Config) (authenticationv1.UserInfo, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return authenticationv1.UserInfo{}, fmt.Errorf("build client: %w", err)
	}
	review, err := cs.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		return authenticationv1.UserInfo{}, fmt.Errorf("self subject review: %w", err)
	}
	return review.Status.UserInfo, nil
}

func kubeconfigFromREST(cfg *rest.Config, user string) *clientcmdapi.Config {
	return &clientcmdapi.Config{
		Clusters: map[string]*clientcmdapi.Cluster{
			kubeconfigCluster: {
				Server:                   cfg.Host,
				CertificateAuthorityData: cfg.CAData,
				CertificateAuthority:     cfg.CAFile,
				TLSServerName:            cfg.ServerName,
			},
		},
		AuthInfos: map[string]*clientcmdapi.AuthInfo{
			user: {
				ClientCertificateData: cfg.CertData,
				ClientCertificate:     cfg.CertFile,
				ClientKeyData:         cfg.KeyData,
				ClientKey:             cfg.KeyFile,
				Token:                 cfg.BearerToken,
				TokenFile:             cfg.BearerTokenFile,
			},
		},
		Contexts: map[string]*clientcmdapi.Context{
			kubeconfigContext: {Cluster: kubeconfigCluster, AuthInfo: user},
		},
		CurrentContext: kubeconfigContext,
	}
}
