// Package startup is the functions' composition root: it builds, once per execution environment,
// the services every function shares — the AWS configuration, the incident store, secrets and
// Slack — from the settings every function reads the same way. Each function's main adds what
// is its own; startup/keyloss builds the key and blast-radius machinery for the functions that
// read keys. It must not import the RDS or KMS SDK, so that a function that never calls them
// (SlackActionFunction) does not link them, nor the SDK's Lambda client or package config (see
// AWSConfig), which no function needs.
//
// Shared settings:
//
//	INCIDENTS_TABLE                  DynamoDB table of incidents (required; dynamostore's layout)
//	LEGACY_INCIDENTS_TABLE           table of the one-item layout of earlier versions, read and
//	                                 migrated from (optional)
//	LOG_LEVEL                        debug, info (default), warn or error
//	SKIP_CLUSTER_AUTOMATED_BACKUPS   "true" skips DescribeDBClusterAutomatedBackups; only for the
//	                                 local stack, whose moto does not implement it
//	SLACK_BOT_TOKEN_SECRET_ARN       Secrets Manager secret holding the bot token (deployments), or
//	SLACK_BOT_TOKEN                  the token itself (the local stack)
//	SLACK_CHANNEL                    channel for incident messages
//	SLACK_API_URL                    Slack Web API base URL (optional: the local Slack stand-in)
//	NOTIFICATION_TOPIC_ARN           SNS topic that hears critical incidents on open and every
//	                                 incident Slack cannot carry (optional; package page)
//	STACK_NAME                       the Stack dimension of keywarden's CloudWatch metrics
//	                                 (optional; template.yaml sets it)
package startup

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/slack-go/slack"

	"github.com/keywarden/keywarden/internal/env"
	"github.com/keywarden/keywarden/internal/incident/dynamostore"
	"github.com/keywarden/keywarden/internal/page"
	"github.com/keywarden/keywarden/internal/secrets"
	"github.com/keywarden/keywarden/internal/slackmessage"
)

// Settings are the variables every function reads.
type Settings struct {
	Table                       string
	LegacyTable                 string
	LogLevel                    string
	SkipClusterAutomatedBackups bool
	BotToken                    secrets.Source
	Channel                     string
	SlackAPIURL                 string
	NotificationTopicARN        string
	StackName                   string
}

// ReadSettings reads the shared settings into r, which collects every problem. Slack is optional
// unless slackRequired: a function that only reacts to events still works, and says so in its
// log, when no bot token is configured.
func ReadSettings(r *env.Reader, slackRequired bool) Settings {
	s := Settings{
		Table:                       r.Required("INCIDENTS_TABLE"),
		LegacyTable:                 r.String("LEGACY_INCIDENTS_TABLE", ""),
		LogLevel:                    r.String("LOG_LEVEL", "info"),
		SkipClusterAutomatedBackups: r.Bool("SKIP_CLUSTER_AUTOMATED_BACKUPS", false),
		BotToken:                    secrets.FromEnv(r, "SLACK_BOT_TOKEN", slackRequired),
		SlackAPIURL:                 r.String("SLACK_API_URL", ""),
		NotificationTopicARN:        r.String("NOTIFICATION_TOPIC_ARN", ""),
		StackName:                   r.String("STACK_NAME", ""),
	}
	if slackRequired || s.BotToken.Set() {
		s.Channel = r.Required("SLACK_CHANNEL")
	}
	return s
}

// Services are the collaborators every function shares, built once per execution environment:
// the AWS configuration, the incident store, the secrets loader and Slack. What reads keys and
// their dependents (KMS, RDS, the blast radius, intake) is built by package startup/keyloss, only
// in the functions that use it: a function links only what it uses, and what it links is most
// of its cold start (make bench-cold).
type Services struct {
	AWS     aws.Config
	Store   *dynamostore.Store
	Secrets *secrets.Loader
	// Slack and Announcer are nil when no bot token is configured.
	Slack     *slack.Client
	Announcer *slackmessage.Announcer
	// Pager publishes to NOTIFICATION_TOPIC_ARN (pages nobody when unset); Metrics writes
	// keywarden's CloudWatch metrics to standard output.
	Pager   *page.Pager
	Metrics *page.Metrics
}

// Build reads the AWS configuration from the Lambda environment (AWSConfig), fetches the bot
// token once, and builds the shared services. Errors: the AWS configuration is incomplete
// (AWSConfig's errors), or the bot token could not be read from Secrets Manager.
func Build(ctx context.Context, s Settings, log *slog.Logger) (*Services, error) {
	cfg, err := AWSConfig(os.LookupEnv)
	if err != nil {
		return nil, fmt.Errorf("aws configuration: %w", err)
	}
	svc := &Services{
		AWS:     cfg,
		Store:   newStore(dynamodb.NewFromConfig(cfg), s),
		Secrets: secrets.NewLoader(secretsmanager.NewFromConfig(cfg)),
	}
	svc.Pager = page.New(sns.NewFromConfig(cfg), s.NotificationTopicARN)
	svc.Metrics = page.NewMetrics(os.Stdout, s.StackName)
	if s.BotToken.Set() {
		token, err := svc.Secrets.Get(ctx, s.BotToken)
		if err != nil {
			return nil, fmt.Errorf("slack bot token: %w", err)
		}
		// slack-go's default client has no timeout; callers bound their calls with contexts too,
		// this is the backstop.
		// slackmessage.Transport hands slack-go every rate limit with its wait (an HTTP-date
		// Retry-After, or one on a 200).
		slackOpts := []slack.Option{slack.OptionHTTPClient(&http.Client{Timeout: 10 * time.Second, Transport: slackmessage.Transport(nil)})}
		if s.SlackAPIURL != "" {
			slackOpts = append(slackOpts, slack.OptionAPIURL(s.SlackAPIURL))
		}
		svc.Slack = slack.New(token, slackOpts...)
		svc.Announcer = slackmessage.New(svc.Store, slackmessage.NewClient(svc.Slack, s.Channel), svc.Pager, svc.Metrics)
	} else {
		log.Warn("no Slack bot token configured: incidents are recorded but not announced")
	}
	return svc, nil
}

// RetryAttempts and RetryMaxBackoff tune the AWS SDK's standard retryer for every client.
// RDS Describe* and KMS DescribeKey are throttled per account and Region, a quota shared with
// every other caller; a blast radius makes dozens of those calls at once. The SDK's default of
// 3 attempts (https://docs.aws.amazon.com/sdkref/latest/guide/feature-retry-behavior.html)
// gives up on a throttling burst within about a second, which used to fail the whole event.
// Six attempts with up to 4 s between them (jittered exponential backoff) ride out a burst of
// about 15 s, inside the functions' 30 s timeout. What still fails degrades (radius_incomplete)
// or reaches the on-failure queue; it is never dropped.
const (
	RetryAttempts   = 6
	RetryMaxBackoff = 4 * time.Second
)

// newRetryer is the standard retryer with RetryAttempts and RetryMaxBackoff. Only retryable
// errors are retried (throttling, 5xx, transient network errors); AccessDenied and validation
// errors return at once.
func newRetryer() aws.Retryer {
	return retry.NewStandard(func(o *retry.StandardOptions) {
		o.MaxAttempts = RetryAttempts
		o.MaxBackoff = RetryMaxBackoff
	})
}

// newStore is the incident store on s.Table, migrating from s.LegacyTable when one is set.
func newStore(db dynamostore.API, s Settings) *dynamostore.Store {
	var opts []dynamostore.Option
	if s.LegacyTable != "" {
		opts = append(opts, dynamostore.WithLegacyTable(s.LegacyTable))
	}
	return dynamostore.New(db, s.Table, opts...)
}
