// Package remedy re-enables an incident's KMS key and brings its Aurora clusters back, in the
// order AWS documents: cancel a scheduled deletion, enable the key, wait until KMS says it is
// Enabled, then StartDBCluster for clusters that stopped and RebootDBInstance for instances that
// are still running but lost key access.
//
// The plan is the model's one plan, (*incident.Incident).Plan: the confirm dialog shows it from
// the stored incident, and a Runner computes it again on a copy refreshed from live state
// (DescribeKey, DescribeDBClusters, DescribeDBInstances) and runs exactly its steps. So a run
// that crashed, timed out or was retried by Lambda can simply be run again: what is already done
// shows up as skipped, not repeated. Every step and its API result is recorded on the incident
// (incident.RecordStep), once per run, step and target.
//
// Boundaries: it owns running the plan's steps against KMS and RDS; it must not import Slack,
// DynamoDB, the blast radius or intake (the caller stores what the run records).
package remedy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/rds"

	"github.com/keywarden/keywarden/internal/incident"
)

// KMSAPI is the part of the KMS client remediation uses; *kms.Client fits.
type KMSAPI interface {
	DescribeKey(context.Context, *kms.DescribeKeyInput, ...func(*kms.Options)) (*kms.DescribeKeyOutput, error)
	CancelKeyDeletion(context.Context, *kms.CancelKeyDeletionInput, ...func(*kms.Options)) (*kms.CancelKeyDeletionOutput, error)
	EnableKey(context.Context, *kms.EnableKeyInput, ...func(*kms.Options)) (*kms.EnableKeyOutput, error)
}

// RDSAPI is the part of the RDS client remediation uses; *rds.Client fits. It deliberately has
// no RebootDBCluster: that API is only for non-Aurora Multi-AZ DB clusters.
type RDSAPI interface {
	DescribeDBClusters(context.Context, *rds.DescribeDBClustersInput, ...func(*rds.Options)) (*rds.DescribeDBClustersOutput, error)
	StartDBCluster(context.Context, *rds.StartDBClusterInput, ...func(*rds.Options)) (*rds.StartDBClusterOutput, error)
	DescribeDBInstances(context.Context, *rds.DescribeDBInstancesInput, ...func(*rds.Options)) (*rds.DescribeDBInstancesOutput, error)
	RebootDBInstance(context.Context, *rds.RebootDBInstanceInput, ...func(*rds.Options)) (*rds.RebootDBInstanceOutput, error)
}

// Incidents reads and conditionally updates incidents; *dynamostore.Store fits. Update applies
// mutate to the current incident and writes the result, or writes nothing when mutate fails.
type Incidents interface {
	Get(ctx context.Context, id string) (incident.Incident, error)
	Update(ctx context.Context, id string, mutate func(*incident.Incident) error) (incident.Incident, error)
}

var (
	// ErrNotFixable means one click cannot fix the key: it was deleted, its imported key
	// material was deleted or expired, or its custom key store is disconnected. The wrapping
	// error's message says what to do instead.
	ErrNotFixable = errors.New("not fixable with one click")
	// ErrNotAllowed means the deployment restricts remediation to other keys.
	ErrNotAllowed = errors.New("remediation not allowed for this key")
	// ErrClosed means the incident was resolved, closed as intentional or lost, so nothing may
	// be changed on its behalf (for example a retry that arrives after an "intentional" click).
	ErrClosed = errors.New("incident is closed")
	// ErrNotApproved means the incident is not remediating under the run: no approved click
	// started one, or it was given back (and perhaps approved again, as another run) meanwhile.
	ErrNotApproved = errors.New("no approved remediation run")
	// ErrIncomplete means a run went through every step but left clusters that a person must
	// look at, or remediate again once they settle: a cluster or instance step failed for good,
	// or a cluster was in a status StartDBCluster does not accept. Run returns it as an
	// *IncompleteError, which names them. A retry would change nothing, so it is not Retryable;
	// Run gives the incident back to the approvers so the remediate button returns.
	ErrIncomplete = errors.New("remediation incomplete")
	// ErrClaimed means another invocation holds the run (a second delivery of the hand-off, or
	// the reconciler's start racing the click's): this one does nothing.
	ErrClaimed = errors.New("run claimed by another invocation")
	// ErrPaused means the invocation stopped with StopMargin left before its deadline and
	// recorded where (incident.PauseRun); the run is approved again for a new invocation.
	ErrPaused = errors.New("run paused before the invocation's deadline")
	// ErrGaveUp means the run took MaxAttempts invocations without finishing; the incident is
	// given back to the approvers with where it last stopped. Not Retryable.
	ErrGaveUp = errors.New("gave up")
	// ErrUnrecorded means the run, or the reboot, could not write its end to the incident (the
	// store failed after its retries): the incident may still say remediating, or the reboot
	// running, with nobody acting. RemediateFunction returns it as the invocation's error, so
	// the RemediateErrorsAlarm sees it and Lambda retries.
	ErrUnrecorded = errors.New("the end could not be recorded on the incident")
)

// Unfinished is one cluster a run could not bring back, and why.
type Unfinished struct {
	// Cluster is the cluster identifier.
	Cluster string `json:"cluster"`
	// Reason is the failed step and its API error, or why the start was not attempted.
	Reason string `json:"reason"`
}

// IncompleteError is Run's error when every step ran but clusters still need attention; it
// matches ErrIncomplete with errors.Is.
type IncompleteError struct {
	Incident string
	Clusters []Unfinished
}

func (e *IncompleteError) Error() string {
	return "remediate incident " + e.Incident + ": " + ErrIncomplete.Error() + ": " + e.Attention()
}

// Unwrap makes errors.Is(err, ErrIncomplete) true.
func (e *IncompleteError) Unwrap() error { return ErrIncomplete }

// Attention lists the clusters that still need attention and why, as the timeline shows it:
// "orders (StartDBCluster failed: …); billing (status stopping: …)".
func (e *IncompleteError) Attention() string {
	parts := make([]string, 0, len(e.Clusters))
	for _, c := range e.Clusters {
		parts = append(parts, c.Cluster+" ("+c.Reason+")")
	}
	return strings.Join(parts, "; ")
}

// Step is one step of a run: the plan's step (incident.PlannedStep) and what came of it, as
// RemediateFunction returns it.
type Step struct {
	// Name is the step's kind, by the AWS API it calls.
	Name incident.StepKind `json:"name"`
	// Target is the key ARN for key steps, the cluster or instance identifier for RDS steps.
	Target string `json:"target"`
	// Skip says why the step is not needed; "" when it runs.
	Skip string `json:"skip,omitempty"`
	// Settling marks a cluster whose passing status alone kept it from starting.
	Settling bool `json:"settling,omitempty"`
	// Result is ok, skipped or failed, as recorded on the incident.
	Result incident.Result `json:"result,omitempty"`
	// Detail is the API's answer for people: "already starting", "InvalidDBClusterStateFault: …".
	Detail string `json:"detail,omitempty"`
	// Err is the step's failure, nil when it succeeded, was already done or was skipped.
	Err error `json:"-"`
}

// Runs reports whether the step makes an API call that changes something.
func (s Step) Runs() bool { return s.Skip == "" }

// Options tunes a Runner; the zero value is usable.
type Options struct {
	// WaitTimeout bounds the wait for DescribeKey to say Enabled after EnableKey; default 60s.
	WaitTimeout time.Duration
	// KeyAccessTimeout bounds, for the whole run, how long StartDBCluster and RebootDBInstance
	// are retried while RDS answers KMSKeyNotAccessibleFault: KMS is eventually consistent, so
	// RDS may not reach a key for a while after DescribeKey already says Enabled. Default 45s;
	// past it the run returns a Retryable error for Lambda to run it again.
	KeyAccessTimeout time.Duration
	// Sleep waits between DescribeKey polls; default a timer that stops early when ctx ends.
	Sleep func(context.Context, time.Duration) error
	// Now stamps timeline entries and measures the wait; default time.Now.
	Now func() time.Time
	// AllowedKeys, when set, limits remediation to the keys it accepts (by key ARN).
	AllowedKeys func(keyARN string) bool
	// ConsistencyTimeout bounds how long EnableKey and the wait for Enabled retry
	// KMSInvalidStateException and NotFoundException after CancelKeyDeletion: KMS is eventually
	// consistent, and "changes … can take seconds, occasionally minutes, to propagate"
	// (https://docs.aws.amazon.com/kms/latest/developerguide/programming-eventual-consistency.html).
	// Default DefaultConsistencyTimeout.
	ConsistencyTimeout time.Duration
	// StopMargin is kept free before the invocation's deadline (the context's): a run does not
	// start a step, nor keep waiting, inside it, but records where it stopped and releases its
	// claim for a new invocation to continue (incident.PauseRun). Default DefaultStopMargin.
	StopMargin time.Duration
	// Lease is how long a claim holds when the context has no deadline; with one, the claim
	// holds until the deadline plus LeaseSlack, so a run killed at its deadline is continued by
	// the reconciler soon after. Default 4 minutes.
	Lease time.Duration
	// Invocation names the invocation that claims a run (RemediateFunction passes the Lambda
	// request ID); default a random name per call.
	Invocation func(context.Context) string
	// WatchGrace is how long an instance that reported lost key access must stay available
	// with the key Enabled to count as recovered (incident.WatchInstances); default
	// incident.DefaultWatchGrace.
	WatchGrace time.Duration
}

// DefaultWaitTimeout is how long Run waits for a key to read back as Enabled.
const DefaultWaitTimeout = 60 * time.Second

// DefaultKeyAccessTimeout is how long one run keeps retrying RDS calls that cannot reach the
// key yet. With DefaultWaitTimeout it stays well inside RemediateFunction's 180s timeout.
const DefaultKeyAccessTimeout = 45 * time.Second

// DefaultConsistencyTimeout bounds the KMS consistency retries of one run.
const DefaultConsistencyTimeout = 60 * time.Second

// DefaultStopMargin leaves time to record a step, pause and refresh the message before
// Lambda's deadline.
const DefaultStopMargin = 20 * time.Second

// LeaseSlack is added to the invocation's deadline to make a claim's lease.
const LeaseSlack = 30 * time.Second

// Runner refreshes incidents from live state and runs their remediation plans.
type Runner struct {
	kms   KMSAPI
	rds   RDSAPI
	store Incidents
	opts  Options
}

// New returns a Runner that calls KMS and RDS through the given clients and records on store.
func New(kmsClient KMSAPI, rdsClient RDSAPI, store Incidents, opts Options) *Runner {
	if opts.WaitTimeout <= 0 {
		opts.WaitTimeout = DefaultWaitTimeout
	}
	if opts.KeyAccessTimeout <= 0 {
		opts.KeyAccessTimeout = DefaultKeyAccessTimeout
	}
	if opts.Sleep == nil {
		opts.Sleep = sleep
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.ConsistencyTimeout <= 0 {
		opts.ConsistencyTimeout = DefaultConsistencyTimeout
	}
	if opts.StopMargin <= 0 {
		opts.StopMargin = DefaultStopMargin
	}
	if opts.Lease <= 0 {
		opts.Lease = 4 * time.Minute
	}
	if opts.Invocation == nil {
		opts.Invocation = invocationID
	}
	if opts.WatchGrace <= 0 {
		opts.WatchGrace = incident.DefaultWatchGrace
	}
	return &Runner{kms: kmsClient, rds: rdsClient, store: store, opts: opts}
}

// invocationID is a random invocation name; RemediateFunction's main passes the Lambda
// request ID instead.
func invocationID(context.Context) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "inv-" + hex.EncodeToString(b[:])
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
