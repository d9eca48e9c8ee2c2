package incident

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const keyARN = "arn:aws:kms:us-east-1:111122223333:key/k"

func TestPlan(t *testing.T) {
	storage := []string{"storage"}
	tests := []struct {
		name string
		inc  Incident
		want []PlannedStep // running steps only, in order
	}{
		{
			name: "deletion pending: cancel, enable, wait, start the stopped cluster",
			inc: Incident{KeyARN: keyARN, KeyState: KeyStatePendingDeletion, Clusters: []Cluster{
				{Identifier: "a", Status: StatusRecoverable, Uses: storage},
				{Identifier: "b", Status: StatusAvailable, Uses: storage},
			}},
			want: []PlannedStep{
				{Kind: StepCancelKeyDeletion, Target: keyARN}, {Kind: StepEnableKey, Target: keyARN},
				{Kind: StepWaitEnabled, Target: keyARN}, {Kind: StepStartDBCluster, Target: "a"},
			},
		},
		{
			name: "disabled key: no cancel",
			inc:  Incident{KeyARN: keyARN, KeyState: KeyStateDisabled, Clusters: []Cluster{{Identifier: "a", Status: StatusStopped, Uses: storage}}},
			want: []PlannedStep{{Kind: StepEnableKey, Target: keyARN}, {Kind: StepWaitEnabled, Target: keyARN}, {Kind: StepStartDBCluster, Target: "a"}},
		},
		{
			name: "a cluster now on another key is not started",
			inc:  Incident{KeyARN: keyARN, KeyState: KeyStateEnabled, Clusters: []Cluster{{Identifier: "a", Status: StatusStopped, Uses: storage, LiveKeyARN: keyARN + "-other"}}},
			want: nil,
		},
		{
			name: "a stopped cluster whose storage is not on the key is left to its owner",
			inc:  Incident{KeyARN: keyARN, KeyState: KeyStateEnabled, Clusters: []Cluster{{Identifier: "a", Status: StatusStopped, Uses: []string{"performance-insights"}}}},
			want: nil,
		},
		{
			name: "no reboot in the one click: a running instance that lost its key is only watched",
			inc: Incident{KeyARN: keyARN, KeyState: KeyStateEnabled,
				Clusters: []Cluster{{Identifier: "a", Status: StatusAvailable, Uses: storage}, {Identifier: "b", Status: StatusStopped, Uses: storage}},
				Instances: []Instance{
					{Identifier: "a-1", ClusterIdentifier: "a", Status: StatusAvailable, LostKeyAccess: true},
					{Identifier: "b-1", ClusterIdentifier: "b", Status: StatusStopped, LostKeyAccess: true},
				}},
			want: []PlannedStep{{Kind: StepStartDBCluster, Target: "b"}},
		},
		{
			name: "a cluster its owner stopped before the loss is left stopped",
			inc: Incident{KeyARN: keyARN, KeyState: KeyStateDisabled, Clusters: []Cluster{
				{Identifier: "a", Status: StatusStopped, Uses: storage, StoppedBeforeLoss: true},
				{Identifier: "b", Status: StatusStopped, Uses: storage},
			}},
			want: []PlannedStep{{Kind: StepEnableKey, Target: keyARN}, {Kind: StepWaitEnabled, Target: keyARN}, {Kind: StepStartDBCluster, Target: "b"}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			steps, err := tc.inc.Plan()
			if err != nil {
				t.Fatal(err)
			}
			var running []PlannedStep
			for _, s := range steps {
				if s.Runs() {
					running = append(running, s)
				}
			}
			if diff := cmp.Diff(tc.want, running); diff != "" {
				t.Errorf("running steps (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPlanRefusesWhatOneClickCannotFix(t *testing.T) {
	for _, inc := range []Incident{
		{KeyARN: keyARN, KeyState: KeyStateDeleted},
		{KeyARN: keyARN, KeyState: KeyStatePendingImport},
		{KeyARN: keyARN, KeyState: KeyStateUnavailable},
		{KeyARN: keyARN, KeyState: KeyStateDisabled, Clusters: []Cluster{{Identifier: "a", Lost: true}}},
	} {
		var nf *NotFixableError
		if _, err := inc.Plan(); !errors.As(err, &nf) || nf.Instead == "" {
			t.Errorf("key %s: got %v, want a NotFixableError saying what to do instead", inc.KeyState, err)
		}
	}
}

func TestPlanSettlingAndRebootOnce(t *testing.T) {
	inc := Incident{KeyARN: keyARN, KeyState: KeyStateEnabled, Remediation: Remediation{RunID: "r1"},
		Clusters:  []Cluster{{Identifier: "a", Status: StatusStopping, Uses: []string{"storage"}}},
		Instances: []Instance{{Identifier: "x", ClusterIdentifier: "c", Status: StatusAvailable, LostKeyAccess: true}}}
	inc.RecordStep(StepRecord{Kind: StepRebootDBInstance, Target: "x", Result: ResultOK, At: t0})
	steps, err := inc.Plan()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range steps {
		switch s.Target {
		case "a":
			if s.Runs() || !s.Settling {
				t.Errorf("a stopping cluster: %+v, want skipped and settling", s)
			}
		case "x":
			if s.Runs() {
				t.Errorf("an instance rebooted before is rebooted again: %+v", s)
			}
		}
	}
}
