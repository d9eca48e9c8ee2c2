package intake

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/keywarden/keywarden/internal/blast"
	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/keyevent"
	"github.com/keywarden/keywarden/internal/kmskey"
)

const (
	keyARN   = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
	otherARN = "arn:aws:kms:us-east-1:123456789012:key/0000abcd-12ab-34cd-56ef-000000000000"
)

var (
	eventTime = time.Date(2026, 11, 20, 9, 30, 0, 0, time.UTC)
	now       = time.Date(2026, 11, 20, 9, 35, 0, 0, time.UTC)
)

// fakeKeys answers from a map of key ARN → key.
type fakeKeys struct {
	keys     map[string]kmskey.Key
	store    map[string][]kmskey.Key
	storeErr error
	err      error
	arnsAsIs bool
}

func (f *fakeKeys) ARN(_ context.Context, ref string) (string, error) {
	if f.err != nil {
		return "", f.err
	}
	for arn, k := range f.keys {
		if ref == arn || ref == k.ID {
			return arn, nil
		}
	}
	if f.arnsAsIs && incident.IsKeyARN(ref) {
		return ref, nil // as kmskey.Resolver: a key ARN is its own answer, deleted or not
	}
	return "", kmskey.ErrNotFound
}

func (f *fakeKeys) Describe(ctx context.Context, ref string) (kmskey.Key, error) {
	arn, err := f.ARN(ctx, ref)
	if err != nil {
		return kmskey.Key{}, err
	}
	k, ok := f.keys[arn]
	if !ok {
		return kmskey.Key{}, kmskey.ErrNotFound
	}
	return k, nil
}

func (f *fakeKeys) Alias(context.Context, string) (string, error) { return "alias/orders", nil }

func (f *fakeKeys) KeysInStore(_ context.Context, id string) ([]kmskey.Key, error) {
	return f.store[id], f.storeErr
}

type fakeRadius map[string]blast.Radius

func (f fakeRadius) Find(_ context.Context, keyARN string) (blast.Radius, error) {
	return f[keyARN], nil
}

func (f fakeRadius) FindMany(_ context.Context, keyARNs []string) (map[string]blast.Radius, error) {
	out := map[string]blast.Radius{}
	for _, k := range keyARNs {
		out[k] = f[k]
	}
	return out, nil
}

// memStore keeps incidents in memory with the store's open-once semantics; deliveries are
// recorded with RecordDelivery, as dynamostore does, so they count once per event.
type memStore struct {
	mu        sync.Mutex
	byID      map[string]incident.Incident
	open      map[string]string
	sightings []incident.Sighting
	n         int
}

func newMemStore() *memStore {
	return &memStore{byID: map[string]incident.Incident{}, open: map[string]string{}}
}

func (m *memStore) Open(_ context.Context, inc incident.Incident, delivery incident.Entry, fold func(*incident.Incident)) (incident.Incident, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if id, ok := m.open[inc.KeyARN]; ok {
		got := m.byID[id]
		got.RecordDelivery(delivery)
		if fold != nil {
			fold(&got)
		}
		got.Version++
		m.byID[id] = got
		return got, false, nil
	}
	m.n++
	inc.ID, inc.Version = fmt.Sprintf("KW-%d", m.n), 1
	inc.RecordDelivery(delivery)
	m.byID[inc.ID], m.open[inc.KeyARN] = inc, inc.ID
	return inc, true, nil
}

func (m *memStore) OpenFor(_ context.Context, keyARN string) (incident.Incident, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	id, ok := m.open[keyARN]
	if !ok {
		return incident.Incident{}, incident.ErrNotFound
	}
	return m.byID[id], nil
}

func (m *memStore) Update(_ context.Context, id string, mutate func(*incident.Incident) error) (incident.Incident, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	got, ok := m.byID[id]
	if !ok {
		return got, incident.ErrNotFound
	}
	if err := mutate(&got); err != nil {
		return got, err
	}
	got.Version++
	m.byID[id] = got
	if got.State.Closed() {
		delete(m.open, got.KeyARN)
	}
	return got, nil
}

func (m *memStore) RecordSighting(_ context.Context, sg incident.Sighting) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sightings = append(m.sightings, sg)
	return nil
}

func cluster(id string, canStop bool) incident.Cluster {
	c := incident.Cluster{Identifier: id, ARN: "arn:aws:rds:us-east-1:123456789012:cluster:" + id, Engine: "aurora-postgresql", Status: "available", CanStop: canStop, Uses: []string{"storage"}}
	if !canStop {
		c.CannotStopReason = "global database member"
	}
	return c
}

func newService(keys *fakeKeys, radius fakeRadius, store *memStore) *Service {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	return New(keys, radius, store, log).WithClock(func() time.Time { return now })
}

func disabled() *fakeKeys {
	return &fakeKeys{keys: map[string]kmskey.Key{keyARN: {ARN: keyARN, ID: "1234abcd-12ab-34cd-56ef-1234567890ab", State: incident.KeyStateDisabled, Manager: "CUSTOMER"}}}
}

func event(name string, kind keyevent.Kind) keyevent.Event {
	return keyevent.Event{ID: "evt-1", Name: name, Kind: kind, Time: eventTime, KeyRef: keyARN,
		Actor: incident.Actor{ARN: "arn:aws:iam::123456789012:user/alice", SourceIP: "192.0.2.10"}}
}

func TestLossOpensOneIncidentWithDeadline(t *testing.T) {
	store := newMemStore()
	svc := newService(disabled(), fakeRadius{keyARN: {KeyARN: keyARN, Clusters: []incident.Cluster{cluster("orders", true), cluster("billing", true)}}}, store)

	got, err := svc.HandleKeyEvent(context.Background(), event("DisableKey", keyevent.KindLoss))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Action != ActionOpened {
		t.Fatalf("got %+v, want one opened outcome", got)
	}
	inc := store.byID[got[0].IncidentID]
	want := eventTime.Add(incident.RecoverableWindow)
	if inc.Deadline == nil || !inc.Deadline.Equal(want) {
		t.Errorf("deadline: got %v, want %v", inc.Deadline, want)
	}
	if inc.Trigger != "DisableKey" || inc.KeyState != incident.KeyStateDisabled || inc.KeyAlias != "alias/orders" {
		t.Errorf("got trigger %q state %q alias %q", inc.Trigger, inc.KeyState, inc.KeyAlias)
	}
	if len(inc.Clusters) != 2 || inc.Clusters[0].LostAccessAt == nil {
		t.Errorf("clusters: got %+v", inc.Clusters)
	}

	// The same event delivered again, and a second loss event: folded, never a second
	// incident; deliveries count distinct events.
	second := event("ScheduleKeyDeletion", keyevent.KindLoss)
	second.ID = "evt-2"
	for _, ev := range []keyevent.Event{event("DisableKey", keyevent.KindLoss), second} {
		got, err = svc.HandleKeyEvent(context.Background(), ev)
		if err != nil {
			t.Fatal(err)
		}
		if got[0].Action != ActionFolded || got[0].IncidentID != inc.ID {
			t.Fatalf("%s: got %+v, want folded into %s", ev.Name, got, inc.ID)
		}
	}
	if n := len(store.byID); n != 1 {
		t.Errorf("incidents: got %d, want 1", n)
	}
	folded := store.byID[inc.ID]
	if folded.Deliveries != 2 {
		t.Errorf("deliveries: got %d, want 2 (evt-1 twice counts once)", folded.Deliveries)
	}
	var sources []string
	for _, e := range folded.Timeline {
		if e.Kind == incident.KindDelivery {
			sources = append(sources, e.Source)
		}
	}
	if diff := cmp.Diff([]string{"evt-1", "evt-2"}, sources); diff != "" {
		t.Errorf("delivery entries by event (-want +got):\n%s", diff)
	}
}

func TestDeletionDateEarlierThanWindowIsTheDeadline(t *testing.T) {
	keys := disabled()
	deletion := eventTime.Add(7*24*time.Hour - 3*time.Hour)
	k := keys.keys[keyARN]
	k.State, k.DeletionDate = incident.KeyStatePendingDeletion, &deletion
	keys.keys[keyARN] = k
	store := newMemStore()
	svc := newService(keys, fakeRadius{keyARN: {Clusters: []incident.Cluster{cluster("orders", true)}}}, store)

	// The window starts an hour after the deletion was scheduled (RDS noticed later), so
	// the deletion date comes first.
	ev := event("ScheduleKeyDeletion", keyevent.KindLoss)
	ev.Time = eventTime.Add(time.Hour)
	got, err := svc.HandleKeyEvent(context.Background(), ev)
	if err != nil {
		t.Fatal(err)
	}
	inc := store.byID[got[0].IncidentID]
	if inc.Deadline == nil || !inc.Deadline.Equal(deletion) {
		t.Errorf("deadline: got %v, want the deletion date %v", inc.Deadline, deletion)
	}
}

func TestOutcomes(t *testing.T) {
	radius := fakeRadius{keyARN: {Clusters: []incident.Cluster{cluster("orders", true)}}}
	tests := []struct {
		name   string
		keys   func() *fakeKeys
		radius fakeRadius
		ev     keyevent.Event
		want   Action
	}{
		{"failed call", disabled, radius, func() keyevent.Event {
			e := event("DisableKey", keyevent.KindLoss)
			e.ErrorCode = "AccessDeniedException"
			return e
		}(), ActionIgnored},
		{"aws-managed key", func() *fakeKeys {
			k := disabled()
			key := k.keys[keyARN]
			key.Manager = "AWS"
			k.keys[keyARN] = key
			return k
		}, radius, event("DisableKey", keyevent.KindLoss), ActionIgnored},
		{"no aurora dependents", disabled, fakeRadius{}, event("DisableKey", keyevent.KindLoss), ActionNoImpact},
		{"key enabled again by the time we look", func() *fakeKeys {
			k := disabled()
			key := k.keys[keyARN]
			key.State = incident.KeyStateEnabled
			k.keys[keyARN] = key
			return k
		}, radius, event("DisableKey", keyevent.KindLoss), ActionIgnored},
		{"unknown key id", disabled, radius, func() keyevent.Event {
			e := event("DisableKey", keyevent.KindLoss)
			e.KeyRef = "ffffffff-0000-0000-0000-000000000000"
			return e
		}(), ActionIgnored},
		{"enable without an incident", disabled, radius, event("EnableKey", keyevent.KindRestore), ActionIgnored},
		{"policy change on an enabled key", func() *fakeKeys {
			k := disabled()
			key := k.keys[keyARN]
			key.State = incident.KeyStateEnabled
			k.keys[keyARN] = key
			return k
		}, radius, event("PutKeyPolicy", keyevent.KindAccess), ActionIgnored},
		{"grant revoked on a disabled key with no incident", disabled, radius, event("RevokeGrant", keyevent.KindAccess), ActionOpened},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := newMemStore()
			got, err := newService(tt.keys(), tt.radius, store).HandleKeyEvent(context.Background(), tt.ev)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 || got[0].Action != tt.want {
				t.Fatalf("got %+v, want action %s", got, tt.want)
			}
			if n, want := len(got[0].Changed), map[bool]int{true: 1}[tt.want == ActionOpened]; n != want {
				t.Errorf("changed: got %d incidents, want %d", n, want)
			}
			if tt.want != ActionOpened && len(store.byID) != 0 {
				t.Errorf("got %d incidents, want none", len(store.byID))
			}
			if tt.want == ActionNoImpact && len(store.sightings) != 1 {
				t.Errorf("got %d sightings, want 1", len(store.sightings))
			}
		})
	}
}

// TestOutcomeCarriesWhatChanged: intake announces nothing itself; every outcome that changed
// an incident carries it as stored, for the caller to announce.
func TestOutcomeCarriesWhatChanged(t *testing.T) {
	store := newMemStore()
	svc := newService(disabled(), fakeRadius{keyARN: {KeyARN: keyARN, Clusters: []incident.Cluster{cluster("orders", true)}}}, store)
	second := event("ScheduleKeyDeletion", keyevent.KindLoss)
	second.ID = "evt-2"
	restore := event("EnableKey", keyevent.KindRestore)
	restore.ID = "evt-3"
	for _, ev := range []keyevent.Event{event("DisableKey", keyevent.KindLoss), second, restore} {
		got, err := svc.HandleKeyEvent(context.Background(), ev)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || len(got[0].Changed) != 1 {
			t.Fatalf("%s: got %+v, want one outcome with one changed incident", ev.Name, got)
		}
		stored := store.byID[got[0].IncidentID]
		if ch := got[0].Changed[0]; ch.ID != stored.ID || ch.Version != stored.Version {
			t.Errorf("%s: changed %s version %d, want the stored %s version %d", ev.Name, ch.ID, ch.Version, stored.ID, stored.Version)
		}
	}
}

func TestRestoreUpdatesOpenIncident(t *testing.T) {
	keys := disabled()
	store := newMemStore()
	svc := newService(keys, fakeRadius{keyARN: {Clusters: []incident.Cluster{cluster("orders", true)}}}, store)
	opened, err := svc.HandleKeyEvent(context.Background(), event("DisableKey", keyevent.KindLoss))
	if err != nil {
		t.Fatal(err)
	}
	k := keys.keys[keyARN]
	k.State = incident.KeyStateEnabled
	keys.keys[keyARN] = k

	enable := event("EnableKey", keyevent.KindRestore)
	enable.ID = "evt-restore"
	got, err := svc.HandleKeyEvent(context.Background(), enable)
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Action != ActionUpdated || got[0].IncidentID != opened[0].IncidentID {
		t.Fatalf("got %+v, want updated %s", got, opened[0].IncidentID)
	}
	inc := store.byID[opened[0].IncidentID]
	if inc.KeyState != incident.KeyStateEnabled || inc.State != incident.StateOpen {
		t.Errorf("got key %s incident %s, want Enabled and still open (clusters may need a restart)", inc.KeyState, inc.State)
	}
	change, ok := inc.LastEntry(incident.KindKeyChange)
	if !ok || change.Result != incident.Result(incident.KeyStateEnabled) || change.ID != incident.EntryID("key", "evt-restore", "Enabled") {
		t.Errorf("key change: got %+v, want one to Enabled, named by the EnableKey event", change)
	}
	if inc.Deliveries != 2 {
		t.Errorf("deliveries: got %d, want 2", inc.Deliveries)
	}
}

func TestCustomKeyStoreDisconnectOpensPerKey(t *testing.T) {
	keys := disabled()
	k := keys.keys[keyARN]
	k.State, k.CustomKeyStoreID = incident.KeyStateUnavailable, "cks-1234567890abcdef0"
	keys.keys[keyARN] = k
	keys.keys[otherARN] = kmskey.Key{ARN: otherARN, State: incident.KeyStateUnavailable, Manager: "CUSTOMER", CustomKeyStoreID: "cks-1234567890abcdef0"}
	keys.store = map[string][]kmskey.Key{"cks-1234567890abcdef0": {keys.keys[keyARN], keys.keys[otherARN]}}
	store := newMemStore()
	svc := newService(keys, fakeRadius{keyARN: {Clusters: []incident.Cluster{cluster("orders", true)}}}, store)

	ev := event("DisconnectCustomKeyStore", keyevent.KindLoss)
	ev.KeyRef, ev.CustomKeyStoreID = "", "cks-1234567890abcdef0"
	got, err := svc.HandleKeyEvent(context.Background(), ev)
	if err != nil {
		t.Fatal(err)
	}
	actions := map[string]Action{}
	for _, o := range got {
		actions[o.KeyARN] = o.Action
	}
	if actions[keyARN] != ActionOpened || actions[otherARN] != ActionNoImpact {
		t.Errorf("got %v, want the key with clusters opened and the other recorded as no impact", actions)
	}
}

func TestDeletedKeyClosesAsLost(t *testing.T) {
	keys := &fakeKeys{keys: map[string]kmskey.Key{}}
	store := newMemStore()
	svc := newService(keys, fakeRadius{keyARN: {Clusters: []incident.Cluster{cluster("orders", true)}}}, store)
	// Describe answers NotFound for the deleted key, but the KMS event carries its ARN.
	svc.keys = &arnPassthrough{keys}

	got, err := svc.HandleKeyEvent(context.Background(), event("KMS CMK Deletion", keyevent.KindLoss))
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Action != ActionKeyDeleted {
		t.Fatalf("got %+v, want lost", got)
	}
	inc := store.byID[got[0].IncidentID]
	if inc.State != incident.StateLost || inc.KeyState != incident.KeyStateDeleted {
		t.Errorf("got state %s key %s, want lost and Deleted", inc.State, inc.KeyState)
	}
	if e, ok := inc.LastEntry(incident.KindState); !ok || e.Result != incident.Result(incident.StateLost) {
		t.Errorf("got state entry %+v, want the transition to lost", e)
	}
	if _, err := store.OpenFor(context.Background(), keyARN); !errors.Is(err, incident.ErrNotFound) {
		t.Errorf("a lost incident must not stay open: %v", err)
	}
}

func TestAWSFailureIsReturnedForRetry(t *testing.T) {
	keys := disabled()
	keys.err = errors.New("ThrottlingException: Rate exceeded")
	_, err := newService(keys, fakeRadius{}, newMemStore()).HandleKeyEvent(context.Background(), event("DisableKey", keyevent.KindLoss))
	if err == nil {
		t.Fatal("got nil error, want the throttling error so Lambda retries")
	}
}

// arnPassthrough resolves full key ARNs without KMS, as the real resolver does.
type arnPassthrough struct{ *fakeKeys }

func (a *arnPassthrough) ARN(_ context.Context, ref string) (string, error) { return ref, nil }

func (m *memStore) ForKey(_ context.Context, keyARN string) ([]incident.Incident, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []incident.Incident
	for _, inc := range m.byID {
		if inc.KeyARN == keyARN {
			out = append(out, inc)
		}
	}
	return out, nil
}

func TestRepeatedDeletionEventFoldsIntoTheLostIncident(t *testing.T) {
	keys := &fakeKeys{keys: map[string]kmskey.Key{}}
	store := newMemStore()
	svc := newService(keys, fakeRadius{keyARN: {Clusters: []incident.Cluster{cluster("orders", true)}}}, store)
	svc.keys = &arnPassthrough{keys}

	first, err := svc.HandleKeyEvent(context.Background(), event("KMS CMK Deletion", keyevent.KindLoss))
	if err != nil {
		t.Fatal(err)
	}
	repeat := event("KMS CMK Deletion", keyevent.KindLoss)
	repeat.ID = "evt-2" // KMS sends the event again: a new event, not a redelivery
	again, err := svc.HandleKeyEvent(context.Background(), repeat)
	if err != nil {
		t.Fatal(err)
	}
	if len(store.byID) != 1 || again[0].Action != ActionFolded || again[0].IncidentID != first[0].IncidentID {
		t.Fatalf("got %d incidents and %+v, want the repeat folded into %s", len(store.byID), again, first[0].IncidentID)
	}
	if d := store.byID[first[0].IncidentID].Deliveries; d != 2 {
		t.Errorf("deliveries: got %d, want 2", d)
	}
}

func TestClusterEvidenceOpensForAnEnabledKey(t *testing.T) {
	keys := disabled()
	k := keys.keys[keyARN]
	k.State = incident.KeyStateEnabled
	keys.keys[keyARN] = k
	store := newMemStore()
	svc := newService(keys, fakeRadius{keyARN: {Clusters: []incident.Cluster{cluster("orders", true)}}}, store)

	o, err := svc.Ensure(context.Background(), Signal{KeyARN: keyARN, Trigger: "RDS-EVENT-0419", At: eventTime})
	if err != nil || o.Action != ActionIgnored {
		t.Fatalf("a key signal alone: got %+v, %v; want ignored for an Enabled key", o, err)
	}
	o, err = svc.Ensure(context.Background(), Signal{KeyARN: keyARN, Trigger: "RDS-EVENT-0419", At: eventTime, ClusterLostAccess: true})
	if err != nil || o.Action != ActionOpened {
		t.Fatalf("a cluster that lost access: got %+v, %v; want opened although the key is Enabled", o, err)
	}
}

// TestFoldKeepsWindowRDSDated: a key event folded after RDS dated a cluster's window leaves it,
// and one earlier than the key-side estimate moves it (lifecycle.KeyEvidence).
func TestFoldKeepsWindowRDSDated(t *testing.T) {
	for _, tc := range []struct {
		name    string
		fromRDS bool
		want    time.Time
	}{
		{"dated by RDS", true, eventTime},
		{"key-side estimate", false, eventTime.Add(-time.Hour)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := newMemStore()
			svc := newService(disabled(), fakeRadius{keyARN: {Clusters: []incident.Cluster{cluster("orders", true)}}}, store)
			first, err := svc.HandleKeyEvent(context.Background(), event("DisableKey", keyevent.KindLoss))
			if err != nil {
				t.Fatal(err)
			}
			id := first[0].IncidentID
			inc := store.byID[id]
			inc.Clusters[0].WindowFromRDS = tc.fromRDS
			store.byID[id] = inc

			earlier := event("ScheduleKeyDeletion", keyevent.KindLoss)
			earlier.ID, earlier.Time = "evt-2", eventTime.Add(-time.Hour)
			if _, err := svc.HandleKeyEvent(context.Background(), earlier); err != nil {
				t.Fatal(err)
			}
			if got := store.byID[id].Clusters[0].LostAccessAt; got == nil || !got.Equal(tc.want) {
				t.Errorf("got window start %v, want %v", got, tc.want)
			}
		})
	}
}

// TestOwnerStoppedClusterKeptStopped: a cluster already plainly stopped when the loss opens the
// incident was stopped by its owner (Aurora reports a key loss as inaccessible-…, never as
// stopped), so the one plan leaves it stopped; one that stops after is started.
func TestOwnerStoppedClusterKeptStopped(t *testing.T) {
	store := newMemStore()
	stopped := cluster("reports", true)
	stopped.Status = incident.StatusStopped
	svc := newService(disabled(), fakeRadius{keyARN: {KeyARN: keyARN, Clusters: []incident.Cluster{cluster("orders", true), stopped}}}, store)
	got, err := svc.HandleKeyEvent(context.Background(), event("DisableKey", keyevent.KindLoss))
	if err != nil || len(got) != 1 {
		t.Fatalf("got %+v, %v", got, err)
	}
	inc := store.byID[got[0].IncidentID]
	if inc.Clusters[0].StoppedBeforeLoss || !inc.Clusters[1].StoppedBeforeLoss {
		t.Fatalf("stopped before loss: orders %v, reports %v; want false, true", inc.Clusters[0].StoppedBeforeLoss, inc.Clusters[1].StoppedBeforeLoss)
	}
	// The loss stops orders afterwards (moto's stand-in for the recoverable state): it is started,
	// reports is not.
	inc.Clusters[0].Status = incident.StatusStopped
	steps, err := inc.Plan()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range steps {
		if s.Kind != incident.StepStartDBCluster {
			continue
		}
		if runs := s.Runs(); runs != (s.Target == "orders") {
			t.Errorf("StartDBCluster %s runs %v (skip %q)", s.Target, runs, s.Skip)
		}
	}
}
