// Package stack runs keywarden on one machine with no AWS account and no Docker: the embedded
// local stack of DESIGN.md ("Running without AWS"), behind `keywarden local …` and the make
// targets local-up, local-down, invoke, emit and demo. It ties the parts together — the pid
// files and background processes (daemon), the emulator (rie), Lambda's Invoke API
// (lambdaapi), event routing (routing), the resources (seed), the env-vars file (samenv) and
// the Slack stand-in (internal/slacktest) — and decides each function's environment.
//
// It is a developer tool: nothing under functions/ or internal/ may import it, and it must not
// import the functions (it builds and runs them as binaries).
//
// It is made of real components, not mocks. moto_server serves the AWS APIs on
// 127.0.0.1:<port> and keeps running in the background between commands, its lifetime bounded
// by timeout(1); the AWS Lambda Runtime Interface Emulator (the Go module named by go.mod's tool
// line) runs each function's real bootstrap binary, built for the host, for one invocation at a
// time — what `sam local invoke` does inside its container. Beside moto, Up starts the local
// services (`keywarden local serve`, see Serve) on 127.0.0.1:<services port>, bounded the same
// way: a Slack Web API stand-in that records what the functions tell Slack, and Lambda's Invoke
// API, so that one function's asynchronous invoke of another runs the real bootstrap as on AWS.
// Everything it starts or writes lives under the repository's .local/ folder: the pid files
// and logs, the emulator binary, the function and CLI builds, the recorded Slack calls
// (slack.jsonl) and the caller's Slack settings recorded by Up.
//
// Environment of an invocation, later entries win:
//
//  1. events/env.json "Parameters" (the `sam local invoke --env-vars` format);
//  2. events/env.json "<LogicalId>";
//  3. the local runtime: AWS_ENDPOINT_URL (the local moto), region us-east-1, test credentials,
//     AWS_LAMBDA_LOG_FORMAT=JSON, AWS_LAMBDA_FUNCTION_NAME, AWS_LAMBDA_FUNCTION_TIMEOUT;
//  4. the local services: SLACK_API_URL (the Slack stand-in, SlackAPIURL),
//     AWS_ENDPOINT_URL_LAMBDA (the local Invoke API, ServicesURL) and
//     REMEDIATE_FUNCTION=RemediateFunction. They win over env.json, whose SLACK_API_URL is
//     empty so that a deployment's default (slack.com) shows there, and lose to the caller's;
//  5. SLACK_API_URL, SLACK_SIGNING_SECRET, SLACK_CHANNEL and APPROVERS as the caller of Up had
//     them (Options.CallerEnv): a developer who exports SLACK_API_URL reaches that Slack
//     instead of the stand-in (set it to the empty string for slack.com itself);
//  6. the env argument of Invoke.
//
// Unlike sam local, variables from env.json are passed whether or not template.yaml declares
// them: this stack does not read the template.
package stack

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/keywarden/keywarden/cmd/keywarden/internal/seed"
)

// Region is the region of every local resource and function.
const Region = "us-east-1"

// DefaultPort is where moto listens unless LOCAL_AWS_PORT says otherwise; it is the port
// LocalStack made customary, so tools that assume it work unchanged.
const DefaultPort = 4566

// DefaultServicesPort is where the local services listen when neither LOCAL_SERVICES_PORT nor
// a non-default LOCAL_AWS_PORT says otherwise: the port after moto's.
const DefaultServicesPort = DefaultPort + 1

// DefaultTTL bounds a background moto's life, so a forgotten `local up` cannot run for ever.
const DefaultTTL = 4 * time.Hour

// DefaultFunctionTimeout matches Globals.Function.Timeout in template.yaml.
const DefaultFunctionTimeout = 30 * time.Second

// CallerEnvNames are the variables whose values in the caller's environment win over
// events/env.json: the Slack endpoint, secret and channel and the approvers differ per person
// running the stack and must never be committed.
var CallerEnvNames = []string{"SLACK_API_URL", "SLACK_SIGNING_SECRET", "SLACK_CHANNEL", "APPROVERS"}

// Functions returns the functions the stack can run: template.yaml logical ID → source folder,
// relative to the repository root. These names are a contract (issue 2).
func Functions() map[string]string {
	return map[string]string{
		"KeyEventFunction":    "functions/key-event",
		"RdsEventFunction":    "functions/rds-event",
		"SlackActionFunction": "functions/slack-action",
		"RemediateFunction":   "functions/remediate",
		"ReconcileFunction":   "functions/reconcile",
	}
}

// Options configures a Stack. Zero fields take the defaults documented on each.
type Options struct {
	// Dir is the repository root: where go.mod, events/ and functions/ are. Default: the nearest
	// folder holding go.mod, from the working directory up.
	Dir string
	// StateDir holds pid files, logs and builds. Default: Dir/.local.
	StateDir string
	// Port is moto's port on 127.0.0.1. Default: DefaultPort.
	Port int
	// ServicesPort is the local services' port on 127.0.0.1 (Serve). Default: Port+1, so
	// DefaultServicesPort with the default Port and a free-standing pair for any other.
	ServicesPort int
	// TTL bounds the background moto's and services' lifetimes. Default: DefaultTTL.
	TTL time.Duration
	// EnvFile is the SAM env-vars file. Default: Dir/events/env.json; a missing file is an
	// empty one.
	EnvFile string
	// Functions maps logical IDs to source folders relative to Dir. Default: Functions().
	Functions map[string]string
	// Resources are created by Up, in order, every time it runs. Nil means seed.Defaults
	// for the env file; pass an empty slice for none.
	Resources []seed.Resource
	// CallerEnv holds the caller's values of CallerEnvNames. Up records them so that later
	// invocations, from other processes, still see them.
	CallerEnv map[string]string
	// SlackUsergroups are the user groups the Slack stand-in answers usergroups.users.list
	// with: group ID → member user IDs. Default: none (every group is no_such_subteam).
	SlackUsergroups map[string][]string
	// FunctionTimeout is the emulator's per-invocation limit. Default: DefaultFunctionTimeout.
	FunctionTimeout time.Duration
	// MotoServer is the moto_server executable. Default: moto_server on PATH.
	MotoServer string
	// Log receives the stack's progress, moto's start-up failures and the emulator's and the
	// functions' logs. Default: os.Stderr.
	Log io.Writer
}

// OptionsFromEnv reads the stack's settings from the environment: LOCAL_AWS_PORT,
// LOCAL_SERVICES_PORT, KEYWARDEN_LOCAL_TTL (a Go duration such as 4h or 30m),
// LOCAL_SLACK_USERGROUPS ("S0ONCALL01=U0APPROVR1,U0APPROVR2;S0OTHER=U0…") and CallerEnvNames.
// Every malformed value is reported in the one error.
func OptionsFromEnv(lookup func(string) (string, bool)) (Options, error) {
	var opts Options
	var errs []error
	for _, port := range []struct {
		name string
		to   *int
	}{{"LOCAL_AWS_PORT", &opts.Port}, {"LOCAL_SERVICES_PORT", &opts.ServicesPort}} {
		if v, ok := lookup(port.name); ok && v != "" {
			p, err := strconv.Atoi(v)
			if err != nil || p < 1 || p > 65535 {
				errs = append(errs, fmt.Errorf("%s=%q: want a TCP port number", port.name, v))
			}
			*port.to = p
		}
	}
	if v, ok := lookup("LOCAL_SLACK_USERGROUPS"); ok && v != "" {
		groups, err := ParseUsergroups(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("LOCAL_SLACK_USERGROUPS: %w", err))
		}
		opts.SlackUsergroups = groups
	}
	if v, ok := lookup("KEYWARDEN_LOCAL_TTL"); ok && v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Second {
			errs = append(errs, fmt.Errorf("KEYWARDEN_LOCAL_TTL=%q: want a duration of at least 1s, such as 4h", v))
		}
		opts.TTL = d
	}
	opts.CallerEnv = CallerEnv(lookup)
	return opts, errors.Join(errs...)
}

// CallerEnv returns the values of CallerEnvNames that are set in the caller's environment. A
// variable set to the empty string counts: it is how a caller turns a setting off.
func CallerEnv(lookup func(string) (string, bool)) map[string]string {
	env := map[string]string{}
	for _, name := range CallerEnvNames {
		if v, ok := lookup(name); ok {
			env[name] = v
		}
	}
	return env
}

// Stack is the local stack of one repository checkout. Its methods are safe for concurrent use;
// several processes may share one StateDir, but only one should run Up or Down at a time.
type Stack struct {
	opts Options

	state stateDir
	build *builder
}

// New returns the stack described by opts, with defaults filled in. It starts nothing.
func New(opts Options) (*Stack, error) {
	if opts.Dir == "" {
		dir, err := findModuleRoot()
		if err != nil {
			return nil, err
		}
		opts.Dir = dir
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("repository root %s: %w", opts.Dir, err)
	}
	opts.Dir = dir
	if opts.StateDir == "" {
		opts.StateDir = filepath.Join(opts.Dir, ".local")
	}
	if opts.StateDir, err = filepath.Abs(opts.StateDir); err != nil {
		return nil, fmt.Errorf("state folder: %w", err)
	}
	if opts.Port == 0 {
		opts.Port = DefaultPort
	}
	if opts.ServicesPort == 0 {
		opts.ServicesPort = opts.Port + 1
		if opts.ServicesPort > 65535 {
			opts.ServicesPort = DefaultServicesPort
		}
	}
	if opts.TTL == 0 {
		opts.TTL = DefaultTTL
	}
	if opts.EnvFile == "" {
		opts.EnvFile = filepath.Join(opts.Dir, "events", "env.json")
	}
	if opts.Functions == nil {
		opts.Functions = Functions()
	}
	if opts.FunctionTimeout == 0 {
		opts.FunctionTimeout = DefaultFunctionTimeout
	}
	if opts.Log == nil {
		opts.Log = os.Stderr
	}
	return &Stack{opts: opts, state: stateDir(opts.StateDir), build: &builder{dir: opts.Dir, stateDir: opts.StateDir}}, nil
}

// Dir is the repository root the stack runs: where go.mod, events/ and functions/ are.
func (s *Stack) Dir() string { return s.opts.Dir }

// Endpoint is the URL of the local AWS APIs.
func (s *Stack) Endpoint() string {
	return fmt.Sprintf("http://127.0.0.1:%d", s.opts.Port)
}

// AWSConfig returns an SDK configuration that reaches the local AWS APIs with moto's test
// credentials. It reads no shared config or credentials files, so a developer's real AWS
// profile can never be used by mistake.
func (s *Stack) AWSConfig() aws.Config {
	return aws.Config{
		Region:       Region,
		Credentials:  credentials.NewStaticCredentialsProvider("test", "test", ""),
		BaseEndpoint: aws.String(s.Endpoint()),
	}
}

// findModuleRoot returns the nearest folder holding go.mod, from the working directory up.
func findModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find repository root: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("find repository root: no go.mod in the working directory or above it")
		}
		dir = parent
	}
}

// ParseUsergroups reads LOCAL_SLACK_USERGROUPS: "S0ONCALL01=U0APPROVR1,U0APPROVR2", several
// groups separated by ";" or spaces.
func ParseUsergroups(v string) (map[string][]string, error) {
	groups := map[string][]string{}
	var errs []error
	for _, entry := range strings.FieldsFunc(v, func(r rune) bool { return r == ';' || r == ' ' || r == '\n' }) {
		id, members, ok := strings.Cut(entry, "=")
		id = strings.TrimSpace(id)
		if !ok || id == "" {
			errs = append(errs, fmt.Errorf("%q: want GROUP=USER,USER", entry))
			continue
		}
		users := []string{}
		for _, u := range strings.Split(members, ",") {
			if u = strings.TrimSpace(u); u != "" {
				users = append(users, u)
			}
		}
		groups[id] = users
	}
	return groups, errors.Join(errs...)
}
