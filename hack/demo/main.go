// Command demo shows the operator doing its job on a machine with nothing but Go: a local
// control plane built from source, the operator as its own process under its generated
// RBAC, the sample policy, and a real kubelet joining with the published bootstrap
// kubeconfig. It prints a report a person can read, then cleans up (DEMO_KEEP=1 keeps
// everything running until Ctrl-C).
package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/tlsbootstrap/tls-bootstrap-operator/api/v1alpha1"
	"github.com/tlsbootstrap/tls-bootstrap-operator/internal/kubeconfig"
	"github.com/tlsbootstrap/tls-bootstrap-operator/test/localcluster"
)

const nodeName = "worker-1"

func main() {
	operator := flag.String("operator", "bin/manager", "the manager binary")
	sample := flag.String("sample", "config/samples/bootstrap_v1alpha1_bootstrappolicy.yaml", "the policy to apply")
	verbose := flag.Bool("v", false, "stream every process's logs")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *operator, *sample, *verbose); err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, operatorBin, samplePath string, verbose bool) error {
	out := io.Discard
	if verbose {
		out = os.Stderr
	}
	step("starting etcd, kube-apiserver (bootstrap tokens, Node+RBAC, NodeRestriction) and kube-controller-manager (signer only)")
	cluster, err := localcluster.Start(ctx, localcluster.Options{
		CRDDirectoryPaths: []string{"config/crd/bases"},
		ControllerManager: []string{"csrsigning", "garbagecollector", "tokencleaner"},
		Out:               out,
		KeepWorkDir:       os.Getenv("DEMO_KEEP") != "",
	})
	if err != nil {
		return err
	}
	defer func() {
		step("stopping everything")
		if err := cluster.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stop:", err)
		}
	}()
	c, err := client.New(cluster.Admin, client.Options{Scheme: scheme()})
	if err != nil {
		return fmt.Errorf("admin client: %w", err)
	}

	step("starting the operator as its own process, with only its generated RBAC")
	if _, err := cluster.StartOperator(ctx, localcluster.OperatorOptions{Binary: operatorBin}); err != nil {
		return err
	}

	step("applying " + samplePath + " (server rewritten to this API server)")
	p, err := applySample(ctx, c, samplePath, cluster.Server)
	if err != nil {
		return err
	}
	if err := waitFor(ctx, "the policy to be Ready", func() (bool, error) {
		if err := c.Get(ctx, client.ObjectKeyFromObject(p), p); err != nil {
			return false, err
		}
		return meta.IsStatusConditionTrue(p.Status.Conditions, v1alpha1.ConditionReady), nil
	}); err != nil {
		return err
	}
	fmt.Print(kubectl(cluster, "get", "bootstrappolicies"))

	step("starting kubelet " + nodeName + " with the published bootstrap kubeconfig and serverTLSBootstrap")
	secret := &corev1.Secret{}
	ref := p.Spec.Kubeconfig.SecretRef
	if err := c.Get(ctx, client.ObjectKey{Namespace: ref.Namespace, Name: ref.Name}, secret); err != nil {
		return fmt.Errorf("reading the bootstrap kubeconfig: %w", err)
	}
	kubelet, err := cluster.StartKubelet(ctx, localcluster.KubeletOptions{
		Name: nodeName, BootstrapKubeconfig: secret.Data[kubeconfig.Key], ServerTLSBootstrap: true,
	})
	if err != nil {
		return err
	}
	if err := waitFor(ctx, "the kubelet's serving certificate", func() (bool, error) {
		_, err := os.Stat(filepath.Join(kubelet.CertDir, "kubelet-server-current.pem"))
		return err == nil, nil
	}); err != nil {
		return err
	}

	if err := report(ctx, c, p, kubelet); err != nil {
		return err
	}
	if os.Getenv("DEMO_KEEP") != "" {
		fmt.Printf("\nEverything keeps running. Explore with:\n  export KUBECONFIG=%s\n  %s get bsp,csr,nodes\nPress Ctrl-C to stop.\n",
			cluster.AdminKubeconfig, filepath.Join(cluster.BinDir, "kubectl"))
		<-ctx.Done()
	}
	return nil
}

func scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(s)
	_ = v1alpha1.AddToScheme(s)
	return s
}

// applySample creates the sample as written (unstructured, so the API server stores the
// user's own spelling of every field), with the server pointed at this API server.
func applySample(ctx context.Context, c client.Client, path, server string) (*v1alpha1.BootstrapPolicy, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the sample: %w", err)
	}
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(raw, &u.Object); err != nil {
		return nil, fmt.Errorf("parsing the sample: %w", err)
	}
	ns, found, _ := unstructured.NestedString(u.Object, "spec", "kubeconfig", "secretRef", "namespace")
	if !found {
		return nil, errors.New("the sample must ask for a kubeconfig: the kubelet joins with it")
	}
	if err := unstructured.SetNestedField(u.Object, server, "spec", "kubeconfig", "server"); err != nil {
		return nil, fmt.Errorf("setting the server: %w", err)
	}
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); client.IgnoreAlreadyExists(err) != nil {
		return nil, fmt.Errorf("creating namespace: %w", err)
	}
	if err := c.Create(ctx, u); err != nil {
		return nil, fmt.Errorf("creating the policy: %w", err)
	}
	p := &v1alpha1.BootstrapPolicy{}
	if err := c.Get(ctx, client.ObjectKeyFromObject(u), p); err != nil {
		return nil, fmt.Errorf("reading the policy: %w", err)
	}
	return p, nil
}

// report prints what a person wants to see: the policy, its token (never the secret),
// every CSR with its decision, and who the kubelet now is.
func report(ctx context.Context, c client.Client, p *v1alpha1.BootstrapPolicy, k *localcluster.Kubelet) error {
	if err := c.Get(ctx, client.ObjectKeyFromObject(p), p); err != nil {
		return fmt.Errorf("reading the policy: %w", err)
	}
	fmt.Printf("\n==== report ====\n\nBootstrapPolicy %q\n", p.Name)
	for _, cond := range p.Status.Conditions {
		fmt.Printf("  %-16s %-6s %-12s %s\n", cond.Type, cond.Status, cond.Reason, cond.Message)
	}
	for _, t := range p.Status.Tokens {
		fmt.Printf("  token %s (Secret kube-system/%s) expires %s\n", t.ID, t.SecretName, t.ExpiresAt.UTC().Format(time.RFC3339))
	}
	fmt.Printf("  kubeconfig Secret: %s\n\nCertificateSigningRequests\n", p.Status.KubeconfigSecret)

	var csrs certificatesv1.CertificateSigningRequestList
	if err := c.List(ctx, &csrs); err != nil {
		return fmt.Errorf("listing csrs: %w", err)
	}
	tw := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  NAME\tSIGNER\tREQUESTER\tDECISION\tREASON\tMESSAGE\tISSUED")
	for _, r := range csrs.Items {
		decision, reason, msg := "Pending", "", ""
		for _, cond := range r.Status.Conditions {
			decision, reason, msg = string(cond.Type), cond.Reason, cond.Message
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%v\n", r.Name, r.Spec.SignerName, r.Spec.Username, decision, reason, msg, len(r.Status.Certificate) > 0)
	}
	_ = tw.Flush()

	who, err := k.Identity(ctx)
	if err != nil {
		return fmt.Errorf("asking who the kubelet is: %w", err)
	}
	fmt.Printf("\nKubelet %s authenticates as %s, groups %v\n", k.Name, who.Username, who.Groups)
	raw, err := os.ReadFile(filepath.Join(k.CertDir, "kubelet-server-current.pem"))
	if err != nil {
		return fmt.Errorf("reading the serving certificate: %w", err)
	}
	block, _ := pem.Decode(raw)
	if block == nil {
		return errors.New("the serving certificate file holds no PEM")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return fmt.Errorf("parsing the serving certificate: %w", err)
	}
	ips := make([]string, 0, len(cert.IPAddresses))
	for _, ip := range cert.IPAddresses {
		ips = append(ips, ip.String())
	}
	fmt.Printf("Serving certificate: subject %s, DNS SANs %v, IP SANs %v, expires %s\n",
		cert.Subject.CommonName, cert.DNSNames, strings.Join(ips, ","), cert.NotAfter.UTC().Format(time.RFC3339))
	return nil
}

func kubectl(cluster *localcluster.Cluster, args ...string) string {
	cmd := exec.Command(filepath.Join(cluster.BinDir, "kubectl"), append([]string{"--kubeconfig", cluster.AdminKubeconfig}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Sprintf("kubectl %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func waitFor(ctx context.Context, what string, done func() (bool, error)) error {
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(context.Context) (bool, error) {
		return done()
	})
	if err != nil {
		return fmt.Errorf("waiting for %s: %w", what, err)
	}
	return nil
}

func step(msg string) { fmt.Printf("==> %s\n", msg) }
