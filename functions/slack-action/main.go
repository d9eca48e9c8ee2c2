// SlackActionFunction answers the incident message's buttons. Slack posts each click to the
// function's Lambda Function URL (payload format 2.0); the function checks Slack's signature on
// the raw body, authorises the clicking user against APPROVERS, records the click on the incident
// with a conditional update on the version the message showed (so an outdated message, a second
// click or a replayed request acts at most once), hands an approved remediation to
// RemediateFunction with an asynchronous invoke, refreshes the message, and answers Slack within
// its 3 seconds.
//
// Environment:
//
//	INCIDENTS_TABLE             DynamoDB table of incidents (required)
//	APPROVERS                   Slack user IDs (U…, W…) and user-group IDs (S…) who may act (required)
//	REQUIRED_APPROVALS          distinct approvers before remediation runs: 1 (default) or 2 (two-person rule), at most 5
//	REMEDIATE_FUNCTION          name or ARN of RemediateFunction (required)
//	SLACK_SIGNING_SECRET_ARN    Secrets Manager secret holding the app's signing secret, or
//	SLACK_SIGNING_SECRET        the secret itself (local stack); one is required
//	SLACK_BOT_TOKEN_SECRET_ARN  Secrets Manager secret holding the bot token, or
//	SLACK_BOT_TOKEN             the token itself (local stack); one is required
//	SLACK_CHANNEL               channel for an incident's first message, if it has none yet (required)
//	SLACK_API_URL               Slack Web API base URL (optional; the local Slack stand-in)
//	LOG_LEVEL                   debug, info (default), warn or error
//
// The Lambda client honours AWS_ENDPOINT_URL_LAMBDA and AWS_ENDPOINT_URL, so the local stack
// can serve the hand-off. Secrets are read once per execution environment and never logged.
package main

import (
	"context"
	"os"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	awslambda "github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/slack-go/slack"

	"github.com/keywarden/keywarden/internal/announce"
	"github.com/keywarden/keywarden/internal/approval"
	"github.com/keywarden/keywarden/internal/env"
	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/notify"
	"github.com/keywarden/keywarden/internal/secrets"
)

type settings struct {
	Table             string
	Approvers         approval.Approvers
	RequiredApprovals int
	RemediateFunction string
	SigningSecret     secrets.Source
	BotToken          secrets.Source
	Channel           string
	SlackAPIURL       string
	LogLevel          string
}

func loadSettings(r *env.Reader) (settings, error) {
	c := settings{
		Table:             r.Required("INCIDENTS_TABLE"),
		RequiredApprovals: r.Int("REQUIRED_APPROVALS", 1, 1, 5),
		RemediateFunction: r.Required("REMEDIATE_FUNCTION"),
		SigningSecret:     secrets.FromEnv(r, "SLACK_SIGNING_SECRET", true),
		BotToken:          secrets.FromEnv(r, "SLACK_BOT_TOKEN", true),
		Channel:           r.Required("SLACK_CHANNEL"),
		SlackAPIURL:       r.String("SLACK_API_URL", ""),
		LogLevel:          r.String("LOG_LEVEL", "info"),
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
	log := env.Logger(cfg.LogLevel)
	if err != nil {
		log.Error("configuration", "error", err)
		os.Exit(1)
	}
	ctx := context.Background()
	awsCfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		log.Error("aws configuration", "error", err)
		os.Exit(1)
	}
	var sm secrets.API
	if secrets.NeedsAPI(cfg.SigningSecret, cfg.BotToken) {
		sm = secretsmanager.NewFromConfig(awsCfg)
	}
	loader := secrets.NewLoader(sm)
	signing, err := loader.Get(ctx, cfg.SigningSecret)
	if err != nil {
		log.Error("slack signing secret", "error", err)
		os.Exit(1)
	}
	token, err := loader.Get(ctx, cfg.BotToken)
	if err != nil {
		log.Error("slack bot token", "error", err)
		os.Exit(1)
	}
	var opts []slack.Option
	if cfg.SlackAPIURL != "" {
		opts = append(opts, slack.OptionAPIURL(cfg.SlackAPIURL))
	}
	client := slack.New(token, opts...)
	store := incident.NewStore(dynamodb.NewFromConfig(awsCfg), cfg.Table)
	h := &handler{
		signingSecret: signing,
		approvers:     cfg.Approvers,
		required:      cfg.RequiredApprovals,
		slack:         client,
		store:         store,
		remediations:  invoker{api: awslambda.NewFromConfig(awsCfg), function: cfg.RemediateFunction},
		announcer:     announce.New(store, notify.New(client, cfg.Channel)),
		log:           log,
		now:           time.Now,
		followUp:      defaultFollowUp,
	}
	log.Info("ready", "approver_groups", len(cfg.Approvers.Groups()), "required_approvals", cfg.RequiredApprovals,
		"signing_secret", cfg.SigningSecret, "bot_token", cfg.BotToken)
	lambda.Start(h.Handle)
}
