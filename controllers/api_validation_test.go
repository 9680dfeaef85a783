package controllers_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/tlsbootstrap/tls-bootstrap-operator/api/v1alpha1"
)

// samplePath is the commented sample users start from.
var samplePath = filepath.Join("..", "config", "samples", "bootstrap_v1alpha1_bootstrappolicy.yaml")

// policyFromYAML builds an unstructured policy, so tests can send what a user would
// type, including values the Go types could not even hold.
func policyFromYAML(name, spec string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	Expect(yaml.Unmarshal([]byte("spec:\n"+indent(spec)), &u.Object)).To(Succeed())
	u.SetAPIVersion(v1alpha1.GroupVersion.String())
	u.SetKind("BootstrapPolicy")
	u.SetName(name)
	return u
}

func indent(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i := range lines {
		lines[i] = "  " + lines[i]
	}
	return strings.Join(lines, "\n")
}

var _ = Describe("The BootstrapPolicy API", func() {
	ctx := context.Background()

	It("accepts the sample and applies the contract's defaults", func() {
		raw, err := os.ReadFile(samplePath)
		Expect(err).NotTo(HaveOccurred())
		u := &unstructured.Unstructured{}
		Expect(yaml.Unmarshal(raw, &u.Object)).To(Succeed())
		u.SetName("sample-accepted")
		Expect(admin.Create(ctx, u, client.DryRunAll)).To(Succeed())

		minimal := policyFromYAML("defaults", `groups: ["system:bootstrappers:defaults"]`)
		Expect(admin.Create(ctx, minimal, client.DryRunAll)).To(Succeed())
		p := &v1alpha1.BootstrapPolicy{}
		Expect(runtimeConvert(minimal, p)).To(Succeed())
		Expect(p.Spec.Token.TTL.Duration).To(Equal(24 * time.Hour))
		Expect(p.Spec.Token.RotateBefore).To(BeNil(), "unset rotateBefore means ttl/3, computed, never written into spec")
		Expect(p.Spec.Token.EffectiveRotateBefore()).To(Equal(8 * time.Hour))
		Expect(p.Spec.Token.Usages).To(Equal([]v1alpha1.TokenUsage{v1alpha1.UsageAuthentication}))
		Expect(p.Spec.Approval.Approver).To(Equal(v1alpha1.ApproverOperator))
		Expect(p.Spec.Approval.Mode).To(Equal(v1alpha1.ModeEnforce))
		Expect(p.Spec.Approval.OnViolation).To(Equal(v1alpha1.ViolationDeny))
		Expect(p.Spec.Approval.MaxPendingPerNode).To(Equal(int32(3)))
		Expect(p.Spec.Approval.Client.Enabled).To(BeTrue())
		Expect(p.Spec.Approval.Renewal.Enabled).To(BeTrue())
		Expect(p.Spec.Approval.Serving.Enabled).To(BeFalse())
		Expect(p.Spec.Kubeconfig).To(BeNil())
	})

	DescribeTable("refuses an invalid policy at admission, naming the field",
		func(spec, field, message string) {
			err := admin.Create(ctx, policyFromYAML("invalid", spec), client.DryRunAll)
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want Invalid, got %v", err)
			Expect(err.Error()).To(ContainSubstring(field))
			Expect(err.Error()).To(ContainSubstring(message))
		},
		Entry("no groups", `groups: []`, "spec.groups", "at least 1"),
		Entry("a group outside system:bootstrappers:", `groups: ["system:masters"]`, "spec.groups[0]", "should match"),
		Entry("a group with upper case", `groups: ["system:bootstrappers:Workers"]`, "spec.groups[0]", "should match"),
		Entry("nine groups", `groups: ["system:bootstrappers:a","system:bootstrappers:b","system:bootstrappers:c","system:bootstrappers:d","system:bootstrappers:e","system:bootstrappers:f","system:bootstrappers:g","system:bootstrappers:h","system:bootstrappers:i"]`,
			"spec.groups", "must have at most 8 items"),
		Entry("a duplicated group", `groups: ["system:bootstrappers:a","system:bootstrappers:a"]`, "spec.groups[1]", "Duplicate value"),
		Entry("a ttl under 10m", "groups: [\"system:bootstrappers:a\"]\ntoken: {ttl: 5m}", "spec.token.ttl", "between 10m and 8760h"),
		Entry("a ttl over a year", "groups: [\"system:bootstrappers:a\"]\ntoken: {ttl: 8761h}", "spec.token.ttl", "between 10m and 8760h"),
		Entry("a ttl that is no duration", "groups: [\"system:bootstrappers:a\"]\ntoken: {ttl: one day}", "spec.token.ttl", "should match"),
		Entry("rotateBefore as long as ttl", "groups: [\"system:bootstrappers:a\"]\ntoken: {ttl: 1h, rotateBefore: 1h}", "spec.token.rotateBefore", "shorter than ttl"),
		Entry("rotateBefore longer than the default ttl", "groups: [\"system:bootstrappers:a\"]\ntoken: {rotateBefore: 30h}", "spec.token.rotateBefore", "shorter than ttl"),
		Entry("rotateBefore of zero", "groups: [\"system:bootstrappers:a\"]\ntoken: {rotateBefore: 0s}", "spec.token.rotateBefore", "must be positive"),
		Entry("an unknown usage", "groups: [\"system:bootstrappers:a\"]\ntoken: {usages: [authentication, admin]}", "spec.token.usages[1]", "Unsupported value"),
		Entry("a duplicated usage", "groups: [\"system:bootstrappers:a\"]\ntoken: {usages: [signing, signing]}", "spec.token.usages[1]", "Duplicate value"),
		Entry("a kubeconfig server over http", "groups: [\"system:bootstrappers:a\"]\nkubeconfig: {server: \"http://api:6443\", secretRef: {namespace: a, name: b}}",
			"spec.kubeconfig.server", "https URL"),
		Entry("a kubeconfig server that is no URL", "groups: [\"system:bootstrappers:a\"]\nkubeconfig: {server: \"api:6443 x\", secretRef: {namespace: a, name: b}}",
			"spec.kubeconfig.server", "https URL"),
		Entry("a kubeconfig without secretRef", "groups: [\"system:bootstrappers:a\"]\nkubeconfig: {server: \"https://api:6443\"}",
			"spec.kubeconfig.secretRef", "Required value"),
		Entry("a kubeconfig secretRef in an invalid namespace", "groups: [\"system:bootstrappers:a\"]\nkubeconfig: {server: \"https://api:6443\", secretRef: {namespace: Bad_NS, name: b}}",
			"spec.kubeconfig.secretRef.namespace", "should match"),
		Entry("an unknown approver", "groups: [\"system:bootstrappers:a\"]\napproval: {approver: Anyone}", "spec.approval.approver", "Unsupported value"),
		Entry("an unknown mode", "groups: [\"system:bootstrappers:a\"]\napproval: {mode: Maybe}", "spec.approval.mode", "Unsupported value"),
		Entry("an unknown onViolation", "groups: [\"system:bootstrappers:a\"]\napproval: {onViolation: Explode}", "spec.approval.onViolation", "Unsupported value"),
		Entry("a nodeNamePattern that does not compile", "groups: [\"system:bootstrappers:a\"]\napproval: {nodeNamePattern: \"^worker-[\"}",
			"spec.approval.nodeNamePattern", "valid RE2"),
		Entry("a maxExpiration under the signer's minimum", "groups: [\"system:bootstrappers:a\"]\napproval: {maxExpiration: 1m}", "spec.approval.maxExpiration", "at least 10m"),
		Entry("a maxPendingPerNode of zero", "groups: [\"system:bootstrappers:a\"]\napproval: {maxPendingPerNode: 0}", "spec.approval.maxPendingPerNode", "greater than or equal to 1"),
		Entry("an invalid CIDR", "groups: [\"system:bootstrappers:a\"]\napproval: {serving: {enabled: true, allowedCIDRs: [\"10.0.0.0/33\"]}}",
			"spec.approval.serving.allowedCIDRs[0]", "must be a CIDR"),
		Entry("a DNS suffix with a wildcard", "groups: [\"system:bootstrappers:a\"]\napproval: {serving: {enabled: true, allowedDNSSuffixes: [\"*.internal\"]}}",
			"spec.approval.serving.allowedDNSSuffixes[0]", "should match"),
	)

	It("documents every field for kubectl explain", func() {
		u, err := testEnv.AddUser(envtest.User{Name: "explainer", Groups: []string{"system:masters"}}, nil)
		Expect(err).NotTo(HaveOccurred())
		kubeconfig, err := u.KubeConfig()
		Expect(err).NotTo(HaveOccurred())
		path := filepath.Join(GinkgoT().TempDir(), "kubeconfig")
		Expect(os.WriteFile(path, kubeconfig, 0o600)).To(Succeed())

		out, err := exec.Command(filepath.Join(assetsDir(), "kubectl"), "--kubeconfig", path,
			"explain", "bootstrappolicy.spec.token").CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), string(out))
		Expect(string(out)).To(ContainSubstring("Token sets the lifetime, rotation and usages"))
		Expect(string(out)).To(ContainSubstring("rotateBefore"))
		Expect(string(out)).To(ContainSubstring("one third of ttl"))
	})

	It("shows groups, TTL, approver, mode, Ready and age as printer columns", func() {
		Eventually(func(g Gomega) {
			crd := &unstructured.Unstructured{}
			crd.SetAPIVersion("apiextensions.k8s.io/v1")
			crd.SetKind("CustomResourceDefinition")
			g.Expect(admin.Get(ctx, client.ObjectKey{Name: "bootstrappolicies.bootstrap.tlsbootstrap.io"}, crd)).To(Succeed())
			versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
			cols, _, _ := unstructured.NestedSlice(versions[0].(map[string]any), "additionalPrinterColumns")
			var names []string
			for _, c := range cols {
				names = append(names, c.(map[string]any)["name"].(string))
			}
			g.Expect(names).To(Equal([]string{"Groups", "TTL", "Approver", "Mode", "Ready", "Age"}))
		}).Should(Succeed())
	})
})

func runtimeConvert(u *unstructured.Unstructured, p *v1alpha1.BootstrapPolicy) error {
	raw, err := u.MarshalJSON()
	if err != nil {
		return err
	}
	return yaml.Unmarshal(raw, p)
}
