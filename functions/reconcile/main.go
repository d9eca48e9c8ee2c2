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
//	(shared)                         the settings of internal/startup: INCIDENTS_TABLE, LOG_LEVEL,
//	                                 SKIP_CLUSTER_AUTOMATED_BACKUPS, SLACK_BOT_TOKEN_SECRET_ARN or
//	                                 SLACK_BOT_TOKEN, SLACK_CHANNEL, SLACK_API_URL (Slack optional)
//	REMINDER_THRESHOLDS              time-left marks that each post one reminder (default 72h,24h,6h,1h)
//	ESCALATION_MENTION               mention added to reminders from 24 h left on, e.g. <!subteam^S0123>
//	RUN_BUDGET                       wall-clock bound of one run (default 20s; keep it below the
//	                                 function's timeout — the invocation deadline bounds it too)
//	MAX_API_CALLS                    AWS calls one run may make (default 400)
//	CLOUDTRAIL_LOOKUP                "on" (default) or "off" (the local stack: moto lacks LookupEvents)
//	CRITICAL_REMINDER_EVERY          cadence of reminders, with the escalation mention, for a
//	                                 critical incident with no deadline (default 6h)
//	REMEDIATE_FUNCTION               name or ARN of RemediateFunction: every run (and the one-minute
//	                                 {"pass": "handoff"} schedule) starts approved remediations not yet
//	                                 started (optional; without it that recovery is off, and logged so)
//	WATCH_GRACE                      how long an instance that reported lost key access stays available
//	                                 with the key Enabled before it counts as recovered (default 30m)
//	DEPLOYMENT_MODE …                organization mode (org.SettingsFromEnv): keys are read in
//	                                 their own account, the backstop and the radius repair map a
//	                                 key across the organisation's accounts, and clusters are
//	                                 listed in every account through the member read role
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/service/cloudtrail"

	"github.com/keywarden/keywarden/internal/env"
	"github.com/keywarden/keywarden/internal/handoff/invoke"
	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/org"
	"github.com/keywarden/keywarden/internal/reconcile"
	"github.com/keywarden/keywarden/internal/startup"
	"github.com/keywarden/keywarden/internal/startup/keyloss"
	"github.com/keywarden/keywarden/internal/trail"
)

type settings struct {
	Shared            startup.Settings
	Org               org.Settings
	Thresholds        []time.Duration
	Mention           string
	RunBudget         time.Duration
	MaxCalls          int
	CloudTrailLookup  bool
	CriticalEvery     time.Duration
	RemediateFunction string
	WatchGrace        time.Duration
}

func loadSettings(r *env.Reader) (settings, error) {
	c := settings{
		Shared:            startup.ReadSettings(r, false),
		Thresholds:        r.Durations("REMINDER_THRESHOLDS", reconcile.DefaultThresholds),
		Mention:           r.String("ESCALATION_MENTION", ""),
		RunBudget:         r.Duration("RUN_BUDGET", reconcile.DefaultRunBudget),
		MaxCalls:          r.Int("MAX_API_CALLS", reconcile.DefaultMaxCalls, 20, 100000),
		CloudTrailLookup:  choice(r, "CLOUDTRAIL_LOOKUP", "on", "off", true),
		CriticalEvery:     r.Duration("CRITICAL_REMINDER_EVERY", reconcile.DefaultCriticalEvery),
		RemediateFunction: r.String("REMEDIATE_FUNCTION", ""),
		WatchGrace:        r.Duration("WATCH_GRACE", incident.DefaultWatchGrace),
	}
	o, err := org.SettingsFromEnv(func(k string) string { return r.String(k, "") })
	if err != nil {
		r.Fail(err)
	}
	c.Org = o
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
	k := keyloss.Build(svc, cfg.Shared, cfg.Org, log)
	d := reconcile.Deps{
		RDS: k.RDS, KMS: k.KMS, Keys: k.Keys, Radius: k.Radius, Incidents: svc.Store,
		Opener: k.Intake, Events: k.RDS,
	}
	if cfg.Org.Enabled {
		d.Radius = org.ManyFinder{Finder: k.Accounts}
		d.RDS = org.NewAcrossAccounts(cfg.Org, svc.AWS, k.ReadRoles)
	}
	if svc.Announcer != nil {
		d.Announcer, d.Replier = svc.Announcer, svc.Announcer
	}
	if cfg.CloudTrailLookup {
		d.Trail = trail.New(cloudtrail.NewFromConfig(svc.AWS))
	}
	r := reconcile.New(d, reconcile.Options{
		Thresholds: cfg.Thresholds, Mention: cfg.Mention, RunBudget: cfg.RunBudget, MaxCalls: cfg.MaxCalls,
		CriticalEvery: cfg.CriticalEvery,
	})
	var starter reconcile.Starter
	if cfg.RemediateFunction != "" {
		starter = invoke.Invoker{Config: svc.AWS, Function: cfg.RemediateFunction}
	} else {
		log.Warn("REMEDIATE_FUNCTION unset: approved remediations whose hand-off was lost are not restarted")
	}
	r.WithHandoff(starter, cfg.WatchGrace)
	log.Info("ready", "handoff_recovery", starter != nil, "watch_grace", cfg.WatchGrace.String())
	// Lambda names the function in AWS_LAMBDA_FUNCTION_NAME: the failure metric's dimension,
	// which the template's alarm names with !Ref ReconcileFunction.
	lambda.Start(newHandler(r, log).withMetrics(os.Stdout, os.Getenv("AWS_LAMBDA_FUNCTION_NAME")).Handle)
}
