package incident

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func remediating(t *testing.T, at time.Time) Incident {
	t.Helper()
	inc := Incident{ID: "KW-1", State: StateOpen, KeyARN: keyARN, KeyState: KeyStateDisabled}
	if _, started, err := inc.Approve("U1", 0, "c1", at, 1, "run-1"); err != nil || !started {
		t.Fatalf("approve: started %v, err %v", started, err)
	}
	return inc
}

func TestClaimRun(t *testing.T) {
	t0 := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	inc := remediating(t, t0)
	if inc.AwaitingStart(t0.Add(10*time.Second), 20*time.Second) {
		t.Error("awaiting start 10s after approval, want the click's own hand-off to have its chance")
	}
	if !inc.AwaitingStart(t0.Add(30*time.Second), 20*time.Second) {
		t.Error("not awaiting start 30s after approval")
	}
	if err := inc.ClaimRun("run-0", "inv-a", t0, time.Minute); !errors.Is(err, ErrRunNotCurrent) {
		t.Errorf("claim of another run: got %v, want ErrRunNotCurrent", err)
	}
	if err := inc.ClaimRun("run-1", "inv-a", t0, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := inc.ClaimRun("run-1", "inv-b", t0.Add(30*time.Second), time.Minute); !errors.Is(err, ErrRunClaimed) {
		t.Errorf("second claim inside the lease: got %v, want ErrRunClaimed", err)
	}
	if inc.AwaitingStart(t0.Add(30*time.Second), 0) {
		t.Error("a run inside its lease awaits a start")
	}
	// The first invocation died (a Lambda timeout): the lease runs out and the next claims it.
	if !inc.AwaitingStart(t0.Add(2*time.Minute), 0) {
		t.Error("a run whose lease ran out does not await a start")
	}
	if err := inc.ClaimRun("run-1", "inv-b", t0.Add(2*time.Minute), time.Minute); err != nil {
		t.Fatalf("claim after the lease ran out: %v", err)
	}
	if inc.Remediation.Attempts != 2 || inc.Remediation.ClaimedBy != "inv-b" {
		t.Errorf("attempts %d by %q, want 2 by inv-b", inc.Remediation.Attempts, inc.Remediation.ClaimedBy)
	}
	inc.PauseRun("StartDBCluster orders", "its time limit", t0.Add(3*time.Minute))
	if inc.Remediation.State != RemediationApproved || inc.Remediation.StoppedAt != "StartDBCluster orders" {
		t.Errorf("paused run: state %s stopped at %q", inc.Remediation.State, inc.Remediation.StoppedAt)
	}
	if !inc.AwaitingStart(t0.Add(3*time.Minute), 0) {
		t.Error("a paused run does not await a start")
	}
	if err := inc.GiveBack("test", t0.Add(4*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := inc.ClaimRun("run-1", "inv-c", t0.Add(4*time.Minute), time.Minute); !errors.Is(err, ErrRunNotCurrent) {
		t.Errorf("claim after give-back: got %v, want ErrRunNotCurrent", err)
	}
}

func TestWatchInstances(t *testing.T) {
	t0 := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	grace := 30 * time.Minute
	base := func() Incident {
		return Incident{KeyARN: keyARN, KeyState: KeyStateEnabled,
			Clusters:  []Cluster{{Identifier: "a", Status: StatusAvailable, Uses: []string{"storage"}, LiveKeyARN: keyARN}},
			Instances: []Instance{{Identifier: "a-1", ClusterIdentifier: "a", Status: StatusAvailable, LostKeyAccess: true}}}
	}
	t.Run("available for the grace period with the key Enabled: recovered, no reboot", func(t *testing.T) {
		inc := base()
		inc.WatchInstances(t0, grace)
		inc.WatchInstances(t0.Add(10*time.Minute), grace)
		if !inc.Instances[0].LostKeyAccess {
			t.Fatal("recovered before the grace period")
		}
		inc.WatchInstances(t0.Add(grace), grace)
		if in := inc.Instances[0]; in.LostKeyAccess || in.NeedsReboot {
			t.Errorf("after the grace period: lost %v, needs reboot %v; want recovered", in.LostKeyAccess, in.NeedsReboot)
		}
		e, _ := inc.LastEntry(KindClusterChange)
		if !strings.Contains(e.Detail, "counted recovered") || !strings.Contains(e.Detail, "not rebooted") {
			t.Errorf("timeline says %q", e.Detail)
		}
	})
	t.Run("a break in availability restarts the clock; still down after the grace: reboot button", func(t *testing.T) {
		inc := base()
		inc.WatchInstances(t0, grace)
		inc.Instances[0].Status = "inaccessible-encryption-credentials"
		inc.WatchInstances(t0.Add(20*time.Minute), grace)
		inc.Instances[0].Status = StatusAvailable
		inc.WatchInstances(t0.Add(25*time.Minute), grace)
		inc.WatchInstances(t0.Add(31*time.Minute), grace)
		if in := inc.Instances[0]; !in.LostKeyAccess || !in.NeedsReboot {
			t.Fatalf("lost %v, needs reboot %v; want a reboot offered", in.LostKeyAccess, in.NeedsReboot)
		}
		if got := inc.RebootPlan("a-1"); !got.Runs() {
			t.Errorf("reboot plan skipped: %s", got.Skip)
		}
		// It may still recover by itself: available for the grace since 25m.
		inc.WatchInstances(t0.Add(55*time.Minute), grace)
		if in := inc.Instances[0]; in.LostKeyAccess || in.NeedsReboot {
			t.Errorf("not recovered after a full grace available: %+v", in)
		}
	})
	t.Run("RDS-EVENT-0420 ends the watch", func(t *testing.T) {
		inc := base()
		inc.WatchInstances(t0, grace)
		inc.Instances[0].LostKeyAccess = false // what lifecycle does on 0420
		if inc.Watching() || inc.WatchInstances(t0.Add(time.Hour), grace) {
			t.Error("still watching after 0420")
		}
	})
	t.Run("nothing is watched while the key is not Enabled", func(t *testing.T) {
		inc := base()
		inc.KeyState = KeyStateDisabled
		if inc.WatchInstances(t0.Add(time.Hour), grace) {
			t.Error("watch advanced with the key Disabled")
		}
	})
}

func TestRebootPlan(t *testing.T) {
	inc := Incident{KeyARN: keyARN, KeyState: KeyStateEnabled,
		Clusters: []Cluster{{Identifier: "a", Status: StatusAvailable, LiveKeyARN: keyARN}, {Identifier: "b", Status: StatusAvailable, LiveKeyARN: keyARN + "-other"}},
		Instances: []Instance{
			{Identifier: "a-1", ClusterIdentifier: "a", Status: StatusAvailable, LostKeyAccess: true, NeedsReboot: true},
			{Identifier: "a-2", ClusterIdentifier: "a", Status: StatusAvailable, LostKeyAccess: true},
			{Identifier: "b-1", ClusterIdentifier: "b", Status: StatusAvailable, LostKeyAccess: true, NeedsReboot: true},
		}}
	for id, runs := range map[string]bool{"a-1": true, "a-2": false, "b-1": false, "x": false} {
		if got := inc.RebootPlan(id); got.Runs() != runs {
			t.Errorf("%s: runs %v (skip %q), want %v", id, got.Runs(), got.Skip, runs)
		}
	}
	inc.KeyState = KeyStateDisabled
	if inc.RebootPlan("a-1").Runs() {
		t.Error("reboot planned with the key Disabled")
	}
}

func TestNoteStopped(t *testing.T) {
	lost := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	inc := Incident{LostAt: lost, Clusters: []Cluster{{Identifier: "a"}, {Identifier: "b"}}}
	if !inc.NoteStopped("a", lost.Add(-time.Hour)) {
		t.Error("a stop an hour before the loss is not the owner's")
	}
	if inc.NoteStopped("b", lost.Add(5*time.Minute)) {
		t.Error("a stop after the loss counted as the owner's")
	}
}
