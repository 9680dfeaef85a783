// Package v1alpha1 holds the BootstrapPolicy API, group bootstrap.tlsbootstrap.io.
// +kubebuilder:object:generate=true
// +groupName=bootstrap.tlsbootstrap.io
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of this API.
	GroupVersion = schema.GroupVersion{Group: "bootstrap.tlsbootstrap.io", Version: "v1alpha1"}

	// SchemeBuilder adds the types of this API to a scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds the types of this API to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &BootstrapPolicy{}, &BootstrapPolicyList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
