package remedy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	kmstypes "github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/aws-sdk-go-v2/service/rds"
	rdstypes "github.com/aws/aws-sdk-go-v2/service/rds/types"
	"github.com/aws/smithy-go"
	"github.com/google/go-cmp/cmp"

	"github.com/keywarden/keywarden/internal/incident"
)

const approver = "U012APPROVER"

// threeClusters is an incident on a key pending deletion: orders stopped, billing in the
// recoverable state, reports still running with an instance that lost key access.
func threeClusters() (*world, incident.Incident) {
	w := newWorld(kmstypes.KeyStatePendingDeletion,
		map[string]string{"orders": statusStopped, "billing": statusRecoverable, "reports": statusAvailable},
		map[string]string{"orders-1": statusStopped, "billing-1": statusRecoverable, "reports-1": statusAvailable})
	inc := testIncident(
		[]incident.Cluster{
			{Identifier: "orders", Engine: "aurora-postgresql", Status: incident.StatusStopped, CanStop: true},
			{Identifier: "billing", Engine: "aurora-mysql", Status: incident.StatusRecoverable, CanStop: true},
			{Identifier: "reports", Engine: "aurora-postgresql", Status: incident.StatusAvailable, CanStop: true},
		},
		[]incident.Instance{
			{Identifier: "orders-1", ClusterIdentifier: "orders", LostKeyAccess: true},
			{Identifier: "billing-1", ClusterIdentifier: "billing", LostKeyAccess: true},
			{Identifier: "reports-1", ClusterIdentifier: "reports", Status: incident.StatusAvailable, LostKeyAccess: true},
		})
	inc.KeyState = incident.KeyStatePendingDeletion
	inc.KeyDeletionDate = aws.Time(time.Date(2026, 3, 10, 0, 0, 0, 0, time.UTC))
	inc.Trigger = "ScheduleKeyDeletion"
	return w, inc
}

func TestRunPendingDeletion(t *testing.T) {
	w, inc := threeClusters()
	store := newMemStore(inc)
	clk := newClock()
	got, ran, err := w.runner(store, clk, Options{}).Run(context.Background(), inc.ID, approver)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}

	want := []step{
		ok(incident.StepCancelKeyDeletion, testKeyARN),
		ok(incident.StepEnableKey, testKeyARN),
		ok(incident.StepWaitEnabled, testKeyARN),
		ok(incident.StepStartDBCluster, "orders"),
		ok(incident.StepStartDBCluster, "billing"),
		skipped(incident.StepStartDBCluster, "reports", "already available"),
		skipped(incident.StepWatchInstance, "orders-1", "cluster orders is started, which starts its instances"),
		skipped(incident.StepWatchInstance, "billing-1", "cluster billing is started, which starts its instances"),
		skipped(incident.StepWatchInstance, "reports-1", watched),
	}
	if diff := cmp.Diff(want, steps(got)); diff != "" {
		t.Errorf("recorded steps (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(got, store.get(t, inc.ID)); diff != "" {
		t.Errorf("returned incident differs from stored (-returned +stored):\n%s", diff)
	}
	for _, s := range got.Remediation.Steps {
		if s.ID != incident.StepID("run-1", s.Kind, s.Target) || !s.At.Equal(clk.now) {
			t.Errorf("step %s %s: ID %q at %v, want run-1's ID at %v", s.Kind, s.Target, s.ID, s.At, clk.now)
		}
	}
	for _, e := range got.Timeline {
		if e.Kind == incident.KindRemediationStep && (e.Actor != incident.Keywarden || e.Source != "run-1") {
			t.Errorf("step entry %+v: want keywarden's, from run-1", e)
		}
	}
	if len(ran) != len(want) {
		t.Errorf("got %d steps, want %d", len(ran), len(want))
	}

	// The world, not just nil errors: the key is Enabled and the stopped clusters start.
	if w.keyState != kmstypes.KeyStateEnabled {
		t.Errorf("key state = %s, want Enabled", w.keyState)
	}
	wantLive := map[string]string{"orders": statusStarting, "billing": statusStarting, "reports": statusAvailable}
	if diff := cmp.Diff(wantLive, w.clusters); diff != "" {
		t.Errorf("live clusters (-want +got):\n%s", diff)
	}
	wantCalls := map[string]int{"CancelKeyDeletion": 1, "EnableKey": 1, "StartDBCluster": 2, "RebootDBInstance": 0}
	for api, n := range wantCalls {
		if w.calls[api] != n {
			t.Errorf("%s calls = %d, want %d", api, w.calls[api], n)
		}
	}

	// The incident follows: remediating with the run done, key Enabled with no deletion
	// date, per-cluster status.
	if got.State != incident.StateRemediating || got.Remediation.State != incident.RemediationDone || got.Remediation.RunID != "run-1" {
		t.Errorf("state %s, remediation %s run %q; want remediating, done, run-1", got.State, got.Remediation.State, got.Remediation.RunID)
	}
	if got.KeyState != incident.KeyStateEnabled || got.KeyDeletionDate != nil {
		t.Errorf("key state %s deletion %v, want Enabled and none", got.KeyState, got.KeyDeletionDate)
	}
	type clusterView struct {
		Status    incident.ClusterStatus
		Recovered bool
	}
	var gotClusters []clusterView
	for _, c := range got.Clusters {
		gotClusters = append(gotClusters, clusterView{c.Status, c.Recovered})
	}
	// reports is available with the key Enabled, but its instance reports-1 still reports the
	// loss (issue 9's rule: the cluster's own evidence holds it) until the watch ends it — by
	// RDS-EVENT-0420 or the grace period (issue 11), not by this run.
	wantClusters := []clusterView{{incident.StatusStarting, false}, {incident.StatusStarting, false}, {incident.StatusAvailable, false}}
	if diff := cmp.Diff(wantClusters, gotClusters); diff != "" {
		t.Errorf("incident clusters (-want +got):\n%s", diff)
	}
	// No reboot in the one click: the running instance that lost its key is watched from now.
	if in := got.Instances[2]; in.Status != incident.StatusAvailable || !in.LostKeyAccess || in.WatchSince == nil || !in.WatchSince.Equal(clk.now) {
		t.Errorf("reports-1: status %s, lost %v, watched since %v; want available, still lost, watched since %v", in.Status, in.LostKeyAccess, in.WatchSince, clk.now)
	}
}

const watched = "not rebooted (a reboot is an outage, and no AWS document asks for one): watched until RDS-EVENT-0420, " +
	"or counted recovered after the grace period available with the key Enabled"

func TestRunAgainRepeatsNothing(t *testing.T) {
	w, inc := threeClusters()
	store := newMemStore(inc)
	r := w.runner(store, newClock(), Options{})
	first, _, err := r.Run(context.Background(), inc.ID, approver)
	if err != nil {
		t.Fatalf("first Run: %v", err)
	}
	writes := w.writes()

	// Lambda runs the same run again (a second delivery of the hand-off): the run is done,
	// so the claim refuses it and nothing is called or recorded again.
	got, ran, err := r.Run(context.Background(), inc.ID, approver)
	if !errors.Is(err, ErrClaimed) || Retryable(err) {
		t.Fatalf("second Run: %v, want ErrClaimed, not retryable", err)
	}
	if n := w.writes() - writes; n != 0 || len(ran) != 0 {
		t.Errorf("second Run made %d write calls (%v) and %d steps, want none", n, w.calls, len(ran))
	}
	if diff := cmp.Diff(steps(first), steps(got)); diff != "" {
		t.Errorf("the same run recorded steps again (-first +after second):\n%s", diff)
	}
}

// A run that dies after EnableKey (here: the write recording it is lost) and is run again
// finishes the job without cancelling or enabling twice.
func TestRunResumesAfterCrash(t *testing.T) {
	tests := []struct {
		name string
		// crash fails the Update that would record this step, as a Lambda dying after the API call.
		crashKind   incident.StepKind
		crashTarget string
		wantCalls   map[string]int
	}{
		{name: "after EnableKey", crashKind: incident.StepEnableKey, crashTarget: testKeyARN,
			wantCalls: map[string]int{"CancelKeyDeletion": 1, "EnableKey": 1, "StartDBCluster": 2, "RebootDBInstance": 0}},
		{name: "after StartDBCluster", crashKind: incident.StepStartDBCluster, crashTarget: "orders",
			wantCalls: map[string]int{"CancelKeyDeletion": 1, "EnableKey": 1, "StartDBCluster": 2, "RebootDBInstance": 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, inc := threeClusters()
			store := newMemStore(inc)
			crashed := errors.New("lambda timed out")
			store.failUpdate = func(i incident.Incident) error {
				if s := i.Remediation.Steps; len(s) > 0 && s[len(s)-1].Kind == tt.crashKind && s[len(s)-1].Target == tt.crashTarget {
					return crashed
				}
				return nil
			}
			r := w.runner(store, newClock(), Options{})
			if _, _, err := r.Run(context.Background(), inc.ID, approver); !errors.Is(err, crashed) || !errors.Is(err, ErrPaused) || !Retryable(err) {
				t.Fatalf("first Run error = %v, want %v, paused", err, crashed)
			}
			// The run is released for the next invocation, and says where it stopped.
			if got := store.get(t, inc.ID); got.State != incident.StateRemediating || got.Remediation.State != incident.RemediationApproved ||
				!strings.HasPrefix(got.Remediation.StoppedAt, string(tt.crashKind)) {
				t.Fatalf("after the crash: state %s, remediation %s stopped at %q; want remediating, approved, stopped at %s",
					got.State, got.Remediation.State, got.Remediation.StoppedAt, tt.crashKind)
			}

			store.failUpdate = nil
			got, _, err := r.Run(context.Background(), inc.ID, approver)
			if err != nil {
				t.Fatalf("second Run: %v", err)
			}
			for api, n := range tt.wantCalls {
				if w.calls[api] != n {
					t.Errorf("%s calls = %d, want %d", api, w.calls[api], n)
				}
			}
			if w.keyState != kmstypes.KeyStateEnabled || w.clusters["orders"] != statusStarting || w.clusters["billing"] != statusStarting {
				t.Errorf("key %s, clusters %v: want Enabled and both started", w.keyState, w.clusters)
			}
			if got.KeyState != incident.KeyStateEnabled || got.Remediation.State != incident.RemediationDone {
				t.Errorf("incident key state = %s, remediation %s; want Enabled, done", got.KeyState, got.Remediation.State)
			}
			// The crashed step is recorded by the retry, once.
			n := 0
			for _, s := range got.Remediation.Steps {
				if s.Kind == tt.crashKind && s.Target == tt.crashTarget {
					n++
				}
			}
			if n != 1 {
				t.Errorf("%s %s recorded %d times, want once", tt.crashKind, tt.crashTarget, n)
			}
		})
	}
}

func TestRunWaitEnabledBackoff(t *testing.T) {
	w := newWorld(kmstypes.KeyStateDisabled, nil, nil)
	w.enableLag = 3
	store := newMemStore(testIncident(nil, nil))
	clk := newClock()
	got, _, err := w.runner(store, clk, Options{}).Run(context.Background(), "inc-1", approver)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if diff := cmp.Diff([]time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second}, clk.sleeps); diff != "" {
		t.Errorf("sleeps (-want +got):\n%s", diff)
	}
	if got.KeyState != incident.KeyStateEnabled {
		t.Errorf("key state = %s, want Enabled", got.KeyState)
	}
}

func TestRunWaitEnabledTimesOut(t *testing.T) {
	w := newWorld(kmstypes.KeyStateDisabled, map[string]string{"orders": statusStopped}, nil)
	w.enableLag = 1 << 30 // KMS never agrees
	store := newMemStore(testIncident([]incident.Cluster{{Identifier: "orders", CanStop: true}}, nil))
	clk := newClock()
	start := clk.now
	got, _, err := w.runner(store, clk, Options{WaitTimeout: 20 * time.Second}).Run(context.Background(), "inc-1", approver)
	if err == nil || !strings.Contains(err.Error(), "still Disabled after 20s") || !errors.Is(err, ErrPaused) {
		t.Fatalf("Run error = %v, want the wait to time out and the run to pause", err)
	}
	if waited := clk.now.Sub(start); waited != 20*time.Second {
		t.Errorf("waited %s, want exactly the 20s bound", waited)
	}
	want := []step{
		skipped(incident.StepCancelKeyDeletion, testKeyARN, "no deletion scheduled (key Disabled)"),
		ok(incident.StepEnableKey, testKeyARN),
	}
	if diff := cmp.Diff(want, steps(got)); diff != "" {
		t.Errorf("recorded steps (-want +got):\n%s", diff)
	}
	if w.calls["StartDBCluster"] != 0 {
		t.Errorf("StartDBCluster calls = %d, want 0: clusters wait for the key", w.calls["StartDBCluster"])
	}
	// The run is released for the next invocation (the reconciler starts it within a
	// minute), the incident stays remediating, and the timeline says why it stopped.
	if got.State != incident.StateRemediating || got.Remediation.State != incident.RemediationApproved {
		t.Errorf("state %s, remediation %s; want a paused run", got.State, got.Remediation.State)
	}
	if e, _ := got.LastEntry(incident.KindNote); !strings.Contains(e.Detail, "still Disabled after 20s") {
		t.Errorf("pause note %q does not say why", e.Detail)
	}
}

func TestRunKMSFailureStops(t *testing.T) {
	w := newWorld(kmstypes.KeyStateDisabled, map[string]string{"orders": statusStopped}, nil)
	w.kms.enableKey = func(*kms.EnableKeyInput) (*kms.EnableKeyOutput, error) {
		return nil, &smithy.GenericAPIError{Code: "AccessDeniedException", Message: "not authorized to perform kms:EnableKey", Fault: smithy.FaultClient}
	}
	store := newMemStore(testIncident([]incident.Cluster{{Identifier: "orders", CanStop: true}}, nil))
	got, _, err := w.runner(store, newClock(), Options{}).Run(context.Background(), "inc-1", approver)
	if err == nil {
		t.Fatal("Run succeeded, want the EnableKey failure")
	}
	want := []step{
		skipped(incident.StepCancelKeyDeletion, testKeyARN, "no deletion scheduled (key Disabled)"),
		failed(incident.StepEnableKey, testKeyARN, "AccessDeniedException: not authorized to perform kms:EnableKey"),
	}
	if diff := cmp.Diff(want, steps(got)); diff != "" {
		t.Errorf("recorded steps (-want +got):\n%s", diff)
	}
	// Denied for good: no retry, the incident goes back to the approvers.
	if Retryable(err) {
		t.Errorf("Run error %v is retryable, want not", err)
	}
	givenBack(t, got)
	if w.calls["StartDBCluster"] != 0 {
		t.Errorf("StartDBCluster calls = %d, want 0", w.calls["StartDBCluster"])
	}
}

func TestRunClusterFailures(t *testing.T) {
	tests := []struct {
		name string
		// fail is StartDBCluster's answer for cluster "orders".
		fail func(w *world) error
		// want is orders' recorded step.
		want    step
		wantErr bool
		// wantIncomplete is whether the run finishes with orders named as needing attention.
		wantIncomplete bool
		// wantBilling is whether the next cluster is still started.
		wantBilling bool
		wantPaused  bool
	}{
		{
			name: "permanent failure is recorded, the rest continue, the run is incomplete",
			fail: func(*world) error {
				return &smithy.GenericAPIError{Code: "AccessDenied", Message: "not authorized to perform rds:StartDBCluster", Fault: smithy.FaultClient}
			},
			want:           failed(incident.StepStartDBCluster, "orders", "AccessDenied: not authorized to perform rds:StartDBCluster"),
			wantErr:        true,
			wantIncomplete: true,
			wantBilling:    true,
		},
		{
			name: "already starting counts as done",
			fail: func(w *world) error {
				w.clusters["orders"] = statusStarting // someone else started it meanwhile
				return &rdstypes.InvalidDBClusterStateFault{Message: aws.String("DbCluster orders is in starting state but expected it to be one of stopped, inaccessible-encryption-credentials-recoverable.")}
			},
			want:        step{incident.StepStartDBCluster, "orders", incident.ResultOK, "already starting"},
			wantBilling: true,
		},
		{
			name: "wrong state for good is a failure",
			fail: func(w *world) error {
				w.clusters["orders"] = "stopping"
				return &rdstypes.InvalidDBClusterStateFault{Message: aws.String("DbCluster orders is in stopping state but expected it to be one of stopped, inaccessible-encryption-credentials-recoverable.")}
			},
			want:           failed(incident.StepStartDBCluster, "orders", "InvalidDBClusterStateFault: DbCluster orders is in stopping state but expected it to be one of stopped, inaccessible-encryption-credentials-recoverable."),
			wantErr:        true,
			wantIncomplete: true,
			wantBilling:    true,
		},
		{
			name: "throttling pauses the run for the next invocation",
			fail: func(*world) error {
				return &smithy.GenericAPIError{Code: "ThrottlingException", Message: "Rate exceeded", Fault: smithy.FaultClient}
			},
			wantErr:    true,
			wantPaused: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(kmstypes.KeyStateEnabled, map[string]string{"orders": statusStopped, "billing": statusStopped}, nil)
			start := w.rds.startDBCluster
			w.rds.startDBCluster = func(in *rds.StartDBClusterInput) (*rds.StartDBClusterOutput, error) {
				if aws.ToString(in.DBClusterIdentifier) == "orders" {
					w.calls["StartDBCluster"]++
					return nil, tt.fail(w)
				}
				return start(in)
			}
			store := newMemStore(testIncident([]incident.Cluster{{Identifier: "orders", CanStop: true}, {Identifier: "billing", CanStop: true}}, nil))
			got, _, err := w.runner(store, newClock(), Options{}).Run(context.Background(), "inc-1", approver)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Run error = %v, want error %v", err, tt.wantErr)
			}
			if tt.wantPaused {
				if !errors.Is(err, ErrPaused) || len(steps(got)) != 3 || got.Remediation.State != incident.RemediationApproved ||
					got.Remediation.StoppedAt != "StartDBCluster orders" {
					t.Errorf("Run error = %v, %d steps, remediation %s stopped at %q; want paused before StartDBCluster orders with it unrecorded",
						err, len(steps(got)), got.Remediation.State, got.Remediation.StoppedAt)
				}
				return
			}
			if errors.Is(err, ErrIncomplete) != tt.wantIncomplete || (err != nil && Retryable(err)) {
				t.Errorf("Run error = %v: incomplete %v, retryable %v; want incomplete %v and retryable %v",
					err, errors.Is(err, ErrIncomplete), Retryable(err), tt.wantIncomplete, !tt.wantIncomplete)
			}
			var inc *IncompleteError
			if tt.wantIncomplete && (!errors.As(err, &inc) || len(inc.Clusters) != 1 || inc.Clusters[0].Cluster != "orders") {
				t.Errorf("Run error = %#v, want an IncompleteError naming orders only", err)
			}
			if diff := cmp.Diff(tt.want, steps(got)[3]); diff != "" {
				t.Errorf("orders step (-want +got):\n%s", diff)
			}
			// A run that cannot finish goes back to the approvers; one Lambda retries stays.
			switch {
			case tt.wantIncomplete:
				givenBack(t, got)
			case tt.wantErr:
				if got.State != incident.StateRemediating || got.Remediation.State != incident.RemediationRunning {
					t.Errorf("state %s, remediation %s; want remediating and running for the retry", got.State, got.Remediation.State)
				}
			}
			if started := w.clusters["billing"] == statusStarting; started != tt.wantBilling {
				t.Errorf("billing started = %v, want %v", started, tt.wantBilling)
			}
		})
	}
}

func TestRunRefusesNotFixable(t *testing.T) {
	w := newWorld(kmstypes.KeyStatePendingImport, map[string]string{"orders": statusStopped}, nil)
	store := newMemStore(testIncident([]incident.Cluster{{Identifier: "orders", CanStop: true}}, nil))
	got, ran, err := w.runner(store, newClock(), Options{}).Run(context.Background(), "inc-1", approver)
	var nf *incident.NotFixableError
	if !errors.Is(err, ErrNotFixable) || !errors.As(err, &nf) || Retryable(err) {
		t.Fatalf("Run error = %v, want a NotFixableError, not retryable", err)
	}
	if ran != nil || w.writes() != 0 || len(got.Remediation.Steps) != 0 {
		t.Errorf("steps %v, writes %d, recorded %v: want nothing done", ran, w.writes(), got.Remediation.Steps)
	}
	givenBack(t, got)
	// The live key state is recorded, and the reason tells people what to do instead.
	if got.KeyState != incident.KeyStatePendingImport || !strings.Contains(got.Remediation.Reason, "ImportKeyMaterial") {
		t.Errorf("key %s, reason %q; want PendingImport and what to do", got.KeyState, got.Remediation.Reason)
	}
}

// Every cluster terminal: one click cannot bring any back, so nothing runs — not even the key,
// which the message says to enable before a restore.
func TestRunRefusesAllTerminal(t *testing.T) {
	w := newWorld(kmstypes.KeyStateDisabled, map[string]string{"orders": statusTerminal}, nil)
	store := newMemStore(testIncident([]incident.Cluster{{Identifier: "orders", CanStop: true}}, nil))
	got, _, err := w.runner(store, newClock(), Options{}).Run(context.Background(), "inc-1", approver)
	if !errors.Is(err, ErrNotFixable) || w.writes() != 0 {
		t.Fatalf("Run error = %v after %d writes, want ErrNotFixable and none", err, w.writes())
	}
	givenBack(t, got)
	if c := got.Clusters[0]; !c.Lost || c.Status != incident.StatusTerminal {
		t.Errorf("cluster = %+v, want lost in %s", c, incident.StatusTerminal)
	}
}

func TestRunRefusesNotAllowed(t *testing.T) {
	w := newWorld(kmstypes.KeyStateDisabled, nil, nil)
	store := newMemStore(testIncident(nil, nil))
	r := w.runner(store, newClock(), Options{AllowedKeys: func(string) bool { return false }})
	got, _, err := r.Run(context.Background(), "inc-1", approver)
	if !errors.Is(err, ErrNotAllowed) {
		t.Fatalf("Run error = %v, want ErrNotAllowed", err)
	}
	if len(w.calls) != 0 {
		t.Errorf("calls = %v, want none", w.calls)
	}
	givenBack(t, got)
}

// Only an incident an approved click moved to remediating is remediated; a closed one, or one
// still open, changes nothing.
func TestRunRefusesUnapproved(t *testing.T) {
	closed := testIncident(nil, nil)
	if err := closed.MarkLost("keywarden", "test", time.Now()); err != nil {
		t.Fatal(err)
	}
	open := incident.Incident{ID: "inc-1", State: incident.StateOpen, KeyARN: testKeyARN, KeyState: incident.KeyStateDisabled}
	for _, tt := range []struct {
		name string
		inc  incident.Incident
		want error
	}{
		{"closed", closed, ErrClosed},
		{"open", open, ErrNotApproved},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(kmstypes.KeyStateDisabled, nil, nil)
			store := newMemStore(tt.inc)
			_, _, err := w.runner(store, newClock(), Options{}).Run(context.Background(), "inc-1", approver)
			if !errors.Is(err, tt.want) || Retryable(err) {
				t.Fatalf("Run error = %v, want %v, not retryable", err, tt.want)
			}
			if len(w.calls) != 0 {
				t.Errorf("calls = %v, want none", w.calls)
			}
			if diff := cmp.Diff(tt.inc, store.get(t, "inc-1")); diff != "" {
				t.Errorf("the incident changed (-before +after):\n%s", diff)
			}
		})
	}
}

// A run whose incident was given back and approved again meanwhile (another run) stops.
func TestRunStopsWhenSuperseded(t *testing.T) {
	w := newWorld(kmstypes.KeyStateDisabled, map[string]string{"orders": statusStopped}, nil)
	store := newMemStore(testIncident([]incident.Cluster{{Identifier: "orders", CanStop: true}}, nil))
	enable := w.kms.enableKey
	w.kms.enableKey = func(in *kms.EnableKeyInput) (*kms.EnableKeyOutput, error) {
		_, _ = store.Update(context.Background(), "inc-1", func(i *incident.Incident) error {
			if err := i.GiveBack("stalled", time.Now()); err != nil {
				return err
			}
			_, _, err := i.Approve("U2", i.Version, "click:2", time.Now(), 1, "run-2")
			return err
		})
		return enable(in)
	}
	got, _, err := w.runner(store, newClock(), Options{}).Run(context.Background(), "inc-1", approver)
	if !errors.Is(err, ErrNotApproved) {
		t.Fatalf("Run error = %v, want ErrNotApproved", err)
	}
	if w.calls["StartDBCluster"] != 0 || got.Remediation.RunID != "run-2" || got.State != incident.StateRemediating {
		t.Errorf("StartDBCluster calls %d, run %s, state %s: want the old run stopped and run-2 left alone",
			w.calls["StartDBCluster"], got.Remediation.RunID, got.State)
	}
}

// A terminal cluster beside one that can still be started: the key is enabled (a restore needs
// it too), the stopped one started, the terminal one marked lost and skipped.
func TestRunTerminalClusterMarkedLost(t *testing.T) {
	w := newWorld(kmstypes.KeyStateDisabled, map[string]string{"orders": statusTerminal, "billing": statusStopped}, nil)
	store := newMemStore(testIncident([]incident.Cluster{{Identifier: "orders", CanStop: true}, {Identifier: "billing", CanStop: true}}, nil))
	got, _, err := w.runner(store, newClock(), Options{}).Run(context.Background(), "inc-1", approver)
	if err != nil {
		t.Fatal(err)
	}
	if w.keyState != kmstypes.KeyStateEnabled {
		t.Errorf("key state = %s, want Enabled", w.keyState)
	}
	if c := got.Clusters[0]; !c.Lost || c.Status != incident.StatusTerminal {
		t.Errorf("cluster = %+v, want lost in %s", c, incident.StatusTerminal)
	}
	if w.calls["StartDBCluster"] != 1 || w.clusters["billing"] != statusStarting {
		t.Errorf("StartDBCluster calls = %d, billing %s; want billing alone started", w.calls["StartDBCluster"], w.clusters["billing"])
	}
}

func TestTransient(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{&smithy.GenericAPIError{Code: "ThrottlingException"}, true},
		{&smithy.GenericAPIError{Code: "Throttling"}, true},
		{&smithy.GenericAPIError{Code: "InternalFailure", Fault: smithy.FaultServer}, true},
		{&smithy.GenericAPIError{Code: "DependencyTimeoutException"}, true},
		{context.DeadlineExceeded, true},
		{errors.New("dial tcp: connection refused"), true},
		{&rdstypes.InvalidDBClusterStateFault{Message: aws.String("x")}, false},
		// A client fault in the SDK, but right after EnableKey it is KMS's eventual consistency.
		{&rdstypes.KMSKeyNotAccessibleFault{Message: aws.String("x")}, true},
		{&smithy.GenericAPIError{Code: "AccessDenied", Fault: smithy.FaultClient}, false},
	}
	for _, tt := range tests {
		if got := transient(tt.err); got != tt.want {
			t.Errorf("transient(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

func TestRetryable(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"not fixable", fmt.Errorf("remediate incident x: %w", ErrNotFixable), false},
		{"not allowed", fmt.Errorf("remediate incident x: %w", ErrNotAllowed), false},
		{"closed", fmt.Errorf("remediate incident x: %w", ErrClosed), false},
		{"not approved", fmt.Errorf("remediate incident x: %w", ErrNotApproved), false},
		{"access denied", fmt.Errorf("EnableKey k: %w", &smithy.GenericAPIError{Code: "AccessDeniedException", Fault: smithy.FaultClient}), false},
		{"throttled", fmt.Errorf("StartDBCluster c: %w", &smithy.GenericAPIError{Code: "ThrottlingException"}), true},
		{"wait timed out", errors.New("WaitEnabled k: key k still Disabled after 1m0s"), true},
		{"key not reachable by RDS yet", fmt.Errorf("StartDBCluster c: %w", &rdstypes.KMSKeyNotAccessibleFault{Message: aws.String("x")}), true},
		{"incomplete", &IncompleteError{Incident: "x", Clusters: []Unfinished{{Cluster: "c", Reason: "r"}}}, false},
		{"incomplete wrapped", fmt.Errorf("run: %w", ErrIncomplete), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Retryable(tt.err); got != tt.want {
				t.Errorf("Retryable(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

// notAccessibleFor makes StartDBCluster of cluster answer KMSKeyNotAccessibleFault n times
// before it reaches the key, as RDS may for a while after EnableKey.
func notAccessibleFor(w *world, cluster string, n int) {
	start := w.rds.startDBCluster
	w.rds.startDBCluster = func(in *rds.StartDBClusterInput) (*rds.StartDBClusterOutput, error) {
		if aws.ToString(in.DBClusterIdentifier) == cluster && n > 0 {
			n--
			w.calls["StartDBCluster"]++
			return nil, &rdstypes.KMSKeyNotAccessibleFault{Message: aws.String("The specified KMS key [" + testKeyARN + "] is not accessible")}
		}
		return start(in)
	}
}

// Right after EnableKey, RDS may not reach a key DescribeKey already calls Enabled: the run
// tries again with backoff and finishes.
func TestRunKeyNotAccessibleYetIsRetriedInRun(t *testing.T) {
	w := newWorld(kmstypes.KeyStateDisabled, map[string]string{"orders": statusStopped, "billing": statusStopped}, nil)
	notAccessibleFor(w, "orders", 3)
	store := newMemStore(testIncident([]incident.Cluster{{Identifier: "orders", CanStop: true}, {Identifier: "billing", CanStop: true}}, nil))
	clk := newClock()
	got, _, err := w.runner(store, clk, Options{}).Run(context.Background(), "inc-1", approver)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if diff := cmp.Diff([]time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second}, clk.sleeps); diff != "" {
		t.Errorf("sleeps (-want +got):\n%s", diff)
	}
	want := []step{
		skipped(incident.StepCancelKeyDeletion, testKeyARN, "no deletion scheduled (key Disabled)"),
		ok(incident.StepEnableKey, testKeyARN),
		ok(incident.StepWaitEnabled, testKeyARN),
		ok(incident.StepStartDBCluster, "orders"),
		ok(incident.StepStartDBCluster, "billing"),
	}
	if diff := cmp.Diff(want, steps(got)); diff != "" {
		t.Errorf("recorded steps (-want +got):\n%s", diff)
	}
	if w.clusters["orders"] != statusStarting || w.clusters["billing"] != statusStarting {
		t.Errorf("clusters = %v, want both starting", w.clusters)
	}
	if got.State != incident.StateRemediating {
		t.Errorf("state = %s, want remediating", got.State)
	}
}

// When RDS still cannot reach the key after the run's budget, the run stops with an error
// Lambda retries (not a permanent failure that would leave the incident remediating with no
// button), and the retry finishes the job.
func TestRunKeyNotAccessibleIsRetryable(t *testing.T) {
	w := newWorld(kmstypes.KeyStateEnabled, map[string]string{"orders": statusStopped, "billing": statusStopped}, nil)
	reachable := w.rds.startDBCluster
	notAccessibleFor(w, "orders", 1<<30)
	store := newMemStore(testIncident([]incident.Cluster{{Identifier: "orders", CanStop: true}, {Identifier: "billing", CanStop: true}}, nil))
	clk := newClock()
	start := clk.now
	r := w.runner(store, clk, Options{KeyAccessTimeout: 10 * time.Second})
	got, ran, err := r.Run(context.Background(), "inc-1", approver)
	if !errors.Is(err, ErrPaused) || errors.Is(err, ErrIncomplete) {
		t.Fatalf("Run error = %v, want the run paused for the next invocation", err)
	}
	var fault *rdstypes.KMSKeyNotAccessibleFault
	if !errors.As(err, &fault) {
		t.Errorf("Run error = %v, want it to wrap KMSKeyNotAccessibleFault", err)
	}
	if waited := clk.now.Sub(start); waited != 10*time.Second {
		t.Errorf("waited %s, want exactly the 10s bound", waited)
	}
	if n := w.calls["StartDBCluster"]; n < 3 {
		t.Errorf("StartDBCluster calls = %d, want retries within the run", n)
	}
	if len(ran) != 3 {
		t.Errorf("steps %+v: want the key steps only, orders' start not recorded as done or failed", ran)
	}
	if e, _ := got.LastEntry(incident.KindNote); !strings.Contains(e.Detail, "KMSKeyNotAccessibleFault") || got.Remediation.StoppedAt != "StartDBCluster orders" {
		t.Errorf("pause note %q stopped at %q: want it to say why, at orders", e.Detail, got.Remediation.StoppedAt)
	}
	if w.clusters["billing"] != statusStopped {
		t.Errorf("billing = %s: the run should stop for the retry", w.clusters["billing"])
	}

	// The next invocation, once KMS has propagated the key to RDS.
	w.rds.startDBCluster = reachable
	got, _, err = r.Run(context.Background(), "inc-1", approver)
	if err != nil {
		t.Fatalf("retry: %v", err)
	}
	if w.clusters["orders"] != statusStarting || w.clusters["billing"] != statusStarting || got.State != incident.StateRemediating {
		t.Errorf("clusters %v, state %s: want both starting and remediating", w.clusters, got.State)
	}
	// The next invocation's success is on record; orders counts as done.
	if _, done := got.StepDone(incident.StepStartDBCluster, "orders"); !done {
		t.Errorf("steps %+v: want orders' start recorded as done by the retry", steps(got))
	}
}

// A run that had to skip a cluster until its status settles says so with ErrIncomplete so the incident can go back to open; terminal, missing
// and already-running clusters do not count.
func TestRunIncompleteNamesClusters(t *testing.T) {
	w := newWorld(kmstypes.KeyStateDisabled,
		map[string]string{"orders": "stopping", "billing": statusStopped, "lost": statusTerminal, "reports": statusAvailable, "ledger": statusAvailable},
		map[string]string{"ledger-1": statusAvailable})
	reboot := w.rds.rebootDBInstance
	w.rds.rebootDBInstance = func(in *rds.RebootDBInstanceInput) (*rds.RebootDBInstanceOutput, error) {
		if aws.ToString(in.DBInstanceIdentifier) == "ledger-1" {
			w.calls["RebootDBInstance"]++
			return nil, &smithy.GenericAPIError{Code: "AccessDenied", Message: "not authorized to perform rds:RebootDBInstance", Fault: smithy.FaultClient}
		}
		return reboot(in)
	}
	store := newMemStore(testIncident(
		[]incident.Cluster{{Identifier: "orders"}, {Identifier: "billing"}, {Identifier: "lost"}, {Identifier: "gone"}, {Identifier: "reports"}, {Identifier: "ledger"}},
		[]incident.Instance{{Identifier: "ledger-1", ClusterIdentifier: "ledger", Status: incident.StatusAvailable, LostKeyAccess: true}}))
	got, _, err := w.runner(store, newClock(), Options{}).Run(context.Background(), "inc-1", approver)
	var inc *IncompleteError
	if !errors.As(err, &inc) || !errors.Is(err, ErrIncomplete) || Retryable(err) {
		t.Fatalf("Run error = %v, want a non-retryable IncompleteError", err)
	}
	want := []Unfinished{
		{Cluster: "orders", Reason: "status stopping: StartDBCluster needs stopped or " + statusRecoverable + "; remediate again once it settles"},
	}
	if diff := cmp.Diff(want, inc.Clusters); diff != "" {
		t.Errorf("unfinished (-want +got):\n%s", diff)
	}
	if w.calls["RebootDBInstance"] != 0 {
		t.Errorf("RebootDBInstance calls = %d, want none in the one click", w.calls["RebootDBInstance"])
	}
	if !strings.Contains(err.Error(), "orders (status stopping") {
		t.Errorf("error text %q does not name the clusters", err)
	}
	// Everything else still ran, and the incident goes back to the approvers, naming them.
	if w.keyState != kmstypes.KeyStateEnabled || w.clusters["billing"] != statusStarting {
		t.Errorf("key %s, clusters %v: want Enabled and billing started", w.keyState, w.clusters)
	}
	givenBack(t, got)
	if !strings.Contains(got.Remediation.Reason, "orders (status stopping") {
		t.Errorf("reason %q does not tell people which clusters need attention", got.Remediation.Reason)
	}
}

// A cluster that uses the key only for Performance Insights or its secret and is stopped was
// not stopped by the key: the run leaves it stopped and still succeeds.
func TestRunLeavesClusterNotOnKeyStopped(t *testing.T) {
	w := newWorld(kmstypes.KeyStateDisabled, map[string]string{"orders": statusStopped, "analytics": statusStopped}, nil)
	store := newMemStore(testIncident([]incident.Cluster{
		{Identifier: "orders", Uses: []string{"storage"}},
		{Identifier: "analytics", Uses: []string{"performance-insights", "master-user-secret"}},
	}, nil))
	got, _, err := w.runner(store, newClock(), Options{}).Run(context.Background(), "inc-1", approver)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if w.clusters["orders"] != statusStarting || w.clusters["analytics"] != statusStopped || w.calls["StartDBCluster"] != 1 {
		t.Errorf("clusters %v after %d StartDBCluster calls: want orders started and analytics left stopped", w.clusters, w.calls["StartDBCluster"])
	}
	want := skipped(incident.StepStartDBCluster, "analytics", "the key does not encrypt its storage (used for performance-insights, master-user-secret); left stopped, as its owner may want it")
	if diff := cmp.Diff(want, steps(got)[len(got.Remediation.Steps)-1]); diff != "" {
		t.Errorf("last step (-want +got):\n%s", diff)
	}
}

// A run that has taken MaxAttempts invocations (paused, timed out, transient failures) gives
// the incident back at once, saying where it last stopped, instead of trying for ever.
func TestRunGivesUpAfterMaxAttempts(t *testing.T) {
	w := newWorld(kmstypes.KeyStateDisabled, map[string]string{"orders": statusStopped}, nil)
	inc := testIncident([]incident.Cluster{{Identifier: "orders", CanStop: true}}, nil)
	inc.Remediation.Attempts, inc.Remediation.StoppedAt = MaxAttempts, "StartDBCluster orders"
	store := newMemStore(inc)
	got, _, err := w.runner(store, newClock(), Options{}).Run(context.Background(), "inc-1", approver)
	if err == nil || Retryable(err) || !strings.Contains(err.Error(), "StartDBCluster orders") {
		t.Fatalf("Run error = %v, want a final one naming where it last stopped", err)
	}
	givenBack(t, got)
	if w.writes() != 0 {
		t.Errorf("%d write calls after giving up, want none", w.writes())
	}
}
