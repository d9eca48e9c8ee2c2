package dynamostore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/keywarden/keywarden/internal/incident"
)

// The size of the incident in done-when 1: far beyond one 400 KB item.
const (
	bigClusters  = 2000
	bigInstances = 4000
	bigSnapshots = 10000
	bigEntries   = 10000
)

// bigIncident is an incident on key with the done-when-1 dependents and timeline.
func bigIncident(key string) incident.Incident {
	inc := newIncident(key, "DisableKey", t0)
	inc.Clusters = make([]incident.Cluster, 0, bigClusters)
	for i := range bigClusters {
		id := fmt.Sprintf("cluster-%04d", i)
		lost := t0
		inc.Clusters = append(inc.Clusters, incident.Cluster{
			Identifier: id, ARN: "arn:aws:rds:us-east-1:123456789012:cluster:" + id, Engine: "aurora-postgresql",
			Status: incident.StatusAvailable, CanStop: true, Uses: []string{"storage"}, LostAccessAt: &lost,
			Members: []string{id + "-a", id + "-b"},
		})
	}
	for i := range bigInstances {
		id := fmt.Sprintf("cluster-%04d-%c", i/2, 'a'+i%2)
		inc.Instances = append(inc.Instances, incident.Instance{
			Identifier: id, ARN: "arn:aws:rds:us-east-1:123456789012:db:" + id,
			ClusterIdentifier: fmt.Sprintf("cluster-%04d", i/2), Status: incident.StatusAvailable,
		})
	}
	for i := range bigSnapshots {
		id := fmt.Sprintf("rds:cluster-%04d-2026-11-%02d-03-00", i%bigClusters, 1+i/bigClusters)
		inc.Snapshots = append(inc.Snapshots, incident.Snapshot{
			Identifier: id, ARN: "arn:aws:rds:us-east-1:123456789012:cluster-snapshot:" + id,
			ClusterIdentifier: fmt.Sprintf("cluster-%04d", i%bigClusters), Type: "automated",
		})
	}
	for i := range bigEntries - 2 { // with the opening entry and the delivery: bigEntries
		inc.Timeline = append(inc.Timeline, incident.Entry{
			ID: fmt.Sprintf("rds:%05d", i), At: t0.Add(time.Duration(i) * time.Second), Kind: incident.KindRDSEvent,
			Actor: "rds", Target: fmt.Sprintf("cluster-%04d", i%bigClusters), Result: "RDS-EVENT-0419",
			Detail: "The database cluster could not access the KMS key",
		})
	}
	inc.RecomputeDeadlines()
	return inc
}

func checkSizes(t *testing.T, what string, got incident.Incident, entries int) {
	t.Helper()
	if len(got.Clusters) != bigClusters || len(got.Instances) != bigInstances || len(got.Snapshots) != bigSnapshots ||
		len(got.Timeline) != entries || got.InstanceCount != bigInstances || got.SnapshotCount != bigSnapshots {
		t.Errorf("%s: got %d clusters, %d instances (count %d), %d snapshots (count %d), %d entries; want %d, %d, %d, %d",
			what, len(got.Clusters), len(got.Instances), got.InstanceCount, len(got.Snapshots), got.SnapshotCount, len(got.Timeline),
			bigClusters, bigInstances, bigSnapshots, entries)
	}
}

// Done-when 1: an incident far beyond DynamoDB's 400 KB item opens, updates and reads back
// complete, nothing trimmed.
func TestLargeIncident(t *testing.T) {
	if testing.Short() {
		t.Skip("needs moto: writes and reads ~26,000 items (about a minute on moto)")
	}
	e := newEnv(t, "", false)
	// The real clock: the fake one moves a second per reading and would run a batched
	// write's lease out after a hundred calls.
	s := e.store().WithClock(time.Now)
	ctx := context.Background()

	start := time.Now()
	inc := mustOpen(t, s, bigIncident(keyA))
	calls, n := e.calls.take()
	t.Logf("open: %v, %d calls %v", time.Since(start).Round(time.Millisecond), n, calls)
	checkSizes(t, "Open", inc, bigEntries)

	start = time.Now()
	got := mustGet(t, s, inc.ID)
	calls, n = e.calls.take()
	t.Logf("read: %v, %d calls %v", time.Since(start).Round(time.Millisecond), n, calls)
	if diff := cmp.Diff(inc, got); diff != "" {
		t.Fatalf("Get differs from Open's result (-open +get):\n%.3000s", diff)
	}

	// A big refresh: 1,000 instances change, 500 snapshots expire and 500 new ones appear,
	// 200 entries are added. Too much for one transaction: the batched path with its lease.
	start = time.Now()
	updated, err := s.Update(ctx, inc.ID, func(inc *incident.Incident) error {
		for i := range 1000 {
			inc.Instances[i].Status = incident.StatusStopped
			inc.Instances[i].LostKeyAccess = true
		}
		inc.Snapshots = inc.Snapshots[500:]
		for i := range 500 {
			id := fmt.Sprintf("rds:new-%04d", i)
			inc.Snapshots = append(inc.Snapshots, incident.Snapshot{Identifier: id, ARN: "arn:aws:rds:us-east-1:123456789012:cluster-snapshot:" + id, Type: "automated"})
		}
		for i := range 200 {
			inc.AddEntry(incident.Entry{ID: fmt.Sprintf("refresh:%d", i), Kind: incident.KindClusterChange, Target: inc.Instances[i].Identifier, Result: "stopped"})
		}
		return nil
	})
	if err != nil {
		t.Fatalf("big Update: %v", err)
	}
	calls, n = e.calls.take()
	t.Logf("big update: %v, %d calls %v", time.Since(start).Round(time.Millisecond), n, calls)
	checkSizes(t, "big Update", updated, bigEntries+200)
	got = mustGet(t, s, inc.ID)
	e.calls.take()
	if diff := cmp.Diff(updated, got); diff != "" {
		t.Fatalf("Get differs from the big Update's result (-update +get):\n%.3000s", diff)
	}
	if got.Version != 2 || got.Snapshots[len(got.Snapshots)-1].Identifier != "rds:new-0499" || !got.Instances[999].LostKeyAccess {
		t.Errorf("big update not read back: version %d, last snapshot %s", got.Version, got.Snapshots[len(got.Snapshots)-1].Identifier)
	}
}

// BenchmarkLargeIncident opens and reads the done-when-1 incident on moto, reporting the time
// and the DynamoDB calls of each: go test -run '^$' -bench LargeIncident -benchtime 1x.
func BenchmarkLargeIncident(b *testing.B) {
	e := newEnv(b, "", false)
	s := e.store().WithClock(time.Now)
	ctx := context.Background()
	keys := 0
	var openTime, readTime time.Duration
	var openCalls, readCalls int
	for b.Loop() {
		keys++
		in := bigIncident(fmt.Sprintf("%s-%d", keyA, keys))
		e.calls.take()
		start := time.Now()
		inc, _, err := s.Open(ctx, in, delivery(t0), nil)
		if err != nil {
			b.Fatalf("Open: %v", err)
		}
		openTime += time.Since(start)
		calls, n := e.calls.take()
		openCalls += n
		b.Logf("open: %v, %d DynamoDB calls %v", time.Since(start).Round(time.Millisecond), n, calls)

		start = time.Now()
		got, err := s.Get(ctx, inc.ID)
		if err != nil {
			b.Fatalf("Get: %v", err)
		}
		readTime += time.Since(start)
		calls, n = e.calls.take()
		readCalls += n
		b.Logf("read: %v, %d DynamoDB calls %v (%d clusters, %d instances, %d snapshots, %d entries)",
			time.Since(start).Round(time.Millisecond), n, calls, len(got.Clusters), len(got.Instances), len(got.Snapshots), len(got.Timeline))
	}
	b.ReportMetric(float64(openTime.Milliseconds())/float64(keys), "open-ms/op")
	b.ReportMetric(float64(openCalls)/float64(keys), "open-calls/op")
	b.ReportMetric(float64(readTime.Milliseconds())/float64(keys), "read-ms/op")
	b.ReportMetric(float64(readCalls)/float64(keys), "read-calls/op")
}
