package slackui

import (
	"fmt"
	"strings"
	"time"

	"github.com/keywarden/keywarden/internal/incident"
)

// Severities an open incident can have. A closed incident's severity is its final state.
const (
	SeverityCritical = "critical"
	SeverityHigh     = "high"
)

// criticalWithin is how close a deadline makes an incident critical: under a day there is no
// time left to wait for office hours.
const criticalWithin = 24 * time.Hour

// Severity grades an incident at time now. It is "critical" when some cluster has no
// recoverable window (inc.Critical: it is hurt from the first minute), when the deadline is
// under 24 h or already passed, or when the key is deleted (nothing is waiting to be saved any
// more, and everyone must know); "high" otherwise while the incident is open or remediating.
// A closed incident says its final state: "resolved", "intentional" or "lost".
func Severity(inc incident.Incident, now time.Time) string {
	if inc.State.Closed() {
		return string(inc.State)
	}
	if inc.Critical || keyDeleted(inc) {
		return SeverityCritical
	}
	if left, ok := inc.TimeLeft(now); ok && left < criticalWithin {
		return SeverityCritical
	}
	return SeverityHigh
}

// keyDeleted reports whether the key is gone for good. After deletion DescribeKey answers
// NotFound, so a key whose state could no longer be read after it was scheduled for deletion,
// or after KMS's own "KMS CMK Deletion" event, counts as deleted too.
func keyDeleted(inc incident.Incident) bool {
	if inc.KeyState == "Deleted" {
		return true
	}
	return inc.KeyState == "" && (inc.KeyDeletionDate != nil || inc.Trigger == "KMS CMK Deletion")
}

// Fixable reports whether the one-click fix (cancel deletion, enable key, start clusters) can
// recover this incident, and if not, what to do instead. The answer rests on KMS and Aurora
// behaviour, not on keywarden: a deleted key cannot be restored; a key whose imported material
// is gone only works again with that same material; a key in a disconnected custom key store
// cannot be enabled from KMS's side; a terminal cluster cannot be started, only restored.
func Fixable(inc incident.Incident) (ok bool, instead string) {
	switch {
	case keyDeleted(inc):
		return false, "The key is deleted. KMS cannot bring it back, so data encrypted under it — " +
			"these clusters, their snapshots and backups — is unrecoverable and a restore is impossible. " +
			"Recover from data that does not depend on this key (an export, a replica under another key), " +
			"and find out who deleted it."
	case inc.KeyState == "PendingImport":
		return false, "The key's imported key material was deleted or has expired (KeyState PendingImport). " +
			"Re-import the SAME key material with ImportKeyMaterial — new material cannot decrypt existing data — " +
			"then start the stopped clusters with StartDBCluster."
	case inc.KeyState == "Unavailable":
		return false, "The key's custom key store is disconnected (KeyState Unavailable). " +
			"Reconnect the store with ConnectCustomKeyStore (for CloudHSM, make sure the cluster has an active HSM), " +
			"then start the stopped clusters with StartDBCluster."
	case len(inc.Clusters) > 0 && allLost(inc.Clusters):
		return false, "Every cluster reached the terminal inaccessible-encryption-credentials state and cannot be started. " +
			"Enable the key first, then restore each cluster from a snapshot or with point-in-time recovery; both need the key."
	}
	return true, ""
}

func allLost(cs []incident.Cluster) bool {
	for _, c := range cs {
		if !c.Lost {
			return false
		}
	}
	return true
}

// Cluster and instance statuses that matter to the fix.
const (
	statusStopped     = "stopped"
	statusRecoverable = "inaccessible-encryption-credentials-recoverable"
	statusAvailable   = "available"
)

// startable lists the clusters the fix will StartDBCluster: those Aurora reports stopped or
// recoverable, the only states StartDBCluster accepts.
func startable(inc incident.Incident) []string {
	var ids []string
	for _, c := range inc.Clusters {
		if c.Lost || c.Recovered {
			continue
		}
		if c.Status == statusStopped || c.Status == statusRecoverable {
			ids = append(ids, c.Identifier)
		}
	}
	return ids
}

// rebootable lists the member instances the fix will RebootDBInstance: still running
// (available) but reported by RDS-EVENT-0418/0419 as having lost key access, in a cluster that
// is not itself being started or given up.
func rebootable(inc incident.Incident) []string {
	skip := map[string]bool{}
	for _, c := range inc.Clusters {
		if c.Lost || c.Status == statusStopped || c.Status == statusRecoverable {
			skip[c.Identifier] = true
		}
	}
	var ids []string
	for _, in := range inc.Instances {
		if in.LostKeyAccess && in.Status == statusAvailable && !skip[in.ClusterIdentifier] {
			ids = append(ids, in.Identifier)
		}
	}
	return ids
}

// cancelsDeletion reports whether the fix starts with CancelKeyDeletion. A multi-Region primary
// waiting for its replicas (PendingReplicaDeletion) is cancelled the same way; EnableKey is
// refused in both states.
func cancelsDeletion(keyState string) bool {
	return keyState == "PendingDeletion" || keyState == "PendingReplicaDeletion"
}

// Steps lists, in order, what the one-click fix will do for this incident as it stands, with
// resource names cut to "and N more" so the list fits Slack's 300-character confirm dialog.
// RemediateFunction plans again from live state when it runs; the last line says so when that
// can add work.
func Steps(inc incident.Incident) []string {
	return stepsWithin(inc, maxConfirmText)
}

// stepsWithin lists as many names per step as fit in budget characters.
func stepsWithin(inc incident.Incident, budget int) []string {
	steps := stepsWith(inc, 1<<30)
	for max := 8; max > 0 && len(strings.Join(steps, "\n")) > budget; max-- {
		steps = stepsWith(inc, max)
	}
	return steps
}

func stepsWith(inc incident.Incident, max int) []string {
	var steps []string
	add := func(format string, args ...any) {
		steps = append(steps, fmt.Sprintf("%d. ", len(steps)+1)+fmt.Sprintf(format, args...))
	}
	if cancelsDeletion(inc.KeyState) {
		add("CancelKeyDeletion (key is %s)", inc.KeyState)
	}
	if inc.KeyState != "Enabled" {
		add("EnableKey")
	}
	add("Wait until DescribeKey says Enabled")
	if ids := startable(inc); len(ids) > 0 {
		add("StartDBCluster: %s", listNames(ids, max))
	}
	if ids := rebootable(inc); len(ids) > 0 {
		add("RebootDBInstance: %s", listNames(ids, max))
	}
	if active(inc.Clusters) > len(startable(inc)) {
		add("Start any other cluster that has stopped by then")
	}
	return steps
}
