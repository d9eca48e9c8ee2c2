package slackmessage

import (
	"time"

	"github.com/keywarden/keywarden/internal/incident"
)

// Severities an open incident can have. A closed incident's severity is its final state.
const (
	SeverityCritical = string(incident.SeverityCritical)
	SeverityHigh     = string(incident.SeverityHigh)
	SeverityLow      = string(incident.SeverityLow)
)

// Severity grades an incident at time now by the model's one rule (incident.SeverityAt):
// "critical", "high" or "low" while the incident is open or remediating. A closed incident says
// its final state: "resolved", "intentional" or "lost".
func Severity(inc incident.Incident, now time.Time) string {
	if inc.State.Closed() {
		return string(inc.State)
	}
	return string(inc.SeverityAt(now))
}
