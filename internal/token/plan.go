package token

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
	bootstraputil "k8s.io/cluster-bootstrap/token/util"
	bootstrapsecrets "k8s.io/cluster-bootstrap/util/secrets"

	"github.com/tlsbootstrap/tls-bootstrap-operator/api/v1alpha1"
	"github.com/tlsbootstrap/tls-bootstrap-operator/internal/render"
)

// Why a token is created (Plan.CreateReason).
const (
	// ReasonInitial: the policy never had a token.
	ReasonInitial = "initial"
	// ReasonRotation: the current token entered its rotateBefore window.
	ReasonRotation = "rotation"
	// ReasonRevoked: the policy's rotate annotation changed, revoking every token.
	ReasonRevoked = "revoked"
	// ReasonSpecChanged: spec.groups or spec.token.usages changed, or a token outlives
	// the (shortened) ttl.
	ReasonSpecChanged = "spec-changed"
	// ReasonMissing: the policy had tokens but none is usable any more (deleted by
	// someone else, or expired while the operator was away).
	ReasonMissing = "missing"
)

// Why a token Secret is deleted (Plan.DeleteReasons). ReasonRevoked and
// ReasonSpecChanged are also used.
const (
	// ReasonExpired: the token's expiration has passed, or is missing or unparsable.
	ReasonExpired = "expired"
	// ReasonInvalid: a Secret carrying the policy's labels is not a usable bootstrap
	// token (wrong type or namespace, malformed id or secret).
	ReasonInvalid = "invalid"
)

// maxGenerateAttempts bounds the retries when the generator returns an id already in
// use. With 36^6 ids a collision is rare; several in a row mean a broken generator.
const maxGenerateAttempts = 5

// Generator returns a fresh token "id.secret".
type Generator func() (string, error)

// CryptoGenerator is the production Generator: cluster-bootstrap's crypto-random
// GenerateBootstrapToken.
var CryptoGenerator Generator = bootstraputil.GenerateBootstrapToken

// Plan is what the controller applies for the policy's tokens: create first, then
// delete, then write Live to status.tokens and requeue after RequeueAfter.
type Plan struct {
	// Current is the token kubelets should use now (after the plan is applied); nil
	// only when PlanTokens returns an error.
	Current *Token
	// Create is a new token Secret to create (nil if none is needed). When set, it is
	// the Secret of Current.
	Create *corev1.Secret
	// CreateReason is one of ReasonInitial, ReasonRotation, ReasonRevoked,
	// ReasonSpecChanged, ReasonMissing ("" when Create is nil).
	CreateReason string
	// Delete are the Secrets to delete now, sorted by Secret name.
	Delete []Token
	// DeleteReasons maps each Delete entry's SecretName to ReasonExpired,
	// ReasonRevoked, ReasonSpecChanged or ReasonInvalid.
	DeleteReasons map[string]string
	// Live are the tokens that remain after the plan, Current first, then the others
	// newest first (becomes status.tokens).
	Live []Token
	// RequeueAfter is when the plan next changes: the earliest of the current token
	// entering its rotateBefore window, the earliest live non-current token expiring,
	// and the current token expiring. Always > 0 when PlanTokens succeeds.
	RequeueAfter time.Duration
}

// DeleteReason is why t is in Delete ("" if it is not).
func (pl Plan) DeleteReason(t Token) string { return pl.DeleteReasons[t.SecretName] }

// Status is Live as written to status.tokens: ids and expiry only, never a secret.
func (pl Plan) Status() []v1alpha1.TokenStatus {
	out := make([]v1alpha1.TokenStatus, 0, len(pl.Live))
	for _, t := range pl.Live {
		out = append(out, t.Status())
	}
	return out
}

// tokenSpec is what a token of the policy must match to stay.
type tokenSpec struct {
	groups       []string
	usages       []string
	rotateKey    string
	ttl          time.Duration
	rotateBefore time.Duration
}

func spec(p *v1alpha1.BootstrapPolicy) tokenSpec {
	s := tokenSpec{groups: p.Spec.Groups, rotateKey: p.Annotations[v1alpha1.RotateAnnotation]}
	for _, u := range p.Spec.Token.EffectiveUsages() {
		s.usages = append(s.usages, string(u))
	}
	return s
}

// PlanTokens decides, at time now, which tokens of the policy should exist.
//
// existing are the policy's token Secrets (the controller lists them by label). It
// may also hold other Secrets, for example every bootstrap-token Secret of
// kube-system: those not labelled for this policy are never deleted or used, they
// only reserve their ids against collisions. Secrets being deleted are left alone.
//
// Each of the policy's Secrets is, in this order of precedence: invalid (deleted);
// minted under another rotate annotation value (revoked: all deleted at once); of
// other groups or usages than the spec, or expiring later than now+ttl because it
// was minted under a longer ttl (spec-changed: deleted); expired, with a missing or
// unparsable expiration counting as expired (deleted); otherwise live. The current
// token is the live one expiring last. When there is none, or it is within
// rotateBefore of its expiry, a successor is minted (expiring at now+ttl) and
// becomes current; older live tokens stay valid until they expire, so kubelets
// holding them can still join.
//
// On error Current and Create are nil but Delete still lists what must go: a revoked
// token is deleted even when no successor can be minted.
func PlanTokens(p *v1alpha1.BootstrapPolicy, existing []corev1.Secret, now time.Time, gen Generator) (Plan, error) {
	want := spec(p)
	var err error
	if want.ttl, want.rotateBefore, err = lifetimes(p); err != nil {
		return Plan{}, err
	}
	plan := Plan{DeleteReasons: map[string]string{}}
	usedIDs := map[string]bool{}
	ownedAny := false
	var live []Token
	for i := range existing {
		s := &existing[i]
		reserveIDs(usedIDs, s)
		if !render.IsOwnedBy(s, p.Name) || s.DeletionTimestamp != nil {
			continue
		}
		ownedAny = true
		t, reason := classify(s, want, now)
		if reason != "" {
			plan.Delete = append(plan.Delete, t)
			plan.DeleteReasons[t.SecretName] = reason
			continue
		}
		live = append(live, t)
	}
	slices.SortFunc(plan.Delete, func(a, b Token) int { return cmp.Compare(a.SecretName, b.SecretName) })
	// Newest first: by expiry, then creation, then id so that equal tokens still
	// give one answer.
	slices.SortFunc(live, func(a, b Token) int {
		return cmp.Or(b.Expires.Compare(a.Expires), b.Created.Compare(a.Created), cmp.Compare(a.ID, b.ID))
	})

	switch {
	case len(live) > 0 && live[0].Expires.Sub(now) > want.rotateBefore:
		plan.Live = live
	case len(live) > 0:
		plan.CreateReason = ReasonRotation
	case slices.Contains(reasonsOf(plan), ReasonRevoked):
		plan.CreateReason = ReasonRevoked
	case slices.Contains(reasonsOf(plan), ReasonSpecChanged):
		plan.CreateReason = ReasonSpecChanged
	case !ownedAny && len(p.Status.Tokens) == 0:
		plan.CreateReason = ReasonInitial
	default:
		plan.CreateReason = ReasonMissing
	}
	if plan.CreateReason != "" {
		plan.Live = live
		secret, err := mint(p, usedIDs, now, gen)
		if err != nil {
			plan.CreateReason = ""
			plan.RequeueAfter = requeueAfter(plan.Live, nil, want, now)
			return plan, err
		}
		t, ok := FromSecret(secret)
		if !ok {
			// RenderSecret only emits valid token Secrets; this guards future edits.
			return plan, errors.New("rendered token secret does not read back as a bootstrap token")
		}
		t.Created = now
		plan.Create = secret
		plan.Live = append([]Token{t}, live...)
	}
	plan.Current = &plan.Live[0]
	plan.RequeueAfter = requeueAfter(plan.Live[1:], plan.Current, want, now)
	return plan, nil
}

// classify reads one of the policy's Secrets and says why it must be deleted ("" to keep it).
func classify(s *corev1.Secret, want tokenSpec, now time.Time) (Token, string) {
	t, ok := FromSecret(s)
	switch {
	case !ok:
		id, _ := bootstrapsecrets.ParseName(s.Name)
		return Token{ID: id, SecretName: s.Name, Created: s.CreationTimestamp.Time}, ReasonInvalid
	case t.RotateKey != want.rotateKey:
		return t, ReasonRevoked
	case !sameSet(t.Groups, want.groups), !sameSet(t.Usages, want.usages),
		t.Expires.Sub(now) > want.ttl:
		// RFC3339 drops sub-seconds, so a token minted under the current ttl never
		// expires later than now+ttl: only a ttl that was shortened triggers this.
		return t, ReasonSpecChanged
	case !t.Expires.After(now):
		return t, ReasonExpired
	}
	return t, ""
}

// reserveIDs records the token ids a Secret occupies, by data and by name, so that a
// new token never lands on an existing Secret name.
func reserveIDs(used map[string]bool, s *corev1.Secret) {
	if id, ok := bootstrapsecrets.ParseName(s.Name); ok {
		used[id] = true
	}
	if id := bootstrapsecrets.GetData(s, bootstrapapi.BootstrapTokenIDKey); id != "" {
		used[id] = true
	}
}

// mint asks gen for a token whose id is not in use and renders its Secret.
func mint(p *v1alpha1.BootstrapPolicy, used map[string]bool, now time.Time, gen Generator) (*corev1.Secret, error) {
	if gen == nil {
		gen = CryptoGenerator
	}
	for range maxGenerateAttempts {
		tok, err := gen()
		if err != nil {
			return nil, fmt.Errorf("generating bootstrap token: %w", err)
		}
		if !bootstraputil.IsValidBootstrapToken(tok) {
			// Not retried: a generator that emits malformed tokens is broken. The
			// token itself stays out of the message.
			return nil, errors.New("generator returned a malformed bootstrap token")
		}
		if id, _, _ := strings.Cut(tok, "."); used[id] {
			continue
		}
		return RenderSecret(p, tok, now)
	}
	return nil, fmt.Errorf("generating bootstrap token: id already in use %d times in a row", maxGenerateAttempts)
}

// requeueAfter is the time until the plan next changes. A live token expires at
// Expires, when it must be deleted; current also changes when it enters its
// rotateBefore window.
func requeueAfter(others []Token, current *Token, want tokenSpec, now time.Time) time.Duration {
	var next time.Time
	earliest := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	for _, t := range others {
		earliest(t.Expires)
	}
	if current != nil {
		earliest(current.Expires.Add(-want.rotateBefore))
		earliest(current.Expires)
	}
	if next.IsZero() {
		return 0
	}
	return next.Sub(now)
}

func reasonsOf(p Plan) []string {
	out := make([]string, 0, len(p.DeleteReasons))
	for _, r := range p.DeleteReasons {
		out = append(out, r)
	}
	return out
}
