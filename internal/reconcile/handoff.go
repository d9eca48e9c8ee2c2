package reconcile

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/keywarden/keywarden/internal/handoff"
	"github.com/keywarden/keywarden/internal/incident"
)

// Starter hands an approved remediation run to RemediateFunction; invoke.Invoker fits.
type Starter interface {
	Start(ctx context.Context, req handoff.Request) error
}

// activeLister lists open and remediating incidents only; *dynamostore.Store fits. The hand-off
// pass, which runs every minute, uses it when the store has it instead of listing everything.
type activeLister interface {
	ListActive(ctx context.Context) ([]incident.Incident, error)
}

// Hand-off recovery defaults.
const (
	// handoffClaimTTL keeps two passes (the one-minute pass and the full pass, or two
	// overlapping invocations) from handing off the same attempt twice; after it a run still
	// unclaimed is handed off again.
	handoffClaimTTL = 50 * time.Second
)

// Outcome actions of the hand-off pass.
const (
	ActionHandedOff Action = "handed-off" // an approved run handed to RemediateFunction again
	ActionWatched   Action = "watched"    // a watched instance counted recovered or offered a reboot
)

// handoffs is the hand-off recovery's configuration (WithHandoff).
type handoffs struct {
	starter Starter
	grace   time.Duration
}

// WithHandoff makes every run (Run, and RunHandoffs on its own) start remediation runs that are
// approved and not started, through s, and advance the watch of instances that reported lost
// key access with the grace period (default incident.DefaultWatchGrace). It returns r.
func (r *Reconciler) WithHandoff(s Starter, grace time.Duration) *Reconciler {
	if grace <= 0 {
		grace = incident.DefaultWatchGrace
	}
	r.handoff = handoffs{starter: s, grace: grace}
	return r
}

// RunHandoffs is the hand-off pass on its own, for the one-minute schedule: it lists the active
// incidents and recovers their hand-offs (see recoverHandoffs). It makes no KMS or RDS call.
// The error is a failed listing; failures on single incidents are outcomes.
func (r *Reconciler) RunHandoffs(ctx context.Context) (Report, error) {
	var rep Report
	var all []incident.Incident
	var err error
	if al, ok := r.d.Incidents.(activeLister); ok {
		all, err = al.ListActive(ctx)
	} else {
		all, err = r.d.Incidents.List(ctx)
	}
	if err != nil {
		return rep, fmt.Errorf("hand-off pass: %w", err)
	}
	r.recoverHandoffs(ctx, all, &rep)
	return rep, nil
}

// recoverHandoffs makes sure no approved remediation is lost between the click and
// RemediateFunction, and that watched instances are decided:
//
//   - a run approved and not claimed for incident.HandOffGrace (the click's hand-off failed or its answer
//     was lost; a bounded invocation paused it), or claimed by an invocation whose lease ran out
//     (a Lambda timeout), is handed to RemediateFunction again — once per attempt across passes
//     (a store claim on the run, its attempt count and its approval time), and RemediateFunction
//     claims the run itself, so it runs once whoever hands it off;
//   - an instance that reported lost key access is counted recovered after the grace period
//     available with the key Enabled, or marked as needing its Reboot instance button
//     (incident.WatchInstances), on the statuses the last full pass or RDS event recorded.
//
// It runs before anything else in Run, so a budget spent on the inventory cannot delay it.
func (r *Reconciler) recoverHandoffs(ctx context.Context, all []incident.Incident, rep *Report) {
	if r.handoff.starter == nil && r.handoff.grace == 0 {
		return
	}
	now := r.now().UTC()
	for _, inc := range all {
		if inc.State.Closed() {
			continue
		}
		if r.handoff.starter != nil && inc.AwaitingStart(now, incident.HandOffGrace) {
			r.handOff(ctx, inc, rep)
		}
		if inc.KeyState == incident.KeyStateEnabled && inc.Watching() {
			r.watch(ctx, inc, now, rep)
		}
	}
}

func (r *Reconciler) handOff(ctx context.Context, inc incident.Incident, rep *Report) {
	o := Outcome{IncidentID: inc.ID, KeyARN: inc.KeyARN, Action: ActionHandedOff}
	rem := inc.Remediation
	approved := ""
	if rem.ApprovedAt != nil {
		approved = rem.ApprovedAt.UTC().Format(time.RFC3339Nano)
	}
	name := incident.EntryID("handoff", rem.RunID, fmt.Sprint(rem.Attempts), approved)
	ok, err := r.d.Incidents.Claim(ctx, name, handoffClaimTTL)
	switch {
	case err != nil:
		o.Action, o.Reason = ActionFailed, "hand-off claim: "+err.Error()
		rep.add(o)
		return
	case !ok:
		return // another pass handed this attempt off
	}
	req := handoff.Request{IncidentID: inc.ID, RunID: rem.RunID, ApprovedBy: rem.ApprovedBy, Source: "reconcile"}
	if len(req.ApprovedBy) == 0 {
		req.ApprovedBy = []string{incident.Keywarden}
	}
	if err := r.handoff.starter.Start(ctx, req); err != nil {
		// Let the next pass (within a minute) try again.
		if rerr := r.d.Incidents.Release(context.WithoutCancel(ctx), name); rerr != nil {
			err = errors.Join(err, rerr)
		}
		o.Action, o.Reason = ActionFailed, "hand-off: "+err.Error()
		rep.add(o)
		return
	}
	o.Reason = fmt.Sprintf("run %s was %s and not started (attempt %d); handed to RemediateFunction", rem.RunID, rem.State, rem.Attempts+1)
	rep.add(o)
}

var errUnchanged = errors.New("unchanged")

func (r *Reconciler) watch(ctx context.Context, inc incident.Incident, now time.Time, rep *Report) {
	got, err := r.d.Incidents.Update(ctx, inc.ID, func(i *incident.Incident) error {
		if i.State.Closed() || !i.WatchInstances(now, r.handoff.grace) {
			return errUnchanged
		}
		return nil
	})
	switch {
	case errors.Is(err, errUnchanged):
		return
	case err != nil:
		rep.add(Outcome{IncidentID: inc.ID, KeyARN: inc.KeyARN, Action: ActionFailed, Reason: "watch: " + err.Error()})
		return
	}
	if e, ok := got.LastEntry(incident.KindClusterChange); ok {
		rep.add(Outcome{IncidentID: inc.ID, KeyARN: inc.KeyARN, Action: ActionWatched, Reason: e.Detail})
	}
	r.announce(ctx, got, rep)
}
