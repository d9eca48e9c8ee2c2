// RdsEventFunction receives RDS's own EventBridge events ("RDS DB Instance Event" and "RDS DB
// Cluster Event", source aws.rds) and moves the incident of the cluster they are about:
// RDS-EVENT-0418/0419 (an instance cannot reach its KMS key) refine the cluster's recoverable
// window and, when no incident is open for the key, open one — the CloudTrail event was lost;
// RDS-EVENT-0420 (access back), 0150/0151 (cluster stopped/started) and 0087/0088 (instance
// stopped/started) update statuses from live RDS state and resolve the incident once the key is
// Enabled and every dependent cluster is available. Events about clusters keywarden does not
// track are logged and acknowledged.
//
// Environment:
//
//	INCIDENTS_TABLE                  DynamoDB table of incidents (required)
//	LOG_LEVEL                        debug, info (default), warn or error
//	SKIP_CLUSTER_AUTOMATED_BACKUPS   "true" skips DescribeDBClusterAutomatedBackups when an
//	                                 incident opens (the local stack: moto lacks it); default false
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/rds"

	"github.com/keywarden/keywarden/internal/blast"
	"github.com/keywarden/keywarden/internal/env"
	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/kmskey"
	"github.com/keywarden/keywarden/internal/lifecycle"
	"github.com/keywarden/keywarden/internal/triage"
)

type settings struct {
	Table                       string
	LogLevel                    string
	SkipClusterAutomatedBackups bool
}

func loadSettings(r *env.Reader) (settings, error) {
	c := settings{
		Table:                       r.Required("INCIDENTS_TABLE"),
		LogLevel:                    r.String("LOG_LEVEL", "info"),
		SkipClusterAutomatedBackups: boolVar(r, "SKIP_CLUSTER_AUTOMATED_BACKUPS"),
	}
	return c, r.Err()
}

// boolVar reads "true" or "false" (default false).
func boolVar(r *env.Reader, name string) bool {
	switch v := r.String(name, "false"); v {
	case "true":
		return true
	case "false":
		return false
	default:
		r.Fail(fmt.Errorf("%s=%q: want true or false", name, v))
		return false
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
	keys := kmskey.NewResolver(kms.NewFromConfig(awsCfg))
	store := incident.NewStore(dynamodb.NewFromConfig(awsCfg), cfg.Table)
	var opts []blast.Option
	if cfg.SkipClusterAutomatedBackups {
		opts = append(opts, blast.WithoutClusterAutomatedBackups())
	}
	// Slack is wired where the announcer is built; nil means no Slack.
	var announcer triage.Announcer
	opener := triage.New(keys, blast.New(rdsClient, keys, opts...), store, announcer, log)
	tracker := lifecycle.NewTracker(rdsClient, keys, store, opener, announcer, log)
	lambda.Start(newHandler(tracker, log).Handle)
}
