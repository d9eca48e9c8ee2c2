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
// Environment: the shared settings of internal/startup (INCIDENTS_TABLE, LOG_LEVEL,
// SKIP_CLUSTER_AUTOMATED_BACKUPS, SLACK_BOT_TOKEN_SECRET_ARN or SLACK_BOT_TOKEN, SLACK_CHANNEL,
// SLACK_API_URL); Slack is optional. In organization mode (DEPLOYMENT_MODE=organization and the
// other variables of org.SettingsFromEnv) each event is read in the account its SourceArn names,
// through the member read role, and its key across the organisation.
package main

import (
	"context"
	"errors"
	"os"

	"github.com/aws/aws-lambda-go/lambda"

	"github.com/keywarden/keywarden/internal/env"
	"github.com/keywarden/keywarden/internal/lifecycle/rdstrack"
	"github.com/keywarden/keywarden/internal/org"
	"github.com/keywarden/keywarden/internal/startup"
	"github.com/keywarden/keywarden/internal/startup/keyloss"
)

func loadSettings(r *env.Reader, getenv func(string) string) (startup.Settings, org.Settings, error) {
	s := startup.ReadSettings(r, false)
	o, err := org.SettingsFromEnv(getenv)
	return s, o, errors.Join(r.Err(), err)
}

func main() {
	s, o, err := loadSettings(env.New(), os.Getenv)
	log := env.Logger(s.LogLevel)
	if err != nil {
		log.Error("configuration", "error", err)
		os.Exit(1)
	}
	svc, err := startup.Build(context.Background(), s, log)
	if err != nil {
		log.Error("start-up", "error", err)
		os.Exit(1)
	}
	k := keyloss.Build(svc, s, o, log)
	build := func(api rdstrack.RDSAPI) *rdstrack.Tracker {
		return rdstrack.NewTracker(api, k.Keys, svc.Store, k.Intake)
	}
	var events rdsEvents = build(k.RDS)
	if o.Enabled {
		events = newAccountTrackers(k.ReadRoles, build)
	}
	lambda.Start(newHandler(events, svc.Announcer, log).Handle)
}
