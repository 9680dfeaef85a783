package localcluster

import "syscall"

// sysProcAttr puts each child in its own process group (so Stop reaches its children too) and
// asks the kernel to kill it when the test binary dies, so that no API server or kubelet outlives
// an aborted test run.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
