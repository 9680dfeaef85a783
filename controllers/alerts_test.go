package controllers

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	promparser "github.com/prometheus/prometheus/promql/parser"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// exportedMetric is a series family the operator exports, as its source declares it.
type exportedMetric struct {
	labels    []string
	histogram bool
}

// exportedMetrics reads the operator's metric declarations from this package's source:
// every prometheus.New{Counter,Gauge,Histogram}Vec and prometheus.NewDesc whose name is
// one of the exported Metric* constants, with its label names. Reading the source
// rather than a list kept in the test means an alert can only name what is declared.
func exportedMetrics(t *testing.T) map[string]exportedMetric {
	t.Helper()
	fset := token.NewFileSet()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	consts := map[string]string{}
	var calls []*ast.CallExpr
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.ValueSpec:
				for i, name := range n.Names {
					if lit, ok := constString(n, i); ok && strings.HasPrefix(name.Name, "Metric") {
						consts[name.Name] = lit
					}
				}
			case *ast.CallExpr:
				calls = append(calls, n)
			}
			return true
		})
	}
	out := map[string]exportedMetric{}
	for _, call := range calls {
		sel, ok := call.Fun.(*ast.SelectorExpr)
		if !ok || len(call.Args) < 2 {
			continue
		}
		if pkg, ok := sel.X.(*ast.Ident); !ok || pkg.Name != "prometheus" {
			continue
		}
		var nameArg ast.Expr
		labelArg := call.Args[1]
		switch sel.Sel.Name {
		case "NewCounterVec", "NewGaugeVec", "NewHistogramVec":
			nameArg = optsName(call.Args[0])
		case "NewDesc":
			nameArg, labelArg = call.Args[0], call.Args[2]
		default:
			continue
		}
		id, ok := nameArg.(*ast.Ident)
		if !ok || consts[id.Name] == "" {
			t.Fatalf("%s: metric %s is not named by an exported Metric* constant", fset.Position(call.Pos()), sel.Sel.Name)
		}
		out[consts[id.Name]] = exportedMetric{labels: stringSlice(labelArg), histogram: sel.Sel.Name == "NewHistogramVec"}
	}
	if len(out) != len(consts) {
		t.Fatalf("every Metric* constant should be declared as a metric: constants %v, declared %v", consts, out)
	}
	return out
}

func constString(spec *ast.ValueSpec, i int) (string, bool) {
	if i >= len(spec.Values) {
		return "", false
	}
	lit, ok := spec.Values[i].(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(lit.Value)
	return s, err == nil
}

// optsName is the Name field of a prometheus.{Counter,Gauge,Histogram}Opts literal.
func optsName(e ast.Expr) ast.Expr {
	lit, ok := e.(*ast.CompositeLit)
	if !ok {
		return nil
	}
	for _, el := range lit.Elts {
		if kv, ok := el.(*ast.KeyValueExpr); ok {
			if k, ok := kv.Key.(*ast.Ident); ok && k.Name == "Name" {
				return kv.Value
			}
		}
	}
	return nil
}

func stringSlice(e ast.Expr) []string {
	lit, ok := e.(*ast.CompositeLit)
	if !ok {
		return nil
	}
	var out []string
	for _, el := range lit.Elts {
		if b, ok := el.(*ast.BasicLit); ok {
			if s, err := strconv.Unquote(b.Value); err == nil {
				out = append(out, s)
			}
		}
	}
	return out
}

// prometheusRule is the part of a monitoring.coreos.com/v1 PrometheusRule the test reads.
type prometheusRule struct {
	Kind string `json:"kind"`
	Spec struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Alert       string            `json:"alert"`
				Expr        string            `json:"expr"`
				For         string            `json:"for"`
				Labels      map[string]string `json:"labels"`
				Annotations map[string]string `json:"annotations"`
			} `json:"rules"`
		} `json:"groups"`
	} `json:"spec"`
}

// Every alert parses as PromQL and names only series the operator exports, with label
// names those series carry: a renamed metric or label breaks this test, not the pager.
func TestAlertRulesUseExportedMetrics(t *testing.T) {
	metrics := exportedMetrics(t)
	raw, err := os.ReadFile(filepath.Join("..", "config", "prometheus", "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var rule prometheusRule
	if err := yaml.Unmarshal(raw, &rule); err != nil {
		t.Fatal(err)
	}
	if rule.Kind != "PrometheusRule" {
		t.Fatalf("want a PrometheusRule, got %q", rule.Kind)
	}
	p := promparser.NewParser(promparser.Options{})
	alerts := map[string]bool{}
	for _, g := range rule.Spec.Groups {
		for _, r := range g.Rules {
			alerts[r.Alert] = true
			t.Run(r.Alert, func(t *testing.T) {
				expr, err := p.ParseExpr(r.Expr)
				if err != nil {
					t.Fatalf("%q does not parse: %v", r.Expr, err)
				}
				if _, err := model.ParseDuration(r.For); err != nil {
					t.Errorf("for %q: %v", r.For, err)
				}
				if r.Labels["severity"] == "" || r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
					t.Errorf("want a severity label and summary and description annotations, got %v %v", r.Labels, r.Annotations)
				}
				named := 0
				promparser.Inspect(expr, func(node promparser.Node, _ []promparser.Node) error {
					vs, ok := node.(*promparser.VectorSelector)
					if !ok {
						return nil
					}
					named++
					m, ok := lookup(metrics, vs.Name)
					if !ok {
						t.Errorf("%s is not a metric the operator exports", vs.Name)
						return nil
					}
					for _, lm := range vs.LabelMatchers {
						if lm.Name != model.MetricNameLabel && !slices.Contains(m.labels, lm.Name) {
							t.Errorf("%s has no label %q, only %v", vs.Name, lm.Name, m.labels)
						}
					}
					return nil
				})
				if named == 0 {
					t.Errorf("%q names no metric", r.Expr)
				}
			})
		}
	}
	// What issue 7 asks alerts for.
	for _, want := range []string{"TLSBootstrapTokenExpiringWithoutSuccessor", "TLSBootstrapCSRPending",
		"TLSBootstrapCSRDenialSpike", "TLSBootstrapNodeCertificateExpiringSoon", "TLSBootstrapPolicyReconcileErrors"} {
		if !alerts[want] {
			t.Errorf("no alert %s", want)
		}
	}
}

// lookup finds a series name among the exported families; a histogram also exports
// its _bucket, _sum and _count series.
func lookup(metrics map[string]exportedMetric, name string) (exportedMetric, bool) {
	if m, ok := metrics[name]; ok {
		return m, true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if m, ok := metrics[strings.TrimSuffix(name, suffix)]; ok && m.histogram && strings.HasSuffix(name, suffix) {
			if suffix == "_bucket" {
				m.labels = append(slices.Clone(m.labels), "le")
			}
			return m, true
		}
	}
	return exportedMetric{}, false
}

// The ServiceMonitor scrapes the metrics Service that config/default installs, on its
// HTTPS port, with a bearer token the manager can authenticate.
func TestServiceMonitorSelectsTheMetricsService(t *testing.T) {
	var monitor struct {
		Kind string `json:"kind"`
		Spec struct {
			Endpoints []struct {
				Port            string `json:"port"`
				Scheme          string `json:"scheme"`
				Path            string `json:"path"`
				BearerTokenFile string `json:"bearerTokenFile"`
			} `json:"endpoints"`
			Selector struct {
				MatchLabels map[string]string `json:"matchLabels"`
			} `json:"selector"`
		} `json:"spec"`
	}
	svc := &corev1.Service{}
	for path, into := range map[string]any{
		filepath.Join("..", "config", "prometheus", "monitor.yaml"):      &monitor,
		filepath.Join("..", "config", "default", "metrics_service.yaml"): svc,
	} {
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(raw, into); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
	if monitor.Kind != "ServiceMonitor" || len(monitor.Spec.Endpoints) != 1 {
		t.Fatalf("want a ServiceMonitor with one endpoint, got %+v", monitor)
	}
	for k, v := range monitor.Spec.Selector.MatchLabels {
		if svc.Labels[k] != v {
			t.Errorf("the selector's %s=%s does not match the metrics Service's labels %v", k, v, svc.Labels)
		}
	}
	ep := monitor.Spec.Endpoints[0]
	if ep.Scheme != "https" || ep.Path != "/metrics" || ep.BearerTokenFile == "" {
		t.Errorf("want https on /metrics with a bearer token, got %+v", ep)
	}
	if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep.Port }) {
		t.Errorf("the metrics Service has no port %q: %+v", ep.Port, svc.Spec.Ports)
	}
}
