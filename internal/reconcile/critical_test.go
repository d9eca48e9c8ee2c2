package reconcile

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/rds"

	"github.com/keywarden/keywarden/internal/incident"
)

// TestCriticalWithoutDeadlineReminds: an incident whose only cluster cannot stop (Aurora
// Serverless v1) has no deadline, so no threshold is ever crossed; it is reminded once per
// CriticalEvery since it opened, with the escalation mention, once however many runs.
func TestCriticalWithoutDeadlineReminds(t *testing.T) {
	w := newWorld(t)
	keyID, keyARN := w.key(t)
	id := fmt.Sprintf("c-%d", rand.Int32())
	_, err := w.rds.CreateDBCluster(context.Background(), &rds.CreateDBClusterInput{
		DBClusterIdentifier: aws.String(id), Engine: aws.String("aurora-postgresql"), EngineMode: aws.String("serverless"),
		StorageEncrypted: aws.Bool(true), KmsKeyId: aws.String(keyID), MasterUsername: aws.String("admin"), MasterUserPassword: aws.String("not-a-secret-1"),
	})
	if err != nil {
		t.Fatal(err)
	}
	w.disable(t, keyID)
	inc := w.open(t, keyARN, time.Now())
	if inc.Deadline != nil || !inc.Critical {
		t.Fatalf("got deadline %v, critical %v; want none, critical", inc.Deadline, inc.Critical)
	}
	at := func(d time.Duration) *Reconciler {
		return w.reconciler(nil).WithClock(func() time.Time { return inc.OpenedAt.Add(d) })
	}
	run(t, at(time.Hour)) // before the first cadence: nothing
	if got := w.replies.of(inc.ID); len(got) != 0 {
		t.Fatalf("got %d reminders after 1h, want 0", len(got))
	}
	for range 2 {
		run(t, at(6*time.Hour+time.Minute))
	}
	run(t, at(12*time.Hour+time.Minute))
	got := w.replies.of(inc.ID)
	if len(got) != 2 {
		t.Fatalf("got %d reminders %q, want 2 (one per 6h)", len(got), got)
	}
	for _, r := range got {
		if !strings.HasPrefix(r, "<!subteam^S0ONCALL>") || !strings.Contains(r, "Still critical") {
			t.Errorf("got reminder %q, want the escalation mention and \"Still critical\"", r)
		}
	}
	if n := countKind(w.get(t, inc.ID), incident.KindReminder); n != 2 {
		t.Errorf("got %d reminder entries, want 2", n)
	}
}
