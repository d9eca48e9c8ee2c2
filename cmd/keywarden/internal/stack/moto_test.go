package stack

import (
	"context"
	"encoding/json"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/keywarden/keywarden/cmd/keywarden/internal/daemon"
	"github.com/keywarden/keywarden/cmd/keywarden/internal/samenv"
	"github.com/keywarden/keywarden/cmd/keywarden/internal/seed"
	"github.com/keywarden/keywarden/internal/awstest"
)

// requireMoto is awstest.RequireMoto: these tests start moto through Up.
func requireMoto(t *testing.T) { t.Helper(); awstest.RequireMoto(t) }

func testPort(t *testing.T) int {
	t.Helper()
	p, err := daemon.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestUpDown starts a real moto through Up on a free port, finds it running on a second Up,
// creates the default resources, and stops it with Down.
func TestUpDown(t *testing.T) {
	requireMoto(t)
	var created atomic.Int32
	countCalls := func(context.Context, aws.Config) error { created.Add(1); return nil }
	port := testPort(t)
	env, err := samenv.Read("testdata/env.json")
	if err != nil {
		t.Fatal(err)
	}
	s, logs := newTestStack(t, Options{
		Port:      port,
		TTL:       10 * time.Minute,
		Resources: append(seed.Defaults(env, "../../../../template.yaml"), countCalls),
		CallerEnv: map[string]string{"SLACK_API_URL": "http://127.0.0.1:1/api/"},
	})
	ctx := context.Background()
	t.Cleanup(func() { _ = s.Down(context.Background()) })

	start := time.Now()
	if err := s.Up(ctx); err != nil {
		t.Fatalf("first Up: %v", err)
	}
	t.Logf("Up with a fresh moto: %s", time.Since(start))
	first := readState(t, s)
	if first.Port != port || !daemon.GroupAlive(first.PID) {
		t.Fatalf("after Up: state %+v, group alive %v; want port %d and a live group", first, daemon.GroupAlive(first.PID), port)
	}
	if !motoAnswers(ctx, port) {
		t.Fatalf("moto does not answer on port %d after Up", port)
	}
	// The table env.json names exists, created by incident.CreateTable.
	db := dynamodb.NewFromConfig(s.AWSConfig())
	if _, err := db.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String("localstack-test-incidents")}); err != nil {
		t.Errorf("DescribeTable after Up: %v", err)
	}

	start = time.Now()
	if err := s.Up(ctx); err != nil {
		t.Fatalf("second Up: %v", err)
	}
	t.Logf("Up with moto running: %s", time.Since(start))
	if second := readState(t, s); second.PID != first.PID {
		t.Errorf("second Up started moto again: pid %d, want %d", second.PID, first.PID)
	}
	if !strings.Contains(logs.String(), "already running") {
		t.Errorf("second Up did not say the stack was already running; logs:\n%s", logs)
	}
	if got := created.Load(); got != 2 {
		t.Errorf("resources ensured %d times by two Ups, want 2", got)
	}

	// A function invoked now reaches this moto, with the Slack URL the caller of Up gave.
	result, functionErr, err := s.Invoke(ctx, "EchoFunction", []byte(`{"env":["AWS_ENDPOINT_URL","SLACK_API_URL"]}`), nil)
	if err != nil || functionErr {
		t.Fatalf("Invoke: functionErr %v, err %v, result %s", functionErr, err, result)
	}
	var got echoResult
	if err := json.Unmarshal(result, &got); err != nil {
		t.Fatalf("decode %s: %v", result, err)
	}
	if got.Env["AWS_ENDPOINT_URL"] != s.Endpoint() || got.Env["SLACK_API_URL"] != "http://127.0.0.1:1/api/" {
		t.Errorf("function env %v, want AWS_ENDPOINT_URL %s and the recorded SLACK_API_URL", got.Env, s.Endpoint())
	}

	// Another Stack over the same state, as another `keywarden local …` process sees it, but
	// asked for another port: refused rather than silently using the wrong one.
	other, _ := newTestStack(t, Options{StateDir: s.opts.StateDir, Port: testPort(t), Resources: []seed.Resource{}})
	if err := other.Up(ctx); err == nil || !strings.Contains(err.Error(), "already runs on port") {
		t.Errorf("Up on another port while running: got %v, want an 'already runs on port' error", err)
	}

	if err := s.Down(ctx); err != nil {
		t.Fatalf("Down: %v", err)
	}
	if daemon.GroupAlive(first.PID) {
		t.Errorf("moto's process group %d still alive after Down", first.PID)
	}
	if daemon.PortInUse(port) {
		t.Errorf("port %d still in use after Down", port)
	}
	for _, name := range []string{motoStateFile, callerEnvFile} {
		if _, err := os.Stat(filepath.Join(s.opts.StateDir, name)); !os.IsNotExist(err) {
			t.Errorf("%s still there after Down (stat: %v)", name, err)
		}
	}
	if err := s.Down(ctx); err != nil {
		t.Errorf("Down with nothing running: %v", err)
	}
}

// TestUpStalePIDFile checks that a pid file naming a process that is not our moto — the pid
// reused after a reboot — is neither trusted nor signalled.
func TestUpStalePIDFile(t *testing.T) {
	requireMoto(t)
	s, _ := newTestStack(t, Options{Port: testPort(t), TTL: 10 * time.Minute, Resources: []seed.Resource{}})
	t.Cleanup(func() { _ = s.Down(context.Background()) })

	stranger := exec.Command("sleep", "60")
	stranger.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := stranger.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stranger.Process.Kill(); _ = stranger.Wait() })
	if err := os.MkdirAll(s.opts.StateDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := s.state.writeProc(motoStateFile, &daemon.State{PID: stranger.Process.Pid, Port: s.opts.Port}); err != nil {
		t.Fatal(err)
	}

	if err := s.Up(context.Background()); err != nil {
		t.Fatalf("Up: %v", err)
	}
	if st := readState(t, s); st.PID == stranger.Process.Pid {
		t.Errorf("Up trusted the stale pid file")
	}
	if !daemon.GroupAlive(stranger.Process.Pid) {
		t.Errorf("Up signalled a process that was not its moto")
	}
}

// TestUpUsesForeignMoto checks that a moto Up did not start is used, and left alone by Down.
func TestUpUsesForeignMoto(t *testing.T) {
	requireMoto(t)
	endpoint := awstest.Moto(t)
	u, err := url.Parse(endpoint)
	if err != nil {
		t.Fatal(err)
	}
	_, portText, _ := net.SplitHostPort(u.Host)
	port, _ := strconv.Atoi(portText)
	s, logs := newTestStack(t, Options{Port: port, Resources: []seed.Resource{}})
	ctx := context.Background()
	if err := s.Up(ctx); err != nil {
		t.Fatalf("Up: %v", err)
	}
	if !strings.Contains(logs.String(), "using the moto already listening") {
		t.Errorf("Up did not say it used the running moto; logs:\n%s", logs)
	}
	if err := s.Down(ctx); err != nil {
		t.Fatalf("Down: %v", err)
	}
	if !motoAnswers(ctx, port) {
		t.Errorf("Down stopped a moto it did not start")
	}
}

func readState(t *testing.T, s *Stack) daemon.State {
	t.Helper()
	st, err := s.state.readProc(motoStateFile, s.opts.Log)
	if err != nil || st == nil {
		t.Fatalf("moto state: %v, %v; want a recorded moto", st, err)
	}
	return *st
}
