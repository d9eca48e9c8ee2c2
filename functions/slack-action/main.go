// SlackActionFunction answers the incident message's buttons. Slack posts each click to the
// function's Lambda Function URL (payload format 2.0); the function checks Slack's signature on
// the raw body, authorises the clicking user against APPROVERS, records the click on the incident
// with a conditional update on the version the message showed (so an outdated message, a second
// click or a replayed request acts at most once), hands an approved remediation to
// RemediateFunction with an asynchronous invoke, refreshes the message, and answers Slack within
// its 3 seconds. A refused click (a stranger, an outdated message, a closed incident, …) changes
// nothing: it is kept beside the incident without a new version, and a burst of them by one
// user gets one reply in the thread.
//
// Environment:
//
//	(shared)                    the settings of internal/wire; SLACK_BOT_TOKEN_SECRET_ARN or
//	                            SLACK_BOT_TOKEN and SLACK_CHANNEL are required here
//	APPROVERS                   Slack user IDs (U…, W…) and user-group IDs (S…) who may act (required)
//	REQUIRED_APPROVALS          distinct approvers before remediation runs: 1 (default) or 2 (two-person rule), at most 5
//	REMEDIATE_FUNCTION          name or ARN of RemediateFunction (required)
//	SLACK_SIGNING_SECRET_ARN    Secrets Manager secret holding the app's signing secret, or
//	SLACK_SIGNING_SECRET        the secret itself (local stack); one is required
//
// The Lambda client honours AWS_ENDPOINT_URL_LAMBDA and AWS_ENDPOINT_URL, so the local stack
// can serve the hand-off. Secrets are read once per execution environment and never logged.
package main

import (
	"context"
	"os"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	awslambda "github.com/aws/aws-sdk-go-v2/service/lambda"

	"github.com/keywarden/keywarden/internal/approval"
	"github.com/keywarden/keywarden/internal/env"
	"github.com/keywarden/keywarden/internal/secrets"
	"github.com/keywarden/keywarden/internal/wire"
)

type settings struct {
	Shared            wire.Settings
	Approvers         approval.Approvers
	RequiredApprovals int
	RemediateFunction string
	SigningSecret     secrets.Source
}

func loadSettings(r *env.Reader) (settings, error) {
	c := settings{
		Shared:            wire.ReadSettings(r, true),
		RequiredApprovals: r.Int("REQUIRED_APPROVALS", 1, 1, 5),
		RemediateFunction: r.Required("REMEDIATE_FUNCTION"),
		SigningSecret:     secrets.FromEnv(r, "SLACK_SIGNING_SECRET", true),
	}
	a, err := approval.ParseApprovers(r.String("APPROVERS", ""))
	if err != nil {
		r.Fail(err)
	}
	c.Approvers = a
	return c, r.Err()
}

func main() {
	cfg, err := loadSettings(env.New())
	log := env.Logger(cfg.Shared.LogLevel)
	if err != nil {
		log.Error("configuration", "error", err)
		os.Exit(1)
	}
	ctx := context.Background()
	svc, err := wire.Build(ctx, cfg.Shared, log)
	if err != nil {
		log.Error("start-up", "error", err)
		os.Exit(1)
	}
	signing, err := svc.Secrets.Get(ctx, cfg.SigningSecret)
	if err != nil {
		log.Error("slack signing secret", "error", err)
		os.Exit(1)
	}
	h := &handler{
		signingSecret: signing,
		approvers:     cfg.Approvers,
		required:      cfg.RequiredApprovals,
		slack:         svc.Slack,
		store:         svc.Store,
		remediations:  invoker{api: awslambda.NewFromConfig(svc.AWS), function: cfg.RemediateFunction},
		announcer:     svc.Announcer,
		log:           log,
		now:           time.Now,
		followUp:      defaultFollowUp,
	}
	log.Info("ready", "approver_groups", len(cfg.Approvers.Groups()), "required_approvals", cfg.RequiredApprovals,
		"signing_secret", cfg.SigningSecret, "bot_token", cfg.Shared.BotToken)
	lambda.Start(h.Handle)
}
