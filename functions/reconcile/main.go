// ReconcileFunction runs on a schedule (every 5 minutes by default). For each open or
// remediating incident it re-reads the key and every dependent cluster and instance, keeps the
// incident and its Slack message true, marks clusters lost or recovered, resolves incidents
// fixed by hand and closes as lost those that cannot be saved, and posts each reminder
// threshold once. Its backstop opens incidents for unusable keys and inaccessible Aurora
// clusters that no event reported, and CloudTrail event history supplies who made a key
// unusable where the incident does not say. A run stops cleanly within its budget and the next
// one continues.
//
// Environment:
//
//	INCIDENTS_TABLE                  DynamoDB table of incidents (required)
//	LOG_LEVEL                        debug, info (default), warn or error
//	REMINDER_THRESHOLDS              time-left marks that each post one reminder (default 72h,24h,6h,1h)
//	ESCALATION_MENTION               mention added to reminders from 24 h left on, e.g. <!subteam^S0123>
//	RUN_BUDGET                       wall-clock bound of one run (default 20s; keep it below the
//	                                 function's timeout — the invocation deadline bounds it too)
//	MAX_API_CALLS                    AWS calls one run may make (default 400)
//	SKIP_CLUSTER_AUTOMATED_BACKUPS   "true" skips DescribeDBClusterAutomatedBackups (the local
//	                                 stack: moto lacks it); default false
//	CLOUDTRAIL_LOOKUP                "on" (default) or "off" (the local stack: moto lacks LookupEvents)
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/cloudtrail"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/rds"

	"github.com/keywarden/keywarden/internal/blast"
	"github.com/keywarden/keywarden/internal/env"
	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/kmskey"
	"github.com/keywarden/keywarden/internal/reconcile"
	"github.com/keywarden/keywarden/internal/trail"
	"github.com/keywarden/keywarden/internal/triage"
)

type settings struct {
	Table                       string
	LogLevel                    string
	Thresholds                  []time.Duration
	Mention                     string
	RunBudget                   time.Duration
	MaxCalls                    int
	SkipClusterAutomatedBackups bool
	CloudTrailLookup            bool
}

func loadSettings(r *env.Reader) (settings, error) {
	c := settings{
		Table:                       r.Required("INCIDENTS_TABLE"),
		LogLevel:                    r.String("LOG_LEVEL", "info"),
		Thresholds:                  r.Durations("REMINDER_THRESHOLDS", reconcile.DefaultThresholds),
		Mention:                     r.String("ESCALATION_MENTION", ""),
		RunBudget:                   r.Duration("RUN_BUDGET", reconcile.DefaultRunBudget),
		MaxCalls:                    r.Int("MAX_API_CALLS", reconcile.DefaultMaxCalls, 20, 100000),
		SkipClusterAutomatedBackups: choice(r, "SKIP_CLUSTER_AUTOMATED_BACKUPS", "true", "false", false),
		CloudTrailLookup:            choice(r, "CLOUDTRAIL_LOOKUP", "on", "off", true),
	}
	return c, r.Err()
}

// choice reads a two-valued variable: yes, no, or def when unset.
func choice(r *env.Reader, name, yes, no string, def bool) bool {
	switch v := r.String(name, ""); v {
	case "":
		return def
	case yes:
		return true
	case no:
		return false
	default:
		r.Fail(fmt.Errorf("%s=%q: want %s or %s", name, v, yes, no))
		return def
	}
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
	rdsClient := rds.NewFromConfig(awsCfg)
	kmsClient := kms.NewFromConfig(awsCfg)
	keys := kmskey.NewResolver(kmsClient)
	store := incident.NewStore(dynamodb.NewFromConfig(awsCfg), cfg.Table)
	var opts []blast.Option
	if cfg.SkipClusterAutomatedBackups {
		opts = append(opts, blast.WithoutClusterAutomatedBackups())
	}
	radius := blast.New(rdsClient, keys, opts...)
	// Slack is wired where the announcer and replier are built; nil means no Slack.
	var announcer triage.Announcer
	d := reconcile.Deps{
		RDS: rdsClient, KMS: kmsClient, Keys: keys, Radius: radius, Incidents: store,
		Opener:    triage.New(keys, radius, store, announcer, log),
		Announcer: announcer,
	}
	if cfg.CloudTrailLookup {
		d.Trail = trail.New(cloudtrail.NewFromConfig(awsCfg))
	}
	r := reconcile.New(d, reconcile.Options{
		Thresholds: cfg.Thresholds, Mention: cfg.Mention, RunBudget: cfg.RunBudget, MaxCalls: cfg.MaxCalls,
	})
	lambda.Start(newHandler(r, log).Handle)
}
