package approval

import (
	"errors"
	"fmt"
	"time"

	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/slackui"
)

// Refusals of an approver's click. The click changes nothing; the handler records it with the
// store's RecordRefusal and tells the user.
var (
	// ErrUnknownAction: the action_id is not one of keywarden's buttons.
	ErrUnknownAction = errors.New("not a keywarden button")
	// ErrClosed: the incident is resolved, intentional or lost.
	ErrClosed = errors.New("incident is closed")
	// ErrRemediating: a remediation is already running; only acknowledge still applies.
	ErrRemediating = errors.New("remediation already running")
	// ErrNotFixable: one click cannot fix the incident now. It wraps inc.Fixable's error, a
	// *incident.NotFixableError (errors.As) when the fix is out of one click's reach for good.
	ErrNotFixable = errors.New("not fixable with one click")
)

// Act is one click by a user the handler has already authorised as an approver.
type Act struct {
	// User is the Slack user ID.
	User string
	// Action is the button's action_id: slackui.ActionRemediate, ActionAcknowledge or
	// ActionIntentional.
	Action string
	// Version is the incident version the clicked message showed.
	Version int64
	// ActionTS is Slack's action_ts for the click; with User it identifies the click, so a
	// retried write of the same click records it once.
	ActionTS string
	At       time.Time
	// Required is how many distinct approvers remediation needs (REQUIRED_APPROVALS).
	Required int
}

// ClickID is the click's ID: the ID of its timeline entry and the source of its approval.
func (a Act) ClickID() string { return incident.EntryID("click", a.ActionTS, a.User) }

// RunID names the remediation run a click that meets the quorum starts. It is derived from the
// click, so the same click always names the same run and RemediateFunction can claim it once.
func (a Act) RunID() string { return incident.EntryID("run", a.ActionTS, a.User) }

// Outcome is what an applied click did.
type Outcome struct {
	// Approvals counts the approvals of the current round after a remediate click, of Required.
	Approvals, Required int
	// Started is set when the click met the quorum: the incident is remediating under RunID,
	// approved by ApprovedBy, and the run is to be handed to RemediateFunction.
	Started    bool
	RunID      string
	ApprovedBy []string
}

// Apply applies an approver's click to inc with the model's rules, and is meant to run as the
// mutation of the store's conditional update on a.Version (UpdateAt), so two clicks racing
// cannot both act:
//
//   - acknowledge adds a click entry (its ID from the click), on any incident not closed;
//   - intentional closes an open incident with inc.MarkIntentional;
//   - remediate, on an open incident that one click can fix (inc.Fixable), adds the user's
//     approval with inc.Approve, which starts remediation under a.RunID once a.Required
//     distinct users approved in this round (the two-person rule is the model's).
//
// A refused click returns an error and must change nothing: ErrUnknownAction, ErrClosed,
// ErrRemediating, incident.ErrAlreadyApproved, or ErrNotFixable wrapping inc.Fixable's error.
func Apply(inc *incident.Incident, a Act) (Outcome, error) {
	switch a.Action {
	case slackui.ActionAcknowledge, slackui.ActionIntentional, slackui.ActionRemediate:
	default:
		return Outcome{}, fmt.Errorf("action %q: %w", a.Action, ErrUnknownAction)
	}
	if inc.State.Closed() {
		return Outcome{}, ErrClosed
	}
	if a.Action == slackui.ActionAcknowledge {
		inc.AddEntry(incident.Entry{
			ID: a.ClickID(), At: a.At, Kind: incident.KindClick, Actor: a.User,
			Result: incident.Result(slackui.ActionAcknowledge), Source: a.ClickID(), Detail: "acknowledge: on it",
		})
		return Outcome{}, nil
	}
	if inc.State == incident.StateRemediating {
		return Outcome{}, ErrRemediating
	}
	if a.Action == slackui.ActionIntentional {
		return Outcome{}, inc.MarkIntentional(a.User, a.At)
	}
	if err := inc.Fixable(); err != nil {
		return Outcome{}, fmt.Errorf("%w: %w", ErrNotFixable, err)
	}
	required := max(a.Required, 1)
	count, started, err := inc.Approve(a.User, a.Version, a.ClickID(), a.At, required, a.RunID())
	if err != nil {
		return Outcome{Approvals: count, Required: required}, err
	}
	out := Outcome{Approvals: count, Required: required, Started: started}
	if started {
		out.RunID, out.ApprovedBy = inc.Remediation.RunID, inc.Remediation.ApprovedBy
	}
	return out, nil
}
