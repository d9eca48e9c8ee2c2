package main

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"

	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/intake"
	"github.com/keywarden/keywarden/internal/keyevent"
	"github.com/keywarden/keywarden/internal/page"
	"github.com/keywarden/keywarden/internal/slackmessage"
)

type keyEvents interface {
	HandleKeyEvent(ctx context.Context, ev keyevent.Event) ([]intake.Outcome, error)
}

// announcer posts or updates the Slack message of an incident intake changed;
// *slackmessage.Announcer fits.
type announcer interface {
	Announce(ctx context.Context, inc incident.Incident) error
}

// counter counts a CloudWatch metric that template.yaml alarms on; *page.Metrics fits.
type counter interface {
	Count(name, id, reason string) error
}

type handler struct {
	svc keyEvents
	// announcer may be nil (no Slack configured): incidents are recorded, not announced.
	announcer announcer
	// metrics may be nil (tests): nothing is counted.
	metrics counter
	log     *slog.Logger
}

func newHandler(svc keyEvents, a announcer, log *slog.Logger) *handler {
	return &handler{svc: svc, announcer: a, log: log}
}

// withMetrics counts, with m, every key an acknowledged event could not be handled for.
func (h *handler) withMetrics(m counter) *handler {
	h.metrics = m
	return h
}

// Result is what the function returns: one outcome per key the event concerned.
type Result struct {
	EventID  string           `json:"event_id,omitempty"`
	Event    string           `json:"event,omitempty"`
	Outcomes []intake.Outcome `json:"outcomes,omitempty"`
	// Rejected explains an event that can never be handled; it is acknowledged, not retried.
	Rejected string `json:"rejected,omitempty"`
}

// Handle takes the raw EventBridge event: parsing it ourselves lets a malformed event be
// logged with what was wrong and acknowledged, where a typed decode in the runtime would fail
// the invocation and make Lambda retry something that can never succeed.
func (h *handler) Handle(ctx context.Context, raw json.RawMessage) (Result, error) {
	ev, err := keyevent.Parse(raw)
	if errors.Is(err, keyevent.ErrMalformed) || errors.Is(err, keyevent.ErrUnsupported) {
		h.log.WarnContext(ctx, "event rejected", "action", "rejected", "reason", err.Error(), "bytes", len(raw))
		return Result{Rejected: err.Error()}, nil
	}
	if err != nil {
		return Result{}, err
	}
	res := Result{EventID: ev.ID, Event: ev.Name}
	res.Outcomes, err = h.svc.HandleKeyEvent(ctx, ev)
	for _, o := range res.Outcomes {
		// The store holds the change already; announcing it is the edge's job, failed or not
		// (an error for another key of the event leaves this one's change to announce).
		for _, inc := range o.Changed {
			_ = slackmessage.AnnounceOrWarn(ctx, h.announcer, inc, h.log)
		}
		level := slog.LevelInfo
		if o.Action == intake.ActionFailed {
			// Permanent for this key (DescribeKey denied) or failed with the others retried:
			// seen at ERROR once per delivery, and by the KeyUnreadable alarm (below) or the
			// errors alarm and the failure queue.
			level = slog.LevelError
		}
		h.log.Log(ctx, level, "key event", "event_id", ev.ID, "event_name", ev.Name, "key_arn", o.KeyARN,
			"action", o.Action, "incident_id", o.IncidentID, "reason", o.Reason, "actor", ev.Actor.Name())
	}
	if err == nil && h.metrics != nil {
		// A failure for a key of an event that is acknowledged (DescribeKey denied) is never
		// retried: the KeyUnreadable alarm sees it. A retried event is seen by the errors
		// alarm and, in the end, the on-failure queue's.
		for _, o := range res.Outcomes {
			if o.Action != intake.ActionFailed {
				continue
			}
			if merr := h.metrics.Count(page.MetricKeyUnreadable, o.KeyARN, o.Reason); merr != nil {
				h.log.ErrorContext(ctx, "metric not written", "metric", page.MetricKeyUnreadable, "key_arn", o.KeyARN, "error", merr)
			}
		}
	}
	if err != nil {
		// Only AWS failures reach here (throttling, an API down): Lambda retries the event.
		h.log.ErrorContext(ctx, "key event failed; will be retried", "event_id", ev.ID, "event_name", ev.Name, "error", err)
		return res, err
	}
	return res, nil
}
