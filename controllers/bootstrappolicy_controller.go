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
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/tlsbootstrap/tls-bootstrap-operator/api/v1alpha1"
	"github.com/tlsbootstrap/tls-bootstrap-operator/internal/policy"
	"github.com/tlsbootstrap/tls-bootstrap-operator/internal/token"
)

// FieldManager owns every field the operator writes with server-side apply.
const FieldManager = "tls-bootstrap-operator"

// Condition reasons. CamelCase, as kstatus and Argo CD expect.
const (
	ReasonReconciled      = "Reconciled"
	ReasonReconciling     = "Reconciling"
	ReasonInvalidSpec     = "InvalidSpec"
	ReasonTokenError      = "TokenError"
	ReasonRBACError       = "RBACError"
	ReasonCANotFound      = "CANotFound"
	ReasonKubeconfigError = "KubeconfigError"
	ReasonDependencyError = "DependencyNotReady"
)

// BootstrapPolicyReconciler keeps a policy's bootstrap tokens, bootstrap kubeconfig and
// RBAC in line with its spec, and reports what it did in status.
type BootstrapPolicyReconciler struct {
	client.Client
	// APIReader reads around the cache where a stale read would do harm: the policy's own
	// token Secrets (a token minted a moment ago must never be minted twice) and the CA
	// ConfigMaps, which the operator only ever gets, never lists or watches.
	APIReader client.Reader
	Recorder  events.EventRecorder
	Clock     clock.PassiveClock
	// CARetry is how soon a policy whose CA is missing is looked at again; 0 means
	// DefaultCARetry.
	CARetry time.Duration
	// Generate makes a new "id.secret" token; nil means cluster-bootstrap's crypto-random
	// one (token.CryptoGenerator).
	Generate token.Generator
}

// +kubebuilder:rbac:groups=bootstrap.tlsbootstrap.io,resources=bootstrappolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups=bootstrap.tlsbootstrap.io,resources=bootstrappolicies/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=bootstrap.tlsbootstrap.io,resources=bootstrappolicies/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=clusterroles;clusterrolebindings,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=clusterroles,verbs=bind,resourceNames=system:node-bootstrapper
// +kubebuilder:rbac:groups=certificates.k8s.io,resources=certificatesigningrequests/nodeclient;certificatesigningrequests/selfnodeclient;certificatesigningrequests/selfnodeserver,verbs=create
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile loads the policy, plans and applies its tokens, kubeconfig and RBAC, and
// writes status once.
func (r *BootstrapPolicyReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	p := &v1alpha1.BootstrapPolicy{}
	if err := r.Get(ctx, req.NamespacedName, p); err != nil {
		if apierrors.IsNotFound(err) {
			forgetPolicyMetrics(req.Name)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !p.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil // ownerReferences hand the children to the garbage collector
	}
	status := p.Status.DeepCopy()
	result, err := r.reconcileSpec(ctx, p, status)
	if err != nil {
		policyReconcileErrors.WithLabelValues(p.Name).Inc()
	}
	summarize(p, status, err)
	if serr := r.writeStatus(ctx, p, status); serr != nil {
		if apierrors.IsConflict(serr) && err == nil {
			// The policy changed since the cache gave it to us, most often by our own
			// status write of a moment ago that the cache has not seen yet (the Secrets and
			// RBAC that write created bring us straight back). Status computed from a stale
			// copy would be written again with new transition times: look again instead.
			log.FromContext(ctx).V(1).Info("policy changed since it was read, looking again")
			return ctrl.Result{RequeueAfter: staleRetry}, nil
		}
		return ctrl.Result{}, errors.Join(err, serr)
	}
	if errors.Is(err, errInvalidSpec) {
		return ctrl.Result{}, nil // only a new spec can fix it, and a new spec triggers a reconcile
	}
	return result, err
}

var errInvalidSpec = errors.New("invalid spec")

// staleRetry is how soon a policy whose status write met a newer version is looked at
// again: the cache is usually milliseconds behind.
const staleRetry = 100 * time.Millisecond

// reconcileSpec runs the three steps; every step reports into status, and a failing
// step does not stop the others (RBAC does not wait for a CA).
func (r *BootstrapPolicyReconciler) reconcileSpec(ctx context.Context, p *v1alpha1.BootstrapPolicy, status *v1alpha1.BootstrapPolicyStatus) (ctrl.Result, error) {
	if field, err := validate(p); err != nil {
		msg := fmt.Sprintf("%s: %v", field, err)
		for _, t := range conditionTypes(p) {
			setCondition(status, p, t, metav1.ConditionFalse, ReasonInvalidSpec, msg)
		}
		return ctrl.Result{}, fmt.Errorf("%w: %s", errInvalidSpec, msg)
	}
	current, requeue, tokErr := r.reconcileTokens(ctx, p, status)
	rbacErr := r.reconcileRBAC(ctx, p, status)
	kcRequeue, kcErr := r.reconcileKubeconfig(ctx, p, current, status)
	if kcRequeue > 0 && (requeue == 0 || kcRequeue < requeue) {
		requeue = kcRequeue
	}
	return ctrl.Result{RequeueAfter: requeue}, errors.Join(tokErr, rbacErr, kcErr)
}

// validate refuses what admission cannot: CEL accepts some patterns Go's RE2 does not.
func validate(p *v1alpha1.BootstrapPolicy) (string, error) {
	if _, err := policy.CompilePattern(p.Spec.Approval.NodeNamePattern); err != nil {
		return "spec.approval.nodeNamePattern", err
	}
	if p.Spec.Token.TTL.Duration <= 0 {
		return "spec.token.ttl", errors.New("must be positive")
	}
	if rb := p.Spec.Token.EffectiveRotateBefore(); rb <= 0 || rb >= p.Spec.Token.TTL.Duration {
		return "spec.token.rotateBefore", errors.New("must be positive and shorter than ttl")
	}
	return "", nil
}

// reconcileTokens applies the token plan and returns the current token Secret.
func (r *BootstrapPolicyReconciler) reconcileTokens(ctx context.Context, p *v1alpha1.BootstrapPolicy, status *v1alpha1.BootstrapPolicyStatus) (*corev1.Secret, time.Duration, error) {
	current, plan, err := r.applyTokenPlan(ctx, p)
	if err != nil {
		setCondition(status, p, v1alpha1.ConditionTokensReady, metav1.ConditionFalse, ReasonTokenError, err.Error())
		return nil, 0, err
	}
	status.Tokens = tokenStatuses(plan.Live)
	tokenMetrics(p, plan)
	msg := fmt.Sprintf("current token %s expires at %s", plan.Current.ID, plan.Current.Expires.UTC().Format(time.RFC3339))
	setCondition(status, p, v1alpha1.ConditionTokensReady, metav1.ConditionTrue, ReasonReconciled, msg)
	return current, plan.RequeueAfter, nil
}

// applyTokenPlan plans from a live list (never the cache: a token minted a moment ago
// must not be minted again) and carries the plan out. A token id that collides with a
// Secret the operator cannot see is simply planned again.
func (r *BootstrapPolicyReconciler) applyTokenPlan(ctx context.Context, p *v1alpha1.BootstrapPolicy) (*corev1.Secret, token.Plan, error) {
	const attempts = 5
	for range attempts {
		var list corev1.SecretList
		if err := r.APIReader.List(ctx, &list, client.InNamespace(metav1.NamespaceSystem),
			client.MatchingLabels{v1alpha1.PolicyLabel: p.Name, v1alpha1.ManagedByLabel: v1alpha1.ManagedByValue}); err != nil {
			return nil, token.Plan{}, fmt.Errorf("listing token secrets: %w", err)
		}
		plan, err := token.PlanTokens(p, list.Items, r.Clock.Now(), r.Generate)
		if err != nil {
			return nil, plan, fmt.Errorf("planning tokens: %w", err)
		}
		for _, d := range plan.Delete {
			if err := r.deleteToken(ctx, p, d, plan.DeleteReasons[d.SecretName]); err != nil {
				return nil, plan, err
			}
		}
		if plan.Create != nil {
			err := r.Create(ctx, plan.Create)
			if apierrors.IsAlreadyExists(err) {
				continue // id collision with a Secret outside the policy: plan again with a new id
			}
			if err != nil {
				return nil, plan, fmt.Errorf("creating token %s: %w", plan.Create.Name, err)
			}
			r.tokenEvent(p, plan)
			return plan.Create, plan, nil
		}
		for i := range list.Items {
			if list.Items[i].Name == plan.Current.SecretName {
				return &list.Items[i], plan, nil
			}
		}
		return nil, plan, fmt.Errorf("current token secret %s vanished", plan.Current.SecretName)
	}
	return nil, token.Plan{}, fmt.Errorf("no free token id after %d attempts", attempts)
}

func (r *BootstrapPolicyReconciler) deleteToken(ctx context.Context, p *v1alpha1.BootstrapPolicy, t token.Token, why string) error {
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: metav1.NamespaceSystem, Name: t.SecretName}}
	if err := r.Delete(ctx, s, client.Preconditions{}); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("deleting token %s: %w", t.ID, err)
	}
	reason, note := "TokenRevoked", revokeNotes[why]
	if why == token.ReasonExpired {
		reason = "TokenExpired"
	}
	r.Recorder.Eventf(p, nil, corev1.EventTypeNormal, reason, "DeleteToken", "bootstrap token %s %s", t.ID, note)
	log.FromContext(ctx).Info("deleted bootstrap token", "tokenID", t.ID, "why", why)
	return nil
}

// revokeNotes explain, in Events, why a token was deleted.
var revokeNotes = map[string]string{
	token.ReasonExpired:     "expired and was deleted",
	token.ReasonRevoked:     "was revoked: the rotate annotation changed",
	token.ReasonSpecChanged: "was replaced: spec.groups, spec.token.usages or ttl changed",
	token.ReasonInvalid:     "was deleted: its Secret is not a usable bootstrap token",
}

func (r *BootstrapPolicyReconciler) tokenEvent(p *v1alpha1.BootstrapPolicy, plan token.Plan) {
	reason := "TokenCreated"
	if plan.CreateReason == token.ReasonRotation {
		reason = "TokenRotated"
	}
	r.Recorder.Eventf(p, nil, corev1.EventTypeNormal, reason, "CreateToken",
		"bootstrap token %s created (%s), expires at %s", plan.Current.ID, plan.CreateReason,
		plan.Current.Expires.UTC().Format(time.RFC3339))
}

func tokenStatuses(live []token.Token) []v1alpha1.TokenStatus {
	out := make([]v1alpha1.TokenStatus, 0, len(live))
	for _, t := range live {
		out = append(out, v1alpha1.TokenStatus{ID: t.ID, SecretName: t.SecretName, ExpiresAt: metav1.NewTime(t.Expires.UTC())})
	}
	return out
}

// writeStatus patches status only when it changed, so a steady policy's
// resourceVersion stays put and GitOps tools see no churn. The patch carries the
// resourceVersion it was computed from, so status computed from a stale copy is refused
// (a Conflict) rather than written.
func (r *BootstrapPolicyReconciler) writeStatus(ctx context.Context, p *v1alpha1.BootstrapPolicy, status *v1alpha1.BootstrapPolicyStatus) error {
	if equality.Semantic.DeepEqual(&p.Status, status) {
		return nil
	}
	orig := p.DeepCopy()
	p.Status = *status
	if err := r.Status().Patch(ctx, p, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
		return fmt.Errorf("writing status: %w", err)
	}
	return nil
}

func conditionTypes(p *v1alpha1.BootstrapPolicy) []string {
	types := []string{v1alpha1.ConditionTokensReady, v1alpha1.ConditionRBACReady}
	if p.Spec.Kubeconfig != nil {
		types = append(types, v1alpha1.ConditionKubeconfigReady)
	}
	return types
}

func setCondition(status *v1alpha1.BootstrapPolicyStatus, p *v1alpha1.BootstrapPolicy, t string, s metav1.ConditionStatus, reason, msg string) {
	meta.SetStatusCondition(&status.Conditions, metav1.Condition{
		Type: t, Status: s, Reason: reason, Message: msg, ObservedGeneration: p.Generation,
	})
}

// summarize writes Ready from the step conditions and kstatus's abnormal-true
// Reconciling/Stalled, and bumps observedGeneration only when the spec was handled.
func summarize(p *v1alpha1.BootstrapPolicy, status *v1alpha1.BootstrapPolicyStatus, err error) {
	if p.Spec.Kubeconfig == nil {
		meta.RemoveStatusCondition(&status.Conditions, v1alpha1.ConditionKubeconfigReady)
		status.KubeconfigSecret = ""
	}
	var notReady []string
	for _, t := range conditionTypes(p) {
		if c := meta.FindStatusCondition(status.Conditions, t); c == nil || c.Status != metav1.ConditionTrue {
			notReady = append(notReady, t)
		}
	}
	switch {
	case errors.Is(err, errInvalidSpec):
		msg := meta.FindStatusCondition(status.Conditions, v1alpha1.ConditionTokensReady).Message
		setCondition(status, p, v1alpha1.ConditionReady, metav1.ConditionFalse, ReasonInvalidSpec, msg)
		setCondition(status, p, "Stalled", metav1.ConditionTrue, ReasonInvalidSpec, msg)
		meta.RemoveStatusCondition(&status.Conditions, "Reconciling")
		status.ObservedGeneration = p.Generation
	case len(notReady) > 0:
		msg := fmt.Sprintf("not ready: %v", notReady)
		setCondition(status, p, v1alpha1.ConditionReady, metav1.ConditionFalse, ReasonDependencyError, msg)
		setCondition(status, p, "Reconciling", metav1.ConditionTrue, ReasonReconciling, msg)
		meta.RemoveStatusCondition(&status.Conditions, "Stalled")
	default:
		setCondition(status, p, v1alpha1.ConditionReady, metav1.ConditionTrue, ReasonReconciled, "tokens, RBAC and kubeconfig are in place")
		meta.RemoveStatusCondition(&status.Conditions, "Reconciling")
		meta.RemoveStatusCondition(&status.Conditions, "Stalled")
		status.ObservedGeneration = p.Generation
	}
}

// SetupWithManager watches the policies and everything they own, so drift in a
// rendered object (edited or deleted) is repaired at once.
func (r *BootstrapPolicyReconciler) SetupWithManager(mgr ctrl.Manager, workers int) error {
	owned := handler.EnqueueRequestForOwner(mgr.GetScheme(), mgr.GetRESTMapper(), &v1alpha1.BootstrapPolicy{}, handler.OnlyControllerOwner())
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.BootstrapPolicy{}, builder.WithPredicates(
			// Status writes do not change the generation; the rotate annotation does not either.
			predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		Watches(&corev1.Secret{}, owned).
		Watches(&rbacv1.ClusterRole{}, owned).
		Watches(&rbacv1.ClusterRoleBinding{}, owned).
		WithOptions(controller.Options{MaxConcurrentReconciles: workers}).
		Named("bootstrappolicy").
		Complete(r)
}

var _ reconcile.Reconciler = &BootstrapPolicyReconciler{}
