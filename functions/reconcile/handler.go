package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/keywarden/keywarden/internal/reconcile"
)

type runner interface {
	Run(ctx context.Context) (reconcile.Report, error)
	RetryOutbox(ctx context.Context) (reconcile.Report, error)
	RunHandoffs(ctx context.Context) (reconcile.Report, error)
}

type handler struct {
	r   runner
	log *slog.Logger
	// metrics receives the run's embedded-metric-format line (stdout in Lambda); nil for none.
	metrics  io.Writer
	function string
	now      func() time.Time
}

func newHandler(r runner, log *slog.Logger) *handler {
	return &handler{r: r, log: log, now: time.Now}
}

// withMetrics makes every run write its failure metric (reconcile.MetricLine) to w, named for
// function (AWS_LAMBDA_FUNCTION_NAME, the alarm's dimension).
func (h *handler) withMetrics(w io.Writer, function string) *handler {
	h.metrics, h.function = w, function
	return h
}

// HandoffEvent is the input of the one-minute hand-off schedule.
const HandoffEvent = "handoff"

// Handle runs one reconcile pass. Two one-minute schedules name a narrower pass in their input:
// {"pass": "outbox"} retries only pending Slack deliveries, {"pass": "handoff"} only the hand-off
// recovery (approved remediations not started are started, watched instances decided). Any other
// content (the 5-minute schedule's event) runs the whole pass: every run looks at everything.
func (h *handler) Handle(ctx context.Context, ev json.RawMessage) (reconcile.Report, error) {
	var in struct {
		Pass string `json:"pass"`
	}
	_ = json.Unmarshal(ev, &in) // anything else is a scheduled event: the whole pass
	if in.Pass == HandoffEvent {
		return h.handoffs(ctx)
	}
	run, pass := h.r.Run, "run"
	if in.Pass == reconcile.OutboxEvent {
		run, pass = h.r.RetryOutbox, reconcile.OutboxEvent
	}
	rep, err := run(ctx)
	h.logOutcomes(ctx, "reconcile", rep)
	h.log.InfoContext(ctx, "reconcile run", "action", pass, "incidents", rep.Incidents, "updated", rep.Updated,
		"resolved", rep.Resolved, "lost", rep.Lost, "reminders", rep.Reminders, "opened", rep.Opened,
		"looked_up", rep.LookedUp, "keys_seen", rep.KeysSeen, "calls", rep.Calls, "failures", rep.Failures,
		"incomplete", rep.Incomplete)
	if h.metrics != nil {
		if _, werr := h.metrics.Write(reconcile.MetricLine(h.function, reconcile.FailureCount(rep, err), h.now())); werr != nil {
			h.log.ErrorContext(ctx, "failure metric not written", "error", werr)
		}
	}
	if err != nil {
		// Nothing could be checked (DynamoDB or RDS unavailable); the next scheduled run tries again.
		h.log.ErrorContext(ctx, "reconcile run failed", "error", err)
		return rep, err
	}
	return rep, nil
}

// handoffs runs the hand-off recovery pass. An approved remediation that cannot be handed off
// must not stay a log line: the invocation fails, so the function's Errors alarm sees it (and
// Lambda tries again).
func (h *handler) handoffs(ctx context.Context) (reconcile.Report, error) {
	rep, err := h.r.RunHandoffs(ctx)
	h.logOutcomes(ctx, "hand-off pass", rep)
	if err != nil {
		h.log.ErrorContext(ctx, "hand-off pass failed", "error", err)
		return rep, err
	}
	if n := rep.Failures; n > 0 {
		return rep, fmt.Errorf("hand-off pass: %d of its hand-offs or watches failed", n)
	}
	return rep, nil
}

// logOutcomes logs each decision of a pass under msg: failures (a failed outcome, a Slack
// message that could not be updated) at ERROR, everything else at INFO. A whole pass and the
// outbox pass also count the failures in their metric, whose alarm pages someone; the hand-off
// pass fails its invocation on a failed outcome, and leaves a message it could not update
// pending for the outbox pass, which counts it if it fails again.
func (h *handler) logOutcomes(ctx context.Context, msg string, rep reconcile.Report) {
	for _, o := range rep.Outcomes {
		level := slog.LevelInfo
		if o.Action == reconcile.ActionFailed || o.Action == reconcile.ActionAnnounceFailed {
			level = slog.LevelError
		}
		h.log.Log(ctx, level, msg, "incident_id", o.IncidentID, "key_arn", o.KeyARN, "action", o.Action, "reason", o.Reason)
	}
}
