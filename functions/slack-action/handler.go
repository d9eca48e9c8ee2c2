package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/slack-go/slack"

	"github.com/keywarden/keywarden/internal/approval"
	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/slackui"
)

// incidents is the part of the incident store the handler uses; *incident.Store fits.
type incidents interface {
	Get(ctx context.Context, id string) (incident.Incident, error)
	Update(ctx context.Context, id string, mutate func(*incident.Incident) error) (incident.Incident, error)
	UpdateAt(ctx context.Context, id string, version int64, mutate func(*incident.Incident) error) (incident.Incident, error)
}

// announcer refreshes an incident's Slack message; *announce.Announcer fits.
type announcer interface {
	Announce(ctx context.Context, inc incident.Incident) error
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
	// answered: the ephemeral reply and the message refresh. Slack gives 3 s in all; what does
	// not finish in time is repaired by the next announce (the reconciler runs every few minutes).
	followUp time.Duration
}

// remediationStarted marks the click that reached quorum.
const remediationStarted = "remediation started"

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
		"result", out.result, "replied", out.reply != "", "ms", time.Since(start).Milliseconds())
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
	if out.reply != "" {
		wg.Go(func() {
			if err := h.ephemeral(ctx, click, out.reply); err != nil {
				h.log.WarnContext(ctx, "ephemeral reply not sent", "incident_id", out.incidentID, "user_id", click.UserID, "error", err)
			}
		})
	}
	if out.refresh != nil {
		wg.Go(func() {
			if err := h.announcer.Announce(ctx, *out.refresh); err != nil {
				h.log.WarnContext(ctx, "slack message not updated; the reconciler will repair it", "incident_id", out.incidentID, "error", err)
			}
		})
	}
	wg.Wait()
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
	replyNotAllowed  = ":no_entry_sign: You are not allowed to act on keywarden incidents, so nothing was done. Your attempt is on the incident's timeline. Ask an on-call approver."
	replyCannotCheck = ":warning: keywarden could not check whether you may approve (Slack user groups did not answer). Nothing was done; try again in a minute."
	replyStale       = ":hourglass: That message was out of date: the incident changed since it was shown (or this click was already handled), so nothing was done. The message now shows the current state; click again if it is still needed."
	replyClosed      = ":information_source: This incident is already closed, so nothing was done."
	replyRemediating = ":gear: Remediation is already running for this incident; nothing else was done. Each step is posted in the thread."
	replyNotFound    = ":warning: keywarden has no such incident; nothing was done."
	replyBadButton   = ":warning: That button is not one keywarden made; nothing was done."
	replyFailed      = ":warning: keywarden could not record your click, so nothing may have changed. Check the message and try again."
	replyHandOff     = ":warning: Your approval was recorded but the remediation could not be started. The incident is open again: click *Re-enable key & restart clusters* to retry."
)

var (
	errClosed         = errors.New("incident is closed")
	errRemediating    = errors.New("remediation already running")
	errAlreadyApprove = errors.New("already approved by this user")
)

// notFixableError refuses a remediate click on an incident one click cannot fix (the button
// is not shown then; an old message may still have it). instead says what to do.
type notFixableError struct{ instead string }

func (e *notFixableError) Error() string { return "not fixable with one click: " + e.instead }

// act authorises the click and records it; it never returns an error, because every outcome,
// a failure included, is something to tell the user.
func (h *handler) act(ctx context.Context, click approval.Click) outcome {
	out := outcome{action: click.ActionID}
	id, version, err := slackui.ParseButtonValue(click.Value)
	if err != nil {
		out.result, out.reply = "bad button value", replyBadButton
		return out
	}
	out.incidentID = id
	switch click.ActionID {
	case slackui.ActionRemediate, slackui.ActionAcknowledge, slackui.ActionIntentional:
	default:
		out.result, out.reply = "unknown action", replyBadButton
		return out
	}

	ok, err := h.approvers.Allowed(ctx, h.slack, click.UserID)
	if err != nil {
		h.log.WarnContext(ctx, "approver check failed", "incident_id", id, "user_id", click.UserID, "error", err)
		out.result, out.reply = "approver check failed", replyCannotCheck
		return out
	}
	if !ok {
		return h.deny(ctx, click, id, out)
	}

	var mutate func(*incident.Incident) error
	var detail string // what the recorded click says, filled in by mutate
	switch click.ActionID {
	case slackui.ActionAcknowledge:
		mutate = func(i *incident.Incident) error {
			if i.State.Closed() {
				return errClosed
			}
			detail = slackui.ActionAcknowledge + ": on it"
			i.Timeline = append(i.Timeline, h.entry(incident.KindClick, click.UserID, detail))
			return nil
		}
	case slackui.ActionIntentional:
		mutate = func(i *incident.Incident) error {
			if err := busy(i); err != nil {
				return err
			}
			i.State = incident.StateIntentional
			detail = slackui.ActionIntentional + ": closed as intended; reminders stop and no fix runs"
			i.Timeline = append(i.Timeline,
				h.entry(incident.KindClick, click.UserID, detail),
				h.entry(incident.KindClosed, click.UserID, "marked intentional in Slack"))
			return nil
		}
	case slackui.ActionRemediate:
		var approvedBy []string
		var met bool
		mutate = func(i *incident.Incident) error {
			if err := busy(i); err != nil {
				return err
			}
			if ok, instead := slackui.Fixable(*i); !ok {
				return &notFixableError{instead: instead}
			}
			prior := approvals(i.Timeline)
			if metBefore, _ := approval.Quorum(h.required, prior); !metBefore && slices.Contains(prior, click.UserID) {
				return errAlreadyApprove
			}
			met, approvedBy = approval.Quorum(h.required, append(prior, click.UserID))
			detail = fmt.Sprintf("%s: approval %d of %d", slackui.ActionRemediate, min(len(approvedBy), max(h.required, 1)), max(h.required, 1))
			if met {
				i.State = incident.StateRemediating
				detail += "; " + remediationStarted
			}
			i.Timeline = append(i.Timeline, h.entry(incident.KindClick, click.UserID, detail))
			return nil
		}
		inc, err := h.store.UpdateAt(ctx, id, version, mutate)
		if err != nil {
			return h.refused(ctx, id, err, out)
		}
		out.refresh = &inc
		if !met {
			out.result = detail
			out.reply = fmt.Sprintf(":white_check_mark: Your approval is recorded (%d of %d). Remediation starts when another approver clicks *Re-enable key & restart clusters*.",
				len(approvedBy), max(h.required, 1))
			return out
		}
		if err := h.remediations.Start(ctx, remediationRequest{IncidentID: id, ApprovedBy: approvedBy}); err != nil {
			h.log.ErrorContext(ctx, "remediation hand-off failed", "incident_id", id, "error", err)
			// The act deadline may be what failed the hand-off: reopening must still happen.
			rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			defer rcancel()
			back, uerr := h.store.Update(rctx, id, func(i *incident.Incident) error {
				if i.State == incident.StateRemediating {
					i.State = incident.StateOpen
				}
				i.Timeline = append(i.Timeline, h.entry(incident.KindRemediation, "keywarden",
					"could not hand the remediation to RemediateFunction; the incident is open again, approve again to retry"))
				return nil
			})
			if uerr != nil {
				h.log.ErrorContext(ctx, "could not reopen after a failed hand-off; the reconciler will see it remediating", "incident_id", id, "error", uerr)
			} else {
				out.refresh = &back
			}
			out.result, out.reply = "hand-off failed", replyHandOff
			return out
		}
		out.result = detail
		return out
	}

	inc, err := h.store.UpdateAt(ctx, id, version, mutate)
	if err != nil {
		return h.refused(ctx, id, err, out)
	}
	out.result, out.refresh = detail, &inc
	return out
}

// deny records a stranger's attempt and changes nothing else. It is recorded whatever version
// the message showed: the audit trail wants every attempt.
func (h *handler) deny(ctx context.Context, click approval.Click, id string, out outcome) outcome {
	out.result, out.reply = "not an approver", replyNotAllowed
	inc, err := h.store.Update(ctx, id, func(i *incident.Incident) error {
		i.Timeline = append(i.Timeline, h.entry(incident.KindDenied, click.UserID, click.ActionID+": refused, not an approver"))
		return nil
	})
	switch {
	case errors.Is(err, incident.ErrNotFound):
		out.reply = replyNotFound
	case err != nil:
		h.log.ErrorContext(ctx, "could not record a refused click", "incident_id", id, "user_id", click.UserID, "error", err)
	default:
		out.refresh = &inc
	}
	return out
}

// refused turns a click that changed nothing into its reply. A stale click also refreshes the
// message, in case it is out of date because an earlier refresh failed.
func (h *handler) refused(ctx context.Context, id string, err error, out outcome) outcome {
	out.result = err.Error()
	var nf *notFixableError
	switch {
	case errors.Is(err, incident.ErrStale):
		out.reply = replyStale
		if cur, gerr := h.store.Get(ctx, id); gerr == nil {
			out.refresh = &cur
		}
	case errors.Is(err, incident.ErrNotFound):
		out.reply = replyNotFound
	case errors.Is(err, errClosed):
		out.reply = replyClosed
	case errors.Is(err, errRemediating):
		out.reply = replyRemediating
	case errors.Is(err, errAlreadyApprove):
		out.reply = ":hourglass: You have already approved; remediation needs another approver. Nothing was done twice."
	case errors.As(err, &nf):
		out.reply = ":no_entry: One click cannot fix this, so nothing was done. " + nf.instead
	default:
		h.log.ErrorContext(ctx, "could not record click", "incident_id", id, "error", err)
		out.result, out.reply = "store error", replyFailed
	}
	return out
}

func (h *handler) entry(kind, actor, detail string) incident.Entry {
	return incident.Entry{At: h.now().UTC(), Kind: kind, Actor: actor, Detail: detail}
}

// busy refuses a decision on an incident that is closed or already being remediated.
func busy(i *incident.Incident) error {
	switch {
	case i.State.Closed():
		return errClosed
	case i.State == incident.StateRemediating:
		return errRemediating
	}
	return nil
}

// approvals lists who approved remediation since it last started, in order, from the click
// entries (the convention slackui reads too: Kind click, Actor the Slack user, Detail starting
// with the action ID). Approvals spent on a remediation that started are not counted again: a
// reopened incident needs a fresh quorum, or one click would satisfy the two-person rule.
func approvals(tl []incident.Entry) []string {
	var ids []string
	for _, e := range tl {
		if e.Kind == incident.KindClick && e.Actor != "" && strings.HasPrefix(e.Detail, slackui.ActionRemediate+":") {
			ids = append(ids, e.Actor)
			if strings.Contains(e.Detail, remediationStarted) {
				ids = nil
			}
		}
	}
	return ids
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
