// Package handoff is the one hand-off of an approved remediation to RemediateFunction: the
// Request both sides encode and decode, and the Invoker that queues it with an asynchronous
// Lambda invoke. SlackActionFunction hands off after the approving click, ReconcileFunction
// when it finds a run approved and not started (the click's hand-off was lost), and
// RemediateFunction decodes the Request and claims its run ID, so however many of them send
// it, the run runs once.
package handoff

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	lambdatypes "github.com/aws/aws-sdk-go-v2/service/lambda/types"
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

// LambdaAPI is the part of the Lambda client the hand-off uses; *lambda.Client fits.
type LambdaAPI interface {
	Invoke(context.Context, *lambda.InvokeInput, ...func(*lambda.Options)) (*lambda.InvokeOutput, error)
}

// Invoker queues remediations on RemediateFunction with an asynchronous invoke
// (InvocationType Event): Lambda queues the event and answers 202 at once
// (https://docs.aws.amazon.com/lambda/latest/api/API_Invoke.html), so a click is answered within
// Slack's 3 s while the run takes as long as it needs.
type Invoker struct {
	API LambdaAPI
	// Function is RemediateFunction's name or ARN.
	Function string
}

// Start queues one remediation. It makes one attempt: a lost answer may still have queued
// the run, which is harmless, since RemediateFunction claims the run ID and a second delivery
// finds it claimed; a failure is picked up by the reconciler within a minute. Errors say
// which function and incident, and wrap the SDK's.
func (v Invoker) Start(ctx context.Context, req Request) error {
	payload, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("encode remediation of %s: %w", req.IncidentID, err)
	}
	out, err := v.API.Invoke(ctx, &lambda.InvokeInput{
		FunctionName:   aws.String(v.Function),
		InvocationType: lambdatypes.InvocationTypeEvent,
		Payload:        payload,
	}, func(o *lambda.Options) { o.RetryMaxAttempts = 1 })
	if err != nil {
		return fmt.Errorf("invoke %s for %s: %w", v.Function, req.IncidentID, err)
	}
	if out.StatusCode != http.StatusAccepted {
		return fmt.Errorf("invoke %s for %s: status %d, want 202", v.Function, req.IncidentID, out.StatusCode)
	}
	return nil
}
