package incident

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/keywarden/keywarden/internal/awstest"
)

func TestMain(m *testing.M) { awstest.Main(m) }

const (
	keyA = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
	keyB = "arn:aws:kms:us-east-1:123456789012:key/0987dcba-09fe-87dc-65ba-ab0987654321"
	keyC = "arn:aws:kms:us-east-1:123456789012:key/mrk-1234abcd12ab34cd56ef1234567890ab"
)

var t0 = time.Date(2026, 11, 28, 9, 30, 0, 0, time.UTC)

// fakeClock moves one second forward on every reading, so every write gets its own time.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(time.Second)
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// newTestStore returns a store on a fresh table of its own in moto, and the store's clock.
func newTestStore(t *testing.T) (*Store, *fakeClock) {
	t.Helper()
	cfg := awstest.Config(t, awstest.Moto(t))
	cfg = awstest.Serial(cfg)
	db := dynamodb.NewFromConfig(cfg)
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := regexp.MustCompile(`[^a-zA-Z0-9_.-]+`).ReplaceAllString(t.Name(), "-")
	table := fmt.Sprintf("keywarden-%.60s-%s", name, hex.EncodeToString(b[:]))
	ctx := context.Background()
	if err := CreateTable(ctx, db, table); err != nil {
		t.Fatalf("CreateTable: %v", err)
	}
	t.Cleanup(func() {
		if _, err := db.DeleteTable(context.Background(), &dynamodb.DeleteTableInput{TableName: aws.String(table)}); err != nil {
			t.Logf("delete table %s: %v", table, err)
		}
	})
	clk := &fakeClock{now: t0}
	return NewStore(db, table).WithClock(clk.Now), clk
}

// newIncident is what KeyEventFunction would pass to Open for a loss event on key.
func newIncident(key, event string, at time.Time) Incident {
	return Incident{
		KeyARN:   key,
		KeyState: "Disabled",
		Trigger:  event,
		LostAt:   at,
		Actor:    Actor{ARN: "arn:aws:iam::123456789012:user/alice", SourceIP: "203.0.113.7"},
		Clusters: []Cluster{{Identifier: "orders", CanStop: true, LostAccessAt: &at}},
		Timeline: []Entry{{At: at, Kind: KindOpened, Actor: "alice", Detail: event}},
	}
}

func delivery(event string, at time.Time) Entry {
	return Entry{At: at, Kind: KindDelivery, Actor: "alice", Detail: event}
}

func mustOpen(t *testing.T, s *Store, inc Incident) Incident {
	t.Helper()
	got, opened, err := s.Open(context.Background(), inc, delivery(inc.Trigger, inc.LostAt), nil)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if !opened {
		t.Fatalf("Open: opened = false for a new key")
	}
	return got
}

func mustGet(t *testing.T, s *Store, id string) Incident {
	t.Helper()
	got, err := s.Get(context.Background(), id)
	if err != nil {
		t.Fatalf("Get(%s): %v", id, err)
	}
	return got
}

func TestCreateTableIdempotent(t *testing.T) {
	s, _ := newTestStore(t)
	db := s.db.(*dynamodb.Client)
	if err := CreateTable(context.Background(), db, s.table); err != nil {
		t.Fatalf("CreateTable on an existing table: got %v, want nil", err)
	}
	ttl, err := db.DescribeTimeToLive(context.Background(), &dynamodb.DescribeTimeToLiveInput{TableName: aws.String(s.table)})
	if err != nil {
		t.Fatalf("DescribeTimeToLive: %v", err)
	}
	if got := aws.ToString(ttl.TimeToLiveDescription.AttributeName); got != AttrExpiresAt {
		t.Errorf("TTL attribute: got %q, want %q", got, AttrExpiresAt)
	}
}

func TestOpenCreates(t *testing.T) {
	s, _ := newTestStore(t)
	ctx := context.Background()
	in := newIncident(keyA, "DisableKey", t0)

	got, opened, err := s.Open(ctx, in, delivery("DisableKey", t0), nil)
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
	want.State = StateOpen
	want.Deliveries = 1
	want.OpenedAt = t0.Add(time.Second)
	want.UpdatedAt = want.OpenedAt
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
	if _, err := s.OpenFor(ctx, keyB); !errors.Is(err, ErrNotFound) {
		t.Errorf("OpenFor(other key): got %v, want ErrNotFound", err)
	}
	if _, err := s.Get(ctx, "KW-20261128-000000"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(unknown): got %v, want ErrNotFound", err)
	}
}

func TestOpenRejects(t *testing.T) {
	s, _ := newTestStore(t)
	tests := []struct {
		name string
		inc  Incident
	}{
		{"no key ARN", Incident{Trigger: "DisableKey"}},
		{"closed state", Incident{KeyARN: keyA, State: StateResolved}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := s.Open(context.Background(), tt.inc, Entry{}, nil); err == nil {
				t.Errorf("Open: got nil error, want one")
			}
		})
	}
}

// A second delivery for a key with an open incident adds to that incident: the same event
// delivered twice (EventBridge delivers at least once) or a second loss event.
func TestOpenFoldsDeliveries(t *testing.T) {
	deletion := t0.Add(10 * 24 * time.Hour)
	tests := []struct {
		name       string
		second     string
		fold       func(*Incident)
		wantState  string
		wantDelete *time.Time
	}{
		{
			name:      "same event twice",
			second:    "DisableKey",
			wantState: "Disabled",
		},
		{
			name:   "two different loss events",
			second: "ScheduleKeyDeletion",
			fold: func(inc *Incident) {
				inc.KeyState = "PendingDeletion"
				inc.KeyDeletionDate = &deletion
				inc.RecomputeDeadlines()
			},
			wantState:  "PendingDeletion",
			wantDelete: &deletion,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := newTestStore(t)
			ctx := context.Background()
			first := mustOpen(t, s, newIncident(keyA, "DisableKey", t0))

			at := t0.Add(time.Minute)
			got, opened, err := s.Open(ctx, newIncident(keyA, tt.second, at), delivery(tt.second, at), tt.fold)
			if err != nil {
				t.Fatalf("second Open: %v", err)
			}
			if opened {
				t.Errorf("second Open: opened = true, want false")
			}
			if got.ID != first.ID {
				t.Errorf("second Open: ID %s, want the first incident %s", got.ID, first.ID)
			}
			wantTimeline := []Entry{first.Timeline[0], delivery(tt.second, at)}
			if diff := cmp.Diff(wantTimeline, got.Timeline); diff != "" {
				t.Errorf("timeline (-want +got):\n%s", diff)
			}
			if got.Deliveries != 2 || got.Version != 2 {
				t.Errorf("Deliveries, Version: got %d, %d, want 2, 2", got.Deliveries, got.Version)
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
			all, err := s.List(ctx)
			if err != nil {
				t.Fatalf("List: %v", err)
			}
			if len(all) != 1 {
				t.Errorf("List: got %d incidents, want 1", len(all))
			}
		})
	}
}

func TestOpenRace(t *testing.T) {
	const n = 8
	s, _ := newTestStore(t)
	ctx := context.Background()

	type result struct {
		inc    Incident
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
			inc, opened, err := s.Open(ctx, newIncident(keyA, "DisableKey", at), delivery("DisableKey", at), nil)
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
	if got.Deliveries != n || len(got.Timeline) != n || got.Version != n {
		t.Errorf("Deliveries, timeline entries, Version: got %d, %d, %d, want %d each", got.Deliveries, len(got.Timeline), got.Version, n)
	}
	all, err := s.List(ctx)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(all) != 1 {
		t.Errorf("List: got %d incidents, want 1", len(all))
	}
}

// Two Updates that both read version 1 before either writes: one write loses its condition,
// re-reads and applies its change again on version 2; both changes land.
func TestUpdateRetriesOnConflict(t *testing.T) {
	s, _ := newTestStore(t)
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
			_, errs[i] = s.Update(ctx, inc.ID, func(inc *Incident) error {
				mu.Lock()
				calls[who]++
				first := calls[who] == 1
				mu.Unlock()
				if first {
					bothRead.Done()
					bothRead.Wait()
				}
				inc.Timeline = append(inc.Timeline, Entry{At: t0, Kind: KindNote, Actor: who, Detail: "looking"})
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
	for _, e := range got.Timeline[1:] {
		actors = append(actors, e.Actor)
	}
	if diff := cmp.Diff([]string{"alice", "bob"}, actors, cmpopts.SortSlices(func(a, b string) bool { return a < b })); diff != "" {
		t.Errorf("notes (-want +got):\n%s", diff)
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
		mutate      func(*Incident) error
		wantErr     error // nil: no error; errAny: any error
		wantVersion int64
		check       func(t *testing.T, got Incident)
	}{
		{
			name: "state change",
			mutate: func(inc *Incident) error {
				inc.State = StateRemediating
				return nil
			},
			wantVersion: 2,
			check: func(t *testing.T, got Incident) {
				if got.State != StateRemediating || got.ClosedAt != nil {
					t.Errorf("State, ClosedAt: got %s, %v, want remediating, nil", got.State, got.ClosedAt)
				}
				if !got.UpdatedAt.After(got.OpenedAt) {
					t.Errorf("UpdatedAt %v not after OpenedAt %v", got.UpdatedAt, got.OpenedAt)
				}
			},
		},
		{
			name:        "no change writes nothing",
			mutate:      func(*Incident) error { return nil },
			wantVersion: 1,
		},
		{
			name:        "mutate error aborts",
			mutate:      func(inc *Incident) error { inc.State = StateLost; return errNo },
			wantErr:     errNo,
			wantVersion: 1,
		},
		{
			name:        "the key ARN is not the caller's to change",
			mutate:      func(inc *Incident) error { inc.KeyARN = keyB; return nil },
			wantErr:     errAny,
			wantVersion: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := newTestStore(t)
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
		s, _ := newTestStore(t)
		_, err := s.Update(context.Background(), "KW-20261128-000000", func(*Incident) error { return nil })
		if !errors.Is(err, ErrNotFound) {
			t.Errorf("Update: got %v, want ErrNotFound", err)
		}
	})
}

func TestUpdateAt(t *testing.T) {
	s, _ := newTestStore(t)
	ctx := context.Background()
	inc := mustOpen(t, s, newIncident(keyA, "DisableKey", t0))
	click := func(detail string) func(*Incident) error {
		return func(inc *Incident) error {
			inc.Timeline = append(inc.Timeline, Entry{Kind: KindClick, Actor: "U123", Detail: detail})
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

	t.Run("old version", func(t *testing.T) {
		called := false
		_, err := s.UpdateAt(ctx, inc.ID, 1, func(*Incident) error { called = true; return nil })
		if !errors.Is(err, ErrStale) {
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
		_, err := s.UpdateAt(ctx, inc.ID, 2, func(in *Incident) error {
			// Another writer lands while this click is being handled.
			if _, err := s.Update(ctx, inc.ID, click("other")); err != nil {
				t.Fatalf("concurrent Update: %v", err)
			}
			return click("late")(in)
		})
		if !errors.Is(err, ErrStale) {
			t.Errorf("UpdateAt: got %v, want ErrStale", err)
		}
		got := mustGet(t, s, inc.ID)
		if got.Version != 3 || got.Timeline[len(got.Timeline)-1].Detail != "other" {
			t.Errorf("got version %d ending %q, want version 3 ending with the other writer's entry", got.Version, got.Timeline[len(got.Timeline)-1].Detail)
		}
	})
}

func TestCloseReleasesKey(t *testing.T) {
	for _, state := range []State{StateResolved, StateIntentional, StateLost} {
		t.Run(string(state), func(t *testing.T) {
			s, _ := newTestStore(t)
			ctx := context.Background()
			first := mustOpen(t, s, newIncident(keyA, "DisableKey", t0))

			closed, err := s.Update(ctx, first.ID, func(inc *Incident) error {
				inc.State = state
				inc.Timeline = append(inc.Timeline, Entry{Kind: KindClosed, Detail: string(state)})
				return nil
			})
			if err != nil {
				t.Fatalf("close: %v", err)
			}
			if closed.ClosedAt == nil || !closed.ClosedAt.Equal(closed.UpdatedAt) {
				t.Errorf("ClosedAt: got %v, want the update time %v", closed.ClosedAt, closed.UpdatedAt)
			}
			if _, err := s.OpenFor(ctx, keyA); !errors.Is(err, ErrNotFound) {
				t.Errorf("OpenFor after close: got %v, want ErrNotFound", err)
			}

			at := t0.Add(time.Hour)
			second, opened, err := s.Open(ctx, newIncident(keyA, "DisableKey", at), delivery("DisableKey", at), nil)
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
			_, err = s.Update(ctx, first.ID, func(inc *Incident) error { inc.State = StateOpen; return nil })
			if !errors.Is(err, ErrConflict) {
				t.Errorf("reopen while another is open: got %v, want ErrConflict", err)
			}
		})
	}
}

func TestReopen(t *testing.T) {
	s, _ := newTestStore(t)
	ctx := context.Background()
	inc := mustOpen(t, s, newIncident(keyA, "DisableKey", t0))
	setState := func(st State) func(*Incident) error {
		return func(inc *Incident) error { inc.State = st; return nil }
	}
	if _, err := s.Update(ctx, inc.ID, setState(StateIntentional)); err != nil {
		t.Fatalf("close: %v", err)
	}
	reopened, err := s.Update(ctx, inc.ID, setState(StateOpen))
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
	_, opened, err := s.Open(ctx, newIncident(keyA, "DisableKey", t0), delivery("DisableKey", t0), nil)
	if err != nil || opened {
		t.Errorf("Open after reopen: opened %v, %v, want a delivery folded into %s", opened, err, inc.ID)
	}
}

// A lock that names an incident that is gone (an item deleted by hand) is released rather
// than blocking the key for good.
func TestOpenHealsStaleLock(t *testing.T) {
	s, _ := newTestStore(t)
	ctx := context.Background()
	first := mustOpen(t, s, newIncident(keyA, "DisableKey", t0))
	if _, err := s.db.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: aws.String(s.table), Key: pkKey(incidentPK(first.ID))}); err != nil {
		t.Fatalf("DeleteItem: %v", err)
	}
	second, opened, err := s.Open(ctx, newIncident(keyA, "DisableKey", t0), delivery("DisableKey", t0), nil)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if !opened || second.ID == first.ID {
		t.Errorf("Open: opened %v, ID %s, want a new incident", opened, second.ID)
	}
}

func TestList(t *testing.T) {
	s, clk := newTestStore(t)
	s.scanLimit = 2 // several pages: incidents, locks, a sighting and a claim share the table
	ctx := context.Background()
	a := mustOpen(t, s, newIncident(keyA, "DisableKey", t0))
	clk.Advance(time.Hour)
	b := mustOpen(t, s, newIncident(keyB, "ScheduleKeyDeletion", t0))
	clk.Advance(time.Hour)
	c := mustOpen(t, s, newIncident(keyC, "DisableKey", t0))
	if err := s.RecordSighting(ctx, Sighting{KeyARN: "arn:aws:kms:us-east-1:123456789012:key/other", EventName: "DisableKey"}); err != nil {
		t.Fatalf("RecordSighting: %v", err)
	}
	if _, err := s.Claim(ctx, "reminder", 0); err != nil {
		t.Fatalf("Claim: %v", err)
	}
	b, err := s.Update(ctx, b.ID, func(inc *Incident) error { inc.State = StateResolved; return nil })
	if err != nil {
		t.Fatalf("close: %v", err)
	}
	c, err = s.Update(ctx, c.ID, func(inc *Incident) error { inc.State = StateRemediating; return nil })
	if err != nil {
		t.Fatalf("remediate: %v", err)
	}

	all, err := s.List(ctx)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if diff := cmp.Diff([]Incident{c, b, a}, all); diff != "" {
		t.Errorf("List (-want +got):\n%s", diff)
	}
	active, err := s.ListActive(ctx)
	if err != nil {
		t.Fatalf("ListActive: %v", err)
	}
	if diff := cmp.Diff([]Incident{c, a}, active); diff != "" {
		t.Errorf("ListActive (-want +got):\n%s", diff)
	}
}

func TestSightings(t *testing.T) {
	s, _ := newTestStore(t)
	ctx := context.Background()
	alice := Actor{ARN: "arn:aws:iam::123456789012:user/alice"}
	bob := Actor{ARN: "arn:aws:iam::123456789012:user/bob", SourceIP: "198.51.100.4"}
	record := []Sighting{
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
	want := []Sighting{
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
	s, clk := newTestStore(t)
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
		clk.Advance(st.advance)
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
	s, _ := newTestStore(t)
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

// TestSetSlack: the message reference and the posted count are recorded without a new
// version, merged into the incident on read, only go forward, and survive later writes of the
// incident by writers that read them before (or after) they were set.
func TestSetSlack(t *testing.T) {
	s, _ := newTestStore(t)
	ctx := context.Background()
	inc := mustOpen(t, s, newIncident(keyA, "DisableKey", t0))
	ref := SlackRef{Channel: "C0KEYWARDEN", TS: "1795860000.000001"}

	// A writer that read the incident before the message was posted.
	stale := mustGet(t, s, inc.ID)

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

	t.Run("count only goes forward", func(t *testing.T) {
		if err := s.SetSlack(ctx, inc.ID, ref, 1); err != nil {
			t.Fatalf("SetSlack(1): %v", err)
		}
		if got := mustGet(t, s, inc.ID); got.SlackPosted != 2 {
			t.Errorf("SlackPosted: got %d, want 2 kept", got.SlackPosted)
		}
	})

	t.Run("a write from an older read keeps it", func(t *testing.T) {
		// UpdateAt on the version read before SetSlack: the version did not move, so it lands.
		_, err := s.UpdateAt(ctx, inc.ID, stale.Version, func(i *Incident) error {
			if i.Slack == nil {
				t.Errorf("UpdateAt's read does not carry the Slack reference")
			}
			i.Timeline = append(i.Timeline, Entry{At: t0, Kind: KindClick, Actor: "U0APPROVR1", Detail: "acknowledge"})
			return nil
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
		_, err := s.UpdateAt(ctx, inc.ID, cur.Version, func(i *Incident) error {
			calls++
			if calls == 1 {
				// The message refresh of an earlier change lands between this read and write.
				if err := s.SetSlack(ctx, inc.ID, ref, 3); err != nil {
					t.Fatalf("SetSlack: %v", err)
				}
			}
			i.Timeline = append(i.Timeline, Entry{At: t0, Kind: KindClick, Actor: "U0APPROVR2", Detail: "acknowledge"})
			return nil
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
		_, err := s.Update(ctx, inc.ID, func(i *Incident) error { i.State = StateIntentional; return nil })
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
		moved := SlackRef{Channel: "C0OTHER", TS: "1795860000.000009"}
		_, err := s.Update(ctx, other.ID, func(i *Incident) error { i.Slack, i.SlackPosted = &moved, 1; return nil })
		if err != nil {
			t.Fatalf("Update: %v", err)
		}
		if got := mustGet(t, s, other.ID); got.Slack == nil || *got.Slack != moved || got.SlackPosted != 1 {
			t.Errorf("after Update: got %+v, %d, want %+v, 1", got.Slack, got.SlackPosted, moved)
		}
	})

	t.Run("unknown incident", func(t *testing.T) {
		err := s.SetSlack(ctx, "KW-20261128-000000", ref, 1)
		if !errors.Is(err, ErrNotFound) {
			t.Errorf("SetSlack: got %v, want ErrNotFound", err)
		}
		if _, err := s.Get(ctx, "KW-20261128-000000"); !errors.Is(err, ErrNotFound) {
			t.Errorf("SetSlack created an item for an unknown incident: Get = %v", err)
		}
	})

	t.Run("incomplete reference", func(t *testing.T) {
		if err := s.SetSlack(ctx, inc.ID, SlackRef{Channel: "C0KEYWARDEN"}, 1); err == nil {
			t.Errorf("SetSlack without ts: got nil error")
		}
	})
}

// The store keeps an incident under DynamoDB's 400 KB item size limit however long its
// timeline grows. moto 5.2.1 enforces that limit only on UpdateItem, not on PutItem or a
// transaction's Put, so the test measures the stored item itself.
func TestLongTimelineFitsOneItem(t *testing.T) {
	s, _ := newTestStore(t)
	ctx := context.Background()
	inc := mustOpen(t, s, newIncident(keyA, "DisableKey", t0))
	detail := strings.Repeat("x", 1500)
	for round := range 3 {
		_, err := s.Update(ctx, inc.ID, func(inc *Incident) error {
			for i := range 400 {
				inc.Timeline = append(inc.Timeline, Entry{At: t0, Kind: KindReminder, Detail: fmt.Sprintf("%d.%d %s", round, i, detail)})
			}
			return nil
		})
		if err != nil {
			t.Fatalf("round %d: Update: %v", round, err)
		}
	}
	got := mustGet(t, s, inc.ID)
	if got.Timeline[0].Kind != KindOpened {
		t.Errorf("first entry: got %s, want the opening entry kept", got.Timeline[0].Kind)
	}
	if last := got.Timeline[len(got.Timeline)-1].Detail; !strings.HasPrefix(last, "2.399 ") {
		t.Errorf("last entry: got %.10q, want the latest one kept", last)
	}
	if kept := len(got.Timeline) - 1; kept+got.TimelineElided != 1+3*400 {
		t.Errorf("kept %d + elided %d entries, want 1201 in all", kept, got.TimelineElided)
	}
	raw, err := s.db.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(s.table), Key: pkKey(incidentPK(inc.ID))})
	if err != nil {
		t.Fatalf("GetItem: %v", err)
	}
	size := 0 // DynamoDB's item size: attribute names plus values; every attribute here is S or N
	for name, v := range raw.Item {
		size += len(name)
		switch v := v.(type) {
		case *types.AttributeValueMemberS:
			size += len(v.Value)
		case *types.AttributeValueMemberN:
			size += len(v.Value)
		}
	}
	if size > maxDocBytes+1024 || size >= 400_000 {
		t.Errorf("stored item: %d bytes, want at most the %d-byte budget and under 400 KB", size, maxDocBytes)
	}
}

func TestTrimTimeline(t *testing.T) {
	entries := func(from, to int) []Entry {
		var es []Entry
		for i := from; i < to; i++ {
			es = append(es, Entry{At: t0.Add(time.Duration(i) * time.Second), Kind: KindNote, Detail: fmt.Sprint(i)})
		}
		return es
	}
	marker := func(n, last int) Entry {
		return Entry{At: t0.Add(time.Duration(last) * time.Second), Kind: KindElided, Actor: "keywarden",
			Detail: fmt.Sprintf("%d entries elided to keep the incident within DynamoDB's 400 KB item limit", n)}
	}
	cat := func(parts ...[]Entry) []Entry {
		var out []Entry
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	tests := []struct {
		name       string
		timeline   []Entry
		elided     int
		keep       int
		want       []Entry
		wantElided int
	}{
		{name: "short", timeline: entries(0, 25), keep: 5, want: entries(0, 25)},
		{name: "just fits", timeline: entries(0, 30), keep: 10, want: entries(0, 30)},
		{name: "first trim", timeline: entries(0, 40), keep: 10,
			want: cat(entries(0, 20), []Entry{marker(10, 29)}, entries(30, 40)), wantElided: 10},
		{name: "trimmed again", timeline: cat(entries(0, 20), []Entry{marker(10, 29)}, entries(30, 45)), elided: 10, keep: 10,
			want: cat(entries(0, 20), []Entry{marker(15, 34)}, entries(35, 45)), wantElided: 15},
		{name: "trimmed before, fits now", timeline: cat(entries(0, 20), []Entry{marker(10, 29)}, entries(30, 35)), elided: 10, keep: 10,
			want: cat(entries(0, 20), []Entry{marker(10, 29)}, entries(30, 35)), wantElided: 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inc := Incident{Timeline: tt.timeline, TimelineElided: tt.elided}
			trimTimeline(&inc, tt.keep)
			if diff := cmp.Diff(tt.want, inc.Timeline); diff != "" {
				t.Errorf("timeline (-want +got):\n%s", diff)
			}
			if inc.TimelineElided != tt.wantElided {
				t.Errorf("TimelineElided: got %d, want %d", inc.TimelineElided, tt.wantElided)
			}
		})
	}
}

func TestTruncate(t *testing.T) {
	tests := []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"exactly10!", 10, "exactly10!"},
		{"abcdefghijkl", 10, "abcdefg…"},
		{"ééééé", 8, "éé…"}, // never cuts a rune in half
	}
	for _, tt := range tests {
		if got := truncate(tt.in, tt.n); got != tt.want {
			t.Errorf("truncate(%q, %d): got %q, want %q", tt.in, tt.n, got, tt.want)
		}
	}
}

func TestNewID(t *testing.T) {
	// Late on the 28th in UTC-10 is already the 29th in UTC.
	at := time.Date(2026, 11, 28, 20, 0, 0, 0, time.FixedZone("HST", -10*3600))
	re := regexp.MustCompile(`^KW-20261129-[0-9a-f]{6}$`)
	seen := map[string]bool{}
	for range 100 {
		id := NewID(at)
		if !re.MatchString(id) {
			t.Fatalf("NewID: got %q, want KW-20261129-xxxxxx", id)
		}
		seen[id] = true
	}
	if len(seen) < 95 {
		t.Errorf("100 IDs, %d distinct: not random enough", len(seen))
	}
}

// fakeDB fails every call the way a throttled table does once the SDK has spent its retries.
type fakeDB struct {
	DynamoAPI
	err error
}

func (f fakeDB) GetItem(context.Context, *dynamodb.GetItemInput, ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error) {
	return nil, f.err
}

func (f fakeDB) TransactWriteItems(context.Context, *dynamodb.TransactWriteItemsInput, ...func(*dynamodb.Options)) (*dynamodb.TransactWriteItemsOutput, error) {
	return nil, f.err
}

func TestThrottlingIsReturned(t *testing.T) {
	throttled := &types.ProvisionedThroughputExceededException{Message: aws.String("slow down")}
	s := NewStore(fakeDB{err: throttled}, "t")
	ctx := context.Background()
	calls := []struct {
		name string
		call func() error
	}{
		{"Open", func() error { _, _, err := s.Open(ctx, newIncident(keyA, "DisableKey", t0), Entry{}, nil); return err }},
		{"Get", func() error { _, err := s.Get(ctx, "KW-1"); return err }},
		{"OpenFor", func() error { _, err := s.OpenFor(ctx, keyA); return err }},
		{"Update", func() error { _, err := s.Update(ctx, "KW-1", func(*Incident) error { return nil }); return err }},
	}
	for _, c := range calls {
		t.Run(c.name, func(t *testing.T) {
			var got *types.ProvisionedThroughputExceededException
			if err := c.call(); !errors.As(err, &got) {
				t.Errorf("got %v, want the throttling error wrapped", err)
			}
		})
	}
}
