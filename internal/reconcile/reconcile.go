// Package reconcile is keywarden's scheduled pass over everything the events may have missed.
// EventBridge delivers CloudTrail and RDS events best effort, and an incident's countdown moves
// whether or not anything happens, so every few minutes a Reconciler:
//
//   - re-reads the key and every dependent cluster and instance of each open or remediating
//     incident and applies the lifecycle rules: clusters recovered or lost, the incident
//     resolved when someone fixed it by hand, lost when the key is deleted or every cluster is
//     terminal;
//   - re-renders the Slack message so its countdown stays true, and posts a reminder in the
//     thread when the time left crosses each threshold — each threshold once, even when two runs
//     overlap (a DynamoDB claim per incident and threshold);
//   - asks CloudTrail event history who made the key unusable when the incident does not say
//     (backstop finds, RDS-side opens, KMS's own deletion event);
//   - runs the backstop: customer-managed keys that are unusable and Aurora clusters in an
//     inaccessible-encryption-credentials state (whatever the key's state), with no open
//     incident, get one — unless the key's latest incident closed as lost or intentional and
//     nothing changed since (see settled).
//
// A run is bounded by wall-clock time and by a number of AWS calls; what it does not reach it
// leaves for the next run, most urgent incidents first.
//
// It owns the scheduled pass and is the one orchestrating service that holds an announcer
// (Deps.Announcer, declared here where it is used): it announces what it refreshes and what
// intake opened for its backstop, and records a failed announcement in its Report rather than
// logging it (slackmessage.AnnounceOrWarn). It imports slackmessage for that and for the
// reminders' text, and must not import aws-lambda-go or the functions' wiring (startup): the
// handler logs the Report.
package reconcile

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/rds"
	rdstypes "github.com/aws/aws-sdk-go-v2/service/rds/types"

	"github.com/keywarden/keywarden/internal/blast"
	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/intake"
	"github.com/keywarden/keywarden/internal/kmskey"
	"github.com/keywarden/keywarden/internal/lifecycle"
	"github.com/keywarden/keywarden/internal/slackmessage"
	"github.com/keywarden/keywarden/internal/trail"
)

// RDSAPI lists clusters and instances; *rds.Client fits.
type RDSAPI interface {
	DescribeDBClusters(context.Context, *rds.DescribeDBClustersInput, ...func(*rds.Options)) (*rds.DescribeDBClustersOutput, error)
	DescribeDBInstances(context.Context, *rds.DescribeDBInstancesInput, ...func(*rds.Options)) (*rds.DescribeDBInstancesOutput, error)
}

// KeyLister lists the account's keys for the backstop; *kms.Client fits.
type KeyLister interface {
	ListKeys(context.Context, *kms.ListKeysInput, ...func(*kms.Options)) (*kms.ListKeysOutput, error)
}

// Keys resolves key references and reads key state; *kmskey.Resolver fits. It must be safe for
// concurrent use: the backstop resolves several references at once.
type Keys interface {
	ARN(ctx context.Context, ref string) (string, error)
	Describe(ctx context.Context, ref string) (kmskey.Key, error)
}

// Radius finds many keys' Aurora dependents in one listing pass; *blast.Finder fits.
type Radius interface {
	FindMany(ctx context.Context, keyARNs []string) (map[string]blast.Radius, error)
}

// Incidents lists, updates and claims; *dynamostore.Store fits.
type Incidents interface {
	List(ctx context.Context) ([]incident.Incident, error)
	Update(ctx context.Context, id string, mutate func(*incident.Incident) error) (incident.Incident, error)
	Claim(ctx context.Context, name string, ttl time.Duration) (bool, error)
	// Release gives a claim back (a reminder whose Slack reply failed), so the next run retries.
	Release(ctx context.Context, name string) error
}

// Opener opens or folds an incident for an unusable key, by intake's rules; *intake.Service
// fits.
type Opener interface {
	Ensure(ctx context.Context, sig intake.Signal) (intake.Outcome, error)
}

// LossFinder asks CloudTrail event history for the call that made a key unusable;
// *trail.Finder fits.
type LossFinder interface {
	LastLoss(ctx context.Context, keyARN string, since, now time.Time) (trail.Finding, bool, error)
}

// Announcer announces an incident that changed (posts or updates its Slack message);
// *slackmessage.Announcer fits. The reconciler is the one orchestrating service that holds an
// announcer: intake, which its backstop opens incidents through, returns what it changed, and
// the reconciler announces it as it announces everything it refreshes.
type Announcer interface {
	Announce(ctx context.Context, inc incident.Incident) error
}

// Replier posts a reply in the incident's Slack thread (reminders).
type Replier interface {
	Reply(ctx context.Context, inc incident.Incident, text string) error
}

// Deps are the Reconciler's collaborators. Trail, Announcer and Replier may be nil: no
// CloudTrail look-ups (moto has no LookupEvents), no Slack. The Reconciler logs nothing itself:
// every decision is an Outcome in the Report, which the handler logs.
type Deps struct {
	RDS       RDSAPI
	KMS       KeyLister
	Keys      Keys
	Radius    Radius
	Incidents Incidents
	Opener    Opener
	Trail     LossFinder
	Announcer Announcer
	Replier   Replier
	// Events is RDS's event history, which dates a loss the backstop found late; nil skips it.
	Events EventHistory
}

// Options tune a Reconciler; zero values take the defaults.
type Options struct {
	// Thresholds are the time-left marks that each post one reminder; default 72h, 24h, 6h, 1h.
	Thresholds []time.Duration
	// Mention is inserted in reminders from EscalateWithin on (a Slack user-group mention such
	// as "<!subteam^S0123>"); empty means none.
	Mention string
	// RunBudget bounds one run's wall-clock time; default DefaultRunBudget. The context's own
	// deadline, less a margin, bounds it too.
	RunBudget time.Duration
	// MaxCalls bounds the AWS calls of one run; default DefaultMaxCalls.
	MaxCalls int
	// CriticalEvery is the cadence of reminders for a critical incident with no deadline
	// (clusters that cannot stop); default DefaultCriticalEvery.
	CriticalEvery time.Duration
}

// Defaults.
var DefaultThresholds = []time.Duration{72 * time.Hour, 24 * time.Hour, 6 * time.Hour, time.Hour}

const (
	// DefaultRunBudget fits a run in the template's 30-second Lambda timeout with 10 s to spare.
	DefaultRunBudget = 20 * time.Second
	// DefaultMaxCalls keeps a run well inside RDS's and KMS's shared per-account request rates.
	DefaultMaxCalls = 400
	// EscalateWithin is from when on reminders mention the escalation target.
	EscalateWithin = 24 * time.Hour
	// DefaultCriticalEvery is how often a critical incident with no deadline is reminded.
	DefaultCriticalEvery = 6 * time.Hour
)

const (
	// stopMargin is kept free before the invocation's deadline: a run stops starting new work
	// then, so it returns before Lambda kills it.
	stopMargin = 3 * time.Second
	// reminderClaimTTL outlives any deadline (a key's deletion window is at most 30 days, plus
	// up to a day), so a claimed reminder is never posted again, and DynamoDB still deletes
	// the claim eventually.
	reminderClaimTTL = 60 * 24 * time.Hour
	// lookupClaimTTL spaces CloudTrail look-ups for one incident, across overlapping runs.
	lookupClaimTTL = 10 * time.Minute
	// historyDelay is how long CloudTrail may take to show a call in event history; before
	// that, finding nothing does not mean there is nothing.
	historyDelay = 15 * time.Minute
	// lookupCost is what one look-up may spend: the trail Finder reads at most 10 pages.
	lookupCost = 10
	// ensureCost is what opening one incident may spend (DescribeKey, the blast radius
	// listings, aliases).
	ensureCost = 10
	// listKeyPages bounds the ListKeys pages of one run's backstop; the next run continues.
	listKeyPages = 2
	// closedLookupWithin is how recently a closed incident may have closed and still get its
	// actor looked up (a "KMS CMK Deletion" incident closes as lost at once).
	closedLookupWithin = 24 * time.Hour
)

// TriggerBackstop is the Trigger of incidents the backstop opens.
const TriggerBackstop = "Reconciliation"

// Reconciler runs reconcile passes. One Reconciler serves a whole process; Run may be called
// concurrently with runs in other processes (overlapping schedules): every write is a
// version-guarded update or a claim.
type Reconciler struct {
	d    Deps
	o    Options
	now  func() time.Time
	wall func() time.Time

	mu sync.Mutex
	// listMarker is where the backstop's ListKeys walk continues; it lives as long as the
	// process (a warm Lambda), and a cold start begins the walk again.
	listMarker string
	// handoff is the hand-off recovery (handoff.go, WithHandoff).
	handoff handoffs
}

// New builds a Reconciler.
func New(d Deps, o Options) *Reconciler {
	if len(o.Thresholds) == 0 {
		o.Thresholds = DefaultThresholds
	}
	o.Thresholds = slices.Clone(o.Thresholds)
	slices.Sort(o.Thresholds)
	o.Thresholds = slices.Compact(o.Thresholds)
	if o.RunBudget <= 0 {
		o.RunBudget = DefaultRunBudget
	}
	if o.MaxCalls <= 0 {
		o.MaxCalls = DefaultMaxCalls
	}
	if o.CriticalEvery <= 0 {
		o.CriticalEvery = DefaultCriticalEvery
	}
	return &Reconciler{d: d, o: o, now: time.Now, wall: time.Now}
}

// WithClock makes the reconciler read the incidents' time — countdowns, reminders, timeline
// entries — from now, and returns it. The run's own time budget stays on the wall clock. A
// demo uses it to run one pass as if days had passed: New(...).WithClock(func() time.Time {
// return time.Now().Add(6*24*time.Hour + 21*time.Hour) }).Run(ctx).
func (r *Reconciler) WithClock(now func() time.Time) *Reconciler {
	r.now = now
	return r
}

// Action is what a run did with one incident or key.
type Action string

const (
	ActionChecked        Action = "checked"  // nothing changed
	ActionUpdated        Action = "updated"  // the incident changed
	ActionResolved       Action = "resolved" // fixed outside keywarden
	ActionLost           Action = "lost"
	ActionReminded       Action = "reminded"
	ActionLookedUp       Action = "looked-up" // CloudTrail event history answered
	ActionOpened         Action = "opened"    // by the backstop
	ActionFolded         Action = "folded"
	ActionSkipped        Action = "skipped" // the backstop found a key it will not open for
	ActionFailed         Action = "failed"
	ActionDeferred       Action = "deferred" // the run's budget ran out before this
	ActionAnnounceFailed Action = "announce-failed"
)

// Outcome is one decision of a run.
type Outcome struct {
	IncidentID string `json:"incident_id,omitempty"`
	KeyARN     string `json:"key_arn,omitempty"`
	Action     Action `json:"action"`
	Reason     string `json:"reason,omitempty"`
}

// Report sums up a run.
type Report struct {
	Incidents int `json:"incidents"`
	Updated   int `json:"updated"`
	Resolved  int `json:"resolved"`
	Lost      int `json:"lost"`
	Reminders int `json:"reminders"`
	LookedUp  int `json:"looked_up"`
	Opened    int `json:"opened"`
	KeysSeen  int `json:"keys_seen"`
	Calls     int `json:"calls"`
	Failures  int `json:"failures"`
	// Incomplete says why the run stopped before the end ("" when it covered everything);
	// the next run continues.
	Incomplete string    `json:"incomplete,omitempty"`
	Outcomes   []Outcome `json:"outcomes,omitempty"`
}

func (rep *Report) add(o Outcome) {
	rep.Outcomes = append(rep.Outcomes, o)
	switch o.Action {
	case ActionUpdated:
		rep.Updated++
	case ActionResolved:
		rep.Resolved++
	case ActionLost:
		rep.Lost++
	case ActionReminded:
		rep.Reminders++
	case ActionLookedUp:
		rep.LookedUp++
	case ActionOpened:
		rep.Opened++
	case ActionFailed:
		rep.Failures++
	}
}

// errBudget ends a run's remaining work once its time or calls are spent.
var errBudget = errors.New("run budget spent")

// budget counts a run's AWS calls and watches its deadline. spend is safe for concurrent use
// (the inventory's listings run at once); the fields are read once those have ended.
type budget struct {
	wall     func() time.Time
	deadline time.Time
	mu       sync.Mutex
	calls    int
	max      int
	why      string
}

// spend reserves n calls, or reports that the run must stop.
func (b *budget) spend(n int) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.why != "":
		return false
	case !b.wall().Before(b.deadline):
		b.why = "time budget spent"
		return false
	case b.calls+n > b.max:
		b.why = fmt.Sprintf("call budget spent (%d of %d)", b.calls, b.max)
		return false
	}
	b.calls += n
	return true
}

// deadline is when a pass starting now must stop: Options.RunBudget from now, or stopMargin
// before the invocation's deadline when that comes first.
func (r *Reconciler) deadline(ctx context.Context) time.Time {
	deadline := r.wall().Add(r.o.RunBudget)
	if d, ok := ctx.Deadline(); ok && d.Add(-stopMargin).Before(deadline) {
		deadline = d.Add(-stopMargin)
	}
	return deadline
}

// Run makes one reconcile pass. It returns an error only when nothing could be checked (the
// incidents or the RDS inventory could not be read); failures on single incidents or keys are
// outcomes, logged by the caller, and the next run tries again.
func (r *Reconciler) Run(ctx context.Context) (rep Report, err error) {
	b := &budget{wall: r.wall, deadline: r.deadline(ctx), max: r.o.MaxCalls}
	// The named result lets every return, early or not, report the calls spent.
	defer func() { rep.Calls = b.calls }()

	all, err := r.d.Incidents.List(ctx)
	if err != nil {
		return rep, fmt.Errorf("reconcile: %w", err)
	}
	r.recoverHandoffs(ctx, all, &rep)
	now := r.now().UTC()
	active, closed := split(all, now)
	inv, err := r.inventory(ctx, b, incidentClusters(active))
	if errors.Is(err, errBudget) {
		rep.Incomplete = "budget spent listing RDS: " + b.why
		return rep, nil
	}
	if err != nil {
		return rep, fmt.Errorf("reconcile: %w", err)
	}

	rep.Incidents = len(active)
	openKeys := map[string]bool{}
	for _, inc := range active {
		openKeys[inc.KeyARN] = true
	}
	latest := latestByKey(all)
	for i, inc := range active {
		if !b.spend(1) {
			for _, rest := range active[i:] {
				rep.add(Outcome{IncidentID: rest.ID, KeyARN: rest.KeyARN, Action: ActionDeferred, Reason: b.why})
			}
			rep.Incomplete = b.why
			return rep, nil
		}
		got := r.refresh(ctx, inc, inv, b, &rep)
		if got.State.Closed() {
			delete(openKeys, got.KeyARN)
		}
		if l, ok := latest[got.KeyARN]; ok && l.ID == got.ID {
			latest[got.KeyARN] = got // closed by this run: the backstop must see it so
		}
	}
	for _, inc := range closed {
		if !b.spend(0) {
			break
		}
		r.lookUpClosed(ctx, inc, b, &rep)
	}
	r.retryClosedOutbox(ctx, all, b, &rep) // outbox.go
	if err := r.backstop(ctx, inv, openKeys, latest, b, &rep); err != nil && !errors.Is(err, errBudget) {
		rep.add(Outcome{Action: ActionFailed, Reason: "backstop: " + err.Error()})
	}
	rep.Incomplete = b.why
	return rep, nil
}

// latestByKey maps each key to its most recently opened incident, closed or not.
func latestByKey(all []incident.Incident) map[string]incident.Incident {
	out := map[string]incident.Incident{}
	for _, inc := range all {
		if l, ok := out[inc.KeyARN]; !ok || inc.OpenedAt.After(l.OpenedAt) || (inc.OpenedAt.Equal(l.OpenedAt) && inc.ID > l.ID) {
			out[inc.KeyARN] = inc
		}
	}
	return out
}

// settled reports why the backstop must not open a new incident for a key whose latest
// incident closed as lost (nothing left to save) or intentional (an approver said the loss is
// wanted): the key is in the state that incident last recorded, and every cluster now in a
// lost-key state is one that incident already named. Anything else — the key moved on (say
// from Disabled to PendingDeletion), or another cluster lost access — is news and opens a new
// incident. "" means the key is not settled.
func settled(last incident.Incident, found bool, keyState incident.KeyState, inaccessible []string) string {
	if !found || (last.State != incident.StateLost && last.State != incident.StateIntentional) || keyState != last.KeyState {
		return ""
	}
	for _, id := range inaccessible {
		if !slices.ContainsFunc(last.Clusters, func(c incident.Cluster) bool { return c.Identifier == id }) {
			return ""
		}
	}
	return fmt.Sprintf("incident %s closed as %s and nothing changed since: the key is still %s and no other cluster lost access", last.ID, last.State, keyState)
}

// split picks the incidents a run works on: active ones, the nearest deadline first (critical
// ones, with no window at all, before everything), and recently closed ones whose actor is
// still unknown.
func split(all []incident.Incident, now time.Time) (active, closed []incident.Incident) {
	for _, inc := range all {
		switch {
		case !inc.State.Closed():
			active = append(active, inc)
		case inc.ClosedAt != nil && now.Sub(*inc.ClosedAt) < closedLookupWithin && needsLookup(inc):
			closed = append(closed, inc)
		}
	}
	slices.SortStableFunc(active, func(a, b incident.Incident) int {
		if a.Critical != b.Critical {
			if a.Critical {
				return -1
			}
			return 1
		}
		return incident.CompareDeadlines(a.Deadline, b.Deadline)
	})
	return active, closed
}

// inventory is one run's view of the account's clusters, and of the instances of the clusters
// active incidents name, read once and shared by every incident and the backstop.
type inventory struct {
	clusters  map[string]rdstypes.DBCluster
	order     []string
	instances map[string]incident.ClusterStatus
}

// maxRecords is RDS's largest page.
var maxRecords = aws.Int32(100)

// incidentClusters returns the identifiers of the clusters the incidents name, through their
// clusters and their instances, each once: the clusters whose instances a run refreshes.
func incidentClusters(incs []incident.Incident) []string {
	seen := map[string]bool{}
	var out []string
	add := func(id string) {
		if id != "" && !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	for _, inc := range incs {
		for _, c := range inc.Clusters {
			add(c.Identifier)
		}
		for _, in := range inc.Instances {
			add(in.ClusterIdentifier)
		}
	}
	return out
}

// inventory reads the account's clusters and, at the same time, the instances of the clusters
// named in instancesOf. The backstop needs every cluster (any may sit on an unusable key), but
// only incidents read instance statuses, so instances are asked for per cluster through
// DescribeDBInstances' db-cluster-id filter, in batches of blast.ClusterFilterLimit, rather
// than listed account-wide: a run costs ⌈clusters/100⌉ calls for the clusters and, for the
// instances, one page per 100 instances of those clusters (at least one call per 100 of them),
// with a longest chain of the longer of the two instead of their sum. Each call spends one from b;
// the first error (errBudget included) stops the other listing and is returned.
func (r *Reconciler) inventory(ctx context.Context, b *budget, instancesOf []string) (*inventory, error) {
	inv := &inventory{clusters: map[string]rdstypes.DBCluster{}, instances: map[string]incident.ClusterStatus{}}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := r.listClusters(ctx, b, inv); err != nil {
			cancel(err)
		}
	})
	wg.Go(func() {
		if err := r.listInstances(ctx, b, inv, instancesOf); err != nil {
			cancel(err)
		}
	})
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}
	return inv, nil
}

// listClusters fills inv.clusters and inv.order, page by page.
func (r *Reconciler) listClusters(ctx context.Context, b *budget, inv *inventory) error {
	cp := rds.NewDescribeDBClustersPaginator(r.d.RDS, &rds.DescribeDBClustersInput{MaxRecords: maxRecords})
	for cp.HasMorePages() {
		if !b.spend(1) {
			return errBudget
		}
		page, err := cp.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("describe db clusters: %w", err)
		}
		for _, c := range page.DBClusters {
			id := aws.ToString(c.DBClusterIdentifier)
			inv.clusters[id] = c
			inv.order = append(inv.order, id)
		}
	}
	return nil
}

// listInstances fills inv.instances with the statuses of the clusters' instances. The batches
// run one after another: a run has few incidents, usually one batch.
func (r *Reconciler) listInstances(ctx context.Context, b *budget, inv *inventory, clusterIDs []string) error {
	for batch := range slices.Chunk(clusterIDs, blast.ClusterFilterLimit) {
		ip := rds.NewDescribeDBInstancesPaginator(r.d.RDS, &rds.DescribeDBInstancesInput{
			MaxRecords: maxRecords,
			Filters:    []rdstypes.Filter{{Name: aws.String("db-cluster-id"), Values: batch}},
		})
		for ip.HasMorePages() {
			if !b.spend(1) {
				return errBudget
			}
			page, err := ip.NextPage(ctx)
			if err != nil {
				return fmt.Errorf("describe db instances: %w", err)
			}
			for _, in := range page.DBInstances {
				// A status is only ever looked up by an incident's instance identifier, so
				// instances of other clusters (a server ignoring the filter) are harmless.
				inv.instances[aws.ToString(in.DBInstanceIdentifier)] = incident.ClusterStatus(aws.ToString(in.DBInstanceStatus))
			}
		}
	}
	return nil
}

// status is a cluster's live status; a cluster RDS no longer lists is deleted.
func (inv *inventory) status(id string) incident.ClusterStatus {
	c, ok := inv.clusters[id]
	if !ok {
		return lifecycle.StatusDeleted
	}
	return incident.ClusterStatus(aws.ToString(c.Status))
}

// refresh applies the live state to one active incident, keeps its Slack message current and
// posts any reminder due. It returns the incident as stored.
func (r *Reconciler) refresh(ctx context.Context, inc incident.Incident, inv *inventory, b *budget, rep *Report) incident.Incident {
	o := Outcome{IncidentID: inc.ID, KeyARN: inc.KeyARN}
	fail := func(err error) incident.Incident {
		o.Action, o.Reason = ActionFailed, err.Error()
		rep.add(o)
		return inc
	}
	key, err := r.d.Keys.Describe(ctx, inc.KeyARN)
	// Denied (typically a key of another account) is Unknown, not a failure every run.
	key, err = lifecycle.KeyAsRead(inc.KeyARN, lifecycle.LocalAccount(inc), key, err)
	if err != nil {
		return fail(fmt.Errorf("describe key: %w", err))
	}
	// RDS's own history dates the windows first; CloudTrail then the key's loss; only when
	// neither answers does the window run from when the loss was found (window_estimated).
	hist := r.rdsHistory(ctx, inc, b, rep)
	// An incident opened while a listing failed is completed here (radius_incomplete); a
	// listing that fails again leaves it marked for the next run.
	var radius *blast.Radius
	if inc.RadiusIncomplete && b.spend(ensureCost) {
		radii, err := r.d.Radius.FindMany(ctx, []string{inc.KeyARN})
		if err != nil {
			rep.add(Outcome{IncidentID: inc.ID, KeyARN: inc.KeyARN, Action: ActionFailed, Reason: "complete the blast radius (retried next run): " + err.Error()})
		} else {
			got := radii[inc.KeyARN]
			radius = &got
		}
	}
	loss := r.lookUp(ctx, inc, b, rep)

	now := r.now().UTC()
	got, err := r.d.Incidents.Update(ctx, inc.ID, func(i *incident.Incident) error {
		loss.apply(i, now)
		if i.State.Closed() {
			return nil
		}
		hist.apply(i, now)
		if radius != nil && i.RadiusIncomplete {
			intake.CompleteRadius(i, *radius, now)
		}
		if i.State.Closed() {
			return nil
		}
		lifecycle.SetKey(i, key, lifecycle.Reconciliation, now)
		for _, c := range i.Clusters {
			if !c.Lost {
				lifecycle.SetClusterStatus(i, c.Identifier, inv.status(c.Identifier), lifecycle.Reconciliation, now)
			}
		}
		for _, in := range i.Instances {
			if status, ok := inv.instances[in.Identifier]; ok {
				lifecycle.SetInstanceStatus(i, in.Identifier, status)
			}
		}
		lifecycle.Settle(i, now)
		giveBackStalled(i, now)
		return nil
	})
	if err != nil {
		return fail(fmt.Errorf("update: %w", err))
	}
	switch {
	case got.Version == inc.Version:
		o.Action = ActionChecked
	case got.State == incident.StateResolved:
		o.Action = ActionResolved
	case got.State == incident.StateLost:
		o.Action = ActionLost
	default:
		o.Action = ActionUpdated
	}
	if got.State.Closed() {
		o.Reason = closingDetail(got)
	}
	rep.add(o)
	if !got.State.Closed() {
		got = r.remind(ctx, got, now, rep)
	}
	// The message is re-rendered on every run, changed or not: its countdown is relative to
	// the time it is rendered. It comes last so that it shows the reminder entry too.
	r.announce(ctx, got, rep)
	return got
}

// closingDetail is what the incident's closing transition told people.
func closingDetail(inc incident.Incident) string {
	if e, ok := inc.LastEntry(incident.KindState); ok && e.Result == incident.Result(inc.State) {
		return e.Detail
	}
	return string(inc.State)
}

// StallAfter is how long a remediation may go without recording a step before the reconciler
// gives the incident back to the approvers. RemediateFunction runs for at most 180 s, Lambda
// retries it once, and an event waits at most 15 minutes for that: past half an hour nothing is
// coming, and the invocation is on the on-failure queue.
const StallAfter = 30 * time.Minute

// lastRemediationActivity is when the incident's remediation last showed life: the latest
// recorded step, or the approval that started the run.
func lastRemediationActivity(i *incident.Incident) time.Time {
	var last time.Time
	for _, s := range i.Remediation.Steps {
		last = latest(last, s.At)
	}
	for _, k := range []incident.Kind{incident.KindRemediationStep, incident.KindApproval} {
		if e, ok := i.LastEntry(k); ok {
			last = latest(last, e.At)
		}
	}
	return last
}

func latest(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// stalled reports whether a remediating incident's run stopped short — the key still unusable,
// or a cluster still stopped — with nothing recorded for StallAfter.
func stalled(i *incident.Incident, now time.Time) bool {
	if i.State != incident.StateRemediating || now.Sub(lastRemediationActivity(i)) < StallAfter {
		return false
	}
	if i.KeyState.Unusable() {
		return true
	}
	for _, c := range i.Clusters {
		if !c.Lost && !c.Recovered && c.Status.Startable() && !c.Settled() {
			return true
		}
	}
	return false // clusters are starting: the lifecycle resolves it once they are available
}

// giveBackStalled gives a stalled remediation's incident back to the approvers
// (incident.GiveBack): without it, a remediation that timed out or crashed for good would
// leave the incident remediating, where Slack offers no fix button.
func giveBackStalled(i *incident.Incident, now time.Time) {
	if !stalled(i, now) {
		return
	}
	// GiveBack refuses only an incident that is not remediating, which stalled excludes.
	_ = i.GiveBack(fmt.Sprintf("remediation stalled: nothing recorded for %s and the key or a cluster is still down "+
		"(RemediateFunction timed out or gave up; see its on-failure queue)", StallAfter), now)
}

// announce announces inc and carries on, as every caller does (slackmessage.AnnounceOrWarn);
// the reconciler logs nothing itself, so a failure is an announce-failed outcome in the
// Report, which ReconcileFunction logs at ERROR and counts in its failure metric.
func (r *Reconciler) announce(ctx context.Context, inc incident.Incident, rep *Report) {
	if err := slackmessage.AnnounceOrWarn(ctx, r.d.Announcer, inc, nil); err != nil {
		rep.add(Outcome{IncidentID: inc.ID, KeyARN: inc.KeyARN, Action: ActionAnnounceFailed, Reason: err.Error()})
	}
}

// backstopState reports whether the backstop opens for a key in state: every unusable state
// KMS reports (Disabled, PendingDeletion, PendingReplicaDeletion, PendingImport, Unavailable).
func backstopState(state incident.KeyState) bool {
	return state != incident.KeyStateDeleted && state.Unusable()
}

// resolveConcurrency bounds the DescribeKey calls the backstop makes at once: KMS's
// DescribeKey quota is per account and region and shared with every other caller.
const resolveConcurrency = 16

// resolution is one key reference's ARN, or why it has none.
type resolution struct {
	arn string
	err error
}

// resolveStorageKeys resolves the storage key reference of every Aurora cluster in inv, each
// distinct reference once and up to resolveConcurrency at a time, instead of one cluster after
// another. A reference that is not an ARN costs a DescribeKey and spends one call of b, up
// front (errBudget when the run cannot afford them all); key ARNs are answered by the resolver
// without a call. Failures are kept per reference for the caller to judge.
func (r *Reconciler) resolveStorageKeys(ctx context.Context, inv *inventory, b *budget) (map[string]resolution, error) {
	var refs []string
	out := map[string]resolution{}
	for _, id := range inv.order {
		c := inv.clusters[id]
		ref := aws.ToString(c.KmsKeyId)
		if ref == "" || !blast.IsAurora(aws.ToString(c.Engine)) {
			continue
		}
		if _, ok := out[ref]; !ok {
			out[ref] = resolution{}
			refs = append(refs, ref)
		}
	}
	calls := 0
	for _, ref := range refs {
		if !incident.IsKeyARN(ref) { // a key ID or alias costs a DescribeKey
			calls++
		}
	}
	if calls > 0 && !b.spend(calls) {
		return nil, errBudget
	}
	var (
		mu  sync.Mutex
		wg  sync.WaitGroup
		sem = make(chan struct{}, resolveConcurrency)
	)
	for _, ref := range refs {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			a, err := r.d.Keys.ARN(ctx, ref)
			mu.Lock()
			out[ref] = resolution{arn: a, err: err}
			mu.Unlock()
		})
	}
	wg.Wait()
	return out, nil
}

// backstop opens incidents the events missed: for unusable customer-managed keys with Aurora
// dependents and no open incident, and for the keys of Aurora clusters already in an
// inaccessible-encryption-credentials state. The storage keys of the account's Aurora clusters
// are checked on every run; the rest of the account's keys (whose loss can still hurt a
// cluster through its master-user secret, Performance Insights or activity stream) are walked
// with ListKeys a few pages per run.
func (r *Reconciler) backstop(ctx context.Context, inv *inventory, openKeys map[string]bool, latest map[string]incident.Incident, b *budget, rep *Report) error {
	var candidates []string
	seen := map[string]bool{}
	inaccessible := map[string][]string{}    // key ARN → clusters in a lost-key state, with it
	inaccessibleIDs := map[string][]string{} // key ARN → the same clusters' identifiers
	resolved, err := r.resolveStorageKeys(ctx, inv, b)
	if err != nil {
		return err
	}
	for _, id := range inv.order {
		c := inv.clusters[id]
		ref := aws.ToString(c.KmsKeyId)
		if ref == "" || !blast.IsAurora(aws.ToString(c.Engine)) {
			continue
		}
		res := resolved[ref]
		keyARN, err := res.arn, res.err
		if errors.Is(err, kmskey.ErrNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("resolve key %s of cluster %s: %w", ref, id, err)
		}
		if openKeys[keyARN] {
			continue
		}
		if incident.ClusterStatus(aws.ToString(c.Status)).Inaccessible() {
			inaccessible[keyARN] = append(inaccessible[keyARN], id+" ("+aws.ToString(c.Status)+")")
			inaccessibleIDs[keyARN] = append(inaccessibleIDs[keyARN], id)
		}
		if !seen[keyARN] {
			seen[keyARN] = true
			candidates = append(candidates, keyARN)
		}
	}
	listed, err := r.listKeys(ctx, b)
	if err != nil && !errors.Is(err, errBudget) {
		return err
	}
	for _, k := range listed {
		if !seen[k] && !openKeys[k] {
			seen[k] = true
			candidates = append(candidates, k)
		}
	}

	var unusable []string
	states := map[string]incident.KeyState{}
	for _, k := range candidates {
		if !b.spend(1) {
			break
		}
		rep.KeysSeen++
		key, err := r.d.Keys.Describe(ctx, k)
		if errors.Is(err, kmskey.ErrNotFound) {
			continue
		}
		if errors.Is(err, kmskey.ErrDenied) {
			// A key this account may not read (another account's): its clusters' own status
			// decides. Healthy clusters are nothing to report — not a failure every run; a
			// cluster in a lost-key state opens with the key Unknown.
			if len(inaccessible[k]) == 0 {
				continue
			}
			key, err = lifecycle.KeyAsRead(k, "", key, err)
		}
		if err != nil {
			rep.add(Outcome{KeyARN: k, Action: ActionFailed, Reason: "backstop: describe key: " + err.Error()})
			continue
		}
		k = cmp.Or(key.ARN, k)
		if openKeys[k] || states[k] != "" {
			continue
		}
		states[k] = key.State
		last, hasLast := latest[k]
		if !(key.CustomerManaged() && backstopState(key.State)) && len(inaccessible[k]) == 0 {
			r.noteKeyState(ctx, last, hasLast, key, rep)
			continue
		}
		if why := settled(last, hasLast, key.State, inaccessibleIDs[k]); why != "" {
			rep.add(Outcome{KeyARN: k, IncidentID: last.ID, Action: ActionSkipped, Reason: why})
			continue
		}
		unusable = append(unusable, k)
	}
	if len(unusable) == 0 {
		return nil
	}
	if !b.spend(ensureCost) {
		return errBudget
	}
	radii, err := r.d.Radius.FindMany(ctx, unusable)
	if err != nil {
		return fmt.Errorf("blast radius of %d unusable key(s): %w", len(unusable), err)
	}
	for _, k := range unusable {
		if radii[k].Empty() && len(inaccessible[k]) == 0 {
			continue // an unusable key nothing Aurora uses: not an incident
		}
		if !b.spend(ensureCost) {
			return errBudget
		}
		detail := "found by reconciliation: the key is " + string(states[k]) + " and no event about it was received"
		if cl := inaccessible[k]; len(cl) > 0 {
			detail = "found by reconciliation: cluster(s) " + strings.Join(cl, ", ") + " lost access to the key (key is " + string(states[k]) + ") and no event about it was received"
		}
		// A cluster in a lost-key state is a loss whatever KMS says of the key (Enabled, with
		// the cluster still waiting for StartDBCluster): ClusterLostAccess makes intake open.
		out, err := r.d.Opener.Ensure(ctx, intake.Signal{KeyARN: k, Trigger: TriggerBackstop, TriggerDetail: detail, At: r.now().UTC(),
			ClusterLostAccess: len(inaccessible[k]) > 0, WindowEstimated: true})
		o := Outcome{KeyARN: k, IncidentID: out.IncidentID}
		switch {
		case err != nil:
			o.Action, o.Reason = ActionFailed, "backstop: "+err.Error()
		case out.Action == intake.ActionOpened:
			o.Action, o.Reason = ActionOpened, detail
		case out.Action == intake.ActionFolded || out.Action == intake.ActionUpdated:
			o.Action, o.Reason = ActionFolded, detail
		case out.Action == intake.ActionKeyDeleted:
			o.Action, o.Reason = ActionLost, detail+"; the key is deleted"
		default:
			o.Action, o.Reason = ActionSkipped, fmt.Sprintf("intake %s: %s", out.Action, out.Reason)
			if cl := inaccessible[k]; len(cl) > 0 && !states[k].Unusable() {
				o.Reason += "; cluster(s) " + strings.Join(cl, ", ") + " still need StartDBCluster before their window ends"
			}
		}
		rep.add(o)
		// intake returns what it opened or changed; the reconciler announces it.
		for _, inc := range out.Changed {
			r.announce(ctx, inc, rep)
		}
	}
	return nil
}

// noteKeyState records a usable key's live state on its latest incident when that closed as
// lost or intentional with the key in another state, so that settled compares against what
// the key was last seen as: a key re-enabled after such an incident and disabled again later
// is a new loss, not the old one.
func (r *Reconciler) noteKeyState(ctx context.Context, last incident.Incident, found bool, key kmskey.Key, rep *Report) {
	if !found || (last.State != incident.StateLost && last.State != incident.StateIntentional) || last.KeyState == key.State {
		return
	}
	now := r.now().UTC()
	_, err := r.d.Incidents.Update(ctx, last.ID, func(i *incident.Incident) error {
		lifecycle.SetKey(i, key, lifecycle.Source{Name: "reconciliation, after the incident closed"}, now)
		return nil
	})
	if err != nil {
		rep.add(Outcome{IncidentID: last.ID, KeyARN: last.KeyARN, Action: ActionFailed, Reason: "record key state on closed incident: " + err.Error()})
	}
}

// listKeys reads up to listKeyPages pages of ListKeys from where the last run stopped,
// starting over after the last page.
func (r *Reconciler) listKeys(ctx context.Context, b *budget) ([]string, error) {
	if r.d.KMS == nil {
		return nil, nil
	}
	r.mu.Lock()
	marker := r.listMarker
	r.mu.Unlock()
	var out []string
	for range listKeyPages {
		if !b.spend(1) {
			return out, errBudget
		}
		in := &kms.ListKeysInput{}
		if marker != "" {
			in.Marker = aws.String(marker)
		}
		page, err := r.d.KMS.ListKeys(ctx, in)
		if err != nil {
			return out, fmt.Errorf("list keys: %w", err)
		}
		for _, k := range page.Keys {
			out = append(out, cmp.Or(aws.ToString(k.KeyArn), aws.ToString(k.KeyId)))
		}
		marker = ""
		if page.Truncated && aws.ToString(page.NextMarker) != "" {
			marker = aws.ToString(page.NextMarker)
		}
		if marker == "" {
			break
		}
	}
	r.mu.Lock()
	r.listMarker = marker
	r.mu.Unlock()
	return out, nil
}
