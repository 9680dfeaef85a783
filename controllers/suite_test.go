package controllers_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/cache"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"go.uber.org/zap/zapcore"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/yaml"

	"github.com/tlsbootstrap/tls-bootstrap-operator/api/v1alpha1"
	"github.com/tlsbootstrap/tls-bootstrap-operator/controllers"
	"github.com/tlsbootstrap/tls-bootstrap-operator/internal/token"
)

// The suite runs one API server configured like a cluster (bootstrap-token
// authentication, Node and RBAC authorization, NodeRestriction) and one manager that
// authenticates as a user holding only the operator's generated RBAC.
var (
	testEnv  *envtest.Environment
	admin    client.Client
	adminCfg *rest.Config
	scheme   = runtime.NewScheme()
	clock    = clocktesting.NewFakeClock(time.Now())
	logs     = &syncBuffer{}
	cancel   context.CancelFunc
	// operatorCache is the manager's informer cache, to prove what it holds.
	operatorCache cache.Cache
)

const operatorUser = "system:serviceaccount:tls-bootstrap-operator-system:tls-bootstrap-operator-controller-manager"

func TestControllers(t *testing.T) {
	RegisterFailHandler(Fail)
	// The manager, its cache and the API server's token authenticator each lag a little.
	SetDefaultEventuallyTimeout(30 * time.Second)
	SetDefaultEventuallyPollingInterval(100 * time.Millisecond)
	RunSpecs(t, "Controllers Suite")
}

var _ = BeforeSuite(func() {
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(v1alpha1.AddToScheme(scheme))
	logf.SetLogger(zap.New(zap.WriteTo(logs), zap.UseDevMode(true), zap.Level(zapcore.DebugLevel)))

	testEnv = &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: assetsDir(),
	}
	api := testEnv.ControlPlane.GetAPIServer().Configure()
	api.Set("enable-bootstrap-token-auth", "true")
	api.Set("authorization-mode", "Node,RBAC")
	api.Set("enable-admission-plugins", "NodeRestriction")

	var err error
	adminCfg, err = testEnv.Start()
	Expect(err).NotTo(HaveOccurred())
	admin, err = client.New(adminCfg, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())

	opCfg := userConfig(operatorUser, nil)
	applyGeneratedRBAC()

	mgr, err := ctrl.NewManager(opCfg, ctrl.Options{
		Scheme:  scheme,
		Metrics: metricsserver.Options{BindAddress: "0"},
		Cache:   controllers.CacheOptions(),
	})
	Expect(err).NotTo(HaveOccurred())
	operatorCache = mgr.GetCache()
	Expect((&controllers.BootstrapPolicyReconciler{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(),
		Recorder: mgr.GetEventRecorder("tls-bootstrap-operator"), Clock: clock, Generate: generate,
		CARetry: 200 * time.Millisecond,
	}).SetupWithManager(mgr, 2)).To(Succeed())
	Expect((&controllers.CSRReconciler{
		Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("tls-bootstrap-operator"), Clock: clock,
	}).SetupWithManager(mgr, 4)).To(Succeed())

	var ctx context.Context
	ctx, cancel = context.WithCancel(context.Background())
	go func() {
		defer GinkgoRecover()
		Expect(mgr.Start(ctx)).To(Succeed())
	}()
})

var _ = AfterSuite(func() {
	if cancel != nil {
		cancel()
	}
	if testEnv != nil {
		Expect(testEnv.Stop()).To(Succeed())
	}
})

// forcedTokens are handed out by the operator's token generator before crypto-random
// ones, so that a test can force an id collision.
var forcedTokens = make(chan string, 4)

func generate() (string, error) {
	select {
	case t := <-forcedTokens:
		return t, nil
	default:
		return token.CryptoGenerator()
	}
}

// assetsDir is where `make controlplane` put the binaries; KUBEBUILDER_ASSETS wins.
func assetsDir() string {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		return dir
	}
	return filepath.Join("..", "bin", "k8s")
}

// userConfig returns a client identity the API server authenticates by certificate.
func userConfig(name string, groups []string) *rest.Config {
	u, err := testEnv.AddUser(envtest.User{Name: name, Groups: groups}, nil)
	Expect(err).NotTo(HaveOccurred())
	return u.Config()
}

// applyGeneratedRBAC binds the operator's user to exactly the ClusterRole that
// `make manifests` generated from the markers: the tests fail if it lacks a permission.
func applyGeneratedRBAC() {
	raw, err := os.ReadFile(filepath.Join("..", "config", "rbac", "role.yaml"))
	Expect(err).NotTo(HaveOccurred())
	role := &rbacv1.ClusterRole{}
	Expect(yaml.Unmarshal(raw, role)).To(Succeed())
	role.Name = "tls-bootstrap-operator-manager-role"
	Expect(admin.Create(context.Background(), role)).To(Succeed())
	Expect(admin.Create(context.Background(), &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "tls-bootstrap-operator-manager-rolebinding"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: operatorUser}},
	})).To(Succeed())
}

// syncBuffer captures the manager's logs, to prove no token or key reaches them.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, _ = GinkgoWriter.Write(p)
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
