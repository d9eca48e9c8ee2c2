package daemon

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// spec is a background `sh` that says it is up by creating a file, then waits; its command
// line carries marker, so CmdlineHas can tell it from a process that reused its pid.
func spec(t *testing.T, script string) (Spec, string) {
	t.Helper()
	dir := t.TempDir()
	ready := filepath.Join(dir, "ready")
	return Spec{
		What: "the test daemon", StateFile: filepath.Join(dir, "state.json"), LogFile: filepath.Join(dir, "log"),
		Dir: dir, Port: 1, TTL: time.Minute,
		Argv: []string{"sh", "-c", strings.ReplaceAll(script, "READY", ready), "keywarden-daemon-test"},
		Answers: func(context.Context) bool {
			_, err := os.Stat(ready)
			return err == nil
		},
		StartLimit: 10 * time.Second, Tick: 10 * time.Millisecond,
		Stop: func(st *State) error { return StopGroup(st.PID, time.Second) },
	}, dir
}

func TestStartAndStop(t *testing.T) {
	s, _ := spec(t, "echo starting; touch READY; exec sleep 60")
	st, err := Start(context.Background(), s)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = StopGroup(st.PID, time.Second) })
	if !GroupAlive(st.PID) || !CmdlineHas(st.PID, "timeout") {
		t.Fatalf("after Start: group alive %v, runs timeout %v; want both", GroupAlive(st.PID), CmdlineHas(st.PID, "timeout"))
	}
	if CmdlineHas(st.PID, "no-such-marker") {
		t.Errorf("CmdlineHas found a marker that is not there")
	}
	got, err := ReadState(s.StateFile, nil)
	if err != nil || got == nil || got.PID != st.PID || got.Port != 1 || !got.ExpiresAt.After(got.StartedAt) {
		t.Fatalf("ReadState: got %+v, %v; want the started process", got, err)
	}
	if err := StopGroup(st.PID, time.Second); err != nil {
		t.Fatalf("StopGroup: %v", err)
	}
	if GroupAlive(st.PID) {
		t.Errorf("group %d alive after StopGroup", st.PID)
	}
	if log, _ := os.ReadFile(s.LogFile); !strings.Contains(string(log), "starting") {
		t.Errorf("log %q, want the process's output", log)
	}
}

func TestStartFails(t *testing.T) {
	t.Run("exits during start-up", func(t *testing.T) {
		s, _ := spec(t, "echo cannot bind; exit 3")
		_, err := Start(context.Background(), s)
		if err == nil || !strings.Contains(err.Error(), "exited during start-up") || !strings.Contains(err.Error(), "cannot bind") {
			t.Errorf("got %v, want an error quoting the log", err)
		}
		if _, statErr := os.Stat(s.StateFile); !os.IsNotExist(statErr) {
			t.Errorf("pid file left behind: %v", statErr)
		}
	})
	t.Run("never answers", func(t *testing.T) {
		s, _ := spec(t, "exec sleep 60")
		s.StartLimit = 200 * time.Millisecond
		stopped := false
		stop := s.Stop
		s.Stop = func(st *State) error { stopped = true; return stop(st) }
		_, err := Start(context.Background(), s)
		if err == nil || !strings.Contains(err.Error(), "did not answer") || !stopped {
			t.Errorf("got %v, stopped %v; want a time-out and the process stopped", err, stopped)
		}
	})
}

func TestReadState(t *testing.T) {
	dir := t.TempDir()
	if st, err := ReadState(filepath.Join(dir, "none.json"), nil); st != nil || err != nil {
		t.Errorf("missing file: got %+v, %v; want nil, nil", st, err)
	}
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	var warn bytes.Buffer
	if st, err := ReadState(bad, &warn); st != nil || err != nil || !strings.Contains(warn.String(), "ignoring unreadable") {
		t.Errorf("unreadable file: got %+v, %v, warning %q", st, err, warn.String())
	}
	if _, err := os.Stat(bad); !os.IsNotExist(err) {
		t.Errorf("unreadable pid file not removed: %v", err)
	}
}

func TestWriteFileAtomic(t *testing.T) {
	path := filepath.Join(t.TempDir(), "secret.json")
	if err := WriteFileAtomic(path, []byte(`{"a":1}`), 0o600); err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(path)
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("stat: %v, mode %v; want 0600", err, info.Mode())
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}
}
