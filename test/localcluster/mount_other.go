//go:build !linux

package localcluster

// unmountAll has nothing to do where the kubelet does not bind-mount its root dir.
func unmountAll(string) error { return nil }
