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
	"github.com/keywarden/keywarden/internal/handoff"
	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/slackmessage"
)

// incidents is the part of the incident store the handler uses; *dynamostore.Store fits.
type incidents interface {
	Get(ctx context.Context, id string) (incident.Incident, error)
	Update(ctx context.Context, id string, mutate func(*incident.Incident) error) (incident.Incident, error)
	UpdateAt(ctx context.Context, id string, version int64, mutate func(*incident.Incident) error) (incident.Incident, error)
	RecordRefusal(ctx context.Context, id string, e incident.Entry) (first bool, err error)
}

// announcer refreshes an incident's Slack message and posts the one thread reply of a refused
// click; *slackmessage.Announcer fits.
type announcer interface {
	Announce(ctx context.Context, inc incident.Incident) error
	ReplyRefusal(ctx context.Context, id string, e incident.Entry) error
}

// remediations hands an approved remediation to RemediateFunction; invoke.Invoker fits.
type remediations interface {
	Start(ctx context.Context, req handoff.Request) error
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
	// install is the Slack app keywarden is installed as; a click from elsewhere counts not.
	install      approval.Installation
	slack        slackAPI
	store        incidents
	remediations remediations
	announcer    announcer
	log          *slog.Logger
	now          func() time.Time
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
	// drop marks a click not from the installed app through Slack (another workspace or app, a
	// response_url Slack did not make): it gets no answer at all, only the log line.
	drop bool
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
	level := slog.LevelInfo
	if out.drop {
		// Not from the installed app through Slack, yet signed with its secret: worth a look.
		level = slog.LevelWarn
	}
	h.log.Log(ctx, level, "slack click", "incident_id", out.incidentID, "action", click.ActionID, "user_id", click.UserID,
		"team_id", click.TeamID, "result", out.result, "replied", out.reply != "" || out.stale, "thread_reply", out.refusal != nil,
		"ms", time.Since(start).Milliseconds())
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
	return slackmessage.AnnounceOrWarn(ctx, h.announcer, inc, h.log) == nil
}

func (h *handler) sendEphemeral(ctx context.Context, click approval.Click, id, text string) {
	if err := h.ephemeral(ctx, click, text); err != nil {
		h.log.WarnContext(ctx, "ephemeral reply not sent", "incident_id", id, "user_id", click.UserID, "error", err)
	}
}

// ephemeral shows text to the clicking user only, in the channel of the message. When
// chat.postEphemeral fails (user_not_in_channel when the clicker is not a member, token_revoked,
// a rate limit, …) it falls back to the click's response_url, which accepts an ephemeral
// {"text", "response_type"} for 30 minutes, up to 5 times
// (https://docs.slack.dev/interactivity/handling-user-interaction#message_responses); act has
// checked that the URL is Slack's (or the local stand-in's).
func (h *handler) ephemeral(ctx context.Context, click approval.Click, text string) error {
	var posted error
	if click.ChannelID != "" {
		_, posted = h.slack.PostEphemeralContext(ctx, click.ChannelID, click.UserID, slack.MsgOptionText(text, false))
		if posted == nil {
			return nil
		}
		posted = fmt.Errorf("chat.postEphemeral: %w", posted)
	}
	if click.ResponseURL == "" {
		return errors.Join(posted, errors.New("click has no response_url to fall back to"))
	}
	err := slack.PostWebhookContext(ctx, click.ResponseURL, &slack.WebhookMessage{Text: text, ResponseType: slack.ResponseTypeEphemeral})
	// The URL can post to the channel: keep it out of the error, and so out of the log.
	var uerr *url.Error
	if errors.As(err, &uerr) {
		err = uerr.Err
	}
	if err != nil {
		return errors.Join(posted, fmt.Errorf("post to response_url: %w", err))
	}
	if posted != nil {
		h.log.InfoContext(ctx, "ephemeral reply sent through response_url", "user_id", click.UserID, "reason", posted.Error())
	}
	return nil
}

// Replies. They say what happened and what to do, and only what is true; the detail goes to
// the log.
const (
	replyNotAllowed      = ":no_entry_sign: You are not allowed to act on keywarden incidents, so nothing was done. Your attempt is on the incident's timeline. Ask an on-call approver."
	replyCannotCheck     = ":warning: keywarden could not check whether you may approve (Slack user groups did not answer). Nothing was done; try again in a minute."
	replyStaleRefreshed  = ":hourglass: That message was out of date: the incident changed since it was shown (or this click was already handled), so nothing was done. The message now shows the current state; click again if it is still needed."
	replyStale           = ":hourglass: That message was out of date: the incident changed since it was shown (or this click was already handled), so nothing was done. The message could not be refreshed just now; it catches up within a few minutes. Check the incident before clicking again."
	replyClosed          = ":information_source: This incident is already closed, so nothing was done."
	replyRemediating     = ":gear: Remediation is already approved and under way for this incident; nothing else was done. Each step is posted in the thread."
	replyAlreadyApproved = ":hourglass: You have already approved; it needs another approver. Nothing was done twice."
	replyNotFound        = ":warning: keywarden has no such incident; nothing was done."
	replyBadButton       = ":warning: That button is not one keywarden made; nothing was done."
	replyWrongMessage    = ":warning: That button is not on this incident's current message, so nothing was done. Use the buttons on the incident's message in the on-call channel."
	replyFailed          = ":warning: keywarden could not record your click and could not confirm whether it took effect. Check the message (it shows the current state) before clicking again."
	replyNotRecorded     = ":warning: keywarden could not record your click, so nothing was done. Try again in a minute."
	replyHandOff         = ":gear: Remediation is approved, but handing it to RemediateFunction failed just now. Nothing is lost: keywarden starts approved remediations within a minute. Each step is posted in the thread."
	replyResumed         = ":gear: This remediation was approved but had not started; keywarden handed it off again now. Each step is posted in the thread."
	replyRecorded        = ":white_check_mark: Your click had already been recorded; nothing was done twice."
)

// act authorises the click and decides it with approval.Decide; it never returns an error,
// because every outcome, a failure included, is something to tell the user. Cheap checks come
// first: a click from another workspace or app, or with a response_url Slack did not make, is
// dropped (logged, not answered: its URLs are not ours to call) before any Slack or AWS call.
// The approver check reads group membership fresh for remediate and reboot_instance. The
// decision runs as the mutation of a conditional update; a write whose answer was lost is
// recognised on the re-read (Decide sees the click's own approval), so a click that took
// effect is never answered "nothing was done". A refused click changes nothing and is kept
// with the store's RecordRefusal.
func (h *handler) act(ctx context.Context, click approval.Click) outcome {
	out := outcome{action: click.ActionID}
	now := h.now().UTC()
	// Slack always sends action_ts; the fallback keeps two clicks apart if it ever does not.
	click.ActionTS = cmp.Or(click.ActionTS, fmt.Sprintf("%d.%06d", now.Unix(), now.Nanosecond()/1000))
	rules := approval.Rules{Required: h.required}
	// Decided on no incident, a click passes every check that needs none (installation,
	// button) and stops at "no such incident", with the button's incident ID parsed.
	d := approval.Decide(nil, click, approval.Member, h.install, rules, now)
	out.incidentID = d.IncidentID
	if d.Refusal != approval.RefuseNotFound {
		out.result = "refused: " + string(d.Refusal) + ": " + d.Reason
		switch d.Refusal {
		case approval.RefuseBadButton:
			out.reply = replyBadButton // on our own workspace's message: safe to answer
		case approval.RefuseUnknownAction:
			return h.refuse(ctx, h.act0(click, now), out, d.Reason, replyBadButton)
		default:
			out.drop = true
		}
		return out
	}

	who, err := h.membership(ctx, click)
	if err != nil {
		h.log.WarnContext(ctx, "approver check failed", "incident_id", out.incidentID, "user_id", click.UserID, "error", err)
		out.result, out.reply = "approver check failed", replyCannotCheck
		return out
	}
	if who == approval.NotMember {
		return h.refuse(ctx, h.act0(click, now), out, "not an approver", replyNotAllowed)
	}

	decide := func(i *incident.Incident) error {
		d = approval.Decide(i, click, who, h.install, rules, now)
		switch {
		case d.Kind == approval.Refused:
			return errRefused
		case !d.Write:
			return errNothingToWrite
		}
		return nil
	}
	inc, err := h.store.Update(ctx, out.incidentID, decide)
	switch {
	case errors.Is(err, incident.ErrNotFound):
		out.result, out.reply = "no such incident", replyNotFound
		return out
	case errors.Is(err, errRefused):
		return h.refusedBy(ctx, click, now, d, out)
	case errors.Is(err, errNothingToWrite):
		inc = incident.Incident{}
	case err != nil:
		// The write may have landed with its answer lost: read again and decide on what is
		// stored, so a click that took effect is told so, and its run is handed off.
		h.log.ErrorContext(ctx, "could not record click; reading it back", "incident_id", out.incidentID, "error", err)
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 500*time.Millisecond)
		cur, gerr := h.store.Get(rctx, out.incidentID)
		cancel()
		if gerr != nil {
			out.result, out.reply = "store error; outcome unknown", replyFailed
			return out
		}
		if decide(&cur) != errNothingToWrite {
			out.result, out.reply = "store error", replyNotRecorded
			return out
		}
	}
	if inc.ID != "" {
		out.refresh = &inc
	}
	return h.answer(ctx, click, d, out)
}

// errRefused and errNothingToWrite end a decision's update without a write.
var (
	errRefused        = errors.New("click refused")
	errNothingToWrite = errors.New("nothing to write")
)

// act0 is the click as an Act, for the refusal record.
func (h *handler) act0(click approval.Click, now time.Time) approval.Act {
	return approval.Act{User: click.UserID, Action: click.ActionID, ActionTS: click.ActionTS, At: now, Required: h.required}
}

// membership is the clicking user's approver membership: read fresh from Slack for remediate
// and reboot_instance, which act on keys and databases; from the short cache for the others.
func (h *handler) membership(ctx context.Context, click approval.Click) (approval.Membership, error) {
	check := h.approvers.Allowed
	if click.ActionID == slackmessage.ActionRemediate || click.ActionID == slackmessage.ActionRebootInstance {
		check = h.approvers.AllowedNow
	}
	ok, err := check(ctx, h.slack, click.UserID)
	switch {
	case err != nil:
		return approval.MemberUnknown, err
	case ok:
		return approval.Member, nil
	}
	return approval.NotMember, nil
}

// answer hands off what the decision approved and says what the click did.
func (h *handler) answer(ctx context.Context, click approval.Click, d approval.Decision, out outcome) outcome {
	out.result = string(d.Kind) + ": " + d.Reason
	switch d.Kind {
	case approval.Approved:
		out.reply = fmt.Sprintf(":white_check_mark: Your approval is recorded (%d of %d). Remediation starts when another approver clicks *Re-enable key & restart clusters*.",
			d.Approvals, d.Required)
	case approval.Recorded:
		out.reply = replyRecorded
	case approval.RebootApproved:
		out.reply = fmt.Sprintf(":white_check_mark: Your approval of rebooting %s is recorded (%d of %d).", d.Instance, d.Approvals, d.Required)
	}
	if !d.HandOff() {
		return out
	}
	req := handoff.Request{IncidentID: d.IncidentID, RunID: d.RunID, ApprovedBy: d.ApprovedBy, Instance: d.Instance, Source: "slack-action"}
	if d.Kind == approval.Resume {
		out.reply = replyResumed
	}
	if d.Kind == approval.RebootApproved {
		out.reply = fmt.Sprintf(":arrows_counterclockwise: The reboot of %s is approved and handed to RemediateFunction, which checks the key again first. Its result is posted in the thread.", d.Instance)
	}
	if err := h.remediations.Start(ctx, req); err != nil {
		// The run stays approved: the reconciler starts it within a minute (its claim keeps
		// it from running twice), so the approver is told the truth, not "nothing was done".
		h.log.ErrorContext(ctx, "remediation hand-off failed; the reconciler starts it", "incident_id", d.IncidentID, "run_id", d.RunID, "error", err)
		out.result += "; hand-off failed, left to the reconciler"
		out.reply = replyHandOff
	}
	return out
}

// refusedBy turns a refused decision into its reply, kept beside the incident.
func (h *handler) refusedBy(ctx context.Context, click approval.Click, now time.Time, d approval.Decision, out outcome) outcome {
	a := h.act0(click, now)
	var nf *incident.NotFixableError
	switch d.Refusal {
	case approval.RefuseStale:
		out.stale = true
		return h.refuse(ctx, a, out, d.Reason, "")
	case approval.RefuseClosed:
		return h.refuse(ctx, a, out, d.Reason, replyClosed)
	case approval.RefuseRemediating:
		return h.refuse(ctx, a, out, d.Reason, replyRemediating)
	case approval.RefuseAlreadyApproved:
		return h.refuse(ctx, a, out, d.Reason, replyAlreadyApproved)
	case approval.RefuseWrongChannel, approval.RefuseWrongMessage:
		return h.refuse(ctx, a, out, d.Reason, replyWrongMessage)
	case approval.RefuseNotFixable:
		if errors.As(d.Err, &nf) {
			return h.refuse(ctx, a, out, "one click cannot fix this", ":no_entry: One click cannot fix this, so nothing was done. "+nf.Instead)
		}
	}
	return h.refuse(ctx, a, out, d.Reason, ":no_entry: Nothing was done: "+d.Reason+".")
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
