package lifecycle

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/kmskey"
)

func TestKeyAsRead(t *testing.T) {
	local := "arn:aws:kms:us-east-1:123456789012:key/k"
	foreign := "arn:aws:kms:us-east-1:444455556666:key/k"
	transient := errors.New("throttled")
	for _, tc := range []struct {
		name    string
		arn     string
		err     error
		want    incident.KeyState
		wantErr error
	}{
		{"read", local, nil, incident.KeyStateEnabled, nil},
		{"denied", foreign, fmt.Errorf("x: %w", kmskey.ErrDenied), incident.KeyStateUnknown, nil},
		{"not found, this account", local, fmt.Errorf("x: %w", kmskey.ErrNotFound), incident.KeyStateDeleted, nil},
		{"not found, another account", foreign, fmt.Errorf("x: %w", kmskey.ErrNotFound), incident.KeyStateUnknown, nil},
		{"transient", local, transient, "", transient},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := kmskey.Key{}
			if tc.err == nil {
				in = kmskey.Key{ARN: tc.arn, State: incident.KeyStateEnabled}
			}
			got, err := KeyAsRead(tc.arn, "123456789012", in, tc.err)
			if !errors.Is(err, tc.wantErr) || got.State != tc.want {
				t.Errorf("got %s, %v; want %s, %v", got.State, err, tc.want, tc.wantErr)
			}
			if got.State == incident.KeyStateUnknown && got.StateReason == "" {
				t.Errorf("Unknown without a reason")
			}
		})
	}
}

// TestClusterEvidenceHolds: a cluster that reported lost key access is not recovered while the
// key reads Enabled, and the incident does not resolve until RDS-EVENT-0420.
func TestClusterEvidenceHolds(t *testing.T) {
	at := time.Date(2026, 3, 14, 16, 45, 0, 0, time.UTC)
	inc := incident.Incident{State: incident.StateOpen, KeyARN: "arn:aws:kms:us-east-1:123456789012:key/k", KeyState: incident.KeyStateEnabled,
		Clusters: []incident.Cluster{{Identifier: "c", Status: incident.StatusAvailable, CanStop: true}}}
	KeyAccessLost(&inc, AccessReport{Cluster: "c", EventID: "e1", Code: "RDS-EVENT-0418", At: at}, at)
	if Settle(&inc, at.Add(time.Minute)) != "" || inc.Clusters[0].Recovered || inc.Deadline == nil {
		t.Fatalf("after 0418: state %s, recovered %v, deadline %v; want open, not recovered, a deadline", inc.State, inc.Clusters[0].Recovered, inc.Deadline)
	}
	KeyAccessRestored(&inc, AccessReport{Cluster: "c", EventID: "e2", Code: "RDS-EVENT-0420", At: at.Add(time.Hour)}, at.Add(time.Hour))
	if got := Settle(&inc, at.Add(time.Hour)); got != incident.StateResolved {
		t.Errorf("after 0420: got %q, want resolved", got)
	}
}

// TestDeletedReplicaNotLost and a snapshot-only key enabled again.
func TestSettleReplicaAndSnapshotOnly(t *testing.T) {
	now := time.Date(2026, 3, 14, 0, 0, 0, 0, time.UTC)
	replica := incident.Incident{State: incident.StateOpen, KeyState: incident.KeyStateDeleted, KeyReplicaOf: "arn:aws:kms:us-west-2:1:key/mrk-1",
		Clusters: []incident.Cluster{{Identifier: "c", Status: incident.StatusRecoverable, CanStop: true}}}
	if got := Settle(&replica, now); got != "" {
		t.Errorf("deleted replica: got %q, want still open (ReplicateKey re-creates it)", got)
	}
	snap := incident.Incident{State: incident.StateOpen, KeyState: incident.KeyStateEnabled, Snapshots: []incident.Snapshot{{Identifier: "dr"}}}
	if got := Settle(&snap, now); got != incident.StateResolved {
		t.Errorf("snapshot-only key enabled again: got %q, want resolved", got)
	}
}
