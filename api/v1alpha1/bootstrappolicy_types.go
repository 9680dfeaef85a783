package v1alpha1

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Label keys and annotation keys that the operator puts on, or reads from, objects.
const (
	// ManagedByLabel marks every object the operator renders.
	ManagedByLabel = "app.kubernetes.io/managed-by"
	// ManagedByValue is the value of ManagedByLabel.
	ManagedByValue = "tls-bootstrap-operator"
	// PolicyLabel names the BootstrapPolicy an object was rendered for.
	PolicyLabel = "bootstrap.tlsbootstrap.io/policy"
	// RotateAnnotation on a policy: a new value revokes every token of the policy at
	// once and mints a new one (the answer to a leaked token).
	RotateAnnotation = "bootstrap.tlsbootstrap.io/rotate"
)

// Condition types written to status.conditions.
const (
	// ConditionReady summarises the others: True when everything the policy asks for is in place.
	ConditionReady = "Ready"
	// ConditionTokensReady is True when a current, unexpired bootstrap token exists.
	ConditionTokensReady = "TokensReady"
	// ConditionRBACReady is True when every rendered ClusterRole and ClusterRoleBinding is applied.
	ConditionRBACReady = "RBACReady"
	// ConditionKubeconfigReady is True when the bootstrap kubeconfig Secret holds the current token.
	// It is only written when spec.kubeconfig is set.
	ConditionKubeconfigReady = "KubeconfigReady"
)

// TokenUsage is a usage of a bootstrap token.
// +kubebuilder:validation:Enum=authentication;signing
type TokenUsage string

const (
	// UsageAuthentication lets the token authenticate to the API server as system:bootstrap:<id>.
	UsageAuthentication TokenUsage = "authentication"
	// UsageSigning lets kube-controller-manager's bootstrapsigner sign kube-public/cluster-info with
	// the token. Anyone can read such a signature and guess the token offline from it, so give it
	// only to tokens used for discovery.
	UsageSigning TokenUsage = "signing"
)

// Approver says who approves the CertificateSigningRequests the policy governs.
// +kubebuilder:validation:Enum=Operator;KubeControllerManager
type Approver string

const (
	// ApproverOperator means this operator approves or denies by the policy's rules.
	ApproverOperator Approver = "Operator"
	// ApproverKubeControllerManager means kube-controller-manager's csrapproving controller approves,
	// through the RBAC the policy renders; the operator leaves the policy's CSRs alone.
	ApproverKubeControllerManager Approver = "KubeControllerManager"
)

// ApprovalMode says whether decisions are written or only recorded.
// +kubebuilder:validation:Enum=Enforce;DryRun
type ApprovalMode string

const (
	// ModeEnforce writes Approved or Denied conditions.
	ModeEnforce ApprovalMode = "Enforce"
	// ModeDryRun only records, as an Event and a metric, what the policy would have decided.
	ModeDryRun ApprovalMode = "DryRun"
)

// ViolationAction says what happens to a governed CSR that breaks the policy's rules.
// +kubebuilder:validation:Enum=Deny;Ignore
type ViolationAction string

const (
	// ViolationDeny writes a Denied condition with every violated rule.
	ViolationDeny ViolationAction = "Deny"
	// ViolationIgnore leaves the CSR pending for humans or other approvers.
	ViolationIgnore ViolationAction = "Ignore"
)

// BootstrapPolicySpec declares how nodes join: who may bootstrap, how long their
// tokens live, and which certificate requests are approved.
type BootstrapPolicySpec struct {
	// Groups are the extra groups every bootstrap token of this policy carries
	// (auth-extra-groups). A kubelet bootstrapping with such a token is in these
	// groups and in system:bootstrappers; first-bootstrap CSRs are governed by the
	// policy whose groups they carry. Each must match
	// system:bootstrappers:[a-z0-9:-]{0,255}[a-z0-9].
	// +required
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=8
	// +listType=set
	// +kubebuilder:validation:items:MaxLength=277
	// +kubebuilder:validation:items:Pattern=`^system:bootstrappers:[a-z0-9:-]{0,255}[a-z0-9]$`
	Groups []string `json:"groups"`

	// Token sets the lifetime, rotation and usages of the policy's bootstrap tokens.
	// +optional
	// +kubebuilder:default={}
	Token TokenSpec `json:"token,omitzero"`

	// Kubeconfig, when set, makes the operator publish a ready bootstrap kubeconfig
	// (server, CA and the current token) in a Secret, for --bootstrap-kubeconfig.
	// +optional
	Kubeconfig *KubeconfigSpec `json:"kubeconfig,omitempty"`

	// Approval sets who approves the kubelet CSRs this policy governs, and by which rules.
	// +optional
	// +kubebuilder:default={}
	Approval ApprovalSpec `json:"approval,omitzero"`
}

// TokenSpec sets the lifetime, rotation and usages of bootstrap tokens.
// +kubebuilder:validation:XValidation:rule="!has(self.rotateBefore) || !has(self.ttl) || duration(self.rotateBefore) < duration(self.ttl)",message="rotateBefore must be shorter than ttl",fieldPath=".rotateBefore"
type TokenSpec struct {
	// TTL is how long each token is valid. A token that never expires is refused.
	// +optional
	// +kubebuilder:default="24h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('10m') && duration(self) <= duration('8760h')",message="ttl must be between 10m and 8760h"
	TTL metav1.Duration `json:"ttl,omitzero"`

	// RotateBefore is how long before the current token expires a successor is minted
	// and published. When unset, one third of ttl.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="rotateBefore must be positive"
	RotateBefore *metav1.Duration `json:"rotateBefore,omitempty"`

	// Usages of each token: authentication (to the API server) and/or signing
	// (of kube-public/cluster-info by kube-controller-manager's bootstrapsigner).
	// +optional
	// +kubebuilder:default={authentication}
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=2
	// +listType=set
	Usages []TokenUsage `json:"usages,omitempty"`

	// Description is written into each token Secret, for humans.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	Description string `json:"description,omitempty"`
}

// KubeconfigSpec says where and how to publish the bootstrap kubeconfig.
type KubeconfigSpec struct {
	// Server is the API server URL kubelets connect to. It must be https.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && url(self).getScheme() == 'https' && url(self).getHostname() != ''",message="server must be an https URL"
	Server string `json:"server"`

	// SecretRef is the Secret the kubeconfig is written to, under the key bootstrap.kubeconfig.
	// +required
	SecretRef SecretReference `json:"secretRef"`

	// CABundle is the PEM-encoded CA that signs the API server's certificate. When empty,
	// the CA is read from kube-public/cluster-info, else from the kube-root-ca.crt ConfigMap
	// of secretRef.namespace.
	// +optional
	// +kubebuilder:validation:MaxLength=65536
	CABundle []byte `json:"caBundle,omitempty"`
}

// SecretReference names a Secret in a namespace.
type SecretReference struct {
	// Namespace of the Secret.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Namespace string `json:"namespace"`

	// Name of the Secret.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`
}

// ApprovalSpec sets who approves the kubelet CSRs the policy governs, and by which rules.
type ApprovalSpec struct {
	// Approver is Operator (this operator decides by the rules below) or
	// KubeControllerManager (kube-controller-manager's csrapproving controller approves
	// through the RBAC the policy renders, and the operator leaves such CSRs alone).
	// +optional
	// +kubebuilder:default=Operator
	Approver Approver `json:"approver,omitempty"`

	// Mode is Enforce (decisions are written) or DryRun (only an Event and a metric say
	// what would have been decided).
	// +optional
	// +kubebuilder:default=Enforce
	Mode ApprovalMode `json:"mode,omitempty"`

	// OnViolation is Deny (a governed CSR that breaks a rule is denied, with every rule it
	// broke) or Ignore (it is left pending for humans and other approvers).
	// +optional
	// +kubebuilder:default=Deny
	OnViolation ViolationAction `json:"onViolation,omitempty"`

	// NodeNamePattern is an RE2 expression every node name must match as a whole (it is
	// anchored at both ends, so "worker-.*" does not match "evil-worker-1"), for first
	// bootstrap, renewal and serving CSRs alike. Renewal and serving CSRs are governed by
	// the policies whose pattern matches the node (no pattern: every node).
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:XValidation:rule="!'probe'.matches(self) || 'probe'.matches(self)",message="nodeNamePattern must be a valid RE2 regular expression"
	NodeNamePattern string `json:"nodeNamePattern,omitempty"`

	// MaxExpiration caps a CSR's spec.expirationSeconds; a CSR asking for longer is a violation.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('10m')",message="maxExpiration must be at least 10m, the shortest certificate the signer issues"
	MaxExpiration *metav1.Duration `json:"maxExpiration,omitempty"`

	// MaxPendingPerNode caps the pending CSRs one node name may have: beyond it, further
	// CSRs for that node are not approved. The cap is per node, so one noisy client never
	// stops approvals for the others.
	// +optional
	// +kubebuilder:default=3
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	MaxPendingPerNode int32 `json:"maxPendingPerNode,omitempty"`

	// Client governs first-bootstrap client CSRs (nodeclient) from the policy's groups.
	// +optional
	// +kubebuilder:default={enabled: true}
	Client ClientApproval `json:"client"`

	// Renewal governs a node renewing its own client certificate (selfnodeclient).
	// +optional
	// +kubebuilder:default={enabled: true}
	Renewal RenewalApproval `json:"renewal"`

	// Serving governs a node's own serving certificate (kubelet-serving signer).
	// +optional
	// +kubebuilder:default={enabled: false}
	Serving ServingApproval `json:"serving"`
}

// ClientApproval governs first-bootstrap client CSRs.
type ClientApproval struct {
	// Enabled approves first-bootstrap client CSRs that pass every rule.
	// +optional
	// +kubebuilder:default=true
	Enabled bool `json:"enabled"`

	// AllowRejoin lets a bootstrap token request a client certificate for a node name whose
	// Node already exists and is Ready. Off by default: such a request is a takeover attempt.
	// +optional
	AllowRejoin bool `json:"allowRejoin,omitempty"`
}

// RenewalApproval governs client certificate renewals.
type RenewalApproval struct {
	// Enabled approves a node's renewal of its own client certificate.
	// +optional
	// +kubebuilder:default=true
	Enabled bool `json:"enabled"`
}

// ServingApproval governs kubelet serving certificates.
type ServingApproval struct {
	// Enabled approves a node's serving certificate when every SAN is one of the Node's
	// own name and status.addresses and passes the lists below.
	// +optional
	// +kubebuilder:default=false
	Enabled bool `json:"enabled"`

	// AllowedCIDRs, when given, must each contain every IP SAN.
	// +optional
	// +kubebuilder:validation:MaxItems=32
	// +listType=set
	// +kubebuilder:validation:items:MaxLength=64
	// +kubebuilder:validation:items:XValidation:rule="isCIDR(self)",message="each allowedCIDRs entry must be a CIDR such as 10.0.0.0/8"
	AllowedCIDRs []string `json:"allowedCIDRs,omitempty"`

	// AllowedDNSSuffixes, when given, must each end every DNS SAN. A suffix that starts with
	// a dot matches subdomains only (".internal" matches "a.internal", not "evilinternal").
	// +optional
	// +kubebuilder:validation:MaxItems=32
	// +listType=set
	// +kubebuilder:validation:items:MaxLength=253
	// +kubebuilder:validation:items:Pattern=`^\.?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	AllowedDNSSuffixes []string `json:"allowedDNSSuffixes,omitempty"`
}

// BootstrapPolicyStatus is what the operator observed and did.
type BootstrapPolicyStatus struct {
	// ObservedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Conditions: Ready (summary), TokensReady, RBACReady and, when spec.kubeconfig is
	// set, KubeconfigReady.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// Tokens lists the policy's live bootstrap tokens, current first. The secret part
	// of a token never appears here.
	// +optional
	// +listType=atomic
	Tokens []TokenStatus `json:"tokens,omitempty"`

	// KubeconfigSecret is the namespace/name of the published bootstrap kubeconfig Secret.
	// +optional
	KubeconfigSecret string `json:"kubeconfigSecret,omitempty"`
}

// TokenStatus describes one bootstrap token without its secret.
type TokenStatus struct {
	// ID is the public token id (the part before the dot).
	ID string `json:"id"`
	// SecretName is the token's Secret in kube-system.
	SecretName string `json:"secretName"`
	// ExpiresAt is when the API server stops accepting the token.
	ExpiresAt metav1.Time `json:"expiresAt"`
}

// BootstrapPolicy declares how kubelets join the cluster: the bootstrap tokens they
// authenticate with, the RBAC that lets them ask for certificates, and which of their
// certificate signing requests are approved.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=bsp
// +kubebuilder:printcolumn:name="Groups",type=string,JSONPath=`.spec.groups`
// +kubebuilder:printcolumn:name="TTL",type=string,JSONPath=`.spec.token.ttl`
// +kubebuilder:printcolumn:name="Approver",type=string,JSONPath=`.spec.approval.approver`
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.spec.approval.mode`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type BootstrapPolicy struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ObjectMeta `json:"metadata,omitzero"`

	// Spec declares the policy.
	// +required
	Spec BootstrapPolicySpec `json:"spec"`

	// Status is written by the operator only.
	// +optional
	Status BootstrapPolicyStatus `json:"status,omitzero"`
}

// BootstrapPolicyList is a list of BootstrapPolicy.
// +kubebuilder:object:root=true
type BootstrapPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ListMeta `json:"metadata,omitzero"`
	Items           []BootstrapPolicy `json:"items"`
}

// EffectiveRotateBefore is spec.token.rotateBefore, or one third of ttl when unset.
func (t TokenSpec) EffectiveRotateBefore() time.Duration {
	if t.RotateBefore != nil {
		return t.RotateBefore.Duration
	}
	return t.TTL.Duration / 3
}

// EffectiveUsages is spec.token.usages, or [authentication] when the schema default
// has not been applied (objects built in Go rather than read from the API server).
func (t TokenSpec) EffectiveUsages() []TokenUsage {
	if len(t.Usages) == 0 {
		return []TokenUsage{UsageAuthentication}
	}
	return t.Usages
}
