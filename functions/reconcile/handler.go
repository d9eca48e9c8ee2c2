package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"

	"github.com/keywarden/keywarden/internal/reconcile"
)

type runner interface {
	Run(ctx context.Context) (reconcile.Report, error)
	RunHandoffs(ctx context.Context) (reconcile.Report, error)
}

type handler struct {
	r   runner
	log *slog.Logger
}

func newHandler(r runner, log *slog.Logger) *handler { return &handler{r: r, log: log} }

// Handle runs one reconcile pass. Every run looks at everything, except an event
// {"pass": "handoff"} (the one-minute schedule), which runs only the hand-off recovery: approved
// remediations not started are started, watched instances decided.
func (h *handler) Handle(ctx context.Context, raw json.RawMessage) (reconcile.Report, error) {
	var in struct {
		Pass string `json:"pass"`
	}
	if json.Unmarshal(raw, &in) == nil && in.Pass == "handoff" {
		rep, err := h.r.RunHandoffs(ctx)
		for _, o := range rep.Outcomes {
			level := slog.LevelInfo
			if o.Action == reconcile.ActionFailed {
				level = slog.LevelError
			}
			h.log.Log(ctx, level, "hand-off pass", "incident_id", o.IncidentID, "key_arn", o.KeyARN, "action", o.Action, "reason", o.Reason)
		}
		if err != nil {
			h.log.ErrorContext(ctx, "hand-off pass failed", "error", err)
			return rep, err
		}
		// An approved remediation that cannot be handed off must not stay a log line: the
		// invocation fails, so the function's Errors alarm sees it (and Lambda tries again).
		if n := rep.Failures; n > 0 {
			return rep, fmt.Errorf("hand-off pass: %d of its hand-offs or watches failed", n)
		}
		return rep, nil
	}
	rep, err := h.r.Run(ctx)
	for _, o := range rep.Outcomes {
		level := slog.LevelInfo
		if o.Action == reconcile.ActionFailed || o.Action == reconcile.ActionAnnounceFailed {
			level = slog.LevelWarn
		}
		h.log.Log(ctx, level, "reconcile", "incident_id", o.IncidentID, "key_arn", o.KeyARN, "action", o.Action, "reason", o.Reason)
	}
	h.log.InfoContext(ctx, "reconcile run", "action", "run", "incidents", rep.Incidents, "updated", rep.Updated,
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
