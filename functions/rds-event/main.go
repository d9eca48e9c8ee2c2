// RdsEventFunction receives RDS's own EventBridge events ("RDS DB Instance Event" and "RDS DB
// Cluster Event", source aws.rds) and moves the incident of the cluster they are about:
// RDS-EVENT-0418/0419 (an instance cannot reach its KMS key) refine the cluster's recoverable
// window and, when no incident is open for the key, open one — the CloudTrail event was lost;
// RDS-EVENT-0420 (access back), 0150/0151 (cluster stopped/started) and 0087/0088 (instance
// stopped/started) update statuses from live RDS state and resolve the incident once the key is
// Enabled and every dependent cluster is available. Events about clusters keywarden does not
// track are logged and acknowledged. The cluster's word comes first: a loss report or an
// inaccessible status opens and holds the incident whatever DescribeKey says (denied or a key of
// another account is recorded as Unknown), and a key-access event older than the latest one
// applied for its source is stale and changes nothing.
//
// Environment: the shared settings of internal/wire (INCIDENTS_TABLE, LOG_LEVEL,
// SKIP_CLUSTER_AUTOMATED_BACKUPS, SLACK_BOT_TOKEN_SECRET_ARN or SLACK_BOT_TOKEN, SLACK_CHANNEL,
// SLACK_API_URL); Slack is optional.
package main

import (
	"context"
	"os"

	"github.com/aws/aws-lambda-go/lambda"

	"github.com/keywarden/keywarden/internal/env"
	"github.com/keywarden/keywarden/internal/lifecycle/rdstrack"
	"github.com/keywarden/keywarden/internal/triage"
	"github.com/keywarden/keywarden/internal/wire"
	"github.com/keywarden/keywarden/internal/wire/keyloss"
)

func loadSettings(r *env.Reader) (wire.Settings, error) {
	s := wire.ReadSettings(r, false)
	return s, r.Err()
}

func main() {
	s, err := loadSettings(env.New())
	log := env.Logger(s.LogLevel)
	if err != nil {
		log.Error("configuration", "error", err)
		os.Exit(1)
	}
	svc, err := wire.Build(context.Background(), s, log)
	if err != nil {
		log.Error("start-up", "error", err)
		os.Exit(1)
	}
	var announcer triage.Announcer
	if svc.Announcer != nil {
		announcer = svc.Announcer
	}
	k := keyloss.Build(svc, s, log)
	tracker := rdstrack.NewTracker(k.RDS, k.Keys, svc.Store, k.Triage, announcer, log)
	lambda.Start(newHandler(tracker, log).Handle)
}
