package localcluster

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"
)

// OperatorUser is the identity the operator runs as: its ServiceAccount's name in a
// cluster, here a client certificate, bound to nothing but the generated RBAC.
const OperatorUser = "system:serviceaccount:tls-bootstrap-operator-system:tls-bootstrap-operator-controller-manager"

// OperatorOptions configures StartOperator.
type OperatorOptions struct {
	// Name tells replicas apart in logs ("operator" when empty).
	Name string
	// Binary is the manager binary; default $OPERATOR_BIN, else <repo root>/bin/manager.
	Binary string
	// Args are appended to the manager's flags.
	Args []string
	// Env is appended to this process's environment for the manager, for example a GOMEMLIMIT
	// the Deployment would set.
	Env []string
	// SecureMetrics serves metrics as the Deployment does: HTTPS, every scrape authenticated
	// and authorized through the API server. Otherwise plain HTTP, which tests scrape freely.
	SecureMetrics bool
}

// Operator is a running manager process.
type Operator struct {
	*Process
	// MetricsURL is the metrics endpoint (loopback only): https:// with SecureMetrics.
	MetricsURL string
}

// StartOperator grants the operator's identity exactly config/rbac (the generated
// ClusterRole and the leader-election Role, in kube-system) and starts the manager as
// that identity, so every test of it also tests its least-privilege RBAC.
func (c *Cluster) StartOperator(ctx context.Context, o OperatorOptions) (*Operator, error) {
	if o.Name == "" {
		o.Name = "operator"
	}
	bin, err := operatorBinary(o.Binary)
	if err != nil {
		return nil, err
	}
	if err := c.grantOperatorRBAC(ctx); err != nil {
		return nil, err
	}
	cfg, err := c.UserConfig(OperatorUser, nil)
	if err != nil {
		return nil, err
	}
	kubeconfig := filepath.Join(c.WorkDir, o.Name+".kubeconfig")
	if err := WriteKubeconfig(cfg, kubeconfig); err != nil {
		return nil, err
	}
	metricsPort, err := freePort("127.0.0.1")
	if err != nil {
		return nil, err
	}
	probePort, err := freePort("127.0.0.1")
	if err != nil {
		return nil, err
	}
	metrics := net.JoinHostPort("127.0.0.1", strconv.Itoa(metricsPort))
	scheme := "http"
	if o.SecureMetrics {
		scheme = "https"
	}
	args := append([]string{
		"--kubeconfig=" + kubeconfig,
		"--metrics-bind-address=" + metrics,
		"--metrics-secure=" + strconv.FormatBool(o.SecureMetrics),
		"--health-probe-bind-address=" + net.JoinHostPort("127.0.0.1", strconv.Itoa(probePort)),
		"--leader-election-namespace=kube-system",
	}, o.Args...)
	cmd := exec.Command(bin, args...)
	cmd.Dir = c.WorkDir
	if len(o.Env) > 0 {
		cmd.Env = append(os.Environ(), o.Env...)
	}
	p, err := c.StartCommand(o.Name, cmd)
	if err != nil {
		return nil, err
	}
	return &Operator{Process: p, MetricsURL: scheme + "://" + metrics + "/metrics"}, nil
}

func operatorBinary(bin string) (string, error) {
	if bin == "" {
		bin = os.Getenv("OPERATOR_BIN")
	}
	if bin == "" {
		root, err := RepoRoot()
		if err != nil {
			return "", err
		}
		bin = filepath.Join(root, "bin", "manager")
	}
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("operator binary (run make build): %w", err)
	}
	abs, err := filepath.Abs(bin)
	if err != nil {
		return "", fmt.Errorf("operator binary: %w", err)
	}
	return abs, nil
}

// grantOperatorRBAC applies the generated ClusterRole, the metrics authentication role and
// the leader-election Role of config/rbac, bound to OperatorUser. It is idempotent: replicas
// share it.
func (c *Cluster) grantOperatorRBAC(ctx context.Context) error {
	root, err := RepoRoot()
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(c.Admin)
	if err != nil {
		return fmt.Errorf("admin client: %w", err)
	}
	subject := []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: OperatorUser}}

	for file, name := range map[string]string{
		"role.yaml":              "tls-bootstrap-operator-manager-role",
		"metrics_auth_role.yaml": "tls-bootstrap-operator-metrics-auth-role",
	} {
		role := &rbacv1.ClusterRole{}
		if err := readYAML(filepath.Join(root, "config", "rbac", file), role); err != nil {
			return err
		}
		role.Name = name
		if _, err := cs.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); ignoreExists(err) != nil {
			return fmt.Errorf("creating cluster role %s: %w", name, err)
		}
		crb := &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
			Subjects:   subject,
		}
		if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); ignoreExists(err) != nil {
			return fmt.Errorf("binding cluster role %s: %w", name, err)
		}
	}

	le := &rbacv1.Role{}
	if err := readYAML(filepath.Join(root, "config", "rbac", "leader_election_role.yaml"), le); err != nil {
		return err
	}
	le.Namespace, le.Name = metav1.NamespaceSystem, "tls-bootstrap-operator-leader-election"
	if _, err := cs.RbacV1().Roles(le.Namespace).Create(ctx, le, metav1.CreateOptions{}); ignoreExists(err) != nil {
		return fmt.Errorf("creating leader election role: %w", err)
	}
	rb := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: le.Namespace, Name: le.Name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: le.Name},
		Subjects:   subject,
	}
	if _, err := cs.RbacV1().RoleBindings(le.Namespace).Create(ctx, rb, metav1.CreateOptions{}); ignoreExists(err) != nil {
		return fmt.Errorf("binding leader election role: %w", err)
	}
	return nil
}

func readYAML(path string, into any) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	if err := yaml.Unmarshal(raw, into); err != nil {
		return fmt.Errorf("parsing %s: %w", path, err)
	}
	return nil
}

func ignoreExists(err error) error {
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}
