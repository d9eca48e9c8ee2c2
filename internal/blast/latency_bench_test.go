package blast

import (
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/rds"

	"github.com/keywarden/keywarden/internal/awstest"
	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/kmskey"
)

// The estate BenchmarkLatency maps one key in, as issue 14 measures it: 1,000 clusters with two
// instances and one manual snapshot each (moto adds an automated snapshot per cluster, so the
// snapshot listing holds 2,000), one key behind 10 of the clusters.
const (
	latencyClusters = 1000
	// latencyOtherKeys carry the other 990 clusters. Every key is referred to in all four forms
	// moto keeps as given (aws-facts §8), so 75 distinct references need DescribeKey. Real RDS
	// reports key ARNs in KmsKeyId, so on AWS most references cost nothing; this estate makes
	// resolution weigh more than it usually would.
	latencyOtherKeys = 24
	// latencyKeyEvery puts cluster i on the mapped key when i%latencyKeyEvery == 0.
	latencyKeyEvery = 100
	// latencyDelay is what the proxy adds to every call: a regional endpoint's round trip.
	latencyDelay = 250 * time.Millisecond
	// latencyGoal is the most the finder's wall time may be, as a share of the sequential
	// lister's.
	latencyGoal = 0.35
	// latencyEnv must be set for BenchmarkLatency to run (make bench-latency sets it): seeding
	// takes minutes, too long for `make bench`, which runs every other benchmark.
	latencyEnv = "KEYWARDEN_BENCH_LATENCY"
)

// latencyRun is what one approach cost, as the proxy saw it.
type latencyRun struct {
	calls int
	byOp  map[string]opCalls // calls, and time moto took to answer them (delay excluded)
	chain int
	wall  time.Duration
	res   scaleResult
}

func (r latencyRun) String() string {
	var ops []string
	for _, op := range slices.Sorted(maps.Keys(r.byOp)) {
		ops = append(ops, fmt.Sprintf("%s=%d (moto %v)", op, r.byOp[op].n, r.byOp[op].took.Round(time.Millisecond)))
	}
	return fmt.Sprintf("calls %4d  longest chain %3d  wall %8v  [%s]", r.calls, r.chain, r.wall.Round(time.Millisecond), strings.Join(ops, " "))
}

// BenchmarkLatency measures a blast radius at the API floor: a DelayProxy (awstest.Delay) in
// front of moto holds every call for latencyDelay, and records when each call started and
// ended. For the finder and for a plain sequential lister, in the same run against the same
// estate, it prints the calls made, the longest chain of calls that ran strictly one after
// another, and the wall time, and fails if the finder misses the goals: at most
// latencyGoal of the sequential wall time, and a longest chain of at most
// ⌈clusters/100⌉ + ⌈dependent clusters/filter limit⌉ + 2.
//
// The longest chain is computed from the proxy's record (awstest.LongestChain): calls are
// ordered by start, and a call extends a chain only if it started after the chain's last call
// had ended. Calls that overlapped never chain, so the figure is the number of round trips the
// run could not have avoided waiting for, whatever its concurrency; wall time ≥ chain × delay.
//
// moto 5.2.1 serves DescribeDBClusters and DescribeDBClusterSnapshots in one page whatever
// MaxRecords says (see BenchmarkFindAtScale); only DescribeDBInstances is paginated. Against
// AWS, both approaches would make 9 more cluster pages and 19 more snapshot pages: one after
// another for the sequential lister, and within the bound's ⌈clusters/100⌉ for the finder.
//
// The estate is seeded straight into moto, without the delay, one request at a time (moto's
// RDS is not thread-safe, see BenchmarkFindAtScale).
func BenchmarkLatency(b *testing.B) {
	if os.Getenv(latencyEnv) == "" {
		b.Skipf("seeding %d clusters takes minutes; run with %s=1 (make bench-latency)", latencyClusters, latencyEnv)
	}
	endpoint := awstest.OwnMoto(b, "MOTO_RDS_SNAPSHOT_LIMIT="+fmt.Sprint(scaleSnapshotLimit))
	seedCfg := awstest.Serial(awstest.Config(b, endpoint))
	seedCfg.RetryMaxAttempts = 1
	start := time.Now()
	keyARN, want, err := seedLatency(context.Background(), kms.NewFromConfig(seedCfg), rds.NewFromConfig(seedCfg))
	if err != nil {
		b.Fatalf("seed: %v", err)
	}
	fmt.Printf("estate: %d clusters, %d instances, %d manual + %d automated snapshots, %d keys (the mapped one behind %d clusters); seeded in %v\n",
		latencyClusters, latencyClusters*scaleInstancesPerCluster, latencyClusters, latencyClusters, latencyOtherKeys+1, len(want.clusters), time.Since(start).Round(time.Second))

	proxy := awstest.Delay(b, endpoint, latencyDelay)
	cfg := awstest.Config(b, proxy.URL)
	rdsAPI, kmsAPI := rds.NewFromConfig(cfg), kms.NewFromConfig(cfg)
	ctx := context.Background()

	measure := func(find func() (scaleResult, error)) latencyRun {
		b.Helper()
		proxy.Reset()
		t0 := time.Now()
		res, err := find()
		wall := time.Since(t0)
		if err != nil {
			b.Fatal(err)
		}
		calls := proxy.Calls()
		run := latencyRun{calls: len(calls), byOp: map[string]opCalls{}, chain: awstest.LongestChain(calls), wall: wall, res: res}
		for _, c := range calls {
			o := run.byOp[c.Op]
			o.n++
			o.took += c.End.Sub(c.Start) - latencyDelay
			run.byOp[c.Op] = o
		}
		return run
	}
	var finder, plain latencyRun
	for b.Loop() {
		finder = measure(func() (scaleResult, error) {
			// A fresh resolver, as in a cold Lambda: nothing cached.
			r, err := New(rdsAPI, kmskey.NewResolver(kmsAPI), WithoutClusterAutomatedBackups()).Find(ctx, keyARN)
			res := scaleResult{instances: len(r.Instances), snapshots: len(r.Snapshots)}
			for _, c := range r.Clusters {
				res.clusters = append(res.clusters, c.Identifier)
			}
			return res, err
		})
		plain = measure(func() (scaleResult, error) { return plainLister(ctx, rdsAPI, kmsAPI, keyARN) })
	}

	bound := ceilDiv(latencyClusters, 100) + ceilDiv(len(want.clusters), ClusterFilterLimit) + 2
	ratio := finder.wall.Seconds() / plain.wall.Seconds()
	fmt.Printf("delay per call: %v\n", latencyDelay)
	fmt.Printf("keywarden:  %v\n", finder)
	fmt.Printf("sequential: %v\n", plain)
	fmt.Printf("keywarden / sequential wall time: %.2fx (goal <= %.2fx); longest chain %d (bound %d)\n", ratio, latencyGoal, finder.chain, bound)
	b.ReportMetric(float64(finder.calls), "calls")
	b.ReportMetric(float64(finder.chain), "chain")
	b.ReportMetric(ratio, "x_sequential")

	for name, run := range map[string]latencyRun{"keywarden": finder, "sequential": plain} {
		if !slices.Equal(run.res.clusters, want.clusters) || run.res.instances != want.instances || run.res.snapshots != want.snapshots {
			b.Errorf("%s found %+v, want %+v", name, run.res, want)
		}
	}
	if ratio > latencyGoal {
		b.Errorf("keywarden took %.2fx the sequential lister's time, goal %.2fx", ratio, latencyGoal)
	}
	if finder.chain > bound {
		b.Errorf("keywarden's longest chain is %d calls, bound %d", finder.chain, bound)
	}
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }

// seedLatency creates the keys, then the clusters with their instances and snapshot (through
// seedCluster), and returns the mapped key's ARN and its radius. Cluster i is on the mapped key
// when i%latencyKeyEvery == 0 and on other key 1+i%latencyOtherKeys otherwise; the form of the
// reference rotates over key ID, key ARN, alias name and alias ARN.
func seedLatency(ctx context.Context, kmsAPI *kms.Client, rdsAPI *rds.Client) (string, scaleResult, error) {
	forms, err := seedKeyForms(ctx, kmsAPI, 1+latencyOtherKeys, "latency")
	if err != nil {
		return "", scaleResult{}, err
	}
	refOf := func(i int) (key int, ref string) {
		if i%latencyKeyEvery == 0 {
			return 0, forms[0][(i/latencyKeyEvery)%4]
		}
		k := 1 + i%latencyOtherKeys
		return k, forms[k][(i/latencyOtherKeys)%4]
	}
	engineOf := func(i int) string { return []string{"aurora-postgresql", "aurora-mysql"}[i%2] }

	var want scaleResult
	for i := range latencyClusters {
		if k, _ := refOf(i); k == 0 {
			want.clusters = append(want.clusters, scaleClusterID(i))
			want.instances += scaleInstancesPerCluster
			want.snapshots += 2 // the manual one and moto's automated one
		}
	}
	slices.Sort(want.clusters)

	err = seedClusters(ctx, rdsAPI, latencyClusters, func(i int) (string, string) {
		_, ref := refOf(i)
		return engineOf(i), ref
	})
	if err != nil {
		return "", scaleResult{}, err
	}
	return forms[0][1], want, nil
}

// plainLister is the naive way the finder is measured against, as a short script would do it:
// list every cluster, then every instance, then every cluster snapshot, page by page, then
// describe each distinct key reference that is not a key ARN, one after another, and compare.
func plainLister(ctx context.Context, rdsAPI *rds.Client, kmsAPI *kms.Client, keyARN string) (scaleResult, error) {
	var res scaleResult
	refs := map[string]string{} // reference → key ARN
	note := func(p *string) {
		if r := aws.ToString(p); r != "" {
			refs[r] = ""
		}
	}

	clusters := rds.NewDescribeDBClustersPaginator(rdsAPI, &rds.DescribeDBClustersInput{MaxRecords: maxRecords})
	clusterKey := map[string]string{} // Aurora cluster → storage key reference
	for clusters.HasMorePages() {
		page, err := clusters.NextPage(ctx)
		if err != nil {
			return res, fmt.Errorf("describe db clusters: %w", err)
		}
		for _, c := range page.DBClusters {
			note(c.KmsKeyId)
			if IsAurora(aws.ToString(c.Engine)) {
				clusterKey[aws.ToString(c.DBClusterIdentifier)] = aws.ToString(c.KmsKeyId)
			}
		}
	}
	instancesOf := map[string]int{}
	instances := rds.NewDescribeDBInstancesPaginator(rdsAPI, &rds.DescribeDBInstancesInput{MaxRecords: maxRecords})
	for instances.HasMorePages() {
		page, err := instances.NextPage(ctx)
		if err != nil {
			return res, fmt.Errorf("describe db instances: %w", err)
		}
		for _, i := range page.DBInstances {
			note(i.PerformanceInsightsKMSKeyId)
			instancesOf[aws.ToString(i.DBClusterIdentifier)]++
		}
	}
	snapshotKeys := map[string]int{} // Aurora snapshots by key reference
	snapshots := rds.NewDescribeDBClusterSnapshotsPaginator(rdsAPI, &rds.DescribeDBClusterSnapshotsInput{MaxRecords: maxRecords})
	for snapshots.HasMorePages() {
		page, err := snapshots.NextPage(ctx)
		if err != nil {
			return res, fmt.Errorf("describe db cluster snapshots: %w", err)
		}
		for _, s := range page.DBClusterSnapshots {
			note(s.KmsKeyId)
			if IsAurora(aws.ToString(s.Engine)) {
				snapshotKeys[aws.ToString(s.KmsKeyId)]++
			}
		}
	}
	for _, r := range slices.Sorted(maps.Keys(refs)) {
		if incident.IsKeyARN(r) {
			refs[r] = r
			continue
		}
		out, err := kmsAPI.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(r)})
		if err != nil {
			return res, fmt.Errorf("describe key %s: %w", r, err)
		}
		refs[r] = aws.ToString(out.KeyMetadata.Arn)
	}

	for id, ref := range clusterKey {
		if ref != "" && refs[ref] == keyARN {
			res.clusters = append(res.clusters, id)
			res.instances += instancesOf[id]
		}
	}
	slices.Sort(res.clusters)
	for ref, n := range snapshotKeys {
		if refs[ref] == keyARN {
			res.snapshots += n
		}
	}
	return res, nil
}

// TestLongestChain checks the measure BenchmarkLatency relies on. (It would live with
// awstest.LongestChain, but this change may add only delay.go to that package.)
func TestLongestChain(t *testing.T) {
	t0 := time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC)
	call := func(start, end int) awstest.Call {
		return awstest.Call{Start: t0.Add(time.Duration(start) * time.Millisecond), End: t0.Add(time.Duration(end) * time.Millisecond)}
	}
	tests := []struct {
		name  string
		calls []awstest.Call
		want  int
	}{
		{name: "none", want: 0},
		{name: "one", calls: []awstest.Call{call(0, 10)}, want: 1},
		{name: "in sequence", calls: []awstest.Call{call(20, 30), call(0, 10), call(10, 20)}, want: 3},
		{name: "all at once", calls: []awstest.Call{call(0, 10), call(1, 11), call(2, 12)}, want: 1},
		{name: "overlapping do not chain", calls: []awstest.Call{call(0, 10), call(9, 20)}, want: 1},
		{
			// A page, then two batches at once, one of which has a second page, and a
			// resolution alongside: page → batch → second page.
			name:  "fan out",
			calls: []awstest.Call{call(0, 10), call(11, 20), call(11, 21), call(21, 30), call(5, 40)},
			want:  3,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := awstest.LongestChain(tt.calls); got != tt.want {
				t.Errorf("LongestChain = %d, want %d", got, tt.want)
			}
		})
	}
}
