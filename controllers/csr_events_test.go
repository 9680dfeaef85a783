package controllers

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/events"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/tlsbootstrap/tls-bootstrap-operator/api/v1alpha1"
	"github.com/tlsbootstrap/tls-bootstrap-operator/internal/csr"
	"github.com/tlsbootstrap/tls-bootstrap-operator/internal/testcsr"
)

// QuietApprovals (--approval-events=false) drops the Event of an approval only: the
// approval is still written, and a denial still gets its Event.
func TestQuietApprovalsKeepDenialEvents(t *testing.T) {
	const group = "system:bootstrappers:workers"
	bootstrapGroups := []string{csr.BootstrappersGroup, group, "system:authenticated"}
	request := func(org string) []byte {
		return testcsr.MustPEM(t, testcsr.Options{CommonName: "system:node:worker-1", Organization: []string{org}})
	}
	for _, tc := range []struct {
		quiet      bool
		wantEvents []string // reasons, in the order the CSRs are reconciled
	}{
		{quiet: false, wantEvents: []string{"AutoApproved", "PolicyViolation"}},
		{quiet: true, wantEvents: []string{"PolicyViolation"}},
	} {
		scheme := runtime.NewScheme()
		if err := clientgoscheme.AddToScheme(scheme); err != nil {
			t.Fatal(err)
		}
		if err := v1alpha1.AddToScheme(scheme); err != nil {
			t.Fatal(err)
		}
		p := &v1alpha1.BootstrapPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: "workers", Generation: 1},
			Spec: v1alpha1.BootstrapPolicySpec{
				Groups: []string{group},
				Approval: v1alpha1.ApprovalSpec{
					Approver: v1alpha1.ApproverOperator, Mode: v1alpha1.ModeEnforce, OnViolation: v1alpha1.ViolationDeny,
					MaxPendingPerNode: 3, Client: v1alpha1.ClientApproval{Enabled: true},
				},
			},
		}
		good := testcsr.Object("good", certificatesv1.KubeAPIServerClientKubeletSignerName, "system:bootstrap:abcdef",
			bootstrapGroups, testcsr.ClientUsages(), request(csr.NodesGroup))
		bad := testcsr.Object("bad", certificatesv1.KubeAPIServerClientKubeletSignerName, "system:bootstrap:abcdef",
			bootstrapGroups, testcsr.ClientUsages(), request("system:masters"))
		c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(p, good, bad).
			WithIndex(&certificatesv1.CertificateSigningRequest{}, nodeNameIndex, func(o client.Object) []string {
				if n := nodeNameOf(o.(*certificatesv1.CertificateSigningRequest)); n != "" {
					return []string{n}
				}
				return nil
			}).Build()
		rec := events.NewFakeRecorder(10)
		r := &CSRReconciler{Client: c, Recorder: rec, Clock: clocktesting.NewFakeClock(time.Now()), QuietApprovals: tc.quiet}

		for _, want := range []struct {
			name string
			cond certificatesv1.RequestConditionType
		}{{"good", certificatesv1.CertificateApproved}, {"bad", certificatesv1.CertificateDenied}} {
			name := want.name
			if _, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: types.NamespacedName{Name: name}}); err != nil {
				t.Fatal(err)
			}
			got := &certificatesv1.CertificateSigningRequest{}
			if err := c.Get(context.Background(), types.NamespacedName{Name: name}, got); err != nil {
				t.Fatal(err)
			}
			if len(got.Status.Conditions) != 1 || got.Status.Conditions[0].Type != want.cond {
				t.Errorf("quiet=%v: csr %s has conditions %+v, want one %s", tc.quiet, name, got.Status.Conditions, want.cond)
			}
		}
		close(rec.Events)
		var reasons []string
		for e := range rec.Events {
			reasons = append(reasons, strings.Fields(e)[1]) // "<type> <reason> <note>"
		}
		if !slices.Equal(reasons, tc.wantEvents) {
			t.Errorf("quiet=%v: events %v, want %v", tc.quiet, reasons, tc.wantEvents)
		}
	}
}
