package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/rds"

	"github.com/keywarden/keywarden/internal/awstest"
	"github.com/keywarden/keywarden/internal/org"
)

// TestBlastRadiusOrg: a key in a security account, a cluster on it in each of two workload
// accounts, the third workload account's role refused. The JSON carries account on every
// dependent and names the refused account; the table has an ACCOUNT column.
func TestBlastRadiusOrg(t *testing.T) {
	cfg := cli(t)
	ctx := context.Background()
	const security, workA, workB, refused = "111111111111", "222222222222", "333333333333", "444444444444"
	gate := awstest.NewRoleGate(t, awstest.Moto(t), "arn:aws:iam::"+refused+":role/"+org.ReadRoleName)
	t.Setenv("AWS_ENDPOINT_URL", gate.URL)

	seed := org.NewRoles(cfg, "seed")
	as := func(account string) aws.Config {
		c, err := seed.Config(ctx, account, "")
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	key, err := kms.NewFromConfig(as(security)).CreateKey(ctx, &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	keyARN := aws.ToString(key.KeyMetadata.Arn)
	n := fmt.Sprintf("cliorg-%d", rand.Int32())
	for _, account := range []string{workA, workB} {
		api := rds.NewFromConfig(as(account))
		id := n + "-" + account[:1]
		if _, err := api.CreateDBCluster(ctx, &rds.CreateDBClusterInput{
			DBClusterIdentifier: &id, Engine: aws.String("aurora-postgresql"), StorageEncrypted: aws.Bool(true),
			KmsKeyId: &keyARN, MasterUsername: aws.String("admin"), MasterUserPassword: aws.String("not-a-secret-1"),
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := api.CreateDBInstance(ctx, &rds.CreateDBInstanceInput{
			DBInstanceIdentifier: aws.String(id + "-1"), DBClusterIdentifier: &id,
			Engine: aws.String("aurora-postgresql"), DBInstanceClass: aws.String("db.r6g.large"),
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := api.CreateDBClusterSnapshot(ctx, &rds.CreateDBClusterSnapshotInput{
			DBClusterIdentifier: &id, DBClusterSnapshotIdentifier: aws.String(id + "-snap"),
		}); err != nil {
			t.Fatal(err)
		}
	}

	accounts := strings.Join([]string{security, workA, workB, refused}, ",")
	out := runCLI(t, "blast-radius", keyARN, "--org", "--accounts", accounts, "--json")
	var got struct {
		KeyARN         string                             `json:"key_arn"`
		KeyState       string                             `json:"key_state"`
		Clusters       []map[string]any                   `json:"clusters"`
		Instances      []map[string]any                   `json:"instances"`
		Snapshots      []map[string]any                   `json:"snapshots"`
		Other          []map[string]any                   `json:"other_engines"`
		AccountsFailed []struct{ Account, Reason string } `json:"accounts_failed"`
		Incomplete     bool                               `json:"radius_incomplete"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if got.KeyARN != keyARN || got.KeyState != "Enabled" {
		t.Errorf("key %s %s, want %s Enabled", got.KeyARN, got.KeyState, keyARN)
	}
	if len(got.Clusters) != 2 || len(got.Instances) != 2 {
		t.Fatalf("want 2 clusters and 2 instances:\n%s", out)
	}
	for i, want := range []string{workA, workB} {
		for kind, list := range map[string][]map[string]any{"cluster": got.Clusters, "instance": got.Instances} {
			if list[i]["account"] != want {
				t.Errorf("%s %v: account %v, want %s", kind, list[i]["identifier"], list[i]["account"], want)
			}
		}
	}
	manual := 0
	for _, s := range got.Snapshots {
		if s["account"] != workA && s["account"] != workB {
			t.Errorf("snapshot %v: account %v", s["identifier"], s["account"])
		}
		if s["type"] == "manual" {
			manual++
		}
	}
	if manual != 2 || got.Other == nil {
		t.Errorf("want 2 manual snapshots and other_engines an array:\n%s", out)
	}
	if !got.Incomplete || len(got.AccountsFailed) != 1 || got.AccountsFailed[0].Account != refused ||
		!strings.Contains(got.AccountsFailed[0].Reason, "AccessDenied") {
		t.Errorf("accounts_failed %+v, radius_incomplete %v; want %s refused", got.AccountsFailed, got.Incomplete, refused)
	}
	if !strings.Contains(out, `"accounts_failed": [`) {
		t.Errorf("no accounts_failed field:\n%s", out)
	}

	table := runCLI(t, "blast-radius", "--org", "--accounts="+accounts, keyARN)
	for _, want := range []string{"ACCOUNT  ", "ACCOUNTS NOT SEARCHED (1)", refused, "THE RADIUS IS INCOMPLETE", workA + "  ", n + "-2"} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
}

// TestBlastRadiusOrgFlags: organisation flags without --org, or a malformed account list, are
// refused before any AWS call.
func TestBlastRadiusOrgFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"blast-radius", "--accounts", "111111111111", "alias/x"}, "--accounts need --org"},
		{[]string{"blast-radius", "--role-name", "r", "alias/x"}, "--role-name need --org"},
		{[]string{"blast-radius", "--org", "--accounts", "1111", "alias/x"}, `account ID "1111": want 12 digits`},
		{[]string{"blast-radius", "--org", "--concurrency", "0", "alias/x"}, "want at least 1"},
	} {
		t.Setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
		var out, errOut bytes.Buffer
		err := run(context.Background(), tc.args, &out, &errOut)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want an error containing %q", tc.args, err, tc.want)
		}
	}
}
