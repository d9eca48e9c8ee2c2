package incident

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestRecomputeDeadlines(t *testing.T) {
	lost := time.Date(2026, 11, 28, 9, 30, 0, 0, time.UTC)
	window := lost.Add(RecoverableWindow)
	soon := lost.Add(3 * 24 * time.Hour)   // a deletion date before the 7-day window ends
	later := lost.Add(30 * 24 * time.Hour) // a deletion date after it
	stoppable := func(id string, lostAt *time.Time) Cluster {
		return Cluster{Identifier: id, CanStop: true, LostAccessAt: lostAt}
	}
	global := Cluster{Identifier: "global-member", CanStop: false, CannotStopReason: "global database member", LostAccessAt: &lost}

	tests := []struct {
		name         string
		inc          Incident
		wantDeadline *time.Time
		wantCritical bool
		wantClusters []*time.Time // each cluster's deadline, in order
	}{
		{
			name:         "no clusters",
			inc:          Incident{KeyState: "Disabled"},
			wantDeadline: nil,
		},
		{
			name:         "no clusters, key pending deletion",
			inc:          Incident{KeyState: "PendingDeletion", KeyDeletionDate: &later},
			wantDeadline: &later,
		},
		{
			name:         "disabled key: seven-day recoverable window",
			inc:          Incident{KeyState: "Disabled", Clusters: []Cluster{stoppable("a", &lost)}},
			wantDeadline: &window,
			wantClusters: []*time.Time{&window},
		},
		{
			name:         "deletion date earlier than the window",
			inc:          Incident{KeyState: "PendingDeletion", KeyDeletionDate: &soon, Clusters: []Cluster{stoppable("a", &lost)}},
			wantDeadline: &soon,
			wantClusters: []*time.Time{&soon},
		},
		{
			name:         "deletion date later than the window",
			inc:          Incident{KeyState: "PendingDeletion", KeyDeletionDate: &later, Clusters: []Cluster{stoppable("a", &lost)}},
			wantDeadline: &window,
			wantClusters: []*time.Time{&window},
		},
		{
			name:         "deletion date bounds a cluster that has not lost access yet",
			inc:          Incident{KeyState: "PendingDeletion", KeyDeletionDate: &later, Clusters: []Cluster{stoppable("a", nil)}},
			wantDeadline: &later,
			wantClusters: []*time.Time{&later},
		},
		{
			name:         "deletion date ignored unless the key is PendingDeletion",
			inc:          Incident{KeyState: "Disabled", KeyDeletionDate: &soon, Clusters: []Cluster{stoppable("a", &lost)}},
			wantDeadline: &window,
			wantClusters: []*time.Time{&window},
		},
		{
			name:         "PendingReplicaDeletion ignores the deletion date",
			inc:          Incident{KeyState: "PendingReplicaDeletion", KeyDeletionDate: &soon, Clusters: []Cluster{stoppable("a", &lost)}},
			wantDeadline: &window,
			wantClusters: []*time.Time{&window},
		},
		{
			name:         "PendingReplicaDeletion and no cluster has lost access: no deadline",
			inc:          Incident{KeyState: "PendingReplicaDeletion", KeyDeletionDate: &soon, Clusters: []Cluster{stoppable("a", nil)}},
			wantDeadline: nil,
			wantClusters: []*time.Time{nil},
		},
		{
			name:         "cluster that cannot stop: no deadline, critical",
			inc:          Incident{KeyState: "Disabled", Clusters: []Cluster{global}},
			wantDeadline: nil,
			wantCritical: true,
			wantClusters: []*time.Time{nil},
		},
		{
			name:         "cluster that cannot stop beside one that can",
			inc:          Incident{KeyState: "PendingDeletion", KeyDeletionDate: &soon, Clusters: []Cluster{global, stoppable("a", &lost)}},
			wantDeadline: &soon,
			wantCritical: true,
			wantClusters: []*time.Time{nil, &soon},
		},
		{
			name: "recovered and lost clusters excluded",
			inc: Incident{KeyState: "Disabled", Clusters: []Cluster{
				{Identifier: "recovered", CanStop: true, LostAccessAt: ptr(lost.Add(-48 * time.Hour)), Recovered: true},
				{Identifier: "lost", CanStop: true, LostAccessAt: ptr(lost.Add(-24 * time.Hour)), Lost: true},
				stoppable("a", &lost),
			}},
			wantDeadline: &window,
			wantClusters: []*time.Time{ptr(window.Add(-48 * time.Hour)), ptr(window.Add(-24 * time.Hour)), &window},
		},
		{
			name: "recovered or lost cluster that cannot stop is not critical",
			inc: Incident{KeyState: "Disabled", Clusters: []Cluster{
				{Identifier: "g1", CanStop: false, Recovered: true},
				{Identifier: "g2", CanStop: false, Lost: true},
			}},
			wantDeadline: nil,
			wantClusters: []*time.Time{nil, nil},
		},
		{
			name: "every cluster recovered: no deadline",
			inc: Incident{KeyState: "Enabled", Clusters: []Cluster{
				{Identifier: "a", CanStop: true, LostAccessAt: &lost, Recovered: true},
			}},
			wantDeadline: nil,
			wantClusters: []*time.Time{&window},
		},
		{
			name: "stale deadline and critical flag are cleared",
			inc: Incident{KeyState: "Enabled", Deadline: &soon, Critical: true, Clusters: []Cluster{
				{Identifier: "a", CanStop: true, Deadline: &soon},
			}},
			wantDeadline: nil,
			wantClusters: []*time.Time{nil},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inc := tt.inc
			inc.Clusters = append([]Cluster(nil), tt.inc.Clusters...)
			inc.RecomputeDeadlines()
			if diff := cmp.Diff(tt.wantDeadline, inc.Deadline); diff != "" {
				t.Errorf("Deadline (-want +got):\n%s", diff)
			}
			if inc.Critical != tt.wantCritical {
				t.Errorf("Critical: got %v, want %v", inc.Critical, tt.wantCritical)
			}
			var got []*time.Time
			for _, c := range inc.Clusters {
				got = append(got, c.Deadline)
			}
			if diff := cmp.Diff(tt.wantClusters, got); diff != "" {
				t.Errorf("cluster deadlines (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTimeLeft(t *testing.T) {
	now := time.Date(2026, 11, 28, 9, 30, 0, 0, time.UTC)
	tests := []struct {
		name     string
		deadline *time.Time
		wantLeft time.Duration
		wantOK   bool
	}{
		{"no deadline", nil, 0, false},
		{"ahead", ptr(now.Add(36 * time.Hour)), 36 * time.Hour, true},
		{"passed", ptr(now.Add(-time.Hour)), -time.Hour, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inc := Incident{Deadline: tt.deadline}
			left, ok := inc.TimeLeft(now)
			if left != tt.wantLeft || ok != tt.wantOK {
				t.Errorf("TimeLeft: got %v, %v, want %v, %v", left, ok, tt.wantLeft, tt.wantOK)
			}
		})
	}
}

func TestNonStorageUseHasNoWindow(t *testing.T) {
	lost := time.Date(2026, 11, 20, 9, 0, 0, 0, time.UTC)
	inc := Incident{KeyState: "Disabled", Clusters: []Cluster{{
		Identifier: "pi-only", CanStop: false, Uses: []string{"performance-insights"}, LostAccessAt: &lost,
	}}}
	inc.RecomputeDeadlines()
	if inc.Critical || inc.Deadline != nil || inc.Clusters[0].Deadline != nil {
		t.Errorf("got critical %v deadline %v, want neither: the cluster keeps running without this key", inc.Critical, inc.Deadline)
	}
}
