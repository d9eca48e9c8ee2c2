// KeyEventFunction receives KMS events from EventBridge — "AWS API Call via CloudTrail" for
// DisableKey, ScheduleKeyDeletion, DeleteImportedKeyMaterial, DisconnectCustomKeyStore,
// EnableKey, CancelKeyDeletion, ImportKeyMaterial, ConnectCustomKeyStore, PutKeyPolicy,
// RevokeGrant and RetireGrant, and KMS's own "KMS CMK Deletion" and "KMS Imported Key Material
// Expiration" — and opens or updates the key's incident, then announces it in Slack. The
// recovery calls update an open incident and never open one. A key it may not describe is a
// "failed" outcome logged at ERROR, not an error Lambda retries; what still fails after the
// retries lands on the on-failure queue (template.yaml), whose alarm pages someone.
//
// Environment: the shared settings of internal/startup (INCIDENTS_TABLE, LOG_LEVEL,
// SKIP_CLUSTER_AUTOMATED_BACKUPS, SLACK_BOT_TOKEN_SECRET_ARN or SLACK_BOT_TOKEN, SLACK_CHANNEL,
// SLACK_API_URL); Slack is optional. In organization mode (DEPLOYMENT_MODE=organization and the
// other variables of org.SettingsFromEnv) the key is read in its own account and mapped across
// the organisation's accounts, each through the member read role.
package main

import (
	"context"
	"errors"
	"os"

	"github.com/aws/aws-lambda-go/lambda"

	"github.com/keywarden/keywarden/internal/env"
	"github.com/keywarden/keywarden/internal/org"
	"github.com/keywarden/keywarden/internal/startup"
	"github.com/keywarden/keywarden/internal/startup/keyloss"
)

func main() {
	r := env.New()
	s := startup.ReadSettings(r, false)
	log := env.Logger(s.LogLevel)
	o, oerr := org.SettingsFromEnv(os.Getenv)
	if err := errors.Join(r.Err(), oerr); err != nil {
		log.Error("configuration", "error", err)
		os.Exit(1)
	}
	svc, err := startup.Build(context.Background(), s, log)
	if err != nil {
		log.Error("start-up", "error", err)
		os.Exit(1)
	}
	lambda.Start(newHandler(keyloss.Build(svc, s, o, log).Intake, svc.Announcer, log).withMetrics(svc.Metrics).Handle)
}
