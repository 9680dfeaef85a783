package controllers

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/tlsbootstrap/tls-bootstrap-operator/api/v1alpha1"
	"github.com/tlsbootstrap/tls-bootstrap-operator/internal/csr"
)

// TrimNode is the cache transform for Nodes: the serving checks read only the name,
// the Ready condition and status.addresses, so images, volumes and managedFields,
// the bulk of a Node, are dropped before they reach memory.
func TrimNode(o any) (any, error) {
	n, ok := o.(*corev1.Node)
	if !ok {
		return o, nil
	}
	n.ManagedFields = nil
	n.Annotations = nil
	n.Status.Images = nil
	n.Status.VolumesAttached = nil
	n.Status.VolumesInUse = nil
	n.Status.Capacity, n.Status.Allocatable = nil, nil
	n.Status.NodeInfo = corev1.NodeSystemInfo{}
	n.Status.Features = nil
	n.Status.RuntimeHandlers = nil
	n.Status.DeclaredFeatures = nil
	return n, nil
}

// TrimCSR is the cache transform for CSRs: managedFields always go, and so does the
// request of a CSR that already carries a decision (nothing reads it again).
func TrimCSR(o any) (any, error) {
	c, ok := o.(*certificatesv1.CertificateSigningRequest)
	if !ok {
		return o, nil
	}
	c.ManagedFields = nil
	if csr.Decided(c) {
		c.Spec.Request = nil
		c.Annotations = nil
	}
	return c, nil
}

// csrCollector exports, at scrape time and from the cache, the pending kubelet CSRs by
// kind and the expiry of each node's newest issued client and serving certificate.
type csrCollector struct {
	reader  client.Reader
	pending *prometheus.Desc
	oldest  *prometheus.Desc
	expiry  *prometheus.Desc

	mu     sync.Mutex
	parsed map[types.UID]issued // issued certificates, parsed once
}

func registerCSRCollector(c client.Reader) error {
	return registerCollector(newCSRCollector(c))
}

func newCSRCollector(c client.Reader) *csrCollector {
	return &csrCollector{
		reader:  c,
		pending: prometheus.NewDesc(MetricPendingCSRs, "Pending kubelet CSRs by kind.", []string{"kind"}, nil),
		oldest: prometheus.NewDesc(MetricOldestPendingCSR,
			"Unix time at which the oldest pending kubelet CSR of a kind was created; absent when none is pending.", []string{"kind"}, nil),
		expiry: prometheus.NewDesc(MetricCertExpiry,
			"Unix time at which a node's newest certificate issued by a kubelet signer expires.", []string{"node", "kind"}, nil),
		parsed: map[types.UID]issued{},
	}
}

func registerCollector(col prometheus.Collector) error {
	if err := metrics.Registry.Register(col); err != nil {
		if !errors.As(err, &prometheus.AlreadyRegisteredError{}) {
			return fmt.Errorf("registering csr collector: %w", err)
		}
	}
	return nil
}

// Describe implements prometheus.Collector.
func (c *csrCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.pending
	ch <- c.oldest
	ch <- c.expiry
}

// Collect implements prometheus.Collector.
func (c *csrCollector) Collect(ch chan<- prometheus.Metric) {
	var list certificatesv1.CertificateSigningRequestList
	// Read-only, and over every CSR of the cluster on every scrape: a deep copy of each
	// would be the operator's largest allocation with thousands of CSRs present.
	if err := c.reader.List(context.Background(), &list, client.UnsafeDisableDeepCopy); err != nil {
		return // the cache is not started yet; the next scrape will have it
	}
	pending := map[csr.Kind]int{csr.KindClient: 0, csr.KindRenewal: 0, csr.KindServing: 0}
	oldest := map[csr.Kind]time.Time{}
	type key struct{ node, kind string }
	newest := map[key]time.Time{}
	seen := map[types.UID]bool{}
	c.mu.Lock()
	for i := range list.Items {
		o := &list.Items[i]
		if !csr.IsKubeletSigner(o.Spec.SignerName) {
			continue
		}
		if !csr.Decided(o) {
			if kind, ok := csr.Classify(o); ok {
				pending[kind]++
				if t, seen := oldest[kind]; !seen || o.CreationTimestamp.Time.Before(t) {
					oldest[kind] = o.CreationTimestamp.Time
				}
			}
			continue
		}
		if len(o.Status.Certificate) == 0 {
			continue
		}
		seen[o.UID] = true
		cert, ok := c.parsed[o.UID]
		if !ok {
			cert = parseIssued(o.Status.Certificate)
			c.parsed[o.UID] = cert
		}
		k := key{node: cert.node, kind: "client"}
		if o.Spec.SignerName == csr.SignerServing {
			k.kind = "serving"
		}
		if k.node != "" && cert.notAfter.After(newest[k]) {
			newest[k] = cert.notAfter
		}
	}
	for uid := range c.parsed {
		if !seen[uid] {
			delete(c.parsed, uid) // the CSR was cleaned up
		}
	}
	c.mu.Unlock()
	for kind, n := range pending {
		ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(n), string(kind))
	}
	for kind, t := range oldest {
		ch <- prometheus.MustNewConstMetric(c.oldest, prometheus.GaugeValue, float64(t.Unix()), string(kind))
	}
	for k, t := range newest {
		ch <- prometheus.MustNewConstMetric(c.expiry, prometheus.GaugeValue, float64(t.Unix()), k.node, k.kind)
	}
}

// issued is what the metrics need of a signed certificate: whose it is, and until when.
type issued struct {
	node     string
	notAfter time.Time
}

// parseIssued reads the leaf certificate the signer issued; the node name comes from
// its subject, which the signer copied from a request that passed the hard rules.
func parseIssued(pemBytes []byte) issued {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return issued{}
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return issued{}
	}
	node, ok := strings.CutPrefix(cert.Subject.CommonName, "system:node:")
	if !ok {
		return issued{}
	}
	return issued{node: node, notAfter: cert.NotAfter}
}

// CacheOptions keeps the informers small: Secrets and RBAC objects only where the
// operator put them (by label), never every Secret of the cluster, and no managedFields.
func CacheOptions() cache.Options {
	managed := labels.SelectorFromSet(labels.Set{v1alpha1.ManagedByLabel: v1alpha1.ManagedByValue})
	return cache.Options{
		DefaultTransform: cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Secret{}:                            {Label: managed},
			&rbacv1.ClusterRole{}:                       {Label: managed},
			&rbacv1.ClusterRoleBinding{}:                {Label: managed},
			&corev1.Node{}:                              {Transform: TrimNode},
			&certificatesv1.CertificateSigningRequest{}: {Transform: TrimCSR},
			// Only default/kubernetes: the API server's own IPs, refused as kubelet serving SANs.
			&corev1.Service{}: {Namespaces: map[string]cache.Config{metav1.NamespaceDefault: {}},
				Field: fields.OneTermEqualSelector("metadata.name", "kubernetes")},
			&discoveryv1.EndpointSlice{}: {Namespaces: map[string]cache.Config{metav1.NamespaceDefault: {}},
				Label: labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: "kubernetes"})},
		},
	}
}
