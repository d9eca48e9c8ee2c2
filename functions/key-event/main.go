// KeyEventFunction receives KMS events from EventBridge — "AWS API Call via CloudTrail" for
// DisableKey, ScheduleKeyDeletion, DeleteImportedKeyMaterial, DisconnectCustomKeyStore,
// EnableKey, CancelKeyDeletion, PutKeyPolicy, RevokeGrant and RetireGrant, and KMS's own
// "KMS CMK Deletion" and "KMS Imported Key Material Expiration" — and opens or updates the
// key's incident.
//
// Environment:
//
//	INCIDENTS_TABLE  DynamoDB table of incidents (required)
//	LOG_LEVEL        debug, info (default), warn or error
//	SKIP_CLUSTER_AUTOMATED_BACKUPS
//	                 "true" skips DescribeDBClusterAutomatedBackups; only for the local stack,
//	                 whose moto does not implement it
package main

import (
	"context"
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
	"github.com/keywarden/keywarden/internal/triage"
)

type settings struct {
	Table       string
	LogLevel    string
	SkipBackups bool
}

func loadSettings(r *env.Reader) (settings, error) {
	c := settings{
		Table:       r.Required("INCIDENTS_TABLE"),
		LogLevel:    r.String("LOG_LEVEL", "info"),
		SkipBackups: r.Bool("SKIP_CLUSTER_AUTOMATED_BACKUPS", false),
	}
	return c, r.Err()
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
	keys := kmskey.NewResolver(kms.NewFromConfig(awsCfg))
	store := incident.NewStore(dynamodb.NewFromConfig(awsCfg), cfg.Table)
	var blastOpts []blast.Option
	if cfg.SkipBackups {
		blastOpts = append(blastOpts, blast.WithoutClusterAutomatedBackups())
	}
	svc := triage.New(keys, blast.New(rds.NewFromConfig(awsCfg), keys, blastOpts...), store, nil, log)
	lambda.Start(newHandler(svc, log).Handle)
}
