package kubeconfig

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/diff"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"

	"github.com/tlsbootstrap/tls-bootstrap-operator/api/v1alpha1"
)

const (
	server = "https://k8s-api.example:6443"
	token  = "abcdef.0123456789abcdef"
)

// selfSignedCA returns a fresh self-signed CA certificate and its key, both PEM.
func selfSignedCA(t *testing.T, cn string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("generating key: %v", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("creating certificate: %v", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatalf("marshalling key: %v", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}

func TestRender(t *testing.T) {
	ca, key := selfSignedCA(t, "kubernetes")
	other, _ := selfSignedCA(t, "next-kubernetes")
	cases := map[string]struct {
		server, token string
		ca            []byte
		wantErr       string
	}{
		"one CA gives a kubeconfig the kubelet can use":             {server: server, ca: ca, token: token},
		"a bundle of two CAs during a CA rotation is kept as given": {server: server, ca: append(append([]byte{}, ca...), other...), token: token},
		"an empty server is refused":                                {ca: ca, token: token, wantErr: "server is empty"},
		"an http server is refused, since it would send the token in clear": {
			server: "http://k8s-api:6443", ca: ca, token: token, wantErr: "not an https URL",
		},
		"an empty CA is refused":          {server: server, token: token, wantErr: "certificate authority is empty"},
		"a CA that is not PEM is refused": {server: server, ca: []byte("not a certificate"), token: token, wantErr: "no PEM certificate"},
		"a private key in the CA bundle is refused": {
			server: server, ca: append(append([]byte{}, ca...), key...), token: token, wantErr: `type "EC PRIVATE KEY"`,
		},
		"a PEM certificate block holding garbage is refused": {
			server: server, ca: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("garbage")}), token: token,
			wantErr: "parsing certificate authority",
		},
		"an empty token is refused": {server: server, ca: ca, wantErr: "token is empty"},
		"a malformed token is refused without being echoed": {
			server: server, ca: ca, token: "abcdef.SECRETSECRETSECRE", wantErr: "bootstrap token format",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			data, err := Render(tc.server, tc.ca, tc.token)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
				}
				if tc.token != "" && strings.Contains(err.Error(), strings.Split(tc.token, ".")[1]) {
					t.Errorf("error %q contains the token secret", err)
				}
				if bytes.Contains([]byte(err.Error()), key[40:80]) {
					t.Errorf("error %q contains key material", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Render: %v", err)
			}
			cfg, err := clientcmd.Load(data)
			if err != nil {
				t.Fatalf("clientcmd.Load: %v", err)
			}
			if cfg.CurrentContext != "tls-bootstrap" {
				t.Errorf("current-context = %q", cfg.CurrentContext)
			}
			ctx := cfg.Contexts["tls-bootstrap"]
			if ctx == nil || ctx.Cluster != "default-cluster" || ctx.AuthInfo != "tls-bootstrap" {
				t.Errorf("context tls-bootstrap = %+v", ctx)
			}
			rc, err := clientcmd.NewDefaultClientConfig(*cfg, &clientcmd.ConfigOverrides{}).ClientConfig()
			if err != nil {
				t.Fatalf("ClientConfig: %v", err)
			}
			if rc.Host != tc.server || !bytes.Equal(rc.CAData, tc.ca) || rc.BearerToken != tc.token {
				t.Errorf("rest config host %q, CA %d bytes, token set %v; want %q, %d bytes, the token",
					rc.Host, len(rc.CAData), rc.BearerToken == tc.token, tc.server, len(tc.ca))
			}
			again, err := Render(tc.server, tc.ca, tc.token)
			if err != nil || !bytes.Equal(again, data) {
				t.Errorf("a second render differs: the controller could not compare bytes")
			}
		})
	}
}

func TestTokenID(t *testing.T) {
	ca, _ := selfSignedCA(t, "kubernetes")
	rendered, err := Render(server, ca, token)
	if err != nil {
		t.Fatalf("Render: %v", err)
	}
	write := func(cfg clientcmdapi.Config) []byte {
		data, err := clientcmd.Write(cfg)
		if err != nil {
			t.Fatalf("clientcmd.Write: %v", err)
		}
		return data
	}
	cases := map[string]struct {
		data    []byte
		want    string
		wantErr bool
	}{
		"a rendered kubeconfig gives the token id": {data: rendered, want: "abcdef"},
		"a kubeconfig whose user has a client certificate and no token gives none": {
			data: write(clientcmdapi.Config{
				AuthInfos:      map[string]*clientcmdapi.AuthInfo{"tls-bootstrap": {ClientCertificateData: ca}},
				Contexts:       map[string]*clientcmdapi.Context{"tls-bootstrap": {AuthInfo: "tls-bootstrap"}},
				CurrentContext: "tls-bootstrap",
			}),
		},
		"a token that is not a bootstrap token gives none": {
			data: write(clientcmdapi.Config{AuthInfos: map[string]*clientcmdapi.AuthInfo{"tls-bootstrap": {Token: "some-service-account-jwt"}}}),
		},
		"the current context's user is read, whatever its name": {
			data: write(clientcmdapi.Config{
				AuthInfos: map[string]*clientcmdapi.AuthInfo{
					"tls-bootstrap": {Token: "zzzzzz.zzzzzzzzzzzzzzzz"},
					"kubelet":       {Token: "qwerty.0123456789abcdef"},
				},
				Contexts:       map[string]*clientcmdapi.Context{"main": {AuthInfo: "kubelet"}},
				CurrentContext: "main",
			}),
			want: "qwerty",
		},
		"an empty kubeconfig gives none":               {data: []byte{}},
		"bytes that are not a kubeconfig are an error": {data: []byte("{not yaml: ["), wantErr: true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := TokenID(tc.data)
			if (err != nil) != tc.wantErr {
				t.Fatalf("error = %v, want error %v", err, tc.wantErr)
			}
			if got != tc.want {
				t.Errorf("TokenID = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestRenderSecret(t *testing.T) {
	withKubeconfig := func(p *v1alpha1.BootstrapPolicy) {
		p.Spec.Kubeconfig = &v1alpha1.KubeconfigSpec{
			Server:    server,
			SecretRef: v1alpha1.SecretReference{Namespace: "node-provisioning", Name: "workers-bootstrap"},
		}
	}
	cases := map[string]struct {
		mutate func(*v1alpha1.BootstrapPolicy)
		want   *corev1.Secret
	}{
		"the Secret at secretRef holds the kubeconfig, the operator's labels and the ownerRef only": {
			mutate: withKubeconfig,
			want: &corev1.Secret{
				TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
				ObjectMeta: metav1.ObjectMeta{
					Name: "workers-bootstrap", Namespace: "node-provisioning",
					Labels: map[string]string{
						"app.kubernetes.io/managed-by":     "tls-bootstrap-operator",
						"bootstrap.tlsbootstrap.io/policy": "workers",
					},
					OwnerReferences: []metav1.OwnerReference{{
						APIVersion: "bootstrap.tlsbootstrap.io/v1alpha1", Kind: "BootstrapPolicy", Name: "workers",
						UID: "uid-workers", Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true),
					}},
				},
				Type: corev1.SecretTypeOpaque,
				Data: map[string][]byte{"bootstrap.kubeconfig": []byte("kubeconfig bytes")},
			},
		},
		"a policy without spec.kubeconfig renders no Secret": {mutate: func(*v1alpha1.BootstrapPolicy) {}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			p := &v1alpha1.BootstrapPolicy{ObjectMeta: metav1.ObjectMeta{
				Name: "workers", UID: "uid-workers",
				Labels:      map[string]string{"app.kubernetes.io/instance": "cluster-config"},
				Annotations: map[string]string{"argocd.argoproj.io/tracking-id": "cluster-config:x"},
			}}
			tc.mutate(p)
			got := RenderSecret(p, []byte("kubeconfig bytes"))
			if !equality.Semantic.DeepEqual(got, tc.want) {
				t.Errorf("Secret differs (-want +got):\n%s", diff.Diff(tc.want, got))
			}
		})
	}
}

func TestCAFromClusterInfo(t *testing.T) {
	ca, _ := selfSignedCA(t, "kubernetes")
	other, _ := selfSignedCA(t, "other")
	kubeconfig := func(cfg clientcmdapi.Config) *corev1.ConfigMap {
		data, err := clientcmd.Write(cfg)
		if err != nil {
			t.Fatalf("clientcmd.Write: %v", err)
		}
		return &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Namespace: "kube-public", Name: "cluster-info"},
			Data:       map[string]string{"kubeconfig": string(data)},
		}
	}
	cases := map[string]struct {
		cm      *corev1.ConfigMap
		want    []byte
		wantErr string
	}{
		"kubeadm's cluster-info, one unnamed cluster and no context, gives its CA": {
			cm:   kubeconfig(clientcmdapi.Config{Clusters: map[string]*clientcmdapi.Cluster{"": {Server: server, CertificateAuthorityData: ca}}}),
			want: ca,
		},
		"the current context's cluster wins among several": {
			cm: kubeconfig(clientcmdapi.Config{
				Clusters: map[string]*clientcmdapi.Cluster{
					"a": {Server: server, CertificateAuthorityData: other},
					"b": {Server: server, CertificateAuthorityData: ca},
				},
				Contexts:       map[string]*clientcmdapi.Context{"ctx": {Cluster: "b"}},
				CurrentContext: "ctx",
			}),
			want: ca,
		},
		"several clusters and no context are ambiguous": {
			cm: kubeconfig(clientcmdapi.Config{Clusters: map[string]*clientcmdapi.Cluster{
				"a": {Server: server, CertificateAuthorityData: other},
				"b": {Server: server, CertificateAuthorityData: ca},
			}}),
			wantErr: "2 clusters",
		},
		"a cluster without CA data gives nil": {
			cm: kubeconfig(clientcmdapi.Config{Clusters: map[string]*clientcmdapi.Cluster{"": {Server: server}}}),
		},
		"a CA that is not a certificate is an error": {
			cm:      kubeconfig(clientcmdapi.Config{Clusters: map[string]*clientcmdapi.Cluster{"": {Server: server, CertificateAuthorityData: []byte("nope")}}}),
			wantErr: "no PEM certificate",
		},
		"a kubeconfig key that does not parse is an error": {
			cm:      &corev1.ConfigMap{Data: map[string]string{"kubeconfig": "{clusters: ["}},
			wantErr: "loading",
		},
		"a ConfigMap without the kubeconfig key gives nil": {cm: &corev1.ConfigMap{Data: map[string]string{"other": "x"}}},
		"no ConfigMap gives nil":                           {},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := CAFromClusterInfo(tc.cm)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("CAFromClusterInfo: %v", err)
			}
			if !bytes.Equal(got, tc.want) {
				t.Errorf("CA = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestCAFromRootCA(t *testing.T) {
	ca, _ := selfSignedCA(t, "kubernetes")
	cases := map[string]struct {
		cm      *corev1.ConfigMap
		want    []byte
		wantErr bool
	}{
		"kube-root-ca.crt gives its ca.crt":    {cm: &corev1.ConfigMap{Data: map[string]string{"ca.crt": string(ca)}}, want: ca},
		"a ConfigMap without ca.crt gives nil": {cm: &corev1.ConfigMap{}},
		"no ConfigMap gives nil":               {},
		"a ca.crt that is not PEM is an error": {cm: &corev1.ConfigMap{Data: map[string]string{"ca.crt": "x"}}, wantErr: true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := CAFromRootCA(tc.cm)
			if (err != nil) != tc.wantErr {
				t.Fatalf("error = %v, want error %v", err, tc.wantErr)
			}
			if !bytes.Equal(got, tc.want) {
				t.Errorf("CA = %q, want %q", got, tc.want)
			}
			if got != nil {
				if _, err := Render(server, got, token); err != nil {
					t.Errorf("Render refuses the CA: %v", err)
				}
			}
		})
	}
}
