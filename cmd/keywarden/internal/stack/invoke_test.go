package stack

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/keywarden/keywarden/cmd/keywarden/internal/rie"
	"github.com/keywarden/keywarden/cmd/keywarden/internal/samenv"
	"github.com/keywarden/keywarden/cmd/keywarden/internal/seed"
	"github.com/keywarden/keywarden/internal/awstest"
)

func TestMain(m *testing.M) { awstest.Main(m) }

// syncBuffer collects the logs the emulator writes from its own goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// newTestStack returns a stack over this repository whose functions are the test-only echo
// Lambda, with its state in a fresh folder, for a test that runs functions under the emulator:
// it skips or fails as awstest.Require says when the emulator is not available (and under
// -short). Nothing is started.
func newTestStack(t *testing.T, opts Options) (*Stack, *syncBuffer) {
	t.Helper()
	s, logs := newStack(t, opts)
	requireEmulator(t, s)
	return s, logs
}

// requireEmulator skips or fails t as awstest.Require says when s cannot build its emulator.
func requireEmulator(t *testing.T, s *Stack) {
	t.Helper()
	awstest.Require(t, rie.Name, func() error {
		_, err := s.Emulator(context.Background())
		return err
	})
}

// newStack is newTestStack for a test that runs no function.
func newStack(t *testing.T, opts Options) (*Stack, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	opts.Dir = "../../../.."
	if opts.StateDir == "" {
		opts.StateDir = t.TempDir()
	}
	if opts.ServicesPort == 0 {
		// Port+1, the default, may be taken by another test's server: pick a free one.
		opts.ServicesPort = testPort(t)
	}
	opts.EnvFile = "testdata/env.json"
	opts.Functions = map[string]string{
		"EchoFunction":    "cmd/keywarden/internal/stack/testdata/echo",
		"OtherFunction":   "cmd/keywarden/internal/stack/testdata/echo",
		"MissingFunction": "cmd/keywarden/internal/stack/testdata/no-such-function",
	}
	opts.Log = logs
	s, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() || testing.Verbose() {
			t.Logf("stack logs:\n%s", logs)
		}
	})
	return s, logs
}

type echoResult struct {
	Event json.RawMessage   `json:"event"`
	Env   map[string]string `json:"env"`
}

// TestInvoke runs the echo Lambda's real bootstrap under the real emulator.
func TestInvoke(t *testing.T) {
	// Must not reach the function: the emulator gets a clean environment, as in Lambda.
	t.Setenv("KEYWARDEN_TEST_LEAK", "leaked")
	s, logs := newTestStack(t, Options{Port: 45999, FunctionTimeout: 5 * time.Second, CallerEnv: map[string]string{"FROM_RECORDED": "recorded", "FROM_CALLER": "recorded"}})
	// What `local up` does with the caller's SLACK_* settings, without starting moto.
	if err := s.state.recordCallerEnv(s.opts.CallerEnv); err != nil {
		t.Fatalf("recordCallerEnv: %v", err)
	}
	ctx := context.Background()

	// The first invocation builds the emulator and the function; the rest run in parallel.
	start := time.Now()
	if _, _, err := s.Invoke(ctx, "EchoFunction", []byte(`{}`), nil); err != nil {
		t.Fatalf("first Invoke: %v", err)
	}
	t.Logf("first invoke (builds emulator and function): %s", time.Since(start))
	start = time.Now()
	if _, _, err := s.Invoke(ctx, "EchoFunction", []byte(`{}`), nil); err != nil {
		t.Fatalf("second Invoke: %v", err)
	}
	t.Logf("second invoke (build cached): %s", time.Since(start))

	t.Run("result and environment precedence", func(t *testing.T) {
		t.Parallel()
		event := `{"env":["FROM_GLOBAL","FROM_FUNCTION","FROM_RECORDED","FROM_CALLER","MEMORY","ENABLED",` +
			`"AWS_ENDPOINT_URL","AWS_REGION","AWS_DEFAULT_REGION","AWS_ACCESS_KEY_ID","AWS_SECRET_ACCESS_KEY",` +
			`"AWS_LAMBDA_LOG_FORMAT","AWS_LAMBDA_FUNCTION_NAME","KEYWARDEN_TEST_LEAK"]}`
		result, functionErr, err := s.Invoke(ctx, "EchoFunction", []byte(event), map[string]string{"FROM_CALLER": "caller"})
		if err != nil || functionErr {
			t.Fatalf("Invoke: functionErr %v, err %v, result %s", functionErr, err, result)
		}
		var got echoResult
		if err := json.Unmarshal(result, &got); err != nil {
			t.Fatalf("result is not the echo's JSON: %v: %s", err, result)
		}
		if !json.Valid(got.Event) || !strings.Contains(string(got.Event), "FROM_GLOBAL") {
			t.Errorf("event echoed as %s, want the event sent", got.Event)
		}
		want := map[string]string{
			"FROM_GLOBAL":              "global",
			"FROM_FUNCTION":            "function",
			"FROM_RECORDED":            "recorded",
			"FROM_CALLER":              "caller",
			"MEMORY":                   "128",
			"ENABLED":                  "true",
			"AWS_ENDPOINT_URL":         "http://127.0.0.1:45999",
			"AWS_REGION":               "us-east-1",
			"AWS_DEFAULT_REGION":       "us-east-1",
			"AWS_ACCESS_KEY_ID":        "test",
			"AWS_SECRET_ACCESS_KEY":    "test",
			"AWS_LAMBDA_LOG_FORMAT":    "JSON",
			"AWS_LAMBDA_FUNCTION_NAME": "EchoFunction",
		}
		if diff := cmp.Diff(want, got.Env); diff != "" {
			t.Errorf("function environment (-want +got):\n%s", diff)
		}
	})

	t.Run("another function's block does not apply", func(t *testing.T) {
		t.Parallel()
		result, _, err := s.Invoke(ctx, "OtherFunction", []byte(`{"env":["FROM_GLOBAL","FROM_FUNCTION"]}`), nil)
		if err != nil {
			t.Fatalf("Invoke: %v", err)
		}
		var got echoResult
		if err := json.Unmarshal(result, &got); err != nil {
			t.Fatalf("decode %s: %v", result, err)
		}
		want := map[string]string{"FROM_GLOBAL": "other function only", "FROM_FUNCTION": "global"}
		if diff := cmp.Diff(want, got.Env); diff != "" {
			t.Errorf("function environment (-want +got):\n%s", diff)
		}
	})

	failures := []struct {
		name, event   string
		env           map[string]string
		wantType      string
		wantMsgSubstr string
	}{
		{name: "returned error", event: `{"fail":"key is gone"}`, wantType: "errorString", wantMsgSubstr: "key is gone"},
		{name: "undecodable event", event: `[1,2]`, wantMsgSubstr: "decode event"},
		{name: "panic", event: `{"panic":"nil map"}`, wantMsgSubstr: "nil map"},
		{name: "crash", event: `{"exit":3}`, wantMsgSubstr: ""},
		{name: "timeout", event: `{"sleep_ms":2500}`, env: map[string]string{"AWS_LAMBDA_FUNCTION_TIMEOUT": "1"},
			wantType: "Sandbox.Timedout", wantMsgSubstr: "Task timed out after 1.00 seconds"},
	}
	for _, tc := range failures {
		t.Run("function error/"+tc.name, func(t *testing.T) {
			t.Parallel()
			result, functionErr, err := s.Invoke(ctx, "EchoFunction", []byte(tc.event), tc.env)
			if err != nil {
				t.Fatalf("Invoke: %v", err)
			}
			if !functionErr {
				t.Fatalf("functionErr false, want true; result %s", result)
			}
			var got struct {
				ErrorType    string `json:"errorType"`
				ErrorMessage string `json:"errorMessage"`
			}
			if err := json.Unmarshal(result, &got); err != nil {
				t.Fatalf("error result is not JSON: %v: %s", err, result)
			}
			if got.ErrorType == "" || (tc.wantType != "" && got.ErrorType != tc.wantType) {
				t.Errorf("errorType %q, want %q (non-empty)", got.ErrorType, tc.wantType)
			}
			if !strings.Contains(got.ErrorMessage, tc.wantMsgSubstr) {
				t.Errorf("errorMessage %q, want it to contain %q", got.ErrorMessage, tc.wantMsgSubstr)
			}
		})
	}

	t.Run("bad function", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct{ id, want string }{
			{"NoSuchFunction", `unknown function "NoSuchFunction": want one of EchoFunction, MissingFunction, OtherFunction`},
			{"MissingFunction", "does not exist"},
		} {
			_, _, err := s.Invoke(ctx, tc.id, []byte(`{}`), nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Invoke(%s): got error %v, want one containing %q", tc.id, err, tc.want)
			}
		}
	})

	t.Run("logs go to the log, not the result", func(t *testing.T) {
		t.Parallel()
		result, _, err := s.Invoke(ctx, "EchoFunction", []byte(`{"env":[]}`), nil)
		if err != nil {
			t.Fatalf("Invoke: %v", err)
		}
		if strings.Contains(string(result), "echo invoked") {
			t.Errorf("result %s carries the function's log line", result)
		}
		for _, want := range []string{`"msg":"echo invoked"`, "START RequestId:", "REPORT RequestId:"} {
			if !strings.Contains(logs.String(), want) {
				t.Errorf("logs lack %q", want)
			}
		}
	})
}

// TestRepositoryEnvFile keeps the repository's events/env.json present, loadable and complete.
func TestRepositoryEnvFile(t *testing.T) {
	// ReadEnvFile takes a missing file for an empty one; here it must exist.
	if _, err := os.Stat("../../../../events/env.json"); err != nil {
		t.Fatalf("events/env.json: %v", err)
	}
	env, err := samenv.Read("../../../../events/env.json")
	if err != nil {
		t.Fatalf("events/env.json: %v", err)
	}
	for id := range Functions() {
		if _, ok := env[id]; !ok {
			t.Errorf("events/env.json has no block for %s", id)
		}
	}
	if got := env.For("KeyEventFunction")["INCIDENTS_TABLE"]; got != seed.DefaultIncidentsTable {
		t.Errorf("KeyEventFunction's INCIDENTS_TABLE = %q, want %q", got, seed.DefaultIncidentsTable)
	}
}

func TestOptionsFromEnv(t *testing.T) {
	lookup := func(env map[string]string) func(string) (string, bool) {
		return func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	}
	opts, err := OptionsFromEnv(lookup(map[string]string{
		"LOCAL_AWS_PORT": "4570", "KEYWARDEN_LOCAL_TTL": "30m", "SLACK_API_URL": "http://127.0.0.1:1/api/", "APPROVERS": "", "HOME": "/root",
	}))
	if err != nil {
		t.Fatalf("OptionsFromEnv: %v", err)
	}
	if opts.Port != 4570 || opts.TTL != 30*time.Minute {
		t.Errorf("port %d, TTL %s; want 4570, 30m", opts.Port, opts.TTL)
	}
	if diff := cmp.Diff(map[string]string{"SLACK_API_URL": "http://127.0.0.1:1/api/", "APPROVERS": ""}, opts.CallerEnv); diff != "" {
		t.Errorf("CallerEnv (-want +got):\n%s", diff)
	}

	_, err = OptionsFromEnv(lookup(map[string]string{"LOCAL_AWS_PORT": "http", "KEYWARDEN_LOCAL_TTL": "4 hours"}))
	if err == nil || !strings.Contains(err.Error(), "LOCAL_AWS_PORT") || !strings.Contains(err.Error(), "KEYWARDEN_LOCAL_TTL") {
		t.Errorf("got error %v, want one naming both variables", err)
	}
}
