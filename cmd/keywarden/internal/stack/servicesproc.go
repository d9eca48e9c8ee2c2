package stack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/keywarden/keywarden/cmd/keywarden/internal/daemon"
	"github.com/keywarden/keywarden/cmd/keywarden/internal/seed"
)

const (
	servicesStateFile  = "services.json"
	servicesLogFile    = "services.log"
	servicesConfigFile = "services-config.json"
	servicesStartLimit = 30 * time.Second
)

// servicesConfig is what Up hands the background `keywarden local serve --config <file>`: the
// options of the stack that started it, so the services run the same functions with the same
// env file, state folder and ports, whatever the environment of the process that ran Up.
type servicesConfig struct {
	Dir             string              `json:"dir"`
	StateDir        string              `json:"state_dir"`
	Port            int                 `json:"port"`
	ServicesPort    int                 `json:"services_port"`
	TTL             time.Duration       `json:"ttl"`
	EnvFile         string              `json:"env_file"`
	Functions       map[string]string   `json:"functions"`
	FunctionTimeout time.Duration       `json:"function_timeout"`
	SlackUsergroups map[string][]string `json:"slack_usergroups,omitempty"`
}

// ReadServicesConfig reads the options Up recorded for the local services process it starts.
// Log is left for the caller to set.
func ReadServicesConfig(path string) (Options, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Options{}, fmt.Errorf("read local services configuration: %w", err)
	}
	var c servicesConfig
	if err := json.Unmarshal(data, &c); err != nil {
		return Options{}, fmt.Errorf("read local services configuration %s: %w", path, err)
	}
	return Options{
		Dir: c.Dir, StateDir: c.StateDir, Port: c.Port, ServicesPort: c.ServicesPort, TTL: c.TTL,
		EnvFile: c.EnvFile, Functions: c.Functions, FunctionTimeout: c.FunctionTimeout,
		SlackUsergroups: c.SlackUsergroups, Resources: []seed.Resource{},
	}, nil
}

// ensureServices reuses the local services an earlier Up started, if they still answer, or
// starts them: `keywarden local serve` built from this checkout, in a session of its own,
// bounded by timeout(1) to stop at until.
func (s *Stack) ensureServices(ctx context.Context, until time.Time) error {
	if s.opts.ServicesPort == s.opts.Port {
		return fmt.Errorf("the local services and moto cannot share port %d: set LOCAL_SERVICES_PORT to another", s.opts.Port)
	}
	st, err := s.state.readProc(servicesStateFile, s.opts.Log)
	if err != nil {
		return err
	}
	if st != nil {
		if daemon.GroupAlive(st.PID) && isOurServices(st.PID) && s.servicesAnswer(ctx, st.Port) == nil {
			if st.Port != s.opts.ServicesPort {
				return fmt.Errorf("the local services already run on port %d, not %d: run `keywarden local down` first", st.Port, s.opts.ServicesPort)
			}
			fmt.Fprintf(s.opts.Log, "local services already running (pid %d, port %d, until %s)\n",
				st.PID, st.Port, st.ExpiresAt.Local().Format(time.TimeOnly))
			return nil
		}
		if err := s.stopServices(st); err != nil {
			return err
		}
	}
	switch err := s.servicesAnswer(ctx, s.opts.ServicesPort); {
	case err == nil:
		// A `keywarden local serve` run by hand over this same state folder.
		fmt.Fprintf(s.opts.Log, "using the local services already listening on port %d (not started here; local down will not stop them)\n", s.opts.ServicesPort)
		return nil
	case errors.Is(err, errForeignServices):
		return fmt.Errorf("port %d: %w: set LOCAL_SERVICES_PORT to a free port", s.opts.ServicesPort, err)
	case daemon.PortInUse(s.opts.ServicesPort):
		return fmt.Errorf("port %d is in use by something that is not keywarden's local services: set LOCAL_SERVICES_PORT to a free port", s.opts.ServicesPort)
	}
	return s.startServices(ctx, until)
}

func (s *Stack) startServices(ctx context.Context, until time.Time) error {
	// The CLI is built rather than re-executed: `go run` (make local-up) and test binaries
	// are not a keywarden that outlives them.
	bin, err := s.build.cli(ctx)
	if err != nil {
		return err
	}
	// The services run in the repository root: a relative env file is relative to here.
	envFile, err := filepath.Abs(s.opts.EnvFile)
	if err != nil {
		return fmt.Errorf("env file: %w", err)
	}
	// Computed after the build, so the services stop with the moto Up started, not later.
	ttl := max(time.Until(until).Truncate(time.Second), time.Second)
	configPath := filepath.Join(s.opts.StateDir, servicesConfigFile)
	config, err := json.Marshal(servicesConfig{
		Dir: s.opts.Dir, StateDir: s.opts.StateDir, Port: s.opts.Port, ServicesPort: s.opts.ServicesPort,
		TTL: ttl, EnvFile: envFile, Functions: s.opts.Functions, FunctionTimeout: s.opts.FunctionTimeout,
		SlackUsergroups: s.opts.SlackUsergroups,
	})
	if err != nil {
		return err
	}
	if err := daemon.WriteFileAtomic(configPath, config, 0o644); err != nil {
		return fmt.Errorf("local services configuration: %w", err)
	}
	start := time.Now()
	logPath := s.state.path(servicesLogFile)
	st, err := daemon.Start(ctx, daemon.Spec{
		What: "the local services", StateFile: s.state.path(servicesStateFile), LogFile: logPath, Dir: s.opts.Dir,
		Port: s.opts.ServicesPort, TTL: ttl,
		Argv:       []string{bin, "local", "serve", "--config", configPath},
		Answers:    func(ctx context.Context) bool { return s.servicesAnswer(ctx, s.opts.ServicesPort) == nil },
		Stop:       s.stopServices,
		StartLimit: servicesStartLimit, Tick: 50 * time.Millisecond,
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(s.opts.Log, "started the local services (Slack stand-in %s, Lambda Invoke API %s) in %s (pid %d, stop by themselves after %s; log %s)\n",
		s.SlackAPIURL(), s.ServicesURL(), time.Since(start).Round(time.Millisecond), st.PID, ttl, logPath)
	return nil
}

// downServices stops the services Up started, if any.
func (s *Stack) downServices() error {
	st, err := s.state.readProc(servicesStateFile, s.opts.Log)
	if err != nil || st == nil {
		return err
	}
	if err := s.stopServices(st); err != nil {
		return err
	}
	fmt.Fprintf(s.opts.Log, "local services stopped (pid %d, port %d)\n", st.PID, st.Port)
	return nil
}

// stopServices ends the process group st names — if it is still our services — and removes
// the pid file and the configuration.
func (s *Stack) stopServices(st *daemon.State) error {
	if daemon.GroupAlive(st.PID) && isOurServices(st.PID) {
		if err := daemon.StopGroup(st.PID, stopGrace); err != nil {
			return fmt.Errorf("stop the local services (pid %d): %w", st.PID, err)
		}
	}
	if err := s.state.remove(servicesConfigFile); err != nil {
		return err
	}
	return s.state.remove(servicesStateFile)
}

// isOurServices reports whether pid still runs `keywarden local serve` under timeout, as
// startServices left it.
func isOurServices(pid int) bool { return daemon.CmdlineHas(pid, "local\x00serve\x00") }

// errForeignServices says that the services on a port belong to another state folder.
var errForeignServices = errors.New("the local services of another stack listen there")

// servicesAnswer returns nil when the local services of this stack's state folder answer on
// port, errForeignServices when another stack's do, and another error when nothing does.
func (s *Stack) servicesAnswer(ctx context.Context, port int) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d%s", port, HealthPath), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var h servicesHealth
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&h) != nil || h.Service != healthService {
		return fmt.Errorf("port %d: not keywarden's local services", port)
	}
	if h.StateDir != s.opts.StateDir {
		return fmt.Errorf("%w (state folder %s)", errForeignServices, h.StateDir)
	}
	return nil
}

// servicesDeadline is when new services must stop: with the moto this stack started, or
// Options.TTL from now beside a moto started elsewhere.
func (s *Stack) servicesDeadline() time.Time {
	st, err := s.state.readProc(motoStateFile, s.opts.Log)
	if err != nil || st == nil {
		return time.Now().Add(s.opts.TTL)
	}
	return st.ExpiresAt
}
