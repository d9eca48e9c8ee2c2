// Package invoke queues a hand-off (handoff.Request) on RemediateFunction with an asynchronous
// Lambda invoke: what SlackActionFunction and ReconcileFunction send with. It is apart from
// package handoff so that RemediateFunction, which only decodes requests, links no Lambda SDK.
package invoke

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	lambdatypes "github.com/aws/aws-sdk-go-v2/service/lambda/types"

	"github.com/keywarden/keywarden/internal/handoff"
)

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
func (v Invoker) Start(ctx context.Context, req handoff.Request) error {
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
