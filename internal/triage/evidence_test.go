package triage

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
	svc := New(keys, radius, store, nil, slog.New(slog.NewTextHandler(io.Discard, nil))).WithClock(func() time.Time { return now })
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
