package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	"github.com/aws/aws-sdk-go-v2/service/sns"

	"github.com/keywarden/keywarden/internal/awstest"
	"github.com/keywarden/keywarden/internal/incident/dynamostore"
	"github.com/keywarden/keywarden/internal/secrets"
	"github.com/keywarden/keywarden/internal/slacktest"
)

// doctorWorld is a deployment on moto (its region's table, rules and topic) and a Slack
// stand-in whose bot is in the channel.
func doctorWorld(t *testing.T, region string) (aws.Config, doctorConfig, *slacktest.Slack) {
	t.Helper()
	cfg := awstest.Config(t, awstest.Moto(t))
	cfg.Region = region
	ctx := context.Background()
	table := fmt.Sprintf("doctor-%d", rand.Int64())
	if err := dynamostore.CreateTable(ctx, dynamodb.NewFromConfig(cfg), table); err != nil {
		t.Fatal(err)
	}
	eb := eventbridge.NewFromConfig(cfg)
	for _, p := range []string{`{"source":["aws.kms"]}`, `{"source":["aws.rds"]}`} {
		if _, err := eb.PutRule(ctx, &eventbridge.PutRuleInput{Name: aws.String(fmt.Sprintf("doctor-%d", rand.Int64())), EventPattern: aws.String(p)}); err != nil {
			t.Fatal(err)
		}
	}
	topic, err := sns.NewFromConfig(cfg).CreateTopic(ctx, &sns.CreateTopicInput{Name: aws.String(fmt.Sprintf("doctor-%d", rand.Int64()))})
	if err != nil {
		t.Fatal(err)
	}
	sl := slacktest.Start(t, &slacktest.Slack{Token: "xoxb-doctor"})
	c := doctorConfig{
		BotToken:      secrets.Literal("SLACK_BOT_TOKEN", "xoxb-doctor"),
		SigningSecret: secrets.Literal("SLACK_SIGNING_SECRET", "s3cret"),
		Channel:       slacktest.Channel,
		SlackAPIURL:   sl.APIURL(),
		Approvers:     "U0APPROVR1, S0ONCALL01",
		Table:         table,
		Topic:         aws.ToString(topic.TopicArn),
	}
	return cfg, c, sl
}

func TestDoctor(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(c *doctorConfig, s *slacktest.Slack)
		// fail names the check that must fail and a word of its fix; "" means all pass.
		fail, fix string
	}{
		{name: "all set"},
		{name: "channel by name", setup: func(c *doctorConfig, s *slacktest.Slack) {
			c.Channel = "#keywarden-local"
			s.ChannelID = ""
		}, fail: "slack channel", fix: "channel's ID"},
		{name: "revoked token", setup: func(_ *doctorConfig, s *slacktest.Slack) {
			s.Fail("auth.test", slacktest.Fault{Error: "token_revoked"})
		}, fail: "slack token", fix: "reinstall"},
		{name: "no token", setup: func(c *doctorConfig, _ *slacktest.Slack) { c.BotToken = secrets.Source{} }, fail: "slack token", fix: "SLACK_BOT_TOKEN_SECRET_ARN"},
		{name: "missing scopes", setup: func(_ *doctorConfig, s *slacktest.Slack) { s.Scopes = []string{"chat:write"} }, fail: "slack scopes", fix: "reinstall"},
		{name: "bot not in a private channel", setup: func(_ *doctorConfig, s *slacktest.Slack) {
			s.Leave(slacktest.Channel)
			s.MakePrivate(slacktest.Channel)
		}, fail: "slack channel", fix: "/invite"},
		{name: "channel gone", setup: func(_ *doctorConfig, s *slacktest.Slack) {
			s.Fail("conversations.info", slacktest.Fault{Error: "channel_not_found"})
		}, fail: "slack channel", fix: "SLACK_CHANNEL"},
		{name: "no signing secret", setup: func(c *doctorConfig, _ *slacktest.Slack) { c.SigningSecret = secrets.Source{} }, fail: "signing secret", fix: "SLACK_SIGNING_SECRET_ARN"},
		{name: "no approvers", setup: func(c *doctorConfig, _ *slacktest.Slack) { c.Approvers = "" }, fail: "approvers", fix: "APPROVERS"},
		{name: "approvers by name", setup: func(c *doctorConfig, _ *slacktest.Slack) { c.Approvers = "@alice" }, fail: "approvers", fix: "APPROVERS"},
		{name: "no table", setup: func(c *doctorConfig, _ *slacktest.Slack) { c.Table = "nope" }, fail: "incidents table", fix: "INCIDENTS_TABLE"},
		{name: "no topic", setup: func(c *doctorConfig, _ *slacktest.Slack) { c.Topic = "arn:aws:sns:us-east-1:123456789012:nope" }, fail: "notification topic", fix: "NotificationTopicArn"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, c, s := doctorWorld(t, awstest.Region)
			if tc.setup != nil {
				tc.setup(&c, s)
			}
			var out bytes.Buffer
			err := doctor(context.Background(), c, cfg, &out)
			lines := strings.Split(strings.TrimSpace(out.String()), "\n")
			if len(lines) != 8 {
				t.Errorf("got %d lines, want one per check (8):\n%s", len(lines), out.String())
			}
			var failed []string
			for _, l := range lines {
				if strings.HasPrefix(l, "FAIL") {
					failed = append(failed, l)
				}
			}
			if tc.fail == "" {
				if err != nil || len(failed) > 0 {
					t.Errorf("doctor: %v\n%s", err, out.String())
				}
				return
			}
			if !errors.Is(err, errDoctor) {
				t.Errorf("doctor: got %v, want errDoctor", err)
			}
			if len(failed) == 0 || !strings.Contains(failed[0], tc.fail) || !strings.Contains(failed[0], "fix: ") || !strings.Contains(failed[0], tc.fix) {
				t.Errorf("failed lines %q: want %s first, with a fix naming %q\n%s", failed, tc.fail, tc.fix, out.String())
			}
		})
	}
}

// In a region with no keywarden rules the doctor says so.
func TestDoctorNoRules(t *testing.T) {
	cfg, c, _ := doctorWorld(t, awstest.Region)
	cfg.Region = "eu-west-3" // no rules and no table there
	c.Topic = ""
	var out bytes.Buffer
	if err := doctor(context.Background(), c, cfg, &out); !errors.Is(err, errDoctor) {
		t.Fatalf("doctor: %v", err)
	}
	if !strings.Contains(out.String(), "FAIL event rules") || !strings.Contains(out.String(), "no enabled rule for aws.kms, aws.rds") {
		t.Errorf("output:\n%s", out.String())
	}
}

// The command's exit: `keywarden doctor` returns an error (exit 1) when a check fails.
func TestDoctorCommand(t *testing.T) {
	cli(t)
	t.Setenv("SLACK_BOT_TOKEN", "")
	t.Setenv("SLACK_BOT_TOKEN_SECRET_ARN", "")
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"doctor", "--table", "nope", "--approvers", "U0APPROVR1"}, &out, &errOut)
	if !errors.Is(err, errDoctor) || !strings.Contains(out.String(), "FAIL slack token") || !strings.Contains(out.String(), "FAIL incidents table") {
		t.Errorf("doctor: %v\n%s", err, out.String())
	}
}
