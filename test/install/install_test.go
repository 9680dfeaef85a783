// Package install proves that the installer `make build-installer` writes is accepted by
// a real API server and deploys the operator the way the README promises.
package install

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
)

var (
	testEnv *envtest.Environment
	admin   client.Client
	scheme  = runtime.NewScheme()
)

func TestInstall(t *testing.T) {
	RegisterFailHandler(Fail)
	SetDefaultEventuallyTimeout(30 * time.Second)
	RunSpecs(t, "Installer Suite")
}

var _ = BeforeSuite(func() {
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(apiextensionsv1.AddToScheme(scheme))
	// No CRDs: the installer brings its own, as it does on a real cluster.
	testEnv = &envtest.Environment{BinaryAssetsDirectory: binDir("KUBEBUILDER_ASSETS", "k8s")}
	cfg, err := testEnv.Start()
	Expect(err).NotTo(HaveOccurred())
	admin, err = client.New(cfg, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())
})

var _ = AfterSuite(func() {
	if testEnv != nil {
		Expect(testEnv.Stop()).To(Succeed())
	}
})

// binDir is where the Makefile put a tool; the environment variable wins.
func binDir(env, name string) string {
	if dir := os.Getenv(env); dir != "" {
		return dir
	}
	return filepath.Join("..", "..", "bin", name)
}

// installer is what `make build-installer` writes to dist/install.yaml for the default
// image: kustomize's build of config/default.
func installer() []*unstructured.Unstructured {
	var out, stderr bytes.Buffer
	cmd := exec.Command(binDir("KUSTOMIZE", "kustomize"), "build", filepath.Join("..", "..", "config", "default"))
	cmd.Stdout, cmd.Stderr = &out, &stderr
	Expect(cmd.Run()).To(Succeed(), "kustomize build config/default (make kustomize builds it): %s", stderr.String())

	var objs []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(&out, 4096)
	for {
		u := &unstructured.Unstructured{}
		err := dec.Decode(&u.Object)
		if errors.Is(err, io.EOF) {
			break
		}
		Expect(err).NotTo(HaveOccurred())
		if len(u.Object) > 0 {
			objs = append(objs, u)
		}
	}
	return objs
}

func apply(ctx context.Context, u *unstructured.Unstructured, opts ...client.ApplyOption) error {
	opts = append(opts, client.FieldOwner("installer-test"), client.ForceOwnership)
	return admin.Apply(ctx, client.ApplyConfigurationFromUnstructured(u.DeepCopy()), opts...)
}

func convert[T any](u *unstructured.Unstructured) *T {
	out := new(T)
	Expect(runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, out)).To(Succeed())
	return out
}

var _ = Describe("The installer", Ordered, func() {
	ctx := context.Background()
	var objs []*unstructured.Unstructured
	byKind := map[string][]*unstructured.Unstructured{}

	BeforeAll(func() {
		objs = installer()
		for _, u := range objs {
			byKind[u.GetKind()] = append(byKind[u.GetKind()], u)
		}
	})

	It("holds the namespace, the CRD, the RBAC, the Deployment and the metrics Service", func() {
		for _, kind := range []string{"Namespace", "CustomResourceDefinition", "ServiceAccount", "ClusterRole",
			"ClusterRoleBinding", "Role", "RoleBinding", "Deployment", "Service"} {
			Expect(byKind).To(HaveKey(kind))
		}
		Expect(byKind["Namespace"]).To(HaveLen(1))
		Expect(byKind["Namespace"][0].GetLabels()).To(HaveKeyWithValue("pod-security.kubernetes.io/enforce", "restricted"))
	})

	It("is accepted by the API server with server-side apply, CRD and namespace first", func() {
		By("installing the CRD and the namespace for real: the rest needs them to exist")
		for _, kind := range []string{"CustomResourceDefinition", "Namespace"} {
			for _, u := range byKind[kind] {
				Expect(apply(ctx, u)).To(Succeed(), "%s %s", kind, u.GetName())
			}
		}
		Eventually(func(g Gomega) {
			for _, u := range byKind["CustomResourceDefinition"] {
				crd := &apiextensionsv1.CustomResourceDefinition{}
				g.Expect(admin.Get(ctx, client.ObjectKeyFromObject(u), crd)).To(Succeed())
				g.Expect(slices.ContainsFunc(crd.Status.Conditions, func(c apiextensionsv1.CustomResourceDefinitionCondition) bool {
					return c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue
				})).To(BeTrue(), "CRD %s established", crd.Name)
			}
		}).Should(Succeed())

		By("applying every object with server-side dry run")
		for _, u := range objs {
			Expect(apply(ctx, u, client.DryRunAll)).To(Succeed(), "%s %s", u.GetKind(), u.GetName())
		}
	})

	It("runs two replicas with leader election, restricted and read-only, with resource requests", func() {
		Expect(byKind["Deployment"]).To(HaveLen(1))
		d := convert[appsv1.Deployment](byKind["Deployment"][0])
		Expect(d.Namespace).To(Equal(byKind["Namespace"][0].GetName()))
		Expect(d.Spec.Replicas).To(HaveValue(BeEquivalentTo(2)))

		pod := d.Spec.Template.Spec
		Expect(pod.SecurityContext).NotTo(BeNil())
		Expect(pod.SecurityContext.RunAsNonRoot).To(HaveValue(BeTrue()))
		Expect(pod.SecurityContext.SeccompProfile).To(HaveValue(HaveField("Type", corev1.SeccompProfileTypeRuntimeDefault)))
		Expect(pod.Containers).To(HaveLen(1))
		c := pod.Containers[0]
		Expect(c.Args).To(ContainElements("--leader-elect", "--metrics-bind-address=:8443"))
		Expect(c.Image).To(HavePrefix("ghcr.io/tlsbootstrap/tls-bootstrap-operator:"))
		Expect(c.SecurityContext).NotTo(BeNil())
		Expect(c.SecurityContext.AllowPrivilegeEscalation).To(HaveValue(BeFalse()))
		Expect(c.SecurityContext.ReadOnlyRootFilesystem).To(HaveValue(BeTrue()))
		Expect(c.SecurityContext.Capabilities).To(HaveValue(HaveField("Drop", ConsistOf(corev1.Capability("ALL")))))
		Expect(c.Resources.Requests).To(HaveKey(corev1.ResourceCPU))
		Expect(c.Resources.Requests).To(HaveKey(corev1.ResourceMemory))

		By("a soft memory target for the Go runtime, under the container's hard limit")
		var goMemLimit string
		for _, e := range c.Env {
			if e.Name == "GOMEMLIMIT" {
				goMemLimit = e.Value
			}
		}
		mib, err := strconv.Atoi(strings.TrimSuffix(goMemLimit, "MiB"))
		Expect(err).NotTo(HaveOccurred(), "GOMEMLIMIT %q in MiB", goMemLimit)
		Expect(c.Resources.Limits.Memory().Value()).To(BeNumerically(">", int64(mib)<<20))

		By("a pod of its template is admitted by Pod Security's restricted level, which the namespace enforces")
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: d.Namespace, Name: "manager-dry-run", Labels: d.Spec.Template.Labels},
			Spec:       *pod.DeepCopy(),
		}
		Expect(admin.Create(ctx, p, client.DryRunAll)).To(Succeed())

		By("while the same pod without its seccomp profile is refused: the check is live")
		weak := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: d.Namespace, Name: "weak-dry-run"}, Spec: *pod.DeepCopy()}
		weak.Spec.SecurityContext.SeccompProfile = nil
		Expect(admin.Create(ctx, weak, client.DryRunAll)).To(MatchError(ContainSubstring("PodSecurity")))
	})

	It("serves metrics on the Service, and binds the manager's ClusterRole to its ServiceAccount", func() {
		d := convert[appsv1.Deployment](byKind["Deployment"][0])
		var metricsSvc *corev1.Service
		for _, u := range byKind["Service"] {
			svc := convert[corev1.Service](u)
			for _, port := range svc.Spec.Ports {
				if port.Name == "https" && port.TargetPort.IntValue() == 8443 {
					metricsSvc = svc
				}
			}
		}
		Expect(metricsSvc).NotTo(BeNil(), "a Service with an https port to 8443")
		for k, v := range metricsSvc.Spec.Selector {
			Expect(d.Spec.Template.Labels).To(HaveKeyWithValue(k, v))
		}

		sa := rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: d.Spec.Template.Spec.ServiceAccountName, Namespace: d.Namespace}
		bound := map[string]bool{}
		for _, u := range byKind["ClusterRoleBinding"] {
			b := convert[rbacv1.ClusterRoleBinding](u)
			if slices.Contains(b.Subjects, sa) {
				bound[b.RoleRef.Name] = true
			}
		}
		Expect(bound).To(HaveKey("tls-bootstrap-operator-manager-role"))
		Expect(bound).To(HaveKey("tls-bootstrap-operator-metrics-auth-role"))
	})
})
