package main

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"

	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/lifecycle/rdstrack"
	"github.com/keywarden/keywarden/internal/rdsevent"
	"github.com/keywarden/keywarden/internal/slackmessage"
)

// rdsEvents applies an event in two halves (rdstrack.Tracker.Open, then Pending.Apply), so
// that an incident the event opens is announced before the rest is read; *rdstrack.Tracker fits.
type rdsEvents interface {
	Open(ctx context.Context, ev rdsevent.Event) (rdstrack.Outcome, *rdstrack.Pending, error)
}

// announcer posts or updates the Slack message of an incident the event changed;
// *slackmessage.Announcer fits.
type announcer interface {
	Announce(ctx context.Context, inc incident.Incident) error
}

type handler struct {
	svc rdsEvents
	// announcer may be nil (no Slack configured): incidents are recorded, not announced.
	announcer announcer
	log       *slog.Logger
}

func newHandler(svc rdsEvents, a announcer, log *slog.Logger) *handler {
	return &handler{svc: svc, announcer: a, log: log}
}

// Result is what the function returns.
type Result struct {
	EventID    string            `json:"event_id,omitempty"`
	RDSEventID string            `json:"rds_event_id,omitempty"`
	Outcome    *rdstrack.Outcome `json:"outcome,omitempty"`
	// Rejected explains an event that can never be handled; it is acknowledged, not retried.
	Rejected string `json:"rejected,omitempty"`
}

// Handle takes the raw EventBridge event, so that a malformed or unsupported one is logged
// with the reason and acknowledged instead of failing the invocation and being retried.
func (h *handler) Handle(ctx context.Context, raw json.RawMessage) (Result, error) {
	ev, err := rdsevent.Parse(raw)
	if errors.Is(err, rdsevent.ErrMalformed) || errors.Is(err, rdsevent.ErrUnsupported) {
		h.log.WarnContext(ctx, "event rejected", "action", "rejected", "reason", err.Error(), "bytes", len(raw))
		return Result{Rejected: err.Error()}, nil
	}
	if err != nil {
		return Result{}, err
	}
	res := Result{EventID: ev.ID, RDSEventID: ev.EventID}
	// The store holds each half's changes already, also when a later step failed: announcing
	// them is the edge's job, in the order they happened — an incident the event opened first,
	// before the key and the other clusters are read, however slow those reads are.
	o, pending, err := h.svc.Open(ctx, ev)
	h.announce(ctx, o.Changed)
	if err == nil && pending != nil {
		o, err = pending.Apply(ctx)
		h.announce(ctx, o.Changed)
	}
	if err != nil {
		// Only AWS or DynamoDB failures reach here: Lambda retries the event.
		h.log.ErrorContext(ctx, "rds event failed; will be retried", "event_id", ev.ID, "rds_event_id", ev.EventID,
			"source_arn", ev.SourceARN, "error", err)
		return res, err
	}
	res.Outcome = &o
	h.log.InfoContext(ctx, "rds event", "event_id", ev.ID, "rds_event_id", ev.EventID, "source_arn", ev.SourceARN,
		"cluster", o.Cluster, "instance", o.Instance, "key_arn", o.KeyARN, "incident_id", o.IncidentID,
		"action", o.Action, "reason", o.Reason)
	return res, nil
}

func (h *handler) announce(ctx context.Context, changed []incident.Incident) {
	for _, inc := range changed {
		_ = slackmessage.AnnounceOrWarn(ctx, h.announcer, inc, h.log)
	}
}
