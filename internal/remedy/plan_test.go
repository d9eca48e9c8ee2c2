package remedy

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	kmstypes "github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/google/go-cmp/cmp"

	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/kmskey"
)

func testIncident(clusters []incident.Cluster, instances []incident.Instance) incident.Incident {
	return incident.Incident{
		ID:        "inc-1",
		State:     incident.StateOpen,
		KeyARN:    testKeyARN,
		KeyState:  "Disabled",
		Trigger:   "DisableKey",
		Clusters:  clusters,
		Instances: instances,
	}
}

func TestPlanKeyStates(t *testing.T) {
	cancel := Step{Name: StepCancelKeyDeletion, Target: testKeyARN}
	enable := Step{Name: StepEnableKey, Target: testKeyARN}
	wait := Step{Name: StepWaitEnabled, Target: testKeyARN}
	skip := func(s Step, why string) Step { s.Skip = why; return s }

	tests := []struct {
		name    string
		state   kmstypes.KeyState
		missing bool
		want    []Step
		wantErr error
		// errHas is part of the message that says what to do instead.
		errHas string
	}{
		{name: "pending deletion", state: kmstypes.KeyStatePendingDeletion, want: []Step{cancel, enable, wait}},
		{name: "pending replica deletion", state: kmstypes.KeyStatePendingReplicaDeletion, want: []Step{cancel, enable, wait}},
		{name: "disabled", state: kmstypes.KeyStateDisabled,
			want: []Step{skip(cancel, "no deletion scheduled (key Disabled)"), enable, wait}},
		{name: "enabled", state: kmstypes.KeyStateEnabled,
			want: []Step{skip(cancel, "no deletion scheduled (key Enabled)"), skip(enable, "key already Enabled"), skip(wait, "key already Enabled")}},
		{name: "pending import", state: kmstypes.KeyStatePendingImport, wantErr: ErrNotFixable, errHas: "import the same key material"},
		{name: "unavailable", state: kmstypes.KeyStateUnavailable, wantErr: ErrNotFixable, errHas: "reconnect the custom key store"},
		{name: "deleted", missing: true, wantErr: ErrNotFixable, errHas: "restore the clusters from a snapshot"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(tt.state, nil, nil)
			w.keyMissing = tt.missing
			got, err := w.runner(newMemStore(), newClock(), Options{}).Plan(context.Background(), testIncident(nil, nil))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Plan error = %v, want %v", err, tt.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), tt.errHas) {
				t.Errorf("Plan error = %q, want it to say %q", err, tt.errHas)
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

func TestPlanTransientKeyStateIsRetryable(t *testing.T) {
	w := newWorld(kmstypes.KeyStateUpdating, nil, nil)
	_, err := w.runner(newMemStore(), newClock(), Options{}).Plan(context.Background(), testIncident(nil, nil))
	if err == nil || errors.Is(err, ErrNotFixable) {
		t.Fatalf("Plan error = %v, want a retryable error that is not ErrNotFixable", err)
	}
}

func TestPlanClusters(t *testing.T) {
	tests := []struct {
		status   string // "" for a cluster RDS no longer knows
		wantRuns bool
		skipHas  string
	}{
		{status: statusStopped, wantRuns: true},
		{status: statusRecoverable, wantRuns: true},
		{status: statusAvailable, skipHas: "already available"},
		{status: statusStarting, skipHas: "already starting"},
		{status: statusTerminal, skipHas: "restore from a snapshot"},
		{status: "stopping", skipHas: "status stopping"},
		{status: "", skipHas: "not found"},
	}
	for _, tt := range tests {
		t.Run("status "+tt.status, func(t *testing.T) {
			live := map[string]string{}
			if tt.status != "" {
				live["orders-aurora"] = tt.status
			}
			w := newWorld(kmstypes.KeyStateEnabled, live, nil)
			inc := testIncident([]incident.Cluster{{Identifier: "orders-aurora", Engine: "aurora-postgresql", CanStop: true}}, nil)
			steps, err := w.runner(newMemStore(), newClock(), Options{}).Plan(context.Background(), inc)
			if err != nil {
				t.Fatal(err)
			}
			got := steps[len(steps)-1]
			if got.Name != StepStartDBCluster || got.Target != "orders-aurora" {
				t.Fatalf("last step = %+v, want StartDBCluster orders-aurora", got)
			}
			if got.Runs() != tt.wantRuns {
				t.Errorf("StartDBCluster runs = %v (skip %q), want %v", got.Runs(), got.Skip, tt.wantRuns)
			}
			if !strings.Contains(got.Skip, tt.skipHas) {
				t.Errorf("skip = %q, want it to contain %q", got.Skip, tt.skipHas)
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

func TestPlanInstances(t *testing.T) {
	rebooted := incident.Entry{At: time.Date(2026, 3, 2, 8, 0, 0, 0, time.UTC), Kind: incident.KindRemediation,
		Detail: "RebootDBInstance orders-1 → ok"}
	tests := []struct {
		name          string
		clusterStatus string
		instance      string
		lost          bool
		timeline      []incident.Entry
		want          []Step // RDS steps only
	}{
		{name: "running and lost access", clusterStatus: statusAvailable, instance: statusAvailable, lost: true,
			want: []Step{{Name: StepStartDBCluster, Target: "orders", Skip: "already available"},
				{Name: StepRebootDBInstance, Target: "orders-1"}}},
		{name: "access not lost", clusterStatus: statusAvailable, instance: statusAvailable,
			want: []Step{{Name: StepStartDBCluster, Target: "orders", Skip: "already available"}}},
		{name: "cluster being started", clusterStatus: statusRecoverable, instance: statusRecoverable, lost: true,
			want: []Step{{Name: StepStartDBCluster, Target: "orders"},
				{Name: StepRebootDBInstance, Target: "orders-1", Skip: "cluster orders is being started, which starts its instances"}}},
		{name: "already rebooting", clusterStatus: statusAvailable, instance: statusRebooting, lost: true,
			want: []Step{{Name: StepStartDBCluster, Target: "orders", Skip: "already available"},
				{Name: StepRebootDBInstance, Target: "orders-1", Skip: "already rebooting"}}},
		{name: "rebooted by an earlier run", clusterStatus: statusAvailable, instance: statusAvailable, lost: true,
			timeline: []incident.Entry{rebooted},
			want: []Step{{Name: StepStartDBCluster, Target: "orders", Skip: "already available"},
				{Name: StepRebootDBInstance, Target: "orders-1", Skip: "rebooted at 2026-03-02T08:00:00Z; waiting for RDS-EVENT-0420"}}},
		{name: "cluster started by an earlier run", clusterStatus: statusAvailable, instance: statusAvailable, lost: true,
			timeline: []incident.Entry{{At: time.Date(2026, 3, 2, 8, 0, 0, 0, time.UTC), Kind: incident.KindRemediation,
				Detail: "StartDBCluster orders → ok"}},
			want: []Step{{Name: StepStartDBCluster, Target: "orders", Skip: "already available"},
				{Name: StepRebootDBInstance, Target: "orders-1", Skip: "cluster orders was started at 2026-03-02T08:00:00Z, which starts its instances"}}},
		{name: "failed reboot is tried again", clusterStatus: statusAvailable, instance: statusAvailable, lost: true,
			timeline: []incident.Entry{{Kind: incident.KindRemediation, Detail: "RebootDBInstance orders-1 → ThrottlingException: Rate exceeded"}},
			want: []Step{{Name: StepStartDBCluster, Target: "orders", Skip: "already available"},
				{Name: StepRebootDBInstance, Target: "orders-1"}}},
		{name: "instance gone", clusterStatus: statusAvailable, instance: "", lost: true,
			want: []Step{{Name: StepStartDBCluster, Target: "orders", Skip: "already available"},
				{Name: StepRebootDBInstance, Target: "orders-1", Skip: "instance not found"}}},
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
				[]incident.Instance{{Identifier: "orders-1", ClusterIdentifier: "orders", LostKeyAccess: tt.lost}})
			inc.Timeline = tt.timeline
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
