package token

import (
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/diff"
	"k8s.io/utils/ptr"

	"github.com/tlsbootstrap/tls-bootstrap-operator/api/v1alpha1"
)

func TestRenderSecret(t *testing.T) {
	cest := time.FixedZone("CEST", 2*60*60)
	// The policy carries labels and annotations a GitOps tool puts on it: none may
	// reach the Secret.
	gitops := func(p *v1alpha1.BootstrapPolicy) {
		p.Labels = map[string]string{"app.kubernetes.io/instance": "cluster-config", "team": "infra"}
		p.Annotations = map[string]string{
			"argocd.argoproj.io/tracking-id": "cluster-config:bootstrap.tlsbootstrap.io/BootstrapPolicy:/workers",
			v1alpha1.RotateAnnotation:        "2026-05-leak",
		}
	}
	owner := metav1.OwnerReference{
		APIVersion: "bootstrap.tlsbootstrap.io/v1alpha1", Kind: "BootstrapPolicy",
		Name: "workers", UID: "uid-workers", Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true),
	}
	labels := map[string]string{
		"app.kubernetes.io/managed-by":     "tls-bootstrap-operator",
		"bootstrap.tlsbootstrap.io/policy": "workers",
	}
	meta := func(rotate string) metav1.ObjectMeta {
		return metav1.ObjectMeta{
			Name: "bootstrap-token-abcdef", Namespace: "kube-system", Labels: labels,
			Annotations:     map[string]string{"bootstrap.tlsbootstrap.io/rotate": rotate},
			OwnerReferences: []metav1.OwnerReference{owner},
		}
	}
	cases := map[string]struct {
		policy *v1alpha1.BootstrapPolicy
		now    time.Time
		want   map[string]string
		meta   metav1.ObjectMeta
	}{
		"an authentication token carries every key, an RFC3339 UTC expiration and no policy labels": {
			policy: policy(gitops, func(p *v1alpha1.BootstrapPolicy) {
				p.Spec.Groups = []string{"system:bootstrappers:workers", "system:bootstrappers:zone-a"}
				p.Spec.Token.Description = "workers in zone a"
			}),
			now: time.Date(2026, time.June, 1, 14, 30, 15, 999, cest),
			want: map[string]string{
				"token-id":                       "abcdef",
				"token-secret":                   "0123456789abcdef",
				"expiration":                     "2026-06-02T12:30:15Z",
				"description":                    "workers in zone a",
				"auth-extra-groups":              "system:bootstrappers:workers,system:bootstrappers:zone-a",
				"usage-bootstrap-authentication": "true",
			},
			meta: meta("2026-05-leak"),
		},
		"a signing token gets both usage keys and a policy without description a default one": {
			policy: policy(func(p *v1alpha1.BootstrapPolicy) {
				p.Spec.Token.Usages = []v1alpha1.TokenUsage{v1alpha1.UsageSigning, v1alpha1.UsageAuthentication}
				p.Spec.Token.TTL.Duration = time.Hour
				p.Spec.Token.RotateBefore = nil
			}),
			now: now,
			want: map[string]string{
				"token-id":                       "abcdef",
				"token-secret":                   "0123456789abcdef",
				"expiration":                     "2026-06-01T13:00:00Z",
				"description":                    "bootstrap token of BootstrapPolicy workers, managed by tls-bootstrap-operator",
				"auth-extra-groups":              "system:bootstrappers:workers",
				"usage-bootstrap-authentication": "true",
				"usage-bootstrap-signing":        "true",
			},
			meta: meta(""),
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := RenderSecret(tc.policy, "abcdef.0123456789abcdef", tc.now)
			if err != nil {
				t.Fatalf("RenderSecret: %v", err)
			}
			want := &corev1.Secret{
				TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
				ObjectMeta: tc.meta,
				Type:       "bootstrap.kubernetes.io/token",
				Data:       map[string][]byte{},
			}
			for k, v := range tc.want {
				want.Data[k] = []byte(v)
			}
			if !equality.Semantic.DeepEqual(got, want) {
				t.Errorf("Secret differs (-want +got):\n%s", diff.Diff(want, got))
			}
			// The rendered Secret is what FromSecret and SecretOf read back.
			tok, ok := FromSecret(got)
			if !ok || tok.ID != "abcdef" || tok.RotateKey != tc.meta.Annotations[v1alpha1.RotateAnnotation] {
				t.Errorf("FromSecret(rendered) = %+v, %v", tok, ok)
			}
			if s, err := SecretOf(got); err != nil || s != "abcdef.0123456789abcdef" {
				t.Errorf("SecretOf(rendered) = %q, %v", s, err)
			}
		})
	}
}

func TestRenderSecretRefusesMalformedTokens(t *testing.T) {
	cases := map[string]struct {
		token string
	}{
		"an upper-case secret":         {token: "abcdef.0123456789ABCDEF"},
		"a short secret":               {token: "abcdef.0123"},
		"no dot":                       {token: "abcdef0123456789abcdef"},
		"a seven character id":         {token: "abcdefg.0123456789abcdef"},
		"an empty string":              {token: ""},
		"extra dots in a token string": {token: "abcdef.01234567.89abcdef"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := RenderSecret(policy(), tc.token, now)
			if err == nil {
				t.Fatalf("RenderSecret accepted %q", tc.token)
			}
			if tc.token != "" && strings.Contains(err.Error(), tc.token) {
				t.Errorf("error %q contains the token", err)
			}
		})
	}
}

func TestFromSecret(t *testing.T) {
	p := policy(withRotate("r1"))
	cases := map[string]struct {
		mutate func(*corev1.Secret)
		wantOK bool
		want   Token
	}{
		"a rendered Secret reads back with groups, usages, rotate key and creation time": {
			wantOK: true,
			want: Token{
				ID: "abcdef", SecretName: "bootstrap-token-abcdef", Expires: now.Add(ttl),
				Groups: []string{"system:bootstrappers:workers"}, Usages: []string{"authentication"},
				RotateKey: "r1", Created: now,
			},
		},
		"a usage counts only when it is exactly true": {
			mutate: func(s *corev1.Secret) {
				s.Data["usage-bootstrap-authentication"] = []byte("True")
				s.Data["usage-bootstrap-signing"] = []byte("true")
			},
			wantOK: true,
			want: Token{
				ID: "abcdef", SecretName: "bootstrap-token-abcdef", Expires: now.Add(ttl),
				Groups: []string{"system:bootstrappers:workers"}, Usages: []string{"signing"},
				RotateKey: "r1", Created: now,
			},
		},
		"an unparsable expiration reads as the zero time": {
			mutate: func(s *corev1.Secret) { s.Data["expiration"] = []byte("2026-06-02 12:00") },
			wantOK: true,
			want: Token{
				ID: "abcdef", SecretName: "bootstrap-token-abcdef",
				Groups: []string{"system:bootstrappers:workers"}, Usages: []string{"authentication"},
				RotateKey: "r1", Created: now,
			},
		},
		"a Secret of another type is no token": {
			mutate: func(s *corev1.Secret) { s.Type = corev1.SecretTypeOpaque },
		},
		"a Secret outside kube-system is no token the API server reads": {
			mutate: func(s *corev1.Secret) { s.Namespace = "default" },
		},
		"a token-id that does not match the name is no token": {
			mutate: func(s *corev1.Secret) { s.Data["token-id"] = []byte("zzzzzz") },
		},
		"a malformed secret part is no token": {
			mutate: func(s *corev1.Secret) { s.Data["token-secret"] = []byte("0123456789ABCDEF") },
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			s := minted(t, p, "abcdef.0123456789abcdef", now)
			if tc.mutate != nil {
				tc.mutate(&s)
			}
			got, ok := FromSecret(&s)
			if ok != tc.wantOK {
				t.Fatalf("ok = %v, want %v", ok, tc.wantOK)
			}
			if !ok {
				if _, err := SecretOf(&s); err == nil || strings.Contains(err.Error(), "0123456789") {
					t.Errorf("SecretOf error = %v, want one without the secret", err)
				}
				return
			}
			if got.ID != tc.want.ID || got.SecretName != tc.want.SecretName || !got.Expires.Equal(tc.want.Expires) ||
				!slices.Equal(got.Groups, tc.want.Groups) || !slices.Equal(got.Usages, tc.want.Usages) ||
				got.RotateKey != tc.want.RotateKey || !got.Created.Equal(tc.want.Created) {
				t.Errorf("FromSecret = %+v, want %+v", got, tc.want)
			}
		})
	}
	if _, ok := FromSecret(nil); ok {
		t.Errorf("FromSecret(nil) is ok")
	}
	if _, err := SecretOf(nil); err == nil {
		t.Errorf("SecretOf(nil) succeeded")
	}
}

func TestLabelsAndOwnerReference(t *testing.T) {
	p := policy()
	l := Labels(p.Name)
	l["mutated"] = "yes"
	if _, shared := Labels(p.Name)["mutated"]; shared {
		t.Errorf("Labels returns a shared map")
	}
	ref := OwnerReference(p)
	if ref.APIVersion != v1alpha1.GroupVersion.String() || ref.Kind != "BootstrapPolicy" || ref.Name != p.Name ||
		ref.UID != p.UID || !ptr.Deref(ref.Controller, false) || !ptr.Deref(ref.BlockOwnerDeletion, false) {
		t.Errorf("OwnerReference = %+v", ref)
	}
}
