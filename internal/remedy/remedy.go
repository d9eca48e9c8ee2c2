// Package remedy re-enables an incident's KMS key and brings its Aurora clusters back, in the
// order AWS documents: cancel a scheduled deletion, enable the key, wait until KMS says it is
// Enabled, then StartDBCluster for clusters that stopped and RebootDBInstance for instances that
// are still running but lost key access.
//
// A Runner plans from live state (DescribeKey, DescribeDBClusters, DescribeDBInstances) rather
// than from what the incident remembers, so a run that crashed, timed out or was retried by
// Lambda can simply be run again: what is already done shows up as skipped, not repeated. Every
// step and its API result goes on the incident's timeline.
package remedy

import (
	"context"
	"errors"
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

// Incidents reads and conditionally updates incidents; *incident.Store fits. Update applies
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
)

// Step names, in the order a plan runs them.
const (
	StepCancelKeyDeletion = "CancelKeyDeletion"
	StepEnableKey         = "EnableKey"
	StepWaitEnabled       = "WaitEnabled"
	StepStartDBCluster    = "StartDBCluster"
	StepRebootDBInstance  = "RebootDBInstance"
)

// Step is one action of a plan. Plan fills Name, Target and Skip; Run also fills Result and,
// when the step failed, Err.
type Step struct {
	// Name is one of the Step* constants.
	Name string `json:"name"`
	// Target is the key ARN for key steps, the cluster or instance identifier for RDS steps.
	Target string `json:"target"`
	// Skip says why the step is not needed; "" when it runs.
	Skip string `json:"skip,omitempty"`
	// Result is what happened, as recorded on the timeline: "ok", "already starting",
	// "skipped: …", or the API error ("InvalidDBClusterStateFault: …").
	Result string `json:"result,omitempty"`
	// Err is the step's failure, nil when it succeeded, was already done or was skipped.
	Err error `json:"-"`
}

// Runs reports whether the step makes an API call that changes something.
func (s Step) Runs() bool { return s.Skip == "" }

// Options tunes a Runner; the zero value is usable.
type Options struct {
	// WaitTimeout bounds the wait for DescribeKey to say Enabled after EnableKey; default 60s.
	WaitTimeout time.Duration
	// Sleep waits between DescribeKey polls; default a timer that stops early when ctx ends.
	Sleep func(context.Context, time.Duration) error
	// Now stamps timeline entries and measures the wait; default time.Now.
	Now func() time.Time
	// AllowedKeys, when set, limits remediation to the keys it accepts (by key ARN).
	AllowedKeys func(keyARN string) bool
}

// DefaultWaitTimeout is how long Run waits for a key to read back as Enabled.
const DefaultWaitTimeout = 60 * time.Second

// Runner plans and runs remediation for incidents.
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
	if opts.Sleep == nil {
		opts.Sleep = sleep
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Runner{kms: kmsClient, rds: rdsClient, store: store, opts: opts}
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
