package controllers

import (
	"context"
	"fmt"
	"net"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
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
	"github.com/tlsbootstrap/tls-bootstrap-operator/internal/csr"
	"github.com/tlsbootstrap/tls-bootstrap-operator/internal/policy"
)

// nodeNameIndex indexes kubelet CSRs by the node they are for, to count a node's
// pending CSRs from the cache.
const nodeNameIndex = "tlsbootstrap.nodeName"

// CSRReconciler approves or denies kubelet CSRs by the BootstrapPolicies that govern them.
type CSRReconciler struct {
	client.Client
	Recorder events.EventRecorder
	Clock    clock.PassiveClock
	// QuietApprovals records no Event for an approval, only for denials and DryRun
	// verdicts: an Event is an API write as costly as the approval itself, and the
	// Approved condition carries the same message.
	QuietApprovals bool
}

// +kubebuilder:rbac:groups=certificates.k8s.io,resources=certificatesigningrequests,verbs=get;list;watch
// +kubebuilder:rbac:groups=certificates.k8s.io,resources=certificatesigningrequests/approval,verbs=update
// +kubebuilder:rbac:groups=certificates.k8s.io,resources=signers,verbs=approve,resourceNames=kubernetes.io/kube-apiserver-client-kubelet;kubernetes.io/kubelet-serving
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch
// +kubebuilder:rbac:groups=discovery.k8s.io,resources=endpointslices,verbs=get;list;watch

// Reconcile gathers the decision's inputs from the cache, decides in pure code and
// writes the decision with one API call.
func (r *CSRReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	c := &certificatesv1.CertificateSigningRequest{}
	if err := r.Get(ctx, req.NamespacedName, c); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if csr.Decided(c) || !csr.IsKubeletSigner(c.Spec.SignerName) {
		return ctrl.Result{}, nil
	}
	in, err := r.inputs(ctx, c)
	if err != nil {
		return ctrl.Result{}, err // transient: requeue, never deny
	}
	d := policy.Decide(in)
	r.recordDryRuns(c, d)
	if d.Outcome == policy.Leave {
		log.FromContext(ctx).V(1).Info("csr left pending", "kind", d.Kind, "node", d.NodeName,
			"governingPolicies", len(d.Verdicts), "why", d.Message)
		return ctrl.Result{}, nil
	}
	return ctrl.Result{}, r.write(ctx, c, d)
}

// inputs reads everything a decision needs from the cache.
func (r *CSRReconciler) inputs(ctx context.Context, c *certificatesv1.CertificateSigningRequest) (policy.Inputs, error) {
	var policies v1alpha1.BootstrapPolicyList
	if err := r.List(ctx, &policies); err != nil {
		return policy.Inputs{}, fmt.Errorf("listing policies: %w", err)
	}
	// Parsed and verified once here; Decide reuses it.
	insp := csr.Inspect(c)
	in := policy.Inputs{CSR: c, Policies: policies.Items, Inspection: &insp}
	name := insp.NodeName
	if name == "" {
		return in, nil
	}
	node := &corev1.Node{}
	switch err := r.Get(ctx, types.NamespacedName{Name: name}, node); {
	case err == nil:
		in.Node = node
	case !apierrors.IsNotFound(err):
		return in, fmt.Errorf("reading node %s: %w", name, err)
	}
	older, err := r.olderPending(ctx, c, name)
	if err != nil {
		return in, err
	}
	in.OlderPendingForNode = older
	if kind, _ := csr.Classify(c); kind == csr.KindServing {
		ips, err := r.apiServerIPs(ctx)
		if err != nil {
			return in, err
		}
		in.ForbiddenIPs = ips
	}
	return in, nil
}

// olderPending counts the node's undecided kubelet CSRs created before this one, so the
// per-node cap lets the first few through and holds back the flood after them.
func (r *CSRReconciler) olderPending(ctx context.Context, c *certificatesv1.CertificateSigningRequest, node string) (int, error) {
	var list certificatesv1.CertificateSigningRequestList
	// Read-only: no deep copy of the node's CSRs.
	if err := r.List(ctx, &list, client.MatchingFields{nodeNameIndex: node}, client.UnsafeDisableDeepCopy); err != nil {
		return 0, fmt.Errorf("listing csrs of node %s: %w", node, err)
	}
	n := 0
	for i := range list.Items {
		o := &list.Items[i]
		if o.UID == c.UID || csr.Decided(o) {
			continue
		}
		if o.CreationTimestamp.Before(&c.CreationTimestamp) ||
			(o.CreationTimestamp.Equal(&c.CreationTimestamp) && o.Name < c.Name) {
			n++
		}
	}
	return n, nil
}

// apiServerIPs are never valid serving SANs of a kubelet: the kubernetes Service's
// cluster IP and the API server endpoints (csr-validation rule 16).
func (r *CSRReconciler) apiServerIPs(ctx context.Context) ([]net.IP, error) {
	var ips []net.IP
	svc := &corev1.Service{}
	err := r.Get(ctx, types.NamespacedName{Namespace: metav1.NamespaceDefault, Name: "kubernetes"}, svc)
	if client.IgnoreNotFound(err) != nil {
		return nil, fmt.Errorf("reading the kubernetes service: %w", err)
	}
	for _, ip := range svc.Spec.ClusterIPs {
		ips = append(ips, net.ParseIP(ip))
	}
	var slices discoveryv1.EndpointSliceList
	if err := r.List(ctx, &slices, client.InNamespace(metav1.NamespaceDefault),
		client.MatchingLabels{discoveryv1.LabelServiceName: "kubernetes"}); err != nil {
		return nil, fmt.Errorf("listing the kubernetes endpoints: %w", err)
	}
	for _, s := range slices.Items {
		for _, e := range s.Endpoints {
			for _, a := range e.Addresses {
				ips = append(ips, net.ParseIP(a))
			}
		}
	}
	return ips, nil
}

// write is the one API call of a decision: the approval subresource.
func (r *CSRReconciler) write(ctx context.Context, c *certificatesv1.CertificateSigningRequest, d policy.Decision) error {
	cond := certificatesv1.CertificateSigningRequestCondition{
		Type: certificatesv1.CertificateApproved, Status: corev1.ConditionTrue,
		Reason: d.Reason, Message: d.Message, LastUpdateTime: metav1.NewTime(r.Clock.Now()),
	}
	eventType := corev1.EventTypeNormal
	if d.Outcome == policy.Deny {
		cond.Type, eventType = certificatesv1.CertificateDenied, corev1.EventTypeWarning
	}
	c = c.DeepCopy()
	c.Status.Conditions = append(c.Status.Conditions, cond)
	err := r.SubResource("approval").Update(ctx, c)
	if apierrors.IsConflict(err) || apierrors.IsInvalid(err) {
		// Someone (a human, kube-controller-manager) decided first, or the cache was
		// behind: the next event from the cache shows which, and a decided CSR is final.
		log.FromContext(ctx).V(1).Info("csr changed under us, will look again", "reason", err.Error())
		return err
	}
	if err != nil {
		return fmt.Errorf("writing decision: %w", err)
	}
	kind := string(d.Kind)
	csrDecisions.WithLabelValues(d.Policy, kind, string(d.Outcome), "false").Inc()
	csrDecisionLatency.WithLabelValues(kind, string(d.Outcome)).Observe(r.Clock.Since(c.CreationTimestamp.Time).Seconds())
	if d.Outcome == policy.Deny || !r.QuietApprovals {
		r.Recorder.Eventf(c, nil, eventType, d.Reason, string(d.Outcome), "%s", d.Message)
	}
	log.FromContext(ctx).Info("csr decided", "outcome", d.Outcome, "kind", kind, "node", d.NodeName, "policy", d.Policy)
	return nil
}

// recordDryRuns says, for each governing DryRun policy, what it would have done.
func (r *CSRReconciler) recordDryRuns(c *certificatesv1.CertificateSigningRequest, d policy.Decision) {
	for _, v := range d.Verdicts {
		if v.Mode != v1alpha1.ModeDryRun {
			continue
		}
		csrDecisions.WithLabelValues(v.Policy, string(d.Kind), string(v.Outcome), "true").Inc()
		r.Recorder.Eventf(c, nil, corev1.EventTypeNormal, "DryRun", string(v.Outcome),
			"BootstrapPolicy %q (DryRun) would %s this %s CSR%s", v.Policy, v.Outcome, d.Kind, violationSuffix(v.Violations))
	}
}

func violationSuffix(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return fmt.Sprintf(": %v", v)
}

// nodeNameOf indexes a pending kubelet CSR by the node it is for. The index function
// runs on every add and update of every CSR the cache sees (three per CSR: created,
// decided, signed), so it reads the name without verifying the signature (csr.NodeName),
// and skips decided CSRs, which neither the pending cap nor Node events look at.
func nodeNameOf(c *certificatesv1.CertificateSigningRequest) string {
	if csr.Decided(c) {
		return ""
	}
	return csr.NodeName(c)
}

// SetupWithManager watches pending kubelet CSRs, the Nodes serving checks depend on
// and the policies (a changed policy re-evaluates every pending CSR).
func (r *CSRReconciler) SetupWithManager(mgr ctrl.Manager, workers int) error {
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &certificatesv1.CertificateSigningRequest{}, nodeNameIndex,
		func(o client.Object) []string {
			if n := nodeNameOf(o.(*certificatesv1.CertificateSigningRequest)); n != "" {
				return []string{n}
			}
			return nil
		}); err != nil {
		return fmt.Errorf("indexing csrs by node: %w", err)
	}
	if err := registerCSRCollector(mgr.GetCache()); err != nil {
		return err
	}
	pending := predicate.NewPredicateFuncs(func(o client.Object) bool {
		c := o.(*certificatesv1.CertificateSigningRequest)
		return csr.IsKubeletSigner(c.Spec.SignerName) && !csr.Decided(c)
	})
	return ctrl.NewControllerManagedBy(mgr).
		For(&certificatesv1.CertificateSigningRequest{}, builder.WithPredicates(pending)).
		Watches(&corev1.Node{}, handler.EnqueueRequestsFromMapFunc(r.pendingForNode)).
		Watches(&v1alpha1.BootstrapPolicy{}, handler.EnqueueRequestsFromMapFunc(r.allPending),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		WithOptions(controller.Options{MaxConcurrentReconciles: workers}).
		Named("csr").
		Complete(r)
}

func (r *CSRReconciler) pendingForNode(ctx context.Context, o client.Object) []reconcile.Request {
	return r.pending(ctx, client.MatchingFields{nodeNameIndex: o.GetName()})
}

func (r *CSRReconciler) allPending(ctx context.Context, _ client.Object) []reconcile.Request {
	return r.pending(ctx)
}

func (r *CSRReconciler) pending(ctx context.Context, opts ...client.ListOption) []reconcile.Request {
	var list certificatesv1.CertificateSigningRequestList
	// Only names and conditions are read: a deep copy of every CSR of the cluster on each
	// policy event would be the operator's largest allocation.
	if err := r.List(ctx, &list, append(opts, client.UnsafeDisableDeepCopy)...); err != nil {
		log.FromContext(ctx).Error(err, "listing pending csrs")
		return nil
	}
	var reqs []reconcile.Request
	for i := range list.Items {
		if c := &list.Items[i]; csr.IsKubeletSigner(c.Spec.SignerName) && !csr.Decided(c) {
			reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Name: c.Name}})
		}
	}
	return reqs
}
