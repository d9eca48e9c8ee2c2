package dynamostore

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/google/go-cmp/cmp"

	"github.com/keywarden/keywarden/internal/incident"
)

// legacyDoc is an incident's JSON as the old store wrote it into doc: the old Incident type,
// with string kinds and free-text details on the timeline, slack_posted counting posted
// entries and timeline_elided counting what the old store trimmed.
func legacyDoc(id, keyARN, state string, opened time.Time, entries int) string {
	var tl []string
	kinds := []string{"opened", "delivery", "key-state", "cluster", "slack", "click", "denied", "remediation", "reminder", "elided", "note", "closed", "mystery"}
	for i := range entries {
		tl = append(tl, fmt.Sprintf(`{"at":%q,"kind":%q,"actor":"alice","detail":"old entry %d"}`,
			opened.Add(time.Duration(i)*time.Minute).Format(time.RFC3339), kinds[i%len(kinds)], i+1))
	}
	return fmt.Sprintf(`{"id":%q,"version":4,"state":%q,"key_arn":%q,"key_state":"Disabled","trigger":"DisableKey",`+
		`"lost_at":%q,"opened_at":%q,"updated_at":%q,"deadline":null,"critical":false,`+
		`"actor":{"arn":"arn:aws:iam::123456789012:user/alice"},"deliveries":2,`+
		`"clusters":[{"identifier":"orders","arn":"arn:aws:rds:us-east-1:123456789012:cluster:orders","engine":"aurora-postgresql","status":"stopped","can_stop":true,"uses":["storage"],"deadline":null}],`+
		`"instances":[{"identifier":"orders-1","arn":"arn:aws:rds:us-east-1:123456789012:db:orders-1","cluster_identifier":"orders","status":"stopped"}],`+
		`"snapshots":[{"identifier":"s1","arn":"arn:aws:rds:us-east-1:123456789012:cluster-snapshot:s1","cluster_identifier":"orders","type":"manual"}],`+
		`"other_engines":null,"slack":{"channel":"C0OLD","ts":"1795000000.000100"},"slack_posted":3,`+
		`"timeline":[%s],"timeline_elided":10}`,
		id, state, keyARN, opened.Format(time.RFC3339), opened.Format(time.RFC3339), opened.Format(time.RFC3339), strings.Join(tl, ","))
}

// putLegacy writes an incident, and its open lock when open, shaped as the old store wrote them.
func (e *env) putLegacy(t *testing.T, id, keyARN, state string, opened time.Time, entries int) {
	t.Helper()
	ctx := context.Background()
	item := map[string]types.AttributeValue{
		"pk":            str("incident#" + id),
		"kind":          str("incident"),
		"version":       num(4),
		"state":         str(state),
		"key_arn":       str(keyARN),
		"opened_at":     str(opened.Format(time.RFC3339Nano)),
		"doc":           str(legacyDoc(id, keyARN, state, opened, entries)),
		"slack_channel": str("C0OLD"),
		"slack_ts":      str("1795000000.000100"),
		"slack_posted":  num(3),
	}
	if _, err := e.db.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(e.legacy), Item: item}); err != nil {
		t.Fatalf("put legacy incident: %v", err)
	}
	if state == "open" {
		lock := map[string]types.AttributeValue{
			"pk": str("open#" + keyARN), "kind": str("open-lock"), "incident_id": str(id),
			"key_arn": str(keyARN), "opened_at": str(opened.Format(time.RFC3339Nano)),
		}
		if _, err := e.db.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(e.legacy), Item: lock}); err != nil {
			t.Fatalf("put legacy lock: %v", err)
		}
	}
}

func (e *env) legacyItem(t *testing.T, pk string) map[string]types.AttributeValue {
	t.Helper()
	out, err := e.db.GetItem(context.Background(), &dynamodb.GetItemInput{TableName: aws.String(e.legacy), Key: legacyKey(pk), ConsistentRead: aws.Bool(true)})
	if err != nil {
		t.Fatalf("GetItem %s: %v", pk, err)
	}
	return out.Item
}

// Done-when 6: incidents of the old one-item layout are read, listed, updated and carried
// into the new layout through the new store.
func TestLegacyMigration(t *testing.T) {
	e := newEnv(t, "", true)
	s := e.store()
	ctx := context.Background()
	openID, closedID := "KW-20261120-0a0a0a", "KW-20261119-0b0b0b"
	e.putLegacy(t, openID, keyA, "open", t0.Add(-48*time.Hour), 13)
	e.putLegacy(t, closedID, keyB, "resolved", t0.Add(-72*time.Hour), 3)

	old, err := s.Get(ctx, openID)
	if err != nil {
		t.Fatalf("Get(legacy): %v", err)
	}
	t.Run("converted", func(t *testing.T) {
		if old.Version != 4 || old.State != incident.StateOpen || old.Deliveries != 2 || old.InstanceCount != 1 || old.SnapshotCount != 1 {
			t.Errorf("got version %d state %s deliveries %d counts %d/%d, want 4 open 2 1/1", old.Version, old.State, old.Deliveries, old.InstanceCount, old.SnapshotCount)
		}
		if old.Slack == nil || old.Slack.TS != "1795000000.000100" || old.SlackPosted != 3 || old.TimelineSeq != 13 {
			t.Errorf("got slack %+v posted %d timeline seq %d, want the old message, 3, 13", old.Slack, old.SlackPosted, old.TimelineSeq)
		}
		if old.Approvals != nil || old.ApprovalRound != 0 || old.Remediation.State != incident.RemediationNone {
			t.Errorf("got approvals %v round %d remediation %q, want a fresh round", old.Approvals, old.ApprovalRound, old.Remediation.State)
		}
		var kinds []incident.Kind
		for i, e := range old.Timeline {
			kinds = append(kinds, e.Kind)
			if e.ID != fmt.Sprintf("legacy:%d", i+1) || e.Seq != int64(i+1) || e.Detail != fmt.Sprintf("old entry %d", i+1) {
				t.Errorf("entry %d: got %s seq %d %q", i, e.ID, e.Seq, e.Detail)
			}
		}
		want := []incident.Kind{incident.KindState, incident.KindDelivery, incident.KindKeyChange, incident.KindClusterChange,
			incident.KindSlackDelivery, incident.KindClick, incident.KindRefusal, incident.KindRemediationStep, incident.KindReminder,
			incident.KindNote, incident.KindNote, incident.KindState, incident.KindNote}
		if diff := cmp.Diff(want, kinds); diff != "" {
			t.Errorf("kinds (-want +got):\n%s", diff)
		}
	})

	t.Run("found and listed", func(t *testing.T) {
		open, err := s.OpenFor(ctx, keyA)
		if err != nil || open.ID != openID {
			t.Errorf("OpenFor: got %s, %v, want %s", open.ID, err, openID)
		}
		fresh := mustOpen(t, s, newIncident(keyC, "DisableKey", t0))
		all, err := s.List(ctx)
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		var ids []string
		for _, inc := range all {
			ids = append(ids, inc.ID)
		}
		if diff := cmp.Diff([]string{fresh.ID, openID, closedID}, ids); diff != "" {
			t.Errorf("List (-want +got):\n%s", diff)
		}
		if active, err := s.ListActive(ctx); err != nil || len(active) != 2 {
			t.Errorf("ListActive: got %d, %v, want 2", len(active), err)
		}
		if forB, err := s.ForKey(ctx, keyB); err != nil || len(forB) != 1 || forB[0].ID != closedID {
			t.Errorf("ForKey: got %v, %v, want %s", forB, err, closedID)
		}
	})

	t.Run("no change stays legacy; SetSlack and refusals need no migration", func(t *testing.T) {
		got, err := s.Update(ctx, openID, func(*incident.Incident) error { return nil })
		if err != nil || got.Version != 4 {
			t.Fatalf("no-op Update: version %d, %v", got.Version, err)
		}
		if err := s.SetSlack(ctx, openID, incident.SlackRef{Channel: "C0OLD", TS: "1795000000.000100"}, 13); err != nil {
			t.Fatalf("SetSlack: %v", err)
		}
		if _, err := s.RecordRefusal(ctx, openID, incident.NewRefusal("U0STRANGER", "approve", "not an approver", "x", t0)); err != nil {
			t.Fatalf("RecordRefusal: %v", err)
		}
		if e.legacyItem(t, incidentPK(openID)) == nil {
			t.Fatalf("the legacy item moved without a change")
		}
		got = mustGet(t, s, openID)
		if got.SlackPosted != 13 || got.Version != 4 || len(got.Timeline) != 14 {
			t.Errorf("got posted %d version %d %d entries, want 13, 4, 14 (a refusal added)", got.SlackPosted, got.Version, len(got.Timeline))
		}
	})

	t.Run("Open folds into the legacy incident and carries it over", func(t *testing.T) {
		got, opened, err := s.Open(ctx, newIncident(keyA, "ScheduleKeyDeletion", t0), delivery(t0, "evt-after"), nil)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		if opened || got.ID != openID || got.Deliveries != 3 || got.Version != 5 {
			t.Errorf("Open: opened %v ID %s deliveries %d version %d, want false %s 3 5", opened, got.ID, got.Deliveries, got.Version, openID)
		}
		if last, _ := got.LastEntry(incident.KindDelivery); last.ID != "delivery:evt-after" || last.Seq != 14 {
			t.Errorf("new delivery: got %s seq %d, want delivery:evt-after seq 14", last.ID, last.Seq)
		}
		if e.legacyItem(t, incidentPK(openID)) != nil || e.legacyItem(t, lockPK(keyA)) != nil {
			t.Errorf("legacy incident or lock still there after the migration")
		}
		if open, err := s.OpenFor(ctx, keyA); err != nil || open.ID != openID {
			t.Errorf("OpenFor after migration: %s, %v", open.ID, err)
		}
		stored := mustGet(t, s, openID)
		if diff := cmp.Diff(got, stored); diff != "" {
			t.Errorf("stored differs from Open's result (-open +stored):\n%s", diff)
		}
		if len(stored.Timeline) != 15 || stored.SlackPosted != 13 {
			t.Errorf("stored: %d entries posted %d, want 15 (13 old, a refusal, the delivery) and 13", len(stored.Timeline), stored.SlackPosted)
		}
		if all, err := s.List(ctx); err != nil || len(all) != 3 {
			t.Errorf("List after migration: %d, %v, want 3", len(all), err)
		}
	})

	t.Run("a closed one, batched", func(t *testing.T) {
		small := e.store()
		small.maxTxItems = 4 // 3 dependents and 3 entries: the migration batches its children
		got, err := small.Update(ctx, closedID, func(inc *incident.Incident) error {
			inc.AddEntry(incident.Entry{ID: "note:after", Kind: incident.KindNote, Detail: "looked at again"})
			return nil
		})
		if err != nil {
			t.Fatalf("Update: %v", err)
		}
		if got.Version != 5 || got.State != incident.StateResolved || len(got.Timeline) != 4 {
			t.Errorf("got version %d state %s %d entries, want 5 resolved 4", got.Version, got.State, len(got.Timeline))
		}
		if e.legacyItem(t, incidentPK(closedID)) != nil {
			t.Errorf("legacy item still there")
		}
		if _, err := s.OpenFor(ctx, keyB); err == nil {
			t.Errorf("OpenFor(keyB): a closed incident took the lock")
		}
		if diff := cmp.Diff(got, mustGet(t, s, closedID)); diff != "" {
			t.Errorf("stored differs (-update +stored):\n%s", diff)
		}
	})
}

// Deliveries racing on a legacy incident: one migration wins, every event is counted once, no
// second incident opens.
func TestLegacyMigrationRace(t *testing.T) {
	e := newEnv(t, "", true)
	s := e.store()
	ctx := context.Background()
	id := "KW-20261120-0c0c0c"
	e.putLegacy(t, id, keyA, "open", t0.Add(-48*time.Hour), 5)
	const n = 6
	errs := make([]error, n)
	ids := make([]string, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			got, opened, err := s.Open(ctx, newIncident(keyA, "DisableKey", t0), delivery(t0), nil)
			if opened {
				err = fmt.Errorf("opened a second incident %s", got.ID)
			}
			errs[i], ids[i] = err, got.ID
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil || ids[i] != id {
			t.Errorf("Open #%d: %s, %v, want a delivery to %s", i, ids[i], err, id)
		}
	}
	got := mustGet(t, s, id)
	if got.Deliveries != 2+n || got.Version != 4+n || len(got.Timeline) != 5+n {
		t.Errorf("got deliveries %d version %d %d entries, want %d, %d, %d", got.Deliveries, got.Version, len(got.Timeline), 2+n, 4+n, 5+n)
	}
	if e.legacyItem(t, incidentPK(id)) != nil {
		t.Errorf("legacy item still there")
	}
	if all, err := s.List(ctx); err != nil || len(all) != 1 {
		t.Errorf("List: %d incidents, %v, want 1", len(all), err)
	}
}
