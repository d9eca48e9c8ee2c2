// Package blast finds every Aurora resource that depends on a KMS key: the clusters whose
// storage, master-user secret, Performance Insights data or database activity stream the key
// protects, their instances, and the snapshots and retained backups that need the key to be
// restored.
//
// No RDS API filters by key (aws-facts §5), so the finder lists the account's clusters,
// snapshots, retained backups and global databases and compares client-side. RDS reports key
// references in every form KMS accepts (key ID, key ARN, alias name, alias ARN — moto always
// keeps the caller's form), so each reference is normalised to a key ARN through a
// KeyNormaliser before comparing.
//
// # Cost model
//
// On AWS a Describe call costs a round trip of a few hundred milliseconds, and the pages of one
// listing come one after another (each needs the previous page's marker), so what a radius
// costs is its calls and, above all, its longest chain: the calls that must wait for each
// other. Let C be the clusters in the account and region, I the instances belonging to them, I'
// every instance of the account (standalone RDS instances too), S the cluster snapshots (manual
// and automated; S_m the manual ones, A the automated ones of the d clusters on the key), B the automated backups, G the global databases, R the distinct key
// references that are not key ARNs, p(n) = ⌈n/100⌉ pages (100 is RDS's largest page) and
// K = resolveConcurrency = 16.
//
// Before (issue 12), the five listings ran at once, the instance listing walked every instance
// of the account, and the references were described one after another once all had been listed:
//
//	calls  p(C) + p(I') + p(S) + p(B) + p(G) + R
//	chain  max(p(C), p(I'), p(S), p(B), p(G)) + R
//
// Now:
//
//	calls  p(C) + [p(I) … p(I) + batches] + p(S_m) + [p(A) … p(A) + abatches] + p(B) + p(G) + R
//	chain  about max(p(C) + 1, p(S_m), p(B), p(G)) + ⌈r/K⌉ + 1
//
// where batches ≥ p(C) is the number of instance batches and r the references first met on
// the last pages to arrive. Sequential: the pages within one listing, and a cluster page before
// its instance batches. Concurrent: the four listings with each other, the batches of a page
// with each other and with the next cluster page, and up to K resolutions with everything.
//
//   - Clusters, snapshots, automated backups and global databases list concurrently, page by
//     page: a snapshot must be found even when its cluster no longer exists, and retained
//     backups exist only for deleted clusters, so neither can be asked per cluster.
//   - Instances are asked per cluster, never listed: as each page of clusters arrives, its
//     clusters' instances come from DescribeDBInstances with the db-cluster-id filter, in
//     batches of at most ClusterFilterLimit identifiers and at most 100 members as
//     DBClusterMembers counts them, so that a batch is normally answered in one page; all
//     batches of a page run at once. Standalone RDS instances are never fetched.
//   - Automated snapshots are asked for per cluster, only for the d clusters whose storage is on
//     the key, once they are known: an Aurora cluster keeps one a day for its retention period
//     (up to 35), encrypted with its own key, so they are most of an account's snapshots and
//     a listing of them all would be the longest chain (20 pages for 2,000). Batches hold at
//     most ClusterFilterLimit clusters and about one page of snapshots (retention + 1 each),
//     and run at once: one step after the clusters. A deleted cluster's automated snapshots go
//     with it, unless retained, which the automated-backup listing covers.
//   - Each distinct key reference is described once, as soon as the page carrying it arrives,
//     up to K at a time; key ARNs cost nothing. Resolution overlaps the listings and adds only
//     ⌈r/K⌉ steps after the last page.
//
// Why the instances of every cluster and not only of the clusters on the key: an instance can
// carry a Performance Insights key of its own (DBInstance.PerformanceInsightsKMSKeyId), so a
// cluster can depend on the key through its instances alone, and only reading the instances
// shows it. Asking per page of clusters keeps that case, needs no resolved key first (the
// batches start before any DescribeKey answers), and keeps the instances one step off the
// critical path. Asking only for the clusters found on the key would save about p(I) - 1
// calls but miss those clusters.
//
// Boundaries: it owns reading a key's dependents from RDS; it must not import the KMS client (keys
// are compared through kmskey), DynamoDB, the incident store or Slack.
package blast

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/rds"
	"github.com/aws/aws-sdk-go-v2/service/rds/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/kmskey"
)

// What a key protects for a cluster or instance (incident.Cluster.Uses).
const (
	UseStorage             = "storage"
	UseMasterUserSecret    = "master-user-secret"
	UsePerformanceInsights = "performance-insights"
	UseActivityStream      = "activity-stream"
)

// Snapshot types (incident.Snapshot.Type).
const (
	SnapshotManual          = "manual"
	SnapshotAutomated       = "automated"
	SnapshotAutomatedBackup = "automated-backup"
)

// RDSAPI is the part of the RDS client the finder uses; *rds.Client satisfies it.
type RDSAPI interface {
	DescribeDBClusters(context.Context, *rds.DescribeDBClustersInput, ...func(*rds.Options)) (*rds.DescribeDBClustersOutput, error)
	DescribeDBInstances(context.Context, *rds.DescribeDBInstancesInput, ...func(*rds.Options)) (*rds.DescribeDBInstancesOutput, error)
	DescribeDBClusterSnapshots(context.Context, *rds.DescribeDBClusterSnapshotsInput, ...func(*rds.Options)) (*rds.DescribeDBClusterSnapshotsOutput, error)
	DescribeDBClusterAutomatedBackups(context.Context, *rds.DescribeDBClusterAutomatedBackupsInput, ...func(*rds.Options)) (*rds.DescribeDBClusterAutomatedBackupsOutput, error)
	DescribeGlobalClusters(context.Context, *rds.DescribeGlobalClustersInput, ...func(*rds.Options)) (*rds.DescribeGlobalClustersOutput, error)
}

// BlueGreenLister lists blue/green deployments; *rds.Client satisfies it. A Finder whose RDSAPI
// also implements it marks the deployments' clusters as unable to stop: "You can't stop and start
// a cluster that is part of a blue/green deployment"
// (https://docs.aws.amazon.com/AmazonRDS/latest/AuroraUserGuide/blue-green-deployments-considerations.html),
// so Aurora gives them no recoverable window. DBCluster carries no field that says so.
type BlueGreenLister interface {
	DescribeBlueGreenDeployments(context.Context, *rds.DescribeBlueGreenDeploymentsInput, ...func(*rds.Options)) (*rds.DescribeBlueGreenDeploymentsOutput, error)
}

// KeyNormaliser turns any key reference into the key's ARN; *kmskey.Resolver satisfies it.
// It must return an error wrapping kmskey.ErrNotFound for a key or alias that does not exist,
// and be safe for concurrent use: the finder resolves several references at once.
type KeyNormaliser interface {
	ARN(ctx context.Context, ref string) (string, error)
}

// Radius is everything that depends on one key.
type Radius struct {
	KeyARN string `json:"key_arn"`
	// Clusters are the Aurora clusters (engine prefix "aurora") that depend on the key, sorted
	// by identifier.
	Clusters []incident.Cluster `json:"clusters"`
	// Instances are all instances of those clusters, sorted by identifier.
	Instances []incident.Instance `json:"instances"`
	// Snapshots are the Aurora cluster snapshots (manual and automated) and retained automated
	// backups encrypted with the key, sorted by identifier.
	Snapshots []incident.Snapshot `json:"snapshots"`
	// OtherEngines are Neptune, DocumentDB and other non-Aurora clusters on the key, which
	// DescribeDBClusters also returns. They are reported so nobody is surprised, never as
	// Aurora: their key-loss behaviour is not what keywarden's deadlines assume.
	OtherEngines []incident.Cluster `json:"other_engines"`
}

// Empty reports whether no Aurora cluster depends on the key. Snapshots and other engines alone
// do not make an Aurora incident.
func (r Radius) Empty() bool { return len(r.Clusters) == 0 }

// Option changes how a Finder works.
type Option func(*Finder)

// WithoutClusterAutomatedBackups skips DescribeDBClusterAutomatedBackups. It exists for moto
// 5.2.1, which does not implement the operation and answers it with a bare HTTP 500 HTML page
// that cannot be told apart from a real server failure; the local stack passes it. Against
// AWS, leave it out: retained backups of deleted clusters need the key to be restored.
func WithoutClusterAutomatedBackups() Option {
	return func(f *Finder) { f.skipAutomatedBackups = true }
}

// Finder finds the resources that depend on keys. It is safe for concurrent use.
type Finder struct {
	rds                  RDSAPI
	keys                 KeyNormaliser
	skipAutomatedBackups bool
}

// New returns a Finder listing through rdsAPI and normalising key references through keys.
func New(rdsAPI RDSAPI, keys KeyNormaliser, opts ...Option) *Finder {
	f := &Finder{rds: rdsAPI, keys: keys}
	for _, o := range opts {
		o(f)
	}
	return f
}

// Find returns everything that depends on the key. keyARN may be any key reference; the
// radius carries the key's ARN. Its cost is FindMany's.
func (f *Finder) Find(ctx context.Context, keyARN string) (Radius, error) {
	m, err := f.FindMany(ctx, []string{keyARN})
	if err != nil {
		return Radius{}, err
	}
	return m[keyARN], nil
}

// FindMany reads the account's RDS resources once and returns the radius of each key, keyed by
// the reference as given; every requested key is present, possibly with an empty radius. The
// reconciler's backstop checks many keys every few minutes, and one pass keeps that to the
// calls of the package's cost model however many keys there are.
//
// A requested key that does not resolve fails the call with an error wrapping
// kmskey.ErrNotFound; a resource whose key reference no longer resolves is left out. Any other
// RDS or KMS error (throttling, access) fails the call at once and stops the calls in flight:
// a radius with a hole in it would look complete.
func (f *Finder) FindMany(ctx context.Context, keyARNs []string) (map[string]Radius, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	refs := newRefResolver(ctx, cancel, f.keys)

	want := make(map[string]*pendingRef, len(keyARNs)) // reference as given → its resolution
	var watch sync.WaitGroup
	for _, k := range keyARNs {
		p := refs.resolve(k)
		want[k] = p
		watch.Go(func() {
			select {
			case <-p.done:
				if p.err != nil {
					cancel(fmt.Errorf("blast radius of %s: %w", k, p.err))
				}
			case <-ctx.Done():
			}
		})
	}
	inv := f.list(ctx, cancel, refs)
	resolved := refs.wait()
	watch.Wait()
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}
	if err := f.automated(ctx, inv, want, resolved); err != nil {
		return nil, err
	}
	out := make(map[string]Radius, len(want))
	for ref, p := range want {
		out[ref] = inv.radius(p.arn, resolved)
	}
	return out, nil
}

// automated adds the automated snapshots of the Aurora clusters whose storage is on one of the
// wanted keys, and resolves any key reference they bring that the listings did not (RDS names a
// cluster's key the same way in its snapshots, so normally none).
func (f *Finder) automated(ctx context.Context, inv *inventory, want map[string]*pendingRef, resolved map[string]string) error {
	keys := map[string]bool{}
	for _, p := range want {
		keys[p.arn] = true
	}
	var on []types.DBCluster
	for _, c := range inv.clusters {
		if IsAurora(aws.ToString(c.Engine)) && keys[resolved[aws.ToString(c.KmsKeyId)]] {
			on = append(on, c)
		}
	}
	if len(on) == 0 {
		return nil
	}
	if err := inv.listAutomated(ctx, f.rds, on); err != nil {
		return err
	}
	for _, s := range inv.snapshots {
		ref := aws.ToString(s.KmsKeyId)
		if _, ok := resolved[ref]; ok || ref == "" {
			continue
		}
		a, err := f.keys.ARN(ctx, ref)
		switch {
		case errors.Is(err, kmskey.ErrNotFound):
		case err != nil:
			return fmt.Errorf("key of snapshot %s: %w", aws.ToString(s.DBClusterSnapshotIdentifier), err)
		default:
			resolved[ref] = a
		}
	}
	return nil
}

// inventory is one pass over the account's RDS resources. The listings fill it concurrently.
type inventory struct {
	refs *refResolver

	mu        sync.Mutex
	clusters  []types.DBCluster
	instances []types.DBInstance
	snapshots []types.DBClusterSnapshot
	backups   []types.DBClusterAutomatedBackup
	// globalMembers maps a cluster ARN to the global database it belongs to.
	globalMembers map[string]string
	// blueGreen maps a cluster ARN (source or target) to the blue/green deployment it is in.
	blueGreen map[string]string
}

// list runs the listings concurrently, and the instance batches as cluster pages arrive; it
// returns when all have ended. The first error cancels ctx through cancel, which stops the
// others; the caller reads it from context.Cause.
func (f *Finder) list(ctx context.Context, cancel context.CancelCauseFunc, refs *refResolver) *inventory {
	inv := &inventory{refs: refs}
	var wg sync.WaitGroup
	spawn := func(task func(context.Context) error) {
		wg.Go(func() {
			if err := task(ctx); err != nil {
				cancel(err) // only the first cause sticks
			}
		})
	}
	spawn(func(ctx context.Context) error { return inv.listClusters(ctx, f.rds, spawn) })
	spawn(func(ctx context.Context) error { return inv.listSnapshots(ctx, f.rds) })
	spawn(func(ctx context.Context) error { return inv.listGlobalClusters(ctx, f.rds) })
	if bg, ok := f.rds.(BlueGreenLister); ok {
		spawn(func(ctx context.Context) error { return inv.listBlueGreen(ctx, bg) })
	}
	if !f.skipAutomatedBackups {
		spawn(func(ctx context.Context) error { return inv.listAutomatedBackups(ctx, f.rds) })
	}
	wg.Wait()
	return inv
}

// maxRecords is the largest page RDS serves (20–100): fewer round trips per listing.
var maxRecords = aws.Int32(100)

// ClusterFilterLimit is how many cluster identifiers one db-cluster-id filter carries. The RDS
// API reference states no limit on a filter's values (API_Filter.html: "One or more filter
// values"); RDS answers a DescribeDBClusters db-cluster-id filter of more than 100 with
// InvalidParameterCombination "Only up to 100 unique filter DB Cluster Identifiers may be
// specified per filter" (reported in cloud-custodian/cloud-custodian#10133, 2025), and
// DescribeDBInstances' filter of the same name is taken to share it. Should RDS refuse a batch
// anyway, listInstances splits it in halves rather than fail.
const ClusterFilterLimit = 100

// listClusters lists the clusters page by page. Each page's key references go to resolution at
// once, and each page's instances are asked for at once, through spawn, so neither waits for
// the listing to end.
func (inv *inventory) listClusters(ctx context.Context, api RDSAPI, spawn func(func(context.Context) error)) error {
	p := rds.NewDescribeDBClustersPaginator(api, &rds.DescribeDBClustersInput{MaxRecords: maxRecords})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("describe db clusters: %w", err)
		}
		for _, c := range page.DBClusters {
			inv.refs.add(c.KmsKeyId, c.PerformanceInsightsKMSKeyId, c.ActivityStreamKmsKeyId)
			if c.MasterUserSecret != nil {
				inv.refs.add(c.MasterUserSecret.KmsKeyId)
			}
		}
		inv.mu.Lock()
		inv.clusters = append(inv.clusters, page.DBClusters...)
		inv.mu.Unlock()
		for _, batch := range instanceBatches(page.DBClusters) {
			spawn(func(ctx context.Context) error { return inv.listInstances(ctx, api, batch) })
		}
	}
	return nil
}

// instanceBatches groups the clusters' identifiers for the db-cluster-id filter: at most
// ClusterFilterLimit identifiers, and at most one page (maxRecords) of members as
// DBClusterMembers counts them, so that a batch is normally answered in one call. The member
// count only sizes batches: a cluster with no members listed is still asked for, in case an
// instance was added since.
func instanceBatches(clusters []types.DBCluster) [][]string {
	return clusterBatches(clusters, func(c types.DBCluster) int { return len(c.DBClusterMembers) })
}

// clusterBatches groups the clusters' identifiers, in order, into batches of at most
// ClusterFilterLimit whose weights (what each cluster is expected to bring back) add up to at
// most one page (maxRecords); a cluster heavier than a page gets a batch of its own. Clusters
// without an identifier are left out: the filter could not name them.
func clusterBatches(clusters []types.DBCluster, weight func(types.DBCluster) int) [][]string {
	var batches [][]string
	var cur []string
	n := 0
	for _, c := range clusters {
		id := aws.ToString(c.DBClusterIdentifier)
		if id == "" {
			continue
		}
		w := weight(c)
		if len(cur) > 0 && (len(cur) == ClusterFilterLimit || n+w > int(*maxRecords)) {
			batches = append(batches, cur)
			cur, n = nil, 0
		}
		cur = append(cur, id)
		n += w
	}
	if len(cur) > 0 {
		batches = append(batches, cur)
	}
	return batches
}

// listInstances asks for the instances of the clusters ids names, through DescribeDBInstances'
// db-cluster-id filter ("Accepts DB cluster identifiers and DB cluster Amazon Resource Names
// (ARNs)", API_DescribeDBInstances.html). Identifiers are sent rather than ARNs because moto
// 5.2.1 matches this filter on identifiers only. Every instance that comes back is checked
// against ids as well: a server that ignored the filter would otherwise put other clusters'
// instances, and duplicates across batches, in the radius. If RDS refuses the batch as too
// large (InvalidParameterCombination or InvalidParameterValue before any page), the two halves
// are asked for instead.
func (inv *inventory) listInstances(ctx context.Context, api RDSAPI, ids []string) error {
	asked := make(map[string]bool, len(ids))
	for _, id := range ids {
		asked[strings.ToLower(id)] = true
	}
	p := rds.NewDescribeDBInstancesPaginator(api, &rds.DescribeDBInstancesInput{
		MaxRecords: maxRecords,
		Filters:    []types.Filter{{Name: aws.String("db-cluster-id"), Values: ids}},
	})
	first := true
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if first && len(ids) > 1 && refusedFilter(err) {
			half := len(ids) / 2
			if err := inv.listInstances(ctx, api, ids[:half]); err != nil {
				return err
			}
			return inv.listInstances(ctx, api, ids[half:])
		}
		first = false
		if err != nil {
			return fmt.Errorf("describe db instances: %w", err)
		}
		var keep []types.DBInstance
		for _, i := range page.DBInstances {
			if asked[strings.ToLower(aws.ToString(i.DBClusterIdentifier))] {
				keep = append(keep, i)
				inv.refs.add(i.PerformanceInsightsKMSKeyId)
			}
		}
		inv.mu.Lock()
		inv.instances = append(inv.instances, keep...)
		inv.mu.Unlock()
	}
	return nil
}

// refusedFilter reports whether RDS turned a request down for its parameters, as it does for a
// filter with too many values.
func refusedFilter(err error) bool {
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		return false
	}
	switch ae.ErrorCode() {
	case "InvalidParameterCombination", "InvalidParameterValue":
		return true
	}
	return false
}

// listSnapshots lists the manual cluster snapshots (SnapshotType manual). It lists rather than
// asking per cluster because a manual snapshot outlives its cluster, may be copied under another
// key, and still needs its key to be restored. Shared and public snapshots are other accounts'
// and stay out. Automated snapshots are asked for per dependent cluster (listAutomated): an
// Aurora cluster takes one a day for its whole retention period (up to 35 days), so they are
// most of an account's snapshots, and they are always encrypted with their cluster's key.
func (inv *inventory) listSnapshots(ctx context.Context, api RDSAPI) error {
	p := rds.NewDescribeDBClusterSnapshotsPaginator(api, &rds.DescribeDBClusterSnapshotsInput{
		MaxRecords: maxRecords, SnapshotType: aws.String(SnapshotManual),
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("describe db cluster snapshots: %w", err)
		}
		for _, s := range page.DBClusterSnapshots {
			inv.refs.add(s.KmsKeyId)
		}
		inv.mu.Lock()
		inv.snapshots = append(inv.snapshots, page.DBClusterSnapshots...)
		inv.mu.Unlock()
	}
	return nil
}

// automatedBatches groups clusters for listAutomated: at most ClusterFilterLimit identifiers
// and, counting a cluster's automated snapshots as its retention period in days plus one (one
// snapshot a day, and today's), at most one page of them, so a batch is normally one call.
func automatedBatches(clusters []types.DBCluster) [][]string {
	return clusterBatches(clusters, func(c types.DBCluster) int { return int(aws.ToInt32(c.BackupRetentionPeriod)) + 1 })
}

// listAutomated asks for the automated snapshots of clusters, through DescribeDBClusterSnapshots'
// db-cluster-id filter with SnapshotType automated (API_DescribeDBClusterSnapshots.html), the
// batches of automatedBatches at once. It runs once the clusters on the keys are known, so it
// costs one step of the chain and no call for a cluster on another key. Snapshots of clusters
// outside the batch (a server that ignores the filter) are dropped.
func (inv *inventory) listAutomated(ctx context.Context, api RDSAPI, clusters []types.DBCluster) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	for _, batch := range automatedBatches(clusters) {
		wg.Go(func() {
			in := map[string]bool{}
			for _, id := range batch {
				in[strings.ToLower(id)] = true
			}
			p := rds.NewDescribeDBClusterSnapshotsPaginator(api, &rds.DescribeDBClusterSnapshotsInput{
				MaxRecords:   maxRecords,
				SnapshotType: aws.String(SnapshotAutomated),
				Filters:      []types.Filter{{Name: aws.String("db-cluster-id"), Values: batch}},
			})
			for p.HasMorePages() {
				page, err := p.NextPage(ctx)
				if err != nil {
					cancel(fmt.Errorf("describe db cluster snapshots of %d clusters: %w", len(batch), err))
					return
				}
				inv.mu.Lock()
				for _, s := range page.DBClusterSnapshots {
					if in[strings.ToLower(aws.ToString(s.DBClusterIdentifier))] {
						inv.snapshots = append(inv.snapshots, s)
					}
				}
				inv.mu.Unlock()
			}
		})
	}
	wg.Wait()
	return context.Cause(ctx)
}

// listAutomatedBackups is optional: where the operation clearly does not exist (see
// unimplemented), there are no retained backups to report and the radius is still right.
func (inv *inventory) listAutomatedBackups(ctx context.Context, api RDSAPI) error {
	p := rds.NewDescribeDBClusterAutomatedBackupsPaginator(api, &rds.DescribeDBClusterAutomatedBackupsInput{MaxRecords: maxRecords})
	var backups []types.DBClusterAutomatedBackup
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if unimplemented(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("describe db cluster automated backups: %w", err)
		}
		for _, b := range page.DBClusterAutomatedBackups {
			inv.refs.add(b.KmsKeyId)
		}
		backups = append(backups, page.DBClusterAutomatedBackups...)
	}
	inv.mu.Lock()
	inv.backups = backups
	inv.mu.Unlock()
	return nil
}

// listGlobalClusters is optional like listAutomatedBackups: DBCluster.GlobalClusterIdentifier
// already marks global members, this listing is the second source.
func (inv *inventory) listGlobalClusters(ctx context.Context, api RDSAPI) error {
	members := map[string]string{}
	p := rds.NewDescribeGlobalClustersPaginator(api, &rds.DescribeGlobalClustersInput{MaxRecords: maxRecords})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if unimplemented(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("describe global clusters: %w", err)
		}
		for _, g := range page.GlobalClusters {
			for _, m := range g.GlobalClusterMembers {
				members[aws.ToString(m.DBClusterArn)] = aws.ToString(g.GlobalClusterIdentifier)
			}
		}
	}
	inv.mu.Lock()
	inv.globalMembers = members
	inv.mu.Unlock()
	return nil
}

// listBlueGreen is optional like listGlobalClusters: an endpoint without the operation has no
// deployments. Deployments being deleted or already switched over no longer hold their
// clusters; every other status does.
func (inv *inventory) listBlueGreen(ctx context.Context, api BlueGreenLister) error {
	members := map[string]string{}
	// No MaxRecords: its default is already the maximum, 100, and moto 5.2.1 answers a request
	// that sets it with HTTP 500.
	p := rds.NewDescribeBlueGreenDeploymentsPaginator(api, &rds.DescribeBlueGreenDeploymentsInput{})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if unimplemented(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("describe blue/green deployments: %w", err)
		}
		for _, d := range page.BlueGreenDeployments {
			switch aws.ToString(d.Status) {
			case "DELETING", "SWITCHOVER_COMPLETED":
				continue
			}
			name := aws.ToString(d.BlueGreenDeploymentName)
			if name == "" {
				name = aws.ToString(d.BlueGreenDeploymentIdentifier)
			}
			for _, c := range []string{aws.ToString(d.Source), aws.ToString(d.Target)} {
				if c != "" {
					members[c] = name
				}
			}
		}
	}
	inv.mu.Lock()
	inv.blueGreen = members
	inv.mu.Unlock()
	return nil
}

// unimplemented reports whether err says, unmistakably, that the operation does not exist
// here: the AWS Query protocol's InvalidAction (an action name the endpoint does not know, as
// in partitions where a newer RDS operation has not arrived), another service's
// unknown-operation codes, or HTTP 501 Not Implemented. It is used only for the two optional
// listings; anything vaguer — throttling, access denied, a 500 — is a real failure, because
// treating it as "nothing there" would silently shrink the blast radius.
func unimplemented(err error) bool {
	if err == nil {
		return false
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "InvalidAction", "NotImplemented", "NotImplementedException", "UnknownOperationException", "UnsupportedOperation":
			return true
		}
	}
	var re *smithyhttp.ResponseError
	return errors.As(err, &re) && re.HTTPStatusCode() == http.StatusNotImplemented
}

// resolveConcurrency bounds the DescribeKey calls in flight for one radius. KMS's DescribeKey
// quota is per account and region and shared with every other caller (kmskey bounds its own
// sweeps to 8 for the same reason); 16 keeps a burst of a few hundred references to a few
// round trips without crowding the quota.
const resolveConcurrency = 16

// refResolver resolves each distinct key reference once, concurrently and bounded, as the pages
// carrying references arrive. A reference that is already a key ARN is its own answer and costs
// no call.
type refResolver struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	keys   KeyNormaliser
	sem    chan struct{}
	wg     sync.WaitGroup

	mu   sync.Mutex
	refs map[string]*pendingRef
}

// pendingRef is one reference's resolution; arn and err are set when done is closed.
type pendingRef struct {
	done chan struct{}
	arn  string
	err  error
}

func newRefResolver(ctx context.Context, cancel context.CancelCauseFunc, keys KeyNormaliser) *refResolver {
	return &refResolver{ctx: ctx, cancel: cancel, keys: keys, sem: make(chan struct{}, resolveConcurrency), refs: map[string]*pendingRef{}}
}

// add starts resolving the resources' references. A reference to a key or alias that no longer
// exists is not an error: whatever uses it cannot depend on a key that exists, and radius
// skips it. Any other failure (throttling, access) cancels the whole radius, whose picture
// would otherwise be wrong.
func (r *refResolver) add(refs ...*string) {
	for _, p := range refs {
		if ref := aws.ToString(p); ref != "" {
			r.resolve(ref)
		}
	}
}

// resolve returns the reference's resolution, starting it if it is the first time the
// reference is met.
func (r *refResolver) resolve(ref string) *pendingRef {
	r.mu.Lock()
	defer r.mu.Unlock()
	if p, ok := r.refs[ref]; ok {
		return p
	}
	p := &pendingRef{done: make(chan struct{})}
	r.refs[ref] = p
	if incident.IsKeyARN(ref) { // answered without KMS: it does not take a resolution slot
		p.arn = ref
		close(p.done)
		return p
	}
	r.wg.Go(func() {
		defer close(p.done)
		select {
		case r.sem <- struct{}{}:
		case <-r.ctx.Done():
			p.err = context.Cause(r.ctx)
			return
		}
		defer func() { <-r.sem }()
		p.arn, p.err = r.keys.ARN(r.ctx, ref)
		if p.err != nil && !errors.Is(p.err, kmskey.ErrNotFound) {
			r.cancel(fmt.Errorf("resolve key reference %s: %w", ref, p.err))
		}
	})
	return p
}

// wait returns, once every resolution has ended, the references that resolved mapped to their
// key ARNs.
func (r *refResolver) wait() map[string]string {
	r.wg.Wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]string, len(r.refs))
	for ref, p := range r.refs {
		if p.err == nil && p.arn != "" {
			out[ref] = p.arn
		}
	}
	return out
}

// radius picks out what depends on keyARN. resolved maps references to key ARNs.
func (inv *inventory) radius(keyARN string, resolved map[string]string) Radius {
	is := func(p *string) bool {
		r := aws.ToString(p)
		return r != "" && resolved[r] == keyARN
	}
	rad := Radius{
		KeyARN:       keyARN,
		Clusters:     []incident.Cluster{},
		Instances:    []incident.Instance{},
		Snapshots:    []incident.Snapshot{},
		OtherEngines: []incident.Cluster{},
	}

	byCluster := map[string][]types.DBInstance{}
	for _, i := range inv.instances {
		if id := aws.ToString(i.DBClusterIdentifier); id != "" {
			byCluster[id] = append(byCluster[id], i)
		}
	}

	live := map[string]bool{} // cluster ARNs and resource IDs
	for _, c := range inv.clusters {
		for _, k := range []*string{c.DBClusterArn, c.DbClusterResourceId} {
			if aws.ToString(k) != "" {
				live[*k] = true
			}
		}

		id := aws.ToString(c.DBClusterIdentifier)
		var uses []string
		if is(c.KmsKeyId) {
			uses = append(uses, UseStorage)
		}
		if c.MasterUserSecret != nil && is(c.MasterUserSecret.KmsKeyId) {
			uses = append(uses, UseMasterUserSecret)
		}
		piOnInstance := slices.ContainsFunc(byCluster[id], func(i types.DBInstance) bool { return is(i.PerformanceInsightsKMSKeyId) })
		if is(c.PerformanceInsightsKMSKeyId) || piOnInstance {
			uses = append(uses, UsePerformanceInsights)
		}
		if is(c.ActivityStreamKmsKeyId) {
			uses = append(uses, UseActivityStream)
		}
		if len(uses) == 0 {
			continue
		}
		cl := inv.cluster(c, uses)
		if !IsAurora(cl.Engine) {
			rad.OtherEngines = append(rad.OtherEngines, cl)
			continue
		}
		rad.Clusters = append(rad.Clusters, cl)
		for _, i := range byCluster[id] {
			in := incident.Instance{
				Identifier:        aws.ToString(i.DBInstanceIdentifier),
				ARN:               aws.ToString(i.DBInstanceArn),
				ClusterIdentifier: id,
				Status:            incident.ClusterStatus(aws.ToString(i.DBInstanceStatus)),
			}
			if is(i.PerformanceInsightsKMSKeyId) {
				in.Uses = []string{UsePerformanceInsights}
			}
			rad.Instances = append(rad.Instances, in)
		}
	}

	for _, s := range inv.snapshots {
		if !IsAurora(aws.ToString(s.Engine)) || !is(s.KmsKeyId) {
			continue
		}
		rad.Snapshots = append(rad.Snapshots, incident.Snapshot{
			Identifier:        aws.ToString(s.DBClusterSnapshotIdentifier),
			ARN:               aws.ToString(s.DBClusterSnapshotArn),
			ClusterIdentifier: aws.ToString(s.DBClusterIdentifier),
			Type:              aws.ToString(s.SnapshotType),
		})
	}
	for _, b := range inv.backups {
		// A live cluster's own automated backups are listed too; the cluster already stands
		// for them. Only retained backups of deleted clusters add something to restore.
		if live[aws.ToString(b.DBClusterArn)] || live[aws.ToString(b.DbClusterResourceId)] {
			continue
		}
		if !IsAurora(aws.ToString(b.Engine)) || !is(b.KmsKeyId) {
			continue
		}
		rad.Snapshots = append(rad.Snapshots, incident.Snapshot{
			// The resource ID is what RestoreDBClusterToPointInTime takes
			// (SourceDbClusterResourceId) to restore a deleted cluster's backup.
			Identifier:        aws.ToString(b.DbClusterResourceId),
			ARN:               aws.ToString(b.DBClusterAutomatedBackupsArn),
			ClusterIdentifier: aws.ToString(b.DBClusterIdentifier),
			Type:              SnapshotAutomatedBackup,
		})
	}

	byID := func(a, b incident.Cluster) int { return strings.Compare(a.Identifier, b.Identifier) }
	slices.SortFunc(rad.Clusters, byID)
	slices.SortFunc(rad.OtherEngines, byID)
	slices.SortFunc(rad.Instances, func(a, b incident.Instance) int { return strings.Compare(a.Identifier, b.Identifier) })
	slices.SortFunc(rad.Snapshots, func(a, b incident.Snapshot) int {
		return cmp.Or(strings.Compare(a.Identifier, b.Identifier), strings.Compare(a.Type, b.Type))
	})
	return rad
}

// StopFactsOf is what DescribeDBClusters alone says of whether Aurora can stop c: its global
// database (GlobalClusterIdentifier), cross-Region read replicas and source, and engine mode.
// A blue/green deployment, and a global database membership the cluster record does not name,
// need DescribeBlueGreenDeployments and DescribeGlobalClusters, which a radius lists.
func StopFactsOf(c types.DBCluster) incident.StopFacts {
	facts := incident.StopFacts{GlobalCluster: aws.ToString(c.GlobalClusterIdentifier), EngineMode: aws.ToString(c.EngineMode)}
	region := incident.ARNRegion(aws.ToString(c.DBClusterArn))
	for _, r := range c.ReadReplicaIdentifiers {
		if crossRegion(region, r) {
			facts.CrossRegionReplicas = append(facts.CrossRegionReplicas, r)
		}
	}
	if r := aws.ToString(c.ReplicationSourceIdentifier); crossRegion(region, r) {
		facts.CrossRegionSource = r
	}
	return facts
}

// cluster builds the incident view of c, including whether Aurora can stop it — and so whether
// it gets the 7-day recoverable window at all.
func (inv *inventory) cluster(c types.DBCluster, uses []string) incident.Cluster {
	clusterARN := aws.ToString(c.DBClusterArn)
	facts := StopFactsOf(c)
	if g, ok := inv.globalMembers[clusterARN]; ok && facts.GlobalCluster == "" && clusterARN != "" {
		facts.GlobalCluster = g
	}
	facts.BlueGreenDeployment = inv.blueGreen[clusterARN]
	reason := incident.CannotStopReason(facts)

	var members []string
	for _, m := range c.DBClusterMembers {
		if id := aws.ToString(m.DBInstanceIdentifier); id != "" {
			members = append(members, id)
		}
	}
	slices.Sort(members)

	return incident.Cluster{
		Identifier:       aws.ToString(c.DBClusterIdentifier),
		ARN:              clusterARN,
		Engine:           aws.ToString(c.Engine),
		Status:           incident.ClusterStatus(aws.ToString(c.Status)),
		CanStop:          reason == "",
		CannotStopReason: reason,
		Uses:             uses,
		Members:          members,
	}
}

// IsAurora reports whether engine is an Aurora engine (aurora, aurora-mysql,
// aurora-postgresql). DescribeDBClusters also returns Neptune, DocumentDB and Multi-AZ RDS
// clusters.
func IsAurora(engine string) bool { return strings.HasPrefix(engine, "aurora") }

// crossRegion reports whether ref is an ARN in a region other than home. Same-region replicas
// are named by identifier or ARN and do not stop a cluster from stopping. When the cluster's
// own region is unknown, any ARN counts: wrongly calling a cluster unstoppable only makes an
// incident critical sooner, while the opposite mistake promises a window that does not exist.
func crossRegion(home, ref string) bool {
	r := incident.ARNRegion(ref)
	return r != "" && r != home
}
