package incident

import (
	"fmt"
	"slices"
	"time"
)

// Approval is one approver's consent to remediate, given on the message that showed Version.
type Approval struct {
	// User is the Slack user ID.
	User    string    `json:"user"`
	Version int64     `json:"version"`
	At      time.Time `json:"at"`
	// Round is the ApprovalRound the approval counts towards.
	Round int `json:"round"`
	// Source is the click's ID (action_ts and user).
	Source string `json:"source,omitempty"`
}

// RoundApprovers lists, in order of approval, the distinct users whose approval counts in the
// current round.
func (inc *Incident) RoundApprovers() []string {
	var users []string
	seen := map[string]bool{}
	for _, a := range inc.Approvals {
		if a.Round != inc.ApprovalRound || a.User == "" || seen[a.User] {
			continue
		}
		seen[a.User] = true
		users = append(users, a.User)
	}
	return users
}

// Approve records user's approval of remediation, given on the message at version, towards the
// current round, and starts remediation under runID once `required` distinct users approved in
// this round (the two-person rule with required 2; a required count below 1 counts as 1, so a
// misconfiguration never means "no approval needed"). The rule reads only Approvals, never the
// timeline, and no number of other clicks changes it.
//
// It returns how many approvals the round has and whether remediation started. Errors: a
// *TransitionError when the incident is not open, ErrAlreadyApproved when user already counts
// in this round.
func (inc *Incident) Approve(user string, version int64, source string, at time.Time, required int, runID string) (count int, started bool, err error) {
	required = max(required, 1)
	if inc.State != StateOpen {
		return 0, false, &TransitionError{From: inc.State, To: StateRemediating}
	}
	if approvers := inc.RoundApprovers(); slices.Contains(approvers, user) {
		return len(approvers), false, ErrAlreadyApproved
	}
	at = at.UTC()
	inc.Approvals = append(inc.Approvals, Approval{User: user, Version: version, At: at, Round: inc.ApprovalRound, Source: source})
	count = len(inc.RoundApprovers())
	inc.AddEntry(Entry{
		ID: EntryID("approval", source, user), At: at, Kind: KindApproval, Actor: user, Result: ResultApproved, Source: source,
		Detail: fmt.Sprintf("remediate: approval %d of %d", min(count, required), required),
	})
	if count < required {
		return count, false, nil
	}
	if err := inc.StartRemediation(runID, at); err != nil {
		return count, false, err
	}
	return count, true, nil
}
