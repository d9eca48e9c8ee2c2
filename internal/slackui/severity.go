package slackui

import (
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
	if inc.Critical || inc.KeyDeleted() {
		return SeverityCritical
	}
	if left, ok := inc.TimeLeft(now); ok && left < criticalWithin {
		return SeverityCritical
	}
	return SeverityHigh
}
