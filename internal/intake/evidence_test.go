package intake

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/blast"
	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/keyevent"
	"github.com/keywarden/keywarden/internal/kmskey"
)

// countingRadius counts Find and FindMany calls.
type countingRadius struct {
	fakeRadius
	find, many int
}

func (c *countingRadius) Find(ctx context.Context, k string) (blast.Radius, error) {
	c.find++
	return c.fakeRadius.Find(ctx, k)
}

func (c *countingRadius) FindMany(ctx context.Context, ks []string) (map[string]blast.Radius, error) {
	c.many++
	return c.fakeRadius.FindMany(ctx, ks)
}

// TestCustomKeyStoreOneListingOneFailure: DisconnectCustomKeyStore opens one incident per key
// of the store from ONE RDS listing, and a key whose DescribeKey is denied is a failed outcome
// beside them, not an error that fails the others.
func TestCustomKeyStoreOneListingOneFailure(t *testing.T) {
	store := newMemStore()
	unavailable := func(arn string) kmskey.Key {
		return kmskey.Key{ARN: arn, State: incident.KeyStateUnavailable, Manager: "CUSTOMER", CustomKeyStoreID: "cks-1"}
	}
	keys := &fakeKeys{
		keys:     map[string]kmskey.Key{keyARN: unavailable(keyARN), otherARN: unavailable(otherARN)},
		store:    map[string][]kmskey.Key{"cks-1": {unavailable(keyARN), unavailable(otherARN)}},
		storeErr: &kmskey.UndescribedKeys{StoreID: "cks-1", Failed: map[string]error{"arn:aws:kms:us-east-1:123456789012:key/denied": kmskey.ErrDenied}},
	}
	radius := &countingRadius{fakeRadius: fakeRadius{
		keyARN:   {Clusters: []incident.Cluster{cluster("orders", true)}},
		otherARN: {Clusters: []incident.Cluster{cluster("billing", true)}},
	}}
	svc := New(keys, radius, store, slog.New(slog.NewTextHandler(io.Discard, nil))).WithClock(func() time.Time { return now })
	ev := keyevent.Event{ID: "evt-cks", Name: "DisconnectCustomKeyStore", Kind: keyevent.KindLoss, Time: eventTime, CustomKeyStoreID: "cks-1"}
	got, err := svc.HandleKeyEvent(context.Background(), ev)
	if err != nil {
		t.Fatalf("HandleKeyEvent: %v (one denied key must not fail the event)", err)
	}
	actions := map[Action]int{}
	for _, o := range got {
		actions[o.Action]++
	}
	if actions[ActionOpened] != 2 || actions[ActionFailed] != 1 {
		t.Errorf("got outcomes %+v, want 2 opened and 1 failed", got)
	}
	if radius.many != 1 || radius.find != 0 {
		t.Errorf("got %d FindMany and %d Find calls, want one shared listing", radius.many, radius.find)
	}
}

// TestDeletedReplicaStaysOpen: a multi-Region replica key scheduled for deletion, then deleted
// (DescribeKey NotFound): the incident is not closed as lost — ReplicateKey on the primary
// re-creates the replica — and says how.
func TestDeletedReplicaStaysOpen(t *testing.T) {
	store := newMemStore()
	primary := "arn:aws:kms:us-west-2:123456789012:key/mrk-1234abcd12ab34cd56ef1234567890ab"
	keys := &fakeKeys{arnsAsIs: true, keys: map[string]kmskey.Key{keyARN: {ARN: keyARN, State: incident.KeyStatePendingDeletion, Manager: "CUSTOMER", MultiRegion: true, ReplicaOf: primary}}}
	svc := newService(keys, fakeRadius{keyARN: {Clusters: []incident.Cluster{cluster("orders", true)}}}, store)
	if _, err := svc.HandleKeyEvent(context.Background(), event("ScheduleKeyDeletion", keyevent.KindLoss)); err != nil {
		t.Fatal(err)
	}
	delete(keys.keys, keyARN) // deleted: DescribeKey answers NotFound
	ev := event(keyevent.DetailTypeCMKDeletion, keyevent.KindLoss)
	ev.ID = "evt-2"
	if _, err := svc.HandleKeyEvent(context.Background(), ev); err != nil && !errors.Is(err, kmskey.ErrNotFound) {
		t.Fatal(err)
	}
	inc, err := store.OpenFor(context.Background(), keyARN)
	if err != nil {
		t.Fatalf("the replica's incident is no longer open: %v", err)
	}
	if inc.KeyState != incident.KeyStateDeleted || inc.KeyReplicaOf != primary {
		t.Errorf("got key %s, replica of %q; want Deleted, %s", inc.KeyState, inc.KeyReplicaOf, primary)
	}
	if err := inc.Fixable(); err == nil || !strings.Contains(err.Error(), "ReplicateKey") || !strings.Contains(err.Error(), primary) {
		t.Errorf("Fixable: got %v, want ReplicateKey on %s", err, primary)
	}
}

// TestClusterEvidenceWhateverTheKey: a cluster's own report opens the incident for an
// AWS-managed key and for a key DescribeKey denies (recorded Unknown with why), where a key
// event alone would not.
func TestClusterEvidenceWhateverTheKey(t *testing.T) {
	foreign := "arn:aws:kms:us-east-1:444455556666:key/f"
	for _, tc := range []struct {
		name  string
		key   string
		keys  *fakeKeys
		state incident.KeyState
	}{
		{"AWS-managed", keyARN, &fakeKeys{keys: map[string]kmskey.Key{keyARN: {ARN: keyARN, State: incident.KeyStateEnabled, Manager: "AWS"}}}, incident.KeyStateEnabled},
		{"denied", foreign, &fakeKeys{err: kmskey.ErrDenied}, incident.KeyStateUnknown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := newMemStore()
			c := cluster("orders", true)
			svc := newService(tc.keys, fakeRadius{tc.key: {Clusters: []incident.Cluster{c}}}, store)
			o, err := svc.Ensure(context.Background(), Signal{KeyARN: tc.key, Trigger: "RDS-EVENT-0419", At: eventTime, EventID: "e", ClusterLostAccess: true, Cluster: &c})
			if err != nil || o.Action != ActionOpened {
				t.Fatalf("got %+v, %v; want opened", o, err)
			}
			inc, _ := store.OpenFor(context.Background(), tc.key)
			if inc.KeyState != tc.state || (tc.state == incident.KeyStateUnknown && inc.KeyStateReason == "") || !inc.Clusters[0].LostKeyAccess {
				t.Errorf("got key %s (%q), cluster lost access %v; want %s, holding", inc.KeyState, inc.KeyStateReason, inc.Clusters[0].LostKeyAccess, tc.state)
			}
			if inc.KeyAccount != incident.KeyAccount(tc.key) {
				t.Errorf("got key account %q, want %q", inc.KeyAccount, incident.KeyAccount(tc.key))
			}
		})
	}
}

// TestLaterKeyEventFillsActorAndEarlierLoss: an incident RDS opened (no actor, lost at the
// 0419's time) takes the DisableKey event that arrives later: its actor, and its earlier time;
// a later time never moves it.
func TestLaterKeyEventFillsActorAndEarlierLoss(t *testing.T) {
	store := newMemStore()
	c := cluster("orders", true)
	svc := newService(disabled(), fakeRadius{keyARN: {Clusters: []incident.Cluster{c}}}, store)
	rdsAt := eventTime.Add(30 * time.Minute)
	if _, err := svc.Ensure(context.Background(), Signal{KeyARN: keyARN, Trigger: "RDS-EVENT-0419", At: rdsAt, EventID: "rds", ClusterLostAccess: true, Cluster: &c}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.HandleKeyEvent(context.Background(), event("DisableKey", keyevent.KindLoss)); err != nil {
		t.Fatal(err)
	}
	inc, _ := store.OpenFor(context.Background(), keyARN)
	if inc.Actor.ARN != "arn:aws:iam::123456789012:user/alice" || !inc.LostAt.Equal(eventTime) {
		t.Errorf("got actor %q, lost at %v; want alice, %v", inc.Actor.Name(), inc.LostAt, eventTime)
	}
	late := event("DisableKey", keyevent.KindLoss)
	late.ID, late.Time = "evt-late", eventTime.Add(2*time.Hour)
	if _, err := svc.HandleKeyEvent(context.Background(), late); err != nil {
		t.Fatal(err)
	}
	if inc, _ = store.OpenFor(context.Background(), keyARN); !inc.LostAt.Equal(eventTime) {
		t.Errorf("a later event moved the loss to %v, want %v", inc.LostAt, eventTime)
	}
}

// TestCustomKeyStoreThrottledKeyRetries: a key of the store that could not be described for a
// reason a retry may cure (throttling) fails the event, so Lambda retries it (and, in the end,
// the failure queue's alarm sees it) — not a failed outcome in a log line (found in review).
func TestCustomKeyStoreThrottledKeyRetries(t *testing.T) {
	keys := &fakeKeys{
		store:    map[string][]kmskey.Key{"cks-1": nil},
		storeErr: &kmskey.UndescribedKeys{StoreID: "cks-1", Failed: map[string]error{"arn:aws:kms:us-east-1:123456789012:key/slow": errors.New("ThrottlingException: Rate exceeded")}},
	}
	svc := New(keys, fakeRadius{}, newMemStore(), slog.New(slog.NewTextHandler(io.Discard, nil))).WithClock(func() time.Time { return now })
	ev := keyevent.Event{ID: "evt-cks", Name: "DisconnectCustomKeyStore", Kind: keyevent.KindLoss, Time: eventTime, CustomKeyStoreID: "cks-1"}
	if _, err := svc.HandleKeyEvent(context.Background(), ev); err == nil {
		t.Fatal("HandleKeyEvent: nil error for a throttled key; want an error so the event is retried")
	}
}
