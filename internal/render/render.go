// Package render holds the metadata every object the operator renders for a
// BootstrapPolicy carries, so that token Secrets, the kubeconfig Secret and the
// RBAC objects agree on how they are found (labels) and garbage-collected
// (ownerReference).
package render

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/tlsbootstrap/tls-bootstrap-operator/api/v1alpha1"
)

// PolicyKind is the kind written into ownerReferences.
const PolicyKind = "BootstrapPolicy"

// Labels returns the two labels every rendered object carries: the controller lists
// its children by them. It returns a fresh map so callers may add to it.
func Labels(policyName string) map[string]string {
	return map[string]string{
		v1alpha1.ManagedByLabel: v1alpha1.ManagedByValue,
		v1alpha1.PolicyLabel:    policyName,
	}
}

// IsOwnedBy reports whether obj carries the labels Labels(policyName) puts on it.
// Callers use it so that a list handed to them by mistake never makes them act on
// another policy's (or a human's) objects.
func IsOwnedBy(obj metav1.Object, policyName string) bool {
	l := obj.GetLabels()
	return l[v1alpha1.ManagedByLabel] == v1alpha1.ManagedByValue && l[v1alpha1.PolicyLabel] == policyName
}

// OwnerReference is the controller ownerReference to the policy. Deleting the policy
// then deletes its children, and Argo CD shows them under the policy instead of
// pruning them. A cluster-scoped owner may own both namespaced and cluster-scoped
// objects.
func OwnerReference(p *v1alpha1.BootstrapPolicy) metav1.OwnerReference {
	return metav1.OwnerReference{
		APIVersion:         v1alpha1.GroupVersion.String(),
		Kind:               PolicyKind,
		Name:               p.Name,
		UID:                p.UID,
		Controller:         ptr.To(true),
		BlockOwnerDeletion: ptr.To(true),
	}
}
