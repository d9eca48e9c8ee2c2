// Package blast finds every Aurora resource that depends on a KMS key: the clusters whose
// storage, master-user secret, Performance Insights data or database activity stream the key
// protects, their instances, and the snapshots and retained backups that need the key to be
// restored.
//
// No RDS API filters by key (aws-facts §5), so the finder lists everything in the account and
// region and compares client-side. RDS reports key references in every form KMS accepts (key ID,
// key ARN, alias name, alias ARN — moto always keeps the caller's form), so each reference is
// normalised to a key ARN through a KeyNormaliser before comparing.
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
	"github.com/aws/aws-sdk-go-v2/aws/arn"
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

// KeyNormaliser turns any key reference into the key's ARN; *kmskey.Resolver satisfies it.
// It must return an error wrapping kmskey.ErrNotFound for a key or alias that does not exist.
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
	// sequential runs the listings one after another; only the benchmark sets it, to measure
	// what running them concurrently gains.
	sequential bool
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
// radius carries the key's ARN.
func (f *Finder) Find(ctx context.Context, keyARN string) (Radius, error) {
	m, err := f.FindMany(ctx, []string{keyARN})
	if err != nil {
		return Radius{}, err
	}
	return m[keyARN], nil
}

// FindMany lists the account's RDS resources once and returns the radius of each key, keyed by
// the reference as given; every requested key is present, possibly with an empty radius. The
// reconciler's backstop checks many keys every few minutes, and one listing pass keeps that to
// a handful of RDS calls however many keys there are.
func (f *Finder) FindMany(ctx context.Context, keyARNs []string) (map[string]Radius, error) {
	want := make(map[string]string, len(keyARNs)) // reference as given → key ARN
	for _, k := range keyARNs {
		a, err := f.keys.ARN(ctx, k)
		if err != nil {
			return nil, fmt.Errorf("blast radius of %s: %w", k, err)
		}
		want[k] = a
	}
	inv, err := f.list(ctx)
	if err != nil {
		return nil, err
	}
	resolved, err := f.resolve(ctx, inv.refs())
	if err != nil {
		return nil, err
	}
	out := make(map[string]Radius, len(want))
	for ref, keyARN := range want {
		out[ref] = inv.radius(keyARN, resolved)
	}
	return out, nil
}

// ClusterKeys maps the storage key ARN of every Aurora cluster to the identifiers of the
// clusters on it (sorted). The reconciler's backstop uses it to know which keys matter at all
// before describing them. Storage keys whose reference no longer resolves (the key or alias is
// gone) are left out.
func (f *Finder) ClusterKeys(ctx context.Context) (map[string][]string, error) {
	var inv inventory
	if err := inv.listClusters(ctx, f.rds); err != nil {
		return nil, err
	}
	var refs []string
	for _, c := range inv.clusters {
		if isAurora(aws.ToString(c.Engine)) && aws.ToString(c.KmsKeyId) != "" {
			refs = append(refs, aws.ToString(c.KmsKeyId))
		}
	}
	resolved, err := f.resolve(ctx, refs)
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for _, c := range inv.clusters {
		if !isAurora(aws.ToString(c.Engine)) {
			continue
		}
		if a := resolved[aws.ToString(c.KmsKeyId)]; a != "" {
			out[a] = append(out[a], aws.ToString(c.DBClusterIdentifier))
		}
	}
	for _, ids := range out {
		slices.Sort(ids)
	}
	return out, nil
}

// inventory is one listing pass over the account's RDS resources.
type inventory struct {
	clusters  []types.DBCluster
	instances []types.DBInstance
	snapshots []types.DBClusterSnapshot
	backups   []types.DBClusterAutomatedBackup
	// globalMembers maps a cluster ARN to the global database it belongs to.
	globalMembers map[string]string
}

// list runs the independent listings, concurrently unless f.sequential. The first error
// cancels the others and is returned.
func (f *Finder) list(ctx context.Context) (*inventory, error) {
	inv := &inventory{}
	tasks := []func(context.Context) error{
		func(ctx context.Context) error { return inv.listClusters(ctx, f.rds) },
		func(ctx context.Context) error { return inv.listInstances(ctx, f.rds) },
		func(ctx context.Context) error { return inv.listSnapshots(ctx, f.rds) },
		func(ctx context.Context) error { return inv.listGlobalClusters(ctx, f.rds) },
	}
	if !f.skipAutomatedBackups {
		tasks = append(tasks, func(ctx context.Context) error { return inv.listAutomatedBackups(ctx, f.rds) })
	}
	if f.sequential {
		for _, t := range tasks {
			if err := t(ctx); err != nil {
				return nil, err
			}
		}
		return inv, nil
	}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	for _, t := range tasks {
		wg.Go(func() {
			if err := t(ctx); err != nil {
				cancel(err) // only the first cause sticks
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}
	return inv, nil
}

// maxRecords is the largest page RDS serves (20–100): fewer round trips per listing.
var maxRecords = aws.Int32(100)

func (inv *inventory) listClusters(ctx context.Context, api RDSAPI) error {
	p := rds.NewDescribeDBClustersPaginator(api, &rds.DescribeDBClustersInput{MaxRecords: maxRecords})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("describe db clusters: %w", err)
		}
		inv.clusters = append(inv.clusters, page.DBClusters...)
	}
	return nil
}

func (inv *inventory) listInstances(ctx context.Context, api RDSAPI) error {
	p := rds.NewDescribeDBInstancesPaginator(api, &rds.DescribeDBInstancesInput{MaxRecords: maxRecords})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("describe db instances: %w", err)
		}
		inv.instances = append(inv.instances, page.DBInstances...)
	}
	return nil
}

// listSnapshots sets no SnapshotType: RDS then returns manual and automated snapshots together
// (the API reference says so, and moto does the same), one listing instead of two. Shared and
// public snapshots are other accounts' and stay out.
func (inv *inventory) listSnapshots(ctx context.Context, api RDSAPI) error {
	p := rds.NewDescribeDBClusterSnapshotsPaginator(api, &rds.DescribeDBClusterSnapshotsInput{MaxRecords: maxRecords})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("describe db cluster snapshots: %w", err)
		}
		inv.snapshots = append(inv.snapshots, page.DBClusterSnapshots...)
	}
	return nil
}

// listAutomatedBackups is optional: where the operation clearly does not exist (see
// unimplemented), there are no retained backups to report and the radius is still right.
func (inv *inventory) listAutomatedBackups(ctx context.Context, api RDSAPI) error {
	p := rds.NewDescribeDBClusterAutomatedBackupsPaginator(api, &rds.DescribeDBClusterAutomatedBackupsInput{MaxRecords: maxRecords})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if unimplemented(err) {
			inv.backups = nil
			return nil
		}
		if err != nil {
			return fmt.Errorf("describe db cluster automated backups: %w", err)
		}
		inv.backups = append(inv.backups, page.DBClusterAutomatedBackups...)
	}
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
	inv.globalMembers = members
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

// refs returns every key reference the inventory holds, each once.
func (inv *inventory) refs() []string {
	seen := map[string]bool{}
	var out []string
	add := func(p *string) {
		if r := aws.ToString(p); r != "" && !seen[r] {
			seen[r] = true
			out = append(out, r)
		}
	}
	for _, c := range inv.clusters {
		add(c.KmsKeyId)
		if c.MasterUserSecret != nil {
			add(c.MasterUserSecret.KmsKeyId)
		}
		add(c.PerformanceInsightsKMSKeyId)
		add(c.ActivityStreamKmsKeyId)
	}
	for _, i := range inv.instances {
		add(i.PerformanceInsightsKMSKeyId)
	}
	for _, s := range inv.snapshots {
		add(s.KmsKeyId)
	}
	for _, b := range inv.backups {
		add(b.KmsKeyId)
	}
	return out
}

// resolve maps each reference to its key ARN. A reference to a key or alias that no longer
// exists maps to nothing: whatever uses it cannot depend on a key that exists, so it is
// skipped rather than failing the whole radius. Other errors (throttling, access) are returned.
func (f *Finder) resolve(ctx context.Context, refs []string) (map[string]string, error) {
	out := make(map[string]string, len(refs))
	for _, r := range refs {
		a, err := f.keys.ARN(ctx, r)
		switch {
		case errors.Is(err, kmskey.ErrNotFound):
			continue
		case err != nil:
			return nil, fmt.Errorf("resolve key reference %s: %w", r, err)
		}
		out[r] = a
	}
	return out, nil
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
		if !isAurora(cl.Engine) {
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
		if !isAurora(aws.ToString(s.Engine)) || !is(s.KmsKeyId) {
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
		if !isAurora(aws.ToString(b.Engine)) || !is(b.KmsKeyId) {
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

// cluster builds the incident view of c, including whether Aurora can stop it — and so whether
// it gets the 7-day recoverable window at all.
func (inv *inventory) cluster(c types.DBCluster, uses []string) incident.Cluster {
	clusterARN := aws.ToString(c.DBClusterArn)
	facts := incident.StopFacts{GlobalCluster: aws.ToString(c.GlobalClusterIdentifier), EngineMode: aws.ToString(c.EngineMode)}
	if g, ok := inv.globalMembers[clusterARN]; ok && facts.GlobalCluster == "" && clusterARN != "" {
		facts.GlobalCluster = g
	}
	region := regionOf(clusterARN)
	for _, r := range c.ReadReplicaIdentifiers {
		if crossRegion(region, r) {
			facts.CrossRegionReplicas = append(facts.CrossRegionReplicas, r)
		}
	}
	if r := aws.ToString(c.ReplicationSourceIdentifier); crossRegion(region, r) {
		facts.CrossRegionSource = r
	}
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

// isAurora reports whether engine is an Aurora engine (aurora, aurora-mysql,
// aurora-postgresql). DescribeDBClusters also returns Neptune, DocumentDB and Multi-AZ RDS
// clusters.
func isAurora(engine string) bool { return strings.HasPrefix(engine, "aurora") }

func regionOf(s string) string {
	a, err := arn.Parse(s)
	if err != nil {
		return ""
	}
	return a.Region
}

// crossRegion reports whether ref is an ARN in a region other than home. Same-region replicas
// are named by identifier or ARN and do not stop a cluster from stopping. When the cluster's
// own region is unknown, any ARN counts: wrongly calling a cluster unstoppable only makes an
// incident critical sooner, while the opposite mistake promises a window that does not exist.
func crossRegion(home, ref string) bool {
	r := regionOf(ref)
	return r != "" && r != home
}
