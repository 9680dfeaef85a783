package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
	bootstraputil "k8s.io/cluster-bootstrap/token/util"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tlsbootstrap/tls-bootstrap-operator/api/v1alpha1"
	"github.com/tlsbootstrap/tls-bootstrap-operator/test/localcluster"
)

const (
	// benchGroup is the extra group of every bootstrap token the client bursts use: the bench
	// policy governs it for the operator, kubeadm's bindings let kube-controller-manager approve it.
	benchGroup = "system:bootstrappers:bench"
	// benchPolicy is the BootstrapPolicy the operator approves by.
	benchPolicy = "bench"
	// servingCIDR holds the Nodes' addresses of the serving burst, away from the service range
	// (10.0.0.0/24), whose addresses are never valid serving SANs.
	servingCIDR = "10.128.0.0/9"
	// unrelatedNamespace holds the Secrets of the memory scenario.
	unrelatedNamespace = "bench-unrelated"
	// adminQPS and adminBurst are the bench's own admin client limits: it fills the cluster with
	// tens of thousands of objects and must not be what a figure measures.
	adminQPS, adminBurst = 2000, 4000
)

// signerOnly is kube-controller-manager's controller list while another approver acts: it still
// signs approved CSRs, as in a real cluster, but approves nothing.
var signerOnly = []string{"csrsigning"}

// bench is one cluster and the clients the scenarios share.
type bench struct {
	cfg      config
	out      io.Writer
	cluster  *localcluster.Cluster
	cs       kubernetes.Interface
	cl       client.Client
	operator *localcluster.Operator
	// operatorArgs are the flags the running operator got beyond the defaults.
	operatorArgs []string
	// kcmApproving says kube-controller-manager runs csrapproving now.
	kcmApproving bool
	// tokens are clients authenticated by bootstrap tokens, as kubelets before their first
	// certificate; creators of a client burst take turns with them.
	tokens []kubernetes.Interface
}

func newBench(ctx context.Context, cfg config, out io.Writer) (*bench, error) {
	root, err := localcluster.RepoRoot()
	if err != nil {
		return nil, err
	}
	step("starting etcd, kube-apiserver and kube-controller-manager (signer only)")
	cluster, err := localcluster.Start(ctx, localcluster.Options{
		CRDDirectoryPaths: []string{filepath.Join(root, "config", "crd", "bases")},
		ControllerManager: signerOnly,
		Out:               out,
		KeepWorkDir:       cfg.keep,
	})
	if err != nil {
		return nil, fmt.Errorf("start the local control plane: %w", err)
	}
	b := &bench{cfg: cfg, out: out, cluster: cluster}
	admin := rest.CopyConfig(cluster.Admin)
	admin.QPS, admin.Burst = adminQPS, adminBurst
	if b.cs, err = kubernetes.NewForConfig(protobuf(admin)); err != nil {
		return b, errors.Join(fmt.Errorf("admin clientset: %w", err), cluster.Stop())
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return b, errors.Join(err, cluster.Stop())
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		return b, errors.Join(err, cluster.Stop())
	}
	if b.cl, err = client.New(admin, client.Options{Scheme: scheme}); err != nil {
		return b, errors.Join(fmt.Errorf("admin client: %w", err), cluster.Stop())
	}
	return b, nil
}

// setup creates what every client burst needs: the policy, kubeadm's bindings for the group and
// the bootstrap tokens, each checked to authenticate before any timing starts.
func (b *bench) setup(ctx context.Context) error {
	step("creating policy %s for %s, kubeadm's bindings and %d bootstrap tokens", benchPolicy, benchGroup, b.cfg.tokens)
	p := &v1alpha1.BootstrapPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: benchPolicy},
		Spec: v1alpha1.BootstrapPolicySpec{
			Groups: []string{benchGroup},
			Approval: v1alpha1.ApprovalSpec{
				Approver: v1alpha1.ApproverOperator,
				Client:   v1alpha1.ClientApproval{Enabled: true},
				Renewal:  v1alpha1.RenewalApproval{Enabled: true},
				Serving:  v1alpha1.ServingApproval{Enabled: true, AllowedCIDRs: []string{servingCIDR}},
			},
		},
	}
	if err := b.cl.Create(ctx, p); err != nil {
		return fmt.Errorf("create policy %s: %w", benchPolicy, err)
	}
	if err := b.grantKubeadmRBAC(ctx); err != nil {
		return err
	}
	for i := range b.cfg.tokens {
		token, err := b.createToken(ctx, benchGroup, fmt.Sprintf("bench token %d", i))
		if err != nil {
			return err
		}
		cfg := rest.AnonymousClientConfig(b.cluster.Admin)
		cfg.BearerToken = token
		cfg.QPS, cfg.Burst = float32(b.cfg.createQPS), b.cfg.createBurst
		if err := waitUntil(ctx, b.cfg.timeout, "bootstrap token "+strings.SplitN(token, ".", 2)[0]+" to authenticate", func() (bool, error) {
			who, err := localcluster.WhoAmI(ctx, cfg)
			return err == nil && strings.HasPrefix(who.Username, bootstrapapi.BootstrapUserPrefix), nil
		}); err != nil {
			return err
		}
		cs, err := kubernetes.NewForConfig(protobuf(cfg))
		if err != nil {
			return fmt.Errorf("bootstrap token clientset: %w", err)
		}
		b.tokens = append(b.tokens, cs)
	}
	return nil
}

// grantKubeadmRBAC binds what kubeadm binds for its default token group: creating CSRs, and
// kube-controller-manager approving the group's client CSRs. The operator does not read these.
func (b *bench) grantKubeadmRBAC(ctx context.Context) error {
	for name, role := range map[string]string{
		"bench:kubelet-bootstrap":          "system:node-bootstrapper",
		"bench:node-autoapprove-bootstrap": "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
	} {
		crb := &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
			Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: benchGroup}},
		}
		if _, err := b.cs.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create cluster role binding %s: %w", name, err)
		}
	}
	return nil
}

// createToken creates a bootstrap-token Secret as `kubeadm token create` does and returns the
// token ("<id>.<secret>").
func (b *bench) createToken(ctx context.Context, group, description string) (string, error) {
	token, err := bootstraputil.GenerateBootstrapToken()
	if err != nil {
		return "", fmt.Errorf("generate bootstrap token: %w", err)
	}
	id, secret, _ := strings.Cut(token, ".")
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: metav1.NamespaceSystem, Name: bootstraputil.BootstrapTokenSecretName(id)},
		Type:       bootstrapapi.SecretTypeBootstrapToken,
		StringData: map[string]string{
			bootstrapapi.BootstrapTokenIDKey:               id,
			bootstrapapi.BootstrapTokenSecretKey:           secret,
			bootstrapapi.BootstrapTokenExpirationKey:       time.Now().Add(24 * time.Hour).UTC().Format(time.RFC3339),
			bootstrapapi.BootstrapTokenDescriptionKey:      description,
			bootstrapapi.BootstrapTokenExtraGroupsKey:      group,
			bootstrapapi.BootstrapTokenUsageAuthentication: "true",
		},
	}
	if _, err := b.cs.CoreV1().Secrets(s.Namespace).Create(ctx, s, metav1.CreateOptions{}); err != nil {
		return "", fmt.Errorf("create bootstrap token secret: %w", err)
	}
	return token, nil
}

// startOperator starts the manager at its default flags (only the harness's kubeconfig, ports
// and leader-election namespace are set) plus args, unless it already runs with those args.
func (b *bench) startOperator(ctx context.Context, args ...string) error {
	if b.operator != nil && b.operator.Running() && slices.Equal(b.operatorArgs, args) {
		return nil
	}
	if err := b.stopOperator(); err != nil {
		return err
	}
	op, err := b.cluster.StartOperator(ctx, localcluster.OperatorOptions{Binary: b.cfg.operatorBin, Env: b.cfg.operatorEnv, Args: args})
	if err != nil {
		return fmt.Errorf("start the operator: %w", err)
	}
	b.operator, b.operatorArgs = op, args
	return nil
}

// stopOperator stops the manager, so that another approver is the only one acting.
func (b *bench) stopOperator() error {
	if b.operator == nil {
		return nil
	}
	err := b.operator.Stop()
	b.operator = nil
	if err != nil {
		return fmt.Errorf("stop the operator: %w", err)
	}
	return nil
}

// useControllerManager restarts kube-controller-manager, with csrapproving when approve is set.
func (b *bench) useControllerManager(approve bool, extraArgs ...string) error {
	controllers := signerOnly
	if approve {
		controllers = append([]string{"csrapproving"}, signerOnly...)
	}
	if _, err := b.cluster.StartControllerManager(controllers, extraArgs...); err != nil {
		return fmt.Errorf("restart kube-controller-manager with %v %v: %w", controllers, extraArgs, err)
	}
	return nil
}

// policiesReady counts the named policies that report Ready for their current generation.
func (b *bench) policiesReady(ctx context.Context, names map[string]bool) (int, error) {
	var list v1alpha1.BootstrapPolicyList
	if err := b.cl.List(ctx, &list); err != nil {
		return 0, fmt.Errorf("list policies: %w", err)
	}
	ready := 0
	for i := range list.Items {
		p := &list.Items[i]
		if !names[p.Name] {
			continue
		}
		if p.Status.ObservedGeneration == p.Generation && meta.IsStatusConditionTrue(p.Status.Conditions, v1alpha1.ConditionReady) {
			ready++
		}
	}
	return ready, nil
}

// ensureNamespace creates a namespace unless it exists.
func (b *bench) ensureNamespace(ctx context.Context, name string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if _, err := b.cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", name, err)
	}
	return nil
}

// protobuf returns a copy of cfg for clientsets of built-in types that speaks protobuf, as
// kube-controller-manager and controller-runtime's client do: JSON would cost the API server,
// the shared bottleneck, more CPU for the bench's own requests and watches than for theirs.
// Never for the controller-runtime client, which also serves the policy CRD.
func protobuf(cfg *rest.Config) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.ContentType = runtime.ContentTypeProtobuf
	cfg.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	return cfg
}

// waitUntil polls cond every 100ms until it holds, fails, or timeout passes. The benchmark
// driver polls rather than watches here because it waits for aggregate states (all policies
// Ready, a count reaching zero) that no single event announces.
func waitUntil(ctx context.Context, timeout time.Duration, what string, cond func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		ok, err := cond()
		if err != nil {
			lastErr = err
		} else if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			if lastErr != nil {
				return fmt.Errorf("waiting for %s: %w (last error: %w)", what, ctx.Err(), lastErr)
			}
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-tick.C:
		}
	}
}
