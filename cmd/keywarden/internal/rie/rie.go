// Package rie runs a Lambda function's real bootstrap under the AWS Lambda Runtime Interface
// Emulator (aws-lambda-rie, the Go module named by go.mod's tool line), for one invocation or
// kept warm for many — what `sam local invoke` does inside its container — and tells the
// function's result from its error and both from the emulator's own failure.
//
// It knows the emulator's command line and HTTP answers only: it must not import the rest of
// the local stack (which decides what to build and with which environment), the AWS SDK or
// keywarden's product packages.
package rie

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/keywarden/keywarden/cmd/keywarden/internal/daemon"
)

// Name is how messages name the emulator, such as a test's reason to skip.
const Name = "the Lambda Runtime Interface Emulator (go tool aws-lambda-rie, pinned in go.mod)"

// Tool is the emulator's main package, pinned by go.mod's tool line.
const Tool = "github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie"

// invokePath is the emulator's stand-in for Lambda's Invoke API. Every function is "function"
// there, whatever its name.
const invokePath = "/2015-03-31/functions/function/invocations"

// maxResult bounds what is read back; Lambda's own limit for a synchronous response is 6 MB.
const maxResult = 16 << 20

// Locate builds the emulator go.mod pins, if the Go build cache does not hold it yet, and
// returns the path of the cached binary. `go tool -n` builds a module tool into the build
// cache, shared by every checkout and test run, and prints its path without running it: the
// emulator is linked once per version (a fresh link costs several seconds). moduleDir is the
// repository root; env is the go command's environment.
func Locate(ctx context.Context, moduleDir string, env []string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", "tool", "-n", Tool)
	cmd.Dir = moduleDir
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	path, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("build the Lambda Runtime Interface Emulator: go tool -n %s: %w\n%s", Tool, err, stderr.Bytes())
	}
	return strings.TrimSpace(string(path)), nil
}

// Run starts the emulator rie with bootstrap on free loopback ports, posts one event and stops
// it again. env is the function's whole environment; the emulator's and the function's logs
// go to log.
//
// result is the function's response. functionErr reports that the function failed — returned
// an error, panicked, crashed or timed out — and result then holds Lambda's error object
// ({"errorType": …, "errorMessage": …}). err reports that the invocation could not be made.
func Run(ctx context.Context, rie, bootstrap string, event []byte, env map[string]string, log io.Writer) (result []byte, functionErr bool, err error) {
	limit, err := InvocationLimit(env)
	if err != nil {
		return nil, false, err
	}
	em, err := Start(ctx, rie, bootstrap, env, limit, log)
	if err != nil {
		return nil, false, err
	}
	defer em.Stop()
	return em.Invoke(ctx, event, limit)
}

// InvocationLimit bounds one invocation of a function with environment env: init and the
// invocation each get the function's timeout (AWS_LAMBDA_FUNCTION_TIMEOUT); the rest is slack
// for the emulator's own start and stop.
func InvocationLimit(env map[string]string) (time.Duration, error) {
	timeout, err := strconv.Atoi(env["AWS_LAMBDA_FUNCTION_TIMEOUT"])
	if err != nil || timeout < 1 {
		return 0, fmt.Errorf("AWS_LAMBDA_FUNCTION_TIMEOUT=%q: want whole seconds", env["AWS_LAMBDA_FUNCTION_TIMEOUT"])
	}
	return 2*time.Duration(timeout)*time.Second + 30*time.Second, nil
}

// Start starts the emulator rie with bootstrap, in a process group that lives at most life,
// and waits until it answers. env is the function's whole environment: nothing of this
// process's is passed on but PATH. The emulator's and the function's logs go to log.
func Start(ctx context.Context, rie, bootstrap string, env map[string]string, life time.Duration, log io.Writer) (*Emulator, error) {
	// Ports are picked by binding :0 and closing, so another process can take one in between;
	// the emulator then exits at once and a second pick almost surely works.
	for attempt := 1; ; attempt++ {
		em, err := startEmulator(rie, bootstrap, env, life, log)
		if err == nil {
			err = em.waitReady(ctx, 10*time.Second)
			if err == nil {
				return em, nil
			}
			em.Stop()
		}
		if attempt == 3 || ctx.Err() != nil {
			return nil, err
		}
	}
}

// Invoke sends one event to a running emulator, waits at most limit, and classifies the answer
// as Run does.
func (em *Emulator) Invoke(ctx context.Context, event []byte, limit time.Duration) ([]byte, bool, error) {
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

// Emulator is one running aws-lambda-rie process group (the emulator and the bootstrap).
type Emulator struct {
	cmd    *exec.Cmd
	addr   string
	exited chan struct{}
}

func startEmulator(rie, bootstrap string, env map[string]string, limit time.Duration, log io.Writer) (*Emulator, error) {
	apiPort, err := daemon.FreePort()
	if err != nil {
		return nil, err
	}
	runtimePort, err := daemon.FreePort()
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
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// If the bootstrap leaks the log pipe to a child of its own, do not wait for it for ever.
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start aws-lambda-rie: %w", err)
	}
	em := &Emulator{cmd: cmd, addr: addr, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(em.exited) }()
	return em, nil
}

// waitReady waits until the emulator accepts connections. Its HTTP server listens before it
// serves, so an accepted connection means a POST will be handled.
func (em *Emulator) waitReady(ctx context.Context, limit time.Duration) error {
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

// Pgid is the emulator's process group, which the bootstrap it starts shares: what a caller
// measuring the bootstrap (its memory, say) looks for in /proc.
func (em *Emulator) Pgid() int { return em.cmd.Process.Pid }

// Stop ends the emulator and the bootstrap it started, politely first.
func (em *Emulator) Stop() {
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
