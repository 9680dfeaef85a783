//go:build !linux

package localcluster

import "syscall"

// sysProcAttr puts each child in its own process group so that Stop reaches its children too.
// Outside Linux there is no parent-death signal: an aborted run may leave processes behind.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// groupAlive reports whether a process of group pgid still exists (zombies included).
func groupAlive(pgid int) bool {
	return syscall.Kill(-pgid, 0) == nil
}
