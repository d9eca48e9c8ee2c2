package stack

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/keywarden/keywarden/cmd/keywarden/internal/daemon"
)

// stateDir is the stack's state folder (.local by default): the pid files and logs of what Up
// started, the builds, the caller environment Up recorded and the Slack stand-in's records.
// Several processes share it: every file in it is replaced atomically.
type stateDir string

// path is the path of name in the folder.
func (d stateDir) path(name string) string { return filepath.Join(string(d), name) }

// remove removes name, if it is there.
func (d stateDir) remove(name string) error { return daemon.Remove(d.path(name)) }

// readProc reads the pid file name; an unreadable one is reported to warn and removed.
func (d stateDir) readProc(name string, warn io.Writer) (*daemon.State, error) {
	return daemon.ReadState(d.path(name), warn)
}

func (d stateDir) writeProc(name string, st *daemon.State) error {
	return daemon.WriteState(d.path(name), st)
}

// recordCallerEnv merges caller (Options.CallerEnv) into the recorded caller environment: a
// second `local up` without SLACK_API_URL keeps the value the first one was given.
func (d stateDir) recordCallerEnv(caller map[string]string) error {
	if len(caller) == 0 {
		return nil
	}
	env, err := d.callerEnv()
	if err != nil {
		return err
	}
	for k, v := range caller {
		env[k] = v
	}
	data, err := json.Marshal(env)
	if err != nil {
		return err
	}
	// 0600: it may hold the Slack signing secret.
	return daemon.WriteFileAtomic(d.path(callerEnvFile), data, 0o600)
}

// callerEnv is the recorded caller environment.
func (d stateDir) callerEnv() (map[string]string, error) {
	env := map[string]string{}
	data, err := os.ReadFile(d.path(callerEnvFile))
	if errors.Is(err, fs.ErrNotExist) {
		return env, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read recorded caller environment: %w", err)
	}
	if err := json.Unmarshal(data, &env); err != nil {
		return nil, fmt.Errorf("read recorded caller environment %s: %w", callerEnvFile, err)
	}
	return env, nil
}
