package e2e

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/tlsbootstrap/tls-bootstrap-operator/test/localcluster"
)

// The Deployment serves metrics over HTTPS and lets only scrapers through that the API
// server authenticates (TokenReview) and RBAC allows to get /metrics (SubjectAccessReview);
// the operator's own RBAC (config/rbac) must allow it both reviews.
var _ = Describe("The metrics endpoint as the Deployment serves it", Ordered, func() {
	var secure *localcluster.Operator

	BeforeAll(func(ctx SpecContext) {
		pauseSuiteOperator()
		var err error
		secure, err = cluster.StartOperator(ctx, localcluster.OperatorOptions{Name: "secure-metrics", SecureMetrics: true})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(secure.Stop)
		createPolicy(ctx, workerPolicy("scraped"))
	})

	It("refuses a scrape without a token (401) or by someone RBAC does not allow (403), and serves one the metrics-reader role allows", func(ctx SpecContext) {
		Expect(secure.MetricsURL).To(HavePrefix("https://"))

		By("no token")
		Eventually(func() (int, error) { status, _, err := scrape(ctx, secure.MetricsURL, ""); return status, err }).
			WithContext(ctx).Should(Equal(http.StatusUnauthorized))

		By("a token that authenticates, but for a user with no right to /metrics")
		denied := createBootstrapToken(ctx, time.Hour, "system:bootstrappers:not-a-scraper")
		Eventually(func() (int, error) { status, _, err := scrape(ctx, secure.MetricsURL, denied); return status, err }).
			WithContext(ctx).Should(Equal(http.StatusForbidden))

		By("a token of a group bound to config/rbac's metrics-reader, as Prometheus's ServiceAccount would be")
		const scrapers = "system:bootstrappers:scrapers"
		bindMetricsReader(ctx, scrapers)
		allowed := createBootstrapToken(ctx, time.Hour, scrapers)
		Eventually(func(g Gomega) {
			status, body, err := scrape(ctx, secure.MetricsURL, allowed)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(status).To(Equal(http.StatusOK))
			g.Expect(body).To(ContainSubstring(`tls_bootstrap_tokens{policy="scraped"} 1`))
		}).WithContext(ctx).Should(Succeed())
	})
})

// scrape GETs the metrics endpoint with a bearer token (none when empty). The manager
// serves a self-signed certificate unless one is mounted for it, so the certificate is
// not verified, as in config/prometheus's ServiceMonitor.
func scrape(ctx context.Context, url, token string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // the manager's self-signed certificate
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// bindMetricsReader creates config/rbac's metrics-reader ClusterRole and binds it to group,
// both deleted when the spec ends.
func bindMetricsReader(ctx context.Context, group string) {
	GinkgoHelper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "config", "rbac", "metrics_reader_role.yaml"))
	Expect(err).NotTo(HaveOccurred())
	role := &rbacv1.ClusterRole{}
	Expect(yaml.Unmarshal(raw, role)).To(Succeed())
	role.Name = "e2e-" + strings.ReplaceAll(group, ":", "-")
	_, err = adminClient.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(adminClient.RbacV1().ClusterRoles().Delete, role.Name, metav1.DeleteOptions{})
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: role.Name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: group}},
	}
	_, err = adminClient.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(adminClient.RbacV1().ClusterRoleBindings().Delete, crb.Name, metav1.DeleteOptions{})
}
