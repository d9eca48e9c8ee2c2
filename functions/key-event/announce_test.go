package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/intake"
	"github.com/keywarden/keywarden/internal/keyevent"
	"github.com/keywarden/keywarden/internal/slackmessage"
)

// keyEventsFunc is a fake intake.
type keyEventsFunc func(ctx context.Context, ev keyevent.Event) ([]intake.Outcome, error)

func (f keyEventsFunc) HandleKeyEvent(ctx context.Context, ev keyevent.Event) ([]intake.Outcome, error) {
	return f(ctx, ev)
}

// recorder is a fake announcer that records the incidents it was given.
type recorder struct {
	ids []string
	err error
}

func (r *recorder) Announce(_ context.Context, inc incident.Incident) error {
	r.ids = append(r.ids, inc.ID)
	return r.err
}

// TestHandlerAnnouncesWhatChanged: intake returns what it changed and the handler announces
// it — every changed incident, also when another key of the event failed, and a failed
// announcement is a warning, never the event's failure.
func TestHandlerAnnouncesWhatChanged(t *testing.T) {
	retry := errors.New("ThrottlingException: Rate exceeded")
	outcomes := []intake.Outcome{
		{KeyARN: "k1", Action: intake.ActionOpened, IncidentID: "kw-1", Changed: []incident.Incident{{ID: "kw-1"}}},
		{KeyARN: "k2", Action: intake.ActionIgnored, Reason: "nothing to open"},
		{KeyARN: "k3", Action: intake.ActionFailed, Reason: retry.Error()},
		{KeyARN: "k4", Action: intake.ActionUpdated, IncidentID: "kw-4", Changed: []incident.Incident{{ID: "kw-4"}}},
	}
	tests := []struct {
		name       string
		svcErr     error
		slackErr   error
		wantErr    bool
		wantWarned int
	}{
		{name: "all announced"},
		{name: "announced although another key failed", svcErr: retry, wantErr: true},
		{name: "slack down: warned, not failed", slackErr: errors.New("slack unavailable"), wantWarned: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			a := &recorder{err: tt.slackErr}
			svc := keyEventsFunc(func(context.Context, keyevent.Event) ([]intake.Outcome, error) { return outcomes, tt.svcErr })
			h := newHandler(svc, a, slog.New(slog.NewJSONHandler(&logs, nil)))
			res, err := h.Handle(context.Background(), sample(t, "kms-disable-key.json", "1234abcd-12ab-34cd-56ef-1234567890ab"))
			if (err != nil) != tt.wantErr {
				t.Fatalf("error: got %v, want error %v", err, tt.wantErr)
			}
			if len(res.Outcomes) != len(outcomes) {
				t.Errorf("outcomes: got %d, want %d", len(res.Outcomes), len(outcomes))
			}
			if diff := cmp.Diff([]string{"kw-1", "kw-4"}, a.ids); diff != "" {
				t.Errorf("announced (-want +got):\n%s", diff)
			}
			if got := strings.Count(logs.String(), "slack message not updated"); got != tt.wantWarned {
				t.Errorf("warnings: got %d, want %d", got, tt.wantWarned)
			}
		})
	}
}

// TestHandlerWithoutSlack: no Slack configured (a nil announcer, as main passes a nil
// *slackmessage.Announcer) announces nothing and handles the event.
func TestHandlerWithoutSlack(t *testing.T) {
	svc := keyEventsFunc(func(context.Context, keyevent.Event) ([]intake.Outcome, error) {
		return []intake.Outcome{{Action: intake.ActionOpened, IncidentID: "kw-1", Changed: []incident.Incident{{ID: "kw-1"}}}}, nil
	})
	var noSlack *slackmessage.Announcer // startup.Services.Announcer without a bot token
	for _, a := range []announcer{nil, noSlack} {
		h := newHandler(svc, a, slog.New(slog.NewJSONHandler(&bytes.Buffer{}, nil)))
		if _, err := h.Handle(context.Background(), sample(t, "kms-disable-key.json", "1234abcd-12ab-34cd-56ef-1234567890ab")); err != nil {
			t.Fatalf("%T: got %v, want nil", a, err)
		}
	}
}
