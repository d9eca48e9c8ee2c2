package blast

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/rds"
	"github.com/google/go-cmp/cmp"

	"github.com/keywarden/keywarden/internal/awstest"
	"github.com/keywarden/keywarden/internal/kmskey"
)

// The estate BenchmarkFindAtScale maps one key in: issue 2 asks for 2,000 clusters, 4,000
// instances and 2,000 snapshots. moto adds one automated snapshot per cluster on its own, so
// the snapshot listing holds twice scaleClusters.
const (
	scaleClusters            = 2000
	scaleInstancesPerCluster = 2
	scaleKeys                = 40 // customer-managed keys the clusters are spread over
	// scaleNeptuneEvery makes every 97th cluster Neptune (21 in all, one on the mapped key), which
	// DescribeDBClusters returns alongside Aurora and both approaches must leave out.
	scaleNeptuneEvery = 97
	// scaleSeedWorkers bounds the seeding goroutines. moto takes seeding requests one at a
	// time (see BenchmarkFindAtScale), so more workers would only queue.
	scaleSeedWorkers = 8
	// scaleSnapshotLimit lifts moto's quota of 1,000 cluster snapshots (MOTO_RDS_SNAPSHOT_LIMIT),
	// which counts moto's automated snapshots too.
	scaleSnapshotLimit = 100000
)

// BenchmarkFindAtScale maps one key in an account of 2,000 clusters, 4,000 instances and 2,000
// manual snapshots, and reports the API calls each approach makes (api_calls/op, rds_calls/op,
// kms_calls/op) next to its wall time (ns/op):
//
//   - finder: Find with a fresh resolver every iteration, as in a cold Lambda.
//   - finder-warm: Find with one resolver, warmed before timing, as in a warm Lambda.
//   - plain-sequential: the naive way, written here — list clusters, instances and snapshots
//     one listing after the other, then DescribeKey every cluster's and snapshot's key
//     reference with no cache, then filter.
//
// All three must find the same clusters. The estate lives in a moto of its own: it needs a
// raised snapshot quota, and 8,000 resources in the package's shared moto would slow every
// other test and benchmark that lists RDS. moto 5.2.1 answers DescribeDBClusters and
// DescribeDBClusterSnapshots in one page whatever MaxRecords says (only DescribeDBInstances is
// paginated), so RDS call counts here are lower than real RDS's, which serves at most 100
// records a page: that adds 19 cluster pages and 39 snapshot pages to every approach alike.
func BenchmarkFindAtScale(b *testing.B) {
	endpoint := awstest.OwnMoto(b, "MOTO_RDS_SNAPSHOT_LIMIT="+fmt.Sprint(scaleSnapshotLimit))
	cfg := awstest.Config(b, endpoint)
	seedStart := time.Now()
	// moto's RDS is not thread-safe: a create that walks the instances while another adds one
	// fails with HTTP 500 (OrderedDict mutated during iteration), sometimes after it has taken
	// effect, so a retry is not safe either. Seeding requests reach moto one at a time and are
	// not retried; the workers only overlap the client side.
	seedCfg := awstest.Serial(cfg)
	seedCfg.RetryMaxAttempts = 1
	est, err := seedScale(context.Background(), kms.NewFromConfig(seedCfg), rds.NewFromConfig(seedCfg))
	if err != nil {
		b.Fatalf("seed: %v", err)
	}
	// A parent benchmark's log shows only with -v, so each sub-benchmark repeats this line.
	seeded := fmt.Sprintf("estate: %d clusters (%d Neptune), %d instances, %d manual snapshots over %d keys, seeded in %v",
		scaleClusters, est.neptune, est.instances, est.manualSnapshots, scaleKeys, time.Since(seedStart).Round(time.Millisecond))

	rdsCalls, kmsCalls := &apiCalls{}, &apiCalls{}
	rdsClient := rds.NewFromConfig(countCalls(cfg, rdsCalls))
	kmsClient := kms.NewFromConfig(countCalls(cfg, kmsCalls))
	ctx := context.Background()

	fromRadius := func(r Radius) scaleResult {
		out := scaleResult{instances: len(r.Instances), snapshots: len(r.Snapshots)}
		for _, c := range r.Clusters {
			out.clusters = append(out.clusters, c.Identifier)
		}
		return out
	}
	warm := New(rdsClient, kmskey.NewResolver(kmsClient), WithoutClusterAutomatedBackups())

	for _, bm := range []struct {
		name string
		// warmUp runs find once before timing and counting start.
		warmUp bool
		find   func() (scaleResult, error)
	}{
		{name: "finder", find: func() (scaleResult, error) {
			r, err := New(rdsClient, kmskey.NewResolver(kmsClient), WithoutClusterAutomatedBackups()).Find(ctx, est.keyARN)
			return fromRadius(r), err
		}},
		{name: "finder-warm", warmUp: true, find: func() (scaleResult, error) {
			r, err := warm.Find(ctx, est.keyARN)
			return fromRadius(r), err
		}},
		{name: "plain-sequential", find: func() (scaleResult, error) {
			return plainSequential(ctx, rdsClient, kmsClient, est.keyARN)
		}},
	} {
		b.Run(bm.name, func(b *testing.B) {
			if bm.warmUp {
				if _, err := bm.find(); err != nil {
					b.Fatalf("warm up: %v", err)
				}
			}
			rdsCalls.reset()
			kmsCalls.reset()
			var got scaleResult
			for b.Loop() {
				var err error
				if got, err = bm.find(); err != nil {
					b.Fatal(err)
				}
			}
			if diff := cmp.Diff(est.want, got, cmp.AllowUnexported(scaleResult{})); diff != "" {
				b.Errorf("radius mismatch (-want +got):\n%s", diff)
			}
			n := float64(b.N)
			b.ReportMetric(float64(rdsCalls.total()+kmsCalls.total())/n, "api_calls/op")
			b.ReportMetric(float64(rdsCalls.total())/n, "rds_calls/op")
			b.ReportMetric(float64(kmsCalls.total())/n, "kms_calls/op")
			b.ReportMetric(float64(len(got.clusters)), "clusters")
			b.Log(seeded)
			b.Logf("calls over %d iterations: rds %s; kms %s", b.N, rdsCalls, kmsCalls)
		})
	}
}

// scaleResult is what both approaches must agree on: the Aurora clusters on the key, sorted,
// and how many instances and snapshots depend on it.
type scaleResult struct {
	clusters             []string
	instances, snapshots int
}

// scaleEstate is what seedScale built, and the radius of the key the benchmark maps.
type scaleEstate struct {
	keyARN                              string
	want                                scaleResult
	neptune, instances, manualSnapshots int
}

// seedScale creates the keys and then, scaleSeedWorkers at a time, each cluster with its
// instances and one manual snapshot. Cluster i is on key i%scaleKeys, named in the form
// (i/scaleKeys)%4 — key ID, key ARN, alias name, alias ARN — so every key is referred to in all
// four forms, which moto stores as given (aws-facts §8). The mapped key is key 0.
func seedScale(ctx context.Context, kmsAPI *kms.Client, rdsAPI *rds.Client) (scaleEstate, error) {
	forms, err := seedKeyForms(ctx, kmsAPI, scaleKeys, "scale")
	if err != nil {
		return scaleEstate{}, err
	}
	est := scaleEstate{keyARN: forms[0][1]}
	engineOf := func(i int) string {
		switch {
		case i%scaleNeptuneEvery == 0:
			return "neptune"
		case i%2 == 0:
			return "aurora-postgresql"
		default:
			return "aurora-mysql"
		}
	}
	for i := range scaleClusters {
		engine := engineOf(i)
		if engine == "neptune" {
			est.neptune++
		}
		est.instances += scaleInstancesPerCluster
		est.manualSnapshots++
		if i%scaleKeys == 0 && engine != "neptune" {
			est.want.clusters = append(est.want.clusters, scaleClusterID(i))
			est.want.instances += scaleInstancesPerCluster
			est.want.snapshots += 2 // the manual one and moto's automated one
		}
	}
	slices.Sort(est.want.clusters)

	err = seedClusters(ctx, rdsAPI, scaleClusters, func(i int) (string, string) {
		return engineOf(i), forms[i%scaleKeys][(i/scaleKeys)%4]
	})
	if err != nil {
		return scaleEstate{}, err
	}
	return est, nil
}

// seedKeyForms creates n keys, each with an alias, and returns every key's four reference
// forms: key ID, key ARN, alias name and alias ARN (RDS keeps whichever form it was given).
func seedKeyForms(ctx context.Context, kmsAPI *kms.Client, n int, prefix string) ([][4]string, error) {
	forms := make([][4]string, n)
	for k := range forms {
		out, err := kmsAPI.CreateKey(ctx, &kms.CreateKeyInput{Description: aws.String("blast " + prefix + " benchmark")})
		if err != nil {
			return nil, fmt.Errorf("create key: %w", err)
		}
		id, keyARN := aws.ToString(out.KeyMetadata.KeyId), aws.ToString(out.KeyMetadata.Arn)
		alias := fmt.Sprintf("alias/%s-%02d", prefix, k)
		if _, err := kmsAPI.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String(alias), TargetKeyId: aws.String(id)}); err != nil {
			return nil, fmt.Errorf("create alias %s: %w", alias, err)
		}
		forms[k] = [4]string{id, keyARN, alias, "arn:aws:kms:" + awstest.Region + ":" + awstest.AccountID + ":" + alias}
	}
	return forms, nil
}

// seedClusters creates clusters 0…n-1 with seedCluster, scaleSeedWorkers at a time; of(i)
// gives cluster i's engine and key reference. The first error stops the rest.
func seedClusters(ctx context.Context, rdsAPI *rds.Client, n int, of func(i int) (engine, keyRef string)) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range scaleSeedWorkers {
		wg.Go(func() {
			for i := range jobs {
				engine, ref := of(i)
				if err := seedCluster(ctx, rdsAPI, i, engine, ref); err != nil {
					cancel(err)
				}
			}
		})
	}
	for i := range n {
		select {
		case jobs <- i:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
	}
	close(jobs)
	wg.Wait()
	return context.Cause(ctx)
}

func scaleClusterID(i int) string { return fmt.Sprintf("scale-%04d", i) }

// seedCluster creates cluster i encrypted with keyRef, its instances and a manual snapshot.
func seedCluster(ctx context.Context, api *rds.Client, i int, engine, keyRef string) error {
	id := scaleClusterID(i)
	in := &rds.CreateDBClusterInput{
		DBClusterIdentifier: aws.String(id), Engine: aws.String(engine),
		StorageEncrypted: aws.Bool(true), KmsKeyId: aws.String(keyRef),
	}
	if engine != "neptune" {
		in.MasterUsername, in.MasterUserPassword = aws.String("admin_user"), aws.String("not-a-secret-123")
	}
	if _, err := api.CreateDBCluster(ctx, in); err != nil {
		return fmt.Errorf("create cluster %s: %w", id, err)
	}
	for n := 1; n <= scaleInstancesPerCluster; n++ {
		if _, err := api.CreateDBInstance(ctx, &rds.CreateDBInstanceInput{
			DBInstanceIdentifier: aws.String(fmt.Sprintf("%s-%d", id, n)), DBClusterIdentifier: aws.String(id),
			Engine: aws.String(engine), DBInstanceClass: aws.String("db.r6g.large"),
		}); err != nil {
			return fmt.Errorf("create instance %s-%d: %w", id, n, err)
		}
	}
	if _, err := api.CreateDBClusterSnapshot(ctx, &rds.CreateDBClusterSnapshotInput{
		DBClusterIdentifier: aws.String(id), DBClusterSnapshotIdentifier: aws.String(id + "-snap"),
	}); err != nil {
		return fmt.Errorf("create snapshot of %s: %w", id, err)
	}
	return nil
}

// plainSequential is the approach the finder is measured against: each listing after the
// other, and one DescribeKey per key reference met, however often the same reference recurs.
func plainSequential(ctx context.Context, rdsAPI *rds.Client, kmsAPI *kms.Client, keyARN string) (scaleResult, error) {
	var res scaleResult
	describe := func(ref *string) (string, error) {
		if aws.ToString(ref) == "" {
			return "", nil
		}
		out, err := kmsAPI.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: ref})
		if err != nil {
			return "", fmt.Errorf("describe key %s: %w", aws.ToString(ref), err)
		}
		return aws.ToString(out.KeyMetadata.Arn), nil
	}

	onKey := map[string]bool{}
	clusters := rds.NewDescribeDBClustersPaginator(rdsAPI, &rds.DescribeDBClustersInput{MaxRecords: maxRecords})
	for clusters.HasMorePages() {
		page, err := clusters.NextPage(ctx)
		if err != nil {
			return res, fmt.Errorf("describe db clusters: %w", err)
		}
		for _, c := range page.DBClusters {
			a, err := describe(c.KmsKeyId)
			if err != nil {
				return res, err
			}
			if a == keyARN && IsAurora(aws.ToString(c.Engine)) {
				onKey[aws.ToString(c.DBClusterIdentifier)] = true
			}
		}
	}
	instances := rds.NewDescribeDBInstancesPaginator(rdsAPI, &rds.DescribeDBInstancesInput{MaxRecords: maxRecords})
	for instances.HasMorePages() {
		page, err := instances.NextPage(ctx)
		if err != nil {
			return res, fmt.Errorf("describe db instances: %w", err)
		}
		for _, i := range page.DBInstances {
			if onKey[aws.ToString(i.DBClusterIdentifier)] {
				res.instances++
			}
		}
	}
	snapshots := rds.NewDescribeDBClusterSnapshotsPaginator(rdsAPI, &rds.DescribeDBClusterSnapshotsInput{MaxRecords: maxRecords})
	for snapshots.HasMorePages() {
		page, err := snapshots.NextPage(ctx)
		if err != nil {
			return res, fmt.Errorf("describe db cluster snapshots: %w", err)
		}
		for _, s := range page.DBClusterSnapshots {
			a, err := describe(s.KmsKeyId)
			if err != nil {
				return res, err
			}
			if a == keyARN && IsAurora(aws.ToString(s.Engine)) {
				res.snapshots++
			}
		}
	}
	res.clusters = slices.Sorted(maps.Keys(onKey))
	return res, nil
}

// apiCalls counts the requests an AWS client sends, by operation, and how long each operation
// took to answer (time to the response headers: moto builds the whole response first, so this is
// mostly its processing time). Requests are counted as they go out, retries included, because
// each one is a call against the account's API quotas.
type apiCalls struct {
	mu   sync.Mutex
	byOp map[string]opCalls
}

type opCalls struct {
	n    int
	took time.Duration
}

func (c *apiCalls) add(op string, took time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byOp == nil {
		c.byOp = map[string]opCalls{}
	}
	o := c.byOp[op]
	o.n++
	o.took += took
	c.byOp[op] = o
}

func (c *apiCalls) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.byOp = nil
}

func (c *apiCalls) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, o := range c.byOp {
		n += o.n
	}
	return n
}

// String lists the counts and summed answer times as "Op=n (time)" in operation order.
func (c *apiCalls) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var parts []string
	for _, op := range slices.Sorted(maps.Keys(c.byOp)) {
		o := c.byOp[op]
		parts = append(parts, fmt.Sprintf("%s=%d (%v)", op, o.n, o.took.Round(time.Millisecond)))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " ")
}

// countCalls returns cfg with an HTTP client that records every request in calls.
func countCalls(cfg aws.Config, calls *apiCalls) aws.Config {
	next := cfg.HTTPClient
	if next == nil {
		next = http.DefaultClient
	}
	cfg.HTTPClient = countingHTTP{next: next, calls: calls}
	return cfg
}

type countingHTTP struct {
	next  aws.HTTPClient
	calls *apiCalls
}

func (c countingHTTP) Do(req *http.Request) (*http.Response, error) {
	op, err := operationOf(req)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	resp, err := c.next.Do(req)
	c.calls.add(op, time.Since(start))
	return resp, err
}

// operationOf names the operation a request calls. JSON-protocol services such as KMS name it
// in X-Amz-Target ("TrentService.DescribeKey"); Query-protocol services such as RDS send it as
// the Action form value in the body, which is read and put back.
func operationOf(req *http.Request) (string, error) {
	if t := req.Header.Get("X-Amz-Target"); t != "" {
		return t[strings.LastIndex(t, ".")+1:], nil
	}
	if req.Body == nil || req.Body == http.NoBody {
		return "unknown", nil
	}
	body, err := io.ReadAll(req.Body)
	req.Body.Close()
	if err != nil {
		return "", fmt.Errorf("read request body: %w", err)
	}
	req.Body = io.NopCloser(bytes.NewReader(body))
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	form, err := url.ParseQuery(string(body))
	if err != nil || form.Get("Action") == "" {
		return "unknown", nil
	}
	return form.Get("Action"), nil
}
