package stack

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
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
	bootstrap, err := s.bootstrap(ctx, logicalID)
	if err != nil {
		return nil, false, err
	}
	emulator, err := s.build.emulator(ctx)
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

// bootstrap builds the function logicalID for this machine and returns its bootstrap.
func (s *Stack) bootstrap(ctx context.Context, logicalID string) (string, error) {
	folder, err := s.Function(logicalID)
	if err != nil {
		return "", err
	}
	return s.build.function(ctx, logicalID, folder)
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
func (s *Stack) Emulator(ctx context.Context) (string, error) { return s.build.emulator(ctx) }

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
	recorded, err := s.state.callerEnv()
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
	bootstrap, err := s.bootstrap(ctx, logicalID)
	if err != nil {
		return nil, err
	}
	emulator, err := s.build.emulator(ctx)
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

// FunctionEnv is the environment logicalID runs with on this stack (see functionEnv), callerEnv
// winning: what `keywarden doctor` checks in the demo, as a user checks a deployment's.
func (s *Stack) FunctionEnv(logicalID string, callerEnv map[string]string) (map[string]string, error) {
	return s.functionEnv(logicalID, callerEnv)
}
