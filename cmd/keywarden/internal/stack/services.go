package stack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/keywarden/keywarden/cmd/keywarden/internal/lambdaapi"
	"github.com/keywarden/keywarden/internal/slacktest"
)

// localAccountID is the account of every local resource: moto's default.
const localAccountID = "123456789012"

// RemediateFunctionID is the logical ID SlackActionFunction hands remediations to; the stack
// gives it as REMEDIATE_FUNCTION, which the local Invoke API resolves.
const RemediateFunctionID = "RemediateFunction"

// Paths of the local services, all on one port.
const (
	// SlackAPIPath is the Slack Web API stand-in's base path: slack-go's OptionAPIURL is
	// ServicesURL()+SlackAPIPath and the method name follows.
	SlackAPIPath = "/slack/api/"
	// SlackRecordedPath answers GET with every Slack call recorded so far, as a JSON array.
	SlackRecordedPath = "/slack/_recorded"
	// HealthPath answers GET with which stack the services belong to; Up uses it to tell its
	// own services from another checkout's.
	HealthPath = "/_keywarden/health"
)

// ServicesURL is the base URL of the local services; AWS_ENDPOINT_URL_LAMBDA of every function.
func (s *Stack) ServicesURL() string {
	return fmt.Sprintf("http://127.0.0.1:%d", s.opts.ServicesPort)
}

// SlackAPIURL is the Slack stand-in's Web API URL, for slack.OptionAPIURL: what SLACK_API_URL
// defaults to for every function.
func (s *Stack) SlackAPIURL() string { return s.ServicesURL() + SlackAPIPath }

// SlackRecordFile is the file, in the state folder, where the Slack stand-in appends every call
// it answers, one JSON slacktest.Record a line.
const SlackRecordFile = "slack.jsonl"

// SlackRecordPath is the file the Slack stand-in of this stack appends its records to.
func (s *Stack) SlackRecordPath() string { return filepath.Join(s.opts.StateDir, SlackRecordFile) }

// SlackRecords returns what the Slack stand-in has recorded since the local services last
// started, read from SlackRecordPath: it works from any process, and after Down.
func (s *Stack) SlackRecords() ([]slacktest.Record, error) {
	return slacktest.ReadRecords(s.SlackRecordPath())
}

// servicesEnv is level 4 of the package comment's environment.
func (s *Stack) servicesEnv() map[string]string {
	return map[string]string{
		"SLACK_API_URL":           s.SlackAPIURL(),
		"AWS_ENDPOINT_URL_LAMBDA": s.ServicesURL(),
		"REMEDIATE_FUNCTION":      RemediateFunctionID,
	}
}

// servicesHealth is HealthPath's answer.
type servicesHealth struct {
	Service  string `json:"service"`
	PID      int    `json:"pid"`
	StateDir string `json:"state_dir"`
}

const healthService = "keywarden-local-services"

// Serve runs the local services on l until ctx ends: the Slack Web API stand-in under
// SlackAPIPath and Lambda's Invoke API (POST /2015-03-31/functions/{FunctionName}/invocations)
// for the stack's functions. It is what `keywarden local serve` runs, in the foreground or
// started by Up; tests run it in-process. When ctx ends Serve stops accepting, cancels the
// invocations still running (their emulators stop with them) and returns once they have
// ended; it returns nil then, and an error only when serving failed. The Slack stand-in's
// records go to the stack's SlackRecordPath, truncated when Serve starts (a new services
// process is a new Slack workspace, as a new moto is a new AWS account); its log lines, one
// JSON line per Slack call and per invocation, go to the stack's Options.Log. Asynchronous
// invocations are bounded by lambdaapi's defaults.
func Serve(ctx context.Context, l net.Listener, stack *Stack) error {
	recordFile := stack.SlackRecordPath()
	log := slog.New(slog.NewJSONHandler(stack.opts.Log, nil))
	if err := os.MkdirAll(filepath.Dir(recordFile), 0o755); err != nil {
		return fmt.Errorf("local services: %w", err)
	}
	// A new services process is a new Slack workspace, as a new moto is a new AWS account.
	records, err := os.OpenFile(recordFile, os.O_CREATE|os.O_WRONLY|os.O_TRUNC|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("local services: slack record file: %w", err)
	}
	defer records.Close()
	slack := &slacktest.Slack{
		Groups: stack.opts.SlackUsergroups, KnownMessagesOnly: true, RecordTo: records,
		Log: log.With("service", "slack"),
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	invoke := lambdaapi.New(ctx, lambdaapi.Config{
		Runner: stack, Functions: slices.Sorted(maps.Keys(stack.opts.Functions)),
		Region: Region, AccountID: localAccountID,
		Log: log.With("service", "lambda"),
	})

	mux := http.NewServeMux()
	mux.Handle(SlackAPIPath+"{method}", slack)
	mux.HandleFunc("GET "+SlackRecordedPath, slack.ServeRecords)
	mux.Handle("POST /2015-03-31/functions/{function}/invocations", invoke)
	mux.HandleFunc("GET "+HealthPath, func(w http.ResponseWriter, _ *http.Request) {
		respondJSON(w, http.StatusOK, servicesHealth{Service: healthService, PID: os.Getpid(), StateDir: stack.opts.StateDir})
	})
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute,
		// Requests end with ctx: a synchronous invocation in flight is cancelled, not waited
		// for, when the services stop.
		BaseContext: func(net.Listener) context.Context { return ctx },
		ErrorLog:    slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	log.Info("local services listening", "addr", l.Addr().String(),
		"slack_api_url", "http://"+l.Addr().String()+SlackAPIPath, "slack_records", recordFile,
		"slack_usergroups", len(stack.opts.SlackUsergroups))

	select {
	case err = <-served:
	case <-ctx.Done():
	}
	cancel()
	shutdownCtx, done := context.WithTimeout(context.Background(), stopGrace)
	defer done()
	_ = srv.Shutdown(shutdownCtx)
	invoke.Wait()
	log.Info("local services stopped")
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("local services: %w", err)
	}
	return nil
}

// ServicesAddr is the local services' listening address, 127.0.0.1:<Options.ServicesPort>.
func (s *Stack) ServicesAddr() string {
	return fmt.Sprintf("127.0.0.1:%d", s.opts.ServicesPort)
}

func respondJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
