//go:build !linux

package localcluster

// watchdog does nothing outside Linux: an aborted run may leave etcd and kube-apiserver behind.
type watchdog struct{}

func startWatchdog([]int, string, bool) (*watchdog, error) { return &watchdog{}, nil }

func (w *watchdog) stop() error { return nil }

func childrenIn(string) ([]int, error) { return nil, nil }
