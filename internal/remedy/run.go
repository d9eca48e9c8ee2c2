package remedy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	kmstypes "github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/aws-sdk-go-v2/service/rds"
	rdstypes "github.com/aws/aws-sdk-go-v2/service/rds/types"
	"github.com/aws/smithy-go"

	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/kmskey"
	"github.com/keywarden/keywarden/internal/lifecycle"
)

// Wait backoff between DescribeKey polls: KMS is eventually consistent, so a key just enabled
// may read back Disabled for a few seconds.
const (
	firstPoll = 500 * time.Millisecond
	maxPoll   = 8 * time.Second
)

// run is one execution of an incident's plan.
type run struct {
	id, runID string
	// invocation names this invocation in the run's claim.
	invocation string
	// stopBy is when the run stops starting steps or waiting (the invocation's deadline less
	// Options.StopMargin); zero when the context has no deadline.
	stopBy time.Time
	live   *live
	inc    incident.Incident // as the run found it: the accounts its steps act in (clients.go)
	// keyAccessBy is when the run stops retrying RDS calls that cannot reach the key yet; zero
	// until the first KMSKeyNotAccessibleFault.
	keyAccessBy time.Time
}

// RunID is the run a remediation of inc records its steps under: the run its approval started
// (Remediation.RunID), or, for an incident that has none (one that went remediating before runs
// had IDs, run by hand), one derived from the incident and its approval round, so that running
// it again records the same steps once.
func RunID(inc incident.Incident) string {
	if inc.Remediation.RunID != "" {
		return inc.Remediation.RunID
	}
	return incident.EntryID("run", inc.ID, fmt.Sprint(inc.ApprovalRound))
}

// Plan reads the key's and the dependents' live state into a copy of inc and returns that
// copy's plan (incident.Plan): what Run would do now. It changes nothing.
//
// It returns an error wrapping ErrNotAllowed for a key outside Options.AllowedKeys and
// ErrNotFixable (with the model's *incident.NotFixableError, which says what to do instead) for
// a key one click cannot bring back.
func (r *Runner) Plan(ctx context.Context, inc incident.Incident) ([]incident.PlannedStep, error) {
	if err := r.allowed(inc); err != nil {
		return nil, err
	}
	lv, err := r.read(ctx, inc)
	if err != nil {
		return nil, err
	}
	return plan(lv.view(inc, r.opts.Now()))
}

func (r *Runner) allowed(inc incident.Incident) error {
	if inc.KeyARN == "" {
		return fmt.Errorf("incident %s has no key ARN", inc.ID)
	}
	if r.opts.AllowedKeys != nil && !r.opts.AllowedKeys(inc.KeyARN) {
		return fmt.Errorf("key %s: %w", inc.KeyARN, ErrNotAllowed)
	}
	return nil
}

// plan is v.Plan with a NotFixableError also matching ErrNotFixable.
func plan(v incident.Incident) ([]incident.PlannedStep, error) {
	steps, err := v.Plan()
	var nf *incident.NotFixableError
	if errors.As(err, &nf) {
		return nil, fmt.Errorf("key %s: %w: %w", v.KeyARN, ErrNotFixable, nf)
	}
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", v.KeyARN, err)
	}
	return steps, nil
}

// Run remediates incident id, which an approved click moved to remediating: it reads the live
// state into a copy of the incident, plans on it (incident.Plan) and runs exactly those steps,
// recording each on the incident with its result under the run's ID (RunID). It marks the run
// running as it starts and records the live state. by names who asked for the run; the steps
// are keywarden's, and the approvers are on Remediation.ApprovedBy already.
//
// Run is safe to repeat after a crash, a timeout or Lambda's automatic retry: steps already done
// are planned as skipped, and a step is recorded once per run. Errors a retry could fix
// (throttling, a dependency down, the key not yet reading Enabled, RDS not yet reaching the
// enabled key after Options.KeyAccessTimeout) are returned and leave the run running; so is
// any KMS failure a retry may cure, since no cluster starts without its key.
//
// Everything else ends the run and gives the incident back to the approvers
// (incident.GiveBack), so the message offers the button again: a key one click cannot fix or
// outside Options.AllowedKeys (ErrNotFixable, ErrNotAllowed, before anything changes), a KMS
// failure for good, and a run that went through every step but left clusters needing attention
// (an *IncompleteError, ErrIncomplete). A cluster or instance that fails for good is recorded
// in its Step (Err) and the other clusters still run.
//
// A nil error means every cluster is started, starting, available or beyond a click's reach
// (terminal, gone, not on the key): the run is done, and the incident stays remediating until
// the lifecycle sees the clusters available. An incident not remediating is ErrNotApproved, a
// closed one ErrClosed; neither changes anything.
func (r *Runner) Run(ctx context.Context, id string, by string) (incident.Incident, []Step, error) {
	inc, err := r.store.Get(ctx, id)
	if err != nil {
		return incident.Incident{}, nil, fmt.Errorf("remediate: %w", err)
	}
	switch {
	case inc.State.Closed():
		return inc, nil, fmt.Errorf("remediate incident %s (%s): %w", id, inc.State, ErrClosed)
	case inc.State != incident.StateRemediating:
		return inc, nil, fmt.Errorf("remediate incident %s (%s): %w", id, inc.State, ErrNotApproved)
	}
	ru := r.newRun(ctx, id, RunID(inc), inc)
	if err := r.allowed(inc); err != nil {
		return r.refuse(ctx, ru, inc, nil, err)
	}
	ru.live, err = r.read(ctx, inc)
	if err != nil {
		return inc, nil, fmt.Errorf("remediate incident %s: read live state: %w", id, err)
	}
	planned, err := plan(ru.live.view(inc, r.opts.Now()))
	if errors.Is(err, ErrNotFixable) {
		return r.refuse(ctx, ru, inc, ru.live, err)
	}
	if err != nil {
		return inc, nil, fmt.Errorf("plan remediation of incident %s: %w", id, err)
	}

	// The claim: one invocation holds the run until its lease runs out, so the click's
	// hand-off, a second delivery of it and the reconciler's start run it once.
	exhausted := false
	inc, err = r.store.Update(ctx, id, func(i *incident.Incident) error {
		if err := ru.current(i); err != nil {
			return err
		}
		if i.Remediation.RunID == "" {
			i.Remediation.RunID = ru.runID
		}
		now := r.opts.Now()
		if err := i.ClaimRun(ru.runID, ru.invocation, now, r.lease(ctx)); err != nil {
			return err
		}
		ru.live.apply(i, now)
		exhausted = i.Remediation.Attempts > MaxAttempts
		return nil
	})
	switch {
	case errors.Is(err, incident.ErrRunClaimed):
		return inc, nil, fmt.Errorf("remediate incident %s: %w: %w", id, ErrClaimed, err)
	case errors.Is(err, incident.ErrRunNotCurrent):
		return inc, nil, fmt.Errorf("remediate incident %s: %w: %w", id, ErrNotApproved, err)
	case err != nil:
		return inc, nil, fmt.Errorf("start remediation of incident %s: %w", id, err)
	case exhausted:
		return r.end(ctx, ru, inc, nil, fmt.Errorf("remediate incident %s: %w after %d invocations, the last stopped at %s",
			id, ErrGaveUp, MaxAttempts, orNone(inc.Remediation.StoppedAt)))
	}

	steps := make([]Step, 0, len(planned))
	for _, ps := range planned {
		if ps.Runs() && ru.pastStop(r.opts.Now()) {
			return r.pause(ctx, ru, inc, steps, string(ps.Kind)+" "+ps.Target, nil)
		}
		s := Step{Name: ps.Kind, Target: ps.Target, Skip: ps.Skip, Settling: ps.Settling}
		var apply func(*incident.Incident, time.Time)
		var stop error
		if ps.Runs() {
			apply, stop = r.exec(ctx, ru, &s)
		} else {
			s.Result, s.Detail = incident.ResultSkipped, ps.Skip
		}
		if errors.Is(stop, errStopMargin) || (stop != nil && Retryable(stop)) {
			// Not done: nothing is recorded for the step, and the next invocation plans it
			// again from live state.
			return r.pause(ctx, ru, inc, steps, string(ps.Kind)+" "+ps.Target, stop)
		}
		steps = append(steps, s)
		rec, err := r.record(ctx, ru, s, apply)
		if err != nil {
			// The API call happened but is not recorded; the next invocation plans from live state.
			return r.pause(ctx, ru, inc, steps, string(ps.Kind)+" "+ps.Target, fmt.Errorf("record %s %s: %w", s.Name, s.Target, err))
		}
		inc = rec
		if stop != nil {
			return r.end(ctx, ru, inc, steps, fmt.Errorf("remediate incident %s: %w", id, stop))
		}
		if err := ru.current(&inc); err != nil {
			// Closed ("intentional") or given back while this ran: stop here.
			return inc, steps, fmt.Errorf("remediate incident %s: %w", id, err)
		}
	}
	if left := unfinished(steps, inc); len(left) > 0 {
		return r.end(ctx, ru, inc, steps, &IncompleteError{Incident: id, Clusters: left})
	}
	return r.end(ctx, ru, inc, steps, nil)
}

// newRun starts a run of incident id's plan under runID, as inc was found, in this invocation:
// it stops starting steps Options.StopMargin before ctx's deadline.
func (r *Runner) newRun(ctx context.Context, id, runID string, inc incident.Incident) *run {
	ru := &run{id: id, runID: runID, invocation: r.opts.Invocation(ctx), inc: inc}
	if d, ok := ctx.Deadline(); ok {
		ru.stopBy = d.Add(-r.opts.StopMargin)
	}
	return ru
}

// MaxAttempts bounds the invocations one run may take (paused, timed out, or stopped on a
// transient error); past it the incident is given back with where it last stopped.
const MaxAttempts = 6

// errStopMargin stops a step that would run into the invocation's stop margin.
var errStopMargin = errors.New("stop margin reached")

// errRetryPause marks a pause on a failure a retry may cure: Retryable says so, and Lambda's
// retry continues the run beside the reconciler (the claim keeps them from running it twice).
var errRetryPause = errors.New("a retry may cure it")

// lease is how long this invocation's claim holds: until its deadline plus LeaseSlack.
func (r *Runner) lease(ctx context.Context) time.Duration {
	if d, ok := ctx.Deadline(); ok {
		return time.Until(d) + LeaseSlack
	}
	return r.opts.Lease
}

// pastStop reports whether the run is inside its stop margin.
func (ru *run) pastStop(now time.Time) bool {
	return !ru.stopBy.IsZero() && !now.Before(ru.stopBy)
}

// until is the earlier of own and the run's stop time, and whether the stop time is it.
func (ru *run) until(own time.Time) (time.Time, bool) {
	if !ru.stopBy.IsZero() && ru.stopBy.Before(own) {
		return ru.stopBy, true
	}
	return own, false
}

// pause ends this invocation before `where` without giving the incident back: the claim is
// released and the run approved again (incident.PauseRun), so the next invocation — the
// reconciler starts one within a minute — continues from live state. Steps done are recorded
// once; the one not done is not recorded. The write runs on a context of its own, as the
// invocation's may be about to end.
func (r *Runner) pause(ctx context.Context, ru *run, inc incident.Incident, steps []Step, where string, cause error) (incident.Incident, []Step, error) {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	reason := fmt.Sprintf("%s left before the invocation's deadline", r.opts.StopMargin)
	if cause != nil && !errors.Is(cause, errStopMargin) {
		reason = "a failure a retry may cure: " + describeErr(cause)
	}
	got, err := r.store.Update(wctx, ru.id, func(i *incident.Incident) error {
		if ru.current(i) != nil || i.Remediation.ClaimedBy != ru.invocation {
			return nil
		}
		i.PauseRun(where, reason, r.opts.Now())
		return nil
	})
	if err == nil {
		inc = got
	}
	why := fmt.Errorf("remediate incident %s: %w: stopped at %s", ru.id, ErrPaused, where)
	if cause != nil && !errors.Is(cause, errStopMargin) {
		why = fmt.Errorf("%w (%w: %w)", why, errRetryPause, cause)
	}
	return inc, steps, why
}

func orNone(s string) string {
	if s == "" {
		return "any step"
	}
	return s
}

// current checks that i is still remediating under the run.
func (ru *run) current(i *incident.Incident) error {
	switch {
	case i.State.Closed():
		return fmt.Errorf("incident %s is %s: %w", i.ID, i.State, ErrClosed)
	case i.State != incident.StateRemediating:
		return fmt.Errorf("incident %s is %s: %w", i.ID, i.State, ErrNotApproved)
	case i.Remediation.RunID != "" && i.Remediation.RunID != ru.runID:
		return fmt.Errorf("incident %s is remediating under run %s, not %s: %w", i.ID, i.Remediation.RunID, ru.runID, ErrNotApproved)
	}
	return nil
}

// refuse ends a run that may not start: the live state read, if any, is recorded, and the
// incident is given back saying why.
func (r *Runner) refuse(ctx context.Context, ru *run, inc incident.Incident, lv *live, cause error) (incident.Incident, []Step, error) {
	why := "remediation refused: " + cause.Error()
	var nf *incident.NotFixableError
	if errors.As(cause, &nf) {
		why = "remediation refused: " + nf.Instead
	}
	got, err := r.store.Update(ctx, ru.id, func(i *incident.Incident) error {
		if ru.current(i) != nil {
			return nil
		}
		now := r.opts.Now()
		if lv != nil {
			lv.apply(i, now)
		}
		return i.GiveBack(why, now)
	})
	if err != nil {
		return inc, nil, fmt.Errorf("remediate incident %s: %w (%w: %w)", ru.id, cause, ErrUnrecorded, err)
	}
	return got, nil, fmt.Errorf("remediate incident %s: %w", ru.id, cause)
}

// end closes the run: done when cause is nil, left running for Lambda's retry when a retry
// could help, given back to the approvers otherwise.
func (r *Runner) end(ctx context.Context, ru *run, inc incident.Incident, steps []Step, cause error) (incident.Incident, []Step, error) {
	why := ""
	var ie *IncompleteError
	switch {
	case errors.As(cause, &ie):
		why = "remediation finished, but clusters still need attention: " + ie.Attention() + "; remediate once they are fixed or have settled"
	case cause != nil:
		why = "remediation stopped: " + cause.Error()
	}
	got, err := r.store.Update(ctx, ru.id, func(i *incident.Incident) error {
		if ru.current(i) != nil {
			return nil
		}
		if cause == nil {
			i.Remediation.State = incident.RemediationDone
			i.Remediation.ClaimedBy, i.Remediation.LeaseUntil = "", nil
			// The watch of instances that lost the key starts now the key is back.
			i.WatchInstances(r.opts.Now(), r.opts.WatchGrace)
			return nil
		}
		return i.GiveBack(why, r.opts.Now())
	})
	if err != nil {
		unrecorded := fmt.Errorf("finish remediation of incident %s: %w: %w", ru.id, ErrUnrecorded, err)
		if cause == nil {
			return inc, steps, unrecorded
		}
		return inc, steps, fmt.Errorf("%w (%w)", cause, unrecorded)
	}
	return got, steps, cause
}

// unfinished lists, in plan order, the clusters a finished run leaves for a person or a later
// click: a start or a member's reboot that failed for good, or a start skipped until the
// cluster's status settles.
func unfinished(steps []Step, inc incident.Incident) []Unfinished {
	var out []Unfinished
	for _, s := range steps {
		switch {
		case s.Name == incident.StepStartDBCluster && s.Err != nil:
			out = append(out, Unfinished{Cluster: s.Target, Reason: "StartDBCluster failed: " + s.Detail})
		case s.Name == incident.StepStartDBCluster && s.Settling:
			out = append(out, Unfinished{Cluster: s.Target, Reason: s.Skip})
		case s.Name == incident.StepRebootDBInstance && s.Err != nil:
			cluster := s.Target
			if k := slices.IndexFunc(inc.Instances, func(in incident.Instance) bool { return in.Identifier == s.Target }); k >= 0 {
				cluster = inc.Instances[k].ClusterIdentifier
			}
			out = append(out, Unfinished{Cluster: cluster, Reason: "RebootDBInstance " + s.Target + " failed: " + s.Detail})
		}
	}
	return out
}

// record records one step on the incident (incident.RecordStep), applying apply to it in the
// same write. A step is recorded once per run: a step that stops the run for a retry is not
// recorded at all (Run pauses instead), and the next invocation plans it again.
func (r *Runner) record(ctx context.Context, ru *run, s Step, apply func(*incident.Incident, time.Time)) (incident.Incident, error) {
	now := r.opts.Now().UTC()
	rec := ru.stepRecord(s, now)
	return r.store.Update(ctx, ru.id, func(i *incident.Incident) error {
		if apply != nil {
			apply(i, now)
			lifecycle.MarkClusters(i, now)
		}
		i.RecordStep(rec)
		return nil
	})
}

// stepRecord is s as the incident records it under the run's ID, with the account it acted in
// when the incident spans an organisation.
func (ru *run) stepRecord(s Step, at time.Time) incident.StepRecord {
	rec := incident.StepRecord{
		ID:   incident.StepID(ru.runID, s.Name, s.Target),
		Kind: s.Name, Target: s.Target, Result: s.Result, Detail: s.Detail, At: at,
	}
	if ru.inc.Organization {
		rec.Account = stepAccount(ru.inc, s)
	}
	return rec
}

// exec runs one step, fills its Result, Detail and Err, and returns the change it makes to the
// incident. A non-nil stop ends the run: any KMS failure, and any transient RDS failure.
func (r *Runner) exec(ctx context.Context, ru *run, s *Step) (apply func(*incident.Incident, time.Time), stop error) {
	ctx = inAccount(ctx, stepAccount(ru.inc, *s), ru.inc.KeyARN)
	var err error
	switch s.Name {
	case incident.StepCancelKeyDeletion:
		apply, err = r.cancelDeletion(ctx, ru, s)
	case incident.StepEnableKey:
		apply, err = r.enableKey(ctx, ru, s)
	case incident.StepWaitEnabled:
		apply, err = r.waitEnabled(ctx, ru, s)
	case incident.StepStartDBCluster:
		apply, err = r.startCluster(ctx, ru, s)
	case incident.StepRebootDBInstance:
		apply, err = r.rebootInstance(ctx, ru, s)
	default:
		err = fmt.Errorf("unknown step %q", s.Name)
	}
	if err == nil {
		s.Result = incident.ResultOK
		return apply, nil
	}
	s.Err, s.Result = err, incident.ResultFailed
	if s.Detail == "" {
		s.Detail = describeErr(err)
	}
	switch s.Name {
	case incident.StepStartDBCluster, incident.StepRebootDBInstance:
		if !transient(err) {
			// One cluster's permanent failure must not keep the others down.
			return apply, nil
		}
	}
	return apply, fmt.Errorf("%s %s: %w", s.Name, s.Target, err)
}

func (r *Runner) cancelDeletion(ctx context.Context, ru *run, s *Step) (func(*incident.Incident, time.Time), error) {
	_, err := r.kms.CancelKeyDeletion(ctx, &kms.CancelKeyDeletionInput{KeyId: aws.String(ru.live.keyID)})
	var invalid *kmstypes.KMSInvalidStateException
	if errors.As(err, &invalid) {
		// Refused because the key is no longer pending deletion: someone (or a run that crashed
		// before recording) cancelled it already.
		md, derr := describeKey(ctx, r.kms, s.Target)
		if derr == nil && !incident.KeyState(md.KeyState).PendingDeletion() {
			s.Detail = "already cancelled (key " + string(md.KeyState) + ")"
			return setKey(incident.KeyState(md.KeyState)), nil
		}
	}
	if err != nil {
		return nil, err
	}
	// CancelKeyDeletion leaves the key Disabled; EnableKey comes next.
	return setKey(incident.KeyStateDisabled), nil
}

// enableKey calls EnableKey, retrying KMSInvalidStateException and NotFoundException with
// backoff for Options.ConsistencyTimeout: right after CancelKeyDeletion KMS may still answer
// as if the key were pending deletion, or not find it, until the change has propagated
// (https://docs.aws.amazon.com/kms/latest/developerguide/programming-eventual-consistency.html).
// EnableKey on an enabled key succeeds, so a repeat is harmless.
func (r *Runner) enableKey(ctx context.Context, ru *run, s *Step) (func(*incident.Incident, time.Time), error) {
	attempts, err := r.untilConsistent(ctx, ru, s, func() error {
		_, err := r.kms.EnableKey(ctx, &kms.EnableKeyInput{KeyId: aws.String(ru.live.keyID)})
		return err
	})
	if err == nil && attempts > 1 {
		s.Detail = fmt.Sprintf("ok on attempt %d (KMS was still propagating the cancelled deletion)", attempts)
	}
	return nil, err
}

// untilConsistent calls call until it does not fail with KMS's eventual-consistency errors,
// for at most Options.ConsistencyTimeout, with backoff, and never into the run's stop margin
// (then errStopMargin). It returns the attempts made; past the timeout, the last error, with
// s.Detail saying so.
func (r *Runner) untilConsistent(ctx context.Context, ru *run, s *Step, call func() error) (int, error) {
	deadline, byStop := ru.until(r.opts.Now().Add(r.opts.ConsistencyTimeout))
	backoff := firstPoll
	for attempt := 1; ; attempt++ {
		err := call()
		if err == nil || !kmsInconsistent(err) {
			return attempt, err
		}
		left := deadline.Sub(r.opts.Now())
		if left <= 0 {
			if byStop {
				return attempt, errStopMargin
			}
			s.Detail = fmt.Sprintf("%s (retried for %s: KMS did not settle)", describeErr(err), r.opts.ConsistencyTimeout)
			return attempt, err
		}
		if err := r.opts.Sleep(ctx, min(backoff, left)); err != nil {
			return attempt, err
		}
		backoff = min(2*backoff, maxPoll)
	}
}

// kmsInconsistent reports whether err is one KMS answers while a change propagates.
func kmsInconsistent(err error) bool {
	var invalid *kmstypes.KMSInvalidStateException
	var nf *kmstypes.NotFoundException
	return errors.As(err, &invalid) || errors.As(err, &nf)
}

// waitEnabled polls DescribeKey with backoff until the key reads Enabled, for at most
// WaitTimeout (and never into the run's stop margin). StartDBCluster on a key that RDS still
// sees as disabled would fail or leave the cluster inaccessible, so the clusters wait for KMS
// to agree. A NotFoundException while KMS propagates is retried like a state not yet Enabled.
func (r *Runner) waitEnabled(ctx context.Context, ru *run, s *Step) (func(*incident.Incident, time.Time), error) {
	deadline, byStop := ru.until(r.opts.Now().Add(r.opts.WaitTimeout))
	backoff := firstPoll
	for {
		state := kmstypes.KeyState("NotFound")
		md, err := describeKey(ctx, r.kms, s.Target)
		switch {
		case err != nil && !kmsInconsistent(err):
			return nil, err
		case err == nil && md.KeyState == kmstypes.KeyStateEnabled:
			return setKey(incident.KeyStateEnabled), nil
		case err == nil:
			state = md.KeyState
		}
		left := deadline.Sub(r.opts.Now())
		if left <= 0 {
			if byStop {
				return nil, errStopMargin
			}
			s.Detail = fmt.Sprintf("timed out after %s: key still %s", r.opts.WaitTimeout, state)
			if err != nil {
				return nil, fmt.Errorf("key %s not found after %s: %w", s.Target, r.opts.WaitTimeout, err)
			}
			return setKey(incident.KeyState(state)), fmt.Errorf("key %s still %s after %s", s.Target, state, r.opts.WaitTimeout)
		}
		if err := r.opts.Sleep(ctx, min(backoff, left)); err != nil {
			return nil, err
		}
		backoff = min(2*backoff, maxPoll)
	}
}

// untilKeyReachable calls call again, with backoff, while RDS answers KMSKeyNotAccessibleFault:
// right after EnableKey, KMS is eventually consistent and RDS may not reach a key that
// DescribeKey already calls Enabled. The retries share one budget per run
// (Options.KeyAccessTimeout from the first such fault), so many clusters cannot add up past the
// function's timeout. Past the budget the fault is returned, with s.Detail saying so; it is
// transient, so the run stops and Lambda runs it again.
func (r *Runner) untilKeyReachable(ctx context.Context, ru *run, s *Step, call func() error) error {
	backoff := firstPoll
	for {
		err := call()
		if !keyNotAccessible(err) {
			return err
		}
		now := r.opts.Now()
		if ru.keyAccessBy.IsZero() {
			ru.keyAccessBy = now.Add(r.opts.KeyAccessTimeout)
		}
		until, byStop := ru.until(ru.keyAccessBy)
		left := until.Sub(now)
		if left <= 0 && byStop {
			return errStopMargin
		}
		if left <= 0 || r.opts.Sleep(ctx, min(backoff, left)) != nil {
			s.Detail = fmt.Sprintf("%s (RDS cannot reach the key yet; retried for %s, will run again)",
				describeErr(err), r.opts.KeyAccessTimeout)
			return err
		}
		backoff = min(2*backoff, maxPoll)
	}
}

// keyNotAccessible reports whether RDS could not reach the KMS key.
func keyNotAccessible(err error) bool {
	var ae smithy.APIError
	return errors.As(err, &ae) && ae.ErrorCode() == codeKMSKeyNotAccessible
}

const codeKMSKeyNotAccessible = "KMSKeyNotAccessibleFault"

func (r *Runner) startCluster(ctx context.Context, ru *run, s *Step) (func(*incident.Incident, time.Time), error) {
	var out *rds.StartDBClusterOutput
	err := r.untilKeyReachable(ctx, ru, s, func() (err error) {
		out, err = r.rds.StartDBCluster(ctx, &rds.StartDBClusterInput{DBClusterIdentifier: aws.String(s.Target)})
		return err
	})
	var invalid *rdstypes.InvalidDBClusterStateFault
	if errors.As(err, &invalid) {
		// StartDBCluster refuses a cluster that is not stopped or recoverable. If that is
		// because it is already starting or running (a concurrent run, or one that crashed
		// before recording), the step is done.
		status, derr := clusterStatus(ctx, r.rds, s.Target)
		if derr == nil && (status == incident.StatusStarting || status == incident.StatusAvailable) {
			s.Detail = "already " + string(status)
			return started(s.Target, status), nil
		}
	}
	if err != nil {
		return nil, err
	}
	status := incident.StatusStarting
	if out.DBCluster != nil && out.DBCluster.Status != nil {
		status = incident.ClusterStatus(*out.DBCluster.Status)
	}
	return started(s.Target, status), nil
}

func (r *Runner) rebootInstance(ctx context.Context, ru *run, s *Step) (func(*incident.Incident, time.Time), error) {
	var out *rds.RebootDBInstanceOutput
	err := r.untilKeyReachable(ctx, ru, s, func() (err error) {
		out, err = r.rds.RebootDBInstance(ctx, &rds.RebootDBInstanceInput{DBInstanceIdentifier: aws.String(s.Target)})
		return err
	})
	var invalid *rdstypes.InvalidDBInstanceStateFault
	if errors.As(err, &invalid) {
		status, derr := instanceStatus(ctx, r.rds, s.Target)
		if derr == nil && status == incident.StatusRebooting {
			s.Detail = "already rebooting"
			return rebooted(s.Target, status), nil
		}
	}
	if err != nil {
		return nil, err
	}
	status := incident.StatusRebooting
	if out.DBInstance != nil && out.DBInstance.DBInstanceStatus != nil {
		status = incident.ClusterStatus(*out.DBInstance.DBInstanceStatus)
	}
	return rebooted(s.Target, status), nil
}

// setKey records the key state a step left, by lifecycle's key rule.
func setKey(state incident.KeyState) func(*incident.Incident, time.Time) {
	return func(i *incident.Incident, now time.Time) {
		lifecycle.SetKey(i, kmskey.Key{ARN: i.KeyARN, State: state, DeletionDate: i.KeyDeletionDate}, source, now)
	}
}

// started records a cluster StartDBCluster accepted. Starting brings every member instance up
// against the key again, so none of them still "lost key access": without clearing that, the
// incident would wait for an RDS-EVENT-0420 that RDS may never send.
func started(id string, status incident.ClusterStatus) func(*incident.Incident, time.Time) {
	return func(i *incident.Incident, now time.Time) {
		lifecycle.SetClusterStatus(i, id, status, source, now)
		for k := range i.Instances {
			if i.Instances[k].ClusterIdentifier == id {
				i.Instances[k].LostKeyAccess = false
			}
		}
	}
}

// rebooted records an instance RebootDBInstance accepted (the Reboot instance button). It is
// not assumed recovered: its watch starts again, and it counts as recovered on RDS-EVENT-0420
// or after the grace period available with the key Enabled.
func rebooted(id string, status incident.ClusterStatus) func(*incident.Incident, time.Time) {
	return func(i *incident.Incident, _ time.Time) {
		lifecycle.SetInstanceStatus(i, id, status)
		for k := range i.Instances {
			if in := &i.Instances[k]; in.Identifier == id {
				in.NeedsReboot, in.WatchSince, in.AvailableSince = false, nil, nil
			}
		}
	}
}

// Retryable reports whether running again could help after Run returned err: throttling, a
// service fault or outage, a key that did not yet read Enabled, or RDS not yet reaching it (a
// run paused on one of those is Retryable; one paused only by its stop margin is not). It
// is false for a closed or unapproved incident, a key one click cannot fix or that is not
// allowed, a run that finished incomplete (ErrIncomplete), and for AWS refusals such as AccessDenied, which need a
// person.
func Retryable(err error) bool {
	if errors.Is(err, ErrPaused) {
		return errors.Is(err, errRetryPause)
	}
	if err == nil || errors.Is(err, ErrNotFixable) || errors.Is(err, ErrNotAllowed) || errors.Is(err, ErrClosed) ||
		errors.Is(err, ErrNotApproved) || errors.Is(err, ErrIncomplete) || errors.Is(err, ErrClaimed) || errors.Is(err, ErrGaveUp) {
		return false
	}
	return transient(err)
}

// transient reports whether a retry could succeed: throttling, a server-side fault, no answer
// from the service at all, or RDS not reaching a KMS key (KMSKeyNotAccessibleFault, a client
// fault in the SDK, but after EnableKey a matter of KMS's eventual consistency).
func transient(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	if retry.IsErrorThrottles(retry.DefaultThrottles).IsErrorThrottle(err) == aws.TrueTernary {
		return true
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) && (re.HTTPStatusCode() >= 500 || re.HTTPStatusCode() == 429) {
		return true
	}
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		return true
	}
	if ae.ErrorFault() == smithy.FaultServer {
		return true
	}
	switch ae.ErrorCode() {
	case "RequestTimeout", "RequestTimeoutException", "DependencyTimeoutException", "KMSInternalException",
		codeKMSKeyNotAccessible:
		return true
	}
	return false
}

// describeErr is an error as the timeline shows it: the AWS error code and message when there
// is one ("InvalidDBClusterStateFault: …").
func describeErr(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode() + ": " + ae.ErrorMessage()
	}
	return err.Error()
}
