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
//	(shared)                    the settings of internal/startup; SLACK_BOT_TOKEN_SECRET_ARN or
//	                            SLACK_BOT_TOKEN and SLACK_CHANNEL are required here
//	APPROVERS                   Slack user IDs (U…, W…) and user-group IDs (S…) who may act (required)
//	REQUIRED_APPROVALS          distinct approvers before remediation runs: 1 (default) or 2 (two-person rule), at most 5
//	REMEDIATE_FUNCTION          name or ARN of RemediateFunction (required)
//	SLACK_SIGNING_SECRET_ARN    Secrets Manager secret holding the app's signing secret, or
//	SLACK_SIGNING_SECRET        the secret itself (local stack); one is required
//	SLACK_TEAM_ID               the workspace clicks must come from (optional: learnt from auth.test at start)
//	SLACK_ENTERPRISE_ID         the Enterprise Grid organisation of an org-wide install (optional)
//	SLACK_APP_ID                the app clicks must be for (optional; unchecked when unset)
//
// The hand-off's Lambda call honours AWS_ENDPOINT_URL_LAMBDA and AWS_ENDPOINT_URL, so the local
// stack can serve it (package invoke). Secrets are read once per execution environment and never logged.
package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/slack-go/slack"

	"github.com/keywarden/keywarden/internal/approval"
	"github.com/keywarden/keywarden/internal/env"
	"github.com/keywarden/keywarden/internal/handoff/invoke"
	"github.com/keywarden/keywarden/internal/secrets"
	"github.com/keywarden/keywarden/internal/startup"
)

type settings struct {
	Shared            startup.Settings
	Approvers         approval.Approvers
	RequiredApprovals int
	RemediateFunction string
	SigningSecret     secrets.Source
	// Install is the installed app; TeamID and EnterpriseID are learnt from auth.test at start
	// when SLACK_TEAM_ID and SLACK_ENTERPRISE_ID are both unset.
	Install approval.Installation
}

func loadSettings(r *env.Reader) (settings, error) {
	c := settings{
		Shared:            startup.ReadSettings(r, true),
		RequiredApprovals: r.Int("REQUIRED_APPROVALS", 1, 1, 5),
		RemediateFunction: r.Required("REMEDIATE_FUNCTION"),
		SigningSecret:     secrets.FromEnv(r, "SLACK_SIGNING_SECRET", true),
		Install: approval.Installation{
			TeamID: r.String("SLACK_TEAM_ID", ""), EnterpriseID: r.String("SLACK_ENTERPRISE_ID", ""), AppID: r.String("SLACK_APP_ID", ""),
		},
	}
	// A local Slack stand-in makes the clicks' response_url too.
	if u, err := url.Parse(c.Shared.SlackAPIURL); err == nil && u.Host != "" {
		c.Install.ResponseURLPrefixes = []string{u.Scheme + "://" + u.Host + "/"}
	}
	a, err := approval.ParseApprovers(r.String("APPROVERS", ""))
	if err != nil {
		r.Fail(err)
	}
	c.Approvers = a
	return c, r.Err()
}

// teamReader is auth.test; *slack.Client fits.
type teamReader interface {
	AuthTestContext(ctx context.Context) (*slack.AuthTestResponse, error)
}

// installation completes in with the bot's workspace from auth.test
// (https://api.slack.com/methods/auth.test) when neither SLACK_TEAM_ID nor
// SLACK_ENTERPRISE_ID is set: a click then counts only from the workspace the bot token
// belongs to. The app is checked only when SLACK_APP_ID is set (auth.test does not return it);
// the signing secret is per app already.
func installation(ctx context.Context, s teamReader, in approval.Installation) (approval.Installation, error) {
	if in.TeamID != "" || in.EnterpriseID != "" {
		return in, nil
	}
	res, err := s.AuthTestContext(ctx)
	if err != nil {
		return in, fmt.Errorf("auth.test to learn the workspace (or set SLACK_TEAM_ID): %w", err)
	}
	in.TeamID, in.EnterpriseID = res.TeamID, res.EnterpriseID
	return in, nil
}

func main() {
	cfg, err := loadSettings(env.New())
	log := env.Logger(cfg.Shared.LogLevel)
	if err != nil {
		log.Error("configuration", "error", err)
		os.Exit(1)
	}
	ctx := context.Background()
	svc, err := startup.Build(ctx, cfg.Shared, log)
	if err != nil {
		log.Error("start-up", "error", err)
		os.Exit(1)
	}
	signing, err := svc.Secrets.Get(ctx, cfg.SigningSecret)
	if err != nil {
		log.Error("slack signing secret", "error", err)
		os.Exit(1)
	}
	install, err := installation(ctx, svc.Slack, cfg.Install)
	if err != nil {
		log.Error("slack installation", "error", err)
		os.Exit(1)
	}
	h := &handler{
		signingSecret: signing,
		approvers:     cfg.Approvers,
		required:      cfg.RequiredApprovals,
		slack:         svc.Slack,
		store:         svc.Store,
		remediations:  invoke.Invoker{Config: svc.AWS, Function: cfg.RemediateFunction},
		install:       install,
		announcer:     svc.Announcer,
		log:           log,
		now:           time.Now,
		followUp:      defaultFollowUp,
	}
	log.Info("ready", "team_id", install.TeamID, "enterprise_id", install.EnterpriseID, "app_id", install.AppID,
		"app_checked", install.AppID != "", "approver_groups", len(cfg.Approvers.Groups()), "required_approvals", cfg.RequiredApprovals,
		"signing_secret", cfg.SigningSecret, "bot_token", cfg.Shared.BotToken)
	lambda.Start(h.Handle)
}
