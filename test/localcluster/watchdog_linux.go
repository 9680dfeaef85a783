package localcluster

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// watchdog cleans up after a test binary that dies without calling Stop (go test's -timeout, a
// SIGKILL, a crash). Processes the cluster starts itself die with it (Pdeathsig), but envtest
// starts etcd and kube-apiserver without one, and kubelets leave their root dirs bind-mounted. The
// watchdog is a shell blocked reading a pipe whose only writer is this process: when the process
// dies the read ends, and the shell kills the given pids, unmounts what is mounted under the work
// dir and removes it. A clean Stop tells it to exit without doing anything.
type watchdog struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
}

const watchdogScript = `read -r cmd
[ "$cmd" = stop ] && exit 0
kill -9 $PIDS 2>/dev/null
grep -o " $WORKDIR/[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m"; done
[ -n "$KEEP" ] || rm -rf "$WORKDIR"
`

// startWatchdog starts the watchdog for pids (already running) and workDir.
func startWatchdog(pids []int, workDir string, keep bool) (*watchdog, error) {
	ids := make([]string, len(pids))
	for i, pid := range pids {
		ids[i] = strconv.Itoa(pid)
	}
	cmd := exec.Command("/bin/sh", "-c", watchdogScript)
	cmd.Env = append(os.Environ(), "PIDS="+strings.Join(ids, " "), "WORKDIR="+workDir)
	if keep {
		cmd.Env = append(cmd.Env, "KEEP=1")
	}
	// Its own process group and no parent-death signal: it must outlive this process.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("start watchdog: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start watchdog: %w", err)
	}
	return &watchdog{cmd: cmd, stdin: stdin}, nil
}

// stop makes the watchdog exit without cleaning anything up, and waits for it.
func (w *watchdog) stop() error {
	if _, err := io.WriteString(w.stdin, "stop\n"); err != nil {
		return fmt.Errorf("stop watchdog: %w", err)
	}
	_ = w.stdin.Close()
	if err := w.cmd.Wait(); err != nil {
		return fmt.Errorf("stop watchdog: %w", err)
	}
	return nil
}

// childrenIn lists this process's direct children whose command line mentions dir: the etcd and
// kube-apiserver envtest started for this cluster, which it does not expose.
func childrenIn(dir string) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	self := os.Getpid()
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // exited meanwhile
		}
		// Fields after the parenthesized command name: state, ppid, ...
		_, rest, ok := strings.Cut(string(stat), ") ")
		fields := strings.Fields(rest)
		if !ok || len(fields) < 2 || fields[1] != strconv.Itoa(self) {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !strings.Contains(string(cmdline), dir+string(filepath.Separator)) {
			continue
		}
		pids = append(pids, pid)
	}
	return pids, nil
}
