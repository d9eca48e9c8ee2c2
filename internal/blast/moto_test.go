package blast

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/rds"
	"github.com/google/go-cmp/cmp"

	"github.com/keywarden/keywarden/internal/awstest"
	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/kmskey"
)

func TestMain(m *testing.M) { awstest.Main(m) }

var nameSeq atomic.Int64

// uniqueName gives moto resources names no other test (or earlier run against a shared moto)
// has used. RDS identifiers must start with a letter and stay short.
func uniqueName(prefix string) string {
	return fmt.Sprintf("%s-%x-%d", prefix, time.Now().UnixNano()&0xffffffffff, nameSeq.Add(1))
}

type motoEnv struct {
	kms *kms.Client
	rds *rds.Client
}

func newMotoEnv(tb testing.TB) motoEnv {
	tb.Helper()
	cfg := awstest.Config(tb, awstest.Moto(tb))
	return motoEnv{kms: kms.NewFromConfig(cfg), rds: rds.NewFromConfig(cfg)}
}

// key creates a key with an alias and returns the key ID, key ARN, alias name and alias ARN.
func (e motoEnv) key(tb testing.TB) (id, keyARN, alias, aliasARN string) {
	tb.Helper()
	ctx := context.Background()
	out, err := e.kms.CreateKey(ctx, &kms.CreateKeyInput{Description: aws.String("blast moto test")})
	if err != nil {
		tb.Fatalf("create key: %v", err)
	}
	id, keyARN = aws.ToString(out.KeyMetadata.KeyId), aws.ToString(out.KeyMetadata.Arn)
	alias = "alias/" + uniqueName("blast")
	if _, err := e.kms.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String(alias), TargetKeyId: aws.String(id)}); err != nil {
		tb.Fatalf("create alias: %v", err)
	}
	return id, keyARN, alias, "arn:aws:kms:" + awstest.Region + ":" + awstest.AccountID + ":" + alias
}

func (e motoEnv) cluster(tb testing.TB, in *rds.CreateDBClusterInput) {
	tb.Helper()
	if in.Engine == nil {
		in.Engine = aws.String("aurora-postgresql")
	}
	if strings.HasPrefix(*in.Engine, "aurora") && in.MasterUsername == nil {
		in.MasterUsername = aws.String("admin_user")
		if in.ManageMasterUserPassword == nil {
			in.MasterUserPassword = aws.String("not-a-secret-123")
		}
	}
	in.StorageEncrypted = aws.Bool(true)
	if _, err := e.rds.CreateDBCluster(context.Background(), in); err != nil {
		tb.Fatalf("create cluster %s: %v", aws.ToString(in.DBClusterIdentifier), err)
	}
}

func (e motoEnv) instance(tb testing.TB, id, cluster string) {
	tb.Helper()
	_, err := e.rds.CreateDBInstance(context.Background(), &rds.CreateDBInstanceInput{
		DBInstanceIdentifier: aws.String(id), DBClusterIdentifier: aws.String(cluster),
		Engine: aws.String("aurora-postgresql"), DBInstanceClass: aws.String("db.r6g.large"),
	})
	if err != nil {
		tb.Fatalf("create instance %s: %v", id, err)
	}
}

// TestMotoFind builds a small estate on moto — moto keeps KmsKeyId exactly as given, so every
// reference form is exercised end to end (aws-facts §8) — and checks the radius of one key.
func TestMotoFind(t *testing.T) {
	env := newMotoEnv(t)
	ctx := context.Background()
	id, keyARN, alias, aliasARN := env.key(t)
	_, otherARN, _, _ := env.key(t)

	n := uniqueName("bt")
	byID, byARN, byAlias, byAliasARN := n+"-id", n+"-arn", n+"-alias", n+"-aliasarn"
	other, secret, global, graph := n+"-other", n+"-secret", n+"-global", n+"-graph"

	env.cluster(t, &rds.CreateDBClusterInput{DBClusterIdentifier: aws.String(byID), KmsKeyId: aws.String(id)})
	env.cluster(t, &rds.CreateDBClusterInput{DBClusterIdentifier: aws.String(byARN), KmsKeyId: aws.String(keyARN), Engine: aws.String("aurora-mysql")})
	env.cluster(t, &rds.CreateDBClusterInput{DBClusterIdentifier: aws.String(byAlias), KmsKeyId: aws.String(alias)})
	env.cluster(t, &rds.CreateDBClusterInput{DBClusterIdentifier: aws.String(byAliasARN), KmsKeyId: aws.String(aliasARN), EngineMode: aws.String("serverless")})
	env.cluster(t, &rds.CreateDBClusterInput{DBClusterIdentifier: aws.String(other), KmsKeyId: aws.String(otherARN)})
	env.cluster(t, &rds.CreateDBClusterInput{
		DBClusterIdentifier: aws.String(secret), KmsKeyId: aws.String(otherARN),
		ManageMasterUserPassword: aws.Bool(true), MasterUserSecretKmsKeyId: aws.String(alias),
	})
	env.cluster(t, &rds.CreateDBClusterInput{DBClusterIdentifier: aws.String(global), KmsKeyId: aws.String(keyARN)})
	if _, err := env.rds.CreateGlobalCluster(ctx, &rds.CreateGlobalClusterInput{
		GlobalClusterIdentifier:   aws.String(n + "-g"),
		SourceDBClusterIdentifier: aws.String("arn:aws:rds:" + awstest.Region + ":" + awstest.AccountID + ":cluster:" + global),
	}); err != nil {
		t.Fatalf("create global cluster: %v", err)
	}
	env.cluster(t, &rds.CreateDBClusterInput{DBClusterIdentifier: aws.String(graph), KmsKeyId: aws.String(alias), Engine: aws.String("neptune")})

	env.instance(t, byID+"-1", byID)
	env.instance(t, byID+"-2", byID)
	env.instance(t, other+"-1", other)
	if _, err := env.rds.CreateDBClusterSnapshot(ctx, &rds.CreateDBClusterSnapshotInput{
		DBClusterIdentifier: aws.String(byARN), DBClusterSnapshotIdentifier: aws.String(n + "-snap"),
	}); err != nil {
		t.Fatalf("create cluster snapshot: %v", err)
	}

	// The finder talks through a recording proxy (no delay), to count what it asks.
	proxy := awstest.Delay(t, awstest.Moto(t), 0)
	cfg := awstest.Config(t, proxy.URL)
	f := New(rds.NewFromConfig(cfg), kmskey.NewResolver(kms.NewFromConfig(cfg)), WithoutClusterAutomatedBackups())
	got, err := f.Find(ctx, keyARN)
	if err != nil {
		t.Fatalf("Find: %v", err)
	}
	checkCalls(t, proxy.Calls())

	type clusterView struct {
		ID, Engine string
		CanStop    bool
		Reason     string
		Uses       []string
		Members    []string
	}
	var clusters []clusterView
	for _, c := range got.Clusters {
		reason := c.CannotStopReason
		if strings.HasPrefix(reason, "member of global database ") {
			reason = "member of global database" // moto reports the global cluster's ARN here
		}
		clusters = append(clusters, clusterView{c.Identifier, c.Engine, c.CanStop, reason, c.Uses, c.Members})
	}
	wantClusters := []clusterView{
		{ID: byAlias, Engine: "aurora-postgresql", CanStop: true, Uses: []string{UseStorage}},
		{ID: byAliasARN, Engine: "aurora-postgresql", Reason: "Aurora Serverless v1", Uses: []string{UseStorage}},
		{ID: byARN, Engine: "aurora-mysql", CanStop: true, Uses: []string{UseStorage}},
		{ID: global, Engine: "aurora-postgresql", Reason: "member of global database", Uses: []string{UseStorage}},
		{ID: byID, Engine: "aurora-postgresql", CanStop: true, Uses: []string{UseStorage}, Members: []string{byID + "-1", byID + "-2"}},
		{ID: secret, Engine: "aurora-postgresql", CanStop: true, Uses: []string{UseMasterUserSecret}},
	}
	slices.SortFunc(wantClusters, func(a, b clusterView) int { return strings.Compare(a.ID, b.ID) })
	if diff := cmp.Diff(wantClusters, clusters); diff != "" {
		t.Errorf("clusters mismatch (-want +got):\n%s", diff)
	}

	var instances []string
	for _, i := range got.Instances {
		instances = append(instances, i.ClusterIdentifier+"/"+i.Identifier)
	}
	if diff := cmp.Diff([]string{byID + "/" + byID + "-1", byID + "/" + byID + "-2"}, instances); diff != "" {
		t.Errorf("instances mismatch (-want +got):\n%s", diff)
	}

	// moto takes an automated snapshot of every new cluster; the manual one is ours.
	var snaps []string
	for _, s := range got.Snapshots {
		snaps = append(snaps, s.ClusterIdentifier+"/"+s.Type)
		if s.Type == SnapshotManual && s.Identifier != n+"-snap" {
			t.Errorf("manual snapshot %q, want %q", s.Identifier, n+"-snap")
		}
	}
	slices.Sort(snaps)
	wantSnaps := []string{byAlias + "/automated", byAliasARN + "/automated", byARN + "/automated", byARN + "/manual", global + "/automated", byID + "/automated"}
	slices.Sort(wantSnaps)
	if diff := cmp.Diff(wantSnaps, snaps); diff != "" {
		t.Errorf("snapshots mismatch (-want +got):\n%s", diff)
	}

	if len(got.OtherEngines) != 1 || got.OtherEngines[0].Identifier != graph || got.OtherEngines[0].Engine != "neptune" {
		t.Errorf("other engines = %+v, want only %s (neptune)", got.OtherEngines, graph)
	}

	// The other key's radius, from the same single pass.
	many, err := f.FindMany(ctx, []string{keyARN, otherARN})
	if err != nil {
		t.Fatalf("FindMany: %v", err)
	}
	var otherIDs []string
	for _, c := range many[otherARN].Clusters {
		otherIDs = append(otherIDs, c.Identifier)
	}
	if diff := cmp.Diff([]string{other, secret}, otherIDs); diff != "" {
		t.Errorf("other key's clusters mismatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(got, many[keyARN]); diff != "" {
		t.Errorf("FindMany and Find disagree (-Find +FindMany):\n%s", diff)
	}
}

// TestMotoSnapshotOfDeletedCluster: a snapshot outlives its cluster and still needs the key to
// be restored, so it stays in the radius although no cluster is left to ask about.
func TestMotoSnapshotOfDeletedCluster(t *testing.T) {
	env := newMotoEnv(t)
	ctx := context.Background()
	_, keyARN, alias, _ := env.key(t)
	gone := uniqueName("gone")
	env.cluster(t, &rds.CreateDBClusterInput{DBClusterIdentifier: aws.String(gone), KmsKeyId: aws.String(alias)})
	if _, err := env.rds.CreateDBClusterSnapshot(ctx, &rds.CreateDBClusterSnapshotInput{
		DBClusterIdentifier: aws.String(gone), DBClusterSnapshotIdentifier: aws.String(gone + "-final"),
	}); err != nil {
		t.Fatalf("create cluster snapshot: %v", err)
	}
	if _, err := env.rds.DeleteDBCluster(ctx, &rds.DeleteDBClusterInput{DBClusterIdentifier: aws.String(gone), SkipFinalSnapshot: aws.Bool(true)}); err != nil {
		t.Fatalf("delete cluster: %v", err)
	}

	proxy := awstest.Delay(t, awstest.Moto(t), 0)
	cfg := awstest.Config(t, proxy.URL)
	got, err := New(rds.NewFromConfig(cfg), kmskey.NewResolver(kms.NewFromConfig(cfg)), WithoutClusterAutomatedBackups()).Find(ctx, keyARN)
	if err != nil {
		t.Fatalf("Find: %v", err)
	}
	if !got.Empty() {
		t.Errorf("clusters = %+v, want none (the cluster is deleted)", got.Clusters)
	}
	var snaps []string
	for _, s := range got.Snapshots {
		if s.Type == SnapshotManual {
			snaps = append(snaps, s.ClusterIdentifier+"/"+s.Identifier)
		}
	}
	if diff := cmp.Diff([]string{gone + "/" + gone + "-final"}, snaps); diff != "" {
		t.Errorf("manual snapshots mismatch (-want +got):\n%s", diff)
	}
	for _, c := range proxy.Calls() {
		if c.Op == "DescribeDBInstances" && c.Params.Get("Filters.Filter.1.Name") != "db-cluster-id" {
			t.Errorf("DescribeDBInstances without the db-cluster-id filter: %v", c.Params)
		}
	}
}

// checkCalls asserts what a radius may ask: instances only through the db-cluster-id filter,
// never an account-wide instance listing; each distinct key reference described once; no
// key ARN described at all.
func checkCalls(t *testing.T, calls []awstest.Call) {
	t.Helper()
	described := map[string]int{}
	var instanceCalls int
	for _, c := range calls {
		switch c.Op {
		case "DescribeDBInstances":
			instanceCalls++
			if c.Params.Get("Filters.Filter.1.Name") != "db-cluster-id" || c.Params.Get("Filters.Filter.1.Values.Value.1") == "" {
				t.Errorf("DescribeDBInstances without the db-cluster-id filter: %v", c.Params)
			}
		case "DescribeKey":
			ref := c.Params.Get("KeyId")
			described[ref]++
			if incident.IsKeyARN(ref) {
				t.Errorf("DescribeKey(%s): a key ARN needs no call", ref)
			}
		}
	}
	for ref, n := range described {
		if n != 1 {
			t.Errorf("DescribeKey(%s) called %d times, want once", ref, n)
		}
	}
	if instanceCalls == 0 {
		t.Error("no DescribeDBInstances call: the instances were not asked for")
	}
	t.Logf("%d calls, %d DescribeDBInstances, %d distinct references described", len(calls), instanceCalls, len(described))
}

// TestMotoAutomatedBackupsUnimplemented documents why WithoutClusterAutomatedBackups exists:
// moto 5.2.1 answers DescribeDBClusterAutomatedBackups with a bare HTTP 500, which Find must
// not mistake for "no backups". If moto starts implementing it, this test says so.
func TestMotoAutomatedBackupsUnimplemented(t *testing.T) {
	env := newMotoEnv(t)
	_, keyARN, _, _ := env.key(t)
	_, err := New(env.rds, kmskey.NewResolver(env.kms)).Find(context.Background(), keyARN)
	if err == nil {
		t.Log("moto now implements DescribeDBClusterAutomatedBackups; the local stack can stop passing WithoutClusterAutomatedBackups")
		return
	}
	if !strings.Contains(err.Error(), "describe db cluster automated backups") || unimplemented(err) {
		t.Errorf("Find error = %v (unimplemented: %v), want a real automated-backups failure", err, unimplemented(err))
	}
	t.Logf("moto's answer, as the SDK reports it: %v", err)
}

// BenchmarkFind measures one radius over 30 Aurora clusters (plus whatever else the shared
// moto holds), straight against moto and through a proxy adding a fixed delay per call, which
// is closer to a regional endpoint, where a call costs tens of milliseconds of mostly waiting.
// BenchmarkLatency compares the finder with a plain sequential lister at scale.
func BenchmarkFind(b *testing.B) {
	endpoint := awstest.Moto(b)
	env := newMotoEnv(b)
	id, keyARN, alias, aliasARN := env.key(b)
	n := uniqueName("bb")
	forms := []string{id, keyARN, alias, aliasARN}
	for i := range 30 {
		cid := fmt.Sprintf("%s-%02d", n, i)
		env.cluster(b, &rds.CreateDBClusterInput{DBClusterIdentifier: aws.String(cid), KmsKeyId: aws.String(forms[i%len(forms)])})
		if i%3 == 0 {
			env.instance(b, cid+"-1", cid)
		}
	}
	resolver := kmskey.NewResolver(env.kms)
	slow := awstest.Delay(b, endpoint, 30*time.Millisecond)
	slowRDS := rds.NewFromConfig(awstest.Config(b, slow.URL))

	for _, mode := range []struct {
		name string
		api  RDSAPI
	}{
		{"moto", env.rds},
		{"moto+rtt", slowRDS},
	} {
		b.Run(mode.name, func(b *testing.B) {
			f := New(mode.api, resolver, WithoutClusterAutomatedBackups())
			var r Radius
			for b.Loop() {
				var err error
				if r, err = f.Find(context.Background(), keyARN); err != nil {
					b.Fatal(err)
				}
			}
			if len(r.Clusters) != 30 {
				b.Fatalf("clusters = %d, want 30", len(r.Clusters))
			}
		})
	}
}
