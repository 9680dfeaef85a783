package controllers

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/tlsbootstrap/tls-bootstrap-operator/api/v1alpha1"
	"github.com/tlsbootstrap/tls-bootstrap-operator/internal/kubeconfig"
	"github.com/tlsbootstrap/tls-bootstrap-operator/internal/rbac"
	"github.com/tlsbootstrap/tls-bootstrap-operator/internal/token"
)

// reconcileRBAC applies the rendered ClusterRoles and ClusterRoleBindings, deletes what
// the policy no longer renders (above all a nodeclient binding after a switch to the
// Operator approver) and recreates bindings whose immutable roleRef changed.
func (r *BootstrapPolicyReconciler) reconcileRBAC(ctx context.Context, p *v1alpha1.BootstrapPolicy, status *v1alpha1.BootstrapPolicyStatus) error {
	err := r.applyRBAC(ctx, p, wasReady(p, v1alpha1.ConditionRBACReady))
	if err != nil {
		setCondition(status, p, v1alpha1.ConditionRBACReady, metav1.ConditionFalse, ReasonRBACError, err.Error())
		return err
	}
	setCondition(status, p, v1alpha1.ConditionRBACReady, metav1.ConditionTrue, ReasonReconciled,
		fmt.Sprintf("RBAC for approver %s is in place", p.Spec.Approval.Approver))
	return nil
}

func (r *BootstrapPolicyReconciler) applyRBAC(ctx context.Context, p *v1alpha1.BootstrapPolicy, wasReady bool) error {
	var roles rbacv1.ClusterRoleList
	var bindings rbacv1.ClusterRoleBindingList
	byPolicy := client.MatchingLabels{v1alpha1.PolicyLabel: p.Name}
	if err := r.List(ctx, &roles, byPolicy); err != nil {
		return fmt.Errorf("listing cluster roles: %w", err)
	}
	if err := r.List(ctx, &bindings, byPolicy); err != nil {
		return fmt.Errorf("listing cluster role bindings: %w", err)
	}
	staleRoles, staleBindings := rbac.Stale(p, roles.Items, bindings.Items)
	for _, name := range staleBindings {
		if err := r.deleteIgnoreMissing(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
			return err
		}
	}
	for _, name := range staleRoles {
		if err := r.deleteIgnoreMissing(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
			return err
		}
	}

	wantRoles, wantBindings := rbac.Render(p)
	haveRoles := map[string]*rbacv1.ClusterRole{}
	for i := range roles.Items {
		haveRoles[roles.Items[i].Name] = &roles.Items[i]
	}
	haveBindings := map[string]*rbacv1.ClusterRoleBinding{}
	for i := range bindings.Items {
		haveBindings[bindings.Items[i].Name] = &bindings.Items[i]
	}
	var repaired []string
	for i := range wantRoles {
		want, have := &wantRoles[i], haveRoles[wantRoles[i].Name]
		if have != nil && equality.Semantic.DeepEqual(want.Rules, have.Rules) && sameMeta(want, have) {
			continue
		}
		if err := r.apply(ctx, want); err != nil {
			return err
		}
		repaired = append(repaired, want.Name)
	}
	for i := range wantBindings {
		want, have := &wantBindings[i], haveBindings[wantBindings[i].Name]
		if have != nil && equality.Semantic.DeepEqual(want.Subjects, have.Subjects) &&
			want.RoleRef == have.RoleRef && sameMeta(want, have) {
			continue
		}
		if err := r.apply(ctx, want); err != nil {
			return err
		}
		repaired = append(repaired, want.Name)
	}
	if wasReady && len(repaired) > 0 {
		r.Recorder.Eventf(p, nil, corev1.EventTypeWarning, "RBACRepaired", "ApplyRBAC",
			"repaired drifted or missing RBAC: %v", repaired)
		log.FromContext(ctx).Info("repaired RBAC drift", "objects", repaired)
	}
	return nil
}

// sameMeta: the labels and the controller reference the operator sets are still there.
func sameMeta(want, have metav1.Object) bool {
	for k, v := range want.GetLabels() {
		if have.GetLabels()[k] != v {
			return false
		}
	}
	return metav1.IsControlledBy(have, &metav1.ObjectMeta{UID: want.GetOwnerReferences()[0].UID})
}

func wasReady(p *v1alpha1.BootstrapPolicy, t string) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == t {
			return c.Status == metav1.ConditionTrue
		}
	}
	return false
}

// apply server-side applies a rendered object with the operator's field manager, so
// only the fields it renders are its own and nothing else is touched.
func (r *BootstrapPolicyReconciler) apply(ctx context.Context, obj client.Object) error {
	raw, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return fmt.Errorf("converting %s: %w", obj.GetName(), err)
	}
	u := &unstructured.Unstructured{Object: raw}
	unstructured.RemoveNestedField(u.Object, "metadata", "creationTimestamp")
	unstructured.RemoveNestedField(u.Object, "status")
	if err := r.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(FieldManager), client.ForceOwnership); err != nil {
		return fmt.Errorf("applying %s %s: %w", u.GetKind(), u.GetName(), err)
	}
	return nil
}

func (r *BootstrapPolicyReconciler) deleteIgnoreMissing(ctx context.Context, obj client.Object) error {
	if err := r.Delete(ctx, obj); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("deleting %s: %w", obj.GetName(), err)
	}
	return nil
}

// reconcileKubeconfig publishes the bootstrap kubeconfig for the current token, and
// removes a kubeconfig Secret the policy no longer asks for.
//
// A missing CA is looked for again after CARetry: the operator only gets the CA
// ConfigMaps (a watch would need list and watch on every ConfigMap of the cluster), so
// nothing else would tell it that one appeared.
func (r *BootstrapPolicyReconciler) reconcileKubeconfig(ctx context.Context, p *v1alpha1.BootstrapPolicy, current *corev1.Secret, status *v1alpha1.BootstrapPolicyStatus) (time.Duration, error) {
	if err := r.deleteStaleKubeconfigs(ctx, p); err != nil {
		return 0, err
	}
	spec := p.Spec.Kubeconfig
	if spec == nil {
		return 0, nil
	}
	if current == nil {
		setCondition(status, p, v1alpha1.ConditionKubeconfigReady, metav1.ConditionFalse, ReasonDependencyError, "no current bootstrap token")
		return 0, nil
	}
	ca, source, err := r.caBundle(ctx, spec)
	if err != nil {
		setCondition(status, p, v1alpha1.ConditionKubeconfigReady, metav1.ConditionFalse, ReasonKubeconfigError, err.Error())
		return 0, err
	}
	if len(ca) == 0 {
		// Reported, not guessed: a kubelet given the wrong CA would fail far from here.
		msg := fmt.Sprintf("no CA: spec.kubeconfig.caBundle is empty, kube-public/cluster-info and %s/kube-root-ca.crt hold none", spec.SecretRef.Namespace)
		setCondition(status, p, v1alpha1.ConditionKubeconfigReady, metav1.ConditionFalse, ReasonCANotFound, msg)
		return r.caRetry(), nil
	}
	if err := r.publishKubeconfig(ctx, p, current, ca); err != nil {
		setCondition(status, p, v1alpha1.ConditionKubeconfigReady, metav1.ConditionFalse, ReasonKubeconfigError, err.Error())
		return 0, err
	}
	status.KubeconfigSecret = spec.SecretRef.Namespace + "/" + spec.SecretRef.Name
	setCondition(status, p, v1alpha1.ConditionKubeconfigReady, metav1.ConditionTrue, ReasonReconciled,
		fmt.Sprintf("%s holds token %s, CA from %s", status.KubeconfigSecret, current.Name[len("bootstrap-token-"):], source))
	return 0, nil
}

// DefaultCARetry is how soon a policy whose CA is missing is looked at again.
const DefaultCARetry = 30 * time.Second

func (r *BootstrapPolicyReconciler) caRetry() time.Duration {
	if r.CARetry > 0 {
		return r.CARetry
	}
	return DefaultCARetry
}

func (r *BootstrapPolicyReconciler) publishKubeconfig(ctx context.Context, p *v1alpha1.BootstrapPolicy, current *corev1.Secret, ca []byte) error {
	tok, err := token.SecretOf(current)
	if err != nil {
		return fmt.Errorf("reading current token: %w", err)
	}
	data, err := kubeconfig.Render(p.Spec.Kubeconfig.Server, ca, tok)
	if err != nil {
		return fmt.Errorf("rendering kubeconfig: %w", err)
	}
	want := kubeconfig.RenderSecret(p, data)
	have := &corev1.Secret{}
	err = r.Get(ctx, client.ObjectKeyFromObject(want), have)
	if err == nil && string(have.Data[kubeconfig.Key]) == string(data) && sameMeta(want, have) {
		return nil
	}
	if client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("reading kubeconfig secret: %w", err)
	}
	return r.apply(ctx, want)
}

// caBundle finds the CA kubelets must trust: the spec's, else cluster-info, else the
// kube-root-ca.crt ConfigMap of the Secret's namespace. It reads with single gets, so
// the operator needs no list or watch on ConfigMaps.
func (r *BootstrapPolicyReconciler) caBundle(ctx context.Context, spec *v1alpha1.KubeconfigSpec) ([]byte, string, error) {
	if len(spec.CABundle) > 0 {
		return spec.CABundle, "spec.kubeconfig.caBundle", nil
	}
	cm := &corev1.ConfigMap{}
	err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: metav1.NamespacePublic, Name: "cluster-info"}, cm)
	if client.IgnoreNotFound(err) != nil {
		return nil, "", fmt.Errorf("reading kube-public/cluster-info: %w", err)
	}
	if err == nil {
		ca, err := kubeconfig.CAFromClusterInfo(cm)
		if err != nil {
			return nil, "", fmt.Errorf("reading kube-public/cluster-info: %w", err)
		}
		if len(ca) > 0 {
			return ca, "kube-public/cluster-info", nil
		}
	}
	cm = &corev1.ConfigMap{}
	err = r.APIReader.Get(ctx, types.NamespacedName{Namespace: spec.SecretRef.Namespace, Name: "kube-root-ca.crt"}, cm)
	if apierrors.IsNotFound(err) {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("reading %s/kube-root-ca.crt: %w", spec.SecretRef.Namespace, err)
	}
	ca, err := kubeconfig.CAFromRootCA(cm)
	if err != nil {
		return nil, "", fmt.Errorf("reading %s/kube-root-ca.crt: %w", spec.SecretRef.Namespace, err)
	}
	return ca, spec.SecretRef.Namespace + "/kube-root-ca.crt", nil
}

// deleteStaleKubeconfigs removes kubeconfig Secrets of the policy other than the one
// spec.kubeconfig names (the field was removed or secretRef moved).
func (r *BootstrapPolicyReconciler) deleteStaleKubeconfigs(ctx context.Context, p *v1alpha1.BootstrapPolicy) error {
	var list corev1.SecretList
	if err := r.List(ctx, &list, client.MatchingLabels{v1alpha1.PolicyLabel: p.Name}); err != nil {
		return fmt.Errorf("listing kubeconfig secrets: %w", err)
	}
	var errs []error
	for i := range list.Items {
		s := &list.Items[i]
		if s.Type == corev1.SecretTypeOpaque && s.Data[kubeconfig.Key] != nil && !isRef(s, p.Spec.Kubeconfig) {
			errs = append(errs, r.deleteIgnoreMissing(ctx, s))
		}
	}
	return errors.Join(errs...)
}

func isRef(s *corev1.Secret, spec *v1alpha1.KubeconfigSpec) bool {
	return spec != nil && s.Namespace == spec.SecretRef.Namespace && s.Name == spec.SecretRef.Name
}
