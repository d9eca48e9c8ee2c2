// RemediateFunction re-enables an incident's KMS key and brings its Aurora clusters back. It is
// invoked asynchronously by SlackActionFunction once an approved click moved the incident to
// remediating, with {"incident_id": "…", "run_id": "…", "approved_by": ["U…", …]}. It refreshes
// the incident from live state, plans (incident.Plan) and runs, in AWS's documented order,
// CancelKeyDeletion → EnableKey → wait until DescribeKey says Enabled → StartDBCluster /
// RebootDBInstance, recording each step and its API result on the incident and refreshing the
// Slack message. A run that cannot finish gives the incident back to the approvers. Safe to run
// again after a crash, a timeout or Lambda's retry.
//
// Environment:
//
//	(shared)                    the settings of internal/startup; SLACK_BOT_TOKEN_SECRET_ARN or
//	                            SLACK_BOT_TOKEN and SLACK_CHANNEL are required here
//	REMEDIATION_KEYS            key ARNs remediation is limited to, comma-separated (optional; default any key)
//	WAIT_TIMEOUT                how long to wait for the key to read Enabled (default 60s; keep it under the function timeout)
//	DEPLOYMENT_MODE …           organization mode (member.SettingsFromEnv): key steps run in the
//	                            key's account, cluster steps in each cluster's, reading through
//	                            keywarden-read (MEMBER_READ_ROLE) and writing through
//	                            keywarden-remediate (MEMBER_REMEDIATE_ROLE)
//	KMS_CONSISTENCY_TIMEOUT     how long EnableKey retries KMSInvalidStateException/NotFoundException after CancelKeyDeletion (default 60s)
//	WATCH_GRACE                 how long an instance that reported lost key access stays available with the key Enabled
//	                            before it counts as recovered without RDS-EVENT-0420 (default 30m)
//
// A run is claimed by one invocation (its Lambda request ID) and stops with a margin before the
// invocation's deadline, recording where; the reconciler starts the next invocation.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/rds"

	"github.com/keywarden/keywarden/internal/env"
	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/org/member"
	"github.com/keywarden/keywarden/internal/remedy"
	"github.com/keywarden/keywarden/internal/startup"
)

type settings struct {
	Shared      startup.Settings
	Org         member.Settings
	AllowedKeys []string
	WaitTimeout time.Duration
	Consistency time.Duration
	WatchGrace  time.Duration
}

func loadSettings(r *env.Reader) (settings, error) {
	c := settings{
		Shared:      startup.ReadSettings(r, true),
		AllowedKeys: r.List("REMEDIATION_KEYS"),
		WaitTimeout: r.Duration("WAIT_TIMEOUT", remedy.DefaultWaitTimeout),
		Consistency: r.Duration("KMS_CONSISTENCY_TIMEOUT", remedy.DefaultConsistencyTimeout),
		WatchGrace:  r.Duration("WATCH_GRACE", incident.DefaultWatchGrace),
	}
	o, err := member.SettingsFromEnv(func(k string) string { return r.String(k, "") })
	if err != nil {
		r.Fail(err)
	}
	c.Org = o
	for _, k := range c.AllowedKeys {
		if !incident.IsKeyARN(k) {
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

// invocationID names the invocation in a run's claim: its Lambda request ID.
func invocationID(ctx context.Context) string {
	if lc, ok := lambdacontext.FromContext(ctx); ok && lc.AwsRequestID != "" {
		return lc.AwsRequestID
	}
	return "remediate-" + time.Now().UTC().Format("20060102T150405.000000000")
}

func main() {
	cfg, err := loadSettings(env.New())
	log := env.Logger(cfg.Shared.LogLevel)
	if err != nil {
		log.Error("configuration", "error", err)
		os.Exit(1)
	}
	svc, err := startup.Build(context.Background(), cfg.Shared, log)
	if err != nil {
		log.Error("start-up", "error", err)
		os.Exit(1)
	}
	// RemediateFunction calls KMS and RDS but needs no blast radius or intake: it builds the two
	// clients itself rather than through startup/keyloss.
	ownKMS, ownRDS := kms.NewFromConfig(svc.AWS), rds.NewFromConfig(svc.AWS)
	run := remedy.New(ownKMS, ownRDS, svc.Store, remedy.Options{
		WaitTimeout:        cfg.WaitTimeout,
		ConsistencyTimeout: cfg.Consistency,
		WatchGrace:         cfg.WatchGrace,
		AllowedKeys:        allowedKeys(cfg.AllowedKeys),
		Invocation:         invocationID,
	})
	if cfg.Org.Enabled {
		run.WithClients(newAccountClients(member.NewRoles(svc.AWS, cfg.Org.ReadRole), member.NewRoles(svc.AWS, cfg.Org.RemediateRole), ownKMS, ownRDS))
	}
	h := &handler{
		runner:          run,
		store:           svc.Store,
		announcer:       svc.Announcer,
		log:             log,
		announceTimeout: 10 * time.Second,
	}
	log.Info("ready", "remediation_keys", len(cfg.AllowedKeys), "wait_timeout", cfg.WaitTimeout.String(), "bot_token", cfg.Shared.BotToken)
	lambda.Start(h.Handle)
}
