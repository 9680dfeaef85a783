package rbac

import (
	"slices"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/diff"
	"k8s.io/utils/ptr"

	"github.com/tlsbootstrap/tls-bootstrap-operator/api/v1alpha1"
)

func policy(mutate ...func(*v1alpha1.BootstrapPolicy)) *v1alpha1.BootstrapPolicy {
	p := &v1alpha1.BootstrapPolicy{
		ObjectMeta: metav1.ObjectMeta{
			Name: "workers", UID: "uid-workers",
			// What a GitOps tool puts on the policy: must never reach a child.
			Labels:      map[string]string{"app.kubernetes.io/instance": "cluster-config"},
			Annotations: map[string]string{"argocd.argoproj.io/tracking-id": "cluster-config:x"},
		},
		Spec: v1alpha1.BootstrapPolicySpec{
			// Deliberately unsorted: the rendered subjects are sorted.
			Groups: []string{"system:bootstrappers:workers", "system:bootstrappers:gpu"},
			Approval: v1alpha1.ApprovalSpec{
				Approver: v1alpha1.ApproverOperator,
				Client:   v1alpha1.ClientApproval{Enabled: true},
				Renewal:  v1alpha1.RenewalApproval{Enabled: true},
			},
		},
	}
	for _, m := range mutate {
		m(p)
	}
	return p
}

func kcm(p *v1alpha1.BootstrapPolicy) {
	p.Spec.Approval.Approver = v1alpha1.ApproverKubeControllerManager
}

func serving(p *v1alpha1.BootstrapPolicy) { p.Spec.Approval.Serving.Enabled = true }

// The expected objects, written out from api.md rather than from the code.
var (
	wantMeta = func(name string) metav1.ObjectMeta {
		return metav1.ObjectMeta{
			Name: name,
			Labels: map[string]string{
				"app.kubernetes.io/managed-by":     "tls-bootstrap-operator",
				"bootstrap.tlsbootstrap.io/policy": "workers",
			},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "bootstrap.tlsbootstrap.io/v1alpha1", Kind: "BootstrapPolicy", Name: "workers",
				UID: "uid-workers", Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true),
			}},
		}
	}
	roleType    = metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRole"}
	bindingType = metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRoleBinding"}
	wantRole    = func(name, resource string) rbacv1.ClusterRole {
		return rbacv1.ClusterRole{TypeMeta: roleType, ObjectMeta: wantMeta(name), Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{"certificates.k8s.io"}, Resources: []string{resource}, Verbs: []string{"create"},
		}}}
	}
	groupSubjectsWant = []rbacv1.Subject{
		{Kind: "Group", APIGroup: "rbac.authorization.k8s.io", Name: "system:bootstrappers:gpu"},
		{Kind: "Group", APIGroup: "rbac.authorization.k8s.io", Name: "system:bootstrappers:workers"},
	}
	wantBinding = func(name, role string, subjects []rbacv1.Subject) rbacv1.ClusterRoleBinding {
		return rbacv1.ClusterRoleBinding{
			TypeMeta: bindingType, ObjectMeta: wantMeta(name),
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role},
			Subjects: subjects,
		}
	}
	nodeBootstrapper = wantBinding("tls-bootstrap:workers:node-bootstrapper", "system:node-bootstrapper", groupSubjectsWant)
	clientRole       = wantRole("tls-bootstrap:workers:approve-node-client-csr", "certificatesigningrequests/nodeclient")
	renewalRole      = wantRole("tls-bootstrap:workers:approve-node-client-renewal-csr", "certificatesigningrequests/selfnodeclient")
	serverRole       = wantRole("tls-bootstrap:workers:approve-node-server-renewal-csr", "certificatesigningrequests/selfnodeserver")
	forGroup         = wantBinding("tls-bootstrap:workers:auto-approve-csrs-for-group", "tls-bootstrap:workers:approve-node-client-csr", groupSubjectsWant)
	forNodes         = wantBinding("tls-bootstrap:workers:auto-approve-renewals-for-nodes", "tls-bootstrap:workers:approve-node-client-renewal-csr",
		[]rbacv1.Subject{{Kind: "Group", APIGroup: "rbac.authorization.k8s.io", Name: "system:nodes"}})
)

func TestRender(t *testing.T) {
	cases := map[string]struct {
		policy       *v1alpha1.BootstrapPolicy
		wantRoles    []rbacv1.ClusterRole
		wantBindings []rbacv1.ClusterRoleBinding
	}{
		"approver Operator renders only the node-bootstrapper binding, never a nodeclient one": {
			policy:       policy(),
			wantBindings: []rbacv1.ClusterRoleBinding{nodeBootstrapper},
		},
		"approver Operator with serving enabled still renders no approval role": {
			policy:       policy(serving),
			wantBindings: []rbacv1.ClusterRoleBinding{nodeBootstrapper},
		},
		"an unset approver is the schema default Operator": {
			policy:       policy(func(p *v1alpha1.BootstrapPolicy) { p.Spec.Approval.Approver = "" }),
			wantBindings: []rbacv1.ClusterRoleBinding{nodeBootstrapper},
		},
		"approver KubeControllerManager renders the seed's client and renewal set": {
			policy:       policy(kcm),
			wantRoles:    []rbacv1.ClusterRole{clientRole, renewalRole},
			wantBindings: []rbacv1.ClusterRoleBinding{forGroup, forNodes, nodeBootstrapper},
		},
		"approver KubeControllerManager with serving enabled adds the selfnodeserver role": {
			policy:       policy(kcm, serving),
			wantRoles:    []rbacv1.ClusterRole{clientRole, renewalRole, serverRole},
			wantBindings: []rbacv1.ClusterRoleBinding{forGroup, forNodes, nodeBootstrapper},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			roles, bindings := Render(tc.policy)
			if !equality.Semantic.DeepEqual(roles, tc.wantRoles) {
				t.Errorf("roles differ (-want +got):\n%s", diff.Diff(tc.wantRoles, roles))
			}
			if !equality.Semantic.DeepEqual(bindings, tc.wantBindings) {
				t.Errorf("bindings differ (-want +got):\n%s", diff.Diff(tc.wantBindings, bindings))
			}
			// Whatever the expectations above say: in Operator mode nothing may let
			// kube-controller-manager approve the groups' first-bootstrap CSRs.
			if tc.policy.Spec.Approval.Approver != v1alpha1.ApproverKubeControllerManager {
				for _, r := range roles {
					for _, rule := range r.Rules {
						if slices.Contains(rule.Resources, "certificatesigningrequests/nodeclient") {
							t.Errorf("Operator mode renders role %s granting nodeclient", r.Name)
						}
					}
				}
				for _, b := range bindings {
					if strings.Contains(b.RoleRef.Name, "nodeclient") || strings.Contains(b.RoleRef.Name, "approve") {
						t.Errorf("Operator mode renders binding %s to %s", b.Name, b.RoleRef.Name)
					}
				}
			}
			// A second render is identical: server-side apply sees no change.
			roles2, bindings2 := Render(tc.policy)
			if !equality.Semantic.DeepEqual(roles, roles2) || !equality.Semantic.DeepEqual(bindings, bindings2) {
				t.Errorf("render is not deterministic")
			}
		})
	}
}

func TestRenderedSubjectsAreIndependent(t *testing.T) {
	_, bindings := Render(policy(kcm))
	bindings[0].Subjects[0].Name = "mutated"
	for _, b := range bindings[1:] {
		for _, s := range b.Subjects {
			if s.Name == "mutated" {
				t.Fatalf("binding %s shares its subjects with another binding", b.Name)
			}
		}
	}
}

func TestStale(t *testing.T) {
	rendered := func(p *v1alpha1.BootstrapPolicy) ([]rbacv1.ClusterRole, []rbacv1.ClusterRoleBinding) {
		return Render(p)
	}
	cases := map[string]struct {
		policy       *v1alpha1.BootstrapPolicy
		existing     func() ([]rbacv1.ClusterRole, []rbacv1.ClusterRoleBinding)
		wantRoles    []string
		wantBindings []string
	}{
		"a switch from KubeControllerManager to Operator makes the nodeclient binding and the roles stale": {
			policy:   policy(),
			existing: func() ([]rbacv1.ClusterRole, []rbacv1.ClusterRoleBinding) { return rendered(policy(kcm, serving)) },
			wantRoles: []string{
				"tls-bootstrap:workers:approve-node-client-csr",
				"tls-bootstrap:workers:approve-node-client-renewal-csr",
				"tls-bootstrap:workers:approve-node-server-renewal-csr",
			},
			wantBindings: []string{
				"tls-bootstrap:workers:auto-approve-csrs-for-group",
				"tls-bootstrap:workers:auto-approve-renewals-for-nodes",
			},
		},
		"turning serving off makes only the selfnodeserver role stale": {
			policy:    policy(kcm),
			existing:  func() ([]rbacv1.ClusterRole, []rbacv1.ClusterRoleBinding) { return rendered(policy(kcm, serving)) },
			wantRoles: []string{"tls-bootstrap:workers:approve-node-server-renewal-csr"},
		},
		"a switch from Operator to KubeControllerManager leaves nothing stale": {
			policy:   policy(kcm),
			existing: func() ([]rbacv1.ClusterRole, []rbacv1.ClusterRoleBinding) { return rendered(policy()) },
		},
		"what the current render contains is not stale, even with other subjects (those are applied in place)": {
			policy: policy(kcm),
			existing: func() ([]rbacv1.ClusterRole, []rbacv1.ClusterRoleBinding) {
				roles, bindings := rendered(policy(kcm, func(p *v1alpha1.BootstrapPolicy) {
					p.Spec.Groups = []string{"system:bootstrappers:old"}
				}))
				return roles, bindings
			},
		},
		"a binding whose roleRef differs is reported, since roleRef is immutable": {
			policy: policy(kcm),
			existing: func() ([]rbacv1.ClusterRole, []rbacv1.ClusterRoleBinding) {
				roles, bindings := rendered(policy(kcm))
				for i := range bindings {
					if bindings[i].Name == "tls-bootstrap:workers:node-bootstrapper" {
						bindings[i].RoleRef.Name = "system:certificates.k8s.io:certificatesigningrequests:nodeclient"
					}
				}
				return roles, bindings
			},
			wantBindings: []string{"tls-bootstrap:workers:node-bootstrapper"},
		},
		"objects without the policy's labels are never reported": {
			policy: policy(),
			existing: func() ([]rbacv1.ClusterRole, []rbacv1.ClusterRoleBinding) {
				roles, bindings := rendered(policy(kcm))
				other, otherBindings := rendered(policy(kcm, func(p *v1alpha1.BootstrapPolicy) { p.Name = "masters" }))
				for i := range roles {
					roles[i].Labels = nil // a human's copy under the same name
				}
				for i := range bindings {
					bindings[i].Labels = map[string]string{"app.kubernetes.io/managed-by": "tls-bootstrap-operator"}
				}
				return append(roles, other...), append(bindings, otherBindings...)
			},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			roles, bindings := tc.existing()
			gotRoles, gotBindings := Stale(tc.policy, roles, bindings)
			if !slices.Equal(gotRoles, tc.wantRoles) {
				t.Errorf("stale roles = %v, want %v", gotRoles, tc.wantRoles)
			}
			if !slices.Equal(gotBindings, tc.wantBindings) {
				t.Errorf("stale bindings = %v, want %v", gotBindings, tc.wantBindings)
			}
		})
	}
}

func TestGrantedRules(t *testing.T) {
	rule := func(resources ...string) []rbacv1.PolicyRule {
		return []rbacv1.PolicyRule{{APIGroups: []string{"certificates.k8s.io"}, Resources: resources, Verbs: []string{"create"}}}
	}
	cases := map[string]struct {
		got  []rbacv1.PolicyRule
		want []rbacv1.PolicyRule
	}{
		"approver Operator grants nothing": {got: GrantedRules(policy(serving))},
		"approver KubeControllerManager grants create on nodeclient and selfnodeclient": {
			got:  GrantedRules(policy(kcm)),
			want: rule("certificatesigningrequests/nodeclient", "certificatesigningrequests/selfnodeclient"),
		},
		"the most any policy grants adds selfnodeserver": {
			got: MaxGrantedRules(),
			want: rule("certificatesigningrequests/nodeclient", "certificatesigningrequests/selfnodeclient",
				"certificatesigningrequests/selfnodeserver"),
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if !equality.Semantic.DeepEqual(tc.got, tc.want) {
				t.Errorf("rules differ (-want +got):\n%s", diff.Diff(tc.want, tc.got))
			}
		})
	}
}
