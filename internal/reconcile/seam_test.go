package reconcile

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/cloudtrail"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/rds"

	"github.com/keywarden/keywarden/internal/blast"
	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/intake"
	"github.com/keywarden/keywarden/internal/lifecycle"
	"github.com/keywarden/keywarden/internal/trail"
)

// statusRDS is moto's RDS with some cluster statuses replaced: moto cannot put a cluster in an
// inaccessible-encryption-credentials state, so tests do it at this seam.
type statusRDS struct {
	blast.RDSAPI
	mu     sync.Mutex
	status map[string]string
}

func (s *statusRDS) set(id, status string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status[id] = status
}

func (s *statusRDS) DescribeDBClusters(ctx context.Context, in *rds.DescribeDBClustersInput, o ...func(*rds.Options)) (*rds.DescribeDBClustersOutput, error) {
	out, err := s.RDSAPI.DescribeDBClusters(ctx, in, o...)
	if err != nil {
		return out, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range out.DBClusters {
		if st, ok := s.status[aws.ToString(out.DBClusters[i].DBClusterIdentifier)]; ok {
			out.DBClusters[i].Status = aws.String(st)
		}
	}
	return out, nil
}

func withStatuses(w *world) *statusRDS {
	s := &statusRDS{RDSAPI: w.rds, status: map[string]string{}}
	w.rdsAPI = s
	return s
}

// TestTerminalClustersLoseTheIncident: a cluster in inaccessible-encryption-credentials is lost;
// once every cluster is, the incident is lost and says what recovery remains.
func TestTerminalClustersLoseTheIncident(t *testing.T) {
	w := newWorld(t)
	statuses := withStatuses(w)
	keyID, keyARN := w.key(t)
	a, b := w.cluster(t, keyID), w.cluster(t, keyID)
	w.disable(t, keyID)
	inc := w.open(t, keyARN, time.Now().Add(-7*24*time.Hour-time.Minute))

	statuses.set(a, string(incident.StatusTerminal))
	statuses.set(b, string(incident.StatusRecoverable))
	run(t, w.reconciler(nil))
	got := w.get(t, inc.ID)
	if got.State != incident.StateOpen {
		t.Fatalf("got state %s with one cluster still recoverable, want open", got.State)
	}
	for _, c := range got.Clusters {
		if want := c.Identifier == a; c.Lost != want {
			t.Errorf("got %s lost=%v, want %v", c.Identifier, c.Lost, want)
		}
	}

	statuses.set(b, string(incident.StatusTerminal))
	rep := run(t, w.reconciler(nil))
	got = w.get(t, inc.ID)
	if got.State != incident.StateLost {
		t.Fatalf("got state %s (report %+v), want lost", got.State, rep)
	}
	last, ok := got.LastEntry(incident.KindState)
	if !ok || last.Result != incident.Result(incident.StateLost) || !strings.Contains(last.Detail, "restore from a snapshot") || !strings.Contains(last.Detail, "make it usable again first") {
		t.Errorf("got closing entry %+v, want the loss, telling people what recovery remains", last)
	}
	if n := countKind(got, incident.KindReminder); n != 1 {
		t.Errorf("got %d reminders, want 1 (deadline passed, posted in the first run only)", n)
	}

	// The key is still Disabled and its clusters terminal, as the lost incident recorded:
	// the backstop opens nothing more, however many runs follow.
	for range 3 {
		run(t, w.reconciler(nil))
	}
	if incs := w.forKey(t, keyARN); len(incs) != 1 {
		t.Errorf("after three more runs: got %d incidents for the key, want 1", len(incs))
	}
}

// TestIntentionalNotReopened: an approver closed the incident as intentional; the backstop
// leaves the key alone while nothing changes, and opens anew once the key moves on (its
// deletion is scheduled).
func TestIntentionalNotReopened(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	keyID, keyARN := w.key(t)
	w.cluster(t, keyID)
	w.disable(t, keyID)
	inc := w.open(t, keyARN, time.Now().Add(-time.Hour))
	if _, err := w.store.Update(ctx, inc.ID, func(i *incident.Incident) error {
		return i.MarkIntentional("U123", time.Now())
	}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		run(t, w.reconciler(nil))
	}
	if incs := w.forKey(t, keyARN); len(incs) != 1 {
		t.Fatalf("got %d incidents after an intentional close, want 1", len(incs))
	}

	if _, err := w.kms.ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{KeyId: &keyID, PendingWindowInDays: aws.Int32(7)}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = w.kms.CancelKeyDeletion(context.Background(), &kms.CancelKeyDeletionInput{KeyId: &keyID})
	})
	run(t, w.reconciler(nil))
	incs := w.forKey(t, keyARN)
	if len(incs) != 2 || (incs[0].State.Closed() && incs[1].State.Closed()) {
		t.Fatalf("got %+v once the key's deletion was scheduled, want a new open incident beside the intentional one", incs)
	}
}

// TestBackstopInaccessibleCluster: a cluster already in a lost-key state with no incident gets
// one, whether the key is Disabled or Enabled again (the cluster still needs StartDBCluster).
func TestBackstopInaccessibleCluster(t *testing.T) {
	w := newWorld(t)
	statuses := withStatuses(w)
	keyID, keyARN := w.key(t)
	c := w.cluster(t, keyID)
	w.disable(t, keyID)
	statuses.set(c, string(incident.StatusRecoverable))

	run(t, w.reconciler(nil))
	incs := w.forKey(t, keyARN)
	if len(incs) != 1 || !strings.Contains(incs[0].TriggerDetail, c+" ("+string(incident.StatusRecoverable)+")") {
		t.Fatalf("got %+v, want one incident naming the inaccessible cluster", incs)
	}

	enabledID, enabledARN := w.key(t)
	e := w.cluster(t, enabledID)
	statuses.set(e, string(incident.StatusRecoverable))
	rep := run(t, w.reconciler(nil))
	var saw bool
	for _, o := range rep.Outcomes {
		if o.KeyARN == enabledARN && o.Action == ActionOpened {
			saw = true
		}
	}
	incs = w.forKey(t, enabledARN)
	if !saw || len(incs) != 1 || incs[0].KeyState != "Enabled" || !strings.Contains(incs[0].TriggerDetail, e+" ("+string(incident.StatusRecoverable)+")") {
		t.Fatalf("got outcomes %+v, incidents %+v; want one opened for %s naming %s", rep.Outcomes, incs, enabledARN, e)
	}
	// The next run keeps it open: the cluster is still not available.
	run(t, w.reconciler(nil))
	if got := w.get(t, incs[0].ID); got.State != incident.StateOpen {
		t.Errorf("got state %s, want open while the cluster is recoverable", got.State)
	}
}

// fakeTrail speaks CloudTrail's JSON 1.1 protocol for LookupEvents, answering every request
// with events (which may be empty).
type fakeTrail struct {
	mu       sync.Mutex
	events   []map[string]any
	resource []string
}

func (f *fakeTrail) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var req struct {
		LookupAttributes []struct{ AttributeKey, AttributeValue string }
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	for _, a := range req.LookupAttributes {
		if a.AttributeKey == "ResourceName" {
			f.resource = append(f.resource, a.AttributeValue)
		}
	}
	events := f.events
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	_ = json.NewEncoder(w).Encode(map[string]any{"Events": events})
}

func newFakeTrail(t *testing.T, events []map[string]any) (*fakeTrail, *trail.Finder) {
	t.Helper()
	ft := &fakeTrail{events: events}
	srv := httptest.NewServer(ft)
	t.Cleanup(srv.Close)
	client := cloudtrail.New(cloudtrail.Options{
		Region: "us-east-1", BaseEndpoint: aws.String(srv.URL),
		Credentials: credentials.NewStaticCredentialsProvider("AKIDEXAMPLE", "secret", ""),
	})
	return ft, trail.New(client)
}

// disableKeyEvent is LookupEvents' view of a DisableKey call on keyARN by alice at at.
func disableKeyEvent(t *testing.T, keyARN string, at time.Time) map[string]any {
	t.Helper()
	rec, err := json.Marshal(map[string]any{
		"eventID": "ev-disable-1", "eventTime": at.Format(time.RFC3339), "eventName": "DisableKey",
		"sourceIPAddress": "192.0.2.7", "userAgent": "aws-cli/2.15",
		"userIdentity": map[string]any{"type": "IAMUser", "principalId": "AIDAALICE", "arn": "arn:aws:iam::123456789012:user/alice", "accountId": "123456789012"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return map[string]any{
		"EventId": "ev-disable-1", "EventName": "DisableKey", "EventSource": "kms.amazonaws.com",
		"EventTime": float64(at.Unix()), "Username": "alice", "CloudTrailEvent": string(rec),
		"Resources": []map[string]any{{"ResourceType": "AWS::KMS::Key", "ResourceName": keyARN}},
	}
}

// TestBackstopActorFromCloudTrail: an incident the backstop opened names no actor; event
// history (an httptest server in CloudTrail's protocol) supplies who disabled the key and when,
// and the windows start then.
func TestBackstopActorFromCloudTrail(t *testing.T) {
	w := newWorld(t)
	keyID, keyARN := w.key(t)
	w.cluster(t, keyID)
	w.disable(t, keyID)
	disabledAt := time.Now().Add(-2 * time.Hour).Truncate(time.Second).UTC()
	ft, finder := newFakeTrail(t, []map[string]any{disableKeyEvent(t, keyARN, disabledAt)})
	withTrail := func(d *Deps) { d.Trail = finder }

	run(t, w.reconciler(withTrail)) // the backstop opens the incident
	incs := w.forKey(t, keyARN)
	if len(incs) != 1 || incs[0].Actor != (incident.Actor{}) {
		t.Fatalf("got %+v, want one incident without an actor", incs)
	}
	rep := run(t, w.reconciler(withTrail)) // the next run looks it up
	got := w.get(t, incs[0].ID)
	if got.Actor.ARN != "arn:aws:iam::123456789012:user/alice" || got.Actor.SourceIP != "192.0.2.7" {
		t.Fatalf("got actor %+v (report %+v), want alice from 192.0.2.7", got.Actor, rep)
	}
	if !got.LostAt.Equal(disabledAt) || !got.Clusters[0].LostAccessAt.Equal(disabledAt) {
		t.Errorf("got LostAt %v, window start %v; want both %v", got.LostAt, got.Clusters[0].LostAccessAt, disabledAt)
	}
	if want := disabledAt.Add(incident.RecoverableWindow); got.Deadline == nil || !got.Deadline.Equal(want) {
		t.Errorf("got deadline %v, want %v", got.Deadline, want)
	}
	if note, ok := got.LastEntry(incident.KindNote); !ok || note.Source != lifecycle.LookupSource || note.Result != incident.ResultOK || !lifecycle.LossLookedUp(got) {
		t.Errorf("got note %+v, want event history's answer recorded as found", note)
	}
	ft.mu.Lock()
	asked := append([]string(nil), ft.resource...)
	ft.mu.Unlock()
	if len(asked) == 0 || asked[0] != keyARN {
		t.Errorf("got look-ups for %q, want ResourceName %s", asked, keyARN)
	}

	// Done once: the next run does not ask again.
	run(t, w.reconciler(withTrail))
	ft.mu.Lock()
	defer ft.mu.Unlock()
	if len(ft.resource) != len(asked) {
		t.Errorf("got %d look-ups after another run, want still %d", len(ft.resource), len(asked))
	}
}

// TestNothingInCloudTrail: event history has nothing (and the incident is older than event
// history's delay): the incident says so and keeps the time the loss was found.
func TestNothingInCloudTrail(t *testing.T) {
	w := newWorld(t)
	keyID, keyARN := w.key(t)
	w.cluster(t, keyID)
	w.disable(t, keyID)
	found := time.Now().Add(-time.Hour).UTC()
	past := func() time.Time { return found }
	o, err := intake.New(w.keys, blast.New(w.rds, w.keys, blast.WithoutClusterAutomatedBackups()), w.store.WithClock(past), w.log).
		Ensure(context.Background(), intake.Signal{KeyARN: keyARN, Trigger: TriggerBackstop, TriggerDetail: "found by reconciliation", At: found})
	if err != nil || o.Action != intake.ActionOpened {
		t.Fatalf("open: %+v, %v", o, err)
	}
	_, finder := newFakeTrail(t, nil)
	run(t, w.reconciler(func(d *Deps) { d.Trail = finder }))
	got := w.get(t, o.IncidentID)
	note, ok := got.LastEntry(incident.KindNote)
	if !ok || note.Source != lifecycle.LookupSource || note.Result != incident.ResultSkipped || !got.LostAt.Equal(found) || got.Actor != (incident.Actor{}) {
		t.Errorf("got note %+v, LostAt %v, actor %+v; want event history's empty answer and LostAt %v", note, got.LostAt, got.Actor, found)
	}
}

// TestGiveBackStalled: the stall rule reads the remediation's typed progress — the approval
// that started the run and the steps it recorded — never entry text, and gives the incident
// back with incident.GiveBack.
func TestGiveBackStalled(t *testing.T) {
	start := time.Date(2026, 11, 20, 9, 0, 0, 0, time.UTC)
	base := func(key incident.KeyState, status incident.ClusterStatus, steps ...time.Duration) incident.Incident {
		inc := incident.Incident{
			ID: "KW-1", State: incident.StateOpen, KeyState: key,
			Clusters: []incident.Cluster{{Identifier: "orders", Status: status, CanStop: true}},
		}
		if _, started, err := inc.Approve("U1", 0, "click:1", start, 1, "run-1"); err != nil || !started {
			t.Fatalf("Approve: %v, %v", started, err)
		}
		inc.Remediation.State = incident.RemediationRunning
		for _, d := range steps {
			inc.RecordStep(incident.StepRecord{Kind: incident.StepEnableKey, Target: "k", Result: incident.ResultOK, At: start.Add(d),
				ID: incident.StepID("run-1", incident.StepEnableKey, d.String())})
		}
		return inc
	}
	tests := []struct {
		name  string
		inc   incident.Incident
		after time.Duration
		want  incident.State
	}{
		{"recent", base(incident.KeyStateDisabled, incident.StatusStopped), 10 * time.Minute, incident.StateRemediating},
		{"stalled with the key still disabled", base(incident.KeyStateDisabled, incident.StatusStopped), 31 * time.Minute, incident.StateOpen},
		{"stalled with a cluster still stopped", base(incident.KeyStateEnabled, incident.StatusStopped), 31 * time.Minute, incident.StateOpen},
		{"stalled with a cluster recoverable", base(incident.KeyStateEnabled, incident.StatusRecoverable), 31 * time.Minute, incident.StateOpen},
		{"clusters starting: just slow", base(incident.KeyStateEnabled, incident.StatusStarting), 45 * time.Minute, incident.StateRemediating},
		{"a step recorded lately", base(incident.KeyStateDisabled, incident.StatusStopped, 25*time.Minute), 31 * time.Minute, incident.StateRemediating},
		{"the last step long ago", base(incident.KeyStateDisabled, incident.StatusStopped, 5*time.Minute), 36 * time.Minute, incident.StateOpen},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inc := tt.inc
			giveBackStalled(&inc, start.Add(tt.after))
			if inc.State != tt.want {
				t.Fatalf("got %s, want %s", inc.State, tt.want)
			}
			if tt.want != incident.StateOpen {
				return
			}
			e, _ := inc.LastEntry(incident.KindState)
			if inc.Remediation.State != incident.RemediationFailed || e.Result != incident.Result(incident.StateOpen) || len(inc.RoundApprovers()) != 0 {
				t.Errorf("got remediation %s, state entry %+v, approvers %v; want failed, given back, a fresh round",
					inc.Remediation.State, e, inc.RoundApprovers())
			}
		})
	}
}
