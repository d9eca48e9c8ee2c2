package approval

import (
	"time"

	"github.com/keywarden/keywarden/internal/incident"
)

// Act is one click as the incident records it: who pressed which button, on which version of
// the message, and when. Decide derives the click's IDs from it; the handler keeps refused
// clicks beside the incident with them.
type Act struct {
	// User is the Slack user ID.
	User string
	// Action is the button's action_id: slackmessage.ActionRemediate, ActionAcknowledge,
	// ActionIntentional or ActionRebootInstance.
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
