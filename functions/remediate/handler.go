package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/keywarden/keywarden/internal/handoff"
	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/remedy"
	"github.com/keywarden/keywarden/internal/slackmessage"
)

// runner plans and runs one incident's remediation; *remedy.Runner fits.
type runner interface {
	Run(ctx context.Context, id string, by string) (incident.Incident, []remedy.Step, error)
	Reboot(ctx context.Context, id, instance, runID string) (incident.Incident, []remedy.Step, error)
}

// incidents is the part of the incident store the handler uses; *dynamostore.Store fits.
type incidents interface {
	Get(ctx context.Context, id string) (incident.Incident, error)
}

// announcer refreshes an incident's Slack message; *slackmessage.Announcer fits.
type announcer interface {
	Announce(ctx context.Context, inc incident.Incident) error
}

// Result is what the function returns: the incident's state after the run and every step with
// its result, as also recorded on the timeline.
type Result struct {
	IncidentID string        `json:"incident_id,omitempty"`
	State      string        `json:"state,omitempty"`
	Steps      []remedy.Step `json:"steps,omitempty"`
	// Error is why the run stopped, when it did; the invocation still succeeds unless a retry
	// could help.
	Error string `json:"error,omitempty"`
	// Rejected explains an input that can never be handled.
	Rejected string `json:"rejected,omitempty"`
}

type handler struct {
	runner    runner
	store     incidents
	announcer announcer
	log       *slog.Logger
	// announceTimeout bounds the message refresh after a run; a failure is repaired later.
	announceTimeout time.Duration
}

// Handle runs one remediation. It returns an error only when remedy.Retryable says running
// again could help (throttling, an AWS fault, a key not yet reading Enabled), so that Lambda's
// asynchronous retries run it again; every run re-plans from live state, so a retry repeats
// nothing that is done. Anything else is logged and acknowledged: the runner has already given
// the incident back to the approvers (incident.GiveBack) with the reason, including a run that
// went through every step but left clusters needing attention (remedy.ErrIncomplete). A run
// that succeeded leaves the incident remediating; the lifecycle resolves it once the clusters
// read available. The message is refreshed after every run.
func (h *handler) Handle(ctx context.Context, raw json.RawMessage) (Result, error) {
	req, err := handoff.Decode(raw)
	if err != nil {
		h.log.WarnContext(ctx, "remediation rejected", "action", "rejected", "reason", err.Error(), "bytes", len(raw))
		return Result{Rejected: err.Error()}, nil
	}
	// Only SlackActionFunction moves an incident to remediating, once the approvals it needs are
	// recorded. Anything else asking this function to re-enable a key — a hand invoke, a
	// stray event — is refused: the function's role can enable keys, the caller's need not.
	h.log.InfoContext(ctx, "remediation requested", "incident_id", req.IncidentID, "run_id", req.RunID, "instance", req.Instance, "source", req.Source)
	if req.Instance != "" {
		return h.reboot(ctx, req)
	}
	current, err := h.store.Get(ctx, req.IncidentID)
	switch {
	case errors.Is(err, incident.ErrNotFound):
		return Result{IncidentID: req.IncidentID, Error: err.Error()}, nil
	case err != nil:
		return Result{IncidentID: req.IncidentID}, fmt.Errorf("remediate %s: %w", req.IncidentID, err)
	case current.State.Closed():
		return Result{IncidentID: req.IncidentID, State: string(current.State),
			Error: fmt.Sprintf("incident %s is closed (%s): nothing to remediate", req.IncidentID, current.State)}, nil
	case current.State != incident.StateRemediating:
		reason := fmt.Sprintf("not approved: incident %s is %s, and only an approved click in Slack starts a remediation", req.IncidentID, current.State)
		h.log.WarnContext(ctx, "remediation refused", "incident_id", req.IncidentID, "action", "refused", "reason", reason)
		return Result{IncidentID: req.IncidentID, State: string(current.State), Error: reason}, nil
	case req.RunID != "" && req.RunID != remedy.RunID(current):
		reason := fmt.Sprintf("not approved: run %s is not incident %s's current run (%s): it was given back or approved again since",
			req.RunID, req.IncidentID, remedy.RunID(current))
		h.log.WarnContext(ctx, "remediation refused", "incident_id", req.IncidentID, "run_id", req.RunID, "action", "refused", "reason", reason)
		return Result{IncidentID: req.IncidentID, State: string(current.State), Error: reason}, nil
	}
	by := strings.Join(req.ApprovedBy, ",")
	inc, steps, err := h.runner.Run(ctx, req.IncidentID, by)
	res := Result{IncidentID: req.IncidentID, State: string(inc.State), Steps: steps}
	for _, s := range steps {
		h.log.InfoContext(ctx, "remediation step", "incident_id", req.IncidentID, "run_id", remedy.RunID(inc), "action", s.Name,
			"target", s.Target, "result", s.Result, "detail", s.Detail)
	}

	retry := err != nil && !errors.Is(err, incident.ErrNotFound) && remedy.Retryable(err)
	if inc.ID != "" {
		actx, cancel := context.WithTimeout(ctx, h.announceTimeout)
		_ = slackmessage.AnnounceOrWarn(actx, h.announcer, inc, h.log)
		cancel()
	}

	switch {
	case err == nil:
		h.log.InfoContext(ctx, "remediation done", "incident_id", req.IncidentID, "action", "remediated", "approved_by", by, "state", res.State)
		return res, nil
	case errors.Is(err, remedy.ErrUnrecorded):
		// The incident still reads remediating with nobody acting: fail the invocation, so the
		// RemediateErrorsAlarm sees it and Lambda retries (the run's lease then lets it go on).
		res.Error = err.Error()
		h.log.ErrorContext(ctx, "remediation's end not recorded; will be retried", "incident_id", req.IncidentID, "action", "unrecorded", "error", err)
		return res, err
	case errors.Is(err, remedy.ErrClaimed):
		// A second delivery of the hand-off (the click's, the reconciler's, Lambda's retry):
		// the run is held by another invocation or finished; nothing to do twice.
		res.Error = err.Error()
		h.log.InfoContext(ctx, "remediation already claimed", "incident_id", req.IncidentID, "action", "claimed", "error", err)
		return res, nil
	case errors.Is(err, remedy.ErrPaused) && !retry:
		// Stopped by its time limit, with where recorded on the incident: the reconciler
		// starts the next invocation within a minute.
		res.Error = err.Error()
		h.log.InfoContext(ctx, "remediation paused; the reconciler continues it", "incident_id", req.IncidentID, "action", "paused", "error", err)
		return res, nil
	case retry:
		h.log.ErrorContext(ctx, "remediation failed; will be retried", "incident_id", req.IncidentID, "action", "retry", "error", err)
		return res, err
	case errors.Is(err, remedy.ErrIncomplete):
		res.Error = err.Error()
		h.log.WarnContext(ctx, "remediation incomplete", "incident_id", req.IncidentID, "action", "incomplete", "state", res.State, "error", err)
		return res, nil
	default:
		res.Error = err.Error()
		h.log.WarnContext(ctx, "remediation stopped", "incident_id", req.IncidentID, "action", "stopped", "error", err)
		return res, nil
	}
}

// reboot runs the approved reboot of one instance (the Reboot instance button). Only an
// approved click records a reboot's run ID on the instance, and the runner claims it, so a
// request naming any other run does nothing.
func (h *handler) reboot(ctx context.Context, req handoff.Request) (Result, error) {
	if req.RunID == "" {
		return Result{IncidentID: req.IncidentID, Rejected: "a reboot request needs the run_id its approval recorded"}, nil
	}
	inc, steps, err := h.runner.Reboot(ctx, req.IncidentID, req.Instance, req.RunID)
	res := Result{IncidentID: req.IncidentID, State: string(inc.State), Steps: steps}
	for _, s := range steps {
		h.log.InfoContext(ctx, "reboot step", "incident_id", req.IncidentID, "run_id", req.RunID, "action", s.Name,
			"target", s.Target, "result", s.Result, "detail", s.Detail)
	}
	if inc.ID != "" && !errors.Is(err, remedy.ErrClaimed) {
		actx, cancel := context.WithTimeout(ctx, h.announceTimeout)
		_ = slackmessage.AnnounceOrWarn(actx, h.announcer, inc, h.log)
		cancel()
	}
	switch {
	case errors.Is(err, remedy.ErrUnrecorded):
		// The reboot still reads running and its button stays away: fail the invocation, so
		// the RemediateErrorsAlarm sees it.
		res.Error = err.Error()
		h.log.ErrorContext(ctx, "reboot's end not recorded", "incident_id", req.IncidentID, "instance", req.Instance, "action", "unrecorded", "error", err)
		return res, err
	case err != nil:
		res.Error = err.Error()
		h.log.WarnContext(ctx, "reboot not done", "incident_id", req.IncidentID, "instance", req.Instance, "error", err)
	}
	return res, nil
}
