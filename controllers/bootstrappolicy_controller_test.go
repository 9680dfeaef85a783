package controllers_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/yaml"

	"github.com/tlsbootstrap/tls-bootstrap-operator/controllers"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	authenticationv1 "k8s.io/api/authentication/v1"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tlsbootstrap/tls-bootstrap-operator/api/v1alpha1"
	"github.com/tlsbootstrap/tls-bootstrap-operator/internal/kubeconfig"
	"github.com/tlsbootstrap/tls-bootstrap-operator/internal/testcsr"
)

// newPolicy is a valid policy with the schema's defaults spelled out, as the API
// server would store it.
func newPolicy(name string, mutate ...func(*v1alpha1.BootstrapPolicy)) *v1alpha1.BootstrapPolicy {
	p := &v1alpha1.BootstrapPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.BootstrapPolicySpec{
			Groups: []string{"system:bootstrappers:" + name},
			Token: v1alpha1.TokenSpec{
				TTL:    metav1.Duration{Duration: 24 * time.Hour},
				Usages: []v1alpha1.TokenUsage{v1alpha1.UsageAuthentication},
			},
			Approval: v1alpha1.ApprovalSpec{
				Approver: v1alpha1.ApproverOperator, Mode: v1alpha1.ModeEnforce, OnViolation: v1alpha1.ViolationDeny,
				MaxPendingPerNode: 3,
				Client:            v1alpha1.ClientApproval{Enabled: true},
				Renewal:           v1alpha1.RenewalApproval{Enabled: true},
			},
		},
	}
	for _, m := range mutate {
		m(p)
	}
	return p
}

func getPolicy(g Gomega, name string) *v1alpha1.BootstrapPolicy {
	p := &v1alpha1.BootstrapPolicy{}
	g.Expect(admin.Get(context.Background(), client.ObjectKey{Name: name}, p)).To(Succeed())
	return p
}

// readyPolicy waits until the policy is Ready for its current generation.
func readyPolicy(name string) *v1alpha1.BootstrapPolicy {
	var p *v1alpha1.BootstrapPolicy
	Eventually(func(g Gomega) {
		p = getPolicy(g, name)
		g.Expect(p.Status.ObservedGeneration).To(Equal(p.Generation))
		g.Expect(meta.IsStatusConditionTrue(p.Status.Conditions, v1alpha1.ConditionReady)).To(BeTrue(), "%+v", p.Status.Conditions)
	}).Should(Succeed())
	return p
}

func tokenSecret(ctx context.Context, id string) (*corev1.Secret, error) {
	s := &corev1.Secret{}
	err := admin.Get(ctx, client.ObjectKey{Namespace: metav1.NamespaceSystem, Name: "bootstrap-token-" + id}, s)
	return s, err
}

func tokenString(s *corev1.Secret) string {
	return string(s.Data["token-id"]) + "." + string(s.Data["token-secret"])
}

// whoAmI asks the API server who a bearer token is, as the kubelet would be seen.
func whoAmI(ctx context.Context, token string) (authenticationv1.UserInfo, error) {
	cfg := rest.AnonymousClientConfig(adminCfg)
	cfg.BearerToken = token
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return authenticationv1.UserInfo{}, err
	}
	r, err := cs.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		return authenticationv1.UserInfo{}, err
	}
	return r.Status.UserInfo, nil
}

func publishClusterInfo(ctx context.Context) {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[""] = &clientcmdapi.Cluster{Server: adminCfg.Host, CertificateAuthorityData: adminCfg.CAData}
	raw, err := clientcmd.Write(*cfg)
	Expect(err).NotTo(HaveOccurred())
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: metav1.NamespacePublic, Name: "cluster-info"},
		Data:       map[string]string{"kubeconfig": string(raw)},
	}
	if err := admin.Create(ctx, cm); !apierrors.IsAlreadyExists(err) {
		Expect(err).NotTo(HaveOccurred())
	}
}

func ensureNamespace(ctx context.Context, name string) {
	err := admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}})
	if !apierrors.IsAlreadyExists(err) {
		Expect(err).NotTo(HaveOccurred())
	}
}

// poke makes the controller look again after the fake clock moved: real deployments
// get there by RequeueAfter, which runs on real time.
func poke(ctx context.Context, name string) {
	p := &v1alpha1.BootstrapPolicy{}
	Expect(admin.Get(ctx, client.ObjectKey{Name: name}, p)).To(Succeed())
	patch := client.MergeFrom(p.DeepCopy())
	metav1.SetMetaDataAnnotation(&p.ObjectMeta, "test.tlsbootstrap.io/poke", time.Now().Format(time.RFC3339Nano))
	Expect(admin.Patch(ctx, p, patch)).To(Succeed())
}

func kubeconfigToken(g Gomega, ctx context.Context, ns, name string) (string, *rest.Config) {
	s := &corev1.Secret{}
	g.Expect(admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, s)).To(Succeed())
	cfg, err := clientcmd.RESTConfigFromKubeConfig(s.Data[kubeconfig.Key])
	g.Expect(err).NotTo(HaveOccurred())
	return cfg.BearerToken, cfg
}

var _ = Describe("BootstrapPolicy reconciler", func() {
	ctx := context.Background()

	BeforeEach(func() {
		publishClusterInfo(ctx)
		ensureNamespace(ctx, "node-provisioning")
	})

	It("mints a token that authenticates with the policy's groups and publishes a kubeconfig that can ask for a certificate", func() {
		p := newPolicy("join", func(p *v1alpha1.BootstrapPolicy) {
			p.Spec.Kubeconfig = &v1alpha1.KubeconfigSpec{Server: adminCfg.Host,
				SecretRef: v1alpha1.SecretReference{Namespace: "node-provisioning", Name: "join-bootstrap"}}
		})
		Expect(admin.Create(ctx, p)).To(Succeed())
		DeferCleanup(admin.Delete, ctx, p)
		p = readyPolicy("join")

		Expect(p.Status.Tokens).To(HaveLen(1))
		id := p.Status.Tokens[0].ID
		Expect(p.Status.Tokens[0].SecretName).To(Equal("bootstrap-token-" + id))
		Expect(p.Status.KubeconfigSecret).To(Equal("node-provisioning/join-bootstrap"))
		s, err := tokenSecret(ctx, id)
		Expect(err).NotTo(HaveOccurred())
		Expect(s.Type).To(Equal(corev1.SecretType("bootstrap.kubernetes.io/token")))
		Expect(s.OwnerReferences).To(ConsistOf(HaveField("UID", p.UID)))

		user, err := whoAmI(ctx, tokenString(s))
		Expect(err).NotTo(HaveOccurred())
		Expect(user.Username).To(Equal("system:bootstrap:" + id))
		Expect(user.Groups).To(ContainElements("system:bootstrappers", "system:bootstrappers:join"))

		var cfg *rest.Config
		Eventually(func(g Gomega) {
			var tok string
			tok, cfg = kubeconfigToken(g, ctx, "node-provisioning", "join-bootstrap")
			g.Expect(tok).To(Equal(tokenString(s)))
		}).Should(Succeed())
		kc := &corev1.Secret{}
		Expect(admin.Get(ctx, client.ObjectKey{Namespace: "node-provisioning", Name: "join-bootstrap"}, kc)).To(Succeed())
		Expect(kc.OwnerReferences).To(ConsistOf(HaveField("UID", p.UID)))
		Expect(kc.Labels).To(HaveKeyWithValue(v1alpha1.PolicyLabel, "join"))
		// The kubeconfig alone, as a kubelet would use it: the rendered node-bootstrapper
		// binding lets it create its CSR.
		cs, err := kubernetes.NewForConfig(cfg)
		Expect(err).NotTo(HaveOccurred())
		pemBytes, _, err := testcsr.NewPEM(testcsr.Options{Key: testcsr.ECDSAP256, CommonName: "system:node:join-1", Organization: []string{"system:nodes"}})
		Expect(err).NotTo(HaveOccurred())
		Eventually(func() error {
			_, err := cs.CertificatesV1().CertificateSigningRequests().Create(ctx, &certificatesv1.CertificateSigningRequest{
				ObjectMeta: metav1.ObjectMeta{GenerateName: "join-"},
				Spec: certificatesv1.CertificateSigningRequestSpec{Request: pemBytes, SignerName: certificatesv1.KubeAPIServerClientKubeletSignerName,
					Usages: []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth}},
			}, metav1.CreateOptions{})
			return err
		}).Should(Succeed())

		secret := string(s.Data["token-secret"])
		Expect(logs.String()).NotTo(ContainSubstring(secret))
		var evs eventsv1.EventList
		Expect(admin.List(ctx, &evs)).To(Succeed())
		Expect(evs.Items).NotTo(BeEmpty())
		for _, e := range evs.Items {
			Expect(e.Note).NotTo(ContainSubstring(secret))
		}
		Expect(fmt.Sprintf("%+v", p.Status)).NotTo(ContainSubstring(secret))
	})

	It("rotates ahead of expiry, switches the kubeconfig, and deletes the old token once it expired", func() {
		p := newPolicy("rotate", func(p *v1alpha1.BootstrapPolicy) {
			p.Spec.Token.RotateBefore = &metav1.Duration{Duration: 8 * time.Hour}
			p.Spec.Kubeconfig = &v1alpha1.KubeconfigSpec{Server: adminCfg.Host, CABundle: adminCfg.CAData,
				SecretRef: v1alpha1.SecretReference{Namespace: "node-provisioning", Name: "rotate-bootstrap"}}
		})
		Expect(admin.Create(ctx, p)).To(Succeed())
		DeferCleanup(admin.Delete, ctx, p)
		old := readyPolicy("rotate").Status.Tokens[0]

		By("moving past the rotation point, 16h into a 24h token")
		clock.Step(16*time.Hour + time.Minute)
		poke(ctx, "rotate")
		var current v1alpha1.TokenStatus
		Eventually(func(g Gomega) {
			p := getPolicy(g, "rotate")
			g.Expect(p.Status.Tokens).To(HaveLen(2))
			current = p.Status.Tokens[0]
			g.Expect(current.ID).NotTo(Equal(old.ID))
			g.Expect(p.Status.Tokens[1].ID).To(Equal(old.ID), "the old token stays valid until it expires")
		}).Should(Succeed())
		Eventually(func(g Gomega) {
			tok, _ := kubeconfigToken(g, ctx, "node-provisioning", "rotate-bootstrap")
			g.Expect(strings.SplitN(tok, ".", 2)[0]).To(Equal(current.ID))
		}).Should(Succeed())

		By("moving past the old token's expiry")
		clock.Step(8 * time.Hour)
		poke(ctx, "rotate")
		Eventually(func(g Gomega) {
			_, err := tokenSecret(ctx, old.ID)
			g.Expect(apierrors.IsNotFound(err)).To(BeTrue())
			g.Expect(getPolicy(g, "rotate").Status.Tokens).To(ConsistOf(HaveField("ID", current.ID)))
		}).Should(Succeed())
	})

	It("revokes every token at once when the rotate annotation changes", func() {
		p := newPolicy("revoke")
		Expect(admin.Create(ctx, p)).To(Succeed())
		DeferCleanup(admin.Delete, ctx, p)
		old := readyPolicy("revoke").Status.Tokens[0]
		s, err := tokenSecret(ctx, old.ID)
		Expect(err).NotTo(HaveOccurred())
		leaked := tokenString(s)
		_, err = whoAmI(ctx, leaked)
		Expect(err).NotTo(HaveOccurred())

		p = getPolicy(Default, "revoke")
		patch := client.MergeFrom(p.DeepCopy())
		metav1.SetMetaDataAnnotation(&p.ObjectMeta, v1alpha1.RotateAnnotation, "leaked-1")
		Expect(admin.Patch(ctx, p, patch)).To(Succeed())

		Eventually(func(g Gomega) {
			_, err := whoAmI(ctx, leaked)
			g.Expect(apierrors.IsUnauthorized(err)).To(BeTrue(), "the leaked token must stop authenticating, got %v", err)
			p := getPolicy(g, "revoke")
			g.Expect(p.Status.Tokens).To(HaveLen(1))
			g.Expect(p.Status.Tokens[0].ID).NotTo(Equal(old.ID))
		}).Should(Succeed())
	})

	It("mints another id when the generated one belongs to a Secret it does not manage", func() {
		foreign := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: metav1.NamespaceSystem, Name: "bootstrap-token-cccccc"},
			Type:       corev1.SecretType("bootstrap.kubernetes.io/token"),
			StringData: map[string]string{"token-id": "cccccc", "token-secret": "0123456789abcdef", "usage-bootstrap-authentication": "true"},
		}
		Expect(admin.Create(ctx, foreign)).To(Succeed())
		DeferCleanup(admin.Delete, ctx, foreign)
		forcedTokens <- "cccccc.fedcba9876543210"

		p := newPolicy("collide")
		Expect(admin.Create(ctx, p)).To(Succeed())
		DeferCleanup(admin.Delete, ctx, p)
		p = readyPolicy("collide")
		Expect(p.Status.Tokens).To(HaveLen(1))
		Expect(p.Status.Tokens[0].ID).NotTo(Equal("cccccc"))
		Expect(forcedTokens).To(BeEmpty(), "the colliding id was tried")
		kept := &corev1.Secret{}
		Expect(admin.Get(ctx, client.ObjectKeyFromObject(foreign), kept)).To(Succeed())
		Expect(string(kept.Data["token-secret"])).To(Equal("0123456789abcdef"))
		Expect(kept.OwnerReferences).To(BeEmpty())
	})

	DescribeTable("replaces the tokens when what they carry changes",
		func(name string, change func(*v1alpha1.BootstrapPolicy), key, want string) {
			p := newPolicy(name)
			Expect(admin.Create(ctx, p)).To(Succeed())
			DeferCleanup(admin.Delete, ctx, p)
			old := readyPolicy(name).Status.Tokens[0]
			p = getPolicy(Default, name)
			change(p)
			Expect(admin.Update(ctx, p)).To(Succeed())
			Eventually(func(g Gomega) {
				p := readyPolicy(name)
				g.Expect(p.Status.Tokens).To(HaveLen(1))
				g.Expect(p.Status.Tokens[0].ID).NotTo(Equal(old.ID))
				s, err := tokenSecret(ctx, p.Status.Tokens[0].ID)
				g.Expect(err).NotTo(HaveOccurred())
				g.Expect(string(s.Data[key])).To(Equal(want))
			}).Should(Succeed())
			_, err := tokenSecret(ctx, old.ID)
			Expect(apierrors.IsNotFound(err)).To(BeTrue())
		},
		Entry("groups", "regroup", func(p *v1alpha1.BootstrapPolicy) {
			p.Spec.Groups = []string{"system:bootstrappers:regrouped"}
		}, "auth-extra-groups", "system:bootstrappers:regrouped"),
		Entry("usages", "reuse", func(p *v1alpha1.BootstrapPolicy) {
			p.Spec.Token.Usages = []v1alpha1.TokenUsage{v1alpha1.UsageAuthentication, v1alpha1.UsageSigning}
		}, "usage-bootstrap-signing", "true"),
	)

	It("renders the seed's RBAC for KubeControllerManager, repairs drift, and drops nodeclient on a switch to Operator", func() {
		p := newPolicy("kcm", func(p *v1alpha1.BootstrapPolicy) {
			p.Spec.Approval.Approver = v1alpha1.ApproverKubeControllerManager
			p.Spec.Approval.Serving.Enabled = true
		})
		Expect(admin.Create(ctx, p)).To(Succeed())
		DeferCleanup(admin.Delete, ctx, p)
		p = readyPolicy("kcm")

		wantRoles := map[string]string{
			"tls-bootstrap:kcm:approve-node-client-csr":         "certificatesigningrequests/nodeclient",
			"tls-bootstrap:kcm:approve-node-client-renewal-csr": "certificatesigningrequests/selfnodeclient",
			"tls-bootstrap:kcm:approve-node-server-renewal-csr": "certificatesigningrequests/selfnodeserver",
		}
		for name, resource := range wantRoles {
			r := &rbacv1.ClusterRole{}
			Expect(admin.Get(ctx, client.ObjectKey{Name: name}, r)).To(Succeed())
			Expect(r.Rules).To(Equal([]rbacv1.PolicyRule{{APIGroups: []string{"certificates.k8s.io"}, Resources: []string{resource}, Verbs: []string{"create"}}}))
			Expect(r.OwnerReferences).To(ConsistOf(HaveField("UID", p.UID)))
			Expect(r.Labels).To(HaveKeyWithValue(v1alpha1.PolicyLabel, "kcm"))
		}
		wantBindings := map[string]struct {
			role    string
			subject rbacv1.Subject
		}{
			"tls-bootstrap:kcm:node-bootstrapper":               {"system:node-bootstrapper", group("system:bootstrappers:kcm")},
			"tls-bootstrap:kcm:auto-approve-csrs-for-group":     {"tls-bootstrap:kcm:approve-node-client-csr", group("system:bootstrappers:kcm")},
			"tls-bootstrap:kcm:auto-approve-renewals-for-nodes": {"tls-bootstrap:kcm:approve-node-client-renewal-csr", group("system:nodes")},
		}
		for name, want := range wantBindings {
			b := &rbacv1.ClusterRoleBinding{}
			Expect(admin.Get(ctx, client.ObjectKey{Name: name}, b)).To(Succeed())
			Expect(b.RoleRef.Name).To(Equal(want.role))
			Expect(b.Subjects).To(Equal([]rbacv1.Subject{want.subject}))
			Expect(b.OwnerReferences).To(ConsistOf(HaveField("UID", p.UID)))
		}

		By("deleting a rendered binding")
		Expect(admin.Delete(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "tls-bootstrap:kcm:auto-approve-renewals-for-nodes"}})).To(Succeed())
		Eventually(func() error {
			return admin.Get(ctx, client.ObjectKey{Name: "tls-bootstrap:kcm:auto-approve-renewals-for-nodes"}, &rbacv1.ClusterRoleBinding{})
		}).Should(Succeed())

		By("editing a rendered role")
		r := &rbacv1.ClusterRole{}
		Expect(admin.Get(ctx, client.ObjectKey{Name: "tls-bootstrap:kcm:approve-node-client-csr"}, r)).To(Succeed())
		r.Rules[0].Verbs = []string{"create", "delete"}
		Expect(admin.Update(ctx, r)).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(admin.Get(ctx, client.ObjectKey{Name: "tls-bootstrap:kcm:approve-node-client-csr"}, r)).To(Succeed())
			g.Expect(r.Rules[0].Verbs).To(Equal([]string{"create"}))
		}).Should(Succeed())
		Eventually(func(g Gomega) {
			var evs eventsv1.EventList
			g.Expect(admin.List(ctx, &evs)).To(Succeed())
			g.Expect(evs.Items).To(ContainElement(And(HaveField("Reason", "RBACRepaired"), HaveField("Regarding.Name", "kcm"))))
		}).Should(Succeed())

		By("switching to the Operator approver")
		p = getPolicy(Default, "kcm")
		p.Spec.Approval.Approver = v1alpha1.ApproverOperator
		Expect(admin.Update(ctx, p)).To(Succeed())
		Eventually(func(g Gomega) {
			var bindings rbacv1.ClusterRoleBindingList
			g.Expect(admin.List(ctx, &bindings, client.MatchingLabels{v1alpha1.PolicyLabel: "kcm"})).To(Succeed())
			names := []string{}
			for _, b := range bindings.Items {
				names = append(names, b.Name)
			}
			g.Expect(names).To(ConsistOf("tls-bootstrap:kcm:node-bootstrapper"))
			var roles rbacv1.ClusterRoleList
			g.Expect(admin.List(ctx, &roles, client.MatchingLabels{v1alpha1.PolicyLabel: "kcm"})).To(Succeed())
			g.Expect(roles.Items).To(BeEmpty())
		}).Should(Succeed())
		readyPolicy("kcm")
	})

	It("takes the CA from kube-root-ca.crt without cluster-info, and reports a missing CA until one appears", func() {
		Expect(client.IgnoreNotFound(admin.Delete(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Namespace: metav1.NamespacePublic, Name: "cluster-info"}}))).To(Succeed())
		ensureNamespace(ctx, "ca-fallback")
		p := newPolicy("noca", func(p *v1alpha1.BootstrapPolicy) {
			p.Spec.Kubeconfig = &v1alpha1.KubeconfigSpec{Server: adminCfg.Host,
				SecretRef: v1alpha1.SecretReference{Namespace: "ca-fallback", Name: "noca-bootstrap"}}
		})
		Expect(admin.Create(ctx, p)).To(Succeed())
		DeferCleanup(admin.Delete, ctx, p)

		Eventually(func(g Gomega) {
			p := getPolicy(g, "noca")
			c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionKubeconfigReady)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Reason).To(Equal(controllers.ReasonCANotFound))
			g.Expect(c.Message).To(ContainSubstring("ca-fallback/kube-root-ca.crt"))
			g.Expect(meta.IsStatusConditionFalse(p.Status.Conditions, v1alpha1.ConditionReady)).To(BeTrue())
		}).Should(Succeed())
		err := admin.Get(ctx, client.ObjectKey{Namespace: "ca-fallback", Name: "noca-bootstrap"}, &corev1.Secret{})
		Expect(apierrors.IsNotFound(err)).To(BeTrue(), "no kubeconfig without a CA: %v", err)

		By("publishing the namespace's kube-root-ca.crt, as kube-controller-manager does")
		rootCA := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ca-fallback", Name: "kube-root-ca.crt"},
			Data: map[string]string{"ca.crt": string(adminCfg.CAData)}}
		Expect(admin.Create(ctx, rootCA)).To(Succeed())
		p = readyPolicy("noca")
		Expect(meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionKubeconfigReady).Message).
			To(ContainSubstring("CA from ca-fallback/kube-root-ca.crt"))
		_, cfg := kubeconfigToken(Default, ctx, "ca-fallback", "noca-bootstrap")
		Expect(cfg.CAData).To(Equal(adminCfg.CAData))
	})

	It("writes no status when a reconcile finds nothing to change", func() {
		p := newPolicy("steady", func(p *v1alpha1.BootstrapPolicy) {
			p.Spec.Kubeconfig = &v1alpha1.KubeconfigSpec{Server: adminCfg.Host,
				SecretRef: v1alpha1.SecretReference{Namespace: "node-provisioning", Name: "steady-bootstrap"}}
		})
		Expect(admin.Create(ctx, p)).To(Succeed())
		DeferCleanup(admin.Delete, ctx, p)
		rv := readyPolicy("steady").ResourceVersion
		reconciles := func(g Gomega) float64 {
			sum := 0.0
			for _, result := range []string{"success", "requeue", "requeue_after", "error"} {
				n, _ := gauge(g, "controller_runtime_reconcile_total", map[string]string{"controller": "bootstrappolicy", "result": result})
				sum += n
			}
			return sum
		}
		before := reconciles(Default)

		By("touching an object it owns, which makes it reconcile")
		kc := &corev1.Secret{}
		Expect(admin.Get(ctx, client.ObjectKey{Namespace: "node-provisioning", Name: "steady-bootstrap"}, kc)).To(Succeed())
		patch := client.MergeFrom(kc.DeepCopy())
		metav1.SetMetaDataAnnotation(&kc.ObjectMeta, "example.com/touched", "yes")
		Expect(admin.Patch(ctx, kc, patch)).To(Succeed())
		Eventually(reconciles).Should(BeNumerically(">", before))
		Consistently(func(g Gomega) {
			g.Expect(getPolicy(g, "steady").ResourceVersion).To(Equal(rv))
		}).WithTimeout(2 * time.Second).Should(Succeed())
	})

	It("recreates a rendered binding that came back with another roleRef", func() {
		p := newPolicy("reref")
		Expect(admin.Create(ctx, p)).To(Succeed())
		DeferCleanup(admin.Delete, ctx, p)
		readyPolicy("reref")
		name := "tls-bootstrap:reref:node-bootstrapper"
		b := &rbacv1.ClusterRoleBinding{}
		Expect(admin.Get(ctx, client.ObjectKey{Name: name}, b)).To(Succeed())

		By("replacing it with one that binds the group to view (roleRef cannot be edited in place)")
		impostor := &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: b.Labels, OwnerReferences: b.OwnerReferences},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "view"},
			Subjects:   b.Subjects,
		}
		Expect(admin.Delete(ctx, b)).To(Succeed())
		Expect(admin.Create(ctx, impostor)).To(Succeed())
		Eventually(func(g Gomega) {
			got := &rbacv1.ClusterRoleBinding{}
			g.Expect(admin.Get(ctx, client.ObjectKey{Name: name}, got)).To(Succeed())
			g.Expect(got.UID).NotTo(Equal(impostor.UID))
			g.Expect(got.RoleRef.Name).To(Equal("system:node-bootstrapper"))
		}).Should(Succeed())
	})

	It("follows kstatus: Current when Ready, InProgress while the generation is ahead", func() {
		p := newPolicy("kstatus")
		Expect(admin.Create(ctx, p)).To(Succeed())
		DeferCleanup(admin.Delete, ctx, p)
		p = readyPolicy("kstatus")
		Expect(kstatus(p)).To(Equal(status.CurrentStatus))

		lagging := p.DeepCopy()
		lagging.Generation++
		Expect(kstatus(lagging)).To(Equal(status.InProgressStatus))

		By("a pattern RE2 refuses is refused at admission, naming the field")
		bad := getPolicy(Default, "kstatus")
		bad.Spec.Approval.NodeNamePattern = "^(?=worker)"
		err := admin.Update(ctx, bad)
		Expect(apierrors.IsInvalid(err)).To(BeTrue())
		Expect(err.Error()).To(ContainSubstring("spec.approval.nodeNamePattern"))
	})
})

func group(name string) rbacv1.Subject {
	return rbacv1.Subject{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: name}
}

func kstatus(p *v1alpha1.BootstrapPolicy) status.Status {
	raw, err := runtime.DefaultUnstructuredConverter.ToUnstructured(p)
	Expect(err).NotTo(HaveOccurred())
	u := &unstructured.Unstructured{Object: raw}
	u.SetAPIVersion(v1alpha1.GroupVersion.String())
	u.SetKind("BootstrapPolicy")
	res, err := status.Compute(u)
	Expect(err).NotTo(HaveOccurred())
	return res.Status
}

// gauge reads one series from the manager's metrics registry, as a scrape of its
// endpoint would see it.
func gauge(g Gomega, name string, labels map[string]string) (float64, bool) {
	families, err := metrics.Registry.Gather()
	g.Expect(err).NotTo(HaveOccurred())
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if want, ok := labels[l.GetName()]; ok && want != l.GetValue() {
					continue series
				}
			}
			switch {
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue(), true
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue(), true
			case m.GetHistogram() != nil:
				return float64(m.GetHistogram().GetSampleCount()), true
			}
		}
	}
	return 0, false
}

var _ = Describe("The operator's footprint", func() {
	ctx := context.Background()

	It("exports token expiry and count per policy, and CSR decisions", func() {
		p := newPolicy("metrics")
		Expect(admin.Create(ctx, p)).To(Succeed())
		DeferCleanup(admin.Delete, ctx, p)
		p = readyPolicy("metrics")
		Eventually(func(g Gomega) {
			n, ok := gauge(g, controllers.MetricTokens, map[string]string{"policy": "metrics"})
			g.Expect(ok).To(BeTrue())
			g.Expect(n).To(BeEquivalentTo(1))
			left, ok := gauge(g, controllers.MetricTokenExpiry, map[string]string{"policy": "metrics"})
			g.Expect(ok).To(BeTrue())
			g.Expect(left).To(BeNumerically("~", time.Until(p.Status.Tokens[0].ExpiresAt.Time).Seconds(), 3600))
		}).Should(Succeed())

		expectApproved(submit(ctx, bootstrapClient(ctx, "metrics"), clientCSR("metrics-1")), `"metrics"`)
		Eventually(func(g Gomega) {
			n, ok := gauge(g, controllers.MetricDecisions, map[string]string{"policy": "metrics", "kind": "client", "outcome": "Approve"})
			g.Expect(ok).To(BeTrue())
			g.Expect(n).To(BeNumerically(">=", 1))
			_, ok = gauge(g, controllers.MetricDecisionLatency, map[string]string{"kind": "client", "outcome": "Approve"})
			g.Expect(ok).To(BeTrue())
			_, ok = gauge(g, controllers.MetricPendingCSRs, map[string]string{"kind": "client"})
			g.Expect(ok).To(BeTrue())
		}).Should(Succeed())
	})

	It("has a ClusterRole with no wildcards, approve only on the kubelet signers, and bind only on system:node-bootstrapper", func() {
		raw, err := os.ReadFile(filepath.Join("..", "config", "rbac", "role.yaml"))
		Expect(err).NotTo(HaveOccurred())
		role := &rbacv1.ClusterRole{}
		Expect(yaml.Unmarshal(raw, role)).To(Succeed())
		for _, r := range role.Rules {
			Expect(r.Verbs).NotTo(ContainElement("*"))
			Expect(r.Resources).NotTo(ContainElement("*"))
			Expect(r.APIGroups).NotTo(ContainElement("*"))
			Expect(r.Verbs).NotTo(ContainElement("escalate"))
			if slices.Contains(r.Verbs, "approve") {
				Expect(r.Resources).To(Equal([]string{"signers"}))
				Expect(r.ResourceNames).To(ConsistOf(certificatesv1.KubeAPIServerClientKubeletSignerName, certificatesv1.KubeletServingSignerName))
			}
			if slices.Contains(r.Verbs, "bind") {
				Expect(r.ResourceNames).To(Equal([]string{"system:node-bootstrapper"}))
			}
		}
	})

	It("caches only the Secrets it manages", func() {
		unrelated := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: metav1.NamespaceSystem, Name: "unrelated"},
			StringData: map[string]string{"password": "hunter2"}}
		Expect(admin.Create(ctx, unrelated)).To(Succeed())
		DeferCleanup(admin.Delete, ctx, unrelated)
		p := newPolicy("cached")
		Expect(admin.Create(ctx, p)).To(Succeed())
		DeferCleanup(admin.Delete, ctx, p)
		p = readyPolicy("cached")

		Eventually(func(g Gomega) {
			s := &corev1.Secret{}
			g.Expect(operatorCache.Get(ctx, client.ObjectKey{Namespace: metav1.NamespaceSystem, Name: p.Status.Tokens[0].SecretName}, s)).To(Succeed())
		}).Should(Succeed())
		var all corev1.SecretList
		Expect(operatorCache.List(ctx, &all)).To(Succeed())
		for _, s := range all.Items {
			Expect(s.Labels).To(HaveKeyWithValue(v1alpha1.ManagedByLabel, v1alpha1.ManagedByValue), "cache holds %s/%s", s.Namespace, s.Name)
		}
	})
})
