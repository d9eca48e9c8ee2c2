package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	kmstypes "github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/aws-sdk-go-v2/service/rds"
	"github.com/slack-go/slack"

	"github.com/keywarden/keywarden/internal/awstest"
	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/incident/dynamostore"
	"github.com/keywarden/keywarden/internal/org/member"
	"github.com/keywarden/keywarden/internal/remedy"
	"github.com/keywarden/keywarden/internal/slackmessage"
	"github.com/keywarden/keywarden/internal/slacktest"
)

// TestRemediatesAcrossAccounts is issue 13's Deliver 6 through the function's handler and its
// organization-mode wiring (remedy.Clients over the keywarden-remediate role) on moto, with
// three member accounts: the key in the security account is enabled there, the stopped clusters
// of two workload accounts are started in theirs, each step records its account, and the
// cluster of a third account whose role cannot be assumed is a failed step in that account,
// recorded — the others still start.
func TestRemediatesAcrossAccounts(t *testing.T) {
	const security, workloadA, workloadB, unrolled = "111111111111", "222222222222", "333333333333", "444444444444"
	endpoint := awstest.Moto(t)
	gate := awstest.NewRoleGate(t, endpoint, "arn:aws:iam::"+unrolled+":role/"+member.RemediateRoleName)
	ctx := context.Background()

	sec := kms.NewFromConfig(awstest.Member(t, endpoint, security))
	key, err := sec.CreateKey(ctx, &kms.CreateKeyInput{Description: aws.String(t.Name())})
	if err != nil {
		t.Fatal(err)
	}
	keyID, keyARN := aws.ToString(key.KeyMetadata.KeyId), aws.ToString(key.KeyMetadata.Arn)
	n := rand.Int32()
	var clusters []incident.Cluster
	memberRDS := map[string]*rds.Client{}
	for _, account := range []string{workloadA, workloadB, unrolled} {
		api := rds.NewFromConfig(awstest.Member(t, endpoint, account))
		memberRDS[account] = api
		id := fmt.Sprintf("orders-%s-%d", account[:1], n)
		if _, err := api.CreateDBCluster(ctx, &rds.CreateDBClusterInput{
			DBClusterIdentifier: aws.String(id), Engine: aws.String("aurora-mysql"), StorageEncrypted: aws.Bool(true),
			KmsKeyId: aws.String(keyARN), MasterUsername: aws.String("admin"), MasterUserPassword: aws.String("not-a-secret-1"),
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := api.StopDBCluster(ctx, &rds.StopDBClusterInput{DBClusterIdentifier: aws.String(id)}); err != nil {
			t.Fatal(err)
		}
		clusters = append(clusters, incident.Cluster{Identifier: id, Account: account, Engine: "aurora-mysql",
			ARN: "arn:aws:rds:us-east-1:" + account + ":cluster:" + id, Status: incident.StatusStopped, CanStop: true})
	}
	if _, err := sec.DisableKey(ctx, &kms.DisableKeyInput{KeyId: aws.String(keyID)}); err != nil {
		t.Fatal(err)
	}

	cfg := awstest.Serial(awstest.Config(t, gate.URL))
	db := dynamodb.NewFromConfig(cfg)
	table := fmt.Sprintf("remediate-org-%d", rand.Int64())
	if err := dynamostore.CreateTable(ctx, db, table); err != nil {
		t.Fatal(err)
	}
	store := dynamostore.New(db, table)
	now := time.Now().UTC()
	inc, _, err := store.Open(ctx, incident.Incident{
		KeyARN: keyARN, KeyAccount: security, KeyState: incident.KeyStateDisabled, Trigger: "DisableKey", LostAt: now,
		State: incident.StateOpen, Organization: true, Clusters: clusters,
	}, incident.Entry{Source: fmt.Sprintf("ev-%d", n), Actor: "alice", Detail: "DisableKey"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	inc, err = store.Update(ctx, inc.ID, func(i *incident.Incident) error {
		_, _, err := i.Approve("U0APPROVR1", i.Version, "click:1", now, 1, "run-1")
		return err
	})
	if err != nil || inc.State != incident.StateRemediating {
		t.Fatalf("approve: %v, state %s (an organization incident's key is not foreign: %v)", err, inc.State, inc.Fixable())
	}

	// main's wiring in organization mode.
	o, err := member.SettingsFromEnv(func(k string) string {
		return map[string]string{"DEPLOYMENT_MODE": "organization", "ORGANIZATION_ACCOUNTS": security}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	ownKMS, ownRDS := kms.NewFromConfig(cfg), rds.NewFromConfig(cfg)
	run := remedy.New(ownKMS, ownRDS, store, remedy.Options{WaitTimeout: 10 * time.Second, KeyAccessTimeout: 2 * time.Second}).
		WithClients(newAccountClients(member.NewRoles(cfg, o.ReadRole), member.NewRoles(cfg, o.RemediateRole), ownKMS, ownRDS))
	sl := slacktest.Start(t, &slacktest.Slack{Token: botToken})
	h := &handler{runner: run, store: store, log: slog.New(slog.NewJSONHandler(io.Discard, nil)), announceTimeout: 5 * time.Second,
		announcer: slackmessage.New(store, slackmessage.NewClient(slack.New(botToken, slack.OptionAPIURL(sl.APIURL())), "#keywarden"), nil, nil)}

	res, err := h.Handle(ctx, []byte(payload(inc.ID, "U0APPROVR1")))
	if err != nil {
		t.Fatalf("Handle: %v", err)
	}
	if out, err := sec.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(keyID)}); err != nil || out.KeyMetadata.KeyState != kmstypes.KeyStateEnabled {
		t.Errorf("key in the security account: %v, %v; want Enabled", out, err)
	}
	for _, c := range clusters[:2] {
		out, err := memberRDS[c.Account].DescribeDBClusters(ctx, &rds.DescribeDBClustersInput{DBClusterIdentifier: aws.String(c.Identifier)})
		if err != nil || (aws.ToString(out.DBClusters[0].Status) != "available" && aws.ToString(out.DBClusters[0].Status) != "starting") {
			t.Errorf("cluster %s in %s: %v; want started in its own account", c.Identifier, c.Account, err)
		}
	}
	got, err := store.Get(ctx, inc.ID)
	if err != nil {
		t.Fatal(err)
	}
	accounts := map[string]string{}
	for _, s := range got.Remediation.Steps {
		accounts[string(s.Kind)+" "+s.Target+" "+string(s.Result)] = s.Account
	}
	want := map[string]string{
		"EnableKey " + keyARN + " ok":                          security,
		"WaitEnabled " + keyARN + " ok":                        security,
		"StartDBCluster " + clusters[0].Identifier + " ok":     workloadA,
		"StartDBCluster " + clusters[1].Identifier + " ok":     workloadB,
		"StartDBCluster " + clusters[2].Identifier + " failed": unrolled,
	}
	for step, account := range want {
		if accounts[step] != account {
			t.Errorf("step %q: recorded in account %q, want %q (all steps: %v)", step, accounts[step], account, accounts)
		}
	}
	failed := false
	for _, s := range got.Remediation.Steps {
		if s.Target == clusters[2].Identifier && strings.Contains(s.Detail, "AccessDenied") && strings.Contains(s.Detail, member.RemediateRoleName) {
			failed = true
		}
	}
	if !failed {
		t.Errorf("the unreachable account's step does not say its role was refused: %+v", got.Remediation.Steps)
	}
	if !strings.Contains(res.Error, clusters[2].Identifier) {
		t.Errorf("result error %q: want the cluster left for a person named", res.Error)
	}
}
