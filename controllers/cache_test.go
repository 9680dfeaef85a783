package controllers

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/tlsbootstrap/tls-bootstrap-operator/internal/testcsr"
)

// issuedCert is what the signer puts in status.certificate: a certificate for the node.
func issuedCert(t *testing.T, node string, notAfter time.Time) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: notAfter.Add(-time.Hour), NotAfter: notAfter,
		Subject: pkix.Name{CommonName: "system:node:" + node, Organization: []string{"system:nodes"}}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestCSRCollectorExportsPendingAndNodeCertificateExpiry(t *testing.T) {
	pemBytes := testcsr.MustPEM(t, testcsr.Options{CommonName: "system:node:n2", Organization: []string{"system:nodes"}})
	created := time.Unix(1_800_000_000, 0).UTC()
	csr := func(name, signer, user string, groups []string) *certificatesv1.CertificateSigningRequest {
		c := testcsr.Object(name, signer, user, groups, testcsr.ClientUsages(), pemBytes)
		c.UID = types.UID(name)
		created = created.Add(time.Minute) // each CSR a minute younger than the one before
		c.CreationTimestamp = metav1.NewTime(created)
		return c
	}
	issue := func(c *certificatesv1.CertificateSigningRequest, cert []byte) *certificatesv1.CertificateSigningRequest {
		c.Status.Conditions = []certificatesv1.CertificateSigningRequestCondition{{Type: certificatesv1.CertificateApproved, Status: corev1.ConditionTrue}}
		c.Status.Certificate = cert
		return c
	}
	oldClient := time.Unix(1_900_000_000, 0).UTC()
	newClient := oldClient.Add(24 * time.Hour)
	serving := oldClient.Add(48 * time.Hour)
	bootstrap := []string{"system:bootstrappers", "system:bootstrappers:workers"}
	nodes := []string{"system:nodes"}
	objs := []runtime.Object{
		csr("pending-client", certificatesv1.KubeAPIServerClientKubeletSignerName, "system:bootstrap:abcdef", bootstrap),
		csr("pending-client-2", certificatesv1.KubeAPIServerClientKubeletSignerName, "system:bootstrap:abcdef", bootstrap),
		csr("pending-renewal", certificatesv1.KubeAPIServerClientKubeletSignerName, "system:node:n2", nodes),
		issue(csr("old-client", certificatesv1.KubeAPIServerClientKubeletSignerName, "system:bootstrap:abcdef", bootstrap), issuedCert(t, "n1", oldClient)),
		issue(csr("new-client", certificatesv1.KubeAPIServerClientKubeletSignerName, "system:node:n1", nodes), issuedCert(t, "n1", newClient)),
		issue(csr("serving", certificatesv1.KubeletServingSignerName, "system:node:n1", nodes), issuedCert(t, "n1", serving)),
		csr("other-signer", certificatesv1.KubeAPIServerClientSignerName, "alice", nil),
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	col := newCSRCollector(fake.NewClientBuilder().WithScheme(scheme).WithRuntimeObjects(objs...).Build())

	want := fmt.Sprintf(`
# HELP %[1]s Pending kubelet CSRs by kind.
# TYPE %[1]s gauge
%[1]s{kind="client"} 2
%[1]s{kind="renewal"} 1
%[1]s{kind="serving"} 0
# HELP %[2]s Unix time at which a node's newest certificate issued by a kubelet signer expires.
# TYPE %[2]s gauge
%[2]s{kind="client",node="n1"} %[3]d
%[2]s{kind="serving",node="n1"} %[4]d
# HELP %[5]s Unix time at which the oldest pending kubelet CSR of a kind was created; absent when none is pending.
# TYPE %[5]s gauge
%[5]s{kind="client"} %[6]d
%[5]s{kind="renewal"} %[7]d
`, MetricPendingCSRs, MetricCertExpiry, newClient.Unix(), serving.Unix(),
		MetricOldestPendingCSR, objs[0].(metav1.Object).GetCreationTimestamp().Unix(), objs[2].(metav1.Object).GetCreationTimestamp().Unix())
	if err := testutil.CollectAndCompare(col, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
}
