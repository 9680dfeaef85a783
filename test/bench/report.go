package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Targets of issue 6.
const (
	targetThroughputVsRaw = 0.8
	targetP99VsRaw        = 2.0
	targetVsKCMDefault    = 30.0
	targetPeakRSS         = 96 << 20
	targetScaleReady      = 10 * time.Second
)

// printReport prints the bursts, the memory and scale figures, and the targets with met / not
// met. A figure whose scenario did not run (or failed) shows as n/a.
func printReport(w io.Writer, cfg config, res *results, total time.Duration) {
	env := strings.Join(cfg.operatorEnv, " ")
	if env == "" {
		env = "none"
	}
	fmt.Fprintf(w, "\nbench: scenarios %s, n=%d, kcm-n=%d, serving-n=%d, operator env %s, total %s\n\n",
		strings.Join(cfg.scenarios, ","), cfg.n, cfg.kcmN, cfg.servingN, env, total.Round(time.Second))

	raw := res.row(scenarioRaw)
	rawOK := raw != nil && raw.err == nil && raw.res.throughput() > 0
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\tapprover\tCSRs\tapproved/s\tp50\tp99\tx raw (rate)\tx raw (p99)")
	for _, r := range res.rows {
		if r.err != nil {
			fmt.Fprintf(tw, "%s\t%s\t%d\tFAILED: %v\t\t\t\t\n", r.scenario, r.what, r.res.n, r.err)
			continue
		}
		vsRate, vsP99 := "-", "-"
		if rawOK {
			vsRate = fmt.Sprintf("%.2f", r.res.throughput()/raw.res.throughput())
			vsP99 = fmt.Sprintf("%.2f", float64(r.res.p99)/float64(raw.res.p99))
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.0f\t%s\t%s\t%s\t%s\n", r.scenario, r.what, r.res.n, r.res.throughput(),
			r.res.p50.Round(time.Millisecond), r.res.p99.Round(time.Millisecond), vsRate, vsP99)
	}
	_ = tw.Flush()

	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if (res.memRan && res.memPeakRSS > 0) || res.scaleRan {
		fmt.Fprintln(w)
		fmt.Fprintln(tw, "figure\tvalue")
	}
	if res.memRan && res.memPeakRSS > 0 {
		fmt.Fprintf(tw, "operator peak RSS (VmHWM), %d CSRs + %d Secrets present\t%s\n", cfg.memCSRs, cfg.memSecrets, mib(res.memPeakRSS))
		fmt.Fprintf(tw, "operator RSS after the burst\t%s\n", mib(res.memRSS))
		fmt.Fprintf(tw, "operator start to %d CSRs reconciled\t%s\n", cfg.memCSRs, res.memSettle.Round(time.Millisecond))
	}
	if res.scaleRan {
		if res.scaleErr != nil {
			fmt.Fprintf(tw, "%d policies Ready from a cold start\tFAILED after %s (%d Ready): %v\n",
				res.scaleAll, res.scaleReady.Round(time.Millisecond), res.scaleReadyN, res.scaleErr)
		} else {
			fmt.Fprintf(tw, "%d policies Ready from a cold start\t%s\n", res.scaleAll, res.scaleReady.Round(time.Millisecond))
		}
	}
	_ = tw.Flush()

	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "target\tvalue\tresult")
	for _, t := range targets(cfg, res) {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", t.name, t.value, t.verdict)
	}
	_ = tw.Flush()
}

type target struct{ name, value, verdict string }

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT MET"
}

// targets evaluates issue 6's targets from whatever ran.
func targets(cfg config, res *results) []target {
	ok := func(r *row) bool { return r != nil && r.err == nil && r.res.throughput() > 0 }
	na := func(name string) target { return target{name: name, value: "n/a", verdict: "n/a (not run)"} }
	op, raw := res.row(scenarioOperator), res.row(scenarioRaw)
	kcmDefault, kcmEqual := res.row(scenarioKCMDefault), res.row(scenarioKCMEqual)
	var out []target

	name := fmt.Sprintf("operator throughput >= %.1f x raw", targetThroughputVsRaw)
	if ok(op) && ok(raw) {
		x := op.res.throughput() / raw.res.throughput()
		out = append(out, target{name, fmt.Sprintf("%.2f x (%.0f/s vs %.0f/s)", x, op.res.throughput(), raw.res.throughput()), verdict(x >= targetThroughputVsRaw)})
	} else {
		out = append(out, na(name))
	}
	name = fmt.Sprintf("operator p99 <= %.0f x raw p99", targetP99VsRaw)
	if ok(op) && ok(raw) {
		x := float64(op.res.p99) / float64(raw.res.p99)
		out = append(out, target{name, fmt.Sprintf("%.2f x (%s vs %s)", x, op.res.p99.Round(time.Millisecond), raw.res.p99.Round(time.Millisecond)), verdict(x <= targetP99VsRaw)})
	} else {
		out = append(out, na(name))
	}
	name = fmt.Sprintf("operator >= %.0f x kube-controller-manager at defaults", targetVsKCMDefault)
	if ok(op) && ok(kcmDefault) {
		x := op.res.throughput() / kcmDefault.res.throughput()
		out = append(out, target{name, fmt.Sprintf("%.1f x (%.0f/s vs %.1f/s)", x, op.res.throughput(), kcmDefault.res.throughput()), verdict(x >= targetVsKCMDefault)})
	} else {
		out = append(out, na(name))
	}
	name = "operator ahead of kube-controller-manager at equal client limits"
	if ok(op) && ok(kcmEqual) {
		x := op.res.throughput() / kcmEqual.res.throughput()
		out = append(out, target{name, fmt.Sprintf("%.2f x (%.0f/s vs %.0f/s)", x, op.res.throughput(), kcmEqual.res.throughput()), verdict(x > 1)})
	} else {
		out = append(out, na(name))
	}
	name = fmt.Sprintf("peak RSS <= %d MiB with %d CSRs + %d Secrets", targetPeakRSS>>20, cfg.memCSRs, cfg.memSecrets)
	if res.memRan && res.memPeakRSS > 0 {
		out = append(out, target{name, mib(res.memPeakRSS), verdict(res.memPeakRSS <= targetPeakRSS)})
	} else {
		out = append(out, na(name))
	}
	name = fmt.Sprintf("%d policies Ready <= %s from a cold start", cfg.policies, targetScaleReady)
	switch {
	case res.scaleRan && res.scaleErr == nil:
		out = append(out, target{name, res.scaleReady.Round(time.Millisecond).String(), verdict(res.scaleReady <= targetScaleReady)})
	case res.scaleRan:
		out = append(out, target{name, "failed", verdict(false)})
	default:
		out = append(out, na(name))
	}
	return out
}
