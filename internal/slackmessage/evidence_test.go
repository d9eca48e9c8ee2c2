package slackmessage

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/incident"
)

// TestIssue9Texts: what the message says of a key of another account, an estimated window, an
// incomplete blast radius and a key that protects only snapshots.
func TestIssue9Texts(t *testing.T) {
	now := time.Date(2026, 3, 12, 9, 0, 0, 0, time.UTC)
	lost := now.Add(-time.Hour)
	deletion := now.Add(30 * 24 * time.Hour)
	cluster := incident.Cluster{Identifier: "payroll", ARN: "arn:aws:rds:us-east-1:123456789012:cluster:payroll", Engine: "aurora-postgresql",
		Status: "available", CanStop: true, LostAccessAt: &lost, LostKeyAccess: true}
	for _, tc := range []struct {
		name string
		inc  incident.Incident
		want []string
	}{
		{"key of another account", incident.Incident{
			State: incident.StateOpen, KeyARN: "arn:aws:kms:us-east-1:444455556666:key/k", KeyAccount: "444455556666",
			KeyState: incident.KeyStateUnknown, KeyStateReason: "DescribeKey was denied", Clusters: []incident.Cluster{cluster},
		}, []string{"account 444455556666: its owner must enable it"}},
		{"estimated and incomplete", incident.Incident{
			State: incident.StateOpen, KeyARN: "arn:aws:kms:us-east-1:123456789012:key/k", KeyState: incident.KeyStateDisabled,
			Clusters: []incident.Cluster{cluster}, WindowEstimated: true, RadiusIncomplete: true,
		}, []string{"Window estimated", "Blast radius incomplete"}},
		{"snapshot-only", incident.Incident{
			State: incident.StateOpen, KeyARN: "arn:aws:kms:us-east-1:123456789012:key/k", KeyState: incident.KeyStatePendingDeletion,
			KeyDeletionDate: &deletion, Snapshots: []incident.Snapshot{{Identifier: "dr-copy", Type: "manual"}},
		}, []string{"these backups become unrestorable on", "1 snapshot(s)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.inc.RecomputeDeadlines()
			blocks, _ := Render(tc.inc, now)
			b, err := json.Marshal(blocks)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(b), w) {
					t.Errorf("message lacks %q: %s", w, b)
				}
			}
		})
	}
	snap := incident.Incident{KeyState: incident.KeyStatePendingDeletion, Snapshots: []incident.Snapshot{{Identifier: "dr"}}}
	snap.RecomputeDeadlines()
	if got := Severity(snap, now); got != SeverityLow {
		t.Errorf("snapshot-only severity %q, want low", got)
	}
}
