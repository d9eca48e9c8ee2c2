// RemediateFunction re-enables an incident's KMS key and brings its Aurora clusters back. It is
// invoked asynchronously by SlackActionFunction once an approved click is recorded, with
// {"incident_id": "…", "approved_by": ["U…", …]}. It plans from live state and runs, in AWS's
// documented order, CancelKeyDeletion → EnableKey → wait until DescribeKey says Enabled →
// StartDBCluster / RebootDBInstance, recording each step and its API result on the timeline and
// refreshing the Slack message. Safe to run again after a crash, a timeout or Lambda's retry.
//
// Environment:
//
//	INCIDENTS_TABLE             DynamoDB table of incidents (required)
//	REMEDIATION_KEYS            key ARNs remediation is limited to, comma-separated (optional; default any key)
//	WAIT_TIMEOUT                how long to wait for the key to read Enabled (default 60s; keep it under the function timeout)
//	SLACK_BOT_TOKEN_SECRET_ARN  Secrets Manager secret holding the bot token, or
//	SLACK_BOT_TOKEN             the token itself (local stack); one is required
//	SLACK_CHANNEL               channel for an incident's first message, if it has none yet (required)
//	SLACK_API_URL               Slack Web API base URL (optional; the local Slack stand-in)
//	LOG_LEVEL                   debug, info (default), warn or error
package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/rds"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/slack-go/slack"

	"github.com/keywarden/keywarden/internal/announce"
	"github.com/keywarden/keywarden/internal/env"
	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/notify"
	"github.com/keywarden/keywarden/internal/remedy"
	"github.com/keywarden/keywarden/internal/secrets"
)

type settings struct {
	Table       string
	AllowedKeys []string
	WaitTimeout time.Duration
	BotToken    secrets.Source
	Channel     string
	SlackAPIURL string
	LogLevel    string
}

func loadSettings(r *env.Reader) (settings, error) {
	c := settings{
		Table:       r.Required("INCIDENTS_TABLE"),
		AllowedKeys: r.List("REMEDIATION_KEYS"),
		WaitTimeout: r.Duration("WAIT_TIMEOUT", remedy.DefaultWaitTimeout),
		BotToken:    secrets.FromEnv(r, "SLACK_BOT_TOKEN", true),
		Channel:     r.Required("SLACK_CHANNEL"),
		SlackAPIURL: r.String("SLACK_API_URL", ""),
		LogLevel:    r.String("LOG_LEVEL", "info"),
	}
	for _, k := range c.AllowedKeys {
		if !strings.HasPrefix(k, "arn:") || !strings.Contains(k, ":key/") {
			r.Fail(fmt.Errorf("REMEDIATION_KEYS: %q is not a KMS key ARN", k))
		}
	}
	return c, r.Err()
}

// allowedKeys turns REMEDIATION_KEYS into remedy's filter; nil (any key) when the list is empty.
func allowedKeys(arns []string) func(string) bool {
	if len(arns) == 0 {
		return nil
	}
	set := make(map[string]bool, len(arns))
	for _, a := range arns {
		set[a] = true
	}
	return func(keyARN string) bool { return set[keyARN] }
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
	if secrets.NeedsAPI(cfg.BotToken) {
		sm = secretsmanager.NewFromConfig(awsCfg)
	}
	token, err := secrets.NewLoader(sm).Get(ctx, cfg.BotToken)
	if err != nil {
		log.Error("slack bot token", "error", err)
		os.Exit(1)
	}
	var opts []slack.Option
	if cfg.SlackAPIURL != "" {
		opts = append(opts, slack.OptionAPIURL(cfg.SlackAPIURL))
	}
	store := incident.NewStore(dynamodb.NewFromConfig(awsCfg), cfg.Table)
	run := remedy.New(kms.NewFromConfig(awsCfg), rds.NewFromConfig(awsCfg), store, remedy.Options{
		WaitTimeout: cfg.WaitTimeout,
		AllowedKeys: allowedKeys(cfg.AllowedKeys),
	})
	h := &handler{
		runner:          run,
		store:           store,
		announcer:       announce.New(store, notify.New(slack.New(token, opts...), cfg.Channel)),
		log:             log,
		announceTimeout: 10 * time.Second,
	}
	log.Info("ready", "remediation_keys", len(cfg.AllowedKeys), "wait_timeout", cfg.WaitTimeout.String(), "bot_token", cfg.BotToken)
	lambda.Start(h.Handle)
}
