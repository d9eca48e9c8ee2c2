package dynamostore

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/incident"
)

// Done-when 4: refusals never touch the head, so a flood of them neither moves the version
// (every button on the message stays valid) nor counts towards an approval quorum; one user's
// refusals within a minute are one item with a count.
func TestRecordRefusal(t *testing.T) {
	e := newEnv(t, "", false)
	s := e.store()
	ctx := context.Background()
	inc := mustOpen(t, s, newIncident(keyA, "DisableKey", t0))
	at := t0.Add(10 * time.Minute)

	first, err := s.RecordRefusal(ctx, inc.ID, incident.NewRefusal("U0STRANGER", "approve", "not an approver", "click-1", at))
	if err != nil {
		t.Fatalf("RecordRefusal: %v", err)
	}
	if !first {
		t.Errorf("first refusal: first = false, want true")
	}
	if got := mustGet(t, s, inc.ID); got.Version != inc.Version {
		t.Errorf("Version after a refusal: got %d, want %d", got.Version, inc.Version)
	}
	if v := optNum(e.partition(t, inc.ID)["head"], attrVersion); v != inc.Version {
		t.Errorf("stored head version: got %d, want %d", v, inc.Version)
	}

	t.Run("one user within a minute is one item", func(t *testing.T) {
		for i := range 3 {
			first, err := s.RecordRefusal(ctx, inc.ID, incident.NewRefusal("U0STRANGER", "approve", "not an approver", fmt.Sprintf("click-%d", i+2), at.Add(time.Duration(i+1)*10*time.Second)))
			if err != nil {
				t.Fatalf("RecordRefusal: %v", err)
			}
			if first {
				t.Errorf("refusal %d within the minute: first = true, want false", i+2)
			}
		}
		got := mustGet(t, s, inc.ID)
		var refusals []incident.Entry
		for _, e := range got.Timeline {
			if e.Kind == incident.KindRefusal {
				refusals = append(refusals, e)
			}
		}
		if len(refusals) != 1 || refusals[0].Count != 4 || refusals[0].Seq != 0 || refusals[0].Source != "click-1" {
			t.Errorf("refusals: got %+v, want one with count 4, seq 0, the first click's source", refusals)
		}
		items := 0
		for sk := range e.partition(t, inc.ID) {
			if strings.HasPrefix(sk, kindRefusal+"#") {
				items++
			}
		}
		if items != 1 {
			t.Errorf("refusal items: got %d, want 1", items)
		}
		if first, err := s.RecordRefusal(ctx, inc.ID, incident.NewRefusal("U0STRANGER", "approve", "not an approver", "click-5", at.Add(time.Minute))); err != nil || !first {
			t.Errorf("refusal in the next minute: first %v, %v, want a new item", first, err)
		}
	})

	t.Run("400 strangers then one approval: no remediation", func(t *testing.T) {
		for i := range 400 {
			_, err := s.RecordRefusal(ctx, inc.ID, incident.NewRefusal(fmt.Sprintf("U0STRANGER%03d", i), "approve", "not an approver", fmt.Sprintf("flood-%d", i), at.Add(2*time.Minute)))
			if err != nil {
				t.Fatalf("RecordRefusal %d: %v", i, err)
			}
		}
		cur := mustGet(t, s, inc.ID)
		if cur.Version != inc.Version {
			t.Fatalf("Version after 400 refusals: got %d, want %d", cur.Version, inc.Version)
		}
		var count int
		var started bool
		got, err := s.UpdateAt(ctx, inc.ID, cur.Version, func(i *incident.Incident) error {
			var err error
			count, started, err = i.Approve("U0APPROVER1", cur.Version, "click-approve", at.Add(3*time.Minute), 2, "run-1")
			return err
		})
		if err != nil {
			t.Fatalf("UpdateAt(Approve): %v", err)
		}
		if count != 1 || started || got.State != incident.StateOpen || got.Remediation.RunID != "" {
			t.Errorf("got %d approvals, started %v, state %s, run %q; want 1, false, open, none", count, started, got.State, got.Remediation.RunID)
		}
		stored := mustGet(t, s, inc.ID)
		if stored.State != incident.StateOpen || stored.Version != inc.Version+1 {
			t.Errorf("stored: state %s version %d, want open, %d", stored.State, stored.Version, inc.Version+1)
		}
		refusals := 0
		for _, e := range stored.Timeline {
			if e.Kind == incident.KindRefusal {
				refusals++
			}
		}
		if refusals != 402 {
			t.Errorf("refusals on the timeline: got %d, want 402", refusals)
		}
	})
}
