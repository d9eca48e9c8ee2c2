package lifecycle

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/kmskey"
)

const keyARN = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"

var (
	lostAt = time.Date(2026, 3, 10, 14, 0, 0, 0, time.UTC)
	now    = time.Date(2026, 3, 10, 15, 0, 0, 0, time.UTC)
)

func ptr[T any](v T) *T { return &v }

var test = Source{Name: "test"}

// twoClusters is an incident as intake opens it from a DisableKey at lostAt.
func twoClusters() incident.Incident {
	inc := incident.Incident{
		ID: "KW-1", State: incident.StateOpen, KeyARN: keyARN, KeyState: incident.KeyStateDisabled, Trigger: "DisableKey", LostAt: lostAt,
		Clusters: []incident.Cluster{
			{Identifier: "orders", Status: "available", CanStop: true, LostAccessAt: ptr(lostAt)},
			{Identifier: "billing", Status: "available", CanStop: true, LostAccessAt: ptr(lostAt)},
		},
		Instances: []incident.Instance{
			{Identifier: "orders-1", ClusterIdentifier: "orders", Status: "available"},
			{Identifier: "orders-2", ClusterIdentifier: "orders", Status: "available"},
		},
	}
	inc.RecomputeDeadlines()
	return inc
}

func TestKeyAccessLostRefinesWindowInAnyOrder(t *testing.T) {
	t0418 := lostAt.Add(20 * time.Minute)
	t0419 := lostAt.Add(50 * time.Minute)
	early := lostAt.Add(-10 * time.Minute) // RDS noticed before the key event's time
	type ev struct {
		instance string
		at       time.Time
	}
	for _, tc := range []struct {
		name    string
		trigger string
		events  []ev
		want    time.Time
	}{
		// RDS's earliest report replaces the key event's estimate, later or earlier: Aurora's
		// clock starts when the cluster noticed. Further reports only move it earlier.
		{"0418 then 0419", "DisableKey", []ev{{"orders-1", t0418}, {"orders-1", t0419}}, t0418},
		{"0419 then 0418", "DisableKey", []ev{{"orders-1", t0419}, {"orders-1", t0418}}, t0418},
		{"duplicate", "DisableKey", []ev{{"orders-1", t0419}, {"orders-1", t0419}}, t0419},
		{"earlier RDS time", "DisableKey", []ev{{"orders-2", t0419}, {"orders-1", early}}, early},
		{"earlier RDS time first", "DisableKey", []ev{{"orders-1", early}, {"orders-2", t0419}}, early},
		{"rds-opened, later event", "RDS-EVENT-0418", []ev{{"orders-1", lostAt}, {"orders-2", t0419}}, lostAt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inc := twoClusters()
			inc.Trigger = tc.trigger
			for _, e := range tc.events {
				KeyAccessLost(&inc, AccessReport{Cluster: "orders", Instance: e.instance, Code: "RDS-EVENT-0418", At: e.at}, now)
			}
			if got := *inc.Clusters[0].LostAccessAt; !got.Equal(tc.want) {
				t.Errorf("got window start %v, want %v", got, tc.want)
			}
			if got, want := *inc.Clusters[0].Deadline, tc.want.Add(incident.RecoverableWindow); !got.Equal(want) {
				t.Errorf("got cluster deadline %v, want %v", got, want)
			}
			// billing has heard nothing from RDS: it keeps the key event's estimate.
			if got, want := *inc.Clusters[1].Deadline, lostAt.Add(incident.RecoverableWindow); !got.Equal(want) {
				t.Errorf("got billing deadline %v, want %v", got, want)
			}
			if !inc.Instances[0].LostKeyAccess && tc.events[0].instance == "orders-1" {
				t.Errorf("got orders-1 LostKeyAccess false, want true")
			}
		})
	}
}

// foldKeyEvent does to the clusters what intake's fold of a key event does: key-side evidence
// by lifecycle's one rule.
func foldKeyEvent(inc *incident.Incident, at time.Time) {
	for i := range inc.Clusters {
		KeyEvidence(&inc.Clusters[i], at)
	}
	inc.RecomputeDeadlines()
}

// permutations returns every order of n items, as index slices.
func permutations(n int) [][]int {
	if n == 0 {
		return [][]int{{}}
	}
	var out [][]int
	for _, p := range permutations(n - 1) {
		for i := 0; i <= len(p); i++ {
			q := append(append(append([]int{}, p[:i]...), n-1), p[i:]...)
			out = append(out, q)
		}
	}
	return out
}

// TestWindowStartSameInAnyOrder: whatever order the evidence of lost access arrives in — RDS
// events (0418, 0419, duplicates), a key event folded by intake, CloudTrail's look-up — the
// window start and the deadline are the same: RDS's earliest report for the cluster, which
// refines the key-side estimate either way, since Aurora's clock starts when the cluster noticed.
func TestWindowStartSameInAnyOrder(t *testing.T) {
	alice := incident.Actor{ARN: "arn:aws:iam::123456789012:user/alice"}
	for _, tc := range []struct {
		name    string
		trigger string
		steps   map[string]func(*incident.Incident)
		want    time.Time
	}{
		{"RDS later than the key event", "DisableKey", map[string]func(*incident.Incident){
			"0418": func(i *incident.Incident) {
				KeyAccessLost(i, AccessReport{Cluster: "orders", Instance: "orders-1", Code: "RDS-EVENT-0418", At: lostAt.Add(20 * time.Minute)}, now)
			},
			"0419": func(i *incident.Incident) {
				KeyAccessLost(i, AccessReport{Cluster: "orders", Instance: "orders-1", Code: "RDS-EVENT-0419", At: lostAt.Add(50 * time.Minute)}, now)
			},
			"duplicate": func(i *incident.Incident) {
				KeyAccessLost(i, AccessReport{Cluster: "orders", Instance: "orders-1", Code: "RDS-EVENT-0418", At: lostAt.Add(20 * time.Minute)}, now)
			},
			"key event": func(i *incident.Incident) { foldKeyEvent(i, lostAt.Add(5*time.Minute)) },
		}, lostAt.Add(20 * time.Minute)},
		{"RDS earlier than the key event", "RDS-EVENT-0418", map[string]func(*incident.Incident){
			"0418": func(i *incident.Incident) {
				KeyAccessLost(i, AccessReport{Cluster: "orders", Instance: "orders-2", Code: "RDS-EVENT-0418", At: lostAt.Add(-15 * time.Minute)}, now)
			},
			"0419": func(i *incident.Incident) {
				KeyAccessLost(i, AccessReport{Cluster: "orders", Instance: "orders-1", Code: "RDS-EVENT-0419", At: lostAt.Add(30 * time.Minute)}, now)
			},
			"key event": func(i *incident.Incident) { foldKeyEvent(i, lostAt.Add(-5*time.Minute)) },
		}, lostAt.Add(-15 * time.Minute)},
		{"CloudTrail earlier than RDS", "Reconciliation", map[string]func(*incident.Incident){
			"0418": func(i *incident.Incident) {
				KeyAccessLost(i, AccessReport{Cluster: "orders", Instance: "orders-1", Code: "RDS-EVENT-0418", At: lostAt.Add(-10 * time.Minute)}, now)
			},
			"key event": func(i *incident.Incident) { foldKeyEvent(i, lostAt.Add(10*time.Minute)) },
			"cloudtrail": func(i *incident.Incident) {
				ApplyLoss(i, Loss{EventName: "DisableKey", EventID: "ev-1", Actor: alice, At: lostAt.Add(-2 * time.Hour)}, now)
			},
		}, lostAt.Add(-10 * time.Minute)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var names []string
			for n := range tc.steps {
				names = append(names, n)
			}
			for _, order := range permutations(len(names)) {
				inc := twoClusters()
				inc.Trigger = tc.trigger
				var seq []string
				for _, i := range order {
					seq = append(seq, names[i])
					tc.steps[names[i]](&inc)
				}
				got := inc.Clusters[0]
				if !got.LostAccessAt.Equal(tc.want) || !got.Deadline.Equal(tc.want.Add(incident.RecoverableWindow)) {
					t.Errorf("order %v: got window start %v, deadline %v; want %v, %v", seq, got.LostAccessAt, got.Deadline, tc.want, tc.want.Add(incident.RecoverableWindow))
				}
			}
		})
	}
}

func TestKeyAccessLostDuplicateChangesNothing(t *testing.T) {
	inc := twoClusters()
	KeyAccessLost(&inc, AccessReport{Cluster: "orders", Instance: "orders-1", Code: "RDS-EVENT-0418", At: lostAt.Add(time.Minute)}, now)
	before := len(inc.Timeline)
	snapshot := inc
	snapshot.Timeline = append([]incident.Entry(nil), inc.Timeline...)
	KeyAccessLost(&inc, AccessReport{Cluster: "orders", Instance: "orders-1", Code: "RDS-EVENT-0418", At: lostAt.Add(time.Minute)}, now)
	if len(inc.Timeline) != before {
		t.Errorf("got %d timeline entries after a duplicate, want %d", len(inc.Timeline), before)
	}
	if diff := cmp.Diff(snapshot, inc); diff != "" {
		t.Errorf("duplicate changed the incident (-before +after):\n%s", diff)
	}
}

func TestKeyAccessRestored(t *testing.T) {
	inc := twoClusters()
	KeyAccessLost(&inc, AccessReport{Cluster: "orders", Instance: "orders-1", Code: "RDS-EVENT-0418", At: lostAt}, now)
	KeyAccessLost(&inc, AccessReport{Cluster: "orders", Instance: "orders-2", Code: "RDS-EVENT-0418", At: lostAt}, now)
	KeyAccessRestored(&inc, AccessReport{Cluster: "orders", Instance: "orders-1", Code: "RDS-EVENT-0420", At: now}, now)
	if inc.Instances[0].LostKeyAccess || !inc.Instances[1].LostKeyAccess {
		t.Errorf("got LostKeyAccess %v/%v, want false/true", inc.Instances[0].LostKeyAccess, inc.Instances[1].LostKeyAccess)
	}
	KeyAccessRestored(&inc, AccessReport{Cluster: "orders", Instance: "", Code: "RDS-EVENT-0420", At: now}, now) // about the cluster
	if inc.Instances[1].LostKeyAccess {
		t.Error("got orders-2 LostKeyAccess true after a cluster-level 0420, want false")
	}
}

func TestSettle(t *testing.T) {
	for _, tc := range []struct {
		name      string
		keyState  incident.KeyState
		statuses  []incident.ClusterStatus
		wantState incident.State
		wantClose string // what the closing entry tells people
	}{
		{"still disabled", incident.KeyStateDisabled, []incident.ClusterStatus{incident.StatusRecoverable, incident.StatusAvailable}, "", ""},
		{"enabled, one still stopped", incident.KeyStateEnabled, []incident.ClusterStatus{incident.StatusStopped, incident.StatusAvailable}, "", ""},
		{"enabled, one recoverable", incident.KeyStateEnabled, []incident.ClusterStatus{incident.StatusRecoverable, incident.StatusAvailable}, "", ""},
		{"fixed by hand", incident.KeyStateEnabled, []incident.ClusterStatus{incident.StatusAvailable, incident.StatusAvailable}, incident.StateResolved, "every dependent cluster is available"},
		{"key deleted", incident.KeyStateDeleted, []incident.ClusterStatus{incident.StatusRecoverable, incident.StatusAvailable}, incident.StateLost, "the key was deleted"},
		{"every cluster terminal", incident.KeyStateDisabled, []incident.ClusterStatus{incident.StatusTerminal, incident.StatusTerminal}, incident.StateLost, "restore from a snapshot"},
		{"terminal and deleted", incident.KeyStatePendingDeletion, []incident.ClusterStatus{incident.StatusTerminal, StatusDeleted}, incident.StateLost, "cancel its deletion"},
		{"one back, one terminal", incident.KeyStateEnabled, []incident.ClusterStatus{incident.StatusAvailable, incident.StatusTerminal}, incident.StateLost, "billing lost"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inc := twoClusters()
			inc.Snapshots = []incident.Snapshot{{Identifier: "orders-snap"}}
			SetKey(&inc, kmskey.Key{ARN: keyARN, State: tc.keyState, Manager: "CUSTOMER"}, test, now)
			SetClusterStatus(&inc, "orders", tc.statuses[0], test, now)
			SetClusterStatus(&inc, "billing", tc.statuses[1], test, now)
			got := Settle(&inc, now)
			if got != tc.wantState {
				t.Fatalf("got %q, want %q", got, tc.wantState)
			}
			if tc.wantState == "" {
				if inc.State != incident.StateOpen {
					t.Errorf("got state %s, want open", inc.State)
				}
				return
			}
			last, ok := inc.LastEntry(incident.KindState)
			if !ok || last.Result != incident.Result(tc.wantState) || last.Actor != incident.Keywarden {
				t.Fatalf("got last state entry %+v (%v), want one to %s by keywarden", last, ok, tc.wantState)
			}
			if !strings.Contains(last.Detail, tc.wantClose) {
				t.Errorf("got closing text %q, want it to tell people %q", last.Detail, tc.wantClose)
			}
			if inc.ClosedAt == nil {
				t.Error("got no ClosedAt")
			}
			if Settle(&inc, now) != "" {
				t.Error("settling a closed incident again changed it")
			}
		})
	}
}

// TestSettleRemediating: a remediating incident whose clusters came back is resolved through
// the model's transition, which ends the run.
func TestSettleRemediating(t *testing.T) {
	inc := twoClusters()
	inc.KeyState = incident.KeyStateEnabled
	if _, started, err := inc.Approve("U1", inc.Version, "click:1", now, 1, "run-1"); err != nil || !started {
		t.Fatalf("Approve: started %v, %v", started, err)
	}
	inc.Remediation.State = incident.RemediationRunning
	if got := Settle(&inc, now); got != incident.StateResolved {
		t.Fatalf("got %q, want resolved", got)
	}
	if inc.Remediation.State != incident.RemediationDone {
		t.Errorf("got remediation %s, want done", inc.Remediation.State)
	}
}

func TestSettleMarksTerminalLostAndRecovered(t *testing.T) {
	inc := twoClusters()
	SetClusterStatus(&inc, "orders", incident.StatusTerminal, test, now)
	Settle(&inc, now)
	if !inc.Clusters[0].Lost {
		t.Error("got orders not lost in the terminal state")
	}
	// The lost cluster no longer counts: the deadline is billing's.
	if got, want := *inc.Deadline, lostAt.Add(incident.RecoverableWindow); !got.Equal(want) {
		t.Errorf("got deadline %v, want %v", got, want)
	}
	SetKey(&inc, kmskey.Key{ARN: keyARN, State: incident.KeyStateEnabled}, test, now)
	SetClusterStatus(&inc, "billing", incident.StatusStopped, test, now)
	Settle(&inc, now)
	if inc.Clusters[1].Recovered || inc.State.Closed() {
		t.Errorf("got billing recovered=%v state=%s while stopped, want not recovered, open", inc.Clusters[1].Recovered, inc.State)
	}
}

func TestSetKeyRecordsChangesOnly(t *testing.T) {
	inc := twoClusters()
	del := time.Date(2026, 3, 17, 14, 0, 0, 0, time.UTC)
	SetKey(&inc, kmskey.Key{State: incident.KeyStateDisabled}, test, now)
	if len(inc.Timeline) != 0 {
		t.Fatalf("got %d entries for an unchanged key, want 0", len(inc.Timeline))
	}
	SetKey(&inc, kmskey.Key{State: incident.KeyStatePendingDeletion, DeletionDate: &del}, test, now)
	e, ok := inc.LastEntry(incident.KindKeyChange)
	if len(inc.Timeline) != 1 || !ok || e.Result != incident.Result(incident.KeyStatePendingDeletion) || e.Target != keyARN {
		t.Fatalf("got %+v, want one key change to PendingDeletion", inc.Timeline)
	}
	if inc.KeyDeletionDate == nil || !inc.KeyDeletionDate.Equal(del) {
		t.Fatalf("got deletion date %v, want %v", inc.KeyDeletionDate, del)
	}
	SetKey(&inc, kmskey.Key{State: incident.KeyStateDisabled}, test, now) // cancelled
	if inc.KeyDeletionDate != nil {
		t.Errorf("got deletion date %v after cancel, want none", inc.KeyDeletionDate)
	}
	// A new incident's first state is no change.
	fresh := incident.Incident{KeyARN: keyARN}
	SetKey(&fresh, kmskey.Key{State: incident.KeyStateDisabled}, test, now)
	if fresh.KeyState != incident.KeyStateDisabled || len(fresh.Timeline) != 0 {
		t.Errorf("got %s and %d entries, want Disabled and none", fresh.KeyState, len(fresh.Timeline))
	}
}

// TestSourceEntryIDs: a change an event reports is recorded once however often the event is
// delivered; a change a live read finds is recorded once per version, so the key going back
// and forth between passes is recorded each time.
func TestSourceEntryIDs(t *testing.T) {
	for _, tc := range []struct {
		name string
		src  Source
		want int
	}{
		{"event delivered twice", Source{EventID: "ev-1", Name: "DisableKey"}, 1},
		{"reconciliation across versions", Reconciliation, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inc := twoClusters()
			for range 2 {
				SetKey(&inc, kmskey.Key{State: incident.KeyStateEnabled}, tc.src, now)
				SetKey(&inc, kmskey.Key{State: incident.KeyStateDisabled}, tc.src, now)
				inc.Version++ // the store writes each pass as a new version
			}
			n := 0
			for _, e := range inc.Timeline {
				if e.Kind == incident.KindKeyChange && e.Result == incident.Result(incident.KeyStateDisabled) {
					n++
				}
			}
			if n != tc.want {
				t.Errorf("got %d changes to Disabled recorded, want %d", n, tc.want)
			}
		})
	}
}

// TestKeyEvidence is the key side's rule for a window's start, which intake's fold and the
// CloudTrail look-up share: the earliest key-side time, never once RDS dated the window, never
// for a cluster that cannot stop.
func TestKeyEvidence(t *testing.T) {
	at := lostAt.Add(-time.Hour)
	for _, tc := range []struct {
		name     string
		cluster  incident.Cluster
		wantMove bool
		want     *time.Time
	}{
		{"new cluster", incident.Cluster{CanStop: true}, true, ptr(at)},
		{"earlier than the estimate", incident.Cluster{CanStop: true, LostAccessAt: ptr(lostAt)}, true, ptr(at)},
		{"later than the estimate", incident.Cluster{CanStop: true, LostAccessAt: ptr(at.Add(-time.Minute))}, false, ptr(at.Add(-time.Minute))},
		{"dated by RDS", incident.Cluster{CanStop: true, LostAccessAt: ptr(lostAt), WindowFromRDS: true}, false, ptr(lostAt)},
		{"cannot stop", incident.Cluster{CanStop: false}, false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.cluster
			if got := KeyEvidence(&c, at); got != tc.wantMove {
				t.Errorf("got moved %v, want %v", got, tc.wantMove)
			}
			if diff := cmp.Diff(tc.want, c.LostAccessAt); diff != "" {
				t.Errorf("window start (-want +got):\n%s", diff)
			}
		})
	}
}

func TestApplyLoss(t *testing.T) {
	found := lostAt.Add(-36 * time.Hour)
	inc := twoClusters()
	inc.Trigger, inc.TriggerDetail = "Reconciliation", "found by reconciliation"
	// orders was refined to a time of its own, earlier than the estimate; billing is still at
	// the estimate.
	inc.Clusters[0].LostAccessAt = ptr(lostAt.Add(-time.Hour))
	alice := incident.Actor{ARN: "arn:aws:iam::123456789012:user/alice", SourceIP: "192.0.2.1"}
	if LossLookedUp(inc) {
		t.Fatal("got LossLookedUp before any look-up")
	}
	ApplyLoss(&inc, Loss{EventName: "DisableKey", EventID: "ev-1", Actor: alice, At: found}, now)
	if inc.Actor != alice {
		t.Errorf("got actor %+v, want %+v", inc.Actor, alice)
	}
	if !inc.LostAt.Equal(found) || !inc.Clusters[1].LostAccessAt.Equal(found) {
		t.Errorf("got LostAt %v, billing start %v, want both %v", inc.LostAt, inc.Clusters[1].LostAccessAt, found)
	}
	// Earliest evidence wins: the CloudTrail call is earlier than orders' own time too.
	if !inc.Clusters[0].LostAccessAt.Equal(found) {
		t.Errorf("got orders start %v, want %v", inc.Clusters[0].LostAccessAt, found)
	}
	note, ok := inc.LastEntry(incident.KindNote)
	if !LossLookedUp(inc) || !ok || note.Source != LookupSource || note.Result != incident.ResultOK {
		t.Errorf("got note %+v, want the look-up's answer with Source %s and Result ok", note, LookupSource)
	}
	// Applying the same answer again (a retried write) records nothing more.
	n := len(inc.Timeline)
	ApplyLoss(&inc, Loss{EventName: "DisableKey", EventID: "ev-1", Actor: alice, At: found}, now)
	if len(inc.Timeline) != n {
		t.Errorf("got %d entries after the same answer again, want %d", len(inc.Timeline), n)
	}

	// A later call moves nothing.
	later := twoClusters()
	ApplyLoss(&later, Loss{EventName: "DisableKey", EventID: "ev-2", Actor: alice, At: lostAt.Add(time.Hour)}, now)
	if !later.LostAt.Equal(lostAt) || !later.Clusters[0].LostAccessAt.Equal(lostAt) {
		t.Errorf("got LostAt %v, start %v after a later call, want both kept at %v", later.LostAt, later.Clusters[0].LostAccessAt, lostAt)
	}

	// KMS's own deletion event names the service, not who scheduled the deletion: the
	// look-up's actor replaces it.
	kms := twoClusters()
	kms.Trigger = "KMS CMK Deletion"
	kms.Actor = incident.Actor{Principal: "kms.amazonaws.com", Type: "AWSService", AccountID: "123456789012"}
	if !ActorUnknown(kms) {
		t.Error("got ActorUnknown false for KMS's own event, want true")
	}
	ApplyLoss(&kms, Loss{EventName: "ScheduleKeyDeletion", EventID: "ev-3", Actor: alice, At: found}, now)
	if kms.Actor != alice || ActorUnknown(kms) {
		t.Errorf("got actor %+v, want %+v", kms.Actor, alice)
	}

	none := twoClusters()
	ApplyNoLoss(&none, now)
	ApplyNoLoss(&none, now)
	note, _ = none.LastEntry(incident.KindNote)
	if !LossLookedUp(none) || len(none.Timeline) != 1 || note.Result != incident.ResultSkipped || !none.LostAt.Equal(lostAt) {
		t.Errorf("got %+v, LostAt %v; want the look-up's empty answer once and LostAt kept", none.Timeline, none.LostAt)
	}
	// A note from anything else is not the look-up's answer.
	other := twoClusters()
	other.AddEntry(incident.Entry{Kind: incident.KindNote, Source: "someone", Detail: NoLossFound})
	if LossLookedUp(other) {
		t.Error("got LossLookedUp from a note of another source")
	}
}

// TestSettleWaitsForInstancesWithLostKeyAccess: an instance that reported lost key access
// (0418/0419) with no 0420 since needs RebootDBInstance, so the incident is not resolved while
// it lasts, however available the clusters read; a 0420 resolves it.
func TestSettleWaitsForInstancesWithLostKeyAccess(t *testing.T) {
	inc := twoClusters()
	KeyAccessLost(&inc, AccessReport{Cluster: "orders", Instance: "orders-2", Code: "RDS-EVENT-0418", At: lostAt}, now)
	SetKey(&inc, kmskey.Key{ARN: keyARN, State: incident.KeyStateEnabled}, test, now)
	if got := Settle(&inc, now); got != "" || inc.State != incident.StateOpen {
		t.Fatalf("got %q, state %s with orders-2 still without key access; want open", got, inc.State)
	}
	// One cluster lost, the other available: not closed as lost either while orders-2 waits.
	SetClusterStatus(&inc, "billing", incident.StatusTerminal, test, now)
	if got := Settle(&inc, now); got != "" {
		t.Fatalf("got %q with orders-2 still without key access; want open", got)
	}
	KeyAccessRestored(&inc, AccessReport{Cluster: "orders", Instance: "orders-2", Code: "RDS-EVENT-0420", At: now}, now)
	if got := Settle(&inc, now); got != incident.StateLost {
		t.Errorf("after 0420: got %q, want lost (billing is terminal)", got)
	}

	// An instance of a lost cluster does not hold the incident open.
	inc = twoClusters()
	KeyAccessLost(&inc, AccessReport{Cluster: "orders", Instance: "orders-1", Code: "RDS-EVENT-0419", At: lostAt}, now)
	SetClusterStatus(&inc, "orders", incident.StatusTerminal, test, now)
	SetClusterStatus(&inc, "billing", incident.StatusTerminal, test, now)
	if got := Settle(&inc, now); got != incident.StateLost {
		t.Errorf("every cluster terminal: got %q, want lost", got)
	}
}

// TestClusterEventMarksEveryMember: a lost-access event about the cluster itself marks each of
// its instances, as a cluster-level 0420 clears them all.
func TestClusterEventMarksEveryMember(t *testing.T) {
	inc := twoClusters()
	KeyAccessLost(&inc, AccessReport{Cluster: "orders", Instance: "", Code: "RDS-EVENT-0419", At: lostAt}, now)
	if !inc.Instances[0].LostKeyAccess || !inc.Instances[1].LostKeyAccess {
		t.Errorf("got LostKeyAccess %v/%v, want both true", inc.Instances[0].LostKeyAccess, inc.Instances[1].LostKeyAccess)
	}
}

// TestClusterStartClearsLostKeyAccess: a cluster seen stopped and then available with the key
// Enabled started its instances, which reach the key again, even when 0420 never arrives; a
// start while the key is still not Enabled clears nothing.
func TestClusterStartClearsLostKeyAccess(t *testing.T) {
	inc := twoClusters()
	KeyAccessLost(&inc, AccessReport{Cluster: "orders", Instance: "orders-1", Code: "RDS-EVENT-0418", At: lostAt}, now)
	SetClusterStatus(&inc, "orders", incident.StatusRecoverable, test, now)
	SetClusterStatus(&inc, "orders", incident.StatusAvailable, test, now) // key still Disabled
	if !inc.Instances[0].LostKeyAccess {
		t.Fatal("a start with the key Disabled cleared orders-1's lost access")
	}
	SetClusterStatus(&inc, "orders", incident.StatusStopped, test, now)
	SetKey(&inc, kmskey.Key{ARN: keyARN, State: incident.KeyStateEnabled}, test, now)
	SetClusterStatus(&inc, "orders", incident.StatusAvailable, test, now)
	if inc.Instances[0].LostKeyAccess {
		t.Error("got orders-1 LostKeyAccess after the cluster started with the key Enabled, want false")
	}
	if got := Settle(&inc, now); got != incident.StateResolved {
		t.Errorf("got %q, want resolved", got)
	}
}

// TestSettleOwnerStoppedCluster: a cluster its owner stopped before the loss is left stopped by
// remediation, so it must not keep the incident open once the key is back and the rest are
// available (a fresh-eyes review found it never resolved, and was later called "stalled").
func TestSettleOwnerStoppedCluster(t *testing.T) {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	inc := incident.Incident{ID: "KW-1", State: incident.StateRemediating, KeyState: incident.KeyStateEnabled,
		Clusters: []incident.Cluster{
			{Identifier: "orders", Status: incident.StatusAvailable, CanStop: true, Uses: []string{"storage"}},
			{Identifier: "dev", Status: incident.StatusStopped, StoppedBeforeLoss: true, CanStop: true, Uses: []string{"storage"}},
		}}
	if got := Settle(&inc, now); got != incident.StateResolved {
		t.Fatalf("Settle = %q, want resolved with dev left stopped by its owner", got)
	}
	// Not stopped by its owner: the incident waits for it.
	inc2 := incident.Incident{ID: "KW-2", State: incident.StateRemediating, KeyState: incident.KeyStateEnabled,
		Clusters: []incident.Cluster{{Identifier: "dev", Status: incident.StatusStopped, CanStop: true, Uses: []string{"storage"}}}}
	if got := Settle(&inc2, now); got != "" {
		t.Errorf("Settle = %q, want still active while a cluster stopped by the loss is stopped", got)
	}
}
