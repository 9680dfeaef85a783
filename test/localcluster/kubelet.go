package localcluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/cri-client/pkg/fake"
	"sigs.k8s.io/yaml"
)

// maxUnixSocketPath is sun_path's size on Linux minus the terminating NUL.
const maxUnixSocketPath = 107

// nodeAddressInterval is how often a kubelet's Node addresses are checked and restored.
const nodeAddressInterval = 500 * time.Millisecond

// KubeletOptions configures StartKubelet.
type KubeletOptions struct {
	// Name is the node name (--hostname-override); the kubelet becomes system:node:<Name>.
	Name string
	// NodeIP is the kubelet's own loopback address (for example 127.0.0.2), where it serves and
	// which its Node reports. Never 127.0.0.1, the API server's address. Empty: NextNodeIP.
	NodeIP string
	// BootstrapKubeconfig is written to the kubelet's --bootstrap-kubeconfig (see
	// BootstrapKubeconfig for building one from a token).
	BootstrapKubeconfig []byte
	// ServerTLSBootstrap makes the kubelet request its serving certificate with a kubelet-serving
	// CSR instead of self-signing one.
	ServerTLSBootstrap bool
	// Port is the kubelet's serving port on NodeIP; 0 picks a free one.
	Port int
	// ExtraArgs are appended to the kubelet's command line.
	ExtraArgs []string
}

// Kubelet is a running kubelet with its own directories, ports and fake container runtime.
type Kubelet struct {
	// Name is the node name.
	Name string
	// Dir holds everything of this kubelet: config, kubeconfigs, root dir, certificates, CRI socket.
	Dir string
	// KubeconfigPath is --kubeconfig: it exists once TLS bootstrap has succeeded.
	KubeconfigPath string
	// CertDir is --cert-dir: kubelet-client-current.pem and, with ServerTLSBootstrap,
	// kubelet-server-current.pem.
	CertDir string
	// BootstrapKubeconfigPath is --bootstrap-kubeconfig.
	BootstrapKubeconfigPath string
	// ConfigPath is the KubeletConfiguration file (--config).
	ConfigPath string
	// RootDir is --root-dir; the kubelet bind-mounts it onto itself.
	RootDir string
	// NodeIP and Port are where the kubelet serves.
	NodeIP string
	Port   int
	*Process

	cri          *fake.RemoteRuntime
	stopAddrs    context.CancelFunc
	addrsDone    chan struct{}
	shutdownOnce sync.Once
	unmountErr   error
}

// StartKubelet starts a kubelet that TLS-bootstraps with o.BootstrapKubeconfig against this
// cluster, with a fake CRI served in-process on a unix socket in its dir.
//
// The kubelet refuses to report a loopback --node-ip in its Node's status.addresses, so until the
// kubelet stops the harness keeps status.addresses at [InternalIP NodeIP, Hostname Name], which is
// what the kubelet reports for a routable IP (or a cloud controller manager sets); the kubelet's
// serving certificate request then names those addresses as on a real node.
func (c *Cluster) StartKubelet(ctx context.Context, o KubeletOptions) (*Kubelet, error) {
	if errs := validation.IsDNS1123Subdomain(o.Name); len(errs) > 0 {
		return nil, fmt.Errorf("invalid kubelet name %q: %s", o.Name, strings.Join(errs, "; "))
	}
	if o.NodeIP == "" {
		o.NodeIP = c.NextNodeIP()
	}
	ip := net.ParseIP(o.NodeIP)
	if ip == nil || !ip.IsLoopback() || ip.Equal(net.IPv4(127, 0, 0, 1)) {
		return nil, fmt.Errorf("node IP %q must be a loopback address other than 127.0.0.1", o.NodeIP)
	}
	if o.Port == 0 {
		port, err := freePort(o.NodeIP)
		if err != nil {
			return nil, err
		}
		o.Port = port
	}

	dir := filepath.Join(c.WorkDir, "kubelets", o.Name)
	k := &Kubelet{
		Name:                    o.Name,
		Dir:                     dir,
		KubeconfigPath:          filepath.Join(dir, "kubelet.kubeconfig"),
		CertDir:                 filepath.Join(dir, "pki"),
		BootstrapKubeconfigPath: filepath.Join(dir, "bootstrap.kubeconfig"),
		ConfigPath:              filepath.Join(dir, "config.yaml"),
		RootDir:                 filepath.Join(dir, "root"),
		NodeIP:                  o.NodeIP,
		Port:                    o.Port,
	}
	socket := filepath.Join(dir, "cri.sock")
	if len(socket) > maxUnixSocketPath {
		return nil, fmt.Errorf("cri socket path %s is longer than %d bytes: use a shorter kubelet name or TMPDIR", socket, maxUnixSocketPath)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create kubelet dir (one kubelet per name): %w", err)
	}
	for _, d := range []string{k.CertDir, k.RootDir, filepath.Join(dir, "pod-logs")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("create kubelet dir %s: %w", d, err)
		}
	}
	if err := os.WriteFile(k.BootstrapKubeconfigPath, o.BootstrapKubeconfig, 0o600); err != nil {
		return nil, fmt.Errorf("write bootstrap kubeconfig: %w", err)
	}
	config, err := c.kubeletConfig(k, "unix://"+socket, o.ServerTLSBootstrap)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(k.ConfigPath, config, 0o600); err != nil {
		return nil, fmt.Errorf("write kubelet config: %w", err)
	}
	path, err := c.binary(BinKubelet)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path, append([]string{
		"--config=" + k.ConfigPath,
		"--bootstrap-kubeconfig=" + k.BootstrapKubeconfigPath,
		"--kubeconfig=" + k.KubeconfigPath,
		"--cert-dir=" + k.CertDir,
		"--root-dir=" + k.RootDir,
		"--hostname-override=" + k.Name,
		"--node-ip=" + k.NodeIP,
	}, o.ExtraArgs...)...)
	cmd.Dir = dir

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return nil, errors.New("start kubelet: cluster is stopped")
	}
	k.cri = fake.NewFakeRemoteRuntime()
	if err := k.cri.Start("unix://" + socket); err != nil {
		return nil, fmt.Errorf("start fake cri for %s: %w", k.Name, err)
	}
	k.Process, err = startProcess("kubelet-"+k.Name, cmd, filepath.Join(c.WorkDir, "logs", "kubelet-"+k.Name+".log"), c.out)
	if err != nil {
		k.cri.Stop()
		return nil, err
	}
	addrCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	k.stopAddrs, k.addrsDone = cancel, make(chan struct{})
	go func() {
		defer close(k.addrsDone)
		c.keepNodeAddresses(addrCtx, k)
	}()
	c.kubelets = append(c.kubelets, k)
	return k, nil
}

// Stop stops the kubelet (SIGTERM, then SIGKILL), then its fake CRI and the upkeep of its Node's
// addresses, and unmounts what the kubelet mounted. It is idempotent.
func (k *Kubelet) Stop() error {
	err := k.Process.Stop()
	k.shutdownOnce.Do(func() {
		k.stopAddrs()
		<-k.addrsDone
		k.cri.Stop()
		k.unmountErr = unmountAll(k.RootDir)
	})
	return errors.Join(err, k.unmountErr)
}

// RESTConfig is the kubelet's own client configuration, from its kubeconfig; it exists once TLS
// bootstrap has succeeded.
func (k *Kubelet) RESTConfig() (*rest.Config, error) {
	return RESTConfigFromKubeconfig(k.KubeconfigPath)
}

// Identity is who the kubelet's kubeconfig authenticates as.
func (k *Kubelet) Identity(ctx context.Context) (authenticationv1.UserInfo, error) {
	cfg, err := k.RESTConfig()
	if err != nil {
		return authenticationv1.UserInfo{}, err
	}
	return WhoAmI(ctx, cfg)
}

// kubeletConfig renders the KubeletConfiguration. Only fields that matter here are set: those
// that let the kubelet run without a real runtime or cgroup setup, and those that keep several
// kubelets on one host apart.
func (c *Cluster) kubeletConfig(k *Kubelet, criEndpoint string, serverTLSBootstrap bool) ([]byte, error) {
	cfg := map[string]any{
		"apiVersion": "kubelet.config.k8s.io/v1beta1",
		"kind":       "KubeletConfiguration",
		"address":    k.NodeIP,
		"port":       k.Port,
		// 0 disables them; their defaults (10248, 10255) would collide between kubelets.
		"healthzPort":  0,
		"readOnlyPort": 0,

		"containerRuntimeEndpoint": criEndpoint,
		"imageServiceEndpoint":     criEndpoint,
		"podLogsDir":               filepath.Join(k.Dir, "pod-logs"),

		// A test host has swap, cgroup v1 and no kubepods hierarchy; none of it matters without pods.
		"failSwapOn":             false,
		"failCgroupV1":           false,
		"cgroupsPerQOS":          false,
		"cgroupDriver":           "cgroupfs",
		"enforceNodeAllocatable": []string{},

		"rotateCertificates": true,
		"serverTLSBootstrap": serverTLSBootstrap,

		"authentication": map[string]any{
			"anonymous": map[string]any{"enabled": false},
			"webhook":   map[string]any{"enabled": true},
			"x509":      map[string]any{"clientCAFile": c.ClientCAFile},
		},
		"authorization": map[string]any{"mode": "Webhook"},
	}
	data, err := json.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("render kubelet config: %w", err)
	}
	out, err := yaml.JSONToYAML(data)
	if err != nil {
		return nil, fmt.Errorf("render kubelet config: %w", err)
	}
	return out, nil
}

// keepNodeAddresses sets the kubelet's Node status.addresses whenever they lack NodeIP, until ctx
// ends. The kubelet never writes them itself for a loopback IP (its node IP validation rejects
// loopback and the status update leaves the field alone), so this never fights the kubelet.
func (c *Cluster) keepNodeAddresses(ctx context.Context, k *Kubelet) {
	cs, err := kubernetes.NewForConfig(c.Admin)
	if err != nil {
		fmt.Fprintf(c.out, "localcluster: node addresses of %s: build client: %v\n", k.Name, err)
		return
	}
	want := []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: k.NodeIP},
		{Type: corev1.NodeHostName, Address: k.Name},
	}
	// A JSON merge patch replaces the whole list; a strategic merge would merge by type.
	patch, err := json.Marshal(map[string]any{"status": map[string]any{"addresses": want}})
	if err != nil {
		fmt.Fprintf(c.out, "localcluster: node addresses of %s: %v\n", k.Name, err)
		return
	}
	wait.UntilWithContext(ctx, func(ctx context.Context) {
		node, err := cs.CoreV1().Nodes().Get(ctx, k.Name, metav1.GetOptions{})
		if err != nil {
			if !apierrors.IsNotFound(err) && ctx.Err() == nil {
				fmt.Fprintf(c.out, "localcluster: node addresses of %s: %v\n", k.Name, err)
			}
			return
		}
		if slices.Contains(node.Status.Addresses, want[0]) {
			return
		}
		_, err = cs.CoreV1().Nodes().Patch(ctx, k.Name, types.MergePatchType, patch, metav1.PatchOptions{}, "status")
		if err != nil && ctx.Err() == nil {
			fmt.Fprintf(c.out, "localcluster: node addresses of %s: %v\n", k.Name, err)
		}
	}, nodeAddressInterval)
}

// freePort asks the kernel for an unused TCP port on ip. Another process may take it before the
// kubelet binds it; on a test machine that race is rare enough.
func freePort(ip string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return 0, fmt.Errorf("find a free port on %s: %w", ip, err)
	}
	defer func() { _ = l.Close() }()
	_, port, err := net.SplitHostPort(l.Addr().String())
	if err != nil {
		return 0, fmt.Errorf("find a free port on %s: %w", ip, err)
	}
	return strconv.Atoi(port)
}
