package localcluster

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// DefaultStopTimeout is how long Process.Stop waits after SIGTERM before it sends SIGKILL.
const DefaultStopTimeout = 15 * time.Second

// Process is a child process started by the cluster. It runs in its own process group so that
// stopping it also stops anything it spawned, and its output goes to a log file and to the
// cluster's Out writer.
type Process struct {
	// Name identifies the process in logs and names its log file.
	Name string
	// StopTimeout is how long Stop waits for a graceful exit before killing the process group.
	StopTimeout time.Duration

	cmd     *exec.Cmd
	logPath string
	logFile *os.File
	out     *prefixWriter
	exited  chan struct{}
	waitErr error
	stopMu  sync.Mutex
}

// Exited is closed once the process has exited and its output has been flushed.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// LogPath is the file holding everything the process wrote to stdout and stderr.
func (p *Process) LogPath() string { return p.logPath }

// Pid is the process id (also its process group id).
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// ExitError is the result of waiting for the process; it is nil while the process runs and after
// a clean exit.
func (p *Process) ExitError() error {
	select {
	case <-p.exited:
		return p.waitErr
	default:
		return nil
	}
}

// Running reports whether the process has not exited yet.
func (p *Process) Running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// Stop sends SIGTERM to the process group, then SIGKILL when it has not exited within
// StopTimeout, and waits until nothing of the group runs. Stopping an exited process is a
// no-op, so Stop is safe to call any number of times.
func (p *Process) Stop() error {
	p.stopMu.Lock()
	defer p.stopMu.Unlock()
	if !p.Running() {
		return nil
	}
	if err := p.signal(syscall.SIGTERM); err != nil {
		return err
	}
	timeout := p.StopTimeout
	if timeout <= 0 {
		timeout = DefaultStopTimeout
	}
	select {
	case <-p.exited:
		p.awaitGroup()
		return nil
	case <-time.After(timeout):
	}
	if err := p.signal(syscall.SIGKILL); err != nil {
		return err
	}
	<-p.exited
	p.awaitGroup()
	return fmt.Errorf("%s did not exit within %s of SIGTERM and was killed", p.Name, timeout)
}

// Kill sends SIGKILL to the process group and waits until nothing of it runs, as a crash
// would end it.
func (p *Process) Kill() error {
	p.stopMu.Lock()
	defer p.stopMu.Unlock()
	if !p.Running() {
		return nil
	}
	if err := p.signal(syscall.SIGKILL); err != nil {
		return err
	}
	<-p.exited
	p.awaitGroup()
	return nil
}

// groupGrace is how long Stop and Kill wait for what the process spawned to follow it out
// before they SIGKILL the stragglers, and again after that before they give up.
const groupGrace = 5 * time.Second

// awaitGroup returns once nothing of the process group runs any more. The group was
// signalled with its leader, but each child dies on its own schedule, and none may outlive
// Stop. The kernel has no event for a group emptying, so this polls.
func (p *Process) awaitGroup() {
	pgid := p.cmd.Process.Pid
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	grace := time.After(groupGrace)
	killed := false
	for groupAlive(pgid) {
		select {
		case <-grace:
			if killed {
				return // unkillable (uninterruptible sleep): nothing more to do
			}
			_ = p.signal(syscall.SIGKILL)
			killed, grace = true, time.After(groupGrace)
		case <-tick.C:
		}
	}
}

// signal signals the whole process group: the process was started with Setpgid, so its pgid is
// its pid. ESRCH means everything is already gone, which is what the caller wants.
func (p *Process) signal(sig syscall.Signal) error {
	if err := syscall.Kill(-p.cmd.Process.Pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal %s to %s: %w", sig, p.Name, err)
	}
	return nil
}

// startProcess starts cmd with its output teed to logPath and to out (line-prefixed with the
// name). The caller owns cmd's Path, Args, Env and Dir; Stdout, Stderr and SysProcAttr are set
// here.
func startProcess(name string, cmd *exec.Cmd, logPath string, out io.Writer) (*Process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open log file for %s: %w", name, err)
	}
	p := &Process{
		Name:        name,
		StopTimeout: DefaultStopTimeout,
		cmd:         cmd,
		logPath:     logPath,
		logFile:     logFile,
		out:         newPrefixWriter(out, "["+name+"] "),
		exited:      make(chan struct{}),
	}
	w := io.MultiWriter(logFile, p.out)
	cmd.Stdout = w
	cmd.Stderr = w
	cmd.SysProcAttr = sysProcAttr()

	started := make(chan error, 1)
	go func() {
		// Pdeathsig fires when the OS thread that forked the child exits, not the process:
		// keeping this goroutine locked to its thread until the child exits makes sure the
		// child is killed only when the test binary itself dies (a timeout, a panic, ^C).
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		p.waitErr = cmd.Wait()
		p.out.Flush()
		_ = logFile.Close()
		close(p.exited)
	}()
	if err := <-started; err != nil {
		_ = logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	return p, nil
}

// prefixWriter writes whole lines, each prefixed, to a shared writer, so that interleaved output
// of several processes stays readable.
type prefixWriter struct {
	mu     sync.Mutex
	out    io.Writer
	prefix []byte
	buf    []byte
}

func newPrefixWriter(out io.Writer, prefix string) *prefixWriter {
	if out == nil {
		out = io.Discard
	}
	return &prefixWriter{out: out, prefix: []byte(prefix)}
}

// Write never fails: a broken log sink must not make a child process die of SIGPIPE-like errors.
func (w *prefixWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, b...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.emit(w.buf[:i+1])
		w.buf = w.buf[i+1:]
	}
	return len(b), nil
}

// Flush writes a trailing partial line, if any.
func (w *prefixWriter) Flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.emit(append(w.buf, '\n'))
		w.buf = nil
	}
}

func (w *prefixWriter) emit(line []byte) {
	msg := make([]byte, 0, len(w.prefix)+len(line))
	msg = append(msg, w.prefix...)
	msg = append(msg, line...)
	_, _ = w.out.Write(msg)
}

// lockedWriter serializes writes to a writer shared by many processes.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}
