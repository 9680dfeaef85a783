// Package rbac renders the ClusterRoles and ClusterRoleBindings a BootstrapPolicy
// needs, per approver mode, and says which existing ones must go. It never talks to
// the API server.
package rbac

import (
	"cmp"
	"fmt"
	"slices"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tlsbootstrap/tls-bootstrap-operator/api/v1alpha1"
	"github.com/tlsbootstrap/tls-bootstrap-operator/internal/render"
)

// Name suffixes of the rendered objects: tls-bootstrap:<policy>:<suffix>.
const (
	SuffixNodeBootstrapper        = "node-bootstrapper"
	SuffixApproveClientCSR        = "approve-node-client-csr"
	SuffixApproveClientRenewalCSR = "approve-node-client-renewal-csr"
	SuffixApproveServerRenewalCSR = "approve-node-server-renewal-csr"
	SuffixAutoApproveForGroup     = "auto-approve-csrs-for-group"
	SuffixAutoApproveRenewals     = "auto-approve-renewals-for-nodes"
)

// Built-in names the rendered objects refer to.
const (
	// NodeBootstrapperRole is the built-in ClusterRole that lets token holders create CSRs.
	NodeBootstrapperRole = "system:node-bootstrapper"
	// NodesGroup is the group every kubelet with a node client certificate is in.
	NodesGroup = "system:nodes"
)

// The subresources kube-controller-manager's csrapproving controller checks with a
// SubjectAccessReview before approving a kubelet CSR, and the kinds rendered.
const (
	certificatesGroup      = "certificates.k8s.io"
	nodeClientResource     = "certificatesigningrequests/nodeclient"
	selfNodeClientResource = "certificatesigningrequests/selfnodeclient"
	selfNodeServerResource = "certificatesigningrequests/selfnodeserver"
	clusterRoleKind        = "ClusterRole"
	clusterRoleBindingKind = "ClusterRoleBinding"
	objectNamePrefix       = "tls-bootstrap"
)

// Name is the name of the policy's object with the given suffix.
func Name(policyName, suffix string) string {
	return fmt.Sprintf("%s:%s:%s", objectNamePrefix, policyName, suffix)
}

// Render returns exactly the objects api.md lists for the policy's approver mode,
// each sorted by name:
//   - always the ClusterRoleBinding node-bootstrapper (spec.groups -> system:node-bootstrapper),
//     so token holders may create CSRs;
//   - approver KubeControllerManager: the ClusterRoles approve-node-client-csr,
//     approve-node-client-renewal-csr and, when serving is enabled,
//     approve-node-server-renewal-csr, and the bindings auto-approve-csrs-for-group
//     (spec.groups -> client role) and auto-approve-renewals-for-nodes (system:nodes ->
//     renewal role);
//   - approver Operator: nothing else. A nodeclient binding for the groups would let
//     kube-controller-manager approve their CSRs past every rule of the policy.
//
// Every object carries the operator's labels, the controller ownerReference and its
// TypeMeta (for server-side apply). An unset approver means Operator, the schema default.
func Render(p *v1alpha1.BootstrapPolicy) (roles []rbacv1.ClusterRole, bindings []rbacv1.ClusterRoleBinding) {
	bindings = append(bindings, binding(p, SuffixNodeBootstrapper, NodeBootstrapperRole, groupSubjects(p.Spec.Groups)))
	if p.Spec.Approval.Approver == v1alpha1.ApproverKubeControllerManager {
		roles = append(roles,
			role(p, SuffixApproveClientCSR, nodeClientResource),
			role(p, SuffixApproveClientRenewalCSR, selfNodeClientResource),
		)
		if p.Spec.Approval.Serving.Enabled {
			roles = append(roles, role(p, SuffixApproveServerRenewalCSR, selfNodeServerResource))
		}
		bindings = append(bindings,
			binding(p, SuffixAutoApproveForGroup, Name(p.Name, SuffixApproveClientCSR), groupSubjects(p.Spec.Groups)),
			binding(p, SuffixAutoApproveRenewals, Name(p.Name, SuffixApproveClientRenewalCSR),
				[]rbacv1.Subject{{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: NodesGroup}}),
		)
	}
	slices.SortFunc(roles, func(a, b rbacv1.ClusterRole) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(bindings, func(a, b rbacv1.ClusterRoleBinding) int { return cmp.Compare(a.Name, b.Name) })
	return roles, bindings
}

// Stale returns, among existing objects, the names of the policy's ClusterRoles and
// ClusterRoleBindings the current render no longer contains (left over after an
// approver switch or serving being turned off), and of the bindings whose roleRef
// differs from the rendered one: roleRef is immutable, so those are deleted and then
// created again. Objects without the policy's labels are never reported, so a list
// that holds other objects cannot make the controller delete them. Names are sorted.
func Stale(p *v1alpha1.BootstrapPolicy, roles []rbacv1.ClusterRole, bindings []rbacv1.ClusterRoleBinding) (staleRoles []string, staleBindings []string) {
	wantRoles, wantBindings := Render(p)
	roleRefs := map[string]rbacv1.RoleRef{}
	for _, b := range wantBindings {
		roleRefs[b.Name] = b.RoleRef
	}
	for i := range roles {
		r := &roles[i]
		if !render.IsOwnedBy(r, p.Name) {
			continue
		}
		if !slices.ContainsFunc(wantRoles, func(w rbacv1.ClusterRole) bool { return w.Name == r.Name }) {
			staleRoles = append(staleRoles, r.Name)
		}
	}
	for i := range bindings {
		b := &bindings[i]
		if !render.IsOwnedBy(b, p.Name) {
			continue
		}
		if ref, ok := roleRefs[b.Name]; !ok || ref != b.RoleRef {
			staleBindings = append(staleBindings, b.Name)
		}
	}
	slices.Sort(staleRoles)
	slices.Sort(staleBindings)
	return staleRoles, staleBindings
}

// GrantedRules is the union of the rules the policy's rendered ClusterRoles grant,
// one rule per API group and verb set, resources sorted. The operator can only create
// a ClusterRole granting what it holds itself (or with the escalate verb), so this
// documents and tests the operator's own RBAC.
func GrantedRules(p *v1alpha1.BootstrapPolicy) []rbacv1.PolicyRule {
	roles, _ := Render(p)
	var rules []rbacv1.PolicyRule
	for _, r := range roles {
		rules = append(rules, r.Rules...)
	}
	return mergeRules(rules)
}

// MaxGrantedRules is GrantedRules of the policy that grants the most: approver
// KubeControllerManager with serving enabled. It is what the operator's own
// ClusterRole must hold for any policy to be rendered.
func MaxGrantedRules() []rbacv1.PolicyRule {
	p := &v1alpha1.BootstrapPolicy{}
	p.Spec.Approval.Approver = v1alpha1.ApproverKubeControllerManager
	p.Spec.Approval.Serving.Enabled = true
	return GrantedRules(p)
}

func role(p *v1alpha1.BootstrapPolicy, suffix, resource string) rbacv1.ClusterRole {
	return rbacv1.ClusterRole{
		TypeMeta:   metav1.TypeMeta{APIVersion: rbacv1.SchemeGroupVersion.String(), Kind: clusterRoleKind},
		ObjectMeta: meta(p, suffix),
		Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{certificatesGroup},
			Resources: []string{resource},
			Verbs:     []string{"create"},
		}},
	}
}

func binding(p *v1alpha1.BootstrapPolicy, suffix, roleName string, subjects []rbacv1.Subject) rbacv1.ClusterRoleBinding {
	return rbacv1.ClusterRoleBinding{
		TypeMeta:   metav1.TypeMeta{APIVersion: rbacv1.SchemeGroupVersion.String(), Kind: clusterRoleBindingKind},
		ObjectMeta: meta(p, suffix),
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: clusterRoleKind, Name: roleName},
		Subjects:   subjects,
	}
}

// meta never copies the policy's own labels or annotations: Argo CD would take a
// copied tracking label as Git owning the object.
func meta(p *v1alpha1.BootstrapPolicy, suffix string) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name:            Name(p.Name, suffix),
		Labels:          render.Labels(p.Name),
		OwnerReferences: []metav1.OwnerReference{render.OwnerReference(p)},
	}
}

// groupSubjects sorts the groups: they are a set, so reordering them in the spec
// must not change the applied object.
func groupSubjects(groups []string) []rbacv1.Subject {
	sorted := slices.Compact(slices.Sorted(slices.Values(groups)))
	subjects := make([]rbacv1.Subject, 0, len(sorted))
	for _, g := range sorted {
		subjects = append(subjects, rbacv1.Subject{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: g})
	}
	return subjects
}

// mergeRules folds rules with the same API groups and verbs into one.
func mergeRules(rules []rbacv1.PolicyRule) []rbacv1.PolicyRule {
	var out []rbacv1.PolicyRule
	for _, r := range rules {
		i := slices.IndexFunc(out, func(o rbacv1.PolicyRule) bool {
			return slices.Equal(o.APIGroups, r.APIGroups) && slices.Equal(o.Verbs, r.Verbs) &&
				len(o.ResourceNames) == 0 && len(r.ResourceNames) == 0 && len(o.NonResourceURLs) == 0 && len(r.NonResourceURLs) == 0
		})
		if i < 0 {
			out = append(out, *r.DeepCopy())
			continue
		}
		out[i].Resources = slices.Compact(slices.Sorted(slices.Values(append(out[i].Resources, r.Resources...))))
	}
	return out
}
