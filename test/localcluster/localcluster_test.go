package localcluster

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"
)

func TestPrefixWriter(t *testing.T) {
	tests := map[string]struct {
		writes []string
		flush  bool
		want   string
	}{
		"complete lines are prefixed one by one": {
			writes: []string{"a\nb\n"},
			want:   "[p] a\n[p] b\n",
		},
		"a line split across writes is emitted once, whole": {
			writes: []string{"hel", "lo\nwor"},
			want:   "[p] hello\n",
		},
		"flush emits a trailing partial line": {
			writes: []string{"done\npartial"},
			flush:  true,
			want:   "[p] done\n[p] partial\n",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var out bytes.Buffer
			w := newPrefixWriter(&out, "[p] ")
			for _, s := range tc.writes {
				if n, err := w.Write([]byte(s)); err != nil || n != len(s) {
					t.Fatalf("Write(%q) = %d, %v", s, n, err)
				}
			}
			if tc.flush {
				w.Flush()
			}
			if got := out.String(); got != tc.want {
				t.Errorf("output = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestProcessStop(t *testing.T) {
	tests := map[string]struct {
		script      string
		stopTimeout time.Duration
		kill        bool
		wantErr     bool
	}{
		"a process that exits on SIGTERM stops cleanly, with its children": {
			script:      "sleep 300 & echo $!; wait",
			stopTimeout: time.Minute,
		},
		"a process that ignores SIGTERM is killed, with its children, and Stop says so": {
			script:      "trap '' TERM; sleep 300 & echo $!; wait",
			stopTimeout: 200 * time.Millisecond,
			wantErr:     true,
		},
		"Kill ends the process and its children at once": {
			script: "trap '' TERM; sleep 300 & echo $!; wait",
			kill:   true,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			logPath := filepath.Join(t.TempDir(), "p.log")
			out := &lineRecorder{lines: make(chan string, 1)}
			p, err := startProcess("sh", exec.Command("sh", "-c", tc.script), logPath, &lockedWriter{w: out})
			if err != nil {
				t.Fatal(err)
			}
			child := childPid(t, out)
			p.StopTimeout = tc.stopTimeout

			if tc.kill {
				err = p.Kill()
			} else {
				err = p.Stop()
			}
			if (err != nil) != tc.wantErr {
				t.Fatalf("stop error = %v, want error: %v", err, tc.wantErr)
			}
			select {
			case <-p.Exited():
			default:
				t.Fatal("Exited() is not closed after Stop/Kill returned")
			}
			if alive(child) {
				t.Errorf("child %d of the stopped process still runs", child)
			}
			if err := p.Stop(); err != nil {
				t.Errorf("second Stop = %v, want nil", err)
			}
			logged, err := os.ReadFile(logPath)
			if err != nil || strings.TrimSpace(string(logged)) != strconv.Itoa(child) {
				t.Errorf("log file = %q (%v), want the script's output unprefixed", logged, err)
			}
		})
	}
}

// lineRecorder keeps what a process wrote and hands out each line as it arrives, so a test can
// wait for output without polling.
type lineRecorder struct {
	lines chan string
}

func (r *lineRecorder) Write(b []byte) (int, error) {
	select {
	case r.lines <- string(b):
	default:
	}
	return len(b), nil
}

// childPid waits for the pid the script echoes first: signalling the script before its trap is
// set and its child started would race the shell.
func childPid(t *testing.T, r *lineRecorder) int {
	t.Helper()
	select {
	case line := <-r.lines:
		pid, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "[sh] ")))
		if err != nil {
			t.Fatalf("first line %q is not a pid", line)
		}
		return pid
	case <-time.After(10 * time.Second):
		t.Fatal("the script never printed its child's pid")
		return 0
	}
}

// alive reports whether pid runs; a zombie (exited, not yet reaped by init) counts as gone.
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(stat), ") ")
	return !strings.HasPrefix(rest, "Z")
}

func TestBootstrapKubeconfig(t *testing.T) {
	ca := []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
	data, err := BootstrapKubeconfig("https://127.0.0.1:6443", ca, "abcdef.0123456789abcdef")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.RESTConfigFromKubeConfig(data)
	if err != nil {
		t.Fatalf("the kubeconfig does not load: %v", err)
	}
	if cfg.Host != "https://127.0.0.1:6443" || !bytes.Equal(cfg.CAData, ca) || cfg.BearerToken != "abcdef.0123456789abcdef" {
		t.Errorf("loaded host %q, CA %q, token %q; want the server, CA and token given", cfg.Host, cfg.CAData, cfg.BearerToken)
	}
	if len(cfg.CertData) != 0 || len(cfg.KeyData) != 0 {
		t.Error("a bootstrap kubeconfig must carry no client certificate")
	}
}

func TestClusterInfoKubeconfig(t *testing.T) {
	ca := []byte("ca")
	data, err := ClusterInfoKubeconfig("https://127.0.0.1:6443", ca)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.Load(data)
	if err != nil {
		t.Fatal(err)
	}
	cluster, ok := cfg.Clusters[""]
	if len(cfg.Clusters) != 1 || !ok {
		t.Fatalf("clusters = %v, want exactly the unnamed one, as kubeadm publishes", cfg.Clusters)
	}
	if cluster.Server != "https://127.0.0.1:6443" || !bytes.Equal(cluster.CertificateAuthorityData, ca) {
		t.Errorf("cluster = %+v, want the server and CA given", cluster)
	}
	if len(cfg.AuthInfos) != 0 || len(cfg.Contexts) != 0 {
		t.Error("cluster-info must hold no users or contexts")
	}
}

func TestClientCertificate(t *testing.T) {
	ca, err := newCertAuthority("test-ca")
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		user   string
		groups []string
	}{
		"a user with groups gets them as organizations": {user: "alice", groups: []string{"g1", "system:masters"}},
		"a user without groups gets no organization":    {user: "system:node:n1"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			certPEM, keyPEM, err := ca.clientCert(tc.user, tc.groups)
			if err != nil {
				t.Fatal(err)
			}
			if block, _ := pem.Decode(keyPEM); block == nil || block.Type != "EC PRIVATE KEY" {
				t.Fatal("key is not an EC PRIVATE KEY PEM block")
			}
			block, _ := pem.Decode(certPEM)
			if block == nil {
				t.Fatal("certificate is not PEM")
			}
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			roots := x509.NewCertPool()
			roots.AddCert(ca.cert)
			if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
				t.Errorf("certificate does not verify as a client certificate of the CA: %v", err)
			}
			if cert.Subject.CommonName != tc.user || strings.Join(cert.Subject.Organization, ",") != strings.Join(tc.groups, ",") {
				t.Errorf("subject = %v, want CN %q O %v", cert.Subject, tc.user, tc.groups)
			}
		})
	}
}

func TestNextNodeIP(t *testing.T) {
	c := &Cluster{nextNodeIPHost: 2}
	seen := map[string]bool{}
	for i := range 600 {
		ip := c.NextNodeIP()
		if i == 0 && ip != "127.0.0.2" {
			t.Errorf("first node IP = %s, want 127.0.0.2", ip)
		}
		if seen[ip] {
			t.Fatalf("node IP %s handed out twice", ip)
		}
		seen[ip] = true
		if ip == "127.0.0.1" || strings.HasSuffix(ip, ".0") || strings.HasSuffix(ip, ".255") {
			t.Errorf("node IP %s is the API server's, a network or a broadcast address", ip)
		}
	}
}
