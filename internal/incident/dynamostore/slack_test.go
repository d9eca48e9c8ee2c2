package dynamostore

import (
	"context"
	"testing"

	"github.com/keywarden/keywarden/internal/incident"
)

// TestSlackDelivery: the slack item records what the message shows and why delivery failed,
// without a new version; reads lay it over the incident and settle slack_delivery; a write of
// the incident keeps it; a repost may start its thread's count over.
func TestSlackDelivery(t *testing.T) {
	s := newEnv(t, "", false).store()
	ctx := context.Background()
	inc := mustOpen(t, s, newIncident(keyA, "DisableKey", t0))
	if d := inc.SlackDelivery; d.State != incident.DeliveryPending || d.Pending != 1+len(inc.Timeline) {
		t.Fatalf("new incident: slack_delivery %+v, want pending: the message and %d entries", d, len(inc.Timeline))
	}
	ref := incident.SlackRef{Channel: "C0KEYWARDEN", TS: "1795860000.000001"}
	if err := s.SetSlack(ctx, inc.ID, ref, inc.TimelineSeq); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordSlackDelivery(ctx, inc.ID, inc.Version, ""); err != nil {
		t.Fatal(err)
	}
	got := mustGet(t, s, inc.ID)
	if d := got.SlackDelivery; d.State != incident.DeliveryDelivered || d.Pending != 0 || got.SlackShown != inc.Version || got.Version != inc.Version {
		t.Fatalf("delivered: %+v shown %d version %d", d, got.SlackShown, got.Version)
	}
	if ids, err := s.SlackPending(ctx); err != nil || len(ids) != 0 {
		t.Errorf("SlackPending: %v %v, want none", ids, err)
	}

	// A change: the message and the new entry are pending; the write keeps the slack item.
	next, err := s.Update(ctx, inc.ID, func(i *incident.Incident) error {
		i.AddEntry(incident.Entry{At: t0, Kind: incident.KindNote, Actor: "keywarden", Detail: "a change"})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if d := next.SlackDelivery; d.State != incident.DeliveryPending || d.Pending != 2 {
		t.Errorf("after a change (Update's result): %+v, want 2 pending", d)
	}
	if d := mustGet(t, s, inc.ID).SlackDelivery; d.State != incident.DeliveryPending || d.Pending != 2 {
		t.Errorf("after a change (read): %+v, want 2 pending", d)
	}
	if ids, _ := s.SlackPending(ctx); len(ids) != 1 || ids[0] != inc.ID {
		t.Errorf("SlackPending: %v, want %s", ids, inc.ID)
	}

	// Undeliverable: failed with the reason, until a delivery goes through.
	if err := s.RecordSlackDelivery(ctx, inc.ID, 0, "is_archived"); err != nil {
		t.Fatal(err)
	}
	got = mustGet(t, s, inc.ID)
	if d := got.SlackDelivery; d.State != incident.DeliveryFailed || d.Reason != "is_archived" || got.SlackShown != inc.Version {
		t.Errorf("failed: %+v shown %d", d, got.SlackShown)
	}
	if ids, _ := s.SlackPending(ctx); len(ids) != 0 {
		t.Errorf("SlackPending lists a failed incident: %v", ids)
	}
	// shown never goes back.
	if err := s.RecordSlackDelivery(ctx, inc.ID, inc.Version-1, ""); err != nil {
		t.Fatal(err)
	}
	got = mustGet(t, s, inc.ID)
	if got.SlackShown != inc.Version || got.SlackDelivery.Reason != "" {
		t.Errorf("older shown: %d %+v, want %d kept and the failure cleared", got.SlackShown, got.SlackDelivery, inc.Version)
	}

	// A reposted message starts its thread's count over.
	repost := incident.SlackRef{Channel: "C0KEYWARDEN", TS: "1795860099.000001"}
	if err := s.SetSlack(ctx, inc.ID, repost, 0); err != nil {
		t.Fatal(err)
	}
	if got := mustGet(t, s, inc.ID); *got.Slack != repost || got.SlackPosted != 0 {
		t.Errorf("after a repost: %+v posted %d, want the new message and 0", got.Slack, got.SlackPosted)
	}
}
