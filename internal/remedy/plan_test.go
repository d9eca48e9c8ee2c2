package remedy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	kmstypes "github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/google/go-cmp/cmp"

	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/kmskey"
)

// testIncident is an incident an approved click moved to remediating under run-1.
func testIncident(clusters []incident.Cluster, instances []incident.Instance) incident.Incident {
	inc := incident.Incident{
		ID:        "inc-1",
		State:     incident.StateOpen,
		KeyARN:    testKeyARN,
		KeyState:  incident.KeyStateDisabled,
		Trigger:   "DisableKey",
		Clusters:  clusters,
		Instances: instances,
	}
	if _, started, err := inc.Approve(approver, 0, "click:1", time.Date(2026, 3, 2, 8, 59, 0, 0, time.UTC), 1, "run-1"); err != nil || !started {
		panic(fmt.Sprint("approve: ", started, err))
	}
	return inc
}

// TestPlanKeyStates: the live key state decides the key steps, and a key one click cannot fix
// is the model's NotFixableError, matching ErrNotFixable.
func TestPlanKeyStates(t *testing.T) {
	cancel := incident.PlannedStep{Kind: incident.StepCancelKeyDeletion, Target: testKeyARN}
	enable := incident.PlannedStep{Kind: incident.StepEnableKey, Target: testKeyARN}
	wait := incident.PlannedStep{Kind: incident.StepWaitEnabled, Target: testKeyARN}
	skip := func(s incident.PlannedStep, why string) incident.PlannedStep { s.Skip = why; return s }

	tests := []struct {
		name        string
		state       kmstypes.KeyState
		missing     bool
		want        []incident.PlannedStep
		notFixable  bool
		wantErr     bool
		wantLiveKey incident.KeyState
	}{
		{name: "pending deletion", state: kmstypes.KeyStatePendingDeletion, want: []incident.PlannedStep{cancel, enable, wait}},
		{name: "pending replica deletion", state: kmstypes.KeyStatePendingReplicaDeletion, want: []incident.PlannedStep{cancel, enable, wait}},
		{name: "disabled", state: kmstypes.KeyStateDisabled,
			want: []incident.PlannedStep{skip(cancel, "no deletion scheduled (key Disabled)"), enable, wait}},
		{name: "enabled", state: kmstypes.KeyStateEnabled,
			want: []incident.PlannedStep{skip(cancel, "no deletion scheduled (key Enabled)"), skip(enable, "key already Enabled"), skip(wait, "key already Enabled")}},
		{name: "pending import", state: kmstypes.KeyStatePendingImport, notFixable: true, wantErr: true},
		{name: "unavailable", state: kmstypes.KeyStateUnavailable, notFixable: true, wantErr: true},
		{name: "deleted", missing: true, notFixable: true, wantErr: true},
		// Transient: a retry a little later sees the settled state.
		{name: "updating", state: kmstypes.KeyStateUpdating, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(tt.state, nil, nil)
			w.keyMissing = tt.missing
			got, err := w.runner(newMemStore(), newClock(), Options{}).Plan(context.Background(), testIncident(nil, nil))
			var nf *incident.NotFixableError
			if (err != nil) != tt.wantErr || errors.Is(err, ErrNotFixable) != tt.notFixable || errors.As(err, &nf) != tt.notFixable {
				t.Fatalf("Plan error = %v, want error %v, not fixable %v", err, tt.wantErr, tt.notFixable)
			}
			if tt.notFixable && nf.Instead == "" {
				t.Error("NotFixableError does not say what to do instead")
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Plan steps (-want +got):\n%s", diff)
			}
			if n := w.writes(); n != 0 {
				t.Errorf("Plan made %d write calls, want 0", n)
			}
		})
	}
}

func TestPlanClusters(t *testing.T) {
	tests := []struct {
		status       string // "" for a cluster RDS no longer knows
		wantRuns     bool
		wantSettling bool
		skipHas      string
	}{
		{status: statusStopped, wantRuns: true},
		{status: statusRecoverable, wantRuns: true},
		{status: statusAvailable, skipHas: "already available"},
		{status: statusStarting, skipHas: "already starting"},
		{status: statusTerminal, skipHas: "restore from a snapshot"},
		{status: "stopping", wantSettling: true, skipHas: "status stopping"},
		{status: "", skipHas: "not found"},
	}
	for _, tt := range tests {
		t.Run("status "+tt.status, func(t *testing.T) {
			live := map[string]string{}
			if tt.status != "" {
				live["orders-aurora"] = tt.status
			}
			w := newWorld(kmstypes.KeyStateEnabled, live, nil)
			// Another cluster keeps the incident fixable when this one is terminal.
			w.clusters["other"] = statusAvailable
			inc := testIncident([]incident.Cluster{
				{Identifier: "orders-aurora", Engine: "aurora-postgresql", Status: incident.StatusStopped, CanStop: true},
				{Identifier: "other", CanStop: true},
			}, nil)
			steps, err := w.runner(newMemStore(), newClock(), Options{}).Plan(context.Background(), inc)
			if err != nil {
				t.Fatal(err)
			}
			got := steps[3]
			if got.Kind != incident.StepStartDBCluster || got.Target != "orders-aurora" {
				t.Fatalf("step = %+v, want StartDBCluster orders-aurora", got)
			}
			if got.Runs() != tt.wantRuns || got.Settling != tt.wantSettling {
				t.Errorf("StartDBCluster runs = %v, settling = %v (skip %q), want %v, %v", got.Runs(), got.Settling, got.Skip, tt.wantRuns, tt.wantSettling)
			}
			if !strings.Contains(got.Skip, tt.skipHas) {
				t.Errorf("skip = %q, want it to tell people %q", got.Skip, tt.skipHas)
			}
		})
	}
}

// Clusters that use the key only for Performance Insights, the master-user secret or an
// activity stream may be stopped on purpose: only the recoverable status starts them.
func TestPlanClustersNotOnStorage(t *testing.T) {
	tests := []struct {
		name     string
		uses     []string
		status   string
		wantRuns bool
		skipHas  string
	}{
		{name: "storage stopped", uses: []string{"storage", "performance-insights"}, status: statusStopped, wantRuns: true},
		{name: "uses unknown stopped", status: statusStopped, wantRuns: true},
		{name: "PI only stopped", uses: []string{"performance-insights"}, status: statusStopped,
			skipHas: "the key does not encrypt its storage (used for performance-insights); left stopped"},
		{name: "secret and stream stopping", uses: []string{"master-user-secret", "activity-stream"}, status: "stopping",
			skipHas: "the key does not encrypt its storage (used for master-user-secret, activity-stream); left stopping"},
		{name: "PI only recoverable", uses: []string{"performance-insights"}, status: statusRecoverable, wantRuns: true},
		{name: "PI only available", uses: []string{"performance-insights"}, status: statusAvailable, skipHas: "already available"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(kmstypes.KeyStateEnabled, map[string]string{"analytics": tt.status}, nil)
			inc := testIncident([]incident.Cluster{{Identifier: "analytics", Engine: "aurora-postgresql", CanStop: true, Uses: tt.uses}}, nil)
			steps, err := w.runner(newMemStore(), newClock(), Options{}).Plan(context.Background(), inc)
			if err != nil {
				t.Fatal(err)
			}
			got := steps[len(steps)-1]
			if got.Runs() != tt.wantRuns {
				t.Errorf("StartDBCluster runs = %v (skip %q), want %v", got.Runs(), got.Skip, tt.wantRuns)
			}
			if !strings.Contains(got.Skip, tt.skipHas) {
				t.Errorf("skip = %q, want it to contain %q", got.Skip, tt.skipHas)
			}
		})
	}
}

// TestPlanInstances: instances that lost access are watched, never rebooted by the one click;
// the plan reads live status and the steps
// earlier runs recorded (Remediation.Steps), never timeline text.
func TestPlanInstances(t *testing.T) {
	at := time.Date(2026, 3, 2, 8, 0, 0, 0, time.UTC)
	rec := func(kind incident.StepKind, target string, result incident.Result) incident.StepRecord {
		return incident.StepRecord{ID: incident.StepID("run-0", kind, target), Kind: kind, Target: target, Result: result, At: at}
	}
	tests := []struct {
		name          string
		clusterStatus string
		instance      string
		lost          bool
		done          []incident.StepRecord
		want          []incident.PlannedStep // RDS steps only
	}{
		{name: "running and lost access: watched, never rebooted", clusterStatus: statusAvailable, instance: statusAvailable, lost: true,
			want: []incident.PlannedStep{{Kind: incident.StepStartDBCluster, Target: "orders", Skip: "already available"},
				{Kind: incident.StepWatchInstance, Target: "orders-1", Skip: watched}}},
		{name: "access not lost", clusterStatus: statusAvailable, instance: statusAvailable,
			want: []incident.PlannedStep{{Kind: incident.StepStartDBCluster, Target: "orders", Skip: "already available"}}},
		{name: "cluster being started", clusterStatus: statusRecoverable, instance: statusRecoverable, lost: true,
			want: []incident.PlannedStep{{Kind: incident.StepStartDBCluster, Target: "orders"},
				{Kind: incident.StepWatchInstance, Target: "orders-1", Skip: "cluster orders is started, which starts its instances"}}},
		{name: "cluster started by an earlier run", clusterStatus: statusAvailable, instance: statusAvailable, lost: true,
			done: []incident.StepRecord{rec(incident.StepStartDBCluster, "orders", incident.ResultOK)},
			want: []incident.PlannedStep{{Kind: incident.StepStartDBCluster, Target: "orders", Skip: "already available"},
				{Kind: incident.StepWatchInstance, Target: "orders-1", Skip: "cluster orders is started, which starts its instances"}}},
		{name: "a failed reboot of old does not make the one click reboot", clusterStatus: statusAvailable, instance: statusAvailable, lost: true,
			done: []incident.StepRecord{rec(incident.StepRebootDBInstance, "orders-1", incident.ResultFailed)},
			want: []incident.PlannedStep{{Kind: incident.StepStartDBCluster, Target: "orders", Skip: "already available"},
				{Kind: incident.StepWatchInstance, Target: "orders-1", Skip: watched}}},
		{name: "instance gone", clusterStatus: statusAvailable, instance: "", lost: true,
			want: []incident.PlannedStep{{Kind: incident.StepStartDBCluster, Target: "orders", Skip: "already available"},
				{Kind: incident.StepWatchInstance, Target: "orders-1", Skip: "instance not found"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			live := map[string]string{}
			if tt.instance != "" {
				live["orders-1"] = tt.instance
			}
			w := newWorld(kmstypes.KeyStateEnabled, map[string]string{"orders": tt.clusterStatus}, live)
			inc := testIncident(
				[]incident.Cluster{{Identifier: "orders", CanStop: true}},
				[]incident.Instance{{Identifier: "orders-1", ClusterIdentifier: "orders", Status: incident.StatusAvailable, LostKeyAccess: tt.lost}})
			inc.Remediation.Steps = tt.done
			steps, err := w.runner(newMemStore(), newClock(), Options{}).Plan(context.Background(), inc)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, steps[3:]); diff != "" {
				t.Errorf("RDS steps (-want +got):\n%s", diff)
			}
		})
	}
}

// TestPlanStorageKey: a stopped cluster is started only when its live storage key, normalised
// to a key ARN (DescribeKey for any other form), is the incident's key.
func TestPlanStorageKey(t *testing.T) {
	other := "arn:aws:kms:us-east-1:111122223333:key/0000abcd-0000-0000-0000-000000000000"
	tests := []struct {
		name         string
		ref          string // "" for none
		wantRuns     bool
		wantDescribe int // DescribeKey calls beyond the incident key's
	}{
		{name: "the incident's key ARN", ref: testKeyARN, wantRuns: true},
		{name: "the incident's key by ID", ref: testKeyID, wantRuns: true, wantDescribe: 1},
		{name: "another key ARN", ref: other},
		{name: "a key KMS does not know", ref: "alias/gone", wantDescribe: 1},
		{name: "none reported", ref: "", wantRuns: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(kmstypes.KeyStateEnabled, map[string]string{"orders": statusStopped}, nil)
			if tt.ref != "" {
				w.storageKeys = map[string]string{"orders": tt.ref}
			}
			inc := testIncident([]incident.Cluster{{Identifier: "orders", CanStop: true, Uses: []string{"storage"}}}, nil)
			steps, err := w.runner(newMemStore(), newClock(), Options{}).Plan(context.Background(), inc)
			if err != nil {
				t.Fatal(err)
			}
			if got := steps[3]; got.Runs() != tt.wantRuns {
				t.Errorf("StartDBCluster runs = %v (skip %q), want %v", got.Runs(), got.Skip, tt.wantRuns)
			}
			if n := w.calls["DescribeKey"] - 1; n != tt.wantDescribe {
				t.Errorf("DescribeKey calls for the storage key = %d, want %d", n, tt.wantDescribe)
			}
		})
	}
}

func TestPlanAllowedKeys(t *testing.T) {
	tests := []struct {
		name    string
		allowed func(string) bool
		wantErr error
	}{
		{name: "no restriction", allowed: nil},
		{name: "listed", allowed: func(arn string) bool { return arn == testKeyARN }},
		{name: "not listed", allowed: func(arn string) bool { return arn == "arn:aws:kms:us-east-1:111122223333:key/other" }, wantErr: ErrNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(kmstypes.KeyStateDisabled, nil, nil)
			_, err := w.runner(newMemStore(), newClock(), Options{AllowedKeys: tt.allowed}).Plan(context.Background(), testIncident(nil, nil))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Plan error = %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr != nil && len(w.calls) != 0 {
				t.Errorf("calls = %v, want none for a key that is not allowed", w.calls)
			}
		})
	}
}

func TestRunID(t *testing.T) {
	approved := testIncident(nil, nil)
	if got := RunID(approved); got != "run-1" {
		t.Errorf("RunID of an approved run = %q, want run-1", got)
	}
	manual := incident.Incident{ID: "KW-1", State: incident.StateRemediating, ApprovalRound: 2}
	if a, b := RunID(manual), RunID(manual); a == "" || a != b {
		t.Errorf("RunID of a run without one = %q, %q; want one, the same each time", a, b)
	}
	manual.ApprovalRound++
	if RunID(manual) == RunID(incident.Incident{ID: "KW-1", ApprovalRound: 2}) {
		t.Error("RunID is the same for two approval rounds")
	}
}

func TestKeyIDFromARN(t *testing.T) {
	for in, want := range map[string]string{
		testKeyARN:                        testKeyID,
		testKeyID:                         testKeyID,
		"arn:aws:kms:us-east-1:1:alias/x": "arn:aws:kms:us-east-1:1:alias/x",
	} {
		if got := kmskey.IDFromARN(in); got != want {
			t.Errorf("kmskey.IDFromARN(%q) = %q, want %q", in, got, want)
		}
	}
}
