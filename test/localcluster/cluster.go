// Package localcluster runs a real control plane (etcd, kube-apiserver, kube-controller-manager)
// and real kubelets as local processes, configured like a kubeadm cluster where it matters for
// TLS bootstrapping: bootstrap-token authentication, Node+RBAC authorization, NodeRestriction,
// and one client CA shared by the API server and kube-controller-manager's signer. Kubelets talk
// to a fake CRI served in-process, so no container runtime is needed.
package localcluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// Binaries the cluster runs; kube-controller-manager and kubelet only when asked for.
const (
	BinKubeAPIServer         = "kube-apiserver"
	BinEtcd                  = "etcd"
	BinKubectl               = "kubectl"
	BinKubeControllerManager = "kube-controller-manager"
	BinKubelet               = "kubelet"
)

// Options configures Start.
type Options struct {
	// BinDir holds kube-apiserver, etcd, kubectl, kube-controller-manager and kubelet.
	// Default: $KUBEBUILDER_ASSETS if set, else <repo root>/bin/k8s. A binary missing from BinDir
	// is looked up in <repo root>/bin/k8s, since setup-envtest ships no kubelet.
	BinDir string
	// CRDDirectoryPaths are installed after the API server is up; a missing path is an error.
	CRDDirectoryPaths []string
	// ControllerManager is kube-controller-manager's --controllers list, for example
	// {"csrsigning", "garbagecollector", "tokencleaner"}; nil means it is not started.
	ControllerManager []string
	// Out receives every process's output, each line prefixed with the process name (use
	// GinkgoWriter in tests). Each process also logs to a file in the work dir.
	Out io.Writer
	// APIServerFlags are extra kube-apiserver flags (name without dashes to value), set after
	// the ones that make it look like a kubeadm cluster, so they may override them.
	APIServerFlags map[string]string
	// KeepWorkDir leaves the work dir (logs, certificates, kubelet dirs) on disk after Stop, for
	// debugging a failed run.
	KeepWorkDir bool
}

// Cluster is a running local control plane and the kubelets and processes started against it.
type Cluster struct {
	// Env is the envtest environment running etcd and kube-apiserver.
	Env *envtest.Environment
	// Admin is a cluster-admin (system:masters) client configuration.
	Admin *rest.Config
	// AdminKubeconfig is a kubeconfig file for Admin, for kubectl and child processes.
	AdminKubeconfig string
	// Server is the https URL of the API server.
	Server string
	// ServingCA is the PEM CA that signs the API server's serving certificate: what kubelets and
	// bootstrap kubeconfigs must trust.
	ServingCA []byte
	// ClientCA and ClientCAKey are the PEM client CA the API server trusts and
	// kube-controller-manager signs kubelet certificates with.
	ClientCA, ClientCAKey []byte
	// ClientCAFile and ClientCAKeyFile are ClientCA and ClientCAKey on disk.
	ClientCAFile, ClientCAKeyFile string
	// WorkDir holds every file the cluster writes; Stop removes it.
	WorkDir string
	// BinDir is where the binaries were found.
	BinDir string

	ca          *certAuthority
	out         io.Writer
	keepWorkDir bool

	mu             sync.Mutex
	watchdogs      []*watchdog
	closers        []io.Closer
	stopped        bool
	envStarted     bool
	processes      []*Process
	kubelets       []*Kubelet
	controllerMgr  *Process
	nextNodeIPHost int
	stopErr        error
}

// Start runs etcd and kube-apiserver (and kube-controller-manager when o.ControllerManager is
// set), creates the kube-system and kube-public namespaces if missing, and publishes
// kube-public/cluster-info as kubeadm does. On error everything already started is stopped.
func Start(ctx context.Context, o Options) (_ *Cluster, retErr error) {
	binDir, err := resolveBinDir(o.BinDir)
	if err != nil {
		return nil, err
	}
	// Short: kubelets put unix sockets in here, whose paths may not exceed 107 bytes.
	workDir, err := os.MkdirTemp("", "lc-")
	if err != nil {
		return nil, fmt.Errorf("create work dir: %w", err)
	}
	out := o.Out
	if out == nil {
		out = io.Discard
	}
	c := &Cluster{
		WorkDir:        workDir,
		BinDir:         binDir,
		out:            &lockedWriter{w: out},
		keepWorkDir:    o.KeepWorkDir,
		nextNodeIPHost: 2,
	}
	defer func() {
		if retErr != nil {
			retErr = errors.Join(retErr, c.Stop())
		}
	}()

	for _, dir := range []string{"logs", "pki", "etcd", "apiserver", "kubelets"} {
		if err := os.MkdirAll(filepath.Join(workDir, dir), 0o700); err != nil {
			return nil, fmt.Errorf("create %s dir: %w", dir, err)
		}
	}
	paths := map[string]string{}
	for _, bin := range []string{BinKubeAPIServer, BinEtcd, BinKubectl} {
		if paths[bin], err = c.binary(bin); err != nil {
			return nil, err
		}
	}

	if c.ca, err = newCertAuthority("localcluster-client-ca"); err != nil {
		return nil, err
	}
	c.ClientCA, c.ClientCAKey = c.ca.certPEM, c.ca.keyPEM
	if c.ClientCAFile, c.ClientCAKeyFile, err = c.ca.writeFiles(filepath.Join(workDir, "pki")); err != nil {
		return nil, err
	}

	apiLog, err := c.logWriter("kube-apiserver")
	if err != nil {
		return nil, err
	}
	etcdLog, err := c.logWriter("etcd")
	if err != nil {
		return nil, err
	}
	c.Env = &envtest.Environment{
		CRDDirectoryPaths:        o.CRDDirectoryPaths,
		ErrorIfCRDPathMissing:    true,
		ControlPlaneStartTimeout: time.Minute,
		ControlPlaneStopTimeout:  30 * time.Second,
		ControlPlane: envtest.ControlPlane{
			APIServer: &envtest.APIServer{
				Path:    paths[BinKubeAPIServer],
				CertDir: filepath.Join(workDir, "apiserver"),
				Out:     apiLog,
				Err:     apiLog,
				SecureServing: envtest.SecureServing{
					Authn: &caAuthn{ca: c.ca, caFile: c.ClientCAFile},
				},
			},
			Etcd: &envtest.Etcd{
				Path:    paths[BinEtcd],
				DataDir: filepath.Join(workDir, "etcd"),
				Out:     etcdLog,
				Err:     etcdLog,
			},
			KubectlPath: paths[BinKubectl],
		},
	}
	args := c.Env.ControlPlane.GetAPIServer().Configure()
	args.Set("enable-bootstrap-token-auth", "true")
	args.Set("authorization-mode", "Node,RBAC")
	args.Set("enable-admission-plugins", "NodeRestriction")
	for flag, value := range o.APIServerFlags {
		args.Set(flag, value)
	}

	c.envStarted = true // envtest stops what it started even when Start fails half-way
	if _, err := c.Env.Start(); err != nil {
		return nil, fmt.Errorf("start etcd and kube-apiserver: %w", err)
	}
	envtestPids, err := childrenIn(workDir)
	if err != nil {
		return nil, err
	}
	if err := c.watch(envtestPids); err != nil {
		return nil, err
	}
	c.Admin = rest.CopyConfig(c.Env.Config)
	c.Server = strings.TrimSuffix(c.Admin.Host, "/")
	c.ServingCA = c.Env.ControlPlane.APIServer.CA
	c.AdminKubeconfig = filepath.Join(workDir, "admin.kubeconfig")
	if err := c.WriteKubeconfig(c.Admin, c.AdminKubeconfig); err != nil {
		return nil, err
	}

	if err := c.seed(ctx); err != nil {
		return nil, err
	}
	if o.ControllerManager != nil {
		if _, err := c.StartControllerManager(o.ControllerManager); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// watch hands pids that envtest started to a watchdog of their own.
func (c *Cluster) watch(pids []int) error {
	w, err := startWatchdog(pids, c.WorkDir, c.keepWorkDir)
	if err != nil {
		return err
	}
	c.watchdogs = append(c.watchdogs, w)
	return nil
}

// RestartAPIServer kills kube-apiserver (SIGKILL, as a crash or a lost machine would end it)
// and starts it again on the same port, with the same certificates and the same etcd. It
// returns once the new one is healthy; clients reconnect by themselves.
func (c *Cluster) RestartAPIServer() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return errors.New("restart kube-apiserver: cluster is stopped")
	}
	before, err := childrenIn(c.WorkDir)
	if err != nil {
		return err
	}
	for _, pid := range before {
		cmdline, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
		if err == nil && strings.Contains(string(cmdline), BinKubeAPIServer) {
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				return fmt.Errorf("kill kube-apiserver: %w", err)
			}
		}
	}
	// Stop only reaps it now; a graceful stop waits out the API server's long shutdown.
	api := c.Env.ControlPlane.APIServer
	if err := api.Stop(); err != nil {
		return fmt.Errorf("stop kube-apiserver: %w", err)
	}
	if err := api.Start(); err != nil {
		return fmt.Errorf("start kube-apiserver again: %w", err)
	}
	after, err := childrenIn(c.WorkDir)
	if err != nil {
		return err
	}
	var started []int
	for _, pid := range after {
		if !slices.Contains(before, pid) {
			started = append(started, pid)
		}
	}
	return c.watch(started)
}

// seed creates what kubeadm creates and an operator may rely on.
func (c *Cluster) seed(ctx context.Context) error {
	cs, err := kubernetes.NewForConfig(c.Admin)
	if err != nil {
		return fmt.Errorf("build admin client: %w", err)
	}
	for _, ns := range []string{metav1.NamespaceSystem, metav1.NamespacePublic} {
		_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create namespace %s: %w", ns, err)
		}
	}
	kubeconfig, err := ClusterInfoKubeconfig(c.Server, c.ServingCA)
	if err != nil {
		return fmt.Errorf("render cluster-info: %w", err)
	}
	clusterInfo := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: metav1.NamespacePublic, Name: bootstrapapi.ConfigMapClusterInfo},
		Data:       map[string]string{bootstrapapi.KubeConfigKey: string(kubeconfig)},
	}
	_, err = cs.CoreV1().ConfigMaps(metav1.NamespacePublic).Create(ctx, clusterInfo, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create cluster-info: %w", err)
	}
	return nil
}

// Stop stops every kubelet and process the cluster started (newest first), then the API server
// and etcd, and removes the work dir. It always tries everything, and a second call returns the
// first call's result.
func (c *Cluster) Stop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return c.stopErr
	}
	c.stopped = true

	var errs []error
	for i := len(c.kubelets) - 1; i >= 0; i-- {
		if err := c.kubelets[i].Stop(); err != nil {
			errs = append(errs, err)
		}
	}
	for i := len(c.processes) - 1; i >= 0; i-- {
		if err := c.processes[i].Stop(); err != nil {
			errs = append(errs, err)
		}
	}
	if c.envStarted && c.Env != nil {
		if err := c.Env.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("stop etcd and kube-apiserver: %w", err))
		}
	}
	for _, f := range c.closers {
		_ = f.Close()
	}
	if c.keepWorkDir {
		fmt.Fprintf(c.out, "localcluster: work dir kept at %s\n", c.WorkDir)
	} else if err := os.RemoveAll(c.WorkDir); err != nil {
		errs = append(errs, fmt.Errorf("remove work dir: %w", err))
	}
	// Last, so that it still cleans up if this process dies while stopping.
	for _, w := range c.watchdogs {
		if err := w.stop(); err != nil {
			errs = append(errs, err)
		}
	}
	c.stopErr = errors.Join(errs...)
	return c.stopErr
}

// StartControllerManager (re)starts kube-controller-manager with the given --controllers list,
// stopping the one running before. It signs with ClientCA and runs as Admin. extraArgs are
// appended last (so they override the flags set here), for example a raised --kube-api-qps.
func (c *Cluster) StartControllerManager(controllers []string, extraArgs ...string) (*Process, error) {
	c.mu.Lock()
	previous := c.controllerMgr
	c.mu.Unlock()
	if previous != nil {
		if err := previous.Stop(); err != nil {
			return nil, fmt.Errorf("stop previous kube-controller-manager: %w", err)
		}
	}
	args := append([]string{
		"--kubeconfig=" + c.AdminKubeconfig,
		"--controllers=" + strings.Join(controllers, ","),
		"--leader-elect=false",
		// No serving endpoint: nothing scrapes it, and it would need a free port per restart.
		"--secure-port=0",
		"--cluster-signing-cert-file=" + c.ClientCAFile,
		"--cluster-signing-key-file=" + c.ClientCAKeyFile,
		"--use-service-account-credentials=false",
	}, extraArgs...)
	p, err := c.StartProcess(BinKubeControllerManager, BinKubeControllerManager, args...)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.controllerMgr = p
	c.mu.Unlock()
	return p, nil
}

// ControllerManager is the running kube-controller-manager, or nil.
func (c *Cluster) ControllerManager() *Process {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.controllerMgr
}

// StartProcess starts binary (a path, or a name looked up in BinDir and then $PATH) with args in
// the work dir. Its output goes to <WorkDir>/logs/<name>.log and to Out; Stop stops it.
func (c *Cluster) StartProcess(name, binary string, args ...string) (*Process, error) {
	path, err := c.binary(binary)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path, args...)
	cmd.Dir = c.WorkDir
	return c.StartCommand(name, cmd)
}

// StartCommand starts a prepared command (for a custom environment or working dir) the same way
// StartProcess does. Its Stdout, Stderr and SysProcAttr are overwritten.
func (c *Cluster) StartCommand(name string, cmd *exec.Cmd) (*Process, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return nil, fmt.Errorf("start %s: cluster is stopped", name)
	}
	p, err := startProcess(name, cmd, filepath.Join(c.WorkDir, "logs", name+".log"), c.out)
	if err != nil {
		return nil, err
	}
	c.processes = append(c.processes, p)
	return p, nil
}

// UserConfig returns a client configuration for a certificate identity (CN user, O groups)
// signed by ClientCA.
func (c *Cluster) UserConfig(user string, groups []string) (*rest.Config, error) {
	certPEM, keyPEM, err := c.ca.clientCert(user, groups)
	if err != nil {
		return nil, err
	}
	cfg := rest.AnonymousClientConfig(c.Admin)
	cfg.CertData = certPEM
	cfg.KeyData = keyPEM
	return cfg, nil
}

// NextNodeIP hands out loopback addresses 127.0.0.2, 127.0.0.3, ... so that kubelets of one
// cluster never share one; 127.0.0.1 stays the API server's.
func (c *Cluster) NextNodeIP() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	ip := net.IPv4(127, byte(c.nextNodeIPHost>>16), byte(c.nextNodeIPHost>>8), byte(c.nextNodeIPHost)).String()
	c.nextNodeIPHost++
	if c.nextNodeIPHost&0xff == 0xff { // skip x.x.x.255 and x.x.x.0
		c.nextNodeIPHost += 2
	}
	return ip
}

// logWriter returns a writer for a process envtest starts itself: a log file plus Out.
func (c *Cluster) logWriter(name string) (io.Writer, error) {
	f, err := os.OpenFile(filepath.Join(c.WorkDir, "logs", name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open log file for %s: %w", name, err)
	}
	c.closers = append(c.closers, f)
	return io.MultiWriter(f, newPrefixWriter(c.out, "["+name+"] ")), nil
}

// binary resolves a binary name: an explicit path as is, else BinDir, else the repo's bin/k8s,
// else $PATH.
func (c *Cluster) binary(name string) (string, error) {
	if strings.ContainsRune(name, filepath.Separator) {
		return name, nil
	}
	candidates := []string{filepath.Join(c.BinDir, name)}
	if root, err := RepoRoot(); err == nil {
		candidates = append(candidates, filepath.Join(root, "bin", "k8s", name))
	}
	for _, p := range candidates {
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("binary %s not found in %s (build it with hack/build-controlplane.sh bin/k8s)", name, strings.Join(candidates, " or "))
}

func resolveBinDir(dir string) (string, error) {
	if dir != "" {
		return dir, nil
	}
	if assets := os.Getenv("KUBEBUILDER_ASSETS"); assets != "" {
		return assets, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "bin", "k8s"), nil
}

// RepoRoot walks up from the working directory (a package dir under `go test`) to go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("get working dir: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod found above the working dir")
		}
		dir = parent
	}
}
