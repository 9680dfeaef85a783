// Package token decides which bootstrap-token Secrets a BootstrapPolicy should have
// at a given time, and renders them. It never talks to the API server: the
// controller lists the Secrets, calls PlanTokens and applies the Plan.
//
// Names, keys, formats and generation come from k8s.io/cluster-bootstrap so that the
// Secrets are exactly what the API server's bootstrap-token authenticator reads.
package token

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
	bootstraputil "k8s.io/cluster-bootstrap/token/util"
	bootstrapsecrets "k8s.io/cluster-bootstrap/util/secrets"

	"github.com/tlsbootstrap/tls-bootstrap-operator/api/v1alpha1"
	"github.com/tlsbootstrap/tls-bootstrap-operator/internal/render"
)

// DefaultTTL is the schema default of spec.token.ttl, used when a policy built in Go
// (rather than read from the API server) leaves it unset.
const DefaultTTL = 24 * time.Hour

// ErrInvalidSpec marks errors no retry can fix: the policy's token spec itself is
// unusable (the CRD's CEL rules normally refuse such a spec at admission).
var ErrInvalidSpec = errors.New("invalid token spec")

// Token is what the operator knows of one bootstrap-token Secret, never its secret part.
type Token struct {
	// ID is the public token id, the part before the dot.
	ID string
	// SecretName is the token's Secret in kube-system.
	SecretName string
	// Expires is when the API server stops accepting the token. The zero time means
	// the expiration was missing or unparsable, which the planner treats as expired.
	Expires time.Time
	// Groups are the token's extra groups (auth-extra-groups), without system:bootstrappers.
	Groups []string
	// Usages are the usages whose key is exactly "true", sorted ("authentication", "signing").
	Usages []string
	// RotateKey is the value of the policy's rotate annotation the token was minted
	// under, stored as annotation bootstrap.tlsbootstrap.io/rotate on the Secret.
	RotateKey string
	// Created is the Secret's creationTimestamp (the planning time for a token the
	// plan is about to create).
	Created time.Time
}

// Status is the token as listed in status.tokens.
func (t Token) Status() v1alpha1.TokenStatus {
	return v1alpha1.TokenStatus{ID: t.ID, SecretName: t.SecretName, ExpiresAt: metav1.NewTime(t.Expires)}
}

// FromSecret reads a bootstrap-token Secret. ok is false when the Secret is not a
// bootstrap token the API server would accept: wrong type or namespace, an id that
// does not match the name, or a malformed secret part. An unparsable or missing
// expiration counts as expired (Expires is the zero time): the operator never mints
// a token without one, and a token that never expires is what the policy refuses.
func FromSecret(s *corev1.Secret) (Token, bool) {
	if s == nil || s.Type != bootstrapapi.SecretTypeBootstrapToken || s.Namespace != metav1.NamespaceSystem {
		return Token{}, false
	}
	id := bootstrapsecrets.GetData(s, bootstrapapi.BootstrapTokenIDKey)
	if nameID, ok := bootstrapsecrets.ParseName(s.Name); !ok || nameID != id {
		return Token{}, false
	}
	secret := bootstrapsecrets.GetData(s, bootstrapapi.BootstrapTokenSecretKey)
	if !bootstraputil.IsValidBootstrapToken(bootstraputil.TokenFromIDAndSecret(id, secret)) {
		return Token{}, false
	}
	t := Token{
		ID:         id,
		SecretName: s.Name,
		Groups:     splitGroups(bootstrapsecrets.GetData(s, bootstrapapi.BootstrapTokenExtraGroupsKey)),
		RotateKey:  s.Annotations[v1alpha1.RotateAnnotation],
		Created:    s.CreationTimestamp.Time,
	}
	// Parsed here rather than with bootstrapsecrets.GetExpiration, which says "never
	// expires" for a missing expiration.
	if exp, err := time.Parse(time.RFC3339, bootstrapsecrets.GetData(s, bootstrapapi.BootstrapTokenExpirationKey)); err == nil {
		t.Expires = exp
	}
	for _, u := range knownUsages() {
		// The authenticator honours a usage only when its value is exactly "true".
		if bootstrapsecrets.GetData(s, usageKey(u)) == "true" {
			t.Usages = append(t.Usages, u)
		}
	}
	return t, true
}

// SecretOf returns the full "id.secret" token from a token Secret, needed to render
// the kubeconfig. The error never contains the secret part.
func SecretOf(s *corev1.Secret) (string, error) {
	if _, ok := FromSecret(s); !ok {
		name := ""
		if s != nil {
			name = s.Namespace + "/" + s.Name
		}
		return "", fmt.Errorf("secret %q is not a valid bootstrap token", name)
	}
	return bootstraputil.TokenFromIDAndSecret(
		bootstrapsecrets.GetData(s, bootstrapapi.BootstrapTokenIDKey),
		bootstrapsecrets.GetData(s, bootstrapapi.BootstrapTokenSecretKey),
	), nil
}

// Labels returns the two labels every rendered object carries.
func Labels(policyName string) map[string]string { return render.Labels(policyName) }

// OwnerReference is the controller ownerReference to the policy.
func OwnerReference(p *v1alpha1.BootstrapPolicy) metav1.OwnerReference {
	return render.OwnerReference(p)
}

// RenderSecret builds the Secret for token "id.secret", expiring ttl after now. It
// carries only the operator's labels and the rotate annotation, never the policy's own
// labels or annotations (Argo CD would take a copied tracking label as Git owning the
// Secret). The error never contains the token.
func RenderSecret(p *v1alpha1.BootstrapPolicy, tokenString string, now time.Time) (*corev1.Secret, error) {
	if !bootstraputil.IsValidBootstrapToken(tokenString) {
		return nil, errors.New("generated token does not have the bootstrap token format")
	}
	ttl, _, err := lifetimes(p)
	if err != nil {
		return nil, err
	}
	for _, g := range p.Spec.Groups {
		if err := bootstraputil.ValidateBootstrapGroupName(g); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidSpec, err)
		}
	}
	usages := spec(p).usages
	if err := bootstraputil.ValidateUsages(usages); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidSpec, err)
	}
	id, secret, _ := strings.Cut(tokenString, ".")
	description := p.Spec.Token.Description
	if description == "" {
		// Shown by `kubeadm token list`: says where the token comes from.
		description = fmt.Sprintf("bootstrap token of BootstrapPolicy %s, managed by %s", p.Name, v1alpha1.ManagedByValue)
	}
	data := map[string][]byte{
		bootstrapapi.BootstrapTokenIDKey:          []byte(id),
		bootstrapapi.BootstrapTokenSecretKey:      []byte(secret),
		bootstrapapi.BootstrapTokenExpirationKey:  []byte(now.Add(ttl).UTC().Format(time.RFC3339)),
		bootstrapapi.BootstrapTokenDescriptionKey: []byte(description),
		bootstrapapi.BootstrapTokenExtraGroupsKey: []byte(strings.Join(p.Spec.Groups, ",")),
	}
	for _, u := range usages {
		data[usageKey(u)] = []byte("true")
	}
	return &corev1.Secret{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{
			Name:            bootstraputil.BootstrapTokenSecretName(id),
			Namespace:       metav1.NamespaceSystem,
			Labels:          render.Labels(p.Name),
			Annotations:     map[string]string{v1alpha1.RotateAnnotation: p.Annotations[v1alpha1.RotateAnnotation]},
			OwnerReferences: []metav1.OwnerReference{render.OwnerReference(p)},
		},
		Type: bootstrapapi.SecretTypeBootstrapToken,
		Data: data,
	}, nil
}

// lifetimes returns the token ttl and rotateBefore of the policy, refusing values
// that would make the planner mint a token on every reconcile.
func lifetimes(p *v1alpha1.BootstrapPolicy) (ttl, rotateBefore time.Duration, err error) {
	ts := p.Spec.Token
	if ts.TTL.Duration == 0 {
		ts.TTL.Duration = DefaultTTL
	}
	ttl, rotateBefore = ts.TTL.Duration, ts.EffectiveRotateBefore()
	switch {
	case ttl < 0:
		return 0, 0, fmt.Errorf("%w: ttl %s is negative", ErrInvalidSpec, ttl)
	case rotateBefore <= 0:
		return 0, 0, fmt.Errorf("%w: rotateBefore %s must be positive", ErrInvalidSpec, rotateBefore)
	case ttl-rotateBefore < time.Second:
		// A fresh token, whose expiration is written to the second, would already be
		// due for rotation: the planner would mint one on every reconcile.
		return 0, 0, fmt.Errorf("%w: rotateBefore %s must be shorter than ttl %s", ErrInvalidSpec, rotateBefore, ttl)
	}
	return ttl, rotateBefore, nil
}

// knownUsages are the usage names in a fixed order.
func knownUsages() []string {
	return []string{string(v1alpha1.UsageAuthentication), string(v1alpha1.UsageSigning)}
}

func usageKey(usage string) string { return bootstrapapi.BootstrapTokenUsagePrefix + usage }

func splitGroups(s string) []string {
	if s == "" {
		return nil
	}
	groups := strings.Split(s, ",")
	for i := range groups {
		groups[i] = strings.TrimSpace(groups[i])
	}
	return groups
}

// sameSet compares two lists as sets: groups and usages are listType=set, so a
// reordering in the spec is no change.
func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}
