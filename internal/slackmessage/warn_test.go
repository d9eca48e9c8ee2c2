package slackmessage

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"testing"

	"github.com/keywarden/keywarden/internal/incident"
)

// announceFunc is a fake IncidentAnnouncer.
type announceFunc func(ctx context.Context, inc incident.Incident) error

func (f announceFunc) Announce(ctx context.Context, inc incident.Incident) error { return f(ctx, inc) }

var _ IncidentAnnouncer = (*Announcer)(nil)

func TestAnnounceOrWarn(t *testing.T) {
	slackDown := errors.New("slack unavailable")
	var calls int
	ok := announceFunc(func(context.Context, incident.Incident) error { calls++; return nil })
	failing := announceFunc(func(context.Context, incident.Incident) error { calls++; return slackDown })
	var noSlack *Announcer
	tests := []struct {
		name      string
		a         IncidentAnnouncer
		noLog     bool
		wantErr   error
		wantCalls int
		wantWarn  bool
	}{
		{name: "no announcer", a: nil},
		{name: "nil *Announcer (no bot token)", a: noSlack},
		{name: "announced", a: ok, wantCalls: 1},
		{name: "failed: warned and returned", a: failing, wantErr: slackDown, wantCalls: 1, wantWarn: true},
		{name: "failed, no log: only returned", a: failing, noLog: true, wantErr: slackDown, wantCalls: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls = 0
			var buf bytes.Buffer
			log := slog.New(slog.NewJSONHandler(&buf, nil))
			if tt.noLog {
				log = nil
			}
			err := AnnounceOrWarn(context.Background(), tt.a, incident.Incident{ID: "kw-1"}, log)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Errorf("error: got %v, want %v", err, tt.wantErr)
			}
			if calls != tt.wantCalls {
				t.Errorf("Announce calls: got %d, want %d", calls, tt.wantCalls)
			}
			if !tt.wantWarn {
				if buf.Len() != 0 {
					t.Errorf("logged %q, want nothing", buf.String())
				}
				return
			}
			var line map[string]any
			if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
				t.Fatalf("log line %q: %v", buf.String(), err)
			}
			if line["level"] != "WARN" || line["incident_id"] != "kw-1" || line["error"] != slackDown.Error() {
				t.Errorf("log line: got %v, want WARN with incident_id kw-1 and the error", line)
			}
		})
	}
}
