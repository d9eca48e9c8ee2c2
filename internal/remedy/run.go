package remedy

import (
	"context"
	"errors"
	"fmt"
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
)

const resultOK = "ok"

// Wait backoff between DescribeKey polls: KMS is eventually consistent, so a key just enabled
// may read back Disabled for a few seconds.
const (
	firstPoll = 500 * time.Millisecond
	maxPoll   = 8 * time.Second
)

// Run plans incident id's remediation from live state and executes it on behalf of by (the
// approver or approvers), recording one timeline entry per step with its result. It moves an
// open incident to remediating and copies the live key state and cluster and instance statuses
// onto the incident.
//
// Run is safe to repeat after a crash, a timeout or Lambda's automatic retry: steps already done
// are planned as skipped and recorded as such. Errors a retry could fix (throttling, a
// dependency down, the key not yet reading Enabled, RDS not yet reaching the enabled key after
// Options.KeyAccessTimeout) are returned; so is any KMS failure, since no cluster starts without
// its key. A cluster or instance that fails for good is recorded in its Step (Err) and on the
// timeline, and the other clusters still run; once all have run, Run returns an
// *IncompleteError (ErrIncomplete) naming those clusters and the ones whose status made it skip
// them until they settle. A key one click cannot fix, or one outside Options.AllowedKeys, is
// recorded and returned as ErrNotFixable or ErrNotAllowed before anything changes.
//
// A nil error means every cluster is started, starting, available or beyond a click's reach
// (terminal, gone, not on the key); the incident stays remediating until the clusters read
// available.
func (r *Runner) Run(ctx context.Context, id string, by string) (incident.Incident, []Step, error) {
	inc, err := r.store.Get(ctx, id)
	if err != nil {
		return incident.Incident{}, nil, fmt.Errorf("remediate: %w", err)
	}
	if inc.State.Closed() {
		return inc, nil, fmt.Errorf("remediate incident %s (%s): %w", id, inc.State, ErrClosed)
	}
	p, err := r.plan(ctx, inc)
	if errors.Is(err, ErrNotFixable) || errors.Is(err, ErrNotAllowed) {
		// Permanent: say so on the timeline, so whoever clicked sees why nothing happened.
		if rec, uerr := r.record(ctx, id, by, "remediation refused: "+err.Error(), nil); uerr == nil {
			inc = rec
		}
		return inc, nil, fmt.Errorf("remediate incident %s: %w", id, err)
	}
	if err != nil {
		return inc, nil, fmt.Errorf("plan remediation of incident %s: %w", id, err)
	}

	started, err := r.store.Update(ctx, id, func(i *incident.Incident) error {
		if i.State.Closed() {
			return ErrClosed
		}
		if i.State == incident.StateOpen {
			i.State = incident.StateRemediating
		}
		p.applyLive(i)
		return nil
	})
	if err != nil {
		return inc, nil, fmt.Errorf("start remediation of incident %s: %w", id, err)
	}
	inc = started

	for i := range p.steps {
		s := &p.steps[i]
		var apply func(*incident.Incident)
		var stop error
		if s.Skip != "" {
			s.Result = "skipped: " + s.Skip
		} else {
			apply, stop = r.exec(ctx, p, s)
		}
		rec, err := r.record(ctx, id, by, s.Name+" "+s.Target+" → "+s.Result, apply)
		if err != nil {
			// The API call happened but is not recorded; a retry re-plans from live state.
			return inc, p.steps[:i+1], fmt.Errorf("record %s %s on incident %s: %w", s.Name, s.Target, id, err)
		}
		inc = rec
		if stop != nil {
			return inc, p.steps[:i+1], fmt.Errorf("remediate incident %s: %w", id, stop)
		}
		if inc.State.Closed() {
			// Someone closed the incident (for example "intentional") while this ran.
			return inc, p.steps[:i+1], fmt.Errorf("remediate incident %s (%s): %w", id, inc.State, ErrClosed)
		}
	}
	if left := p.unfinished(); len(left) > 0 {
		return inc, p.steps, &IncompleteError{Incident: id, Clusters: left}
	}
	return inc, p.steps, nil
}

// unfinished lists, in plan order, the clusters a finished run leaves for a person or a later
// click: a start or a member's reboot that failed for good, or a start skipped until the
// cluster's status settles.
func (p *plan) unfinished() []Unfinished {
	var out []Unfinished
	for _, s := range p.steps {
		switch {
		case s.Name == StepStartDBCluster && s.Err != nil:
			out = append(out, Unfinished{Cluster: s.Target, Reason: "StartDBCluster failed: " + s.Result})
		case s.Name == StepStartDBCluster && p.unsettled[s.Target] != "":
			out = append(out, Unfinished{Cluster: s.Target, Reason: p.unsettled[s.Target]})
		case s.Name == StepRebootDBInstance && s.Err != nil:
			out = append(out, Unfinished{Cluster: p.instanceCluster[s.Target],
				Reason: "RebootDBInstance " + s.Target + " failed: " + s.Result})
		}
	}
	return out
}

// record adds one remediation entry to the timeline, applying apply to the incident in the
// same write.
func (r *Runner) record(ctx context.Context, id, by, detail string, apply func(*incident.Incident)) (incident.Incident, error) {
	return r.store.Update(ctx, id, func(i *incident.Incident) error {
		if apply != nil {
			apply(i)
		}
		i.Timeline = append(i.Timeline, incident.Entry{
			At:     r.opts.Now().UTC(),
			Kind:   incident.KindRemediation,
			Actor:  by,
			Detail: detail,
		})
		return nil
	})
}

// exec runs one step, fills its Result and Err, and returns the change it makes to the
// incident. A non-nil stop ends the run: any KMS failure, and any transient RDS failure.
func (r *Runner) exec(ctx context.Context, p *plan, s *Step) (apply func(*incident.Incident), stop error) {
	var err error
	switch s.Name {
	case StepCancelKeyDeletion:
		apply, err = r.cancelDeletion(ctx, p, s)
	case StepEnableKey:
		apply, err = r.enableKey(ctx, p, s)
	case StepWaitEnabled:
		apply, err = r.waitEnabled(ctx, s)
	case StepStartDBCluster:
		apply, err = r.startCluster(ctx, p, s)
	case StepRebootDBInstance:
		apply, err = r.rebootInstance(ctx, p, s)
	default:
		err = fmt.Errorf("unknown step %q", s.Name)
	}
	if err == nil {
		return apply, nil
	}
	s.Err = err
	if s.Result == "" {
		s.Result = describeErr(err)
	}
	switch s.Name {
	case StepStartDBCluster, StepRebootDBInstance:
		if !transient(err) {
			// One cluster's permanent failure must not keep the others down.
			return apply, nil
		}
	}
	return apply, fmt.Errorf("%s %s: %w", s.Name, s.Target, err)
}

func (r *Runner) cancelDeletion(ctx context.Context, p *plan, s *Step) (func(*incident.Incident), error) {
	_, err := r.kms.CancelKeyDeletion(ctx, &kms.CancelKeyDeletionInput{KeyId: aws.String(p.keyID)})
	var invalid *kmstypes.KMSInvalidStateException
	if errors.As(err, &invalid) {
		// Refused because the key is no longer pending deletion: someone (or a run that crashed
		// before recording) cancelled it already.
		md, derr := describeKey(ctx, r.kms, s.Target)
		if derr == nil && md.KeyState != kmstypes.KeyStatePendingDeletion && md.KeyState != kmstypes.KeyStatePendingReplicaDeletion {
			s.Result = "already cancelled (key " + string(md.KeyState) + ")"
			return setKey(string(md.KeyState)), nil
		}
	}
	if err != nil {
		return nil, err
	}
	s.Result = resultOK
	// CancelKeyDeletion leaves the key Disabled; EnableKey comes next.
	return setKey(string(kmstypes.KeyStateDisabled)), nil
}

func (r *Runner) enableKey(ctx context.Context, p *plan, s *Step) (func(*incident.Incident), error) {
	// EnableKey on an enabled key succeeds, so a repeat is harmless.
	if _, err := r.kms.EnableKey(ctx, &kms.EnableKeyInput{KeyId: aws.String(p.keyID)}); err != nil {
		return nil, err
	}
	s.Result = resultOK
	return nil, nil
}

// waitEnabled polls DescribeKey with backoff until the key reads Enabled, for at most
// WaitTimeout. StartDBCluster on a key that RDS still sees as disabled would fail or leave the
// cluster inaccessible, so the clusters wait for KMS to agree.
func (r *Runner) waitEnabled(ctx context.Context, s *Step) (func(*incident.Incident), error) {
	start := r.opts.Now()
	deadline := start.Add(r.opts.WaitTimeout)
	backoff := firstPoll
	for {
		md, err := describeKey(ctx, r.kms, s.Target)
		if err != nil {
			return nil, err
		}
		if md.KeyState == kmstypes.KeyStateEnabled {
			s.Result = resultOK
			return setKey(string(kmstypes.KeyStateEnabled)), nil
		}
		left := deadline.Sub(r.opts.Now())
		if left <= 0 {
			s.Result = fmt.Sprintf("timed out after %s: key still %s", r.opts.WaitTimeout, md.KeyState)
			return setKey(string(md.KeyState)), fmt.Errorf("key %s still %s after %s", s.Target, md.KeyState, r.opts.WaitTimeout)
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
// function's timeout. Past the budget the fault is returned, with s.Result saying so; it is
// transient, so the run stops and Lambda runs it again.
func (r *Runner) untilKeyReachable(ctx context.Context, p *plan, s *Step, call func() error) error {
	backoff := firstPoll
	for {
		err := call()
		if !keyNotAccessible(err) {
			return err
		}
		now := r.opts.Now()
		if p.keyAccessBy.IsZero() {
			p.keyAccessBy = now.Add(r.opts.KeyAccessTimeout)
		}
		left := p.keyAccessBy.Sub(now)
		if left <= 0 || r.opts.Sleep(ctx, min(backoff, left)) != nil {
			s.Result = fmt.Sprintf("%s (RDS cannot reach the key yet; retried for %s, will run again)",
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

func (r *Runner) startCluster(ctx context.Context, p *plan, s *Step) (func(*incident.Incident), error) {
	var out *rds.StartDBClusterOutput
	err := r.untilKeyReachable(ctx, p, s, func() (err error) {
		out, err = r.rds.StartDBCluster(ctx, &rds.StartDBClusterInput{DBClusterIdentifier: aws.String(s.Target)})
		return err
	})
	var invalid *rdstypes.InvalidDBClusterStateFault
	if errors.As(err, &invalid) {
		// StartDBCluster refuses a cluster that is not stopped or recoverable. If that is
		// because it is already starting or running (a concurrent run, or one that crashed
		// before recording), the step is done.
		status, derr := clusterStatus(ctx, r.rds, s.Target)
		if derr == nil && (status == statusStarting || status == statusAvailable) {
			s.Result = "already " + status
			return started(s.Target, status), nil
		}
	}
	if err != nil {
		return nil, err
	}
	s.Result = resultOK
	status := statusStarting
	if out.DBCluster != nil && out.DBCluster.Status != nil {
		status = *out.DBCluster.Status
	}
	return started(s.Target, status), nil
}

func (r *Runner) rebootInstance(ctx context.Context, p *plan, s *Step) (func(*incident.Incident), error) {
	var out *rds.RebootDBInstanceOutput
	err := r.untilKeyReachable(ctx, p, s, func() (err error) {
		out, err = r.rds.RebootDBInstance(ctx, &rds.RebootDBInstanceInput{DBInstanceIdentifier: aws.String(s.Target)})
		return err
	})
	var invalid *rdstypes.InvalidDBInstanceStateFault
	if errors.As(err, &invalid) {
		status, derr := instanceStatus(ctx, r.rds, s.Target)
		if derr == nil && status == statusRebooting {
			s.Result = "already rebooting"
			return rebooted(s.Target, status), nil
		}
	}
	if err != nil {
		return nil, err
	}
	s.Result = resultOK
	status := statusRebooting
	if out.DBInstance != nil && out.DBInstance.DBInstanceStatus != nil {
		status = *out.DBInstance.DBInstanceStatus
	}
	return rebooted(s.Target, status), nil
}

// applyLive copies what the plan read from AWS onto the incident.
func (p *plan) applyLive(i *incident.Incident) {
	setKey(p.keyState)(i)
	if p.keyState == string(kmstypes.KeyStatePendingDeletion) {
		i.KeyDeletionDate = p.deletionDate
	}
	for id, status := range p.clusters {
		if status != "" {
			setCluster(id, status)(i)
		}
	}
	for id, status := range p.instances {
		if status != "" {
			setInstance(id, status)(i)
		}
	}
}

// setKey records the key's state. Only PendingDeletion has a deletion date; once the key is
// anything else the deadline it set is gone.
func setKey(state string) func(*incident.Incident) {
	return func(i *incident.Incident) {
		i.KeyState = state
		if state != string(kmstypes.KeyStatePendingDeletion) {
			i.KeyDeletionDate = nil
		}
		markClusters(i)
	}
}

func setCluster(id, status string) func(*incident.Incident) {
	return func(i *incident.Incident) {
		for k := range i.Clusters {
			if i.Clusters[k].Identifier == id {
				i.Clusters[k].Status = status
			}
		}
		markClusters(i)
	}
}

func setInstance(id, status string) func(*incident.Incident) {
	return func(i *incident.Incident) {
		for k := range i.Instances {
			if i.Instances[k].Identifier == id {
				i.Instances[k].Status = status
			}
		}
	}
}

// started records a cluster StartDBCluster accepted. Starting brings every member instance up
// against the key again, so none of them still "lost key access": without clearing that, the
// incident would wait for an RDS-EVENT-0420 that RDS may never send.
func started(id, status string) func(*incident.Incident) {
	return func(i *incident.Incident) {
		setCluster(id, status)(i)
		for k := range i.Instances {
			if i.Instances[k].ClusterIdentifier == id {
				i.Instances[k].LostKeyAccess = false
			}
		}
	}
}

// rebooted records an instance RebootDBInstance accepted: it reconnects to the key.
func rebooted(id, status string) func(*incident.Incident) {
	return func(i *incident.Incident) {
		setInstance(id, status)(i)
		for k := range i.Instances {
			if i.Instances[k].Identifier == id {
				i.Instances[k].LostKeyAccess = false
			}
		}
	}
}

// markClusters sets Recovered on clusters available with the key Enabled and Lost on clusters
// in the terminal state, as the model defines them, and recomputes the deadlines that follow.
func markClusters(i *incident.Incident) {
	for k := range i.Clusters {
		c := &i.Clusters[k]
		switch {
		case c.Status == statusTerminal:
			c.Lost = true
		case c.Status == statusAvailable && i.KeyState == string(kmstypes.KeyStateEnabled):
			c.Recovered = true
		}
	}
	i.RecomputeDeadlines()
}

// Retryable reports whether running again could help after Run returned err: throttling, a
// service fault or outage, a key that did not yet read Enabled, or RDS not yet reaching it. It
// is false for a closed incident, a key one click cannot fix or that is not allowed, a run that
// finished incomplete (ErrIncomplete), and for AWS refusals such as AccessDenied, which need a
// person.
func Retryable(err error) bool {
	if err == nil || errors.Is(err, ErrNotFixable) || errors.Is(err, ErrNotAllowed) || errors.Is(err, ErrClosed) ||
		errors.Is(err, ErrIncomplete) {
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
