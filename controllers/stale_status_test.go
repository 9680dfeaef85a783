package controllers

import (
	"context"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/events"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/tlsbootstrap/tls-bootstrap-operator/api/v1alpha1"
)

// The cache hands the reconciler a policy from before its own last status write (the
// Secrets and RBAC that write created bring it straight back). Status computed from that
// copy is the same but for its transition times; it must not be written, or every new
// policy's status would churn once.
func TestStatusFromAStaleReadIsNotWritten(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	p := &v1alpha1.BootstrapPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "fresh", Generation: 1},
		Spec: v1alpha1.BootstrapPolicySpec{
			Groups: []string{"system:bootstrappers:fresh"},
			Token:  v1alpha1.TokenSpec{TTL: metav1.Duration{Duration: time.Hour}, Usages: []v1alpha1.TokenUsage{v1alpha1.UsageAuthentication}},
			Approval: v1alpha1.ApprovalSpec{Approver: v1alpha1.ApproverOperator, Mode: v1alpha1.ModeEnforce,
				OnViolation: v1alpha1.ViolationDeny, MaxPendingPerNode: 3, Client: v1alpha1.ClientApproval{Enabled: true}},
		},
	}
	api := fake.NewClientBuilder().WithScheme(scheme).WithObjects(p).WithStatusSubresource(p).Build()
	key := types.NamespacedName{Name: p.Name}
	stale := &v1alpha1.BootstrapPolicy{}
	if err := api.Get(context.Background(), key, stale); err != nil {
		t.Fatal(err)
	}
	clk := clocktesting.NewFakeClock(time.Now())
	reconcile := func(c client.Client) ctrl.Result {
		t.Helper()
		r := &BootstrapPolicyReconciler{Client: c, APIReader: api, Recorder: events.NewFakeRecorder(10), Clock: clk}
		res, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: key})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}

	reconcile(api)
	written := &v1alpha1.BootstrapPolicy{}
	if err := api.Get(context.Background(), key, written); err != nil {
		t.Fatal(err)
	}
	if written.Status.ObservedGeneration != 1 || len(written.Status.Tokens) != 1 {
		t.Fatalf("the first reconcile should have written status, got %+v", written.Status)
	}

	behind := interceptor.NewClient(api, interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, k client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			if bp, ok := obj.(*v1alpha1.BootstrapPolicy); ok && k == key {
				stale.DeepCopyInto(bp)
				return nil
			}
			return c.Get(ctx, k, obj, opts...)
		},
	})
	if res := reconcile(behind); res.RequeueAfter != staleRetry {
		t.Errorf("a reconcile from a stale copy should look again in %s, got %+v", staleRetry, res)
	}
	after := &v1alpha1.BootstrapPolicy{}
	if err := api.Get(context.Background(), key, after); err != nil {
		t.Fatal(err)
	}
	if after.ResourceVersion != written.ResourceVersion || !equality.Semantic.DeepEqual(after.Status, written.Status) {
		t.Errorf("status was written again from a stale copy:\nbefore %+v\nafter  %+v", written.Status, after.Status)
	}
}
