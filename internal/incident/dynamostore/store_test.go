package dynamostore

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/keywarden/keywarden/internal/incident"
)

func TestCreateTableIdempotent(t *testing.T) {
	e := newEnv(t, "", false)
	ctx := context.Background()
	if err := CreateTable(ctx, e.db, e.table); err != nil {
		t.Fatalf("CreateTable on an existing table: got %v, want nil", err)
	}
	ttl, err := e.db.DescribeTimeToLive(ctx, &dynamodb.DescribeTimeToLiveInput{TableName: aws.String(e.table)})
	if err != nil {
		t.Fatalf("DescribeTimeToLive: %v", err)
	}
	if got := aws.ToString(ttl.TimeToLiveDescription.AttributeName); got != AttrExpiresAt {
		t.Errorf("TTL attribute: got %q, want %q", got, AttrExpiresAt)
	}
	desc, err := e.db.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(e.table)})
	if err != nil {
		t.Fatalf("DescribeTable: %v", err)
	}
	var keys []string
	for _, k := range desc.Table.KeySchema {
		keys = append(keys, aws.ToString(k.AttributeName)+" "+string(k.KeyType))
	}
	if diff := cmp.Diff([]string{"pk HASH", "sk RANGE"}, keys); diff != "" {
		t.Errorf("key schema (-want +got):\n%s", diff)
	}
}

func TestOpenCreates(t *testing.T) {
	e := newEnv(t, "", false)
	s := e.store()
	ctx := context.Background()
	in := newIncident(keyA, "DisableKey", t0)
	d := delivery(t0, "evt-open")

	got, opened, err := s.Open(ctx, in, d, nil)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if !opened {
		t.Errorf("opened: got false, want true")
	}
	if !regexp.MustCompile(`^KW-20261128-[0-9a-f]{6}$`).MatchString(got.ID) {
		t.Errorf("ID: got %q, want KW-20261128-xxxxxx", got.ID)
	}
	want := in
	want.ID = got.ID
	want.Version = 1
	want.State = incident.StateOpen
	want.Deliveries = 1
	want.OpenedAt = t0.Add(time.Second)
	want.UpdatedAt = want.OpenedAt
	want.TimelineSeq = 2
	// Nothing is in Slack yet: the message and both entries are pending deliveries.
	want.SlackDelivery = incident.SlackDelivery{State: incident.DeliveryPending, Pending: 3}
	want.Timeline = []incident.Entry{
		{ID: "opened:DisableKey", Seq: 1, At: t0, Kind: incident.KindState, Actor: "alice", Result: "open", Detail: "DisableKey"},
		{ID: "delivery:evt-open", Seq: 2, At: t0, Kind: incident.KindDelivery, Actor: "alice", Source: "evt-open", Detail: "DisableKey"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Open (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want, mustGet(t, s, got.ID)); diff != "" {
		t.Errorf("Get (-want +got):\n%s", diff)
	}
	open, err := s.OpenFor(ctx, keyA)
	if err != nil {
		t.Fatalf("OpenFor: %v", err)
	}
	if diff := cmp.Diff(want, open); diff != "" {
		t.Errorf("OpenFor (-want +got):\n%s", diff)
	}
	if _, err := s.OpenFor(ctx, keyB); !errors.Is(err, incident.ErrNotFound) {
		t.Errorf("OpenFor(other key): got %v, want ErrNotFound", err)
	}
	if _, err := s.Get(ctx, "KW-20261128-000000"); !errors.Is(err, incident.ErrNotFound) {
		t.Errorf("Get(unknown): got %v, want ErrNotFound", err)
	}
	items := e.partition(t, got.ID)
	var sks []string
	for sk, it := range items {
		sks = append(sks, sk)
		if _, ok := it[AttrExpiresAt]; ok {
			t.Errorf("item %s has a TTL: incident items are the audit trail", sk)
		}
	}
	wantSKs := []string{"cluster#orders", "entry#delivery:evt-open", "entry#opened:DisableKey", "head"}
	if diff := cmp.Diff(wantSKs, sks, cmpopts.SortSlices(func(a, b string) bool { return a < b })); diff != "" {
		t.Errorf("items (-want +got):\n%s", diff)
	}
}

func TestOpenRejects(t *testing.T) {
	s := newEnv(t, "", false).store()
	tests := []struct {
		name string
		inc  incident.Incident
	}{
		{"no key ARN", incident.Incident{Trigger: "DisableKey"}},
		{"closed state", incident.Incident{KeyARN: keyA, State: incident.StateResolved}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := s.Open(context.Background(), tt.inc, incident.Entry{}, nil); err == nil {
				t.Errorf("Open: got nil error, want one")
			}
		})
	}
}

// A second delivery for a key with an open incident adds to that incident: a redelivery of
// the same event changes nothing, a second loss event is recorded and folded.
func TestOpenFoldsDeliveries(t *testing.T) {
	deletion := t0.Add(10 * 24 * time.Hour)
	tests := []struct {
		name           string
		sameEvent      bool
		fold           func(*incident.Incident)
		wantDeliveries int
		wantVersion    int64
		wantState      incident.KeyState
		wantDelete     *time.Time
	}{
		{
			name:           "same event twice",
			sameEvent:      true,
			fold:           func(inc *incident.Incident) { inc.KeyState = "Enabled" }, // must not run
			wantDeliveries: 1,
			wantVersion:    1,
			wantState:      incident.KeyStateDisabled,
		},
		{
			name: "two different loss events",
			fold: func(inc *incident.Incident) {
				inc.KeyState = incident.KeyStatePendingDeletion
				inc.KeyDeletionDate = &deletion
				inc.RecomputeDeadlines()
			},
			wantDeliveries: 2,
			wantVersion:    2,
			wantState:      incident.KeyStatePendingDeletion,
			wantDelete:     &deletion,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newEnv(t, "", false).store()
			ctx := context.Background()
			d1 := delivery(t0)
			first, _, err := s.Open(ctx, newIncident(keyA, "DisableKey", t0), d1, nil)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			at := t0.Add(time.Minute)
			d2 := delivery(at)
			if tt.sameEvent {
				d2 = d1
			}
			got, opened, err := s.Open(ctx, newIncident(keyA, "ScheduleKeyDeletion", at), d2, tt.fold)
			if err != nil {
				t.Fatalf("second Open: %v", err)
			}
			if opened || got.ID != first.ID {
				t.Errorf("second Open: opened %v, ID %s, want false, the first incident %s", opened, got.ID, first.ID)
			}
			if got.Deliveries != tt.wantDeliveries || got.Version != tt.wantVersion {
				t.Errorf("Deliveries, Version: got %d, %d, want %d, %d", got.Deliveries, got.Version, tt.wantDeliveries, tt.wantVersion)
			}
			if n := len(got.Timeline); n != 1+tt.wantDeliveries {
				t.Errorf("timeline: %d entries, want %d", n, 1+tt.wantDeliveries)
			}
			if got.Trigger != "DisableKey" {
				t.Errorf("Trigger: got %q, want the opening event DisableKey", got.Trigger)
			}
			if got.KeyState != tt.wantState || !cmp.Equal(got.KeyDeletionDate, tt.wantDelete) {
				t.Errorf("key: got %s %v, want %s %v", got.KeyState, got.KeyDeletionDate, tt.wantState, tt.wantDelete)
			}
			if diff := cmp.Diff(got, mustGet(t, s, first.ID)); diff != "" {
				t.Errorf("stored incident differs from Open's result (-open +stored):\n%s", diff)
			}
			if all, err := s.List(ctx); err != nil || len(all) != 1 {
				t.Errorf("List: got %d incidents, %v, want 1", len(all), err)
			}
		})
	}
}

// Done-when 5: concurrent deliveries for one key make one incident that counts each event once.
func TestOpenRace(t *testing.T) {
	const n = 8
	tests := []struct {
		name           string
		sameEvent      bool
		wantDeliveries int
	}{
		{"different events", false, n},
		{"the same event", true, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newEnv(t, "", false).store()
			ctx := context.Background()
			type result struct {
				inc    incident.Incident
				opened bool
				err    error
			}
			results := make([]result, n)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					<-start
					at := t0.Add(time.Duration(i) * time.Millisecond)
					d := delivery(at)
					if tt.sameEvent {
						d = delivery(t0, "evt-same")
					}
					inc, opened, err := s.Open(ctx, newIncident(keyA, "DisableKey", at), d, nil)
					results[i] = result{inc, opened, err}
				})
			}
			close(start)
			wg.Wait()

			var openedBy []int
			for i, r := range results {
				if r.err != nil {
					t.Fatalf("Open #%d: %v", i, r.err)
				}
				if r.opened {
					openedBy = append(openedBy, i)
				}
				if r.inc.ID != results[0].inc.ID {
					t.Errorf("Open #%d: incident %s, #0 got %s", i, r.inc.ID, results[0].inc.ID)
				}
			}
			if len(openedBy) != 1 {
				t.Errorf("opened=true for callers %v, want exactly one", openedBy)
			}
			got := mustGet(t, s, results[0].inc.ID)
			deliveries := 0
			for _, e := range got.Timeline {
				if e.Kind == incident.KindDelivery {
					deliveries++
				}
			}
			if got.Deliveries != tt.wantDeliveries || deliveries != tt.wantDeliveries || got.Version != int64(tt.wantDeliveries) {
				t.Errorf("Deliveries, delivery entries, Version: got %d, %d, %d, want %d each", got.Deliveries, deliveries, got.Version, tt.wantDeliveries)
			}
			if all, err := s.List(ctx); err != nil || len(all) != 1 {
				t.Errorf("List: got %d incidents, %v, want 1", len(all), err)
			}
		})
	}
}

// Two Updates that both read version 1 before either writes: one write loses its condition,
// re-reads and applies its change again on version 2; both changes land.
func TestUpdateRetriesOnConflict(t *testing.T) {
	s := newEnv(t, "", false).store()
	ctx := context.Background()
	inc := mustOpen(t, s, newIncident(keyA, "DisableKey", t0))

	var (
		bothRead sync.WaitGroup
		mu       sync.Mutex
		calls    = map[string]int{}
		errs     = make([]error, 2)
		wg       sync.WaitGroup
	)
	bothRead.Add(2)
	for i, who := range []string{"alice", "bob"} {
		wg.Go(func() {
			_, errs[i] = s.Update(ctx, inc.ID, func(inc *incident.Incident) error {
				mu.Lock()
				calls[who]++
				first := calls[who] == 1
				mu.Unlock()
				if first {
					bothRead.Done()
					bothRead.Wait()
				}
				inc.AddEntry(incident.Entry{At: t0, Kind: incident.KindNote, Actor: who, Detail: "looking"})
				return nil
			})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Update #%d: %v", i, err)
		}
	}
	if got := calls["alice"] + calls["bob"]; got != 3 {
		t.Errorf("mutate calls: got %v, want 3 (one retry)", calls)
	}
	got := mustGet(t, s, inc.ID)
	var actors []string
	var seqs []int64
	for _, e := range got.Timeline {
		seqs = append(seqs, e.Seq)
		if e.Kind == incident.KindNote {
			actors = append(actors, e.Actor)
		}
	}
	if diff := cmp.Diff([]string{"alice", "bob"}, actors, cmpopts.SortSlices(func(a, b string) bool { return a < b })); diff != "" {
		t.Errorf("notes (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]int64{1, 2, 3, 4}, seqs, cmpopts.SortSlices(func(a, b int64) bool { return a < b })); diff != "" {
		t.Errorf("seqs (-want +got):\n%s", diff)
	}
	if got.Version != 3 {
		t.Errorf("Version: got %d, want 3", got.Version)
	}
}

func TestUpdate(t *testing.T) {
	errNo := errors.New("not allowed")
	errAny := errors.New("any error")
	tests := []struct {
		name        string
		mutate      func(*incident.Incident) error
		wantErr     error // nil: no error; errAny: any error
		wantVersion int64
		check       func(t *testing.T, got incident.Incident)
	}{
		{
			name: "state change",
			mutate: func(inc *incident.Incident) error {
				inc.State = incident.StateRemediating
				return nil
			},
			wantVersion: 2,
			check: func(t *testing.T, got incident.Incident) {
				if got.State != incident.StateRemediating || got.ClosedAt != nil {
					t.Errorf("State, ClosedAt: got %s, %v, want remediating, nil", got.State, got.ClosedAt)
				}
				if !got.UpdatedAt.After(got.OpenedAt) {
					t.Errorf("UpdatedAt %v not after OpenedAt %v", got.UpdatedAt, got.OpenedAt)
				}
			},
		},
		{
			name:        "no change writes nothing",
			mutate:      func(*incident.Incident) error { return nil },
			wantVersion: 1,
		},
		{
			name: "re-adding a stored entry writes nothing",
			mutate: func(inc *incident.Incident) error {
				inc.AddEntry(inc.Timeline[0])
				inc.Timeline[0].Detail = "edited" // entries never change
				return nil
			},
			wantVersion: 1,
		},
		{
			name:        "mutate error aborts",
			mutate:      func(inc *incident.Incident) error { inc.State = incident.StateLost; return errNo },
			wantErr:     errNo,
			wantVersion: 1,
		},
		{
			name:        "the key ARN is not the caller's to change",
			mutate:      func(inc *incident.Incident) error { inc.KeyARN = keyB; return nil },
			wantErr:     errAny,
			wantVersion: 1,
		},
		{
			name: "two clusters with one name",
			mutate: func(inc *incident.Incident) error {
				inc.Clusters = append(inc.Clusters, inc.Clusters[0])
				return nil
			},
			wantErr:     errAny,
			wantVersion: 1,
		},
		{
			name: "dependents, steps and counts",
			mutate: func(inc *incident.Incident) error {
				inc.Instances = []incident.Instance{{Identifier: "orders-1", ClusterIdentifier: "orders"}, {Identifier: "orders-2", ClusterIdentifier: "orders"}}
				inc.Snapshots = []incident.Snapshot{{Identifier: "snap", ARN: "arn:aws:rds:us-east-1:123456789012:cluster-snapshot:snap"}}
				inc.OtherEngines = []incident.Cluster{{Identifier: "graph", Engine: "neptune"}}
				inc.Remediation.RunID = "run-1"
				inc.RecordStep(incident.StepRecord{Kind: incident.StepEnableKey, Target: keyA, Result: incident.ResultOK, At: t0})
				return nil
			},
			wantVersion: 2,
			check: func(t *testing.T, got incident.Incident) {
				if got.InstanceCount != 2 || got.SnapshotCount != 1 || len(got.OtherEngines) != 1 || len(got.Remediation.Steps) != 1 {
					t.Errorf("got %d instances, %d snapshots, %d others, %d steps; want 2, 1, 1, 1",
						got.InstanceCount, got.SnapshotCount, len(got.OtherEngines), len(got.Remediation.Steps))
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newEnv(t, "", false).store()
			inc := mustOpen(t, s, newIncident(keyA, "DisableKey", t0))
			got, err := s.Update(context.Background(), inc.ID, tt.mutate)
			switch {
			case tt.wantErr == nil && err != nil:
				t.Fatalf("Update: %v", err)
			case tt.wantErr != nil && err == nil:
				t.Fatalf("Update: got nil error, want %v", tt.wantErr)
			case tt.wantErr != nil && tt.wantErr != errAny && !errors.Is(err, tt.wantErr):
				t.Fatalf("Update: got %v, want %v", err, tt.wantErr)
			}
			stored := mustGet(t, s, inc.ID)
			if stored.Version != tt.wantVersion {
				t.Errorf("stored Version: got %d, want %d", stored.Version, tt.wantVersion)
			}
			if err == nil {
				if diff := cmp.Diff(got, stored); diff != "" {
					t.Errorf("stored incident differs from Update's result (-update +stored):\n%s", diff)
				}
			} else if diff := cmp.Diff(inc, stored); diff != "" {
				t.Errorf("a failed Update changed the incident (-before +after):\n%s", diff)
			}
			if tt.check != nil {
				tt.check(t, got)
			}
		})
	}
	t.Run("unknown incident", func(t *testing.T) {
		s := newEnv(t, "", false).store()
		_, err := s.Update(context.Background(), "KW-20261128-000000", func(*incident.Incident) error { return nil })
		if !errors.Is(err, incident.ErrNotFound) {
			t.Errorf("Update: got %v, want ErrNotFound", err)
		}
	})
}

// TestUpdateWritesOnlyWhatChanged: a change of one dependent writes that item and the head;
// a removed dependent's item goes; the order of the slices survives.
func TestUpdateWritesOnlyWhatChanged(t *testing.T) {
	e := newEnv(t, "", false)
	s := e.store()
	ctx := context.Background()
	in := newIncident(keyA, "DisableKey", t0)
	for _, id := range []string{"zeta", "alpha", "mid"} {
		in.Clusters = append(in.Clusters, incident.Cluster{Identifier: id, CanStop: true})
	}
	inc := mustOpen(t, s, in)
	e.calls.take()

	got, err := s.Update(ctx, inc.ID, func(inc *incident.Incident) error {
		inc.Clusters[2].Status = incident.StatusStopped // alpha
		return nil
	})
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	calls, _ := e.calls.take()
	if calls["TransactWriteItems"] != 1 {
		t.Errorf("calls: got %v, want one TransactWriteItems", calls)
	}
	items := e.partition(t, inc.ID)
	if v := optNum(items["cluster#alpha"], attrV); v != 2 {
		t.Errorf("cluster#alpha written by version %d, want 2", v)
	}
	if v := optNum(items["cluster#zeta"], attrV); v != 1 {
		t.Errorf("cluster#zeta written by version %d, want 1 (unchanged)", v)
	}
	var order []string
	for _, c := range got.Clusters {
		order = append(order, c.Identifier)
	}
	if diff := cmp.Diff([]string{"orders", "zeta", "alpha", "mid"}, order); diff != "" {
		t.Errorf("cluster order (-want +got):\n%s", diff)
	}

	got, err = s.Update(ctx, inc.ID, func(inc *incident.Incident) error {
		inc.Clusters = append(inc.Clusters[:1], inc.Clusters[2:]...) // zeta goes
		return nil
	})
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	items = e.partition(t, inc.ID)
	if _, ok := items["cluster#zeta"]; ok {
		t.Errorf("cluster#zeta still stored after its removal")
	}
	if v := optNum(items["cluster#mid"], attrV); v != 1 {
		t.Errorf("cluster#mid written by version %d, want 1: a removal moves nothing", v)
	}
	if diff := cmp.Diff(got, mustGet(t, s, inc.ID)); diff != "" {
		t.Errorf("stored differs from Update's result (-update +stored):\n%s", diff)
	}

	// Inserted at the front, in the middle and at the end: only the new items are written.
	e.calls.take()
	got, err = s.Update(ctx, inc.ID, func(inc *incident.Incident) error {
		c := func(id string) incident.Cluster { return incident.Cluster{Identifier: id} }
		inc.Clusters = append([]incident.Cluster{c("first")}, append(inc.Clusters[:2], append([]incident.Cluster{c("between")}, append(inc.Clusters[2:], c("last"))...)...)...)
		return nil
	})
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	order = nil
	for _, c := range got.Clusters {
		order = append(order, c.Identifier)
	}
	if diff := cmp.Diff([]string{"first", "orders", "alpha", "between", "mid", "last"}, order); diff != "" {
		t.Errorf("cluster order (-want +got):\n%s", diff)
	}
	items = e.partition(t, inc.ID)
	for sk, want := range map[string]int64{"cluster#orders": 1, "cluster#alpha": 2, "cluster#mid": 1, "cluster#first": 4, "cluster#between": 4, "cluster#last": 4} {
		if v := optNum(items[sk], attrV); v != want {
			t.Errorf("%s written by version %d, want %d", sk, v, want)
		}
	}
	if diff := cmp.Diff(got, mustGet(t, s, inc.ID)); diff != "" {
		t.Errorf("stored differs from Update's result (-update +stored):\n%s", diff)
	}
	// A reorder renumbers.
	got, err = s.Update(ctx, inc.ID, func(inc *incident.Incident) error {
		inc.Clusters[0], inc.Clusters[5] = inc.Clusters[5], inc.Clusters[0]
		return nil
	})
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	if diff := cmp.Diff(got, mustGet(t, s, inc.ID)); diff != "" {
		t.Errorf("after a reorder, stored differs from Update's result (-update +stored):\n%s", diff)
	}
}

func TestUpdateAt(t *testing.T) {
	s := newEnv(t, "", false).store()
	ctx := context.Background()
	inc := mustOpen(t, s, newIncident(keyA, "DisableKey", t0))
	click := func(detail string) func(*incident.Incident) error {
		return func(inc *incident.Incident) error {
			inc.AddEntry(incident.Entry{Kind: incident.KindClick, Actor: "U123", Detail: detail})
			return nil
		}
	}

	v2, err := s.UpdateAt(ctx, inc.ID, 1, click("approve"))
	if err != nil {
		t.Fatalf("UpdateAt(current version): %v", err)
	}
	if v2.Version != 2 {
		t.Fatalf("Version: got %d, want 2", v2.Version)
	}
	if last := v2.Timeline[len(v2.Timeline)-1]; last.At.IsZero() || last.Seq != 3 {
		t.Errorf("new entry: got at %v seq %d, want stamped with the store's time and seq 3", last.At, last.Seq)
	}

	t.Run("old version", func(t *testing.T) {
		called := false
		_, err := s.UpdateAt(ctx, inc.ID, 1, func(*incident.Incident) error { called = true; return nil })
		if !errors.Is(err, incident.ErrStale) {
			t.Errorf("UpdateAt(old version): got %v, want ErrStale", err)
		}
		if called {
			t.Errorf("mutate ran on a stale version")
		}
		if diff := cmp.Diff(v2, mustGet(t, s, inc.ID)); diff != "" {
			t.Errorf("incident changed (-want +got):\n%s", diff)
		}
	})

	t.Run("changed between read and write", func(t *testing.T) {
		_, err := s.UpdateAt(ctx, inc.ID, 2, func(in *incident.Incident) error {
			// Another writer lands while this click is being handled.
			if _, err := s.Update(ctx, inc.ID, click("other")); err != nil {
				t.Fatalf("concurrent Update: %v", err)
			}
			return click("late")(in)
		})
		if !errors.Is(err, incident.ErrStale) {
			t.Errorf("UpdateAt: got %v, want ErrStale", err)
		}
		got := mustGet(t, s, inc.ID)
		if got.Version != 3 || got.Timeline[len(got.Timeline)-1].Detail != "other" {
			t.Errorf("got version %d ending %q, want version 3 ending with the other writer's entry", got.Version, got.Timeline[len(got.Timeline)-1].Detail)
		}
	})
}

func TestCloseReleasesKey(t *testing.T) {
	for _, state := range []incident.State{incident.StateResolved, incident.StateIntentional, incident.StateLost} {
		t.Run(string(state), func(t *testing.T) {
			s := newEnv(t, "", false).store()
			ctx := context.Background()
			first := mustOpen(t, s, newIncident(keyA, "DisableKey", t0))

			closed, err := s.Update(ctx, first.ID, func(inc *incident.Incident) error {
				inc.State = state
				return nil
			})
			if err != nil {
				t.Fatalf("close: %v", err)
			}
			if closed.ClosedAt == nil || !closed.ClosedAt.Equal(closed.UpdatedAt) {
				t.Errorf("ClosedAt: got %v, want the update time %v", closed.ClosedAt, closed.UpdatedAt)
			}
			if _, err := s.OpenFor(ctx, keyA); !errors.Is(err, incident.ErrNotFound) {
				t.Errorf("OpenFor after close: got %v, want ErrNotFound", err)
			}

			at := t0.Add(time.Hour)
			second, opened, err := s.Open(ctx, newIncident(keyA, "DisableKey", at), delivery(at), nil)
			if err != nil {
				t.Fatalf("Open after close: %v", err)
			}
			if !opened || second.ID == first.ID {
				t.Errorf("Open after close: opened %v, ID %s, want a new incident (first was %s)", opened, second.ID, first.ID)
			}
			if open, err := s.OpenFor(ctx, keyA); err != nil || open.ID != second.ID {
				t.Errorf("OpenFor: got %s, %v, want %s", open.ID, err, second.ID)
			}
			if diff := cmp.Diff(closed, mustGet(t, s, first.ID)); diff != "" {
				t.Errorf("the closed incident changed (-want +got):\n%s", diff)
			}

			// The closed incident cannot reopen while the new one holds the key.
			_, err = s.Update(ctx, first.ID, func(inc *incident.Incident) error { inc.State = incident.StateOpen; return nil })
			if !errors.Is(err, incident.ErrConflict) {
				t.Errorf("reopen while another is open: got %v, want ErrConflict", err)
			}
		})
	}
}

func TestReopen(t *testing.T) {
	s := newEnv(t, "", false).store()
	ctx := context.Background()
	inc := mustOpen(t, s, newIncident(keyA, "DisableKey", t0))
	setState := func(st incident.State) func(*incident.Incident) error {
		return func(inc *incident.Incident) error { inc.State = st; return nil }
	}
	if _, err := s.Update(ctx, inc.ID, setState(incident.StateIntentional)); err != nil {
		t.Fatalf("close: %v", err)
	}
	reopened, err := s.Update(ctx, inc.ID, setState(incident.StateOpen))
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	if reopened.ClosedAt != nil {
		t.Errorf("ClosedAt after reopen: got %v, want nil", reopened.ClosedAt)
	}
	open, err := s.OpenFor(ctx, keyA)
	if err != nil || open.ID != inc.ID {
		t.Fatalf("OpenFor after reopen: got %s, %v, want %s", open.ID, err, inc.ID)
	}
	_, opened, err := s.Open(ctx, newIncident(keyA, "DisableKey", t0), delivery(t0), nil)
	if err != nil || opened {
		t.Errorf("Open after reopen: opened %v, %v, want a delivery folded into %s", opened, err, inc.ID)
	}
}

// A lock that names an incident that is gone (a head deleted by hand) is released rather than
// blocking the key for good.
func TestOpenHealsStaleLock(t *testing.T) {
	e := newEnv(t, "", false)
	s := e.store()
	ctx := context.Background()
	first := mustOpen(t, s, newIncident(keyA, "DisableKey", t0))
	if _, err := e.db.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: aws.String(e.table), Key: key(incidentPK(first.ID), skHead)}); err != nil {
		t.Fatalf("DeleteItem: %v", err)
	}
	second, opened, err := s.Open(ctx, newIncident(keyA, "DisableKey", t0), delivery(t0), nil)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if !opened || second.ID == first.ID {
		t.Errorf("Open: opened %v, ID %s, want a new incident", opened, second.ID)
	}
}

func TestList(t *testing.T) {
	e := newEnv(t, "", false)
	s := e.store()
	s.pageLimit = 2 // several pages: heads, children, locks, a sighting and a claim share the table
	ctx := context.Background()
	a := mustOpen(t, s, newIncident(keyA, "DisableKey", t0))
	e.clk.Advance(time.Hour)
	b := mustOpen(t, s, newIncident(keyB, "ScheduleKeyDeletion", t0))
	e.clk.Advance(time.Hour)
	c := mustOpen(t, s, newIncident(keyC, "DisableKey", t0))
	if err := s.RecordSighting(ctx, incident.Sighting{KeyARN: "arn:aws:kms:us-east-1:123456789012:key/other", EventName: "DisableKey"}); err != nil {
		t.Fatalf("RecordSighting: %v", err)
	}
	if _, err := s.Claim(ctx, "reminder", 0); err != nil {
		t.Fatalf("Claim: %v", err)
	}
	b, err := s.Update(ctx, b.ID, func(inc *incident.Incident) error { inc.State = incident.StateResolved; return nil })
	if err != nil {
		t.Fatalf("close: %v", err)
	}
	c, err = s.Update(ctx, c.ID, func(inc *incident.Incident) error { inc.State = incident.StateRemediating; return nil })
	if err != nil {
		t.Fatalf("remediate: %v", err)
	}

	all, err := s.List(ctx)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if diff := cmp.Diff([]incident.Incident{c, b, a}, all); diff != "" {
		t.Errorf("List (-want +got):\n%s", diff)
	}
	active, err := s.ListActive(ctx)
	if err != nil {
		t.Fatalf("ListActive: %v", err)
	}
	if diff := cmp.Diff([]incident.Incident{c, a}, active); diff != "" {
		t.Errorf("ListActive (-want +got):\n%s", diff)
	}
	forB, err := s.ForKey(ctx, keyB)
	if err != nil {
		t.Fatalf("ForKey: %v", err)
	}
	if diff := cmp.Diff([]incident.Incident{b}, forB); diff != "" {
		t.Errorf("ForKey (-want +got):\n%s", diff)
	}
}

func TestSightings(t *testing.T) {
	s := newEnv(t, "", false).store()
	ctx := context.Background()
	alice := incident.Actor{ARN: "arn:aws:iam::123456789012:user/alice"}
	bob := incident.Actor{ARN: "arn:aws:iam::123456789012:user/bob", SourceIP: "198.51.100.4"}
	record := []incident.Sighting{
		{KeyARN: keyA, EventName: "DisableKey", At: t0, Actor: alice},
		{KeyARN: keyB, EventName: "DisableKey", At: t0.Add(time.Minute), Actor: alice},
		{KeyARN: keyA, EventName: "EnableKey", At: t0.Add(2 * time.Minute), Actor: alice},
		{KeyARN: keyA, EventName: "ScheduleKeyDeletion", At: t0.Add(3 * time.Minute), Actor: bob, Count: 99, Note: "no Aurora dependents"},
	}
	for _, sg := range record {
		if err := s.RecordSighting(ctx, sg); err != nil {
			t.Fatalf("RecordSighting: %v", err)
		}
	}
	got, err := s.Sightings(ctx)
	if err != nil {
		t.Fatalf("Sightings: %v", err)
	}
	want := []incident.Sighting{
		{KeyARN: keyA, EventName: "ScheduleKeyDeletion", At: t0.Add(3 * time.Minute), Actor: bob, Count: 3, Note: "no Aurora dependents"},
		{KeyARN: keyB, EventName: "DisableKey", At: t0.Add(time.Minute), Actor: alice, Count: 1},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Sightings (-want +got):\n%s", diff)
	}
	if all, err := s.List(ctx); err != nil || len(all) != 0 {
		t.Errorf("List: got %d incidents, %v, want none: a sighting escalates nothing", len(all), err)
	}
}

func TestClaim(t *testing.T) {
	e := newEnv(t, "", false)
	s := e.store()
	ctx := context.Background()
	steps := []struct {
		name    string
		claim   string
		ttl     time.Duration
		advance time.Duration
		want    bool
	}{
		{name: "first claim", claim: "click:KW-1:approve", want: true},
		{name: "second claim", claim: "click:KW-1:approve", want: false},
		{name: "another name", claim: "click:KW-1:intentional", want: true},
		{name: "claimed for good", claim: "click:KW-1:approve", advance: 365 * 24 * time.Hour, want: false},
		{name: "timed claim", claim: "reminder:KW-1:24h", ttl: time.Hour, want: true},
		{name: "timed claim, within ttl", claim: "reminder:KW-1:24h", ttl: time.Hour, advance: 30 * time.Minute, want: false},
		{name: "timed claim, after ttl", claim: "reminder:KW-1:24h", ttl: time.Hour, advance: time.Hour, want: true},
	}
	for _, st := range steps {
		e.clk.Advance(st.advance)
		got, err := s.Claim(ctx, st.claim, st.ttl)
		if err != nil {
			t.Fatalf("%s: Claim: %v", st.name, err)
		}
		if got != st.want {
			t.Errorf("%s: Claim(%q): got %v, want %v", st.name, st.claim, got, st.want)
		}
	}

	// Overlapping runs: exactly one wins.
	const n = 8
	wins := make(chan bool, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			ok, err := s.Claim(ctx, "reminder:KW-2:1h", 0)
			if err != nil {
				t.Errorf("Claim: %v", err)
			}
			wins <- ok
		})
	}
	wg.Wait()
	close(wins)
	won := 0
	for ok := range wins {
		if ok {
			won++
		}
	}
	if won != 1 {
		t.Errorf("concurrent claims: %d won, want 1", won)
	}
}

// TestRelease: a released claim can be claimed again at once; releasing one that does not
// exist is fine.
func TestRelease(t *testing.T) {
	s := newEnv(t, "", false).store()
	ctx := context.Background()
	if ok, err := s.Claim(ctx, "reminder#KW-1#6h0m0s", time.Hour); err != nil || !ok {
		t.Fatalf("Claim: got %v, %v; want true", ok, err)
	}
	if ok, err := s.Claim(ctx, "reminder#KW-1#6h0m0s", time.Hour); err != nil || ok {
		t.Fatalf("second Claim: got %v, %v; want false", ok, err)
	}
	if err := s.Release(ctx, "reminder#KW-1#6h0m0s"); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if ok, err := s.Claim(ctx, "reminder#KW-1#6h0m0s", time.Hour); err != nil || !ok {
		t.Errorf("Claim after Release: got %v, %v; want true", ok, err)
	}
	if err := s.Release(ctx, "never-claimed"); err != nil {
		t.Errorf("Release of an unknown claim: %v", err)
	}
}

// TestSetSlack: the message reference and the posted Seq are recorded without a new version,
// merged into the incident on read, only go forward, and survive later writes of the incident
// by writers that read them before (or after) they were set.
func TestSetSlack(t *testing.T) {
	s := newEnv(t, "", false).store()
	ctx := context.Background()
	inc := mustOpen(t, s, newIncident(keyA, "DisableKey", t0))
	ref := incident.SlackRef{Channel: "C0KEYWARDEN", TS: "1795860000.000001"}
	note := func(actor string) func(*incident.Incident) error {
		return func(i *incident.Incident) error {
			i.AddEntry(incident.Entry{At: t0, Kind: incident.KindClick, Actor: actor, Detail: "acknowledge"})
			return nil
		}
	}

	stale := mustGet(t, s, inc.ID) // a writer that read the incident before the message was posted
	if err := s.SetSlack(ctx, inc.ID, ref, 2); err != nil {
		t.Fatalf("SetSlack: %v", err)
	}
	got := mustGet(t, s, inc.ID)
	if got.Version != inc.Version {
		t.Errorf("Version after SetSlack: got %d, want %d (unchanged)", got.Version, inc.Version)
	}
	if got.Slack == nil || *got.Slack != ref || got.SlackPosted != 2 {
		t.Fatalf("after SetSlack: got %+v, %d, want %+v, 2", got.Slack, got.SlackPosted, ref)
	}

	t.Run("posted Seq only goes forward", func(t *testing.T) {
		if err := s.SetSlack(ctx, inc.ID, ref, 1); err != nil {
			t.Fatalf("SetSlack(1): %v", err)
		}
		if got := mustGet(t, s, inc.ID); got.SlackPosted != 2 {
			t.Errorf("SlackPosted: got %d, want 2 kept", got.SlackPosted)
		}
	})

	t.Run("a write from an older read keeps it", func(t *testing.T) {
		_, err := s.UpdateAt(ctx, inc.ID, stale.Version, func(i *incident.Incident) error {
			if i.Slack == nil {
				t.Errorf("UpdateAt's read does not carry the Slack reference")
			}
			return note("U0APPROVR1")(i)
		})
		if err != nil {
			t.Fatalf("UpdateAt: %v", err)
		}
		got := mustGet(t, s, inc.ID)
		if got.Slack == nil || *got.Slack != ref || got.SlackPosted != 2 || got.Version != inc.Version+1 {
			t.Errorf("after UpdateAt: got %+v, %d, version %d, want %+v, 2, version %d", got.Slack, got.SlackPosted, got.Version, ref, inc.Version+1)
		}
	})

	t.Run("a SetSlack racing a click does not make the click stale", func(t *testing.T) {
		cur := mustGet(t, s, inc.ID)
		calls := 0
		_, err := s.UpdateAt(ctx, inc.ID, cur.Version, func(i *incident.Incident) error {
			calls++
			if calls == 1 {
				// The message refresh of an earlier change lands between this read and write.
				if err := s.SetSlack(ctx, inc.ID, ref, 3); err != nil {
					t.Fatalf("SetSlack: %v", err)
				}
			}
			return note("U0APPROVR2")(i)
		})
		if err != nil {
			t.Fatalf("UpdateAt: %v", err)
		}
		got := mustGet(t, s, inc.ID)
		if calls != 2 || got.Version != cur.Version+1 || got.SlackPosted != 3 {
			t.Errorf("got %d mutate calls, version %d, posted %d, want 2, %d, 3", calls, got.Version, got.SlackPosted, cur.Version+1)
		}
		if n := len(got.Timeline) - len(cur.Timeline); n != 1 {
			t.Errorf("timeline grew by %d, want 1", n)
		}
	})

	t.Run("closing keeps it", func(t *testing.T) {
		_, err := s.Update(ctx, inc.ID, func(i *incident.Incident) error { i.State = incident.StateIntentional; return nil })
		if err != nil {
			t.Fatalf("Update: %v", err)
		}
		got := mustGet(t, s, inc.ID)
		if got.Slack == nil || *got.Slack != ref || got.SlackPosted != 3 {
			t.Errorf("after closing: got %+v, %d, want %+v, 3", got.Slack, got.SlackPosted, ref)
		}
		if err := s.SetSlack(ctx, inc.ID, ref, 5); err != nil {
			t.Fatalf("SetSlack on a closed incident: %v", err)
		}
		if got := mustGet(t, s, inc.ID); got.SlackPosted != 5 {
			t.Errorf("SlackPosted: got %d, want 5", got.SlackPosted)
		}
	})

	t.Run("set by an Update", func(t *testing.T) {
		other := mustOpen(t, s, newIncident(keyB, "DisableKey", t0))
		moved := incident.SlackRef{Channel: "C0OTHER", TS: "1795860000.000009"}
		_, err := s.Update(ctx, other.ID, func(i *incident.Incident) error { i.Slack, i.SlackPosted = &moved, 1; return nil })
		if err != nil {
			t.Fatalf("Update: %v", err)
		}
		if got := mustGet(t, s, other.ID); got.Slack == nil || *got.Slack != moved || got.SlackPosted != 1 {
			t.Errorf("after Update: got %+v, %d, want %+v, 1", got.Slack, got.SlackPosted, moved)
		}
	})

	t.Run("unknown incident", func(t *testing.T) {
		err := s.SetSlack(ctx, "KW-20261128-000000", ref, 1)
		if !errors.Is(err, incident.ErrNotFound) {
			t.Errorf("SetSlack: got %v, want ErrNotFound", err)
		}
		if _, err := s.Get(ctx, "KW-20261128-000000"); !errors.Is(err, incident.ErrNotFound) {
			t.Errorf("SetSlack created an item for an unknown incident: Get = %v", err)
		}
	})

	t.Run("incomplete reference", func(t *testing.T) {
		if err := s.SetSlack(ctx, inc.ID, incident.SlackRef{Channel: "C0KEYWARDEN"}, 1); err == nil {
			t.Errorf("SetSlack without ts: got nil error")
		}
	})
}

// TestBatchedWrites runs the batched path (see the package doc) on a small incident by
// lowering the transaction limit: create, update, the lease that holds other writers off while
// it runs, and entries of a write that never committed staying invisible.
func TestBatchedWrites(t *testing.T) {
	e := newEnv(t, "", false)
	s := e.store()
	s.maxTxItems = 4
	ctx := context.Background()
	in := newIncident(keyA, "DisableKey", t0)
	for i := range 6 {
		in.Snapshots = append(in.Snapshots, incident.Snapshot{Identifier: fmt.Sprintf("snap-%d", i)})
	}
	inc := mustOpen(t, s, in)
	if diff := cmp.Diff(inc, mustGet(t, s, inc.ID)); diff != "" {
		t.Fatalf("batched create: stored differs (-open +stored):\n%s", diff)
	}
	if len(inc.Snapshots) != 6 || inc.SnapshotCount != 6 {
		t.Fatalf("got %d snapshots, count %d, want 6", len(inc.Snapshots), inc.SnapshotCount)
	}
	calls, _ := e.calls.take()
	if calls["BatchWriteItem"] == 0 {
		t.Errorf("calls %v: want BatchWriteItem", calls)
	}

	got, err := s.Update(ctx, inc.ID, func(inc *incident.Incident) error {
		for i := range 5 {
			inc.AddEntry(incident.Entry{ID: fmt.Sprintf("note-%d", i), Kind: incident.KindNote, Detail: "batched"})
		}
		inc.Snapshots = inc.Snapshots[1:]
		return nil
	})
	if err != nil {
		t.Fatalf("batched Update: %v", err)
	}
	if diff := cmp.Diff(got, mustGet(t, s, inc.ID)); diff != "" {
		t.Errorf("batched update: stored differs (-update +stored):\n%s", diff)
	}
	if got.Version != 2 || len(got.Timeline) != 7 || len(got.Snapshots) != 5 {
		t.Errorf("got version %d, %d entries, %d snapshots, want 2, 7, 5", got.Version, len(got.Timeline), len(got.Snapshots))
	}
	head := e.partition(t, inc.ID)["head"]
	if _, ok := head[attrLeaseToken]; ok {
		t.Errorf("the lease outlived the write")
	}
	if n := len(stringSet(head, attrCommits)); n != 2 {
		t.Errorf("commits: got %d tokens, want 2 (the create and the update)", n)
	}

	t.Run("a lease holds other writers off until it ends", func(t *testing.T) {
		until := e.clk.now.Add(3 * time.Second) // the fake clock moves a second per reading
		_, err := e.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
			TableName:                 aws.String(e.table),
			Key:                       key(incidentPK(inc.ID), skHead),
			UpdateExpression:          aws.String("SET lease_token = :t, lease_until = :u"),
			ExpressionAttributeValues: map[string]types.AttributeValue{":t": str("crashed"), ":u": num(until.UnixNano())},
		})
		if err != nil {
			t.Fatalf("UpdateItem: %v", err)
		}
		got, err := s.Update(ctx, inc.ID, func(inc *incident.Incident) error { inc.KeyState = incident.KeyStatePendingDeletion; return nil })
		if err != nil {
			t.Fatalf("Update under a lease: %v", err)
		}
		if got.Version != 3 || !e.clk.now.After(until) {
			t.Errorf("got version %d at %v, want 3 after the lease ended at %v", got.Version, e.clk.now, until)
		}
	})

	t.Run("a batched write that never committed is invisible", func(t *testing.T) {
		// What a writer that lost, or crashed after its batch, leaves behind.
		orphan, _ := entryChild(incident.Entry{ID: "orphan", Seq: 99, Kind: incident.KindNote, At: t0})
		_, err := e.db.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(e.table), Item: orphan.item(incidentPK(inc.ID), 4, "lost-token")})
		if err != nil {
			t.Fatalf("PutItem: %v", err)
		}
		got := mustGet(t, s, inc.ID)
		if got.HasEntry("orphan") || got.TimelineSeq != 7 {
			t.Errorf("orphan visible: has %v, TimelineSeq %d, want false, 7", got.HasEntry("orphan"), got.TimelineSeq)
		}
		// A later write of an entry with that ID overwrites it.
		got, err = s.Update(ctx, inc.ID, func(inc *incident.Incident) error {
			inc.AddEntry(incident.Entry{ID: "orphan", Kind: incident.KindNote, Detail: "real"})
			return nil
		})
		if err != nil {
			t.Fatalf("Update: %v", err)
		}
		stored := mustGet(t, s, inc.ID)
		if e, ok := stored.LastEntry(incident.KindNote); !ok || e.ID != "orphan" || e.Detail != "real" || e.Seq != 8 {
			t.Errorf("got %+v, want the real entry with seq 8", e)
		}
		if diff := cmp.Diff(got, stored); diff != "" {
			t.Errorf("stored differs (-update +stored):\n%s", diff)
		}
	})
}

// batchFake answers BatchWriteItem with leftover items as unprocessed, the way DynamoDB does
// under throttling, and records what it was given.
type batchFake struct {
	API
	mu          sync.Mutex
	written     map[string]int
	unprocessed int // how many calls hand back their last item
}

func (f *batchFake) BatchWriteItem(_ context.Context, in *dynamodb.BatchWriteItemInput, _ ...func(*dynamodb.Options)) (*dynamodb.BatchWriteItemOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := &dynamodb.BatchWriteItemOutput{}
	for table, reqs := range in.RequestItems {
		if len(reqs) > maxBatchSize {
			return nil, fmt.Errorf("%d requests in one call", len(reqs))
		}
		if f.unprocessed > 0 && len(reqs) > 1 {
			f.unprocessed--
			out.UnprocessedItems = map[string][]types.WriteRequest{table: reqs[len(reqs)-1:]}
			reqs = reqs[:len(reqs)-1]
		}
		for _, r := range reqs {
			f.written[stringAttr(r.PutRequest.Item, attrSK)]++
		}
	}
	return out, nil
}

func TestBatchWriteRetriesUnprocessed(t *testing.T) {
	f := &batchFake{written: map[string]int{}, unprocessed: 5}
	s := New(f, "t")
	var reqs []types.WriteRequest
	for i := range 103 {
		reqs = append(reqs, types.WriteRequest{PutRequest: &types.PutRequest{Item: key("p", fmt.Sprint(i))}})
	}
	if err := s.batchWrite(context.Background(), reqs, time.Time{}); err != nil {
		t.Fatalf("batchWrite: %v", err)
	}
	if len(f.written) != 103 {
		t.Errorf("wrote %d distinct items, want 103", len(f.written))
	}
	for sk, n := range f.written {
		if n != 1 {
			t.Errorf("%s written %d times", sk, n)
		}
	}
}
