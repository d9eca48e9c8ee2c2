package reconcile

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/keyevent"
	"github.com/keywarden/keywarden/internal/lifecycle"
	"github.com/keywarden/keywarden/internal/slackmessage"
	"github.com/keywarden/keywarden/internal/trail"
)

// ReminderClaim names the claim that makes the reminder for threshold th of incident id post
// once, however many runs overlap. A passed deadline is threshold 0.
func ReminderClaim(id string, th time.Duration) string {
	return fmt.Sprintf("reminder#%s#%s", id, th)
}

// ReminderEntryID is the ID of the timeline entry of the reminder for threshold th of incident
// id: one entry per threshold, however often the write is retried.
func ReminderEntryID(id string, th time.Duration) string {
	return incident.EntryID("reminder", id, th.String())
}

// remind posts the reminder for the most urgent threshold the time left has crossed, if no run
// posted it before. Only the most urgent one counts: a run that comes after two thresholds were
// crossed (a paused schedule, a deadline brought forward) posts one reminder, not two, and the
// larger threshold is never the most urgent again.
func (r *Reconciler) remind(ctx context.Context, inc incident.Incident, now time.Time, rep *Report) incident.Incident {
	left, ok := inc.TimeLeft(now)
	if !ok {
		return r.remindCritical(ctx, inc, now, rep)
	}
	mark := time.Duration(-1)
	for _, th := range r.o.Thresholds { // ascending
		if left <= th {
			mark = th
			break
		}
	}
	switch {
	case left <= 0:
		mark = 0
	case mark < 0:
		return inc
	}
	return r.post(ctx, inc, mark, mark <= EscalateWithin, now, rep)
}

// remindCritical reminds a critical incident that has no deadline (every dependent is a
// cluster that cannot stop, so no countdown will ever cross a threshold) once per
// CriticalEvery since it opened, always with the escalation mention: such a cluster is hurt
// from the first minute. The n-th reminder is "threshold" -n, so it claims and records once
// like any other, however many runs overlap.
func (r *Reconciler) remindCritical(ctx context.Context, inc incident.Incident, now time.Time, rep *Report) incident.Incident {
	if !inc.Critical || inc.State.Closed() || r.o.CriticalEvery <= 0 {
		return inc
	}
	n := now.Sub(inc.OpenedAt) / r.o.CriticalEvery
	if n < 1 {
		return inc
	}
	return r.post(ctx, inc, -n*time.Nanosecond, true, now, rep)
}

// post posts the reminder mark (a threshold, 0 for a passed deadline, or -n for the n-th
// critical reminder) once.
func (r *Reconciler) post(ctx context.Context, inc incident.Incident, mark time.Duration, escalate bool, now time.Time, rep *Report) incident.Incident {
	o := Outcome{IncidentID: inc.ID, KeyARN: inc.KeyARN}
	won, err := r.d.Incidents.Claim(ctx, ReminderClaim(inc.ID, mark), reminderClaimTTL)
	if err != nil {
		o.Action, o.Reason = ActionFailed, "reminder: "+err.Error()
		rep.add(o)
		return inc
	}
	if !won {
		return inc
	}
	mention := ""
	if escalate {
		mention = r.o.Mention
	}
	text := slackmessage.Reminder(inc, mark, mention, now)
	o.Action, o.Reason = ActionReminded, reminderDetail(mark)
	if r.d.Replier != nil {
		if err := r.d.Replier.Reply(ctx, inc, text); err != nil {
			// Nobody was reminded: give the claim back so the next run tries again, and
			// write no timeline entry (the timeline says who was reminded, and the entry
			// would be posted in the thread that just failed). A reply that failed after
			// Slack had in fact posted it may so appear twice; a reminder lost for good
			// near a deadline is the worse failure.
			o.Action, o.Reason = ActionFailed, reminderDetail(mark)+": Slack reply failed, retried next run: "+err.Error()
			if rerr := r.d.Incidents.Release(ctx, ReminderClaim(inc.ID, mark)); rerr != nil {
				o.Reason += "; the claim could not be released, so it is not retried: " + rerr.Error()
			}
			rep.add(o)
			return inc
		}
	}
	got, err := r.d.Incidents.Update(ctx, inc.ID, func(i *incident.Incident) error {
		if i.State.Closed() {
			return nil
		}
		detail := reminderDetail(mark)
		if i.Deadline != nil {
			detail += "; deadline " + i.Deadline.UTC().Format(time.RFC3339)
		}
		if mention != "" {
			detail += "; escalated to " + mention
		}
		i.AddEntry(incident.Entry{ID: ReminderEntryID(i.ID, mark), At: now, Kind: incident.KindReminder, Actor: incident.Keywarden,
			Result: incident.ResultPosted, Detail: detail})
		return nil
	})
	if err != nil {
		o.Reason += "; not recorded on the timeline: " + err.Error()
		got = inc
	}
	rep.add(o)
	return got
}

func reminderDetail(mark time.Duration) string {
	if mark < 0 {
		return fmt.Sprintf("reminder %d: still critical, no recoverable window", -mark.Nanoseconds())
	}
	if mark == 0 {
		return "reminder: the deadline has passed"
	}
	return "reminder: less than " + mark.String() + " left"
}

// needsLookup reports whether an incident does not say who made its key unusable (no actor,
// or KMS itself, the actor of its own "KMS CMK Deletion" event) and event history was not
// asked yet. Expired imported key material is nobody's call.
func needsLookup(inc incident.Incident) bool {
	return lifecycle.ActorUnknown(inc) &&
		inc.Trigger != keyevent.DetailTypeKeyMaterialExpiration &&
		!lifecycle.LossLookedUp(inc)
}

// loss is what a look-up in event history concluded: a finding, nothing, or (zero value) no
// answer yet.
type loss struct {
	found *trail.Finding
	none  bool
}

func (l loss) apply(i *incident.Incident, now time.Time) {
	if !needsLookup(*i) {
		return
	}
	switch {
	case l.found != nil:
		lifecycle.ApplyLoss(i, lifecycle.Loss{EventName: l.found.EventName, EventID: l.found.EventID, Actor: l.found.Actor, At: l.found.At}, now)
	case l.none:
		lifecycle.ApplyNoLoss(i, now)
	}
}

// lookUp asks event history for the call that made the incident's key unusable, at most once
// per lookupClaimTTL across overlapping runs. The call happened before the incident opened, so
// the search ends a few minutes after OpenedAt. "Nothing found" is only concluded once
// historyDelay has passed since the incident opened, since event history shows a call some
// minutes after it was made.
func (r *Reconciler) lookUp(ctx context.Context, inc incident.Incident, b *budget, rep *Report) loss {
	if r.d.Trail == nil || !needsLookup(inc) || !b.spend(lookupCost) {
		return loss{}
	}
	o := Outcome{IncidentID: inc.ID, KeyARN: inc.KeyARN, Action: ActionLookedUp}
	won, err := r.d.Incidents.Claim(ctx, "trail#"+inc.ID, lookupClaimTTL)
	if err != nil {
		o.Action, o.Reason = ActionFailed, "CloudTrail look-up: "+err.Error()
		rep.add(o)
		return loss{}
	}
	if !won {
		return loss{}
	}
	fd, found, err := r.d.Trail.LastLoss(ctx, inc.KeyARN, time.Time{}, inc.OpenedAt.Add(5*time.Minute))
	switch {
	case err != nil && !errors.Is(err, trail.ErrPageLimit):
		o.Action, o.Reason = ActionFailed, "CloudTrail look-up (retried in "+lookupClaimTTL.String()+"): "+err.Error()
		rep.add(o)
		return loss{}
	case found:
		o.Reason = fmt.Sprintf("%s by %s at %s", fd.EventName, fd.Actor.Name(), fd.At.Format(time.RFC3339))
		rep.add(o)
		return loss{found: &fd}
	case r.wall().Sub(inc.OpenedAt) < historyDelay:
		return loss{}
	}
	o.Reason = "event history has no key-loss call"
	rep.add(o)
	return loss{none: true}
}

// lookUpClosed fills in the actor of a recently closed incident (a key deleted by KMS closes
// its incident as lost at once, before any run saw it open).
func (r *Reconciler) lookUpClosed(ctx context.Context, inc incident.Incident, b *budget, rep *Report) {
	l := r.lookUp(ctx, inc, b, rep)
	if l.found == nil && !l.none {
		return
	}
	now := r.now().UTC()
	got, err := r.d.Incidents.Update(ctx, inc.ID, func(i *incident.Incident) error {
		l.apply(i, now)
		return nil
	})
	if err != nil {
		rep.add(Outcome{IncidentID: inc.ID, KeyARN: inc.KeyARN, Action: ActionFailed, Reason: "record CloudTrail look-up: " + err.Error()})
		return
	}
	r.announce(ctx, got, rep)
}
