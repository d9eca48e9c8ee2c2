package main

import (
	"context"
	"encoding/json"
	"log/slog"

	"github.com/keywarden/keywarden/internal/reconcile"
)

type runner interface {
	Run(ctx context.Context) (reconcile.Report, error)
	RetryOutbox(ctx context.Context) (reconcile.Report, error)
}

type handler struct {
	r   runner
	log *slog.Logger
}

func newHandler(r runner, log *slog.Logger) *handler { return &handler{r: r, log: log} }

// Handle runs one reconcile pass, or, when the event is the one-minute outbox schedule's
// ({"pass": "outbox"}), only the retry of pending Slack deliveries. Any other content (the
// 5-minute schedule's event) runs the whole pass: every run looks at everything.
func (h *handler) Handle(ctx context.Context, ev json.RawMessage) (reconcile.Report, error) {
	var in struct {
		Pass string `json:"pass"`
	}
	_ = json.Unmarshal(ev, &in) // anything else is a scheduled event: the whole pass
	run, pass := h.r.Run, "run"
	if in.Pass == reconcile.OutboxEvent {
		run, pass = h.r.RetryOutbox, reconcile.OutboxEvent
	}
	rep, err := run(ctx)
	for _, o := range rep.Outcomes {
		level := slog.LevelInfo
		if o.Action == reconcile.ActionFailed || o.Action == reconcile.ActionAnnounceFailed {
			level = slog.LevelWarn
		}
		h.log.Log(ctx, level, "reconcile", "incident_id", o.IncidentID, "key_arn", o.KeyARN, "action", o.Action, "reason", o.Reason)
	}
	h.log.InfoContext(ctx, "reconcile run", "action", pass, "incidents", rep.Incidents, "updated", rep.Updated,
		"resolved", rep.Resolved, "lost", rep.Lost, "reminders", rep.Reminders, "opened", rep.Opened,
		"looked_up", rep.LookedUp, "keys_seen", rep.KeysSeen, "calls", rep.Calls, "failures", rep.Failures,
		"incomplete", rep.Incomplete)
	if err != nil {
		// Nothing could be checked (DynamoDB or RDS unavailable); the next scheduled run tries again.
		h.log.ErrorContext(ctx, "reconcile run failed", "error", err)
		return rep, err
	}
	return rep, nil
}
