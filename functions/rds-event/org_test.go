package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/rds"

	"github.com/keywarden/keywarden/internal/awstest"
	"github.com/keywarden/keywarden/internal/env"
	"github.com/keywarden/keywarden/internal/incident/dynamostore"
	"github.com/keywarden/keywarden/internal/lifecycle/rdstrack"
	"github.com/keywarden/keywarden/internal/startup"
	"github.com/keywarden/keywarden/internal/startup/keyloss"
)

// TestOrganizationEventReadInItsAccount: in organization mode an RDS-EVENT-0419 forwarded from a
// workload account is read in the account its SourceArn names — not the envelope's, which the
// local routing stack fills with the central account — and opens the key's one incident with the
// clusters of both workload accounts; an event from an account whose role cannot be assumed is
// an error (Lambda retries, then the on-failure queue's alarm), never acknowledged silently.
func TestOrganizationEventReadInItsAccount(t *testing.T) {
	const security, workloadA, workloadB, unrolled = "111111111111", "222222222222", "333333333333", "444444444444"
	endpoint := awstest.Moto(t)
	gate := awstest.NewRoleGate(t, endpoint, "arn:aws:iam::"+unrolled+":role/keywarden-read")
	ctx := context.Background()
	sec := kms.NewFromConfig(awstest.Member(t, endpoint, security))
	key, err := sec.CreateKey(ctx, &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	keyARN := aws.ToString(key.KeyMetadata.Arn)
	ids := map[string]string{}
	for _, account := range []string{workloadA, workloadB} {
		api := rds.NewFromConfig(awstest.Member(t, endpoint, account))
		id := fmt.Sprintf("orders-%s-%d", account[:1], rand.Int32())
		if _, err := api.CreateDBCluster(ctx, &rds.CreateDBClusterInput{
			DBClusterIdentifier: aws.String(id), Engine: aws.String("aurora-postgresql"), StorageEncrypted: aws.Bool(true),
			KmsKeyId: aws.String(keyARN), MasterUsername: aws.String("admin"), MasterUserPassword: aws.String("not-a-secret-1"),
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := api.CreateDBInstance(ctx, &rds.CreateDBInstanceInput{DBInstanceIdentifier: aws.String(id + "-1"),
			DBClusterIdentifier: aws.String(id), Engine: aws.String("aurora-postgresql"), DBInstanceClass: aws.String("db.r6g.large")}); err != nil {
			t.Fatal(err)
		}
		ids[account] = id
	}
	if _, err := sec.DisableKey(ctx, &kms.DisableKeyInput{KeyId: key.KeyMetadata.KeyId}); err != nil {
		t.Fatal(err)
	}

	cfg := awstest.Config(t, gate.URL)
	ddb := dynamodb.NewFromConfig(cfg)
	table := fmt.Sprintf("incidents-%d", rand.Int64())
	if err := dynamostore.CreateTable(ctx, ddb, table); err != nil {
		t.Fatal(err)
	}
	store := dynamostore.New(ddb, table)
	_, o, err := loadSettings(env.FromMap(map[string]string{"INCIDENTS_TABLE": table}), func(k string) string {
		return map[string]string{"DEPLOYMENT_MODE": "organization",
			"ORGANIZATION_ACCOUNTS": strings.Join([]string{security, workloadA, workloadB}, ",")}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	k := keyloss.Build(&startup.Services{AWS: cfg, Store: store}, startup.Settings{SkipClusterAutomatedBackups: true}, o, log)
	h := newHandler(newAccountTrackers(k.ReadRoles, func(api rdstrack.RDSAPI) *rdstrack.Tracker {
		return rdstrack.NewTracker(api, k.Keys, store, k.Intake)
	}), nil, log)

	// The local routing stack's envelope: the central account; the SourceArn: workload A's.
	raw := strings.ReplaceAll(string(sample(t, "rds-instance-key-access-lost-0419.json", ids[workloadA])),
		"arn:aws:rds:us-east-1:123456789012:", "arn:aws:rds:us-east-1:"+workloadA+":")
	res, err := h.Handle(ctx, []byte(raw))
	if err != nil || res.Outcome == nil || res.Outcome.KeyARN != keyARN {
		t.Fatalf("got %+v, %v; want the event read in %s, on key %s", res.Outcome, err, workloadA, keyARN)
	}
	inc, err := store.OpenFor(ctx, keyARN)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range inc.Clusters {
		got = append(got, c.Account+"/"+c.Identifier)
	}
	slices.Sort(got)
	want := []string{workloadA + "/" + ids[workloadA], workloadB + "/" + ids[workloadB]}
	if !slices.Equal(got, want) || !inc.Organization {
		t.Errorf("clusters %v (organization %v), want %v", got, inc.Organization, want)
	}

	unreadable := strings.ReplaceAll(raw, workloadA, unrolled)
	if _, err := h.Handle(ctx, []byte(unreadable)); err == nil || !strings.Contains(err.Error(), unrolled) {
		t.Errorf("event from an account whose role cannot be assumed: got %v, want an error naming %s", err, unrolled)
	}
}
