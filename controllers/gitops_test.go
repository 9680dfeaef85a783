package controllers_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/tlsbootstrap/tls-bootstrap-operator/api/v1alpha1"
	"github.com/tlsbootstrap/tls-bootstrap-operator/controllers"
)

// What Argo CD puts on the objects it syncs: its field manager for server-side apply,
// the instance label and the tracking annotation that tell it Git owns an object.
const (
	argoCDManager    = "argocd-controller"
	instanceLabel    = "app.kubernetes.io/instance"
	trackingIDAnnot  = "argocd.argoproj.io/tracking-id"
	argoCDAppName    = "tls-bootstrap"
	argoCDTrackingID = "tls-bootstrap:bootstrap.tlsbootstrap.io/BootstrapPolicy:/workers"
)

// health is what Argo CD's health check (config/argocd/health.lua) says of a policy.
func health(p *v1alpha1.BootstrapPolicy) string {
	status, msg, err := controllers.ArgoCDHealth(p)
	Expect(err).NotTo(HaveOccurred())
	GinkgoWriter.Printf("argocd health of %s (generation %d): %s: %s\n", p.Name, p.Generation, status, msg)
	return status
}

// samples are the objects of config/samples, as Argo CD would sync them from Git.
func samples() []*unstructured.Unstructured {
	dir := filepath.Join("..", "config", "samples")
	entries, err := os.ReadDir(dir)
	Expect(err).NotTo(HaveOccurred())
	var out []*unstructured.Unstructured
	for _, e := range entries {
		if e.Name() == "kustomization.yaml" || !strings.HasSuffix(e.Name(), ".yaml") {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(dir, e.Name()))
		Expect(err).NotTo(HaveOccurred())
		u := &unstructured.Unstructured{}
		Expect(yaml.Unmarshal(raw, &u.Object)).To(Succeed())
		u.SetLabels(map[string]string{instanceLabel: argoCDAppName})
		u.SetAnnotations(map[string]string{trackingIDAnnot: argoCDTrackingID})
		out = append(out, u)
	}
	Expect(out).NotTo(BeEmpty())
	return out
}

func applyAsArgoCD(ctx context.Context, u *unstructured.Unstructured) {
	Expect(admin.Apply(ctx, client.ApplyConfigurationFromUnstructured(u.DeepCopy()),
		client.FieldOwner(argoCDManager), client.ForceOwnership)).To(Succeed())
}

var _ = Describe("GitOps with Argo CD", func() {
	ctx := context.Background()

	BeforeEach(func() {
		publishClusterInfo(ctx)
		ensureNamespace(ctx, "node-provisioning")
	})

	It("applies the samples twice with server-side apply: nothing changes, the spec stays the applier's, and nothing rendered carries Argo CD's tracking metadata", func() {
		objs := samples()
		for _, u := range objs {
			applyAsArgoCD(ctx, u)
			DeferCleanup(func() {
				Expect(client.IgnoreNotFound(admin.Delete(ctx, u))).To(Succeed())
				Eventually(func() bool {
					return apierrors.IsNotFound(admin.Get(ctx, client.ObjectKeyFromObject(u), &v1alpha1.BootstrapPolicy{}))
				}).Should(BeTrue())
			})
		}
		p := readyPolicy("workers")
		Expect(health(p)).To(Equal("Healthy"))

		By("applying the same samples again, as a resync does")
		for _, u := range objs {
			applyAsArgoCD(ctx, u)
		}
		Consistently(func(g Gomega) {
			g.Expect(getPolicy(g, "workers").ResourceVersion).To(Equal(p.ResourceVersion))
		}).WithTimeout(2 * time.Second).Should(Succeed())

		By("the spec belongs to the applier alone: the operator wrote only status")
		p = getPolicy(Default, "workers")
		for _, mf := range p.ManagedFields {
			fields := mf.FieldsV1.GetRawString()
			if mf.Manager == argoCDManager {
				Expect(mf.Operation).To(Equal(metav1.ManagedFieldsOperationApply))
				Expect(mf.Subresource).To(BeEmpty())
				Expect(fields).To(ContainSubstring(`"f:spec"`))
				continue
			}
			Expect(mf.Subresource).To(Equal("status"), "manager %s wrote outside status: %s", mf.Manager, fields)
			Expect(fields).NotTo(ContainSubstring(`"f:spec"`))
			Expect(fields).NotTo(ContainSubstring(`"f:metadata"`))
		}

		By("what it renders carries neither the policy's labels and annotations nor Argo CD's tracking metadata")
		Expect(p.Labels).To(HaveKeyWithValue(instanceLabel, argoCDAppName))
		Expect(p.Annotations).To(HaveKeyWithValue(trackingIDAnnot, argoCDTrackingID))

		byPolicy := client.MatchingLabels{v1alpha1.PolicyLabel: "workers"}
		var secrets corev1.SecretList
		Expect(admin.List(ctx, &secrets, byPolicy)).To(Succeed())
		var roles rbacv1.ClusterRoleList
		Expect(admin.List(ctx, &roles, byPolicy)).To(Succeed())
		var bindings rbacv1.ClusterRoleBindingList
		Expect(admin.List(ctx, &bindings, byPolicy)).To(Succeed())

		// envtest runs no garbage collector: children of an earlier "workers" keep the
		// label, so only this policy's own (by controller reference) are looked at.
		var children []client.Object
		kinds := map[string]int{}
		add := func(o client.Object, kind string) {
			if metav1.IsControlledBy(o, p) {
				children = append(children, o)
				kinds[kind]++
			}
		}
		for i := range secrets.Items {
			add(&secrets.Items[i], string(secrets.Items[i].Type))
		}
		for i := range roles.Items {
			add(&roles.Items[i], "ClusterRole")
		}
		for i := range bindings.Items {
			add(&bindings.Items[i], "ClusterRoleBinding")
		}
		Expect(kinds).To(HaveKey(string(corev1.SecretTypeBootstrapToken)), "a token Secret")
		Expect(kinds).To(HaveKey(string(corev1.SecretTypeOpaque)), "the kubeconfig Secret")
		Expect(kinds).To(HaveKey("ClusterRoleBinding"))
		for _, o := range children {
			for k := range p.Labels {
				Expect(o.GetLabels()).NotTo(HaveKey(k), "%T %s", o, o.GetName())
			}
			for k := range p.Annotations {
				Expect(o.GetAnnotations()).NotTo(HaveKey(k), "%T %s", o, o.GetName())
			}
			for k := range o.GetAnnotations() {
				Expect(k).NotTo(HavePrefix("argocd.argoproj.io/"), "%T %s", o, o.GetName())
			}
		}
	})

	It("reads as Progressing in Argo CD until the operator reported on the current generation, then Healthy", func() {
		p := newPolicy("argohealth")
		Expect(admin.Create(ctx, p)).To(Succeed())
		DeferCleanup(admin.Delete, ctx, p)
		By("the object the API server returned on create: no status yet")
		Expect(health(p)).To(Equal("Progressing"))

		p = readyPolicy("argohealth")
		Expect(health(p)).To(Equal("Healthy"))

		By("the object the API server returned on update: the generation is ahead of status")
		p.Spec.Token.TTL = metav1.Duration{Duration: 12 * time.Hour}
		Expect(admin.Update(ctx, p)).To(Succeed())
		Expect(p.Status.ObservedGeneration).To(BeNumerically("<", p.Generation))
		Expect(health(p)).To(Equal("Progressing"))
		Eventually(func(g Gomega) {
			g.Expect(health(getPolicy(g, "argohealth"))).To(Equal("Healthy"))
		}).Should(Succeed())
	})

	It("reads as Degraded in Argo CD while the kubeconfig's CA is missing, and Healthy once it appears", func() {
		Expect(client.IgnoreNotFound(admin.Delete(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Namespace: metav1.NamespacePublic, Name: "cluster-info"}}))).To(Succeed())
		ensureNamespace(ctx, "argo-noca")
		p := newPolicy("argonoca", func(p *v1alpha1.BootstrapPolicy) {
			p.Spec.Kubeconfig = &v1alpha1.KubeconfigSpec{Server: adminCfg.Host,
				SecretRef: v1alpha1.SecretReference{Namespace: "argo-noca", Name: "argonoca-bootstrap"}}
		})
		Expect(admin.Create(ctx, p)).To(Succeed())
		DeferCleanup(admin.Delete, ctx, p)
		Eventually(func(g Gomega) {
			g.Expect(health(getPolicy(g, "argonoca"))).To(Equal("Degraded"))
		}).Should(Succeed())
		_, msg, err := controllers.ArgoCDHealth(getPolicy(Default, "argonoca"))
		Expect(err).NotTo(HaveOccurred())
		Expect(msg).To(ContainSubstring(controllers.ReasonCANotFound))

		By("publishing the namespace's kube-root-ca.crt, as kube-controller-manager does")
		Expect(admin.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "argo-noca", Name: "kube-root-ca.crt"},
			Data: map[string]string{"ca.crt": string(adminCfg.CAData)}})).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(health(getPolicy(g, "argonoca"))).To(Equal("Healthy"))
		}).Should(Succeed())
	})
})
