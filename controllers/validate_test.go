package controllers

import (
	"context"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/tlsbootstrap/tls-bootstrap-operator/api/v1alpha1"
)

// A policy stored before its CRD had the CEL rules (or by a client that skipped them)
// can still carry what RE2 refuses: the reconciler refuses it itself, names the field,
// marks it Stalled and touches nothing else.
func TestReconcileRefusesWhatAdmissionMissed(t *testing.T) {
	tests := map[string]struct {
		mutate func(*v1alpha1.BootstrapPolicy)
		field  string
	}{
		"a node name pattern that does not compile": {
			mutate: func(p *v1alpha1.BootstrapPolicy) { p.Spec.Approval.NodeNamePattern = "^worker-[" },
			field:  "spec.approval.nodeNamePattern",
		},
		"a rotateBefore as long as the ttl": {
			mutate: func(p *v1alpha1.BootstrapPolicy) {
				p.Spec.Token.RotateBefore = &metav1.Duration{Duration: p.Spec.Token.TTL.Duration}
			},
			field: "spec.token.rotateBefore",
		},
		"a ttl of zero": {
			mutate: func(p *v1alpha1.BootstrapPolicy) { p.Spec.Token.TTL = metav1.Duration{} },
			field:  "spec.token.ttl",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			p := &v1alpha1.BootstrapPolicy{
				ObjectMeta: metav1.ObjectMeta{Name: "hostile", Generation: 1},
				Spec: v1alpha1.BootstrapPolicySpec{
					Groups: []string{"system:bootstrappers:hostile"},
					Token:  v1alpha1.TokenSpec{TTL: metav1.Duration{Duration: time.Hour}},
				},
			}
			tc.mutate(p)
			got, res := reconcileOnFake(t, p)
			if res.RequeueAfter != 0 {
				t.Fatalf("an invalid spec is terminal until the spec changes: got %v", res)
			}
			ready := meta.FindStatusCondition(got.Status.Conditions, v1alpha1.ConditionReady)
			if ready == nil || ready.Status != metav1.ConditionFalse || ready.Reason != ReasonInvalidSpec {
				t.Fatalf("want Ready=False/InvalidSpec, got %+v", ready)
			}
			if !strings.Contains(ready.Message, tc.field) {
				t.Errorf("message %q does not name %s", ready.Message, tc.field)
			}
			if !meta.IsStatusConditionTrue(got.Status.Conditions, "Stalled") {
				t.Errorf("want Stalled=True for kstatus, got %+v", got.Status.Conditions)
			}
			if len(got.Status.Tokens) != 0 {
				t.Errorf("an invalid policy must mint nothing, got %+v", got.Status.Tokens)
			}
		})
	}
}

// reconcileOnFake runs the policy reconciler once on p, stored in a fake client (no API
// server, so no admission: the way to see what the reconciler makes of a spec CEL would
// refuse), and returns the stored policy and the result. Only for specs the reconciler
// refuses before it touches tokens, RBAC or the kubeconfig.
func reconcileOnFake(t *testing.T, p *v1alpha1.BootstrapPolicy) (*v1alpha1.BootstrapPolicy, ctrl.Result) {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(p).WithStatusSubresource(p).Build()
	r := &BootstrapPolicyReconciler{Client: c, APIReader: c, Recorder: events.NewFakeRecorder(10),
		Clock: clocktesting.NewFakeClock(time.Now())}
	res, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: types.NamespacedName{Name: p.Name}})
	if err != nil {
		t.Fatal(err)
	}
	got := &v1alpha1.BootstrapPolicy{}
	if err := c.Get(context.Background(), types.NamespacedName{Name: p.Name}, got); err != nil {
		t.Fatal(err)
	}
	return got, res
}
