package remedy

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/keywarden/keywarden/internal/incident"
)

// Reboot runs the approved reboot of one instance, the Reboot instance button's run: never
// part of the one click. It claims the reboot (incident.ClaimReboot: a second delivery does
// nothing), reads the live state — the key, the instance's status and its cluster's storage
// key — and calls RebootDBInstance only when incident.RebootPlan still allows it on that live
// view: the key Enabled, the instance running and still marked as needing it, and its cluster's
// live storage key the incident's (an instance re-created on another key is skipped and
// recorded). The step is recorded under runID and the reboot ends done or failed (its button
// returns). Errors: ErrClaimed, ErrNotApproved, the AWS error of a failed read or reboot, or
// ErrUnrecorded when the reboot's end could not be written (the reboot then still reads running).
func (r *Runner) Reboot(ctx context.Context, id, instance, runID string) (incident.Incident, []Step, error) {
	inc, err := r.store.Update(ctx, id, func(i *incident.Incident) error { return i.ClaimReboot(instance, runID) })
	switch {
	case errors.Is(err, incident.ErrRunClaimed):
		return inc, nil, fmt.Errorf("reboot %s of incident %s: %w: %w", instance, id, ErrClaimed, err)
	case errors.Is(err, incident.ErrRunNotCurrent):
		return inc, nil, fmt.Errorf("reboot %s of incident %s: %w: %w", instance, id, ErrNotApproved, err)
	case err != nil:
		return inc, nil, fmt.Errorf("reboot %s of incident %s: %w", instance, id, err)
	}
	ru := r.newRun(ctx, id, runID, inc)
	s := Step{Name: incident.StepRebootDBInstance, Target: instance}
	var apply func(*incident.Incident, time.Time)
	var runErr error
	if err := r.allowed(inc); err != nil {
		s.Skip, runErr = err.Error(), err
	} else if ru.live, err = r.read(ctx, inc); err != nil {
		s.Skip, runErr = "could not read the live state: "+describeErr(err), err
	} else {
		v := ru.live.view(inc, r.opts.Now())
		if p := v.RebootPlan(instance); !p.Runs() {
			s.Skip = p.Skip
		}
	}
	if s.Skip != "" {
		s.Result, s.Detail = incident.ResultSkipped, s.Skip
	} else {
		apply, runErr = r.exec(ctx, ru, &s)
		if runErr == nil && s.Err != nil {
			runErr = s.Err
		}
	}
	now := r.opts.Now().UTC()
	rec := ru.stepRecord(s, now)
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	got, err := r.store.Update(wctx, id, func(i *incident.Incident) error {
		if ru.live != nil {
			ru.live.apply(i, now)
		}
		if apply != nil {
			apply(i, now)
		}
		i.RecordStep(rec)
		i.EndReboot(instance, s.Result == incident.ResultOK)
		return nil
	})
	if err != nil {
		return inc, []Step{s}, fmt.Errorf("record reboot %s of incident %s: %w: %w", instance, id, ErrUnrecorded, err)
	}
	return got, []Step{s}, runErr
}
