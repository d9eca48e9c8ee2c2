package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	lambdatypes "github.com/aws/aws-sdk-go-v2/service/lambda/types"
)

// remediationRequest is RemediateFunction's input: the incident, who approved it, and the run
// the approval started (incident.Remediation.RunID), which RemediateFunction claims so that a
// duplicate delivery of the request runs it once.
type remediationRequest struct {
	IncidentID string   `json:"incident_id"`
	ApprovedBy []string `json:"approved_by"`
	RunID      string   `json:"run_id"`
}

// lambdaAPI is the part of the Lambda client the hand-off uses; *lambda.Client fits.
type lambdaAPI interface {
	Invoke(context.Context, *lambda.InvokeInput, ...func(*lambda.Options)) (*lambda.InvokeOutput, error)
}

// invoker hands remediations to RemediateFunction with an asynchronous invoke: Lambda queues
// the event and answers 202 at once, so the click is answered within Slack's 3 s while the
// remediation (a KMS wait with backoff, cluster starts) takes as long as it needs, with
// Lambda's own retries when it fails.
type invoker struct {
	api      lambdaAPI
	function string
}

// Start queues one remediation.
func (v invoker) Start(ctx context.Context, req remediationRequest) error {
	payload, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("encode remediation of %s: %w", req.IncidentID, err)
	}
	out, err := v.api.Invoke(ctx, &lambda.InvokeInput{
		FunctionName:   aws.String(v.function),
		InvocationType: lambdatypes.InvocationTypeEvent,
		Payload:        payload,
	}, func(o *lambda.Options) {
		// One attempt: a retry after a lost answer could queue the remediation twice, and a
		// failed hand-off is reported to the approver, who can click again.
		o.RetryMaxAttempts = 1
	})
	if err != nil {
		return fmt.Errorf("invoke %s for %s: %w", v.function, req.IncidentID, err)
	}
	if out.StatusCode != http.StatusAccepted {
		return fmt.Errorf("invoke %s for %s: status %d, want 202", v.function, req.IncidentID, out.StatusCode)
	}
	return nil
}
