// Package policy decides, for one kubelet CSR, which BootstrapPolicies govern it and
// what they decide: Approve, Deny or Leave (write nothing). It is pure: the CSR
// controller gathers the inputs (the CSR, its Node, the count of older pending CSRs
// for the same node, the policies, the API server's IPs) and writes the outcome.
//
// The contract is /work/shared/design/api.md (Semantics) and the hard rules of
// /work/shared/reference/csr-validation.md, which package csr applies. Where they are
// silent this package picks the stricter reading:
//   - spec.approval.nodeNamePattern must match the WHOLE node name: the pattern is
//     compiled as ^(?:pattern)$, so "worker-" never matches "evil-worker-1" (prefix
//     matching is how other approvers handed out foreign names). A pattern that does
//     not compile makes its policy govern nothing; the reconciler reports it through
//     CompilePattern.
//   - Empty approval.approver, mode and onViolation mean their schema defaults
//     (Operator, Enforce, Deny), for policies built in Go. An unknown approver governs
//     nothing; an unknown mode only records (like DryRun); only onViolation Ignore
//     leaves a violating CSR pending.
//   - Only policy groups of the bootstrap-token form system:bootstrappers:<x> select
//     first-bootstrap CSRs, so a policy can never govern every bootstrap token by
//     naming system:bootstrappers itself.
//   - spec.expirationSeconds is only checked when set (rule 8); an unset one gets the
//     signer's own --cluster-signing-duration.
//   - An allowedCIDRs or allowedDNSSuffixes entry that does not parse, or an empty
//     suffix, matches nothing. IPv4-mapped IPv6 SANs compare equal to their IPv4 form.
//   - A Node in Inputs whose name is not the CSR's node name (a controller bug) makes
//     Decide leave the CSR alone rather than judge it against the wrong Node.
//   - An ungoverned CSR is never parsed, so Decision.NodeName of an ungoverned
//     first-bootstrap CSR is "".
package policy

import (
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/tlsbootstrap/tls-bootstrap-operator/api/v1alpha1"
	"github.com/tlsbootstrap/tls-bootstrap-operator/internal/csr"
)

// Outcome is what the operator writes on the CSR.
type Outcome string

const (
	// Approve writes an Approved condition.
	Approve Outcome = "Approve"
	// Deny writes a Denied condition.
	Deny Outcome = "Deny"
	// Leave writes nothing: the CSR stays pending for humans and other approvers.
	Leave Outcome = "Leave"
)

// Condition reasons written with the outcome.
const (
	// ReasonApproved is the reason of an Approved condition.
	ReasonApproved = "AutoApproved"
	// ReasonViolation is the reason of a Denied condition.
	ReasonViolation = "PolicyViolation"
)

// DefaultMaxPendingPerNode is the schema default of spec.approval.maxPendingPerNode,
// used when a policy built in Go leaves it 0.
const DefaultMaxPendingPerNode = 3

// MaxMessageBytes caps Decision.Message: a hostile CSR can carry many bad values, and
// a condition message is read by humans.
const MaxMessageBytes = 1024

// Inputs is everything Decide needs about one CSR.
type Inputs struct {
	// CSR is the request to decide on.
	CSR *certificatesv1.CertificateSigningRequest
	// Inspection, when set, must be csr.Inspect(CSR): the controller usually inspects
	// the CSR first to learn the node name, and passing the result avoids parsing and
	// verifying the request twice. Nil: Decide inspects.
	Inspection *csr.Inspection
	// Node is the Node named by the CSR (Inspection.NodeName), nil when it does not exist.
	Node *corev1.Node
	// OlderPendingForNode counts pending (undecided, no certificate) CSRs for the same
	// node name created before this one (creationTimestamp, then name).
	OlderPendingForNode int
	// Policies are all BootstrapPolicies; Decide picks the governing ones.
	Policies []v1alpha1.BootstrapPolicy
	// ForbiddenIPs are the API server's and the kubernetes Service's IPs, never
	// allowed as serving IP SANs (rule 16).
	ForbiddenIPs []net.IP
}

// PolicyVerdict is what one governing policy decided, DryRun ones included.
type PolicyVerdict struct {
	// Policy is the policy's name.
	Policy string
	// Mode is the policy's effective mode (Enforce when unset).
	Mode v1alpha1.ApprovalMode
	// Outcome is what the policy decides (or, in DryRun, would decide) on its own.
	Outcome Outcome
	// Violations are the hard-rule and policy-rule violations this policy sees.
	Violations []string
}

// Decision is the outcome for one CSR and why.
type Decision struct {
	// Outcome is what to write; Leave writes nothing.
	Outcome Outcome
	// Kind is the CSR's kind; "" when it is not a recognised kubelet CSR.
	Kind csr.Kind
	// NodeName is the node the CSR is for (see csr.Inspection.NodeName).
	NodeName string
	// Policy is the approving policy, or the first denying one (by name).
	Policy string
	// Reason is ReasonApproved or ReasonViolation; "" for Leave.
	Reason string
	// Message is the condition message: for Approve it names the policy and the kind,
	// for Deny the denying policies and every violated rule. For Leave with governing
	// policies it says why nothing is written, for Events and logs. At most
	// MaxMessageBytes, never key material.
	Message string
	// Violations are every rule violated, as seen by the Enforce policies (for Deny
	// and Leave); policy-specific ones are prefixed with the policy when several
	// Enforce policies govern the CSR.
	Violations []string
	// Verdicts has one entry per governing policy, by name, DryRun ones included.
	Verdicts []PolicyVerdict
}

// CompilePattern compiles spec.approval.nodeNamePattern so that it must match the
// whole node name. "" compiles to nil, which matches every name.
func CompilePattern(p string) (*regexp.Regexp, error) {
	if p == "" {
		return nil, nil
	}
	// Compile the pattern alone first: it proves the pattern is balanced, so wrapping
	// it cannot change its meaning (a "x)|(.*" would otherwise escape the anchors).
	if _, err := regexp.Compile(p); err != nil {
		return nil, fmt.Errorf("spec.approval.nodeNamePattern is not a valid RE2 expression: %w", err)
	}
	re, err := regexp.Compile(`^(?:` + p + `)$`)
	if err != nil {
		return nil, fmt.Errorf("spec.approval.nodeNamePattern is not a valid RE2 expression: %w", err)
	}
	return re, nil
}

// patternCacheLimit bounds the cache: patterns change only when policies are edited,
// and clearing now and then is cheaper than tracking which are still in use.
const patternCacheLimit = 256

type compiled struct {
	re  *regexp.Regexp
	err error
}

var (
	patternCache     sync.Map // string -> compiled
	patternCacheSize atomic.Int64
)

// pattern is CompilePattern, cached by pattern string. A regexp.Regexp is safe for
// concurrent use.
func pattern(p string) (*regexp.Regexp, error) {
	if p == "" {
		return nil, nil
	}
	if c, ok := patternCache.Load(p); ok {
		cc := c.(compiled)
		return cc.re, cc.err
	}
	re, err := CompilePattern(p)
	if patternCacheSize.Add(1) > patternCacheLimit {
		patternCache.Clear()
		patternCacheSize.Store(1)
	}
	patternCache.Store(p, compiled{re: re, err: err})
	return re, err
}

// Governs reports whether p governs the CSR of the given kind: p's approver is
// Operator, p enables that kind, and for KindClient the requester is in one of
// p's groups, for KindRenewal and KindServing the requester system:node:<name> has
// a <name> that matches p's nodeNamePattern.
func Governs(p *v1alpha1.BootstrapPolicy, c *certificatesv1.CertificateSigningRequest, kind csr.Kind) bool {
	if p == nil || c == nil {
		return false
	}
	a := &p.Spec.Approval
	if a.Approver != "" && a.Approver != v1alpha1.ApproverOperator {
		return false
	}
	// A policy whose pattern does not compile is refused by its reconciler; it must
	// not judge CSRs with half its rules.
	if _, err := pattern(a.NodeNamePattern); err != nil {
		return false
	}
	switch kind {
	case csr.KindClient:
		return a.Client.Enabled && inPolicyGroups(c.Spec.Groups, p.Spec.Groups)
	case csr.KindRenewal:
		return a.Renewal.Enabled && nodeMatches(a.NodeNamePattern, c.Spec.Username)
	case csr.KindServing:
		return a.Serving.Enabled && nodeMatches(a.NodeNamePattern, c.Spec.Username)
	}
	return false
}

func inPolicyGroups(requester, policy []string) bool {
	for _, g := range policy {
		if strings.HasPrefix(g, csr.BootstrapperExtraGroupPrefix) && slices.Contains(requester, g) {
			return true
		}
	}
	return false
}

func nodeMatches(p, username string) bool {
	name, ok := csr.NodeNameFromUsername(username)
	if !ok {
		return false
	}
	re, err := pattern(p)
	return err == nil && (re == nil || re.MatchString(name))
}

// Decide evaluates the CSR against every governing policy. See the package comment.
func Decide(in Inputs) Decision {
	c := in.CSR
	if c == nil || !csr.IsKubeletSigner(c.Spec.SignerName) || csr.Decided(c) {
		return Decision{Outcome: Leave}
	}
	kind, ok := csr.Classify(c)
	if !ok {
		return Decision{Outcome: Leave}
	}

	// Most clusters have a handful of policies: keep the governing ones on the stack.
	var buf [8]*v1alpha1.BootstrapPolicy
	governing := buf[:0]
	for i := range in.Policies {
		if Governs(&in.Policies[i], c, kind) {
			governing = append(governing, &in.Policies[i])
		}
	}
	d := Decision{Outcome: Leave, Kind: kind}
	if kind != csr.KindClient {
		d.NodeName, _ = csr.NodeNameFromUsername(c.Spec.Username)
	}
	if len(governing) == 0 {
		return d
	}
	slices.SortFunc(governing, func(a, b *v1alpha1.BootstrapPolicy) int { return strings.Compare(a.Name, b.Name) })

	insp := in.Inspection
	if insp == nil {
		i := csr.Inspect(c)
		insp = &i
	}
	d.NodeName = insp.NodeName
	if in.Node != nil && in.Node.Name != insp.NodeName {
		d.Message = capMessage("left pending: the node given (" + strconv.Quote(in.Node.Name) + ") is not the csr's node (" + strconv.Quote(insp.NodeName) + ")")
		return d
	}

	e := evaluator{in: &in, insp: insp, kind: kind}
	d.Verdicts = make([]PolicyVerdict, len(governing))
	for i, p := range governing {
		d.Verdicts[i] = e.verdict(p)
	}
	return conclude(d, insp.Violations)
}

// conclude turns the verdicts into the decision: Approve when an Enforce policy
// allows, else Deny when an Enforce policy denies, else Leave.
func conclude(d Decision, hard []string) Decision {
	var enforce, deniers []int
	for i, v := range d.Verdicts {
		if v.Mode != v1alpha1.ModeEnforce {
			continue
		}
		if v.Outcome == Approve {
			d.Outcome, d.Policy, d.Reason = Approve, v.Policy, ReasonApproved
			d.Message = capMessage("approved by BootstrapPolicy " + strconv.Quote(v.Policy) + ": " + d.Kind.Description())
			return d
		}
		enforce = append(enforce, i)
		if v.Outcome == Deny {
			deniers = append(deniers, i)
		}
	}
	if len(enforce) == 0 {
		var b strings.Builder
		b.WriteString("left pending: only DryRun policies govern this csr")
		for _, v := range d.Verdicts {
			b.WriteString("; BootstrapPolicy " + strconv.Quote(v.Policy) + " would " + strings.ToLower(string(v.Outcome)))
		}
		d.Message = capMessage(b.String())
		return d
	}
	d.Violations = mergeViolations(hard, d.Verdicts, enforce)
	if len(deniers) == 0 {
		d.Message = capMessage("left pending by " + policyNames(d.Verdicts, enforce) + " (onViolation: Ignore): " + strings.Join(d.Violations, "; "))
		return d
	}
	d.Outcome, d.Policy, d.Reason = Deny, d.Verdicts[deniers[0]].Policy, ReasonViolation
	d.Message = capMessage("denied by " + policyNames(d.Verdicts, deniers) + ": " + strings.Join(d.Violations, "; "))
	return d
}

// mergeViolations lists every violation the Enforce policies saw, each once: the
// hard rules first (the same for every policy), then each policy's own, prefixed
// with the policy when there are several so the reader knows whose rule it is.
func mergeViolations(hard []string, verdicts []PolicyVerdict, idx []int) []string {
	out := slices.Clone(hard)
	for _, i := range idx {
		for _, s := range verdicts[i].Violations[len(hard):] {
			if len(idx) > 1 {
				s = "BootstrapPolicy " + strconv.Quote(verdicts[i].Policy) + ": " + s
			}
			if !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
	}
	return out
}

func policyNames(verdicts []PolicyVerdict, idx []int) string {
	var b strings.Builder
	if len(idx) == 1 {
		b.WriteString("BootstrapPolicy ")
	} else {
		b.WriteString("BootstrapPolicies ")
	}
	for n, i := range idx {
		if n > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.Quote(verdicts[i].Policy))
	}
	return b.String()
}

// capMessage cuts s to MaxMessageBytes on a rune boundary, ending in "...".
func capMessage(s string) string {
	if len(s) <= MaxMessageBytes {
		return s
	}
	cut := MaxMessageBytes - 3
	for cut > 0 && !utf8RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

func utf8RuneStart(b byte) bool { return b&0xC0 != 0x80 }

// effectiveMode is the policy's mode with the schema default applied.
func effectiveMode(m v1alpha1.ApprovalMode) v1alpha1.ApprovalMode {
	if m == "" {
		return v1alpha1.ModeEnforce
	}
	return m
}
