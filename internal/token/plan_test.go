package token

import (
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"

	"github.com/tlsbootstrap/tls-bootstrap-operator/api/v1alpha1"
)

// now is the fixed planning time of every test.
var now = time.Date(2026, time.June, 1, 12, 0, 0, 0, time.UTC)

const (
	ttl          = 24 * time.Hour
	rotateBefore = 8 * time.Hour
)

// Tokens the tests mint, by id.
const (
	tokA = "aaaaaa.aaaaaaaaaaaaaaaa"
	tokB = "bbbbbb.bbbbbbbbbbbbbbbb"
	tokC = "cccccc.cccccccccccccccc"
	tokD = "dddddd.dddddddddddddddd"
	tokN = "nnnnnn.nnnnnnnnnnnnnnnn" // what the generator hands out first in most cases
	tokM = "mmmmmm.mmmmmmmmmmmmmmmm"
)

func policy(mutate ...func(*v1alpha1.BootstrapPolicy)) *v1alpha1.BootstrapPolicy {
	p := &v1alpha1.BootstrapPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "workers", UID: types.UID("uid-workers")},
		Spec: v1alpha1.BootstrapPolicySpec{
			Groups: []string{"system:bootstrappers:workers"},
			Token: v1alpha1.TokenSpec{
				TTL:          metav1.Duration{Duration: ttl},
				RotateBefore: &metav1.Duration{Duration: rotateBefore},
				Usages:       []v1alpha1.TokenUsage{v1alpha1.UsageAuthentication},
			},
		},
	}
	for _, m := range mutate {
		m(p)
	}
	return p
}

func withRotate(v string) func(*v1alpha1.BootstrapPolicy) {
	return func(p *v1alpha1.BootstrapPolicy) { p.Annotations = map[string]string{v1alpha1.RotateAnnotation: v} }
}

// minted is the Secret the operator would have created for tok at mintedAt under p.
func minted(t *testing.T, p *v1alpha1.BootstrapPolicy, tok string, mintedAt time.Time, mutate ...func(*corev1.Secret)) corev1.Secret {
	t.Helper()
	s, err := RenderSecret(p, tok, mintedAt)
	if err != nil {
		t.Fatalf("rendering fixture: %v", err)
	}
	s.CreationTimestamp = metav1.NewTime(mintedAt)
	for _, m := range mutate {
		m(s)
	}
	return *s
}

func idOf(tok string) string { id, _, _ := strings.Cut(tok, "."); return id }

// seq is a deterministic Generator handing out toks in order; it fails the test when
// asked for more.
func seq(t *testing.T, toks ...string) (Generator, *int) {
	calls := 0
	return func() (string, error) {
		calls++
		if calls > len(toks) {
			t.Errorf("generator called %d times, only %d tokens prepared", calls, len(toks))
			return "", errors.New("exhausted")
		}
		return toks[calls-1], nil
	}, &calls
}

func TestPlanTokens(t *testing.T) {
	base := policy()
	type want struct {
		createReason string
		createID     string
		currentID    string
		liveIDs      []string
		deletes      map[string]string // id -> reason
		requeue      time.Duration
		genCalls     int
	}
	cases := map[string]struct {
		policy   *v1alpha1.BootstrapPolicy
		existing func(t *testing.T) []corev1.Secret
		gen      []string
		want     want
	}{
		"a policy without tokens mints an initial token that becomes current": {
			policy: base,
			gen:    []string{tokN},
			want: want{
				createReason: ReasonInitial, createID: idOf(tokN), currentID: idOf(tokN),
				liveIDs: []string{idOf(tokN)}, requeue: ttl - rotateBefore, genCalls: 1,
			},
		},
		"a current token outside its rotate window needs nothing and requeues when the window opens": {
			policy: base,
			existing: func(t *testing.T) []corev1.Secret {
				return []corev1.Secret{minted(t, base, tokA, now.Add(-10*time.Hour))}
			},
			want: want{
				currentID: idOf(tokA), liveIDs: []string{idOf(tokA)},
				requeue: ttl - rotateBefore - 10*time.Hour,
			},
		},
		"a current token entering its rotate window gets a successor that becomes current while it stays live": {
			policy: base,
			existing: func(t *testing.T) []corev1.Secret {
				return []corev1.Secret{minted(t, base, tokA, now.Add(-(ttl - rotateBefore)))}
			},
			gen: []string{tokN},
			want: want{
				createReason: ReasonRotation, createID: idOf(tokN), currentID: idOf(tokN),
				liveIDs: []string{idOf(tokN), idOf(tokA)},
				// The old token expires before the successor's window opens.
				requeue: rotateBefore, genCalls: 1,
			},
		},
		"the newest matching token is current and an older one stays live until it expires": {
			policy: base,
			existing: func(t *testing.T) []corev1.Secret {
				return []corev1.Secret{
					minted(t, base, tokA, now.Add(-20*time.Hour)),
					minted(t, base, tokB, now.Add(-4*time.Hour)),
				}
			},
			want: want{
				currentID: idOf(tokB), liveIDs: []string{idOf(tokB), idOf(tokA)},
				requeue: ttl - 20*time.Hour,
			},
		},
		"an old token past its expiry is deleted while the current one stays": {
			policy: base,
			existing: func(t *testing.T) []corev1.Secret {
				return []corev1.Secret{
					minted(t, base, tokA, now.Add(-ttl)), // expires exactly now
					minted(t, base, tokB, now.Add(-4*time.Hour)),
				}
			},
			want: want{
				currentID: idOf(tokB), liveIDs: []string{idOf(tokB)},
				deletes: map[string]string{idOf(tokA): ReasonExpired},
				requeue: ttl - rotateBefore - 4*time.Hour,
			},
		},
		"a changed rotate annotation revokes every token at once and mints a new one": {
			policy: policy(withRotate("leak-2026-06")),
			existing: func(t *testing.T) []corev1.Secret {
				return []corev1.Secret{
					minted(t, base, tokA, now.Add(-20*time.Hour)),
					minted(t, base, tokB, now.Add(-1*time.Hour)),
				}
			},
			gen: []string{tokN},
			want: want{
				createReason: ReasonRevoked, createID: idOf(tokN), currentID: idOf(tokN),
				liveIDs: []string{idOf(tokN)},
				deletes: map[string]string{idOf(tokA): ReasonRevoked, idOf(tokB): ReasonRevoked},
				requeue: ttl - rotateBefore, genCalls: 1,
			},
		},
		"tokens minted under the current rotate annotation are kept": {
			policy: policy(withRotate("leak-2026-06")),
			existing: func(t *testing.T) []corev1.Secret {
				return []corev1.Secret{minted(t, policy(withRotate("leak-2026-06")), tokA, now.Add(-1*time.Hour))}
			},
			want: want{currentID: idOf(tokA), liveIDs: []string{idOf(tokA)}, requeue: ttl - rotateBefore - time.Hour},
		},
		"changed groups replace the tokens": {
			policy: policy(func(p *v1alpha1.BootstrapPolicy) {
				p.Spec.Groups = []string{"system:bootstrappers:workers", "system:bootstrappers:zone-a"}
			}),
			existing: func(t *testing.T) []corev1.Secret {
				return []corev1.Secret{minted(t, base, tokA, now.Add(-1*time.Hour))}
			},
			gen: []string{tokN},
			want: want{
				createReason: ReasonSpecChanged, createID: idOf(tokN), currentID: idOf(tokN),
				liveIDs: []string{idOf(tokN)}, deletes: map[string]string{idOf(tokA): ReasonSpecChanged},
				requeue: ttl - rotateBefore, genCalls: 1,
			},
		},
		"changed usages replace the tokens": {
			policy: policy(func(p *v1alpha1.BootstrapPolicy) {
				p.Spec.Token.Usages = []v1alpha1.TokenUsage{v1alpha1.UsageAuthentication, v1alpha1.UsageSigning}
			}),
			existing: func(t *testing.T) []corev1.Secret {
				return []corev1.Secret{minted(t, base, tokA, now.Add(-1*time.Hour))}
			},
			gen: []string{tokN},
			want: want{
				createReason: ReasonSpecChanged, createID: idOf(tokN), currentID: idOf(tokN),
				liveIDs: []string{idOf(tokN)}, deletes: map[string]string{idOf(tokA): ReasonSpecChanged},
				requeue: ttl - rotateBefore, genCalls: 1,
			},
		},
		"reordered groups are no change, since groups are a set": {
			policy: policy(func(p *v1alpha1.BootstrapPolicy) {
				p.Spec.Groups = []string{"system:bootstrappers:b", "system:bootstrappers:a"}
			}),
			existing: func(t *testing.T) []corev1.Secret {
				return []corev1.Secret{minted(t, policy(func(p *v1alpha1.BootstrapPolicy) {
					p.Spec.Groups = []string{"system:bootstrappers:a", "system:bootstrappers:b"}
				}), tokA, now.Add(-1*time.Hour))}
			},
			want: want{currentID: idOf(tokA), liveIDs: []string{idOf(tokA)}, requeue: ttl - rotateBefore - time.Hour},
		},
		"a shortened ttl replaces a token that would outlive it": {
			policy: policy(func(p *v1alpha1.BootstrapPolicy) {
				p.Spec.Token.TTL.Duration = time.Hour
				p.Spec.Token.RotateBefore.Duration = 20 * time.Minute
			}),
			existing: func(t *testing.T) []corev1.Secret {
				return []corev1.Secret{minted(t, base, tokA, now.Add(-1*time.Hour))}
			},
			gen: []string{tokN},
			want: want{
				createReason: ReasonSpecChanged, createID: idOf(tokN), currentID: idOf(tokN),
				liveIDs: []string{idOf(tokN)}, deletes: map[string]string{idOf(tokA): ReasonSpecChanged},
				requeue: 40 * time.Minute, genCalls: 1,
			},
		},
		"an unparsable expiration counts as expired": {
			policy: base,
			existing: func(t *testing.T) []corev1.Secret {
				return []corev1.Secret{minted(t, base, tokA, now.Add(-1*time.Hour), func(s *corev1.Secret) {
					s.Data[bootstrapapi.BootstrapTokenExpirationKey] = []byte("tomorrow at noon")
				})}
			},
			gen: []string{tokN},
			want: want{
				createReason: ReasonMissing, createID: idOf(tokN), currentID: idOf(tokN),
				liveIDs: []string{idOf(tokN)}, deletes: map[string]string{idOf(tokA): ReasonExpired},
				requeue: ttl - rotateBefore, genCalls: 1,
			},
		},
		"a missing expiration counts as expired, since a token that never expires is refused": {
			policy: base,
			existing: func(t *testing.T) []corev1.Secret {
				return []corev1.Secret{minted(t, base, tokA, now.Add(-1*time.Hour), func(s *corev1.Secret) {
					delete(s.Data, bootstrapapi.BootstrapTokenExpirationKey)
				})}
			},
			gen: []string{tokN},
			want: want{
				createReason: ReasonMissing, createID: idOf(tokN), currentID: idOf(tokN),
				liveIDs: []string{idOf(tokN)}, deletes: map[string]string{idOf(tokA): ReasonExpired},
				requeue: ttl - rotateBefore, genCalls: 1,
			},
		},
		"the only token expired while the operator was away and is replaced as missing": {
			policy: base,
			existing: func(t *testing.T) []corev1.Secret {
				return []corev1.Secret{minted(t, base, tokA, now.Add(-2*ttl))}
			},
			gen: []string{tokN},
			want: want{
				createReason: ReasonMissing, createID: idOf(tokN), currentID: idOf(tokN),
				liveIDs: []string{idOf(tokN)}, deletes: map[string]string{idOf(tokA): ReasonExpired},
				requeue: ttl - rotateBefore, genCalls: 1,
			},
		},
		"tokens listed in status but deleted by someone are recreated as missing": {
			policy: policy(func(p *v1alpha1.BootstrapPolicy) {
				p.Status.Tokens = []v1alpha1.TokenStatus{{ID: idOf(tokA), SecretName: "bootstrap-token-" + idOf(tokA)}}
			}),
			gen: []string{tokN},
			want: want{
				createReason: ReasonMissing, createID: idOf(tokN), currentID: idOf(tokN),
				liveIDs: []string{idOf(tokN)}, requeue: ttl - rotateBefore, genCalls: 1,
			},
		},
		"a Secret with the policy's labels that is not a usable token is deleted as invalid": {
			policy: base,
			existing: func(t *testing.T) []corev1.Secret {
				return []corev1.Secret{
					minted(t, base, tokA, now.Add(-1*time.Hour), func(s *corev1.Secret) {
						s.Data[bootstrapapi.BootstrapTokenSecretKey] = []byte("short")
					}),
					minted(t, base, tokB, now.Add(-1*time.Hour)),
				}
			},
			want: want{
				currentID: idOf(tokB), liveIDs: []string{idOf(tokB)},
				deletes: map[string]string{idOf(tokA): ReasonInvalid}, requeue: ttl - rotateBefore - time.Hour,
			},
		},
		"an id already in use is regenerated": {
			policy: base,
			existing: func(t *testing.T) []corev1.Secret {
				return []corev1.Secret{minted(t, base, tokA, now.Add(-(ttl - rotateBefore)))}
			},
			gen: []string{"aaaaaa.zzzzzzzzzzzzzzzz", tokN},
			want: want{
				createReason: ReasonRotation, createID: idOf(tokN), currentID: idOf(tokN),
				liveIDs: []string{idOf(tokN), idOf(tokA)}, requeue: rotateBefore, genCalls: 2,
			},
		},
		"an id held by another policy's or a human's token is regenerated, and that token is left alone": {
			policy: base,
			existing: func(t *testing.T) []corev1.Secret {
				other := minted(t, policy(func(p *v1alpha1.BootstrapPolicy) { p.Name = "masters" }), tokC, now.Add(-2*ttl))
				human := minted(t, base, tokD, now.Add(-1*time.Hour), func(s *corev1.Secret) { s.Labels = nil })
				return []corev1.Secret{other, human}
			},
			gen: []string{tokC, tokD, tokN},
			want: want{
				createReason: ReasonInitial, createID: idOf(tokN), currentID: idOf(tokN),
				liveIDs: []string{idOf(tokN)}, requeue: ttl - rotateBefore, genCalls: 3,
			},
		},
		"an id whose Secret name is taken by a Secret without token data is regenerated": {
			policy: base,
			existing: func(t *testing.T) []corev1.Secret {
				return []corev1.Secret{{ObjectMeta: metav1.ObjectMeta{Name: "bootstrap-token-" + idOf(tokN), Namespace: "kube-system"}}}
			},
			gen: []string{tokN, tokM},
			want: want{
				createReason: ReasonInitial, createID: idOf(tokM), currentID: idOf(tokM),
				liveIDs: []string{idOf(tokM)}, requeue: ttl - rotateBefore, genCalls: 2,
			},
		},
		"a token Secret already being deleted is neither current nor deleted again": {
			policy: base,
			existing: func(t *testing.T) []corev1.Secret {
				return []corev1.Secret{
					minted(t, base, tokA, now.Add(-1*time.Hour), func(s *corev1.Secret) {
						s.DeletionTimestamp = &metav1.Time{Time: now.Add(-time.Minute)}
					}),
					minted(t, base, tokB, now.Add(-2*time.Hour)),
				}
			},
			want: want{currentID: idOf(tokB), liveIDs: []string{idOf(tokB)}, requeue: ttl - rotateBefore - 2*time.Hour},
		},
		"a policy built in Go without ttl uses the 24h default and a third of it": {
			policy: policy(func(p *v1alpha1.BootstrapPolicy) {
				p.Spec.Token = v1alpha1.TokenSpec{}
			}),
			gen: []string{tokN},
			want: want{
				createReason: ReasonInitial, createID: idOf(tokN), currentID: idOf(tokN),
				liveIDs: []string{idOf(tokN)}, requeue: DefaultTTL - DefaultTTL/3, genCalls: 1,
			},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			var existing []corev1.Secret
			if tc.existing != nil {
				existing = tc.existing(t)
			}
			gen, calls := seq(t, tc.gen...)
			plan, err := PlanTokens(tc.policy, existing, now, gen)
			if err != nil {
				t.Fatalf("PlanTokens: %v", err)
			}
			w := tc.want
			if *calls != w.genCalls {
				t.Errorf("generator calls = %d, want %d", *calls, w.genCalls)
			}
			if plan.CreateReason != w.createReason {
				t.Errorf("CreateReason = %q, want %q", plan.CreateReason, w.createReason)
			}
			switch {
			case w.createID == "" && plan.Create != nil:
				t.Errorf("Create = %s, want none", plan.Create.Name)
			case w.createID != "" && plan.Create == nil:
				t.Errorf("Create = nil, want token %s", w.createID)
			case w.createID != "" && plan.Create.Name != "bootstrap-token-"+w.createID:
				t.Errorf("Create = %s, want bootstrap-token-%s", plan.Create.Name, w.createID)
			}
			if plan.Current == nil {
				t.Fatalf("Current = nil, want %s", w.currentID)
			}
			if plan.Current.ID != w.currentID {
				t.Errorf("Current = %s, want %s", plan.Current.ID, w.currentID)
			}
			if plan.Create != nil && plan.Current.Expires != now.Add(ttlOf(tc.policy)).Truncate(time.Second) {
				t.Errorf("new token expires %s, want now+ttl", plan.Current.Expires)
			}
			var live []string
			for _, tok := range plan.Live {
				live = append(live, tok.ID)
			}
			if !slices.Equal(live, w.liveIDs) {
				t.Errorf("Live = %v, want %v", live, w.liveIDs)
			}
			if &plan.Live[0] != plan.Current {
				t.Errorf("Current is not Live[0]")
			}
			got := map[string]string{}
			for _, tok := range plan.Delete {
				got[tok.ID] = plan.DeleteReason(tok)
				if tok.SecretName != "bootstrap-token-"+tok.ID {
					t.Errorf("Delete entry %+v names the wrong Secret", tok)
				}
			}
			if w.deletes == nil {
				w.deletes = map[string]string{}
			}
			if !maps.Equal(got, w.deletes) {
				t.Errorf("Delete = %v, want %v", got, w.deletes)
			}
			if plan.RequeueAfter != w.requeue {
				t.Errorf("RequeueAfter = %s, want %s", plan.RequeueAfter, w.requeue)
			}
			if plan.RequeueAfter <= 0 {
				t.Errorf("RequeueAfter = %s, want > 0", plan.RequeueAfter)
			}
			if st := plan.Status(); len(st) != len(plan.Live) || st[0].ID != plan.Current.ID || !st[0].ExpiresAt.Time.Equal(plan.Current.Expires) {
				t.Errorf("Status() = %+v does not follow Live", st)
			}
		})
	}
}

// ttlOf is the ttl a policy mints with, the schema default when unset.
func ttlOf(p *v1alpha1.BootstrapPolicy) time.Duration {
	if p.Spec.Token.TTL.Duration == 0 {
		return DefaultTTL
	}
	return p.Spec.Token.TTL.Duration
}

func TestPlanTokensErrors(t *testing.T) {
	errEntropy := errors.New("entropy source unavailable")
	inWindow := func(t *testing.T) []corev1.Secret {
		return []corev1.Secret{minted(t, policy(), tokA, now.Add(-(ttl - rotateBefore)))}
	}
	cases := map[string]struct {
		policy      *v1alpha1.BootstrapPolicy
		existing    func(t *testing.T) []corev1.Secret
		gen         Generator
		wantIs      error
		wantCalls   int
		wantDeletes map[string]string
		wantLive    []string
		mustNotLeak string
	}{
		"a generator error propagates and revoked tokens are still deleted": {
			policy:      policy(withRotate("leaked")),
			existing:    inWindow,
			gen:         func() (string, error) { return "", errEntropy },
			wantIs:      errEntropy,
			wantCalls:   1,
			wantDeletes: map[string]string{idOf(tokA): ReasonRevoked},
		},
		"a generator error during rotation keeps the old token live": {
			policy:    policy(),
			existing:  inWindow,
			gen:       func() (string, error) { return "", errEntropy },
			wantIs:    errEntropy,
			wantCalls: 1,
			wantLive:  []string{idOf(tokA)},
		},
		"a generator that keeps returning an id in use fails after bounded attempts": {
			policy:    policy(),
			existing:  inWindow,
			gen:       func() (string, error) { return "aaaaaa.zzzzzzzzzzzzzzzz", nil },
			wantCalls: maxGenerateAttempts,
			wantLive:  []string{idOf(tokA)},
		},
		"a malformed token from the generator is refused without appearing in the error": {
			policy:      policy(),
			gen:         func() (string, error) { return "abcdef.TOPSECRETVALUE", nil },
			wantCalls:   1,
			mustNotLeak: "TOPSECRETVALUE",
		},
		"rotateBefore not shorter than ttl is an invalid spec and mints nothing": {
			policy: policy(func(p *v1alpha1.BootstrapPolicy) {
				p.Spec.Token.RotateBefore = &metav1.Duration{Duration: ttl}
			}),
			gen:    func() (string, error) { return tokN, nil },
			wantIs: ErrInvalidSpec,
		},
		"a group outside system:bootstrappers: is an invalid spec": {
			policy: policy(func(p *v1alpha1.BootstrapPolicy) { p.Spec.Groups = []string{"system:masters"} }),
			gen:    func() (string, error) { return tokN, nil },
			wantIs: ErrInvalidSpec, wantCalls: 1,
			mustNotLeak: strings.Split(tokN, ".")[1],
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			var existing []corev1.Secret
			if tc.existing != nil {
				existing = tc.existing(t)
			}
			calls := 0
			gen := func() (string, error) { calls++; return tc.gen() }
			plan, err := PlanTokens(tc.policy, existing, now, gen)
			if err == nil {
				t.Fatalf("PlanTokens succeeded, want an error")
			}
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Errorf("error %q is not %q", err, tc.wantIs)
			}
			if tc.mustNotLeak != "" && strings.Contains(err.Error(), tc.mustNotLeak) {
				t.Errorf("error %q contains the token secret", err)
			}
			if calls != tc.wantCalls {
				t.Errorf("generator calls = %d, want %d", calls, tc.wantCalls)
			}
			if plan.Current != nil || plan.Create != nil || plan.CreateReason != "" {
				t.Errorf("plan has Current %v, Create %v, reason %q; want none on error", plan.Current, plan.Create, plan.CreateReason)
			}
			got := map[string]string{}
			for _, tok := range plan.Delete {
				got[tok.ID] = plan.DeleteReason(tok)
			}
			if tc.wantDeletes == nil {
				tc.wantDeletes = map[string]string{}
			}
			if !maps.Equal(got, tc.wantDeletes) {
				t.Errorf("Delete = %v, want %v", got, tc.wantDeletes)
			}
			var live []string
			for _, tok := range plan.Live {
				live = append(live, tok.ID)
			}
			if !slices.Equal(live, tc.wantLive) {
				t.Errorf("Live = %v, want %v", live, tc.wantLive)
			}
		})
	}
}

// TestPlanTokensLifecycle applies each plan to a fake store and walks the clock through
// a token's life: what the controller does, step by step.
func TestPlanTokensLifecycle(t *testing.T) {
	p := policy()
	store := map[string]corev1.Secret{}
	gen, _ := seq(t, tokA, tokB, tokC)
	apply := func(at time.Time) Plan {
		t.Helper()
		var existing []corev1.Secret
		for _, name := range slices.Sorted(maps.Keys(store)) {
			existing = append(existing, store[name])
		}
		plan, err := PlanTokens(p, existing, at, gen)
		if err != nil {
			t.Fatalf("at %s: %v", at, err)
		}
		if plan.Create != nil {
			s := *plan.Create
			s.CreationTimestamp = metav1.NewTime(at)
			store[s.Name] = s
		}
		for _, tok := range plan.Delete {
			delete(store, tok.SecretName)
		}
		p.Status.Tokens = plan.Status()
		return plan
	}
	// Each step but the probe runs when the previous plan asked to be requeued, so
	// the walk also checks that RequeueAfter lands on the next change.
	steps := []struct {
		name       string
		probe      time.Duration // run this long after the previous step instead of at its RequeueAfter
		wantAt     time.Duration // after now
		wantReason string
		wantLive   []string
		wantDelete []string
	}{
		{name: "initial mint", wantAt: 0, wantReason: ReasonInitial, wantLive: []string{"aaaaaa"}},
		{name: "steady one hour later", probe: time.Hour, wantAt: time.Hour, wantLive: []string{"aaaaaa"}},
		{name: "rotate window opens", wantAt: ttl - rotateBefore, wantReason: ReasonRotation, wantLive: []string{"bbbbbb", "aaaaaa"}},
		{name: "old token expires and is deleted", wantAt: ttl, wantLive: []string{"bbbbbb"}, wantDelete: []string{"aaaaaa"}},
		{name: "successor's window opens", wantAt: 2 * (ttl - rotateBefore), wantReason: ReasonRotation, wantLive: []string{"cccccc", "bbbbbb"}},
	}
	at := now
	var prev Plan
	for i, st := range steps {
		switch {
		case i == 0:
		case st.probe > 0:
			at = at.Add(st.probe)
		default:
			at = at.Add(prev.RequeueAfter)
		}
		if want := now.Add(st.wantAt); !at.Equal(want) {
			t.Fatalf("%s: runs at now+%s, want now+%s", st.name, at.Sub(now), st.wantAt)
		}
		plan := apply(at)
		var live, deleted []string
		for _, tok := range plan.Live {
			live = append(live, tok.ID)
		}
		for _, tok := range plan.Delete {
			deleted = append(deleted, tok.ID)
		}
		if plan.CreateReason != st.wantReason || !slices.Equal(live, st.wantLive) || !slices.Equal(deleted, st.wantDelete) {
			t.Errorf("%s: reason %q live %v deleted %v; want %q %v %v", st.name, plan.CreateReason, live, deleted, st.wantReason, st.wantLive, st.wantDelete)
		}
		prev = plan
	}
}
