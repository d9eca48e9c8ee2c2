package main

import (
	"cmp"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/slack-go/slack"

	"github.com/keywarden/keywarden/internal/approval"
	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/slackui"
)

// incidents is the part of the incident store the handler uses; *dynamostore.Store fits.
type incidents interface {
	Get(ctx context.Context, id string) (incident.Incident, error)
	Update(ctx context.Context, id string, mutate func(*incident.Incident) error) (incident.Incident, error)
	UpdateAt(ctx context.Context, id string, version int64, mutate func(*incident.Incident) error) (incident.Incident, error)
	RecordRefusal(ctx context.Context, id string, e incident.Entry) (first bool, err error)
}

// announcer refreshes an incident's Slack message and posts the one thread reply of a refused
// click; *announce.Announcer fits.
type announcer interface {
	Announce(ctx context.Context, inc incident.Incident) error
	ReplyRefusal(ctx context.Context, id string, e incident.Entry) error
}

// remediations hands an approved remediation to RemediateFunction.
type remediations interface {
	Start(ctx context.Context, req remediationRequest) error
}

// slackAPI is the part of Slack's Web API the handler calls; *slack.Client fits.
type slackAPI interface {
	approval.GroupLister
	PostEphemeralContext(ctx context.Context, channelID, userID string, options ...slack.MsgOption) (string, error)
}

// handler answers Slack's interaction requests for the incident message's buttons.
type handler struct {
	signingSecret string
	approvers     approval.Approvers
	required      int
	slack         slackAPI
	store         incidents
	remediations  remediations
	announcer     announcer
	log           *slog.Logger
	now           func() time.Time
	// followUp bounds what is done after the decision is recorded and before Slack is
	// answered: the ephemeral reply, the message refresh and a refusal's thread reply. Slack
	// gives 3 s in all; a refresh that does not finish in time is repaired by the next announce
	// (the reconciler runs every few minutes).
	followUp time.Duration
}

// actBudget and answerBudget bound a click's answer from when the request arrived: deciding
// (the approver check, the conditional write, the hand-off) must end by actBudget, everything by
// answerBudget, inside Slack's 3 s with room for the network both ways.
const (
	actBudget    = 1800 * time.Millisecond
	answerBudget = 2500 * time.Millisecond
)

// defaultFollowUp leaves well over a second of Slack's 3 s for the verification, the store
// and the Lambda hand-off, and for a cold start.
const defaultFollowUp = 1500 * time.Millisecond

// outcome is what one click came to: for the log, the user, and the message.
type outcome struct {
	incidentID string
	action     string
	result     string
	// reply, when set, is shown to the clicking user only (chat.postEphemeral).
	reply string
	// refresh, when set, is the incident the message should now show.
	refresh *incident.Incident
	// stale marks a click on an out-of-date message: the follow-up refreshes the message from
	// the store first, and only then tells the user, so the reply says the message is current
	// only when it is.
	stale bool
	// refusal, when set, is a refused click that RecordRefusal reported as the first of its
	// window: it gets the one thread reply.
	refusal *incident.Entry
}

// Handle takes the Function URL request (payload format 2.0). The signature is checked on the
// raw bytes, base64-decoded when the URL flagged them, before anything is parsed: a request that
// fails it gets 401 and changes nothing. Every click that passes is answered 200 with an empty
// body; what it came to is said with an ephemeral message, because Slack ignores a response
// body for block_actions.
func (h *handler) Handle(ctx context.Context, req events.LambdaFunctionURLRequest) (events.LambdaFunctionURLResponse, error) {
	start := time.Now()
	body := []byte(req.Body)
	if req.IsBase64Encoded {
		b, err := base64.StdEncoding.DecodeString(req.Body)
		if err != nil {
			h.log.WarnContext(ctx, "request rejected", "action", "rejected", "reason", "body is not valid base64", "bytes", len(req.Body))
			return respond(http.StatusBadRequest, "bad request"), nil
		}
		body = b
	}
	if err := approval.Verify(header(req.Headers), body, h.signingSecret, h.now()); err != nil {
		if errors.Is(err, approval.ErrBadSignature) {
			h.log.WarnContext(ctx, "request rejected", "action", "rejected", "reason", err.Error(),
				"source_ip", req.RequestContext.HTTP.SourceIP, "bytes", len(body))
			return respond(http.StatusUnauthorized, "invalid signature"), nil
		}
		h.log.ErrorContext(ctx, "cannot verify slack requests", "error", err)
		return respond(http.StatusInternalServerError, "internal error"), nil
	}
	click, err := approval.ParseClick(body)
	switch {
	case errors.Is(err, approval.ErrUnsupported):
		h.log.InfoContext(ctx, "interaction ignored", "action", "ignored", "reason", err.Error())
		return respond(http.StatusOK, ""), nil
	case err != nil:
		h.log.WarnContext(ctx, "request rejected", "action", "rejected", "reason", err.Error(), "bytes", len(body))
		return respond(http.StatusBadRequest, "bad request"), nil
	}

	// Slack shows the user an error after 3 s. Deciding gets most of that, the follow-up
	// (ephemeral reply, message refresh) what is left of it: a slow Slack or AWS can make a
	// click fail and say so, never make Slack time out.
	actCtx, cancel := context.WithDeadline(ctx, start.Add(actBudget))
	out := h.act(actCtx, click)
	cancel()
	h.followUpOn(ctx, click, out, start.Add(answerBudget))
	h.log.InfoContext(ctx, "slack click", "incident_id", out.incidentID, "action", click.ActionID, "user_id", click.UserID,
		"result", out.result, "replied", out.reply != "" || out.stale, "thread_reply", out.refusal != nil, "ms", time.Since(start).Milliseconds())
	return respond(http.StatusOK, ""), nil
}

// followUpOn sends the ephemeral reply and refreshes the message at once, both bounded by
// h.followUp and by the answer's deadline; failures are logged and left for the next
// announce to repair.
func (h *handler) followUpOn(ctx context.Context, click approval.Click, out outcome, deadline time.Time) {
	if d := time.Now().Add(h.followUp); d.Before(deadline) {
		deadline = d
	}
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	var wg sync.WaitGroup
	switch {
	case out.stale:
		wg.Go(func() {
			reply := replyStale
			if h.refreshLatest(ctx, out.incidentID) {
				reply = replyStaleRefreshed
			}
			h.sendEphemeral(ctx, click, out.incidentID, reply)
		})
	case out.reply != "":
		wg.Go(func() { h.sendEphemeral(ctx, click, out.incidentID, out.reply) })
	}
	if out.refresh != nil {
		wg.Go(func() { h.announce(ctx, *out.refresh) })
	}
	if out.refusal != nil {
		wg.Go(func() {
			if err := h.announcer.ReplyRefusal(ctx, out.incidentID, *out.refusal); err != nil {
				h.log.WarnContext(ctx, "refused click not replied in the thread", "incident_id", out.incidentID, "user_id", click.UserID, "error", err)
			}
		})
	}
	wg.Wait()
}

// refreshLatest makes the message show the stored incident and reports whether it does now.
func (h *handler) refreshLatest(ctx context.Context, id string) bool {
	cur, err := h.store.Get(ctx, id)
	if err != nil {
		h.log.WarnContext(ctx, "could not read the incident to refresh its message", "incident_id", id, "error", err)
		return false
	}
	return h.announce(ctx, cur)
}

// announce refreshes the message and reports whether it worked; a failure is logged and left
// for the next announce (the reconciler runs every few minutes) to repair.
func (h *handler) announce(ctx context.Context, inc incident.Incident) bool {
	if err := h.announcer.Announce(ctx, inc); err != nil {
		h.log.WarnContext(ctx, "slack message not updated; the reconciler will repair it", "incident_id", inc.ID, "error", err)
		return false
	}
	return true
}

func (h *handler) sendEphemeral(ctx context.Context, click approval.Click, id, text string) {
	if err := h.ephemeral(ctx, click, text); err != nil {
		h.log.WarnContext(ctx, "ephemeral reply not sent", "incident_id", id, "user_id", click.UserID, "error", err)
	}
}

// ephemeral shows text to the clicking user only, in the channel of the message; a click
// without a channel (Slack always sends one for a message button) is answered via response_url.
func (h *handler) ephemeral(ctx context.Context, click approval.Click, text string) error {
	if click.ChannelID != "" {
		_, err := h.slack.PostEphemeralContext(ctx, click.ChannelID, click.UserID, slack.MsgOptionText(text, false))
		return err
	}
	if click.ResponseURL != "" {
		err := slack.PostWebhookContext(ctx, click.ResponseURL, &slack.WebhookMessage{Text: text, ResponseType: slack.ResponseTypeEphemeral})
		// The URL can post to the channel: keep it out of the error, and so out of the log.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			return fmt.Errorf("post to response_url: %w", uerr.Err)
		}
		return err
	}
	return errors.New("click has neither a channel nor a response_url")
}

// Replies. They say what happened and what to do; the detail goes to the log.
const (
	replyNotAllowed      = ":no_entry_sign: You are not allowed to act on keywarden incidents, so nothing was done. Your attempt is on the incident's timeline. Ask an on-call approver."
	replyCannotCheck     = ":warning: keywarden could not check whether you may approve (Slack user groups did not answer). Nothing was done; try again in a minute."
	replyStaleRefreshed  = ":hourglass: That message was out of date: the incident changed since it was shown (or this click was already handled), so nothing was done. The message now shows the current state; click again if it is still needed."
	replyStale           = ":hourglass: That message was out of date: the incident changed since it was shown (or this click was already handled), so nothing was done. The message could not be refreshed just now; it catches up within a few minutes. Check the incident before clicking again."
	replyClosed          = ":information_source: This incident is already closed, so nothing was done."
	replyRemediating     = ":gear: Remediation is already running for this incident; nothing else was done. Each step is posted in the thread."
	replyAlreadyApproved = ":hourglass: You have already approved; remediation needs another approver. Nothing was done twice."
	replyNotFound        = ":warning: keywarden has no such incident; nothing was done."
	replyBadButton       = ":warning: That button is not one keywarden made; nothing was done."
	replyFailed          = ":warning: keywarden could not record your click, so nothing may have changed. Check the message and try again."
	replyHandOff         = ":warning: Your approval was recorded but the remediation could not be started. The incident is open again: click *Re-enable key & restart clusters* to retry."
)

// errRunMovedOn: a failed hand-off found the incident no longer remediating under its run.
var errRunMovedOn = errors.New("the run is no longer the incident's current remediation")

// act authorises the click and applies it; it never returns an error, because every outcome,
// a failure included, is something to tell the user. An approver's click is one conditional
// update on the version the message showed, deciding with approval.Apply; a refused click —
// a stranger, a stale message, a closed or busy incident, a repeated approval, an incident one
// click cannot fix, a button keywarden did not make — changes nothing and is kept with the
// store's RecordRefusal.
func (h *handler) act(ctx context.Context, click approval.Click) outcome {
	out := outcome{action: click.ActionID}
	id, version, err := slackui.ParseButtonValue(click.Value)
	if err != nil {
		// No incident to keep the refusal beside: the log has it.
		out.result, out.reply = "bad button value", replyBadButton
		return out
	}
	out.incidentID = id
	now := h.now().UTC()
	a := approval.Act{
		User: click.UserID, Action: click.ActionID, Version: version, At: now, Required: h.required,
		// Slack always sends action_ts; the fallback keeps two clicks apart if it ever does not.
		ActionTS: cmp.Or(click.ActionTS, fmt.Sprintf("%d.%06d", now.Unix(), now.Nanosecond()/1000)),
	}
	switch click.ActionID {
	case slackui.ActionRemediate, slackui.ActionAcknowledge, slackui.ActionIntentional:
	default:
		return h.refuse(ctx, a, out, "not a keywarden button", replyBadButton)
	}

	ok, err := h.approvers.Allowed(ctx, h.slack, click.UserID)
	if err != nil {
		h.log.WarnContext(ctx, "approver check failed", "incident_id", id, "user_id", click.UserID, "error", err)
		out.result, out.reply = "approver check failed", replyCannotCheck
		return out
	}
	if !ok {
		return h.refuse(ctx, a, out, "not an approver", replyNotAllowed)
	}

	var res approval.Outcome
	inc, err := h.store.UpdateAt(ctx, id, version, func(i *incident.Incident) error {
		var err error
		res, err = approval.Apply(i, a)
		return err
	})
	if err != nil {
		return h.refused(ctx, a, err, out)
	}
	out.refresh = &inc
	switch {
	case click.ActionID == slackui.ActionAcknowledge:
		out.result = "acknowledged"
		return out
	case click.ActionID == slackui.ActionIntentional:
		out.result = "marked intentional"
		return out
	case !res.Started:
		out.result = fmt.Sprintf("approval %d of %d", res.Approvals, res.Required)
		out.reply = fmt.Sprintf(":white_check_mark: Your approval is recorded (%d of %d). Remediation starts when another approver clicks *Re-enable key & restart clusters*.",
			res.Approvals, res.Required)
		return out
	}
	out.result = fmt.Sprintf("approval %d of %d; remediation %s started", res.Approvals, res.Required, res.RunID)
	if err := h.remediations.Start(ctx, remediationRequest{IncidentID: id, ApprovedBy: res.ApprovedBy, RunID: res.RunID}); err != nil {
		h.log.ErrorContext(ctx, "remediation hand-off failed", "incident_id", id, "run_id", res.RunID, "error", err)
		out.result, out.reply = "hand-off failed", replyHandOff
		if back, ok := h.giveBack(ctx, id, res.RunID); ok {
			out.refresh = &back
		}
	}
	return out
}

// giveBack gives the incident back to the approvers after its run could not be handed to
// RemediateFunction: the model's one rule for a run that cannot go on (GiveBack) ends it, and
// the message offers the button again with a fresh round. It runs even when the act deadline is
// what failed the hand-off.
func (h *handler) giveBack(ctx context.Context, id, runID string) (incident.Incident, bool) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	back, err := h.store.Update(ctx, id, func(i *incident.Incident) error {
		if i.State != incident.StateRemediating || i.Remediation.RunID != runID {
			return errRunMovedOn
		}
		return i.GiveBack("could not hand remediation run "+runID+" to RemediateFunction", h.now())
	})
	if err != nil {
		h.log.ErrorContext(ctx, "could not give the incident back after a failed hand-off; the reconciler will see it remediating",
			"incident_id", id, "run_id", runID, "error", err)
		return incident.Incident{}, false
	}
	return back, true
}

// refused turns an update that changed nothing into a refusal and its reply; a store failure is
// not a refusal, and a missing incident has nothing to keep one beside.
func (h *handler) refused(ctx context.Context, a approval.Act, err error, out outcome) outcome {
	var nf *incident.NotFixableError
	switch {
	case errors.Is(err, incident.ErrNotFound):
		out.result, out.reply = "no such incident", replyNotFound
		return out
	case errors.Is(err, incident.ErrStale):
		out.stale = true
		return h.refuse(ctx, a, out, fmt.Sprintf("the message was out of date (version %d)", a.Version), "")
	case errors.Is(err, approval.ErrClosed):
		return h.refuse(ctx, a, out, "the incident is closed", replyClosed)
	case errors.Is(err, approval.ErrRemediating):
		return h.refuse(ctx, a, out, "remediation is already running", replyRemediating)
	case errors.Is(err, incident.ErrAlreadyApproved):
		return h.refuse(ctx, a, out, "already approved", replyAlreadyApproved)
	case errors.As(err, &nf):
		return h.refuse(ctx, a, out, "one click cannot fix this", ":no_entry: One click cannot fix this, so nothing was done. "+nf.Instead)
	case errors.Is(err, approval.ErrNotFixable), errors.Is(err, incident.ErrIllegalTransition):
		return h.refuse(ctx, a, out, err.Error(), ":no_entry: Nothing was done: "+err.Error()+".")
	}
	h.log.ErrorContext(ctx, "could not record click", "incident_id", out.incidentID, "error", err)
	out.result, out.reply = "store error", replyFailed
	return out
}

// refuse keeps a refused click beside the incident — no update, no new version, the audit
// trail keeps every attempt — and marks it for the one thread reply when the store reports it
// as the first of its user's minute, so a burst of refused clicks is one reply, not a flood.
func (h *handler) refuse(ctx context.Context, a approval.Act, out outcome, reason, reply string) outcome {
	out.result, out.reply = reason, reply
	e := incident.NewRefusal(a.User, a.Action, a.Action+": refused, "+reason, a.ClickID(), a.At)
	first, err := h.store.RecordRefusal(ctx, out.incidentID, e)
	switch {
	case errors.Is(err, incident.ErrNotFound):
		out.result, out.reply, out.stale = "no such incident", replyNotFound, false
	case err != nil:
		h.log.ErrorContext(ctx, "could not record a refused click", "incident_id", out.incidentID, "user_id", a.User, "error", err)
	case first:
		out.refusal = &e
	}
	return out
}

// header turns the Function URL's header map (lower-case names, one value each) into an
// http.Header; approval.Verify matches names case-insensitively either way.
func header(m map[string]string) http.Header {
	h := make(http.Header, len(m))
	for k, v := range m {
		h.Set(k, v)
	}
	return h
}

func respond(status int, body string) events.LambdaFunctionURLResponse {
	r := events.LambdaFunctionURLResponse{StatusCode: status, Body: body}
	if body != "" {
		r.Headers = map[string]string{"Content-Type": "text/plain; charset=utf-8"}
	}
	return r
}
