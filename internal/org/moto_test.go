package org_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/organizations"
	"github.com/aws/aws-sdk-go-v2/service/rds"
	"github.com/google/go-cmp/cmp"

	"github.com/keywarden/keywarden/internal/awstest"
	"github.com/keywarden/keywarden/internal/blast"
	"github.com/keywarden/keywarden/internal/org"
)

func TestMain(m *testing.M) { awstest.Main(m) }

// The three accounts of the tests: the security account owns the key, the two workload
// accounts run Aurora on it.
const (
	security  = "111111111111"
	workloadA = "222222222222"
	workloadB = "333333333333"
)

var nameSeq atomic.Int64

func uniqueName(prefix string) string {
	return fmt.Sprintf("%s-%x-%d", prefix, time.Now().UnixNano()&0xffffffffff, nameSeq.Add(1))
}

// member returns a configuration acting in account on moto: moto serves an account to the
// credentials sts:AssumeRole returns for a role ARN in it.
func member(t *testing.T, endpoint, account string) aws.Config {
	t.Helper()
	cfg, err := org.NewRoles(awstest.Config(t, endpoint), "seed").Config(context.Background(), account, "")
	if err != nil {
		t.Fatalf("seed role in %s: %v", account, err)
	}
	return cfg
}

// estate is a key in the security account and Aurora on it in both workload accounts.
type estate struct {
	keyARN                         string
	clusterA, clusterB, otherA     string
	instanceA, instanceB, snapshot string
}

func seed(t *testing.T, endpoint string) estate {
	t.Helper()
	ctx := context.Background()
	var e estate
	out, err := kms.NewFromConfig(member(t, endpoint, security)).CreateKey(ctx, &kms.CreateKeyInput{Description: aws.String("org test")})
	if err != nil {
		t.Fatalf("create key: %v", err)
	}
	e.keyARN = aws.ToString(out.KeyMetadata.Arn)

	n := uniqueName("org")
	e.clusterA, e.clusterB, e.otherA = n+"-a", n+"-b", n+"-other"
	e.instanceA, e.instanceB, e.snapshot = e.clusterA+"-1", e.clusterB+"-1", n+"-b-snap"

	cfgA, cfgB := member(t, endpoint, workloadA), member(t, endpoint, workloadB)
	rdsA, rdsB := rds.NewFromConfig(cfgA), rds.NewFromConfig(cfgB)
	// A key of workload A's own, named by an alias only A's KMS can resolve.
	kmsA := kms.NewFromConfig(cfgA)
	own, err := kmsA.CreateKey(ctx, &kms.CreateKeyInput{})
	if err != nil {
		t.Fatalf("create workload key: %v", err)
	}
	alias := "alias/" + n
	if _, err := kmsA.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String(alias), TargetKeyId: own.KeyMetadata.KeyId}); err != nil {
		t.Fatalf("create alias: %v", err)
	}
	cluster := func(api *rds.Client, id, key string) {
		t.Helper()
		if _, err := api.CreateDBCluster(ctx, &rds.CreateDBClusterInput{
			DBClusterIdentifier: aws.String(id), Engine: aws.String("aurora-postgresql"), StorageEncrypted: aws.Bool(true),
			KmsKeyId: aws.String(key), MasterUsername: aws.String("admin_user"), MasterUserPassword: aws.String("not-a-secret-123"),
		}); err != nil {
			t.Fatalf("create cluster %s: %v", id, err)
		}
	}
	instance := func(api *rds.Client, id, cluster string) {
		t.Helper()
		if _, err := api.CreateDBInstance(ctx, &rds.CreateDBInstanceInput{
			DBInstanceIdentifier: aws.String(id), DBClusterIdentifier: aws.String(cluster),
			Engine: aws.String("aurora-postgresql"), DBInstanceClass: aws.String("db.r6g.large"),
		}); err != nil {
			t.Fatalf("create instance %s: %v", id, err)
		}
	}
	// A cluster on another account's key names it by ARN, as RDS requires.
	cluster(rdsA, e.clusterA, e.keyARN)
	cluster(rdsA, e.otherA, alias)
	cluster(rdsB, e.clusterB, e.keyARN)
	instance(rdsA, e.instanceA, e.clusterA)
	instance(rdsB, e.instanceB, e.clusterB)
	if _, err := rdsB.CreateDBClusterSnapshot(ctx, &rds.CreateDBClusterSnapshotInput{
		DBClusterIdentifier: aws.String(e.clusterB), DBClusterSnapshotIdentifier: aws.String(e.snapshot),
	}); err != nil {
		t.Fatalf("create snapshot: %v", err)
	}
	return e
}

type dependent struct{ Kind, Account, ID string }

func dependents(r org.Radius) []dependent {
	var out []dependent
	for _, c := range r.Clusters {
		out = append(out, dependent{"cluster", c.Account, c.Identifier})
	}
	for _, i := range r.Instances {
		out = append(out, dependent{"instance", i.Account, i.Identifier})
	}
	for _, s := range r.Snapshots {
		if s.Type == blast.SnapshotManual {
			out = append(out, dependent{"snapshot", s.Account, s.Identifier})
		}
	}
	return out
}

func finder(t *testing.T, endpoint string, accounts ...string) *org.Finder {
	t.Helper()
	dir, err := org.NewDirectory(accounts, nil)
	if err != nil {
		t.Fatalf("NewDirectory: %v", err)
	}
	roles := org.NewRoles(awstest.Config(t, endpoint), org.ReadRoleName)
	return org.NewFinder(dir, roles, org.BlastFinder(blast.WithoutClusterAutomatedBackups()), org.WithConcurrency(2))
}

// TestMotoCrossAccountRadius: a key in the security account, Aurora on it in two workload
// accounts; the radius names every dependent with its account, and a workload cluster on a key
// of its own (named by an alias that only its account's KMS resolves) is not in it.
func TestMotoCrossAccountRadius(t *testing.T) {
	endpoint := awstest.Moto(t)
	e := seed(t, endpoint)
	got, err := finder(t, endpoint, security, workloadA, workloadB).Find(context.Background(), e.keyARN)
	if err != nil {
		t.Fatalf("Find: %v", err)
	}
	want := []dependent{
		{"cluster", workloadA, e.clusterA}, {"cluster", workloadB, e.clusterB},
		{"instance", workloadA, e.instanceA}, {"instance", workloadB, e.instanceB},
		{"snapshot", workloadB, e.snapshot},
	}
	if diff := cmp.Diff(want, dependents(got)); diff != "" {
		t.Errorf("dependents (-want +got):\n%s", diff)
	}
	if got.Incomplete || len(got.AccountsFailed) != 0 {
		t.Errorf("Incomplete %v, AccountsFailed %v; want a complete radius", got.Incomplete, got.AccountsFailed)
	}
	if diff := cmp.Diff([]org.Account{{ID: security}, {ID: workloadA}, {ID: workloadB}}, got.Accounts); diff != "" {
		t.Errorf("accounts (-want +got):\n%s", diff)
	}
	if got.KeyARN != e.keyARN {
		t.Errorf("KeyARN %s, want %s", got.KeyARN, e.keyARN)
	}
}

// TestMotoRoleCannotBeAssumed: workload B's role refuses; its account is reported by name with
// STS's reason, the radius is incomplete, and workload A's dependents are still all there.
func TestMotoRoleCannotBeAssumed(t *testing.T) {
	endpoint := awstest.Moto(t)
	e := seed(t, endpoint)
	gate := awstest.NewRoleGate(t, endpoint, "arn:aws:iam::"+workloadB+":role/"+org.ReadRoleName)
	got, err := finder(t, gate.URL, security, workloadA, workloadB).Find(context.Background(), e.keyARN)
	if err != nil {
		t.Fatalf("Find: %v", err)
	}
	want := []dependent{{"cluster", workloadA, e.clusterA}, {"instance", workloadA, e.instanceA}}
	if diff := cmp.Diff(want, dependents(got)); diff != "" {
		t.Errorf("dependents (-want +got):\n%s", diff)
	}
	if !got.Incomplete {
		t.Errorf("Incomplete = false, want true")
	}
	if len(got.AccountsFailed) != 1 || got.AccountsFailed[0].Account != workloadB ||
		!strings.Contains(got.AccountsFailed[0].Reason, "AccessDenied") || !strings.Contains(got.AccountsFailed[0].Reason, "keywarden-read") {
		t.Errorf("AccountsFailed = %+v, want workload B refused with AccessDenied on keywarden-read", got.AccountsFailed)
	}

	// Roles says which account, as a *RoleError.
	_, err = org.NewRoles(awstest.Config(t, gate.URL), org.ReadRoleName).Config(context.Background(), workloadB, "")
	var re *org.RoleError
	if !errors.As(err, &re) || re.Account != workloadB {
		t.Errorf("Config(%s): got %v, want a *RoleError naming the account", workloadB, err)
	}
}

// TestMotoDirectoryFromOrganizations lists the organisation's accounts through a read role in the
// management account.
func TestMotoDirectoryFromOrganizations(t *testing.T) {
	endpoint := awstest.Moto(t)
	ctx := context.Background()
	base := awstest.Config(t, endpoint)
	orgs := organizations.NewFromConfig(base)
	if _, err := orgs.CreateOrganization(ctx, &organizations.CreateOrganizationInput{}); err != nil &&
		!strings.Contains(err.Error(), "AlreadyInOrganization") {
		t.Fatalf("create organization: %v", err)
	}
	name := uniqueName("workload")
	created, err := orgs.CreateAccount(ctx, &organizations.CreateAccountInput{AccountName: aws.String(name), Email: aws.String(name + "@example.com")})
	if err != nil {
		t.Fatalf("create account: %v", err)
	}
	id := aws.ToString(created.CreateAccountStatus.AccountId)

	api := org.NewOrganizationsClient(base, "arn:aws:iam::"+awstest.AccountID+":role/keywarden-organization-read")
	dir, err := org.NewDirectory(nil, api)
	if err != nil {
		t.Fatalf("NewDirectory: %v", err)
	}
	accounts, err := dir.Accounts(ctx)
	if err != nil {
		t.Fatalf("Accounts: %v", err)
	}
	if !slices.Contains(accounts, org.Account{ID: id, Name: name}) || !slices.ContainsFunc(accounts, func(a org.Account) bool { return a.ID == awstest.AccountID }) {
		t.Errorf("Accounts = %v, want the management account and %s (%s)", accounts, id, name)
	}
	if got := dir.Name(id); got != name {
		t.Errorf("Name(%s) = %q, want %q", id, got, name)
	}
}
