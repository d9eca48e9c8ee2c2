package reconcile

import (
	"context"
	"fmt"
	"time"

	"github.com/keywarden/keywarden/internal/incident"
)

// The outbox retry pass. Every message change and timeline entry is a pending delivery on its
// incident until Slack shows it (incident.Incident.SlackOutbox); a delivery that fails leaves
// it pending and releases its lease at once. Three things deliver it later: the next event for
// the incident, the reconciler's run (which announces every active incident, and through
// retryOutbox the closed ones still pending), and RetryOutbox, which ReconcileFunction runs
// every minute on its own schedule (template.yaml's OutboxRetry rule, input OutboxEvent).
//
// Why a one-minute schedule and not an EventBridge Scheduler one-off per pending incident: the
// schedule needs no scheduler role, no iam:PassRole and no per-incident schedule to create,
// name and clean up, and it cannot be lost with the invocation that would have created it (a
// crash after the store write but before Slack is exactly when a retry is needed). Its cost
// is one short invocation a minute; with nothing pending it is one Scan of heads and slack
// items (Store.SlackPending), no Slack call.

// OutboxEvent is the input of the one-minute schedule: ReconcileFunction runs RetryOutbox,
// not a whole reconcile pass, when its event says {"pass": "outbox"}.
const OutboxEvent = "outbox"

// ActionDelivered: a pending Slack delivery went through on retry.
const ActionDelivered Action = "delivered"

// outboxLister lists incidents whose Slack delivery may be pending; *dynamostore.Store fits.
// Without it (a fake Incidents) the pass lists every incident.
type outboxLister interface {
	SlackPending(ctx context.Context) ([]string, error)
	Get(ctx context.Context, id string) (incident.Incident, error)
}

// RetryOutbox delivers every incident whose Slack delivery is pending (not failed: an
// undeliverable incident waits for the next event or reconcile run, which try again), most
// urgent first, within the run budget. Each outcome is in the report: delivered, or
// announce-failed with the reason. The error is the listing's; nothing was delivered then.
func (r *Reconciler) RetryOutbox(ctx context.Context) (Report, error) {
	var rep Report
	if r.d.Announcer == nil {
		return rep, nil
	}
	deadline := r.deadline(ctx)
	var pending []incident.Incident
	if l, ok := r.d.Incidents.(outboxLister); ok {
		ids, err := l.SlackPending(ctx)
		if err != nil {
			return rep, fmt.Errorf("outbox: %w", err)
		}
		for _, id := range ids {
			inc, err := l.Get(ctx, id)
			if err != nil {
				rep.add(Outcome{IncidentID: id, Action: ActionFailed, Reason: "outbox: " + err.Error()})
				continue
			}
			pending = append(pending, inc)
		}
	} else {
		all, err := r.d.Incidents.List(ctx)
		if err != nil {
			return rep, fmt.Errorf("outbox: %w", err)
		}
		pending = all
	}
	active, _ := split(pending, r.now().UTC()) // most urgent first
	var closed []incident.Incident
	for _, inc := range pending {
		if inc.State.Closed() {
			closed = append(closed, inc)
		}
	}
	rep.Incidents = len(pending)
	r.retryOutbox(ctx, append(active, closed...), deadline, &rep)
	return rep, nil
}

// retryOutbox announces each of incs whose Slack delivery is pending, until deadline.
func (r *Reconciler) retryOutbox(ctx context.Context, incs []incident.Incident, deadline time.Time, rep *Report) {
	if r.d.Announcer == nil {
		return
	}
	for _, inc := range incs {
		if inc.SlackDelivery.State != incident.DeliveryPending {
			continue
		}
		if !r.wall().Before(deadline) {
			rep.add(Outcome{IncidentID: inc.ID, KeyARN: inc.KeyARN, Action: ActionDeferred, Reason: "outbox: run budget spent"})
			continue
		}
		if err := r.d.Announcer.Announce(ctx, inc); err != nil {
			rep.add(Outcome{IncidentID: inc.ID, KeyARN: inc.KeyARN, Action: ActionAnnounceFailed, Reason: err.Error()})
			continue
		}
		rep.add(Outcome{IncidentID: inc.ID, KeyARN: inc.KeyARN, Action: ActionDelivered})
	}
}

// retryClosedOutbox is the reconcile run's share of the outbox: the run announces every active
// incident as it refreshes it, so this delivers what closed incidents still have pending (a
// resolution whose message update failed).
func (r *Reconciler) retryClosedOutbox(ctx context.Context, all []incident.Incident, b *budget, rep *Report) {
	var closed []incident.Incident
	for _, inc := range all {
		if inc.State.Closed() && inc.SlackDelivery.State == incident.DeliveryPending {
			closed = append(closed, inc)
		}
	}
	r.retryOutbox(ctx, closed, b.deadline, rep)
}
