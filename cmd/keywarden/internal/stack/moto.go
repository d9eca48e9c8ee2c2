package localstack

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// motoState is what Up records about the moto it started, so that a later process (another
// `local up`, `local down`, `local invoke`) can find it.
type motoState struct {
	// PID is the process group leader: timeout(1), with moto_server its child.
	PID       int       `json:"pid"`
	Port      int       `json:"port"`
	StartedAt time.Time `json:"started_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

const (
	motoStateFile  = "moto.json"
	motoLogFile    = "moto.log"
	callerEnvFile  = "caller-env.json"
	motoStartLimit = 60 * time.Second
	stopGrace      = 5 * time.Second
)

// Up makes sure the local AWS APIs answer on Endpoint and that every resource exists, then
// returns. When the moto that an earlier Up started is still healthy it is reused; otherwise a
// new moto_server starts in its own session (so closing the terminal or ^C in make does not
// stop it), bounded by timeout(1) to Options.TTL. The local services (Serve) are reused or
// started the same way, on Options.ServicesPort, to stop with that moto. Up also records
// Options.CallerEnv for later invocations.
func (s *Stack) Up(ctx context.Context) error {
	if err := os.MkdirAll(s.opts.StateDir, 0o755); err != nil {
		return fmt.Errorf("local up: %w", err)
	}
	env, err := ReadEnvFile(s.opts.EnvFile)
	if err != nil {
		return fmt.Errorf("local up: %w", err)
	}
	if err := s.ensureMoto(ctx); err != nil {
		return fmt.Errorf("local up: %w", err)
	}
	if err := s.recordCallerEnv(); err != nil {
		return fmt.Errorf("local up: %w", err)
	}
	if err := s.ensureServices(ctx, s.servicesDeadline()); err != nil {
		return fmt.Errorf("local up: %w", err)
	}
	resources := s.opts.Resources
	if resources == nil {
		resources = DefaultResources(env, filepath.Join(s.opts.Dir, "template.yaml"))
	}
	cfg := s.AWSConfig()
	for i, create := range resources {
		if err := create(ctx, cfg); err != nil {
			return fmt.Errorf("local up: resource %d of %d: %w", i+1, len(resources), err)
		}
	}
	fmt.Fprintf(s.opts.Log, "local stack ready: AWS APIs at %s, Slack and Lambda at %s, %d resources\n", s.Endpoint(), s.ServicesURL(), len(resources))
	return nil
}

// ensureMoto reuses a healthy moto or starts one.
func (s *Stack) ensureMoto(ctx context.Context) error {
	st, err := s.readProcState(motoStateFile)
	if err != nil {
		return err
	}
	if st != nil {
		if groupAlive(st.PID) && isOurMoto(st.PID) && motoAnswersWithin(ctx, st.Port, 20*time.Second) {
			if st.Port != s.opts.Port {
				return fmt.Errorf("the local stack already runs on port %d, not %d: run `keywarden local down` first", st.Port, s.opts.Port)
			}
			fmt.Fprintf(s.opts.Log, "local stack already running (pid %d, port %d, until %s)\n",
				st.PID, st.Port, st.ExpiresAt.Local().Format(time.TimeOnly))
			return nil
		}
		// Started by us but gone or hung (expired TTL, a crash, a reboot): clear it up.
		if err := s.stopMoto(st); err != nil {
			return err
		}
	}
	if motoAnswers(ctx, s.opts.Port) {
		// Someone else's moto (another checkout, a developer's own). Using it is what the
		// caller wants: the AWS APIs are there. Down will leave it alone.
		fmt.Fprintf(s.opts.Log, "using the moto already listening on port %d (not started here; local down will not stop it)\n", s.opts.Port)
		return nil
	}
	if portInUse(s.opts.Port) {
		return fmt.Errorf("port %d is in use by something that is not moto: set LOCAL_AWS_PORT to a free port", s.opts.Port)
	}
	return s.startMoto(ctx)
}

func (s *Stack) startMoto(ctx context.Context) error {
	bin := s.opts.MotoServer
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("moto_server"); err != nil {
			return fmt.Errorf("moto_server not found on PATH (install it with pip install 'moto[server]'): %w", err)
		}
	}
	ttl := max(s.opts.TTL.Round(time.Second), time.Second)
	start := time.Now()
	st, logPath, err := s.startDaemon(ctx, daemon{
		what: "moto_server", stateFile: motoStateFile, logFile: motoLogFile, port: s.opts.Port, ttl: ttl,
		argv:       []string{bin, "-H", "127.0.0.1", "-p", strconv.Itoa(s.opts.Port)},
		answers:    func(ctx context.Context) bool { return motoAnswers(ctx, s.opts.Port) },
		stop:       s.stopMoto,
		startLimit: motoStartLimit, tick: 100 * time.Millisecond,
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(s.opts.Log, "started moto_server on %s in %s (pid %d, stops by itself after %s; log %s)\n",
		s.Endpoint(), time.Since(start).Round(time.Millisecond), st.PID, ttl, logPath)
	return nil
}

// Down stops the local services and the moto that Up started and forgets the recorded caller
// environment. The Slack records stay, for a look after the fact, until the next Up. It is
// fine to call when nothing runs.
func (s *Stack) Down(ctx context.Context) error {
	if err := s.downServices(); err != nil {
		return fmt.Errorf("local down: %w", err)
	}
	st, err := s.readProcState(motoStateFile)
	if err != nil {
		return fmt.Errorf("local down: %w", err)
	}
	if err := s.removeState(callerEnvFile); err != nil {
		return fmt.Errorf("local down: %w", err)
	}
	if st == nil {
		fmt.Fprintln(s.opts.Log, "local stack not running")
		return nil
	}
	if err := s.stopMoto(st); err != nil {
		return fmt.Errorf("local down: %w", err)
	}
	fmt.Fprintf(s.opts.Log, "local stack stopped (pid %d, port %d)\n", st.PID, st.Port)
	return nil
}

// stopMoto ends the process group st names — if it is still ours — and removes the pid file.
func (s *Stack) stopMoto(st *motoState) error {
	// The pid may have been reused by an unrelated process since (after a reboot, say): only
	// signal a group whose leader is still our timeout+moto_server.
	if groupAlive(st.PID) && isOurMoto(st.PID) {
		if err := stopGroup(st.PID, stopGrace); err != nil {
			return fmt.Errorf("stop moto (pid %d): %w", st.PID, err)
		}
	}
	return s.removeState(motoStateFile)
}

// daemon is a process the stack keeps in the background: moto, or the local services.
type daemon struct {
	what      string // for messages: "moto_server", "the local services"
	stateFile string
	logFile   string
	dir       string
	port      int
	ttl       time.Duration
	// argv is the command; timeout(1) runs it, so it ends after ttl whatever happens here.
	argv       []string
	answers    func(context.Context) bool
	stop       func(*motoState) error
	startLimit time.Duration
	tick       time.Duration
}

// startDaemon starts d in a session of its own — it outlives this process, and Down stops
// timeout, the command and its children together by signalling the group — records its pid
// file, and waits until it answers. It returns the state and the log's path.
func (s *Stack) startDaemon(ctx context.Context, d daemon) (*motoState, string, error) {
	timeout, err := exec.LookPath("timeout")
	if err != nil {
		return nil, "", fmt.Errorf("timeout(1) from coreutils bounds the lifetime of %s and was not found: %w", d.what, err)
	}
	logPath := filepath.Join(s.opts.StateDir, d.logFile)
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, "", fmt.Errorf("log of %s: %w", d.what, err)
	}
	defer logf.Close()

	cmd := exec.Command(timeout, append([]string{fmt.Sprintf("%ds", int(d.ttl.Seconds()))}, d.argv...)...)
	cmd.Dir = d.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, "", fmt.Errorf("start %s: %w", d.what, err)
	}
	exited := make(chan struct{})
	// Reap it when it ends, or a test process that runs Up and Down would keep a zombie that
	// still looks alive.
	go func() { _ = cmd.Wait(); close(exited) }()

	st := &motoState{PID: cmd.Process.Pid, Port: d.port, StartedAt: start.UTC(), ExpiresAt: start.Add(d.ttl).UTC()}
	if err := s.writeProcState(d.stateFile, st); err != nil {
		_ = syscall.Kill(-st.PID, syscall.SIGKILL)
		return nil, "", err
	}
	deadline := time.NewTimer(d.startLimit)
	defer deadline.Stop()
	tick := time.NewTicker(d.tick)
	defer tick.Stop()
	for !d.answers(ctx) {
		select {
		case <-exited:
			_ = s.removeState(d.stateFile)
			return nil, "", fmt.Errorf("%s exited during start-up (%s); its log %s ends:\n%s", d.what, cmd.ProcessState, logPath, tail(logPath, 2000))
		case <-ctx.Done():
			_ = d.stop(st)
			return nil, "", ctx.Err()
		case <-deadline.C:
			_ = d.stop(st)
			return nil, "", fmt.Errorf("%s did not answer on port %d within %s; its log %s ends:\n%s", d.what, d.port, d.startLimit, logPath, tail(logPath, 2000))
		case <-tick.C:
		}
	}
	return st, logPath, nil
}

// stopGroup sends SIGTERM to the process group pgid, then SIGKILL if it is still there after
// grace, and waits until it is gone.
func stopGroup(pgid int, grace time.Duration) error {
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
	for groupAlive(pgid) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// groupAlive reports whether any process of group pgid exists.
func groupAlive(pgid int) bool {
	err := syscall.Kill(-pgid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// isOurMoto reports whether pid still runs moto_server under timeout, as startMoto left it.
func isOurMoto(pid int) bool { return cmdlineHas(pid, "moto_server") }

// cmdlineHas reports whether process pid's command line contains marker: whether a pid from a
// pid file is still the process the stack started, not one that reused the number. Where /proc
// cannot tell (not Linux), it trusts the pid file.
func cmdlineHas(pid int, marker string) bool {
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

// motoAnswers reports whether moto's own API answers on port. /moto-api/data.json is moto's,
// so an unrelated server on the port does not count.
// motoAnswersWithin gives a moto of ours that is alive time to answer: one busy with a large
// account or a loaded machine must be waited for, never mistaken for hung and replaced, which
// would throw its state away.
func motoAnswersWithin(ctx context.Context, port int, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for {
		if motoAnswers(ctx, port) {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// motoAnswers asks moto's own API for something small and moto-specific: the proxy
// passthrough settings (data.json, the obvious choice, returns every resource in the account
// and grows slow as the account does).
func motoAnswers(ctx context.Context, port int) bool {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/moto-api/proxy/passthrough", port), nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var v map[string]any
	return resp.StatusCode/100 == 2 && json.NewDecoder(resp.Body).Decode(&v) == nil
}

func portInUse(port int) bool {
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// recordCallerEnv merges Options.CallerEnv into the recorded caller environment: a second
// `local up` without SLACK_API_URL keeps the value the first one was given.
func (s *Stack) recordCallerEnv() error {
	if len(s.opts.CallerEnv) == 0 {
		return nil
	}
	env, err := s.recordedCallerEnv()
	if err != nil {
		return err
	}
	for k, v := range s.opts.CallerEnv {
		env[k] = v
	}
	data, err := json.Marshal(env)
	if err != nil {
		return err
	}
	// 0600: it may hold the Slack signing secret.
	return writeFileAtomic(filepath.Join(s.opts.StateDir, callerEnvFile), data, 0o600)
}

func (s *Stack) recordedCallerEnv() (map[string]string, error) {
	env := map[string]string{}
	data, err := os.ReadFile(filepath.Join(s.opts.StateDir, callerEnvFile))
	if errors.Is(err, fs.ErrNotExist) {
		return env, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read recorded caller environment: %w", err)
	}
	if err := json.Unmarshal(data, &env); err != nil {
		return nil, fmt.Errorf("read recorded caller environment %s: %w", callerEnvFile, err)
	}
	return env, nil
}

func (s *Stack) removeState(name string) error {
	err := os.Remove(filepath.Join(s.opts.StateDir, name))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// writeFileAtomic writes through a temporary file and a rename, so a concurrent reader never
// sees half a pid file.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
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

// tail returns at most the last n bytes of the file at path, for error messages.
func tail(path string, n int64) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	if int64(len(data)) > n {
		data = data[int64(len(data))-n:]
	}
	return string(data)
}
