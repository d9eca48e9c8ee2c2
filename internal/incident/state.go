package incident

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// State is where an incident is in its life (see the package doc for the machine).
type State string

const (
	StateOpen        State = "open"
	StateRemediating State = "remediating"
	StateResolved    State = "resolved"
	StateIntentional State = "intentional"
	StateLost        State = "lost"
)

// Closed reports whether no further work or reminder belongs to an incident in state s.
func (s State) Closed() bool {
	return s == StateResolved || s == StateIntentional || s == StateLost
}

// Keywarden is the actor of what keywarden itself does.
const Keywarden = "keywarden"

// transition moves inc to `to` when the current state is one of from, stamping ClosedAt and
// adding a KindState entry that says why. It is the one place State changes.
func (inc *Incident) transition(to State, by, why string, at time.Time, from ...State) error {
	if !slices.Contains(from, inc.State) {
		return &TransitionError{From: inc.State, To: to}
	}
	at = at.UTC()
	prev := inc.State
	inc.State = to
	if to.Closed() {
		inc.ClosedAt = &at
	} else {
		inc.ClosedAt = nil
	}
	inc.AddEntry(Entry{
		// The version makes the ID unique per change; a retried write of the same change
		// recomputes the same one.
		ID:     EntryID("state", string(prev), string(to), fmt.Sprint(inc.Version)),
		At:     at,
		Kind:   KindState,
		Actor:  by,
		Result: Result(to),
		Detail: string(to) + ": " + why,
	})
	return nil
}

// StartRemediation moves an open incident to remediating under a new run runID: the current
// round's approvals are spent (a later round needs a fresh quorum) and Remediation records who
// approved. Approve calls it when the quorum is met.
func (inc *Incident) StartRemediation(runID string, at time.Time) error {
	approvers := inc.RoundApprovers()
	if err := inc.transition(StateRemediating, Keywarden, "remediation approved by "+joinUsers(approvers), at, StateOpen); err != nil {
		return err
	}
	at = at.UTC()
	inc.Remediation = Remediation{RunID: runID, State: RemediationApproved, ApprovedBy: approvers, Steps: inc.Remediation.Steps, ApprovedAt: &at}
	inc.ApprovalRound++
	return nil
}

// GiveBack gives a remediating incident back to the approvers: the run ends as failed with
// why, the incident is open again and the message offers the fix button with a fresh round.
// It is the one rule for a failed, stalled or un-handed-off remediation.
func (inc *Incident) GiveBack(why string, at time.Time) error {
	if err := inc.transition(StateOpen, Keywarden, why+"; the incident is open again: approve again to retry", at, StateRemediating); err != nil {
		return err
	}
	inc.Remediation.State = RemediationFailed
	inc.Remediation.Reason = why
	inc.Remediation.ClaimedBy, inc.Remediation.LeaseUntil = "", nil
	return nil
}

// Resolve closes an open or remediating incident as fixed.
func (inc *Incident) Resolve(by, why string, at time.Time) error {
	if err := inc.transition(StateResolved, by, why, at, StateOpen, StateRemediating); err != nil {
		return err
	}
	if r := inc.Remediation.State; r == RemediationApproved || r == RemediationRunning {
		inc.Remediation.State = RemediationDone
	}
	return nil
}

// MarkIntentional closes an open incident as wanted: an approver says the key loss is
// intended, reminders stop and no fix runs.
func (inc *Incident) MarkIntentional(by string, at time.Time) error {
	return inc.transition(StateIntentional, by, "marked intentional: reminders stop and no fix runs", at, StateOpen)
}

// MarkLost closes an open or remediating incident as lost for good: the key was deleted or
// every dependent cluster reached the terminal state.
func (inc *Incident) MarkLost(by, why string, at time.Time) error {
	return inc.transition(StateLost, by, why, at, StateOpen, StateRemediating)
}

func joinUsers(users []string) string {
	if len(users) == 0 {
		return "nobody"
	}
	return strings.Join(users, ", ")
}
