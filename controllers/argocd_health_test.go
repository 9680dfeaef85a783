package controllers

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	lua "github.com/yuin/gopher-lua"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/tlsbootstrap/tls-bootstrap-operator/api/v1alpha1"
)

// argoCDDir holds the health check and the argocd-cm snippet that installs it.
var argoCDDir = filepath.Join("..", "config", "argocd")

// ArgoCDHealth is what Argo CD's health assessment makes of a BootstrapPolicy: it runs
// config/argocd/health.lua the way Argo CD runs a custom health check from argocd-cm
// (github.com/argoproj/argo-cd util/lua): gopher-lua without the standard libraries,
// only package, base and table opened, the live object as the Lua table in global obj,
// a one-second budget, and a returned table whose status must be one Argo CD knows.
// (Argo CD also opens a trimmed os library; the check does not use it.) Exported, so
// the envtest suite can feed it objects from real reconciles.
func ArgoCDHealth(obj client.Object) (status, message string, err error) {
	script, err := os.ReadFile(filepath.Join(argoCDDir, "health.lua"))
	if err != nil {
		return "", "", fmt.Errorf("reading health.lua: %w", err)
	}
	raw, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return "", "", fmt.Errorf("converting %s: %w", obj.GetName(), err)
	}

	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for name, open := range map[string]lua.LGFunction{
		lua.LoadLibName: lua.OpenPackage, lua.BaseLibName: lua.OpenBase, lua.TabLibName: lua.OpenTable,
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(open), Protect: true}, lua.LString(name)); err != nil {
			return "", "", fmt.Errorf("opening %s: %w", name, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, raw))
	if err := l.DoString(string(script)); err != nil {
		return "", "", fmt.Errorf("running health.lua: %w", err)
	}
	tbl, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return "", "", fmt.Errorf("health.lua returned %s, Argo CD wants a table", l.Get(-1).Type())
	}
	st, _ := tbl.RawGetString("status").(lua.LString)
	msg, _ := tbl.RawGetString("message").(lua.LString)
	switch st {
	case "Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown":
		return string(st), string(msg), nil
	}
	return "", "", fmt.Errorf("health.lua returned status %q, which Argo CD reads as Unknown", st)
}

// toLua turns an unstructured value into Lua values as Argo CD does: maps become
// tables with string keys, slices become arrays, every number an LNumber.
func toLua(l *lua.LState, v any) lua.LValue {
	switch v := v.(type) {
	case map[string]any:
		t := l.CreateTable(0, len(v))
		for k, item := range v {
			t.RawSetString(k, toLua(l, item))
		}
		return t
	case []any:
		t := l.CreateTable(len(v), 0)
		for _, item := range v {
			t.Append(toLua(l, item))
		}
		return t
	case string:
		return lua.LString(v)
	case bool:
		return lua.LBool(v)
	case int64:
		return lua.LNumber(v)
	case int32:
		return lua.LNumber(v)
	case int:
		return lua.LNumber(v)
	case float64:
		return lua.LNumber(v)
	}
	return lua.LNil
}

// The snippet users paste into argocd-cm must be the tested script, not a copy that
// drifted from it.
func TestArgoCDConfigMapEmbedsHealthLua(t *testing.T) {
	script, err := os.ReadFile(filepath.Join(argoCDDir, "health.lua"))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(argoCDDir, "argocd-cm-patch.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cm := &corev1.ConfigMap{}
	if err := yaml.UnmarshalStrict(raw, cm); err != nil {
		t.Fatalf("argocd-cm-patch.yaml: %v", err)
	}
	if cm.Kind != "ConfigMap" || cm.Name != "argocd-cm" {
		t.Errorf("want the argocd-cm ConfigMap, got %s %s", cm.Kind, cm.Name)
	}
	// Argo CD's key: resource.customizations.health.<group>_<kind>.
	key := "resource.customizations.health." + v1alpha1.GroupVersion.Group + "_BootstrapPolicy"
	embedded, ok := cm.Data[key]
	if !ok {
		t.Fatalf("argocd-cm-patch.yaml has no data key %s, only %v", key, cm.Data)
	}
	if !bytes.Equal([]byte(embedded), script) {
		t.Errorf("the Lua in argocd-cm-patch.yaml differs from health.lua: regenerate the snippet from health.lua")
	}
}

// Admission refuses invalid specs, so the envtest suite cannot store one; a policy
// stored before the CEL rules existed can still carry one, and then the reconciler's
// own Stalled status must read as Degraded in Argo CD.
func TestArgoCDHealthOfAStalledPolicy(t *testing.T) {
	got, _ := reconcileOnFake(t, &v1alpha1.BootstrapPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "stalled", Generation: 2},
		Spec: v1alpha1.BootstrapPolicySpec{
			Groups:   []string{"system:bootstrappers:stalled"},
			Token:    v1alpha1.TokenSpec{TTL: metav1.Duration{Duration: time.Hour}},
			Approval: v1alpha1.ApprovalSpec{NodeNamePattern: "^worker-["},
		},
	})

	status, msg, err := ArgoCDHealth(got)
	if err != nil {
		t.Fatal(err)
	}
	if status != "Degraded" || !bytes.Contains([]byte(msg), []byte("spec.approval.nodeNamePattern")) {
		t.Errorf("want Degraded naming the field, got %s: %s", status, msg)
	}

	fixed := got.DeepCopy()
	fixed.Generation++
	if status, msg, _ := ArgoCDHealth(fixed); status != "Progressing" {
		t.Errorf("a fix not yet seen by the operator is Progressing, not still Degraded; got %s: %s", status, msg)
	}
}
