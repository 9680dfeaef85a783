package policy

import (
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/tlsbootstrap/tls-bootstrap-operator/api/v1alpha1"
	"github.com/tlsbootstrap/tls-bootstrap-operator/internal/csr"
)

// evaluator applies one policy's rules to the inspected CSR. Facts that do not depend
// on the policy (Node addresses, forbidden IPs) are gathered once, on first use.
type evaluator struct {
	in   *Inputs
	insp *csr.Inspection
	kind csr.Kind

	factsDone bool
	nodeIPs   []netip.Addr
	forbidden []netip.Addr
}

// verdict is what policy p decides on its own.
func (e *evaluator) verdict(p *v1alpha1.BootstrapPolicy) PolicyVerdict {
	a := &p.Spec.Approval
	// Clip so that appending policy violations never writes into the shared hard list.
	v := slices.Clip(e.insp.Violations)
	v = e.checkPattern(a, v)
	v = e.checkExpiration(a, v)
	v = e.checkPending(a, v)
	switch e.kind {
	case csr.KindClient:
		v = e.checkTakeover(a, v)
	case csr.KindServing:
		v = e.checkServing(a, v)
	}
	out := PolicyVerdict{Policy: p.Name, Mode: effectiveMode(a.Mode), Violations: v}
	switch {
	case len(v) == 0:
		out.Outcome = Approve
	case a.OnViolation == v1alpha1.ViolationIgnore:
		out.Outcome = Leave
	default:
		out.Outcome = Deny
	}
	return out
}

// checkPattern: the node named in the subject matches nodeNamePattern, for every
// kind. An unusable CN is already a hard violation, so it is not reported twice.
func (e *evaluator) checkPattern(a *v1alpha1.ApprovalSpec, v []string) []string {
	name := e.insp.SubjectNodeName
	if name == "" {
		return v
	}
	re, err := pattern(a.NodeNamePattern)
	if err != nil || (re != nil && !re.MatchString(name)) {
		return append(v, "node name "+strconv.Quote(name)+" must match the policy's nodeNamePattern")
	}
	return v
}

// checkExpiration applies rule 8.
func (e *evaluator) checkExpiration(a *v1alpha1.ApprovalSpec, v []string) []string {
	es := e.in.CSR.Spec.ExpirationSeconds
	if a.MaxExpiration == nil || es == nil {
		return v
	}
	if time.Duration(*es)*time.Second <= a.MaxExpiration.Duration {
		return v
	}
	return append(v, "expirationSeconds "+strconv.FormatInt(int64(*es), 10)+" must be at most maxExpiration "+a.MaxExpiration.Duration.String())
}

// checkPending applies the per-node flood cap (rule 20).
func (e *evaluator) checkPending(a *v1alpha1.ApprovalSpec, v []string) []string {
	limit := int(a.MaxPendingPerNode)
	if limit <= 0 {
		limit = DefaultMaxPendingPerNode
	}
	if e.in.OlderPendingForNode < limit {
		return v
	}
	return append(v, "node "+strconv.Quote(e.insp.NodeName)+" already has "+strconv.Itoa(e.in.OlderPendingForNode)+
		" older pending csrs, maxPendingPerNode is "+strconv.Itoa(limit))
}

// checkTakeover applies rule 12.
func (e *evaluator) checkTakeover(a *v1alpha1.ApprovalSpec, v []string) []string {
	if e.in.Node == nil || a.Client.AllowRejoin || !nodeReady(e.in.Node) {
		return v
	}
	return append(v, "node "+strconv.Quote(e.insp.NodeName)+" already exists and is ready: a first-bootstrap certificate for it is a takeover attempt unless client.allowRejoin is set")
}

func nodeReady(n *corev1.Node) bool {
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == corev1.NodeReady {
			return n.Status.Conditions[i].Status == corev1.ConditionTrue
		}
	}
	return false
}

// checkServing applies rules 15, 16 and 17 with the policy's allow-lists.
func (e *evaluator) checkServing(a *v1alpha1.ApprovalSpec, v []string) []string {
	if e.in.Node == nil {
		v = append(v, "node "+strconv.Quote(e.insp.NodeName)+" must exist for a serving certificate")
	}
	req := e.insp.Request
	if req == nil {
		return v
	}
	e.gatherFacts()
	s := &a.Serving

	var notNodeName, badSuffix csr.ValueList
	for _, n := range req.DNSNames {
		if !e.isNodeDNSName(n) {
			notNodeName.Add(n)
		}
		if len(s.AllowedDNSSuffixes) > 0 && !hasAllowedSuffix(n, s.AllowedDNSSuffixes) {
			badSuffix.Add(n)
		}
	}
	v = appendIf(v, notNodeName.Violation("dns subject alternative names must be the node name or one of the node's Hostname, InternalDNS or ExternalDNS addresses"))
	v = appendIf(v, badSuffix.Violation("dns subject alternative names must end with one of serving.allowedDNSSuffixes"))

	var notNodeIP, outside, loopback, forbidden csr.ValueList
	for _, ip := range req.IPAddresses {
		addr := toAddr(ip)
		if !slices.Contains(e.nodeIPs, addr) {
			notNodeIP.Add(ip.String())
		}
		inside := len(s.AllowedCIDRs) > 0 && inCIDRs(addr, s.AllowedCIDRs)
		if len(s.AllowedCIDRs) > 0 && !inside {
			outside.Add(ip.String())
		}
		// A loopback serving address is only ever right on a single-machine cluster,
		// and only its operator can say so, by listing the range explicitly.
		if addr.IsLoopback() && !inside {
			loopback.Add(ip.String())
		}
		if slices.Contains(e.forbidden, addr) {
			forbidden.Add(ip.String())
		}
	}
	v = appendIf(v, notNodeIP.Violation("ip subject alternative names must be among the node's InternalIP or ExternalIP addresses"))
	v = appendIf(v, outside.Violation("ip subject alternative names must be inside one of serving.allowedCIDRs"))
	v = appendIf(v, loopback.Violation("ip subject alternative names must not be loopback addresses unless serving.allowedCIDRs lists them"))
	return appendIf(v, forbidden.Violation("ip subject alternative names must not be the api server's or the kubernetes service's addresses"))
}

// gatherFacts reads the Node's IP addresses and the forbidden IPs once per Decide.
func (e *evaluator) gatherFacts() {
	if e.factsDone {
		return
	}
	e.factsDone = true
	if n := e.in.Node; n != nil {
		for _, addr := range n.Status.Addresses {
			if addr.Type != corev1.NodeInternalIP && addr.Type != corev1.NodeExternalIP {
				continue
			}
			if ip, err := netip.ParseAddr(addr.Address); err == nil {
				e.nodeIPs = append(e.nodeIPs, ip.Unmap().WithZone(""))
			}
		}
	}
	for _, ip := range e.in.ForbiddenIPs {
		if addr := toAddr(ip); addr.IsValid() {
			e.forbidden = append(e.forbidden, addr)
		}
	}
}

// isNodeDNSName: n equals, ignoring case, the node name or one of its DNS addresses.
func (e *evaluator) isNodeDNSName(n string) bool {
	if strings.EqualFold(n, e.insp.NodeName) {
		return true
	}
	if e.in.Node == nil {
		return false
	}
	for _, addr := range e.in.Node.Status.Addresses {
		switch addr.Type {
		case corev1.NodeHostName, corev1.NodeInternalDNS, corev1.NodeExternalDNS:
			if addr.Address != "" && strings.EqualFold(n, addr.Address) {
				return true
			}
		}
	}
	return false
}

// hasAllowedSuffix: n ends with one of the suffixes, ignoring case. A suffix starting
// with "." matches strict subdomains only; one without a dot matches the name itself
// or a whole trailing label sequence ("internal" matches "a.internal", never
// "evilinternal"). An empty suffix matches nothing.
func hasAllowedSuffix(n string, suffixes []string) bool {
	for _, s := range suffixes {
		if s == "" || len(n) < len(s) || !strings.EqualFold(n[len(n)-len(s):], s) {
			continue
		}
		if s[0] == '.' {
			if len(n) > len(s) {
				return true
			}
			continue
		}
		if len(n) == len(s) || n[len(n)-len(s)-1] == '.' {
			return true
		}
	}
	return false
}

// inCIDRs: addr is inside one of the CIDRs; entries that do not parse match nothing.
func inCIDRs(addr netip.Addr, cidrs []string) bool {
	for _, c := range cidrs {
		if p, err := netip.ParsePrefix(c); err == nil && p.Contains(addr) {
			return true
		}
	}
	return false
}

// toAddr converts a net.IP so that equal IPs (net.IP.Equal, 4-in-6 included) compare
// equal as netip.Addr.
func toAddr(ip net.IP) netip.Addr {
	addr, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}
	}
	return addr.Unmap()
}

func appendIf(v []string, s string) []string {
	if s == "" {
		return v
	}
	return append(v, s)
}
