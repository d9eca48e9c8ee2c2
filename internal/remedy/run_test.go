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
			{Identifier: "orders", Engine: "aurora-postgresql", Status: statusStopped, CanStop: true},
			{Identifier: "billing", Engine: "aurora-mysql", Status: statusRecoverable, CanStop: true},
			{Identifier: "reports", Engine: "aurora-postgresql", Status: statusAvailable, CanStop: true},
		},
		[]incident.Instance{
			{Identifier: "orders-1", ClusterIdentifier: "orders", LostKeyAccess: true},
			{Identifier: "billing-1", ClusterIdentifier: "billing", LostKeyAccess: true},
			{Identifier: "reports-1", ClusterIdentifier: "reports", Status: statusAvailable, LostKeyAccess: true},
		})
	inc.KeyState = "PendingDeletion"
	inc.KeyDeletionDate = aws.Time(time.Date(2026, 3, 10, 0, 0, 0, 0, time.UTC))
	inc.Trigger = "ScheduleKeyDeletion"
	return w, inc
}

func TestRunPendingDeletion(t *testing.T) {
	w, inc := threeClusters()
	store := newMemStore(inc)
	clk := newClock()
	got, steps, err := w.runner(store, clk, Options{}).Run(context.Background(), inc.ID, approver)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}

	wantTimeline := []string{
		"CancelKeyDeletion " + testKeyARN + " → ok",
		"EnableKey " + testKeyARN + " → ok",
		"WaitEnabled " + testKeyARN + " → ok",
		"StartDBCluster orders → ok",
		"StartDBCluster billing → ok",
		"StartDBCluster reports → skipped: already available",
		"RebootDBInstance orders-1 → skipped: cluster orders is being started, which starts its instances",
		"RebootDBInstance billing-1 → skipped: cluster billing is being started, which starts its instances",
		"RebootDBInstance reports-1 → ok",
	}
	if diff := cmp.Diff(wantTimeline, details(got)); diff != "" {
		t.Errorf("timeline (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(got, store.get(t, inc.ID)); diff != "" {
		t.Errorf("returned incident differs from stored (-returned +stored):\n%s", diff)
	}
	for _, e := range got.Timeline {
		if e.Actor != approver || !e.At.Equal(clk.now) {
			t.Errorf("entry %q: actor %q at %v, want %q at %v", e.Detail, e.Actor, e.At, approver, clk.now)
		}
	}
	if len(steps) != len(wantTimeline) {
		t.Errorf("got %d steps, want %d", len(steps), len(wantTimeline))
	}

	// The world, not just nil errors: the key is Enabled and the stopped clusters start.
	if w.keyState != kmstypes.KeyStateEnabled {
		t.Errorf("key state = %s, want Enabled", w.keyState)
	}
	wantLive := map[string]string{"orders": statusStarting, "billing": statusStarting, "reports": statusAvailable}
	if diff := cmp.Diff(wantLive, w.clusters); diff != "" {
		t.Errorf("live clusters (-want +got):\n%s", diff)
	}
	wantCalls := map[string]int{"CancelKeyDeletion": 1, "EnableKey": 1, "StartDBCluster": 2, "RebootDBInstance": 1}
	for api, n := range wantCalls {
		if w.calls[api] != n {
			t.Errorf("%s calls = %d, want %d", api, w.calls[api], n)
		}
	}

	// The incident follows: remediating, key Enabled with no deletion date, per-cluster status.
	if got.State != incident.StateRemediating {
		t.Errorf("state = %s, want remediating", got.State)
	}
	if got.KeyState != "Enabled" || got.KeyDeletionDate != nil {
		t.Errorf("key state %s deletion %v, want Enabled and none", got.KeyState, got.KeyDeletionDate)
	}
	type clusterView struct {
		Status    string
		Recovered bool
	}
	var gotClusters []clusterView
	for _, c := range got.Clusters {
		gotClusters = append(gotClusters, clusterView{c.Status, c.Recovered})
	}
	wantClusters := []clusterView{{statusStarting, false}, {statusStarting, false}, {statusAvailable, true}}
	if diff := cmp.Diff(wantClusters, gotClusters); diff != "" {
		t.Errorf("incident clusters (-want +got):\n%s", diff)
	}
	if got.Instances[2].Status != statusRebooting {
		t.Errorf("reports-1 status = %s, want rebooting", got.Instances[2].Status)
	}
}

func TestRunAgainRepeatsNothing(t *testing.T) {
	w, inc := threeClusters()
	store := newMemStore(inc)
	r := w.runner(store, newClock(), Options{})
	if _, _, err := r.Run(context.Background(), inc.ID, approver); err != nil {
		t.Fatalf("first Run: %v", err)
	}
	first := w.writes()

	got, steps, err := r.Run(context.Background(), inc.ID, approver)
	if err != nil {
		t.Fatalf("second Run: %v", err)
	}
	if n := w.writes() - first; n != 0 {
		t.Errorf("second Run made %d write calls (%v), want 0", n, w.calls)
	}
	for _, s := range steps {
		if s.Runs() {
			t.Errorf("second Run step %s %s ran, want it skipped", s.Name, s.Target)
		}
	}
	// The first run's starts and reboot brought the instances back to the key, so the second
	// plans no reboot at all.
	for _, in := range got.Instances {
		if in.LostKeyAccess {
			t.Errorf("instance %s still marked as without its key after its cluster started or it rebooted", in.Identifier)
		}
	}
	all := details(got)
	second := all[len(all)-len(steps):]
	want := []string{
		"CancelKeyDeletion " + testKeyARN + " → skipped: no deletion scheduled (key Enabled)",
		"EnableKey " + testKeyARN + " → skipped: key already Enabled",
		"WaitEnabled " + testKeyARN + " → skipped: key already Enabled",
		"StartDBCluster orders → skipped: already starting",
		"StartDBCluster billing → skipped: already starting",
		"StartDBCluster reports → skipped: already available",
	}
	if diff := cmp.Diff(want, second); diff != "" {
		t.Errorf("second Run timeline (-want +got):\n%s", diff)
	}
}

// A run that dies after EnableKey (here: the write recording it is lost) and is run again
// finishes the job without cancelling or enabling twice.
func TestRunResumesAfterCrash(t *testing.T) {
	tests := []struct {
		name string
		// crash fails the Update that would record a step, as a Lambda dying after the API call.
		crashOn   string
		wantCalls map[string]int
	}{
		{name: "after EnableKey", crashOn: "EnableKey ",
			wantCalls: map[string]int{"CancelKeyDeletion": 1, "EnableKey": 1, "StartDBCluster": 2, "RebootDBInstance": 1}},
		{name: "after StartDBCluster", crashOn: "StartDBCluster orders ",
			wantCalls: map[string]int{"CancelKeyDeletion": 1, "EnableKey": 1, "StartDBCluster": 2, "RebootDBInstance": 1}},
		{name: "after RebootDBInstance", crashOn: "RebootDBInstance reports-1 ",
			wantCalls: map[string]int{"CancelKeyDeletion": 1, "EnableKey": 1, "StartDBCluster": 2, "RebootDBInstance": 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, inc := threeClusters()
			store := newMemStore(inc)
			crashed := errors.New("lambda timed out")
			store.failUpdate = func(i incident.Incident) error {
				if d := details(i); len(d) > 0 && strings.HasPrefix(d[len(d)-1], tt.crashOn) {
					return crashed
				}
				return nil
			}
			r := w.runner(store, newClock(), Options{})
			if _, _, err := r.Run(context.Background(), inc.ID, approver); !errors.Is(err, crashed) {
				t.Fatalf("first Run error = %v, want %v", err, crashed)
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
			if got.KeyState != "Enabled" {
				t.Errorf("incident key state = %s, want Enabled", got.KeyState)
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
	if got.KeyState != "Enabled" {
		t.Errorf("key state = %s, want Enabled", got.KeyState)
	}
}

func TestRunWaitEnabledTimesOut(t *testing.T) {
	w := newWorld(kmstypes.KeyStateDisabled, map[string]string{"orders": statusStopped}, nil)
	w.enableLag = 1 << 30 // KMS never agrees
	store := newMemStore(testIncident([]incident.Cluster{{Identifier: "orders", CanStop: true}}, nil))
	clk := newClock()
	start := clk.now
	got, steps, err := w.runner(store, clk, Options{WaitTimeout: 20 * time.Second}).Run(context.Background(), "inc-1", approver)
	if err == nil || !strings.Contains(err.Error(), "still Disabled after 20s") {
		t.Fatalf("Run error = %v, want the wait to time out", err)
	}
	if waited := clk.now.Sub(start); waited != 20*time.Second {
		t.Errorf("waited %s, want exactly the 20s bound", waited)
	}
	want := []string{
		"CancelKeyDeletion " + testKeyARN + " → skipped: no deletion scheduled (key Disabled)",
		"EnableKey " + testKeyARN + " → ok",
		"WaitEnabled " + testKeyARN + " → timed out after 20s: key still Disabled",
	}
	if diff := cmp.Diff(want, details(got)); diff != "" {
		t.Errorf("timeline (-want +got):\n%s", diff)
	}
	if steps[len(steps)-1].Err == nil {
		t.Error("WaitEnabled step has no Err")
	}
	if w.calls["StartDBCluster"] != 0 {
		t.Errorf("StartDBCluster calls = %d, want 0: clusters wait for the key", w.calls["StartDBCluster"])
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
	want := []string{
		"CancelKeyDeletion " + testKeyARN + " → skipped: no deletion scheduled (key Disabled)",
		"EnableKey " + testKeyARN + " → AccessDeniedException: not authorized to perform kms:EnableKey",
	}
	if diff := cmp.Diff(want, details(got)); diff != "" {
		t.Errorf("timeline (-want +got):\n%s", diff)
	}
	if w.calls["StartDBCluster"] != 0 {
		t.Errorf("StartDBCluster calls = %d, want 0", w.calls["StartDBCluster"])
	}
}

func TestRunClusterFailures(t *testing.T) {
	tests := []struct {
		name string
		// fail is StartDBCluster's answer for cluster "orders".
		fail func(w *world) error
		// wantDetail is orders' timeline result.
		wantDetail string
		wantErr    bool
		// wantIncomplete is whether the run finishes with orders named as needing attention.
		wantIncomplete bool
		// wantBilling is whether the next cluster is still started.
		wantBilling bool
	}{
		{
			name: "permanent failure is recorded, the rest continue, the run is incomplete",
			fail: func(*world) error {
				return &smithy.GenericAPIError{Code: "AccessDenied", Message: "not authorized to perform rds:StartDBCluster", Fault: smithy.FaultClient}
			},
			wantDetail:     "StartDBCluster orders → AccessDenied: not authorized to perform rds:StartDBCluster",
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
			wantDetail:  "StartDBCluster orders → already starting",
			wantBilling: true,
		},
		{
			name: "wrong state for good is a failure",
			fail: func(w *world) error {
				w.clusters["orders"] = "stopping"
				return &rdstypes.InvalidDBClusterStateFault{Message: aws.String("DbCluster orders is in stopping state but expected it to be one of stopped, inaccessible-encryption-credentials-recoverable.")}
			},
			wantDetail:     "StartDBCluster orders → InvalidDBClusterStateFault: DbCluster orders is in stopping state but expected it to be one of stopped, inaccessible-encryption-credentials-recoverable.",
			wantErr:        true,
			wantIncomplete: true,
			wantBilling:    true,
		},
		{
			name: "throttling is returned for Lambda to retry",
			fail: func(*world) error {
				return &smithy.GenericAPIError{Code: "ThrottlingException", Message: "Rate exceeded", Fault: smithy.FaultClient}
			},
			wantDetail: "StartDBCluster orders → ThrottlingException: Rate exceeded",
			wantErr:    true,
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
			if errors.Is(err, ErrIncomplete) != tt.wantIncomplete || (err != nil && Retryable(err) == tt.wantIncomplete) {
				t.Errorf("Run error = %v: incomplete %v, retryable %v; want incomplete %v and retryable %v",
					err, errors.Is(err, ErrIncomplete), Retryable(err), tt.wantIncomplete, !tt.wantIncomplete)
			}
			var inc *IncompleteError
			if tt.wantIncomplete && (!errors.As(err, &inc) || len(inc.Clusters) != 1 || inc.Clusters[0].Cluster != "orders") {
				t.Errorf("Run error = %#v, want an IncompleteError naming orders only", err)
			}
			d := details(got)
			if d[3] != tt.wantDetail {
				t.Errorf("orders entry = %q, want %q", d[3], tt.wantDetail)
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
	got, steps, err := w.runner(store, newClock(), Options{}).Run(context.Background(), "inc-1", approver)
	if !errors.Is(err, ErrNotFixable) {
		t.Fatalf("Run error = %v, want ErrNotFixable", err)
	}
	if steps != nil || w.writes() != 0 {
		t.Errorf("steps %v, writes %d: want nothing done", steps, w.writes())
	}
	d := details(got)
	if len(d) != 1 || !strings.HasPrefix(d[0], "remediation refused: ") || !strings.Contains(d[0], "ImportKeyMaterial") {
		t.Errorf("timeline = %q, want one refusal that says what to do", d)
	}
	if got.State != incident.StateOpen {
		t.Errorf("state = %s, want still open", got.State)
	}
}

func TestRunRefusesNotAllowed(t *testing.T) {
	w := newWorld(kmstypes.KeyStateDisabled, nil, nil)
	store := newMemStore(testIncident(nil, nil))
	r := w.runner(store, newClock(), Options{AllowedKeys: func(string) bool { return false }})
	if _, _, err := r.Run(context.Background(), "inc-1", approver); !errors.Is(err, ErrNotAllowed) {
		t.Fatalf("Run error = %v, want ErrNotAllowed", err)
	}
	if len(w.calls) != 0 {
		t.Errorf("calls = %v, want none", w.calls)
	}
}

func TestRunClosedIncident(t *testing.T) {
	w := newWorld(kmstypes.KeyStateDisabled, nil, nil)
	inc := testIncident(nil, nil)
	inc.State = incident.StateIntentional
	store := newMemStore(inc)
	if _, _, err := w.runner(store, newClock(), Options{}).Run(context.Background(), "inc-1", approver); !errors.Is(err, ErrClosed) {
		t.Fatalf("Run error = %v, want ErrClosed", err)
	}
	if len(w.calls) != 0 {
		t.Errorf("calls = %v, want none on a closed incident", w.calls)
	}
}

func TestRunKeepsRemediatingState(t *testing.T) {
	w := newWorld(kmstypes.KeyStateEnabled, nil, nil)
	inc := testIncident(nil, nil)
	inc.State = incident.StateRemediating
	got, _, err := w.runner(newMemStore(inc), newClock(), Options{}).Run(context.Background(), "inc-1", approver)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != incident.StateRemediating {
		t.Errorf("state = %s, want remediating", got.State)
	}
}

func TestRunTerminalClusterMarkedLost(t *testing.T) {
	w := newWorld(kmstypes.KeyStateDisabled, map[string]string{"orders": statusTerminal}, nil)
	store := newMemStore(testIncident([]incident.Cluster{{Identifier: "orders", CanStop: true}}, nil))
	got, _, err := w.runner(store, newClock(), Options{}).Run(context.Background(), "inc-1", approver)
	if err != nil {
		t.Fatal(err)
	}
	// The key is still worth enabling: a restore from backup needs it.
	if w.keyState != kmstypes.KeyStateEnabled {
		t.Errorf("key state = %s, want Enabled", w.keyState)
	}
	if c := got.Clusters[0]; !c.Lost || c.Status != statusTerminal {
		t.Errorf("cluster = %+v, want lost in %s", c, statusTerminal)
	}
	if w.calls["StartDBCluster"] != 0 {
		t.Errorf("StartDBCluster calls = %d, want 0", w.calls["StartDBCluster"])
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
	want := []string{
		"CancelKeyDeletion " + testKeyARN + " → skipped: no deletion scheduled (key Disabled)",
		"EnableKey " + testKeyARN + " → ok",
		"WaitEnabled " + testKeyARN + " → ok",
		"StartDBCluster orders → ok",
		"StartDBCluster billing → ok",
	}
	if diff := cmp.Diff(want, details(got)); diff != "" {
		t.Errorf("timeline (-want +got):\n%s", diff)
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
	got, steps, err := r.Run(context.Background(), "inc-1", approver)
	if err == nil || !Retryable(err) || errors.Is(err, ErrIncomplete) {
		t.Fatalf("Run error = %v, want a retryable error", err)
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
	if last := steps[len(steps)-1]; last.Target != "orders" || last.Err == nil {
		t.Errorf("last step = %+v, want orders failed", last)
	}
	d := details(got)
	if last := d[len(d)-1]; !strings.HasPrefix(last, "StartDBCluster orders → KMSKeyNotAccessibleFault: ") || !strings.Contains(last, "will run again") {
		t.Errorf("last entry = %q, want the fault and that it will run again", last)
	}
	if w.clusters["billing"] != statusStopped {
		t.Errorf("billing = %s: the run should stop for the retry", w.clusters["billing"])
	}

	// Lambda's retry, once KMS has propagated the key to RDS.
	w.rds.startDBCluster = reachable
	got, _, err = r.Run(context.Background(), "inc-1", approver)
	if err != nil {
		t.Fatalf("retry: %v", err)
	}
	if w.clusters["orders"] != statusStarting || w.clusters["billing"] != statusStarting || got.State != incident.StateRemediating {
		t.Errorf("clusters %v, state %s: want both starting and remediating", w.clusters, got.State)
	}
}

// A run that had to skip a cluster until its status settles, or whose instance reboot failed
// for good, says so with ErrIncomplete so the incident can go back to open; terminal, missing
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
		[]incident.Instance{{Identifier: "ledger-1", ClusterIdentifier: "ledger", Status: statusAvailable, LostKeyAccess: true}}))
	got, _, err := w.runner(store, newClock(), Options{}).Run(context.Background(), "inc-1", approver)
	var inc *IncompleteError
	if !errors.As(err, &inc) || !errors.Is(err, ErrIncomplete) || Retryable(err) {
		t.Fatalf("Run error = %v, want a non-retryable IncompleteError", err)
	}
	want := []Unfinished{
		{Cluster: "orders", Reason: "status stopping: StartDBCluster needs stopped or " + statusRecoverable + "; remediate again once it settles"},
		{Cluster: "ledger", Reason: "RebootDBInstance ledger-1 failed: AccessDenied: not authorized to perform rds:RebootDBInstance"},
	}
	if diff := cmp.Diff(want, inc.Clusters); diff != "" {
		t.Errorf("unfinished (-want +got):\n%s", diff)
	}
	if !strings.Contains(err.Error(), "orders (status stopping") || !strings.Contains(err.Error(), "ledger (RebootDBInstance ledger-1 failed") {
		t.Errorf("error text %q does not name the clusters", err)
	}
	// Everything else still ran, and Run leaves the state to its caller.
	if w.keyState != kmstypes.KeyStateEnabled || w.clusters["billing"] != statusStarting {
		t.Errorf("key %s, clusters %v: want Enabled and billing started", w.keyState, w.clusters)
	}
	if got.State != incident.StateRemediating {
		t.Errorf("state = %s, want remediating (the handler reopens it)", got.State)
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
	d := details(got)
	if want := "StartDBCluster analytics → skipped: the key does not encrypt its storage (used for performance-insights, master-user-secret); left stopped, as its owner may want it"; d[len(d)-1] != want {
		t.Errorf("last entry = %q, want %q", d[len(d)-1], want)
	}
}
