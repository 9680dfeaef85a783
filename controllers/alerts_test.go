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
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	promparser "github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/util/annotations"
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

// alertRule is one alerting rule of the PrometheusRule.
type alertRule struct {
	Alert       string            `json:"alert"`
	Expr        string            `json:"expr"`
	For         string            `json:"for"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

// prometheusRule is the part of a monitoring.coreos.com/v1 PrometheusRule the test reads.
type prometheusRule struct {
	Kind string `json:"kind"`
	Spec struct {
		Groups []struct {
			Name  string      `json:"name"`
			Rules []alertRule `json:"rules"`
		} `json:"groups"`
	} `json:"spec"`
}

// Every alert parses as PromQL and names only series the operator exports, with label
// names those series carry: a renamed metric or label breaks this test, not the pager.
func TestAlertRulesUseExportedMetrics(t *testing.T) {
	metrics := exportedMetrics(t)
	p := promparser.NewParser(promparser.Options{})
	alerts := map[string]bool{}
	for _, r := range alertRules(t) {
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
	// What issue 7 asks alerts for.
	for _, want := range []string{"TLSBootstrapTokenExpiringWithoutSuccessor", "TLSBootstrapCSRPending",
		"TLSBootstrapCSRDenialSpike", "TLSBootstrapNodeCertificateExpiringSoon", "TLSBootstrapPolicyReconcileErrors"} {
		if !alerts[want] {
			t.Errorf("no alert %s", want)
		}
	}
}

// alertRules reads config/prometheus/alerts.yaml.
func alertRules(t *testing.T) []alertRule {
	t.Helper()
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
	var out []alertRule
	for _, g := range rule.Spec.Groups {
		out = append(out, g.Rules...)
	}
	return out
}

// Each alert evaluated by Prometheus's own engine over series shaped like the operator's:
// it fires on the trouble it names and stays quiet on a healthy fleet, above all on
// policies whose short-lived tokens always have little time left. The samples are one a
// minute from Unix time 0, so time() at the evaluation is its offset from then.
// Every alert needs a case here.
func TestAlertRulesFireOnlyOnTrouble(t *testing.T) {
	cases := map[string]struct {
		load string
		at   time.Duration
		want []string // the label sets the expression returns, as Prometheus prints them
	}{
		"TLSBootstrapTokenExpiringWithoutSuccessor": {
			// short: ttl 30m, rotateBefore 10m, rotating on time: never more than 30m left.
			// daily: ttl 24h, rotateBefore 8h, rotating on time.
			// stuck: ttl 24h, rotateBefore 8h, its successor never minted.
			load: `
  tls_bootstrap_token_expiry_seconds{policy="short"} 1800-60x19 1800-60x19 1800-60x19 1800
  tls_bootstrap_token_rotate_before_seconds{policy="short"} 600x60
  tls_bootstrap_token_expiry_seconds{policy="daily"} 80000-60x60
  tls_bootstrap_token_rotate_before_seconds{policy="daily"} 28800x60
  tls_bootstrap_token_expiry_seconds{policy="stuck"} 30000-60x60
  tls_bootstrap_token_rotate_before_seconds{policy="stuck"} 28800x60`,
			at:   60 * time.Minute,
			want: []string{`{policy="stuck"}`},
		},
		"TLSBootstrapCSRPending": {
			// client: one CSR waiting since t=1000s; renewal: since t=1500s (5 minutes at
			// eval); serving: decided as they come, the oldest pending is always new.
			load: `
  tls_bootstrap_csr_oldest_pending_timestamp_seconds{kind="client"} 1000x30
  tls_bootstrap_csr_oldest_pending_timestamp_seconds{kind="renewal"} _x25 1500x5
  tls_bootstrap_csr_oldest_pending_timestamp_seconds{kind="serving"} 0+60x30`,
			at:   30 * time.Minute,
			want: []string{`{kind="client"}`},
		},
		"TLSBootstrapCSRDenialSpike": {
			// a: a denial a minute; b: more, but DryRun; c: two in ten minutes; d: approvals.
			load: `
  tls_bootstrap_csr_decisions_total{policy="a",kind="client",outcome="Deny",dry_run="false"} 0+1x30
  tls_bootstrap_csr_decisions_total{policy="b",kind="client",outcome="Deny",dry_run="true"} 0+5x30
  tls_bootstrap_csr_decisions_total{policy="c",kind="serving",outcome="Deny",dry_run="false"} 0+0.2x30
  tls_bootstrap_csr_decisions_total{policy="d",kind="client",outcome="Approve",dry_run="false"} 0+100x30`,
			at:   30 * time.Minute,
			want: []string{`{kind="client", policy="a"}`},
		},
		"TLSBootstrapNodeCertificateExpiringSoon": {
			// At eval (t=600s) n1's client certificate has three days left, n2's serving one 30.
			load: `
  tls_bootstrap_node_certificate_expiration_timestamp_seconds{node="n1",kind="client"} 259800x10
  tls_bootstrap_node_certificate_expiration_timestamp_seconds{node="n2",kind="serving"} 2592600x10`,
			at:   10 * time.Minute,
			want: []string{`{kind="client", node="n1"}`},
		},
		"TLSBootstrapPolicyReconcileErrors": {
			// a: failing now; b: failed long ago, the counter stands still.
			load: `
  tls_bootstrap_policy_reconcile_errors_total{policy="a"} 0+1x30
  tls_bootstrap_policy_reconcile_errors_total{policy="b"} 3x30`,
			at:   30 * time.Minute,
			want: []string{`{policy="a"}`},
		},
	}
	p := promparser.NewParser(promparser.Options{})
	engine := promql.NewEngine(promql.EngineOpts{MaxSamples: 1 << 20, Timeout: time.Minute, Parser: p})
	rules := alertRules(t)
	for _, r := range rules {
		t.Run(r.Alert, func(t *testing.T) {
			c, ok := cases[r.Alert]
			if !ok {
				t.Fatalf("no evaluation case for alert %s: add one to this table", r.Alert)
			}
			q, err := engine.NewInstantQuery(t.Context(), loadSeries(t, p, c.load), nil, r.Expr, time.Unix(0, 0).Add(c.at))
			if err != nil {
				t.Fatal(err)
			}
			defer q.Close()
			res := q.Exec(t.Context())
			if res.Err != nil {
				t.Fatal(res.Err)
			}
			vec, err := res.Vector()
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, s := range vec {
				got = append(got, s.Metric.String())
			}
			slices.Sort(got)
			if !slices.Equal(got, c.want) {
				t.Errorf("%s at %s fires for %v, want %v", r.Expr, c.at, got, c.want)
			}
		})
	}
	if len(rules) != len(cases) {
		t.Errorf("%d alerts, %d evaluation cases: a case for an alert that no longer exists", len(rules), len(cases))
	}
}

// loadSeries is an in-memory storage of series written as in Prometheus's own PromQL
// tests ("name{labels} 1+2x3 _ 4", one sample a minute from Unix time 0); Prometheus's
// test storage would bring its whole TSDB (and the cloud SDKs of remote write) along.
func loadSeries(t *testing.T, p promparser.Parser, load string) storage.Queryable {
	t.Helper()
	var all []storage.Series
	for line := range strings.Lines(load) {
		if line = strings.TrimSpace(line); line == "" {
			continue
		}
		lbls, values, err := p.ParseSeriesDesc(line)
		if err != nil {
			t.Fatalf("series %q: %v", line, err)
		}
		var samples []chunks.Sample
		for i, v := range values {
			if !v.Omitted {
				samples = append(samples, floatSample{t: (time.Duration(i) * time.Minute).Milliseconds(), f: v.Value})
			}
		}
		all = append(all, storage.NewListSeries(lbls, samples))
	}
	slices.SortFunc(all, func(a, b storage.Series) int { return labels.Compare(a.Labels(), b.Labels()) })
	return &storage.MockQueryable{MockQuerier: &storage.MockQuerier{
		SelectMockFunction: func(_ bool, _ *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
			var out seriesSet
			for _, s := range all {
				if matchAll(ms, s.Labels()) {
					out.series = append(out.series, s)
				}
			}
			return &out
		},
	}}
}

func matchAll(ms []*labels.Matcher, l labels.Labels) bool {
	for _, m := range ms {
		if !m.Matches(l.Get(m.Name)) {
			return false
		}
	}
	return true
}

// seriesSet iterates over series held in a slice.
type seriesSet struct {
	series []storage.Series
	next   int
}

func (s *seriesSet) Next() bool                      { s.next++; return s.next <= len(s.series) }
func (s *seriesSet) At() storage.Series              { return s.series[s.next-1] }
func (*seriesSet) Err() error                        { return nil }
func (*seriesSet) Warnings() annotations.Annotations { return nil }

// floatSample is one float sample of a series.
type floatSample struct {
	t int64
	f float64
}

func (s floatSample) T() int64                    { return s.t }
func (floatSample) ST() int64                     { return 0 }
func (s floatSample) F() float64                  { return s.f }
func (floatSample) H() *histogram.Histogram       { return nil }
func (floatSample) FH() *histogram.FloatHistogram { return nil }
func (floatSample) Type() chunkenc.ValueType      { return chunkenc.ValFloat }
func (s floatSample) Copy() chunks.Sample         { return s }

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
