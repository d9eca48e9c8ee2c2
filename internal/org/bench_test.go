package org_test

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
	"github.com/keywarden/keywarden/internal/blast"
	"github.com/keywarden/keywarden/internal/org"
)

// The organisation BenchmarkOrgRadius maps one key across (issue 13): 20 workload accounts with
// 50 Aurora clusters each, every fifth cluster on the key, which lives in a security account.
const (
	benchAccounts         = 20
	benchClustersPerAcct  = 50
	benchKeyEvery         = 5
	benchDelay            = 50 * time.Millisecond
	benchGoal             = 0.15
	benchEnv              = "KEYWARDEN_BENCH_ORG"
	benchSecurityAccount  = "100000000000"
	benchFirstWorkloadAcc = 200000000000
	benchShards           = 4
)

// shardedConfigs gives each account's configuration from the Roles of the moto process its
// resources live in.
type shardedConfigs struct {
	roles   []*org.Roles
	shardOf func(string) int
}

func (s shardedConfigs) Config(ctx context.Context, account, region string) (aws.Config, error) {
	return s.roles[s.shardOf(account)].Config(ctx, account, region)
}

type benchRun struct {
	calls int
	byOp  map[string]int
	moto  map[string]time.Duration // time moto took to answer, the delay excluded
	chain int
	wall  time.Duration
	found int
}

func (r benchRun) String() string {
	var ops []string
	for _, op := range slices.Sorted(maps.Keys(r.byOp)) {
		ops = append(ops, fmt.Sprintf("%s=%d (moto %v)", op, r.byOp[op], r.moto[op].Round(time.Millisecond)))
	}
	return fmt.Sprintf("calls %4d  longest chain %3d  wall %8v  clusters found %d  [%s]", r.calls, r.chain, r.wall.Round(time.Millisecond), r.found, strings.Join(ops, " "))
}

// BenchmarkOrgRadius maps one key across benchAccounts accounts of benchClustersPerAcct Aurora
// clusters each, through DelayProxies (awstest.Delay) that hold every AWS call — STS's
// AssumeRole included — for benchDelay. It runs keywarden's organisation finder (accounts
// concurrently, org.DefaultConcurrency at a time) and, in the same run against the same estate, a
// sequential peer that goes account by account making one call at a time (the same calls, through
// an HTTP client that lets one request through at a time: awstest.Serial), as a tool that runs
// one account after another does, and prints API calls, the longest chain of calls that ran one after another, and wall time for
// both. It fails if keywarden's wall time is above benchGoal of the peer's, or if either misses a
// cluster. Seeding takes a while: it runs only with KEYWARDEN_BENCH_ORG set (make bench-org).
func BenchmarkOrgRadius(b *testing.B) {
	if os.Getenv(benchEnv) == "" {
		b.Skipf("set %s=1 to run (make bench-org): seeding %d accounts takes a while", benchEnv, benchAccounts)
	}
	// moto answers one request at a time per process, and spends a few milliseconds of CPU on
	// each (60 ms on a DescribeDBClusters of 50 clusters here); AWS's endpoints serve accounts in
	// parallel. The accounts are spread over benchShards moto processes, each with its own
	// DelayProxy, so that moto's own work is not one queue for all 20 accounts. Each process is
	// its own STS too: an account's role is assumed where its resources are.
	type shard struct {
		base  aws.Config // straight to moto, for seeding
		proxy *awstest.DelayProxy
	}
	shards := make([]shard, benchShards)
	for i := range shards {
		endpoint := awstest.OwnMoto(b)
		shards[i] = shard{base: awstest.Config(b, endpoint), proxy: awstest.Delay(b, endpoint, benchDelay)}
	}
	shardOf := func(account string) int {
		var n int
		fmt.Sscan(account, &n)
		return n % benchShards
	}
	ctx := context.Background()
	as := func(account string) aws.Config {
		cfg, err := org.NewRoles(shards[shardOf(account)].base, "seed").Config(ctx, account, "")
		if err != nil {
			b.Fatal(err)
		}
		return cfg
	}
	key, err := kms.NewFromConfig(as(benchSecurityAccount)).CreateKey(ctx, &kms.CreateKeyInput{})
	if err != nil {
		b.Fatal(err)
	}
	keyARN := aws.ToString(key.KeyMetadata.Arn)
	accounts := []string{benchSecurityAccount}
	seedStart := time.Now()
	want := 0
	for a := range benchAccounts {
		account := fmt.Sprint(benchFirstWorkloadAcc + a)
		accounts = append(accounts, account)
		cfg := as(account)
		api := rds.NewFromConfig(cfg)
		own, err := kms.NewFromConfig(cfg).CreateKey(ctx, &kms.CreateKeyInput{})
		if err != nil {
			b.Fatal(err)
		}
		for c := range benchClustersPerAcct {
			// The account's own key by ID, which only that account's KMS resolves; the
			// organisation's key by ARN, as RDS requires for another account's key.
			kmsKey := own.KeyMetadata.KeyId
			if c%benchKeyEvery == 0 {
				kmsKey = aws.String(keyARN)
				want++
			}
			if _, err := api.CreateDBCluster(ctx, &rds.CreateDBClusterInput{
				DBClusterIdentifier: aws.String(fmt.Sprintf("db-%d-%02d", a, c)), Engine: aws.String("aurora-postgresql"),
				StorageEncrypted: aws.Bool(true), KmsKeyId: kmsKey,
				MasterUsername: aws.String("admin_user"), MasterUserPassword: aws.String("not-a-secret-123"),
			}); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Logf("seeded %d accounts × %d clusters over %d moto processes in %v", benchAccounts, benchClustersPerAcct, benchShards, time.Since(seedStart).Round(time.Second))

	run := func(concurrency int, oneCallAtATime bool) benchRun {
		configs := shardedConfigs{shardOf: shardOf}
		for _, sh := range shards {
			sh.proxy.Reset()
			cfg := awstest.Config(b, sh.proxy.URL)
			if oneCallAtATime {
				cfg = awstest.Serial(cfg)
			}
			// A fresh Roles each run: every account's AssumeRole is paid, as in a cold Lambda.
			configs.roles = append(configs.roles, org.NewRoles(cfg, org.ReadRoleName))
		}
		dir, err := org.NewDirectory(accounts, nil)
		if err != nil {
			b.Fatal(err)
		}
		f := org.NewFinder(dir, configs, org.BlastFinder(blast.WithoutClusterAutomatedBackups()), org.WithConcurrency(concurrency))
		start := time.Now()
		r, err := f.Find(ctx, keyARN)
		wall := time.Since(start)
		if err != nil {
			b.Fatal(err)
		}
		if r.Incomplete {
			b.Fatalf("radius incomplete: %v", r.AccountsFailed)
		}
		var calls []awstest.Call
		for _, sh := range shards {
			calls = append(calls, sh.proxy.Calls()...)
		}
		out := benchRun{calls: len(calls), byOp: map[string]int{}, moto: map[string]time.Duration{}, chain: awstest.LongestChain(calls), wall: wall, found: len(r.Clusters)}
		for _, c := range calls {
			out.byOp[c.Op]++
			out.moto[c.Op] += c.End.Sub(c.Start) - benchDelay
		}
		return out
	}

	b.ResetTimer()
	for b.Loop() {
		keywarden := run(org.DefaultConcurrency, false)
		sequential := run(1, true)
		ratio := float64(keywarden.wall) / float64(sequential.wall)
		var motoBusy time.Duration // what moto spent answering the peer's calls, one at a time
		for _, d := range sequential.moto {
			motoBusy += d
		}
		b.Logf("\n%d accounts × %d clusters, delay per call %v\nkeywarden:  %s\nsequential: %s\nkeywarden / sequential wall time: %.2fx (goal <= %.2fx)\n"+
			"at the API floor (longest chain × delay): %v / %v = %.2fx; moto's own work, one call at a time: %v",
			benchAccounts, benchClustersPerAcct, benchDelay, keywarden, sequential, ratio, benchGoal,
			time.Duration(keywarden.chain)*benchDelay, time.Duration(sequential.chain)*benchDelay,
			float64(keywarden.chain)/float64(sequential.chain), motoBusy.Round(time.Millisecond))
		b.ReportMetric(ratio, "wall-ratio")
		b.ReportMetric(float64(keywarden.calls), "calls")
		if keywarden.found != want || sequential.found != want {
			b.Errorf("clusters found: keywarden %d, sequential %d, want %d", keywarden.found, sequential.found, want)
		}
		if ratio > benchGoal {
			b.Errorf("keywarden took %.2fx the sequential peer's wall time, goal <= %.2fx", ratio, benchGoal)
		}
	}
}
