package slackmessage

import (
	"context"
	"log/slog"

	"github.com/keywarden/keywarden/internal/incident"
)

// IncidentAnnouncer announces an incident that changed; *Announcer fits, and so does the small
// fake of a caller's test. Callers declare their own interface with this method, and their
// value fits here as is.
type IncidentAnnouncer interface {
	Announce(ctx context.Context, inc incident.Incident) error
}

// AnnounceOrWarn announces inc, which the caller has already stored, and carries on whatever
// Slack says: the store is the record, and what Slack has not shown stays in the incident's
// outbox (incident.Incident.SlackOutbox), which the next event, the reconciler's one-minute
// outbox pass (reconcile.RetryOutbox) or its run delivers. It is the one place that decides
// what a failed announcement costs a caller: nothing but a warning.
//
// a may be nil, or a nil *Announcer (no Slack bot token configured): then it does nothing and
// returns nil. A failure is logged on log at WARN with incident_id and error, and returned, for
// a caller that also acts on it (SlackActionFunction's refresh, the reconciler's Report); with
// a nil log it is only returned, for a caller that reports it itself (the reconciler logs
// nothing: its Report is logged and counted by ReconcileFunction).
func AnnounceOrWarn(ctx context.Context, a IncidentAnnouncer, inc incident.Incident, log *slog.Logger) error {
	if a == nil {
		return nil
	}
	if p, ok := a.(*Announcer); ok && p == nil {
		return nil
	}
	err := a.Announce(ctx, inc)
	if err != nil && log != nil {
		log.WarnContext(ctx, "slack message not updated; the reconciler will repair it", "incident_id", inc.ID, "error", err)
	}
	return err
}
