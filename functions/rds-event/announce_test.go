package main

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/lifecycle/rdstrack"
	"github.com/keywarden/keywarden/internal/rdsevent"
	"github.com/keywarden/keywarden/internal/slackmessage"
)

var _ announcer = (*slackmessage.Announcer)(nil)

// rdsEventsFunc is a fake tracker.
type rdsEventsFunc func(ctx context.Context, ev rdsevent.Event) (rdstrack.Outcome, error)

func (f rdsEventsFunc) Open(ctx context.Context, ev rdsevent.Event) (rdstrack.Outcome, *rdstrack.Pending, error) {
	o, err := f(ctx, ev)
	return o, nil, err
}

// recorder is a fake announcer that records the incidents it was given, in order.
type recorder struct {
	versions []int64
	err      error
}

func (r *recorder) Announce(_ context.Context, inc incident.Incident) error {
	r.versions = append(r.versions, inc.Version)
	return r.err
}

// TestHandlerAnnouncesWhatChanged: the tracker returns what changed — what intake opened,
// then the incident as the event left it — and the handler announces each in order, also
// when a later step failed and the event is retried; a failed announcement is a warning,
// never the event's failure.
func TestHandlerAnnouncesWhatChanged(t *testing.T) {
	changed := []incident.Incident{{ID: "kw-1", Version: 1}, {ID: "kw-1", Version: 2}}
	tests := []struct {
		name       string
		svcErr     error
		slackErr   error
		wantErr    bool
		wantWarned int
	}{
		{name: "announced in order"},
		{name: "announced although a later step failed", svcErr: errors.New("ThrottlingException"), wantErr: true},
		{name: "slack down: warned, not failed", slackErr: errors.New("slack unavailable"), wantWarned: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logs := &syncBuffer{}
			a := &recorder{err: tt.slackErr}
			svc := rdsEventsFunc(func(context.Context, rdsevent.Event) (rdstrack.Outcome, error) {
				return rdstrack.Outcome{Action: rdstrack.ActionOpened, IncidentID: "kw-1", Changed: changed}, tt.svcErr
			})
			h := newHandler(svc, a, slog.New(slog.NewJSONHandler(logs, nil)))
			if _, err := h.Handle(context.Background(), sample(t, "rds-instance-key-access-lost-0418.json", sampleCluster)); (err != nil) != tt.wantErr {
				t.Fatalf("error: got %v, want error %v", err, tt.wantErr)
			}
			if diff := cmp.Diff([]int64{1, 2}, a.versions); diff != "" {
				t.Errorf("announced versions (-want +got):\n%s", diff)
			}
			if got := strings.Count(logs.String(), "slack message not updated"); got != tt.wantWarned {
				t.Errorf("warnings: got %d, want %d", got, tt.wantWarned)
			}
		})
	}
}
