package stack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/keywarden/keywarden/cmd/keywarden/internal/rie"
	"github.com/keywarden/keywarden/cmd/keywarden/internal/samenv"
)

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
	emulator, err := s.buildRIE(ctx)
	if err != nil {
		return nil, false, err
	}
	fnEnv, err := s.functionEnv(logicalID, env)
	if err != nil {
		return nil, false, fmt.Errorf("invoke %s: %w", logicalID, err)
	}
	result, functionErr, err = rie.Run(ctx, emulator, bootstrap, event, fnEnv, s.opts.Log)
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

// Emulator returns the emulator this stack runs functions under, building it if needed: a
// way to find out, before running anything, whether the emulator is available here.
func (s *Stack) Emulator(ctx context.Context) (string, error) { return s.buildRIE(ctx) }

// buildRIE makes .local/bin/aws-lambda-rie the emulator go.mod pins, once per Stack: a symlink
// to the binary rie.Locate leaves in the Go build cache, so the emulator is linked once per
// version, not once per state folder.
func (s *Stack) buildRIE(ctx context.Context) (string, error) {
	s.buildMu.Lock()
	defer s.buildMu.Unlock()
	out := filepath.Join(s.opts.StateDir, "bin", "aws-lambda-rie")
	if s.rieBuilt {
		return out, nil
	}
	cached, err := rie.Locate(ctx, s.opts.Dir, hostBuildEnv())
	if err != nil {
		return "", err
	}
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
	file, err := samenv.Read(s.opts.EnvFile)
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

// Warm is one function kept running under one emulator for many invocations, as Lambda keeps
// a warm execution environment: the first invocation pays the init, later ones do not. It is
// for measuring what a user of a deployed function would see, such as Slack's time to answer.
type Warm struct {
	em    *rie.Emulator
	limit time.Duration
}

// StartWarm builds logicalID and starts it under the emulator with the same environment Invoke
// gives it; the process stops after life at the latest, or at Close.
func (s *Stack) StartWarm(ctx context.Context, logicalID string, env map[string]string, life time.Duration) (*Warm, error) {
	bootstrap, err := s.Build(ctx, logicalID)
	if err != nil {
		return nil, err
	}
	emulator, err := s.buildRIE(ctx)
	if err != nil {
		return nil, err
	}
	fnEnv, err := s.functionEnv(logicalID, env)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", logicalID, err)
	}
	limit, err := rie.InvocationLimit(fnEnv)
	if err != nil {
		return nil, err
	}
	em, err := rie.Start(ctx, emulator, bootstrap, fnEnv, life, s.opts.Log)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", logicalID, err)
	}
	return &Warm{em: em, limit: limit}, nil
}

// Invoke runs one invocation on the warm function; the results are Stack.Invoke's.
func (w *Warm) Invoke(ctx context.Context, event []byte) ([]byte, bool, error) {
	return w.em.Invoke(ctx, event, w.limit)
}

// Close stops the function.
func (w *Warm) Close() { w.em.Stop() }
