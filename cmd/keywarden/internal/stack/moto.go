package stack

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/keywarden/keywarden/cmd/keywarden/internal/daemon"
	"github.com/keywarden/keywarden/cmd/keywarden/internal/samenv"
	"github.com/keywarden/keywarden/cmd/keywarden/internal/seed"
)

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
	env, err := samenv.Read(s.opts.EnvFile)
	if err != nil {
		return fmt.Errorf("local up: %w", err)
	}
	if err := s.ensureMoto(ctx); err != nil {
		return fmt.Errorf("local up: %w", err)
	}
	if err := s.state.recordCallerEnv(s.opts.CallerEnv); err != nil {
		return fmt.Errorf("local up: %w", err)
	}
	if err := s.ensureServices(ctx, s.servicesDeadline()); err != nil {
		return fmt.Errorf("local up: %w", err)
	}
	resources := s.opts.Resources
	if resources == nil {
		resources = seed.Defaults(env, filepath.Join(s.opts.Dir, "template.yaml"))
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
	st, err := s.state.readProc(motoStateFile, s.opts.Log)
	if err != nil {
		return err
	}
	if st != nil {
		if daemon.GroupAlive(st.PID) && isOurMoto(st.PID) && motoAnswersWithin(ctx, st.Port, 20*time.Second) {
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
	if daemon.PortInUse(s.opts.Port) {
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
	logPath := s.state.path(motoLogFile)
	st, err := daemon.Start(ctx, daemon.Spec{
		What: "moto_server", StateFile: s.state.path(motoStateFile), LogFile: logPath, Port: s.opts.Port, TTL: ttl,
		Argv:       []string{bin, "-H", "127.0.0.1", "-p", strconv.Itoa(s.opts.Port)},
		Answers:    func(ctx context.Context) bool { return motoAnswers(ctx, s.opts.Port) },
		Stop:       s.stopMoto,
		StartLimit: motoStartLimit, Tick: 100 * time.Millisecond,
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
	st, err := s.state.readProc(motoStateFile, s.opts.Log)
	if err != nil {
		return fmt.Errorf("local down: %w", err)
	}
	if err := s.state.remove(callerEnvFile); err != nil {
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
func (s *Stack) stopMoto(st *daemon.State) error {
	// The pid may have been reused by an unrelated process since (after a reboot, say): only
	// signal a group whose leader is still our timeout+moto_server.
	if daemon.GroupAlive(st.PID) && isOurMoto(st.PID) {
		if err := daemon.StopGroup(st.PID, stopGrace); err != nil {
			return fmt.Errorf("stop moto (pid %d): %w", st.PID, err)
		}
	}
	return s.state.remove(motoStateFile)
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

// isOurMoto reports whether pid still runs moto_server under timeout, as startMoto left it.
func isOurMoto(pid int) bool { return daemon.CmdlineHas(pid, "moto_server") }
