package localcluster

import (
	"errors"
	"fmt"
	"syscall"
)

// unmountAll removes every mount stacked on dir. The kubelet bind-mounts its --root-dir onto
// itself (to make it rshared) and never undoes it, which would make removing the work dir fail
// with EBUSY. EINVAL means dir is no longer a mount point.
func unmountAll(dir string) error {
	for range 10 {
		err := syscall.Unmount(dir, syscall.MNT_DETACH)
		if errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOENT) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("unmount %s: %w", dir, err)
		}
	}
	return fmt.Errorf("unmount %s: still mounted after 10 unmounts", dir)
}
