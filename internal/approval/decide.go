package approval

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/slackmessage"
)

// Installation is the Slack app keywarden is installed as: a click counts only from its
// workspace (or Enterprise Grid organisation) and app, and only with a response_url Slack made.
type Installation struct {
	// TeamID and EnterpriseID name the workspace or organisation; an empty one is not checked,
	// but at least one must be set for a click to count.
	TeamID, EnterpriseID string
	// AppID is the app's ID (api_app_id of a payload); empty is not checked.
	AppID string
	// ResponseURLPrefixes are accepted response_url prefixes besides Slack's hooks host
	// (https://hooks.slack.com/): the local Slack stand-in's URL.
	ResponseURLPrefixes []string
}

// Membership is what the approver check said about the clicking user, read fresh from Slack
// for a remediate or reboot click (see Approvers.AllowedNow).
type Membership int

const (
	// MemberUnknown: Slack did not answer the group check; nothing can be decided.
	MemberUnknown Membership = iota
	// NotMember: the user is neither an approver nor in an approver group.
	NotMember
	// Member: the user may approve.
	Member
)

// Refusal is why a click changed nothing, as a code for the log and the timeline.
type Refusal string

// Refusals, each with a clear reply in the handler.
const (
	RefuseWrongTeam       Refusal = "wrong-team"
	RefuseWrongApp        Refusal = "wrong-app"
	RefuseResponseURL     Refusal = "foreign-response-url"
	RefuseWrongChannel    Refusal = "wrong-channel"
	RefuseWrongMessage    Refusal = "wrong-message"
	RefuseBadButton       Refusal = "bad-button"
	RefuseUnknownAction   Refusal = "unknown-action"
	RefuseCheckFailed     Refusal = "approver-check-failed"
	RefuseNotApprover     Refusal = "not-an-approver"
	RefuseNotFound        Refusal = "no-such-incident"
	RefuseStale           Refusal = "stale-message"
	RefuseClosed          Refusal = "closed"
	RefuseRemediating     Refusal = "remediation-running"
	RefuseAlreadyApproved Refusal = "already-approved"
	RefuseNotFixable      Refusal = "not-fixable"
	RefuseNoReboot        Refusal = "reboot-not-allowed"
)

// Kind is what a click comes to.
type Kind string

const (
	// Refused: nothing changes; Refusal says why.
	Refused Kind = "refused"
	// Approved: the user's approval is recorded; more are needed.
	Approved Kind = "approved"
	// Started: the approval met the quorum; the incident is remediating under RunID, to hand
	// off now.
	Started Kind = "started"
	// Resume: the incident's run is approved and not started (its hand-off was lost, or this is
	// the same click retried after its write's answer was lost): hand RunID off again, write
	// nothing. RemediateFunction's claim keeps it from running twice.
	Resume Kind = "resume"
	// Recorded: the same click already took effect (its write's answer was lost); nothing more
	// to write, and the user is told what it did.
	Recorded Kind = "recorded"
	// Acknowledged: an acknowledgement entry; no remediation state changes.
	Acknowledged Kind = "acknowledged"
	// Intentional: the incident is closed as intended.
	Intentional Kind = "intentional"
	// RebootApproved: an approval of the Reboot instance button; with the quorum met, the
	// reboot of Instance is approved under RunID, to hand off now.
	RebootApproved Kind = "reboot-approved"
)

// Rules are the deployment's approval rules.
type Rules struct {
	// Required is how many distinct approvers remediation (and a reboot) needs.
	Required int
}

// A run not yet claimed incident.HandOffGrace after its approval counts as "approved, not
// started", for the next remediate click to hand it off again, as the reconciler's hand-off
// pass does.

// Decision is what a click comes to: Decide's answer.
type Decision struct {
	Kind    Kind
	Refusal Refusal
	// Reason says why, for the timeline and the reply; Err is the model's error behind a
	// refusal, when there is one (a *incident.NotFixableError, …).
	Reason string
	Err    error
	// IncidentID and Version are the button's.
	IncidentID string
	Version    int64
	// Approvals of Required so far, after a remediate or reboot click.
	Approvals, Required int
	// RunID and ApprovedBy are the run to hand off (Started, Resume, RebootApproved with the
	// quorum met).
	RunID      string
	ApprovedBy []string
	// Instance is the instance of a reboot_instance click.
	Instance string
	// Write is set when the decision changed inc and must be stored.
	Write bool
}

// HandOff reports whether the decision hands a run to RemediateFunction.
func (d Decision) HandOff() bool { return d.RunID != "" }

// Decide is the click rule: from the incident as stored (nil when there is none), the click,
// the clicking user's approver membership, the installation and the rules, as of now, it
// decides what the click comes to, and applies it to *inc (Decision.Write says whether there is
// anything to store). It does no I/O. Run it as the mutation of the store's conditional update
// so two clicks racing cannot both act; on a refusal nothing changed.
//
// In order: a click from another workspace or app, with a response_url Slack did not make, or
// on a button keywarden did not make is refused before the incident is looked at; then the
// user must be an approver; the click must be on the incident's own message (channel and
// timestamp). A click whose own write already landed (its answer lost) is Recorded, or Resume
// when it started a run still unclaimed. A closed incident refuses everything; a remediating one
// refuses all but acknowledge and, when its run is approved and unclaimed for
// incident.HandOffGrace (20 s), remediate (Resume). A stale message refuses the rest. Acknowledge adds an
// entry and changes no remediation state; intentional closes; remediate records an approval
// (incident.Approve: the two-person rule) and starts the run at the quorum; reboot_instance
// records an approval of that instance's reboot, which the key check of
// incident.RebootPlan must allow.
func Decide(inc *incident.Incident, c Click, who Membership, inst Installation, rules Rules, now time.Time) Decision {
	now = now.UTC()
	rules.Required = max(rules.Required, 1)
	d := Decision{Required: rules.Required}
	refuse := func(r Refusal, why string, err error) Decision {
		d.Kind, d.Refusal, d.Reason, d.Err, d.Write, d.RunID = Refused, r, why, err, false, ""
		return d
	}
	if r, why := inst.foreign(c); r != "" {
		return refuse(r, why, nil)
	}
	id, version, instance, err := parseValue(c.ActionID, c.Value)
	if err != nil {
		return refuse(RefuseBadButton, "not a button keywarden made", err)
	}
	d.IncidentID, d.Version, d.Instance = id, version, instance
	switch c.ActionID {
	case slackmessage.ActionRemediate, slackmessage.ActionAcknowledge, slackmessage.ActionIntentional, slackmessage.ActionRebootInstance:
	default:
		return refuse(RefuseUnknownAction, fmt.Sprintf("action %q is not one of keywarden's", c.ActionID), nil)
	}
	switch who {
	case Member:
	case NotMember:
		return refuse(RefuseNotApprover, "not an approver", nil)
	default:
		return refuse(RefuseCheckFailed, "the approver check failed (Slack did not answer)", nil)
	}
	if inc == nil {
		return refuse(RefuseNotFound, "no such incident", nil)
	}
	switch {
	case inc.Slack == nil:
		return refuse(RefuseWrongMessage, "the incident has no Slack message recorded yet", nil)
	case c.ChannelID != inc.Slack.Channel:
		return refuse(RefuseWrongChannel, fmt.Sprintf("clicked in channel %s, not the incident's %s", c.ChannelID, inc.Slack.Channel), nil)
	case c.MessageTS != inc.Slack.TS:
		return refuse(RefuseWrongMessage, fmt.Sprintf("clicked on message %s, not the incident's %s", c.MessageTS, inc.Slack.TS), nil)
	}
	act := Act{User: c.UserID, Action: c.ActionID, Version: version, ActionTS: c.ActionTS, At: now, Required: rules.Required}
	if done, ok := alreadyDone(inc, act, now, rules); ok {
		return done
	}
	if inc.State.Closed() {
		return refuse(RefuseClosed, "the incident is closed ("+string(inc.State)+")", nil)
	}
	if inc.State == incident.StateRemediating {
		switch {
		case c.ActionID == slackmessage.ActionAcknowledge:
		case c.ActionID == slackmessage.ActionRemediate && inc.AwaitingStart(now, incident.HandOffGrace):
			d.Kind, d.RunID, d.ApprovedBy = Resume, inc.Remediation.RunID, inc.Remediation.ApprovedBy
			d.Reason = "remediation " + inc.Remediation.RunID + " was approved and not started: handed off again"
			return d
		case c.ActionID == slackmessage.ActionRebootInstance && inc.Remediation.State == incident.RemediationDone:
		default:
			return refuse(RefuseRemediating, "remediation is already running", nil)
		}
	}
	if version != inc.Version {
		return refuse(RefuseStale, fmt.Sprintf("the message was out of date (version %d, the incident is at %d)", version, inc.Version), incident.ErrStale)
	}
	switch c.ActionID {
	case slackmessage.ActionAcknowledge:
		inc.AddEntry(incident.Entry{ID: act.ClickID(), At: now, Kind: incident.KindClick, Actor: c.UserID,
			Result: incident.Result(slackmessage.ActionAcknowledge), Source: act.ClickID(), Detail: "acknowledge: on it"})
		d.Kind, d.Write, d.Reason = Acknowledged, true, "acknowledged"
		return d
	case slackmessage.ActionIntentional:
		if err := inc.MarkIntentional(c.UserID, now); err != nil {
			return refuse(RefuseClosed, err.Error(), err)
		}
		d.Kind, d.Write, d.Reason = Intentional, true, "marked intentional"
		return d
	case slackmessage.ActionRebootInstance:
		return decideReboot(inc, act, instance, d, refuse)
	}
	if err := inc.Fixable(); err != nil {
		return refuse(RefuseNotFixable, "one click cannot fix this: "+err.Error(), err)
	}
	count, started, err := inc.Approve(c.UserID, version, act.ClickID(), now, rules.Required, act.RunID())
	d.Approvals = count
	switch {
	case errors.Is(err, incident.ErrAlreadyApproved):
		return refuse(RefuseAlreadyApproved, "already approved", err)
	case err != nil:
		return refuse(RefuseClosed, err.Error(), err)
	}
	d.Write = true
	if !started {
		d.Kind, d.Reason = Approved, fmt.Sprintf("approval %d of %d", count, rules.Required)
		return d
	}
	d.Kind, d.RunID, d.ApprovedBy = Started, inc.Remediation.RunID, inc.Remediation.ApprovedBy
	d.Reason = fmt.Sprintf("approval %d of %d; remediation %s started", count, rules.Required, d.RunID)
	return d
}

// decideReboot records an approval of the reboot of one instance; the quorum approves it.
func decideReboot(inc *incident.Incident, a Act, instance string, d Decision, refuse func(Refusal, string, error) Decision) Decision {
	step := inc.RebootPlan(instance)
	if !step.Runs() {
		return refuse(RefuseNoReboot, "no reboot of "+instance+": "+step.Skip, nil)
	}
	count, approved, err := inc.ApproveReboot(instance, a.User, a.ClickID(), a.At, a.Required, a.RunID())
	if errors.Is(err, incident.ErrAlreadyApproved) {
		return refuse(RefuseAlreadyApproved, "already approved", err)
	}
	if err != nil {
		return refuse(RefuseNoReboot, err.Error(), err)
	}
	d.Kind, d.Write, d.Approvals = RebootApproved, true, count
	d.Reason = fmt.Sprintf("reboot of %s: approval %d of %d", instance, count, a.Required)
	if approved {
		d.RunID, d.ApprovedBy = a.RunID(), inc.RebootApprovers(instance)
		d.Reason += "; reboot approved"
	}
	return d
}

// alreadyDone recognises a click whose own write landed before (the same click retried after
// its answer was lost): it must not be told "nothing was done".
func alreadyDone(inc *incident.Incident, a Act, now time.Time, rules Rules) (Decision, bool) {
	d := Decision{IncidentID: inc.ID, Version: a.Version, Required: rules.Required}
	switch a.Action {
	case slackmessage.ActionRemediate:
		if !slices.ContainsFunc(inc.Approvals, func(ap incident.Approval) bool { return ap.Source == a.ClickID() && ap.User == a.User }) {
			return d, false
		}
		if inc.State == incident.StateRemediating && inc.Remediation.RunID == a.RunID() {
			d.ApprovedBy = inc.Remediation.ApprovedBy
			d.Approvals = len(d.ApprovedBy)
			if inc.Remediation.State == incident.RemediationApproved {
				d.Kind, d.RunID, d.Reason = Resume, a.RunID(), "this click started remediation "+a.RunID()+": handed off"
				return d, true
			}
			d.Kind, d.Reason = Recorded, "this click started remediation "+a.RunID()+", which is "+string(inc.Remediation.State)
			return d, true
		}
		d.Kind, d.Reason = Recorded, "this click's approval is recorded"
		d.Approvals = len(inc.RoundApprovers())
		return d, true
	case slackmessage.ActionAcknowledge:
		if inc.HasEntry(a.ClickID()) {
			d.Kind, d.Reason = Acknowledged, "acknowledged"
			return d, true
		}
	case slackmessage.ActionIntentional:
		if e, ok := inc.LastEntry(incident.KindState); ok && inc.State == incident.StateIntentional && e.Actor == a.User {
			d.Kind, d.Reason = Intentional, "marked intentional"
			return d, true
		}
	}
	return d, false
}

// foreign says why a click does not come from the installed app through Slack, if it does not.
func (in Installation) foreign(c Click) (Refusal, string) {
	team := (in.TeamID != "" && c.TeamID == in.TeamID) || (in.EnterpriseID != "" && c.EnterpriseID == in.EnterpriseID)
	if !team {
		return RefuseWrongTeam, fmt.Sprintf("from workspace %q (organisation %q), not the installed one", c.TeamID, c.EnterpriseID)
	}
	if in.AppID != "" && c.AppID != in.AppID {
		return RefuseWrongApp, fmt.Sprintf("for app %q, not keywarden's", c.AppID)
	}
	if !in.slackURL(c.ResponseURL) {
		return RefuseResponseURL, "its response_url is not a Slack hooks URL"
	}
	return "", ""
}

// slackURL reports whether u is a URL Slack made for answering a click: https on
// hooks.slack.com (https://docs.slack.dev/interactivity/handling-user-interaction#message_responses),
// or one of the configured stand-in prefixes.
func (in Installation) slackURL(u string) bool {
	for _, p := range in.ResponseURLPrefixes {
		if p != "" && strings.HasPrefix(u, p) {
			return true
		}
	}
	parsed, err := url.Parse(u)
	return err == nil && parsed.Scheme == "https" && parsed.Host == "hooks.slack.com" && parsed.User == nil
}

// parseValue reads a button's value: slackmessage.ButtonValue, or for reboot_instance
// slackmessage.RebootButtonValue.
func parseValue(action, v string) (id string, version int64, instance string, err error) {
	if action == slackmessage.ActionRebootInstance {
		return slackmessage.ParseRebootButtonValue(v)
	}
	id, version, err = slackmessage.ParseButtonValue(v)
	return id, version, "", err
}
