package blast

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	kmstypes "github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/aws-sdk-go-v2/service/rds"
	"github.com/aws/aws-sdk-go-v2/service/rds/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/google/go-cmp/cmp"

	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/kmskey"
)

// fakeRDS answers each listing with its function field; a nil field answers an empty page.
type fakeRDS struct {
	clusters  func(context.Context, *rds.DescribeDBClustersInput) (*rds.DescribeDBClustersOutput, error)
	instances func(context.Context, *rds.DescribeDBInstancesInput) (*rds.DescribeDBInstancesOutput, error)
	snapshots func(context.Context, *rds.DescribeDBClusterSnapshotsInput) (*rds.DescribeDBClusterSnapshotsOutput, error)
	backups   func(context.Context, *rds.DescribeDBClusterAutomatedBackupsInput) (*rds.DescribeDBClusterAutomatedBackupsOutput, error)
	globals   func(context.Context, *rds.DescribeGlobalClustersInput) (*rds.DescribeGlobalClustersOutput, error)
}

func (f *fakeRDS) DescribeDBClusters(ctx context.Context, in *rds.DescribeDBClustersInput, _ ...func(*rds.Options)) (*rds.DescribeDBClustersOutput, error) {
	if f.clusters == nil {
		return &rds.DescribeDBClustersOutput{}, nil
	}
	return f.clusters(ctx, in)
}

func (f *fakeRDS) DescribeDBInstances(ctx context.Context, in *rds.DescribeDBInstancesInput, _ ...func(*rds.Options)) (*rds.DescribeDBInstancesOutput, error) {
	if f.instances == nil {
		return &rds.DescribeDBInstancesOutput{}, nil
	}
	return f.instances(ctx, in)
}

// DescribeDBClusterSnapshots answers as RDS does: only the SnapshotType asked for (manual and
// automated when unset), only the clusters a db-cluster-id filter names.
func (f *fakeRDS) DescribeDBClusterSnapshots(ctx context.Context, in *rds.DescribeDBClusterSnapshotsInput, _ ...func(*rds.Options)) (*rds.DescribeDBClusterSnapshotsOutput, error) {
	if f.snapshots == nil {
		return &rds.DescribeDBClusterSnapshotsOutput{}, nil
	}
	out, err := f.snapshots(ctx, in)
	if err != nil || out == nil {
		return out, err
	}
	var clusters []string
	for _, flt := range in.Filters {
		if aws.ToString(flt.Name) == "db-cluster-id" {
			clusters = flt.Values
		}
	}
	kept := *out
	kept.DBClusterSnapshots = nil
	for _, s := range out.DBClusterSnapshots {
		if t := aws.ToString(in.SnapshotType); t != "" && aws.ToString(s.SnapshotType) != t {
			continue
		}
		if clusters != nil && !slices.Contains(clusters, aws.ToString(s.DBClusterIdentifier)) {
			continue
		}
		kept.DBClusterSnapshots = append(kept.DBClusterSnapshots, s)
	}
	return &kept, nil
}

func (f *fakeRDS) DescribeDBClusterAutomatedBackups(ctx context.Context, in *rds.DescribeDBClusterAutomatedBackupsInput, _ ...func(*rds.Options)) (*rds.DescribeDBClusterAutomatedBackupsOutput, error) {
	if f.backups == nil {
		return &rds.DescribeDBClusterAutomatedBackupsOutput{}, nil
	}
	return f.backups(ctx, in)
}

func (f *fakeRDS) DescribeGlobalClusters(ctx context.Context, in *rds.DescribeGlobalClustersInput, _ ...func(*rds.Options)) (*rds.DescribeGlobalClustersOutput, error) {
	if f.globals == nil {
		return &rds.DescribeGlobalClustersOutput{}, nil
	}
	return f.globals(ctx, in)
}

func clustersPage(cs ...types.DBCluster) func(context.Context, *rds.DescribeDBClustersInput) (*rds.DescribeDBClustersOutput, error) {
	return func(context.Context, *rds.DescribeDBClustersInput) (*rds.DescribeDBClustersOutput, error) {
		return &rds.DescribeDBClustersOutput{DBClusters: cs}, nil
	}
}

func instancesPage(is ...types.DBInstance) func(context.Context, *rds.DescribeDBInstancesInput) (*rds.DescribeDBInstancesOutput, error) {
	return func(context.Context, *rds.DescribeDBInstancesInput) (*rds.DescribeDBInstancesOutput, error) {
		return &rds.DescribeDBInstancesOutput{DBInstances: is}, nil
	}
}

const (
	account  = "123456789012"
	keyID    = "1111aaaa-0000-0000-0000-000000000001"
	keyARN   = "arn:aws:kms:us-east-1:" + account + ":key/" + keyID
	otherARN = "arn:aws:kms:us-east-1:" + account + ":key/2222bbbb-0000-0000-0000-000000000002"
	aliasARN = "arn:aws:kms:us-east-1:" + account + ":alias/app"
)

// fakeKeys resolves the test keys' forms and returns key ARNs as they are; anything else is
// not found.
type fakeKeys struct {
	calls atomic.Int64
	err   error // returned for every non-ARN reference when set
}

func (k *fakeKeys) ARN(_ context.Context, ref string) (string, error) {
	k.calls.Add(1)
	if strings.Contains(ref, ":key/") { // like kmskey.Resolver: key ARNs need no call
		return ref, nil
	}
	if k.err != nil {
		return "", k.err
	}
	switch ref {
	case keyID, keyARN, "alias/app", aliasARN:
		return keyARN, nil
	case otherARN, "alias/other":
		return otherARN, nil
	}
	return "", fmt.Errorf("describe key %s: %w", ref, kmskey.ErrNotFound)
}

func clusterARN(region, id string) string {
	return "arn:aws:rds:" + region + ":" + account + ":cluster:" + id
}

func aurora(id, kmsKey string) types.DBCluster {
	return types.DBCluster{
		DBClusterIdentifier: aws.String(id),
		DBClusterArn:        aws.String(clusterARN("us-east-1", id)),
		Engine:              aws.String("aurora-postgresql"),
		EngineMode:          aws.String("provisioned"),
		Status:              aws.String("available"),
		KmsKeyId:            aws.String(kmsKey),
		StorageEncrypted:    aws.Bool(true),
	}
}

func wantCluster(id string, uses ...string) incident.Cluster {
	return incident.Cluster{
		Identifier: id, ARN: clusterARN("us-east-1", id), Engine: "aurora-postgresql", Status: "available",
		CanStop: true, Uses: uses,
	}
}

func find(t *testing.T, api RDSAPI, keys KeyNormaliser, opts ...Option) Radius {
	t.Helper()
	r, err := New(api, keys, opts...).Find(context.Background(), keyARN)
	if err != nil {
		t.Fatalf("Find: %v", err)
	}
	return r
}

// TestFindKeyForms: every form RDS may report resolves to the same key; other keys, unencrypted
// clusters and references to keys that no longer exist are left out without failing.
func TestFindKeyForms(t *testing.T) {
	api := &fakeRDS{clusters: clustersPage(
		aurora("by-id", keyID),
		aurora("by-arn", keyARN),
		aurora("by-alias", "alias/app"),
		aurora("by-alias-arn", aliasARN),
		aurora("other-key", otherARN),
		aurora("other-alias", "alias/other"),
		aurora("deleted-key", "arn:aws:kms:us-east-1:"+account+":alias/deleted"),
		aurora("deleted-key-id", "3333cccc-0000-0000-0000-000000000003"),
		types.DBCluster{DBClusterIdentifier: aws.String("plain"), Engine: aws.String("aurora-mysql")},
	)}
	got := find(t, api, &fakeKeys{})
	want := Radius{
		KeyARN: keyARN,
		Clusters: []incident.Cluster{
			wantCluster("by-alias", UseStorage),
			wantCluster("by-alias-arn", UseStorage),
			wantCluster("by-arn", UseStorage),
			wantCluster("by-id", UseStorage),
		},
		Instances: []incident.Instance{}, Snapshots: []incident.Snapshot{}, OtherEngines: []incident.Cluster{},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("radius mismatch (-want +got):\n%s", diff)
	}
	if got.Empty() {
		t.Error("Empty() = true, want false")
	}
}

func TestFindUses(t *testing.T) {
	tests := []struct {
		name          string
		cluster       func(*types.DBCluster)
		instance      func(*types.DBInstance)
		wantUses      []string
		wantInstUses  []string
		wantNoCluster bool
	}{
		{name: "storage", wantUses: []string{UseStorage}},
		{
			name: "master user secret only",
			cluster: func(c *types.DBCluster) {
				c.KmsKeyId = aws.String(otherARN)
				c.MasterUserSecret = &types.MasterUserSecret{KmsKeyId: aws.String("alias/app")}
			},
			wantUses: []string{UseMasterUserSecret},
		},
		{
			name:     "performance insights only",
			cluster:  func(c *types.DBCluster) { c.KmsKeyId = nil; c.PerformanceInsightsKMSKeyId = aws.String(keyID) },
			wantUses: []string{UsePerformanceInsights},
		},
		{
			name: "activity stream only",
			cluster: func(c *types.DBCluster) {
				c.KmsKeyId = aws.String(otherARN)
				c.ActivityStreamKmsKeyId = aws.String(aliasARN)
			},
			wantUses: []string{UseActivityStream},
		},
		{
			name: "everything",
			cluster: func(c *types.DBCluster) {
				c.MasterUserSecret = &types.MasterUserSecret{KmsKeyId: aws.String(keyARN)}
				c.PerformanceInsightsKMSKeyId = aws.String(keyARN)
				c.ActivityStreamKmsKeyId = aws.String(keyARN)
			},
			wantUses: []string{UseStorage, UseMasterUserSecret, UsePerformanceInsights, UseActivityStream},
		},
		{
			name:         "instance performance insights only",
			cluster:      func(c *types.DBCluster) { c.KmsKeyId = aws.String(otherARN) },
			instance:     func(i *types.DBInstance) { i.PerformanceInsightsKMSKeyId = aws.String("alias/app") },
			wantUses:     []string{UsePerformanceInsights},
			wantInstUses: []string{UsePerformanceInsights},
		},
		{
			name: "nothing on the key",
			cluster: func(c *types.DBCluster) {
				c.KmsKeyId = aws.String(otherARN)
				c.PerformanceInsightsKMSKeyId = aws.String(otherARN)
			},
			instance:      func(i *types.DBInstance) { i.PerformanceInsightsKMSKeyId = aws.String(otherARN) },
			wantNoCluster: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := aurora("c1", keyARN)
			c.DBClusterMembers = []types.DBClusterMember{{DBInstanceIdentifier: aws.String("c1-b")}, {DBInstanceIdentifier: aws.String("c1-a")}}
			if tt.cluster != nil {
				tt.cluster(&c)
			}
			inst := types.DBInstance{
				DBInstanceIdentifier: aws.String("c1-a"), DBInstanceArn: aws.String("arn:aws:rds:us-east-1:" + account + ":db:c1-a"),
				DBClusterIdentifier: aws.String("c1"), DBInstanceStatus: aws.String("available"),
				KmsKeyId: aws.String(keyARN), // an Aurora instance reports its cluster's key: not a use of its own
			}
			if tt.instance != nil {
				tt.instance(&inst)
			}
			other := types.DBInstance{DBInstanceIdentifier: aws.String("c1-b"), DBClusterIdentifier: aws.String("c1"), DBInstanceStatus: aws.String("stopped")}
			stray := types.DBInstance{DBInstanceIdentifier: aws.String("stray"), DBClusterIdentifier: aws.String("c9")}
			got := find(t, &fakeRDS{clusters: clustersPage(c), instances: instancesPage(other, stray, inst)}, &fakeKeys{})

			if tt.wantNoCluster {
				if !got.Empty() || len(got.Instances) != 0 {
					t.Fatalf("radius = %+v, want empty", got)
				}
				return
			}
			wc := wantCluster("c1", tt.wantUses...)
			wc.Members = []string{"c1-a", "c1-b"}
			if diff := cmp.Diff([]incident.Cluster{wc}, got.Clusters); diff != "" {
				t.Errorf("clusters mismatch (-want +got):\n%s", diff)
			}
			wantInst := []incident.Instance{
				{Identifier: "c1-a", ARN: "arn:aws:rds:us-east-1:" + account + ":db:c1-a", ClusterIdentifier: "c1", Status: "available", Uses: tt.wantInstUses},
				{Identifier: "c1-b", ClusterIdentifier: "c1", Status: "stopped"},
			}
			if diff := cmp.Diff(wantInst, got.Instances); diff != "" {
				t.Errorf("instances mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCannotStop(t *testing.T) {
	tests := []struct {
		name       string
		cluster    func(*types.DBCluster)
		globals    []types.GlobalCluster
		wantReason string
	}{
		{name: "provisioned can stop"},
		{name: "serverless v1", cluster: func(c *types.DBCluster) { c.EngineMode = aws.String("serverless") }, wantReason: "Aurora Serverless v1"},
		{
			name:       "global member by field",
			cluster:    func(c *types.DBCluster) { c.GlobalClusterIdentifier = aws.String("g1") },
			wantReason: "member of global database g1",
		},
		{
			name: "global member by DescribeGlobalClusters",
			globals: []types.GlobalCluster{{
				GlobalClusterIdentifier: aws.String("g2"),
				GlobalClusterMembers:    []types.GlobalClusterMember{{DBClusterArn: aws.String(clusterARN("us-east-1", "c1")), IsWriter: aws.Bool(true)}},
			}},
			wantReason: "member of global database g2",
		},
		{
			name:    "member of a different global database does not count",
			globals: []types.GlobalCluster{{GlobalClusterIdentifier: aws.String("g3"), GlobalClusterMembers: []types.GlobalClusterMember{{DBClusterArn: aws.String(clusterARN("us-east-1", "c2"))}}}},
		},
		{
			name:       "has cross-Region replica",
			cluster:    func(c *types.DBCluster) { c.ReadReplicaIdentifiers = []string{clusterARN("eu-west-1", "c1-replica")} },
			wantReason: "has cross-Region read replica " + clusterARN("eu-west-1", "c1-replica"),
		},
		{
			name: "is a cross-Region replica",
			cluster: func(c *types.DBCluster) {
				c.ReplicationSourceIdentifier = aws.String(clusterARN("us-west-2", "primary"))
			},
			wantReason: "cross-Region read replica of " + clusterARN("us-west-2", "primary"),
		},
		{
			name: "same-Region replicas can stop",
			cluster: func(c *types.DBCluster) {
				c.ReadReplicaIdentifiers = []string{"c1-local", clusterARN("us-east-1", "c1-local2")}
				c.ReplicationSourceIdentifier = aws.String(clusterARN("us-east-1", "src"))
			},
		},
		{
			name: "several reasons",
			cluster: func(c *types.DBCluster) {
				c.GlobalClusterIdentifier = aws.String("g1")
				c.ReadReplicaIdentifiers = []string{clusterARN("eu-west-1", "r")}
			},
			wantReason: "member of global database g1; has cross-Region read replica " + clusterARN("eu-west-1", "r"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := aurora("c1", keyARN)
			if tt.cluster != nil {
				tt.cluster(&c)
			}
			api := &fakeRDS{clusters: clustersPage(c), globals: func(context.Context, *rds.DescribeGlobalClustersInput) (*rds.DescribeGlobalClustersOutput, error) {
				return &rds.DescribeGlobalClustersOutput{GlobalClusters: tt.globals}, nil
			}}
			got := find(t, api, &fakeKeys{})
			if len(got.Clusters) != 1 {
				t.Fatalf("clusters = %+v, want one", got.Clusters)
			}
			cl := got.Clusters[0]
			if cl.CanStop != (tt.wantReason == "") || cl.CannotStopReason != tt.wantReason {
				t.Errorf("CanStop, CannotStopReason = %v, %q; want %v, %q", cl.CanStop, cl.CannotStopReason, tt.wantReason == "", tt.wantReason)
			}
		})
	}
}

func TestOtherEngines(t *testing.T) {
	neptune := aurora("graph", "alias/app")
	neptune.Engine = aws.String("neptune")
	docdb := aurora("docs", keyARN)
	docdb.Engine = aws.String("docdb")
	multiAZ := aurora("maz", keyARN)
	multiAZ.Engine = aws.String("postgres")
	api := &fakeRDS{
		clusters:  clustersPage(neptune, docdb, multiAZ, aurora("a1", keyARN)),
		instances: instancesPage(types.DBInstance{DBInstanceIdentifier: aws.String("graph-1"), DBClusterIdentifier: aws.String("graph")}),
		snapshots: func(context.Context, *rds.DescribeDBClusterSnapshotsInput) (*rds.DescribeDBClusterSnapshotsOutput, error) {
			return &rds.DescribeDBClusterSnapshotsOutput{DBClusterSnapshots: []types.DBClusterSnapshot{
				{DBClusterSnapshotIdentifier: aws.String("graph-snap"), Engine: aws.String("neptune"), KmsKeyId: aws.String(keyARN), SnapshotType: aws.String("manual")},
			}}, nil
		},
	}
	got := find(t, api, &fakeKeys{})
	var names []string
	for _, c := range got.OtherEngines {
		names = append(names, c.Identifier+"/"+c.Engine)
	}
	if diff := cmp.Diff([]string{"docs/docdb", "graph/neptune", "maz/postgres"}, names); diff != "" {
		t.Errorf("other engines mismatch (-want +got):\n%s", diff)
	}
	if len(got.Clusters) != 1 || got.Clusters[0].Identifier != "a1" {
		t.Errorf("clusters = %+v, want only a1", got.Clusters)
	}
	if len(got.Instances) != 0 || len(got.Snapshots) != 0 {
		t.Errorf("instances, snapshots = %+v, %+v; want none (not Aurora)", got.Instances, got.Snapshots)
	}
}

// TestPagination: every listing follows its markers and asks for full pages.
func TestPagination(t *testing.T) {
	var clusterCalls, instanceCalls, snapshotCalls atomic.Int64
	const pages = 3
	api := &fakeRDS{
		clusters: func(_ context.Context, in *rds.DescribeDBClustersInput) (*rds.DescribeDBClustersOutput, error) {
			clusterCalls.Add(1)
			if aws.ToInt32(in.MaxRecords) != 100 {
				t.Errorf("MaxRecords = %d, want 100", aws.ToInt32(in.MaxRecords))
			}
			n := 0
			fmt.Sscan(aws.ToString(in.Marker), &n)
			out := &rds.DescribeDBClustersOutput{DBClusters: []types.DBCluster{aurora(fmt.Sprintf("c%d", n), keyARN)}}
			if n+1 < pages {
				out.Marker = aws.String(fmt.Sprint(n + 1))
			}
			return out, nil
		},
		// Each cluster page's instances are asked for by filter, and each answer is itself
		// paginated: pages instances per cluster, one a page.
		instances: func(_ context.Context, in *rds.DescribeDBInstancesInput) (*rds.DescribeDBInstancesOutput, error) {
			instanceCalls.Add(1)
			if len(in.Filters) != 1 || aws.ToString(in.Filters[0].Name) != "db-cluster-id" || len(in.Filters[0].Values) != 1 {
				t.Errorf("Filters = %+v, want db-cluster-id with the one cluster of the page", in.Filters)
				return &rds.DescribeDBInstancesOutput{}, nil
			}
			if aws.ToInt32(in.MaxRecords) != 100 {
				t.Errorf("instances MaxRecords = %d, want 100", aws.ToInt32(in.MaxRecords))
			}
			cluster := in.Filters[0].Values[0]
			n := 0
			fmt.Sscan(aws.ToString(in.Marker), &n)
			out := &rds.DescribeDBInstancesOutput{DBInstances: []types.DBInstance{{DBInstanceIdentifier: aws.String(fmt.Sprintf("%s-i%d", cluster, n)), DBClusterIdentifier: aws.String(cluster)}}}
			if n+1 < pages {
				out.Marker = aws.String(fmt.Sprint(n + 1))
			}
			return out, nil
		},
		// Manual snapshots are listed, pages of one; automated ones are asked for per cluster on
		// the key, once the clusters are known, one per cluster.
		snapshots: func(_ context.Context, in *rds.DescribeDBClusterSnapshotsInput) (*rds.DescribeDBClusterSnapshotsOutput, error) {
			snapshotCalls.Add(1)
			switch aws.ToString(in.SnapshotType) {
			case "manual":
				if len(in.Filters) != 0 {
					t.Errorf("the manual listing has Filters %+v, want none (a snapshot outlives its cluster)", in.Filters)
				}
				n := 0
				fmt.Sscan(aws.ToString(in.Marker), &n)
				out := &rds.DescribeDBClusterSnapshotsOutput{DBClusterSnapshots: []types.DBClusterSnapshot{{
					DBClusterSnapshotIdentifier: aws.String(fmt.Sprintf("s%d", n)), Engine: aws.String("aurora-mysql"), KmsKeyId: aws.String(keyARN),
					SnapshotType: aws.String("manual"),
				}}}
				if n+1 < pages {
					out.Marker = aws.String(fmt.Sprint(n + 1))
				}
				return out, nil
			case "automated":
				if len(in.Filters) != 1 || aws.ToString(in.Filters[0].Name) != "db-cluster-id" {
					t.Errorf("automated snapshots asked with Filters %+v, want db-cluster-id", in.Filters)
				}
				out := &rds.DescribeDBClusterSnapshotsOutput{}
				for _, c := range in.Filters[0].Values {
					out.DBClusterSnapshots = append(out.DBClusterSnapshots, types.DBClusterSnapshot{
						DBClusterSnapshotIdentifier: aws.String("rds:" + c), DBClusterIdentifier: aws.String(c),
						Engine: aws.String("aurora-mysql"), KmsKeyId: aws.String(keyARN), SnapshotType: aws.String("automated"),
					})
				}
				return out, nil
			}
			t.Errorf("SnapshotType = %q, want manual or automated", aws.ToString(in.SnapshotType))
			return &rds.DescribeDBClusterSnapshotsOutput{}, nil
		},
	}
	got := find(t, api, &fakeKeys{})
	if len(got.Clusters) != pages || len(got.Instances) != pages*pages || len(got.Snapshots) != 2*pages {
		t.Errorf("got %d clusters, %d instances, %d snapshots; want %d, %d, %d", len(got.Clusters), len(got.Instances), len(got.Snapshots), pages, pages*pages, 2*pages)
	}
	for name, c := range map[string]struct{ got, want int64 }{
		"clusters":  {clusterCalls.Load(), pages},
		"instances": {instanceCalls.Load(), pages * pages},
		"snapshots": {snapshotCalls.Load(), pages + 1}, // the manual pages, and one batch of automated
	} {
		if c.got != c.want {
			t.Errorf("%s calls = %d, want %d", name, c.got, c.want)
		}
	}
}

func TestSnapshotsAndBackups(t *testing.T) {
	api := &fakeRDS{
		clusters: clustersPage(aurora("live", keyARN)),
		snapshots: func(context.Context, *rds.DescribeDBClusterSnapshotsInput) (*rds.DescribeDBClusterSnapshotsOutput, error) {
			return &rds.DescribeDBClusterSnapshotsOutput{DBClusterSnapshots: []types.DBClusterSnapshot{
				{DBClusterSnapshotIdentifier: aws.String("rds:live-2026-11-28"), DBClusterSnapshotArn: aws.String("arn:snap:auto"), DBClusterIdentifier: aws.String("live"), Engine: aws.String("aurora-postgresql"), KmsKeyId: aws.String(keyARN), SnapshotType: aws.String("automated")},
				{DBClusterSnapshotIdentifier: aws.String("before-upgrade"), DBClusterSnapshotArn: aws.String("arn:snap:manual"), DBClusterIdentifier: aws.String("gone"), Engine: aws.String("aurora-postgresql"), KmsKeyId: aws.String("alias/app"), SnapshotType: aws.String("manual")},
				{DBClusterSnapshotIdentifier: aws.String("other"), Engine: aws.String("aurora-postgresql"), KmsKeyId: aws.String(otherARN), SnapshotType: aws.String("manual")},
				{DBClusterSnapshotIdentifier: aws.String("unencrypted"), Engine: aws.String("aurora-postgresql"), SnapshotType: aws.String("manual")},
			}}, nil
		},
		backups: func(context.Context, *rds.DescribeDBClusterAutomatedBackupsInput) (*rds.DescribeDBClusterAutomatedBackupsOutput, error) {
			return &rds.DescribeDBClusterAutomatedBackupsOutput{DBClusterAutomatedBackups: []types.DBClusterAutomatedBackup{
				{DBClusterIdentifier: aws.String("deleted"), DbClusterResourceId: aws.String("cluster-DELETED"), DBClusterAutomatedBackupsArn: aws.String("arn:backup:deleted"), DBClusterArn: aws.String(clusterARN("us-east-1", "deleted")), Engine: aws.String("aurora-mysql"), KmsKeyId: aws.String(keyID), Status: aws.String("retained")},
				{DBClusterIdentifier: aws.String("live"), DbClusterResourceId: aws.String("cluster-LIVE"), DBClusterArn: aws.String(clusterARN("us-east-1", "live")), Engine: aws.String("aurora-postgresql"), KmsKeyId: aws.String(keyARN), Status: aws.String("active")},
				{DBClusterIdentifier: aws.String("deleted-other"), DbClusterResourceId: aws.String("cluster-OTHER"), Engine: aws.String("aurora-mysql"), KmsKeyId: aws.String(otherARN), Status: aws.String("retained")},
			}}, nil
		},
	}
	got := find(t, api, &fakeKeys{})
	want := []incident.Snapshot{
		{Identifier: "before-upgrade", ARN: "arn:snap:manual", ClusterIdentifier: "gone", Type: SnapshotManual},
		{Identifier: "cluster-DELETED", ARN: "arn:backup:deleted", ClusterIdentifier: "deleted", Type: SnapshotAutomatedBackup},
		{Identifier: "rds:live-2026-11-28", ARN: "arn:snap:auto", ClusterIdentifier: "live", Type: SnapshotAutomated},
	}
	if diff := cmp.Diff(want, got.Snapshots); diff != "" {
		t.Errorf("snapshots mismatch (-want +got):\n%s", diff)
	}

	// Snapshots alone are no Aurora incident.
	api.clusters = nil
	if got := find(t, api, &fakeKeys{}); !got.Empty() || len(got.Snapshots) == 0 {
		t.Errorf("Empty() = %v with %d snapshots, want true with some", got.Empty(), len(got.Snapshots))
	}
}

func TestListingErrors(t *testing.T) {
	invalidAction := &smithy.GenericAPIError{Code: "InvalidAction", Message: "The action DescribeDBClusterAutomatedBackups is not valid for this web service."}
	notImplemented := &smithyhttp.ResponseError{Response: &smithyhttp.Response{Response: &http.Response{StatusCode: http.StatusNotImplemented}}, Err: errors.New("not implemented")}
	serverError := &smithyhttp.ResponseError{Response: &smithyhttp.Response{Response: &http.Response{StatusCode: http.StatusInternalServerError}}, Err: errors.New("internal error")}
	throttled := &smithy.GenericAPIError{Code: "Throttling", Message: "Rate exceeded"}

	backupsErr := func(err error) *fakeRDS {
		return &fakeRDS{clusters: clustersPage(aurora("c1", keyARN)), backups: func(context.Context, *rds.DescribeDBClusterAutomatedBackupsInput) (*rds.DescribeDBClusterAutomatedBackupsOutput, error) {
			return nil, err
		}}
	}
	globalsErr := func(err error) *fakeRDS {
		return &fakeRDS{clusters: clustersPage(aurora("c1", keyARN)), globals: func(context.Context, *rds.DescribeGlobalClustersInput) (*rds.DescribeGlobalClustersOutput, error) {
			return nil, err
		}}
	}
	tests := []struct {
		name    string
		api     *fakeRDS
		wantErr string // "" means success with c1 in the radius
	}{
		{name: "backups InvalidAction is empty", api: backupsErr(invalidAction)},
		{name: "backups HTTP 501 is empty", api: backupsErr(notImplemented)},
		{name: "globals InvalidAction is empty", api: globalsErr(invalidAction)},
		{name: "backups HTTP 500 fails", api: backupsErr(serverError), wantErr: "describe db cluster automated backups: "},
		{name: "globals throttling fails", api: globalsErr(throttled), wantErr: "describe global clusters: "},
		{
			name: "instances InvalidAction fails",
			api: &fakeRDS{clusters: clustersPage(aurora("c1", keyARN)), instances: func(context.Context, *rds.DescribeDBInstancesInput) (*rds.DescribeDBInstancesOutput, error) {
				return nil, invalidAction
			}},
			wantErr: "describe db instances: ",
		},
		{
			name: "snapshots error",
			api: &fakeRDS{snapshots: func(context.Context, *rds.DescribeDBClusterSnapshotsInput) (*rds.DescribeDBClusterSnapshotsOutput, error) {
				return nil, throttled
			}},
			wantErr: "describe db cluster snapshots: ",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := New(tt.api, &fakeKeys{}).Find(context.Background(), keyARN)
			if tt.wantErr == "" {
				if err != nil || len(got.Clusters) != 1 {
					t.Fatalf("Find = %+v, %v; want c1 and no error", got, err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
				t.Fatalf("Find error = %v, want prefix %q", err, tt.wantErr)
			}
			var ae smithy.APIError
			var re *smithyhttp.ResponseError
			if !errors.As(err, &ae) && !errors.As(err, &re) {
				t.Errorf("error %v does not wrap the RDS error", err)
			}
		})
	}
}

// TestFirstErrorCancelsOthers: a failing listing or key resolution stops the others at once,
// and its error — not the cancellation it caused — is what Find returns.
func TestFirstErrorCancelsOthers(t *testing.T) {
	boom := &smithy.GenericAPIError{Code: "AccessDenied", Message: "no"}
	throttled := errors.New("ThrottlingException")
	tests := []struct {
		name      string
		snapshots func(context.Context, *rds.DescribeDBClusterSnapshotsInput) (*rds.DescribeDBClusterSnapshotsOutput, error)
		keysErr   error
		wantErr   error
	}{
		{
			name: "snapshot listing fails",
			snapshots: func(context.Context, *rds.DescribeDBClusterSnapshotsInput) (*rds.DescribeDBClusterSnapshotsOutput, error) {
				return nil, boom
			},
			wantErr: boom,
		},
		{
			name: "key resolution fails",
			snapshots: func(context.Context, *rds.DescribeDBClusterSnapshotsInput) (*rds.DescribeDBClusterSnapshotsOutput, error) {
				return &rds.DescribeDBClusterSnapshotsOutput{DBClusterSnapshots: []types.DBClusterSnapshot{
					{DBClusterSnapshotIdentifier: aws.String("s1"), Engine: aws.String("aurora-mysql"), KmsKeyId: aws.String("alias/app"), SnapshotType: aws.String("manual")},
				}}, nil
			},
			keysErr: throttled,
			wantErr: throttled,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var cancelled atomic.Bool
			api := &fakeRDS{
				clusters: func(ctx context.Context, _ *rds.DescribeDBClustersInput) (*rds.DescribeDBClustersOutput, error) {
					select {
					case <-ctx.Done():
						cancelled.Store(true)
						return nil, ctx.Err()
					case <-time.After(10 * time.Second):
						return &rds.DescribeDBClustersOutput{}, nil
					}
				},
				snapshots: tt.snapshots,
			}
			start := time.Now()
			_, err := New(api, &fakeKeys{err: tt.keysErr}).Find(context.Background(), keyARN)
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("Find error = %v, want %v", err, tt.wantErr)
			}
			if !cancelled.Load() || time.Since(start) > 5*time.Second {
				t.Errorf("cluster listing was not cancelled (took %v)", time.Since(start))
			}
		})
	}
}

func TestResolveErrors(t *testing.T) {
	api := &fakeRDS{clusters: clustersPage(aurora("c1", "alias/app"))}
	// A throttled KMS is not "key gone": the radius would be wrong, so Find fails.
	_, err := New(api, &fakeKeys{err: errors.New("ThrottlingException")}).Find(context.Background(), keyARN)
	if err == nil || !strings.Contains(err.Error(), "resolve key reference alias/app") {
		t.Errorf("Find error = %v, want a resolve error", err)
	}
	// The requested key itself must exist when given in a form that needs resolving.
	_, err = New(api, &fakeKeys{}).Find(context.Background(), "alias/missing")
	if !errors.Is(err, kmskey.ErrNotFound) {
		t.Errorf("Find(alias/missing) error = %v, want ErrNotFound", err)
	}
}

// fakeKMS backs a real kmskey.Resolver, to count what reaches KMS.
type fakeKMS struct{ describes atomic.Int64 }

func (f *fakeKMS) DescribeKey(_ context.Context, in *kms.DescribeKeyInput, _ ...func(*kms.Options)) (*kms.DescribeKeyOutput, error) {
	f.describes.Add(1)
	switch aws.ToString(in.KeyId) {
	case keyID, "alias/app", aliasARN:
		return &kms.DescribeKeyOutput{KeyMetadata: &kmstypes.KeyMetadata{KeyId: aws.String(keyID), Arn: aws.String(keyARN)}}, nil
	}
	return nil, &kmstypes.NotFoundException{Message: aws.String("not found")}
}

func (f *fakeKMS) ListKeys(context.Context, *kms.ListKeysInput, ...func(*kms.Options)) (*kms.ListKeysOutput, error) {
	return &kms.ListKeysOutput{}, nil
}

func (f *fakeKMS) ListAliases(context.Context, *kms.ListAliasesInput, ...func(*kms.Options)) (*kms.ListAliasesOutput, error) {
	return &kms.ListAliasesOutput{}, nil
}

// TestResolverCacheHits: with the real resolver, each distinct reference costs one DescribeKey
// however many resources carry it and however many times Find runs; key ARNs cost nothing.
func TestResolverCacheHits(t *testing.T) {
	var cs []types.DBCluster
	for i := range 20 {
		cs = append(cs, aurora(fmt.Sprintf("a%02d", i), "alias/app"), aurora(fmt.Sprintf("b%02d", i), keyARN))
	}
	cs = append(cs, aurora("gone", "alias/deleted"))
	kmsAPI := &fakeKMS{}
	f := New(&fakeRDS{clusters: clustersPage(cs...)}, kmskey.NewResolver(kmsAPI))
	for range 3 {
		r, err := f.Find(context.Background(), keyARN)
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Clusters) != 40 {
			t.Fatalf("clusters = %d, want 40", len(r.Clusters))
		}
	}
	// alias/app once; alias/deleted once per Find (not-found answers are not cached, since an
	// alias can be created again).
	if n := kmsAPI.describes.Load(); n != 1+3 {
		t.Errorf("DescribeKey calls = %d, want 4", n)
	}
}

func TestFindMany(t *testing.T) {
	var calls atomic.Int64
	api := &fakeRDS{clusters: func(context.Context, *rds.DescribeDBClustersInput) (*rds.DescribeDBClustersOutput, error) {
		calls.Add(1)
		return &rds.DescribeDBClustersOutput{DBClusters: []types.DBCluster{aurora("on-key", "alias/app"), aurora("on-other", otherARN)}}, nil
	}}
	unused := "arn:aws:kms:us-east-1:" + account + ":key/unused"
	got, err := New(api, &fakeKeys{}).FindMany(context.Background(), []string{keyARN, "alias/other", unused})
	if err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 1 {
		t.Errorf("DescribeDBClusters calls = %d, want 1 (one pass for all keys)", calls.Load())
	}
	summary := map[string][]string{}
	for ref, r := range got {
		summary[ref] = []string{r.KeyARN}
		for _, c := range r.Clusters {
			summary[ref] = append(summary[ref], c.Identifier)
		}
	}
	want := map[string][]string{
		keyARN:        {keyARN, "on-key"},
		"alias/other": {otherARN, "on-other"},
		unused:        {unused},
	}
	if diff := cmp.Diff(want, summary); diff != "" {
		t.Errorf("FindMany mismatch (-want +got):\n%s", diff)
	}
	if !got[unused].Empty() {
		t.Errorf("radius of an unused key is not empty")
	}
}

func TestWithoutClusterAutomatedBackups(t *testing.T) {
	api := &fakeRDS{clusters: clustersPage(aurora("c1", keyARN)), backups: func(context.Context, *rds.DescribeDBClusterAutomatedBackupsInput) (*rds.DescribeDBClusterAutomatedBackupsOutput, error) {
		t.Error("DescribeDBClusterAutomatedBackups called")
		return nil, errors.New("called")
	}}
	if got := find(t, api, &fakeKeys{}, WithoutClusterAutomatedBackups()); len(got.Clusters) != 1 {
		t.Errorf("clusters = %+v, want c1", got.Clusters)
	}
}

// TestRadiusJSON: an empty radius encodes lists as [], which JSON readers of
// `keywarden blast-radius --json` can iterate without a null check.
func TestRadiusJSON(t *testing.T) {
	r := find(t, &fakeRDS{}, &fakeKeys{})
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"key_arn":"` + keyARN + `","clusters":[],"instances":[],"snapshots":[],"other_engines":[]}`
	if string(b) != want {
		t.Errorf("JSON = %s, want %s", b, want)
	}
}

// countingKeys resolves "alias/kN" and "kN" references to key ARNs after a short wait, and
// records how often each reference was asked for and how many were in flight at most.
type countingKeys struct {
	mu       sync.Mutex
	asked    map[string]int
	inFlight int
	maxIn    int
}

func (k *countingKeys) ARN(ctx context.Context, ref string) (string, error) {
	k.mu.Lock()
	if k.asked == nil {
		k.asked = map[string]int{}
	}
	k.asked[ref]++
	k.inFlight++
	k.maxIn = max(k.maxIn, k.inFlight)
	k.mu.Unlock()
	defer func() {
		k.mu.Lock()
		k.inFlight--
		k.mu.Unlock()
	}()
	time.Sleep(5 * time.Millisecond)
	if ref == "alias/gone" {
		return "", fmt.Errorf("describe key %s: %w", ref, kmskey.ErrNotFound)
	}
	return "arn:aws:kms:us-east-1:" + account + ":key/" + strings.TrimPrefix(ref, "alias/"), nil
}

// TestResolveOnce: each distinct reference is resolved once however many resources carry it,
// key ARNs never, and resolutions run concurrently up to resolveConcurrency.
func TestResolveOnce(t *testing.T) {
	const distinct = 40
	var cs []types.DBCluster
	var snaps []types.DBClusterSnapshot
	for i := range distinct {
		for range 3 {
			cs = append(cs, aurora(fmt.Sprintf("c%02d-%d", i, len(cs)), fmt.Sprintf("alias/k%d", i)))
		}
		snaps = append(snaps, types.DBClusterSnapshot{DBClusterSnapshotIdentifier: aws.String(fmt.Sprintf("s%d", i)), Engine: aws.String("aurora-mysql"), KmsKeyId: aws.String(fmt.Sprintf("alias/k%d", i))})
	}
	cs = append(cs, aurora("by-arn", keyARN), aurora("by-arn-2", keyARN), aurora("gone", "alias/gone"))
	pi := aurora("pi", keyARN)
	pi.PerformanceInsightsKMSKeyId = aws.String("alias/k0")
	cs = append(cs, pi)
	api := &fakeRDS{
		clusters: clustersPage(cs...),
		snapshots: func(context.Context, *rds.DescribeDBClusterSnapshotsInput) (*rds.DescribeDBClusterSnapshotsOutput, error) {
			return &rds.DescribeDBClusterSnapshotsOutput{DBClusterSnapshots: snaps}, nil
		},
		instances: instancesPage(types.DBInstance{DBInstanceIdentifier: aws.String("pi-1"), DBClusterIdentifier: aws.String("pi"), PerformanceInsightsKMSKeyId: aws.String("alias/k1")}),
	}
	keys := &countingKeys{}
	got := find(t, api, keys)
	if len(got.Clusters) != 3 {
		t.Errorf("clusters on the key = %d, want 3 (by-arn, by-arn-2, pi)", len(got.Clusters))
	}
	for ref, n := range keys.asked {
		if n != 1 {
			t.Errorf("reference %s resolved %d times, want once", ref, n)
		}
		if isKeyARN(ref) {
			t.Errorf("key ARN %s was resolved; it needs no call", ref)
		}
	}
	if len(keys.asked) != distinct+1 {
		t.Errorf("distinct references resolved = %d, want %d", len(keys.asked), distinct+1)
	}
	if keys.maxIn > resolveConcurrency || keys.maxIn < 2 {
		t.Errorf("resolutions in flight at most = %d, want between 2 and %d", keys.maxIn, resolveConcurrency)
	}
}

func TestInstanceBatches(t *testing.T) {
	clusters := func(n, members int) []types.DBCluster {
		var cs []types.DBCluster
		for i := range n {
			c := aurora(fmt.Sprintf("c%03d", i), keyARN)
			for m := range members {
				c.DBClusterMembers = append(c.DBClusterMembers, types.DBClusterMember{DBInstanceIdentifier: aws.String(fmt.Sprintf("c%03d-%d", i, m))})
			}
			cs = append(cs, c)
		}
		return cs
	}
	tests := []struct {
		name     string
		clusters []types.DBCluster
		want     []int // batch sizes
	}{
		{name: "none", clusters: nil, want: nil},
		{name: "no members: the filter's limit", clusters: clusters(250, 0), want: []int{100, 100, 50}},
		{name: "two members each: one page of instances", clusters: clusters(100, 2), want: []int{50, 50}},
		{name: "fifteen members each", clusters: clusters(14, 15), want: []int{6, 6, 2}},
		{name: "identifier missing is skipped", clusters: append(clusters(2, 1), types.DBCluster{}), want: []int{2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var sizes []int
			for _, b := range instanceBatches(tt.clusters) {
				sizes = append(sizes, len(b))
			}
			if diff := cmp.Diff(tt.want, sizes); diff != "" {
				t.Errorf("batch sizes mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestInstanceFilter: a batch RDS refuses as too large is asked for in halves, and instances a
// server returns outside the batch (as one ignoring the filter would) are not counted, nor
// counted twice.
func TestInstanceFilter(t *testing.T) {
	refused := &smithy.GenericAPIError{Code: "InvalidParameterCombination", Message: "Only up to 2 unique filter DB Cluster Identifiers may be specified per filter."}
	var cs []types.DBCluster
	var all []types.DBInstance
	for i := range 5 {
		id := fmt.Sprintf("c%d", i)
		cs = append(cs, aurora(id, keyARN))
		all = append(all, types.DBInstance{DBInstanceIdentifier: aws.String(id + "-1"), DBClusterIdentifier: aws.String(id)})
	}
	tests := []struct {
		name      string
		instances func(context.Context, *rds.DescribeDBInstancesInput) (*rds.DescribeDBInstancesOutput, error)
		wantCalls int64
	}{
		{
			name: "refused batch is halved",
			instances: func(_ context.Context, in *rds.DescribeDBInstancesInput) (*rds.DescribeDBInstancesOutput, error) {
				ids := in.Filters[0].Values
				if len(ids) > 2 {
					return nil, refused
				}
				var out []types.DBInstance
				for _, i := range all {
					if slices.Contains(ids, aws.ToString(i.DBClusterIdentifier)) {
						out = append(out, i)
					}
				}
				return &rds.DescribeDBInstancesOutput{DBInstances: out}, nil
			},
			// 5 refused → 2 + 3; 3 refused → 1 + 2.
			wantCalls: 5,
		},
		{
			name: "filter ignored",
			instances: func(context.Context, *rds.DescribeDBInstancesInput) (*rds.DescribeDBInstancesOutput, error) {
				return &rds.DescribeDBInstancesOutput{DBInstances: append(all, types.DBInstance{DBInstanceIdentifier: aws.String("solo")})}, nil
			},
			wantCalls: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls atomic.Int64
			api := &fakeRDS{clusters: clustersPage(cs...), instances: func(ctx context.Context, in *rds.DescribeDBInstancesInput) (*rds.DescribeDBInstancesOutput, error) {
				calls.Add(1)
				return tt.instances(ctx, in)
			}}
			got := find(t, api, &fakeKeys{})
			var ids []string
			for _, i := range got.Instances {
				ids = append(ids, i.Identifier)
			}
			if diff := cmp.Diff([]string{"c0-1", "c1-1", "c2-1", "c3-1", "c4-1"}, ids); diff != "" {
				t.Errorf("instances mismatch (-want +got):\n%s", diff)
			}
			if calls.Load() != tt.wantCalls {
				t.Errorf("DescribeDBInstances calls = %d, want %d", calls.Load(), tt.wantCalls)
			}
		})
	}
}
