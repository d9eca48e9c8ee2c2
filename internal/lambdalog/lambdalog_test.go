package lambdalog_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/google/go-cmp/cmp"

	"github.com/keywarden/keywarden/internal/lambdalog"
)

const requestID = "8f5c0c8a-2a7b-4a4e-9d61-3f6c2b1e0d55"

func invocation() context.Context {
	return lambdacontext.NewContext(context.Background(), &lambdacontext.LambdaContext{AwsRequestID: requestID})
}

// lines decodes every JSON line written to buf.
func lines(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		delete(m, "time")
		out = append(out, m)
	}
	return out
}

func TestHandler(t *testing.T) {
	tests := []struct {
		name string
		log  func(*slog.Logger)
		want map[string]any
	}{
		{
			name: "invocation context",
			log:  func(l *slog.Logger) { l.InfoContext(invocation(), "key event", "incident_id", "KW-1") },
			want: map[string]any{"level": "INFO", "msg": "key event", "incident_id": "KW-1", "request_id": requestID},
		},
		{
			name: "Log with the invocation context",
			log:  func(l *slog.Logger) { l.Log(invocation(), slog.LevelWarn, "reconcile", "action", "reminded") },
			want: map[string]any{"level": "WARN", "msg": "reconcile", "action": "reminded", "request_id": requestID},
		},
		{
			name: "no context: start-up",
			log:  func(l *slog.Logger) { l.Info("ready", "bot_token", "set") },
			want: map[string]any{"level": "INFO", "msg": "ready", "bot_token": "set"},
		},
		{
			name: "a context with no Lambda context",
			log:  func(l *slog.Logger) { l.ErrorContext(context.Background(), "start-up", "error", "boom") },
			want: map[string]any{"level": "ERROR", "msg": "start-up", "error": "boom"},
		},
		{
			name: "an empty request ID is left out",
			log: func(l *slog.Logger) {
				ctx := lambdacontext.NewContext(context.Background(), &lambdacontext.LambdaContext{})
				l.InfoContext(ctx, "key event")
			},
			want: map[string]any{"level": "INFO", "msg": "key event"},
		},
		{
			name: "attributes of With are kept",
			log:  func(l *slog.Logger) { l.With("service", "slack").InfoContext(invocation(), "slack call") },
			want: map[string]any{"level": "INFO", "msg": "slack call", "service": "slack", "request_id": requestID},
		},
		{
			name: "inside a group",
			log: func(l *slog.Logger) {
				l.WithGroup("step").InfoContext(invocation(), "remediation step", "name", "EnableKey")
			},
			want: map[string]any{"level": "INFO", "msg": "remediation step", "step": map[string]any{"name": "EnableKey", "request_id": requestID}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			tt.log(slog.New(lambdalog.New(slog.NewJSONHandler(&buf, nil))))
			got := lines(t, &buf)
			if len(got) != 1 {
				t.Fatalf("lines: got %d, want 1: %s", len(got), buf.String())
			}
			if diff := cmp.Diff(tt.want, got[0]); diff != "" {
				t.Errorf("line (-want +got):\n%s", diff)
			}
		})
	}
}

// The wrapped handler's level decides; a line below it costs no context lookup and is not written.
func TestHandlerEnabled(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(lambdalog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn})))
	l.InfoContext(invocation(), "not written")
	if !l.Enabled(invocation(), slog.LevelError) || l.Enabled(invocation(), slog.LevelDebug) {
		t.Errorf("Enabled: got error %v, debug %v, want true, false",
			l.Enabled(invocation(), slog.LevelError), l.Enabled(invocation(), slog.LevelDebug))
	}
	if buf.Len() != 0 {
		t.Errorf("got %q, want nothing below warn", buf.String())
	}
}

// A record's attributes are the caller's: adding the ID must not change what a second handler
// sees of the same record.
func TestHandlerLeavesRecordAlone(t *testing.T) {
	var first bytes.Buffer
	h := lambdalog.New(slog.NewJSONHandler(&first, nil))
	r := slog.NewRecord(time.Time{}, slog.LevelInfo, "msg", 0)
	r.AddAttrs(slog.String("a", "1"))
	if err := h.Handle(invocation(), r); err != nil {
		t.Fatal(err)
	}
	n := 0
	r.Attrs(func(slog.Attr) bool { n++; return true })
	if n != 1 {
		t.Errorf("record attributes after Handle: got %d, want 1", n)
	}
}
