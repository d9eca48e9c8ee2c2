package incident

import (
	"time"
)

// CriticalWithin is how close a deadline makes an incident critical: under a day there is no
// time left to wait for office hours.
const CriticalWithin = 24 * time.Hour

// SeverityAt is THE severity rule, at time now; slackmessage, the CLI and the reminders call it.
//
//   - critical: some cluster has no recoverable window (Critical: it is hurt from the first
//     minute), the key is deleted, or the deadline is under CriticalWithin or passed;
//   - low: no cluster depends on the key, only Aurora cluster snapshots or automated backups
//     do (a DR copy): nothing stops, but those backups become unrestorable on the key's
//     deletion date;
//   - high otherwise.
//
// A closed incident keeps the severity it had; callers show its final state instead.
func (inc *Incident) SeverityAt(now time.Time) Severity {
	if s := inc.baseSeverity(); s != SeverityHigh {
		return s
	}
	if left, ok := inc.TimeLeft(now); ok && left < CriticalWithin {
		return SeverityCritical
	}
	return SeverityHigh
}

// baseSeverity is the severity that does not depend on the clock; RecomputeDeadlines stores
// it in Severity, and SeverityAt raises it as the deadline nears.
func (inc *Incident) baseSeverity() Severity {
	switch {
	case inc.Critical || inc.KeyDeleted():
		return SeverityCritical
	case inc.SnapshotOnly():
		return SeverityLow
	}
	return SeverityHigh
}

// SnapshotOnly reports whether the key protects only Aurora cluster snapshots or automated
// backups: no cluster (or other-engine cluster) depends on it, at least one snapshot does.
func (inc *Incident) SnapshotOnly() bool {
	return len(inc.Clusters) == 0 && len(inc.OtherEngines) == 0 && (len(inc.Snapshots) > 0 || inc.SnapshotCount > 0)
}

// KeyForeign reports whether the key lives in another account than the incident's clusters:
// this deployment can neither enable it nor cancel its deletion (DisableKey, EnableKey and
// CancelKeyDeletion cannot be called cross-account; aws-facts §8), only the key's owner can. An
// organization-mode incident's key is never foreign: that deployment acts in the key's own
// account through its keywarden-remediate role (issue 13).
func (inc *Incident) KeyForeign() bool {
	if inc.KeyAccount == "" || inc.Organization {
		return false
	}
	for _, c := range inc.Clusters {
		account := c.Account
		if account == "" {
			account = ARNAccount(c.ARN)
		}
		if account != "" && account != inc.KeyAccount {
			return true
		}
	}
	return false
}
