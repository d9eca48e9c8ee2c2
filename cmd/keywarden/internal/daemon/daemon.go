// Package daemon keeps a process running in the background for the local stack — moto, the
// local services — past the command that started it: started in a session of its own and
// bounded by timeout(1), recorded in a pid file, waited for until it answers, and stopped with
// its whole process group. A pid file outlives what it names; before signalling, the stack asks
// whether the pid still runs what it started (CmdlineHas), so a reused pid is never killed.
//
// It knows processes and files only: it must not import the rest of the local stack, the AWS
// SDK or keywarden's product packages.
package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// State is what a pid file records about a background process.
type State struct {
	// PID is the process group leader: timeout(1), with the command its child.
	PID       int       `json:"pid"`
	Port      int       `json:"port"`
	StartedAt time.Time `json:"started_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

// Spec is a process to keep in the background.
type Spec struct {
	// What names it in messages: "moto_server", "the local services".
	What string
	// StateFile is its pid file; LogFile receives its stdout and stderr, truncated first.
	StateFile string
	LogFile   string
	// Dir is its working directory; empty is this process's.
	Dir  string
	Port int
	// TTL bounds its life: timeout(1) runs Argv and ends it after TTL whatever happens here.
	TTL  time.Duration
	Argv []string
	// Answers reports whether it is up; Start polls it every Tick for at most StartLimit.
	Answers    func(context.Context) bool
	StartLimit time.Duration
	Tick       time.Duration
	// Stop ends it when it does not come up (normally the caller's own stop, which also
	// forgets what it recorded beside the pid file).
	Stop func(*State) error
}

// Start starts spec in a session of its own — it outlives this process, and StopGroup ends
// timeout, the command and its children together by signalling the group — records its pid
// file, and waits until it answers.
func Start(ctx context.Context, spec Spec) (*State, error) {
	timeout, err := exec.LookPath("timeout")
	if err != nil {
		return nil, fmt.Errorf("timeout(1) from coreutils bounds the lifetime of %s and was not found: %w", spec.What, err)
	}
	logf, err := os.OpenFile(spec.LogFile, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("log of %s: %w", spec.What, err)
	}
	defer logf.Close()

	cmd := exec.Command(timeout, append([]string{fmt.Sprintf("%ds", int(spec.TTL.Seconds()))}, spec.Argv...)...)
	cmd.Dir = spec.Dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", spec.What, err)
	}
	exited := make(chan struct{})
	// Reap it when it ends, or a test process that starts and stops it would keep a zombie
	// that still looks alive.
	go func() { _ = cmd.Wait(); close(exited) }()

	st := &State{PID: cmd.Process.Pid, Port: spec.Port, StartedAt: start.UTC(), ExpiresAt: start.Add(spec.TTL).UTC()}
	if err := WriteState(spec.StateFile, st); err != nil {
		_ = syscall.Kill(-st.PID, syscall.SIGKILL)
		return nil, err
	}
	deadline := time.NewTimer(spec.StartLimit)
	defer deadline.Stop()
	tick := time.NewTicker(spec.Tick)
	defer tick.Stop()
	for !spec.Answers(ctx) {
		select {
		case <-exited:
			_ = Remove(spec.StateFile)
			return nil, fmt.Errorf("%s exited during start-up (%s); its log %s ends:\n%s", spec.What, cmd.ProcessState, spec.LogFile, Tail(spec.LogFile, 2000))
		case <-ctx.Done():
			_ = spec.Stop(st)
			return nil, ctx.Err()
		case <-deadline.C:
			_ = spec.Stop(st)
			return nil, fmt.Errorf("%s did not answer on port %d within %s; its log %s ends:\n%s", spec.What, spec.Port, spec.StartLimit, spec.LogFile, Tail(spec.LogFile, 2000))
		case <-tick.C:
		}
	}
	return st, nil
}

// ReadState reads a pid file. A missing file is no process (nil, nil); an unreadable one is
// reported to warn (when not nil), removed, and also no process.
func ReadState(path string, warn io.Writer) (*State, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", filepath.Base(path), err)
	}
	var st State
	if err := json.Unmarshal(data, &st); err != nil || st.PID <= 0 {
		if warn != nil {
			fmt.Fprintf(warn, "ignoring unreadable %s\n", path)
		}
		return nil, Remove(path)
	}
	return &st, nil
}

// WriteState writes a pid file atomically.
func WriteState(path string, st *State) error {
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return WriteFileAtomic(path, data, 0o644)
}

// Remove removes a file that may not exist.
func Remove(path string) error {
	err := os.Remove(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// StopGroup sends SIGTERM to the process group pgid, then SIGKILL if it is still there after
// grace, and waits until it is gone.
func StopGroup(pgid int, grace time.Duration) error {
	if err := syscall.Kill(-pgid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	if waitGroupGone(pgid, grace) {
		return nil
	}
	if err := syscall.Kill(-pgid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	if !waitGroupGone(pgid, 2*time.Second) {
		return fmt.Errorf("process group %d still running after SIGKILL", pgid)
	}
	return nil
}

func waitGroupGone(pgid int, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for GroupAlive(pgid) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// GroupAlive reports whether any process of group pgid exists.
func GroupAlive(pgid int) bool {
	err := syscall.Kill(-pgid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// CmdlineHas reports whether process pid's command line contains marker: whether a pid from a
// pid file is still the process the stack started, not one that reused the number. Where /proc
// cannot tell (not Linux), it trusts the pid file.
func CmdlineHas(pid int, marker string) bool {
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return !errors.Is(err, fs.ErrNotExist) || !procAvailable()
	}
	return bytes.Contains(cmdline, []byte(marker))
}

func procAvailable() bool {
	_, err := os.Stat("/proc/self/cmdline")
	return err == nil
}

// PortInUse reports whether something accepts connections on 127.0.0.1:port.
func PortInUse(port int) bool {
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// FreePort returns a loopback port nobody listened on a moment ago. Another process can take it
// before the caller does: callers that start a server on it retry.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// WriteFileAtomic writes through a temporary file and a rename, so a concurrent reader never
// sees half a file.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// Tail returns at most the last n bytes of the file at path, for error messages.
func Tail(path string, n int64) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	if int64(len(data)) > n {
		data = data[int64(len(data))-n:]
	}
	return string(data)
}
