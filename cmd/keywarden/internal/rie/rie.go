package localstack

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// rieTool is the emulator's main package, pinned by go.mod's tool line.
const rieTool = "github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie"

// invokePath is the emulator's stand-in for Lambda's Invoke API. Every function is "function"
// there, whatever its name.
const invokePath = "/2015-03-31/functions/function/invocations"

// maxResult bounds what is read back; Lambda's own limit for a synchronous response is 6 MB.
const maxResult = 16 << 20

// Invoke runs one invocation of the function logicalID with event as its payload, the way
// `sam local invoke` does: the function's real bootstrap, built for this machine, under the
// Runtime Interface Emulator, against the local AWS APIs. env wins over every other source of
// the function's environment (see the package comment). Logs of the emulator and the function
// go to Options.Log.
//
// result is the function's response. functionErr reports that the function failed — returned
// an error, panicked, crashed or timed out — and result then holds Lambda's error object
// ({"errorType": …, "errorMessage": …}). err reports that the invocation could not be made.
//
// Invoke does not start the local AWS APIs: call Up first when the function needs them.
func (s *Stack) Invoke(ctx context.Context, logicalID string, event []byte, env map[string]string) (result []byte, functionErr bool, err error) {
	bootstrap, err := s.Build(ctx, logicalID)
	if err != nil {
		return nil, false, err
	}
	rie, err := s.buildRIE(ctx)
	if err != nil {
		return nil, false, err
	}
	fnEnv, err := s.functionEnv(logicalID, env)
	if err != nil {
		return nil, false, fmt.Errorf("invoke %s: %w", logicalID, err)
	}
	result, functionErr, err = s.runEmulator(ctx, rie, bootstrap, event, fnEnv)
	if err != nil {
		return nil, false, fmt.Errorf("invoke %s: %w", logicalID, err)
	}
	return result, functionErr, nil
}

// Build compiles the function logicalID for this machine — the host's GOOS and GOARCH, unlike
// the arm64 Linux build SAM deploys — with -tags lambda.norpc as in production, and returns
// the path of its bootstrap. The go command's build cache makes an unchanged function cost a
// check of well under a second when the bootstrap is already in place (the go command then
// neither compiles nor links), so there is no cache of its own here.
func (s *Stack) Build(ctx context.Context, logicalID string) (string, error) {
	folder, err := s.Function(logicalID)
	if err != nil {
		return "", err
	}
	out := filepath.Join(s.opts.StateDir, "build", logicalID, "bootstrap")
	if err := s.goBuild(ctx, out, "./"+filepath.ToSlash(folder), "-tags", "lambda.norpc"); err != nil {
		return "", fmt.Errorf("build %s: %w", logicalID, err)
	}
	return out, nil
}

// Function returns the source folder of logicalID, relative to the repository root, or an
// error saying why it cannot be run: an unknown logical ID, or a folder not written yet.
func (s *Stack) Function(logicalID string) (string, error) {
	folder, ok := s.opts.Functions[logicalID]
	if !ok {
		return "", fmt.Errorf("unknown function %q: want one of %s", logicalID, strings.Join(slices.Sorted(maps.Keys(s.opts.Functions)), ", "))
	}
	if _, err := os.Stat(filepath.Join(s.opts.Dir, folder)); errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("function %s: its source folder %s does not exist (not written yet?)", logicalID, folder)
	}
	return folder, nil
}

// buildRIE makes .local/bin/aws-lambda-rie the emulator go.mod pins, once per Stack. `go tool
// -n` builds a module tool into the Go build cache, shared by every checkout and test run, and
// prints its path without running it: the emulator is linked once per version, not once per
// state folder (a fresh link costs several seconds). The link in .local/bin is a symlink to it.
func (s *Stack) buildRIE(ctx context.Context) (string, error) {
	s.buildMu.Lock()
	defer s.buildMu.Unlock()
	out := filepath.Join(s.opts.StateDir, "bin", "aws-lambda-rie")
	if s.rieBuilt {
		return out, nil
	}
	cmd := exec.CommandContext(ctx, "go", "tool", "-n", rieTool)
	cmd.Dir = s.opts.Dir
	cmd.Env = hostBuildEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	path, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("build the Lambda Runtime Interface Emulator: go tool -n %s: %w\n%s", rieTool, err, stderr.Bytes())
	}
	cached := strings.TrimSpace(string(path))
	if current, err := os.Readlink(out); err != nil || current != cached {
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			return "", err
		}
		// Replace by rename, so a concurrent invocation never finds no emulator.
		tmp := fmt.Sprintf("%s.%d", out, os.Getpid())
		_ = os.Remove(tmp)
		if err := os.Symlink(cached, tmp); err != nil {
			return "", fmt.Errorf("link the emulator: %w", err)
		}
		if err := os.Rename(tmp, out); err != nil {
			return "", fmt.Errorf("link the emulator: %w", err)
		}
	}
	s.rieBuilt = true
	return out, nil
}

// hostBuildEnv is the environment of a build for this machine, whatever the caller exported
// for a Lambda build. CGO is off as in production, so the pure-Go resolver and friends behave
// as they will in Lambda.
func hostBuildEnv() []string {
	return append(os.Environ(), "GOOS="+runtime.GOOS, "GOARCH="+runtime.GOARCH, "CGO_ENABLED=0")
}

func (s *Stack) goBuild(ctx context.Context, out, pkg string, flags ...string) error {
	s.buildMu.Lock()
	defer s.buildMu.Unlock()
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	args := append([]string{"build", "-o", out}, flags...)
	cmd := exec.CommandContext(ctx, "go", append(args, pkg)...)
	cmd.Dir = s.opts.Dir
	cmd.Env = hostBuildEnv()
	var output bytes.Buffer
	cmd.Stdout, cmd.Stderr = &output, &output
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(cmd.Args[1:], " "), err, output.Bytes())
	}
	return nil
}

// functionEnv assembles the function's environment in the order of the package comment.
func (s *Stack) functionEnv(logicalID string, callerEnv map[string]string) (map[string]string, error) {
	file, err := ReadEnvFile(s.opts.EnvFile)
	if err != nil {
		return nil, err
	}
	env := file.For(logicalID)
	maps.Copy(env, map[string]string{
		"AWS_ENDPOINT_URL":            s.Endpoint(),
		"AWS_REGION":                  Region,
		"AWS_DEFAULT_REGION":          Region,
		"AWS_ACCESS_KEY_ID":           "test",
		"AWS_SECRET_ACCESS_KEY":       "test",
		"AWS_LAMBDA_LOG_FORMAT":       "JSON",
		"AWS_LAMBDA_FUNCTION_NAME":    logicalID,
		"AWS_LAMBDA_FUNCTION_TIMEOUT": strconv.Itoa(int(max(s.opts.FunctionTimeout.Round(time.Second), time.Second).Seconds())),
	})
	maps.Copy(env, s.servicesEnv())
	recorded, err := s.recordedCallerEnv()
	if err != nil {
		return nil, err
	}
	maps.Copy(env, recorded)
	maps.Copy(env, callerEnv)
	return env, nil
}

// runEmulator starts aws-lambda-rie with bootstrap on free loopback ports, posts one event and
// stops it again.
func (s *Stack) runEmulator(ctx context.Context, rie, bootstrap string, event []byte, env map[string]string) ([]byte, bool, error) {
	limit, err := invocationLimit(env)
	if err != nil {
		return nil, false, err
	}
	em, err := s.startReady(ctx, rie, bootstrap, env, limit)
	if err != nil {
		return nil, false, err
	}
	defer em.stop()
	return em.post(ctx, event, limit)
}

// invocationLimit bounds one invocation: init and the invocation each get the function's
// timeout; the rest is slack for the emulator's own start and stop.
func invocationLimit(env map[string]string) (time.Duration, error) {
	timeout, err := strconv.Atoi(env["AWS_LAMBDA_FUNCTION_TIMEOUT"])
	if err != nil || timeout < 1 {
		return 0, fmt.Errorf("AWS_LAMBDA_FUNCTION_TIMEOUT=%q: want whole seconds", env["AWS_LAMBDA_FUNCTION_TIMEOUT"])
	}
	return 2*time.Duration(timeout)*time.Second + 30*time.Second, nil
}

// startReady starts an emulator whose process lives at most life, and waits until it answers.
func (s *Stack) startReady(ctx context.Context, rie, bootstrap string, env map[string]string, life time.Duration) (*emulator, error) {
	// Ports are picked by binding :0 and closing, so another process can take one in between;
	// the emulator then exits at once and a second pick almost surely works.
	for attempt := 1; ; attempt++ {
		em, err := s.startEmulator(rie, bootstrap, env, life)
		if err == nil {
			err = em.waitReady(ctx, 10*time.Second)
			if err == nil {
				return em, nil
			}
			em.stop()
		}
		if attempt == 3 || ctx.Err() != nil {
			return nil, err
		}
	}
}

// post sends one event to a running emulator and classifies the answer.
func (em *emulator) post(ctx context.Context, event []byte, limit time.Duration) ([]byte, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+em.addr+invokePath, bytes.NewReader(event))
	if err != nil {
		return nil, false, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, false, fmt.Errorf("post the event to the emulator: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResult))
	if err != nil {
		return nil, false, fmt.Errorf("read the emulator's response: %w", err)
	}
	return classify(resp.StatusCode, resp.Header, body)
}

// Warm is one function kept running under one emulator for many invocations, as Lambda keeps
// a warm execution environment: the first invocation pays the init, later ones do not. It is
// for measuring what a user of a deployed function would see, such as Slack's time to answer.
type Warm struct {
	em    *emulator
	limit time.Duration
}

// StartWarm builds logicalID and starts it under the emulator with the same environment Invoke
// gives it; the process stops after life at the latest, or at Close.
func (s *Stack) StartWarm(ctx context.Context, logicalID string, env map[string]string, life time.Duration) (*Warm, error) {
	bootstrap, err := s.Build(ctx, logicalID)
	if err != nil {
		return nil, err
	}
	rie, err := s.buildRIE(ctx)
	if err != nil {
		return nil, err
	}
	fnEnv, err := s.functionEnv(logicalID, env)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", logicalID, err)
	}
	limit, err := invocationLimit(fnEnv)
	if err != nil {
		return nil, err
	}
	em, err := s.startReady(ctx, rie, bootstrap, fnEnv, life)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", logicalID, err)
	}
	return &Warm{em: em, limit: limit}, nil
}

// Invoke runs one invocation on the warm function; the results are Stack.Invoke's.
func (w *Warm) Invoke(ctx context.Context, event []byte) ([]byte, bool, error) {
	return w.em.post(ctx, event, w.limit)
}

// Close stops the function.
func (w *Warm) Close() { w.em.stop() }

// classify tells a function's result from its error, and both from the emulator's own failure.
//
// Observed with aws-lambda-rie v0.0.0-20261030222936-bef5c4ba774d: a handler error comes back
// as HTTP 200 with no X-Amz-Function-Error header (real Lambda sets one) and Lambda's error
// object as the body, {"errorMessage": "…", "errorType": "…"} (plus "stackTrace" for a panic);
// a runtime that exits mid-invocation gives HTTP 502 with such an object; a timeout gives
// HTTP 200 and the plain text "Task timed out after N.00 seconds". The header is honoured in
// case a later emulator sets it. A handler that returns exactly Lambda's error object as its
// result is indistinguishable from a failure here, as it is in the emulator.
func classify(status int, header http.Header, body []byte) ([]byte, bool, error) {
	text := strings.TrimSpace(string(body))
	switch {
	case strings.HasPrefix(text, "Task timed out after"):
		// Make stdout JSON, as Lambda's own timeout error is.
		out, _ := json.Marshal(map[string]string{"errorType": "Sandbox.Timedout", "errorMessage": text})
		return out, true, nil
	case header.Get("X-Amz-Function-Error") != "" || isErrorObject(body):
		return explainInitExit(body), true, nil
	case status == http.StatusOK:
		return body, false, nil
	case status == http.StatusBadGateway:
		out, _ := json.Marshal(map[string]string{"errorType": "Runtime.Unknown", "errorMessage": text})
		return out, true, nil
	}
	return nil, false, fmt.Errorf("the emulator answered HTTP %d: %s", status, text)
}

// explainInitExit fills in the empty error the emulator reports for a bootstrap that exited
// during init — keywarden's functions do, with the reason logged, when their configuration is
// incomplete — so the caller is pointed at the log instead of a blank message.
func explainInitExit(body []byte) []byte {
	var e struct {
		Message string `json:"errorMessage"`
		Type    string `json:"errorType"`
	}
	if json.Unmarshal(body, &e) != nil || e.Message != "" || e.Type != "Runtime.Unknown" {
		return body
	}
	out, _ := json.Marshal(map[string]string{"errorType": "Runtime.ExitError",
		"errorMessage": "the function exited during init: its log above says why (often a missing setting, such as SLACK_SIGNING_SECRET or APPROVERS)"})
	return out
}

// errorObjectKeys are the fields of Lambda's error object (aws-lambda-go's
// messages.InvokeResponse_Error and the emulator's own).
var errorObjectKeys = map[string]bool{"errorMessage": true, "errorType": true, "stackTrace": true, "requestId": true, "cause": true}

func isErrorObject(body []byte) bool {
	var obj map[string]json.RawMessage
	if json.Unmarshal(body, &obj) != nil {
		return false
	}
	var msg, typ string
	if json.Unmarshal(obj["errorMessage"], &msg) != nil || json.Unmarshal(obj["errorType"], &typ) != nil {
		return false
	}
	for k := range obj {
		if !errorObjectKeys[k] {
			return false
		}
	}
	return typ != ""
}

// emulator is one running aws-lambda-rie process group (the emulator and the bootstrap).
type emulator struct {
	cmd    *exec.Cmd
	addr   string
	exited chan struct{}
}

func (s *Stack) startEmulator(rie, bootstrap string, env map[string]string, limit time.Duration) (*emulator, error) {
	apiPort, err := freePort()
	if err != nil {
		return nil, err
	}
	runtimePort, err := freePort()
	if err != nil {
		return nil, err
	}
	timeout, err := exec.LookPath("timeout")
	if err != nil {
		return nil, fmt.Errorf("timeout(1) from coreutils bounds the emulator's lifetime and was not found: %w", err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", apiPort)
	// timeout(1) is the last resort: normally stop ends the group long before.
	cmd := exec.Command(timeout, fmt.Sprintf("%ds", int(limit.Seconds())+30), rie,
		// --log-level decouples the emulator's verbosity from the function's LOG_LEVEL, which
		// it would otherwise read too.
		"--log-level", "info",
		"--runtime-interface-emulator-address", addr,
		// The Runtime API's default port, 9001, would make two invocations at once collide.
		"--runtime-api-address", fmt.Sprintf("127.0.0.1:%d", runtimePort),
		"./bootstrap")
	cmd.Dir = filepath.Dir(bootstrap)
	// The emulator hands its whole environment to the function; give it only what Lambda
	// would, so nothing of the caller's (an AWS profile, real credentials) leaks in.
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "TZ=:UTC", "LAMBDA_TASK_ROOT=" + cmd.Dir}
	for _, k := range slices.Sorted(maps.Keys(env)) {
		cmd.Env = append(cmd.Env, k+"="+env[k])
	}
	cmd.Stdout, cmd.Stderr = s.opts.Log, s.opts.Log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// If the bootstrap leaks the log pipe to a child of its own, do not wait for it for ever.
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start aws-lambda-rie: %w", err)
	}
	em := &emulator{cmd: cmd, addr: addr, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(em.exited) }()
	return em, nil
}

// waitReady waits until the emulator accepts connections. Its HTTP server listens before it
// serves, so an accepted connection means a POST will be handled.
func (em *emulator) waitReady(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		c, err := net.DialTimeout("tcp", em.addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-em.exited:
			return fmt.Errorf("aws-lambda-rie exited before it listened on %s (%s)", em.addr, em.cmd.ProcessState)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("aws-lambda-rie did not listen on %s within %s", em.addr, limit)
		}
	}
}

// stop ends the emulator and the bootstrap it started, politely first.
func (em *emulator) stop() {
	pgid := em.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-em.exited:
	case <-time.After(2 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-em.exited
	}
	// The bootstrap may linger a moment after the emulator; it is in the same group.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
