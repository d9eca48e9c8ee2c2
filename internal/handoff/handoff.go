// Package handoff is the one hand-off of an approved remediation to RemediateFunction: the
// Request both sides encode and decode (handoff/invoke queues it with an asynchronous Lambda
// invoke). SlackActionFunction hands off after the approving click, ReconcileFunction when it
// finds a run approved and not started (the click's hand-off was lost), and RemediateFunction
// decodes the Request and claims its run ID, so however many of them send it, the run runs
// once.
//
// Boundaries: it owns the Request's wire form; it must not import the AWS SDK, Slack or any
// other keywarden package, so RemediateFunction, which only decodes, links nothing through it.
package handoff

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Request is RemediateFunction's input: the incident, the run an approval started
// (incident.Remediation.RunID), which RemediateFunction claims, and who approved it.
type Request struct {
	IncidentID string `json:"incident_id"`
	// RunID is the run to claim. A hand invoke may leave it out, meaning the incident's
	// current run; a run that is no longer the incident's is refused.
	RunID string `json:"run_id,omitempty"`
	// ApprovedBy lists the approvers' Slack user IDs. It also decodes from one string
	// ("U0A" or "U0A,U0B"), so an operator can invoke the function by hand.
	ApprovedBy Approvers `json:"approved_by"`
	// Instance, when set, makes the run the approved reboot of that one instance (the Reboot
	// instance button), never the one-click remediation.
	Instance string `json:"instance,omitempty"`
	// Source says who handed the run off: "slack-action" or "reconcile".
	Source string `json:"source,omitempty"`
}

// Approvers is the approved_by list.
type Approvers []string

// UnmarshalJSON accepts a list of user IDs or one string of them separated by commas or spaces.
func (a *Approvers) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*a = strings.FieldsFunc(one, func(r rune) bool { return r == ',' || r == ' ' })
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return fmt.Errorf("approved_by: want a list of Slack user IDs: %w", err)
	}
	*a = many
	return nil
}

// ErrInvalid is a Request that can never be handled.
var ErrInvalid = errors.New("invalid remediation request")

// Decode reads a Request; an error wraps ErrInvalid and says what is wanted.
func Decode(raw []byte) (Request, error) {
	var req Request
	if err := json.Unmarshal(raw, &req); err != nil {
		return Request{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if req.IncidentID == "" || len(req.ApprovedBy) == 0 {
		return Request{}, fmt.Errorf(`%w: want {"incident_id": "…", "run_id": "…", "approved_by": ["U…"]}`, ErrInvalid)
	}
	return req, nil
}
