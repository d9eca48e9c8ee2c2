// Package rdstrack applies RDS's own events (RDS-EVENT-0418/0419/0420, a cluster or instance
// stopped or started) to the incidents of the clusters they are about, by lifecycle's rules: it
// finds the cluster and its key from live RDS state, opens an incident through intake when a
// cluster reports lost key access and none is open, and updates, resolves or loses the incident
// otherwise. RdsEventFunction calls it.
//
// It lives apart from lifecycle because it opens incidents through intake, which itself applies
// lifecycle's rules to key events.
//
// It owns what an RDS event does to an incident, and nothing after it: it announces nothing,
// and each Outcome carries the incidents the event changed (Outcome.Changed) for
// RdsEventFunction to announce. It must not import Slack — neither slack-go nor slackmessage —
// nor aws-lambda-go or the functions' wiring (startup) (cmd/keywarden's TestImportBoundaries
// checks the Slack rule).
package rdstrack

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/rds"
	rdstypes "github.com/aws/aws-sdk-go-v2/service/rds/types"

	"github.com/keywarden/keywarden/internal/blast"
	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/intake"
	"github.com/keywarden/keywarden/internal/kmskey"
	"github.com/keywarden/keywarden/internal/lifecycle"
	"github.com/keywarden/keywarden/internal/rdsevent"
)

// RDSAPI is the part of the RDS client the tracker uses; *rds.Client fits.
type RDSAPI interface {
	DescribeDBClusters(context.Context, *rds.DescribeDBClustersInput, ...func(*rds.Options)) (*rds.DescribeDBClustersOutput, error)
	DescribeDBInstances(context.Context, *rds.DescribeDBInstancesInput, ...func(*rds.Options)) (*rds.DescribeDBInstancesOutput, error)
}

// Keys resolves key references and reads a key's live state; *kmskey.Resolver fits.
type Keys interface {
	ARN(ctx context.Context, ref string) (string, error)
	Describe(ctx context.Context, ref string) (kmskey.Key, error)
}

// Incidents reads and updates incidents; *dynamostore.Store fits.
type Incidents interface {
	Get(ctx context.Context, id string) (incident.Incident, error)
	OpenFor(ctx context.Context, keyARN string) (incident.Incident, error)
	Update(ctx context.Context, id string, mutate func(*incident.Incident) error) (incident.Incident, error)
}

// Opener opens or folds an incident for an unusable key; *intake.Service fits. It keeps the
// rules for when an incident opens in one place.
type Opener interface {
	Ensure(ctx context.Context, sig intake.Signal) (intake.Outcome, error)
}

// Action is what the tracker did with an RDS event.
type Action string

const (
	ActionUpdated   Action = "updated"   // the incident changed
	ActionUnchanged Action = "unchanged" // a duplicate, or nothing new
	ActionOpened    Action = "opened"    // no incident was open: the CloudTrail event was lost
	ActionResolved  Action = "resolved"
	ActionLost      Action = "lost"
	ActionIgnored   Action = "ignored" // not about a cluster keywarden tracks
	// ActionStale: the event is older than the latest key-access event already applied for
	// its source; it changes nothing.
	ActionStale Action = "stale"
)

// RDSClock orders RDS key-access events per source by their own Date; *dynamostore.Store fits.
// A tracker whose Incidents also implement it (the real store does) drops stale events; one
// whose Incidents do not applies every event as it comes.
type RDSClock interface {
	AdvanceRDSClock(ctx context.Context, source, code string, at time.Time) (applied bool, latestCode string, latestAt time.Time, err error)
}

// Outcome is the decision for one RDS event.
type Outcome struct {
	Action     Action `json:"action"`
	IncidentID string `json:"incident_id,omitempty"`
	KeyARN     string `json:"key_arn,omitempty"`
	Cluster    string `json:"cluster,omitempty"`
	Instance   string `json:"instance,omitempty"`
	Reason     string `json:"reason,omitempty"`
	// Changed holds the incidents as stored after this event changed them, in the order they
	// changed, for the caller to announce: the incident intake opened or folded the event into
	// (intake.Outcome.Changed), then the incident as the event left it. The tracker never calls
	// Slack: the domain returns what changed, and RdsEventFunction announces it. It is set
	// also when the error says a later step failed, and is not part of the function's JSON
	// result.
	Changed []incident.Incident `json:"-"`
}

// Tracker applies RDS events to the incidents of the clusters they are about.
type Tracker struct {
	rds       RDSAPI
	keys      Keys
	incidents Incidents
	opener    Opener
	now       func() time.Time
}

// NewTracker builds a Tracker. It announces nothing: each Outcome carries the incidents it
// changed, and the caller announces them.
func NewTracker(rdsAPI RDSAPI, keys Keys, incidents Incidents, opener Opener) *Tracker {
	return &Tracker{rds: rdsAPI, keys: keys, incidents: incidents, opener: opener, now: time.Now}
}

// WithClock replaces the clock, for tests.
func (t *Tracker) WithClock(now func() time.Time) *Tracker {
	t.now = now
	return t
}

// target is what an event is about, read live from RDS.
type target struct {
	cluster, instance             string
	clusterStatus, instanceStatus incident.ClusterStatus
	keyARN                        string
	// live is the cluster as DescribeDBClusters answered.
	live rdstypes.DBCluster
}

// lossEvidence reports whether the event or the live statuses say the cluster cannot reach
// its key: RDS-EVENT-0418/0419, or a cluster or instance inaccessible-encryption-credentials(-
// recoverable) status, whatever event brought us to look.
func lossEvidence(ev rdsevent.Event, tg target) bool {
	return ev.Meaning == rdsevent.KeyAccessLost || tg.clusterStatus.Inaccessible() || tg.instanceStatus.Inaccessible()
}

// reportedCluster is the cluster as an incident records it, from what DescribeDBClusters said:
// the incident names it even when the blast radius cannot be read.
func reportedCluster(tg target) *incident.Cluster {
	c := tg.live
	clusterARN := aws.ToString(c.DBClusterArn)
	reason := incident.CannotStopReason(blast.StopFactsOf(c))
	account := incident.ARNAccount(clusterARN)
	return &incident.Cluster{
		Identifier: tg.cluster, ARN: clusterARN, Engine: aws.ToString(c.Engine), Status: tg.clusterStatus,
		Account: account, CanStop: reason == "", CannotStopReason: reason, Uses: []string{"storage"},
	}
}

// Pending is an event Open matched to its incident, for Apply.
type Pending struct {
	t      *Tracker
	ev     rdsevent.Event
	tg     target
	opened bool
	o      Outcome
}

// Open is the first half of applying one RDS event; the Pending's Apply is the second. RDS
// delivers events best effort, possibly twice and out of order, so the event says only what
// happened and when; statuses are always read live (DescribeDBClusters, DescribeDBInstances),
// and a 0150 arriving after 0151 cannot mark a running cluster stopped.
//
// Open locates the event's cluster and its key, drops a stale event, and finds the key's
// incident or has intake open one. Outcome.Changed holds the incident intake opened or folded
// the event into, so the caller can announce it before Apply reads anything more (a new
// incident is heard at once, however slow the rest is). A nil *Pending means the event is done
// here (ignored, stale, or an error). It returns an error only when a retry could help (AWS or
// DynamoDB failing); an event about something keywarden does not track is an ActionIgnored
// outcome.
func (t *Tracker) Open(ctx context.Context, ev rdsevent.Event) (Outcome, *Pending, error) {
	tg, ignored, err := t.locate(ctx, ev)
	if err != nil || ignored != "" {
		return Outcome{Action: ActionIgnored, Cluster: tg.cluster, Instance: tg.instance, KeyARN: tg.keyARN, Reason: ignored}, nil, err
	}
	o := Outcome{Cluster: tg.cluster, Instance: tg.instance, KeyARN: tg.keyARN}
	if stale, err := t.stale(ctx, ev, tg); err != nil || stale != "" {
		o.Action, o.Reason = ActionStale, stale
		return o, nil, err
	}

	id, opened, reason, changed, err := t.incidentFor(ctx, ev, tg)
	o.Changed = changed
	if err != nil || reason != "" {
		o.Action, o.Reason = ActionIgnored, reason
		return o, nil, err
	}
	o.IncidentID = id
	return o, &Pending{t: t, ev: ev, tg: tg, opened: opened, o: Outcome{Cluster: o.Cluster, Instance: o.Instance, KeyARN: o.KeyARN, IncidentID: id}}, nil
}

// Apply is the second half of applying an RDS event (see Open): it reads the key and the
// incident's other clusters live and applies the event to the incident Open found.
// Outcome.Changed holds the incident as the event left it, when it changed. Errors: as Open's.
func (p *Pending) Apply(ctx context.Context) (Outcome, error) {
	t, ev, tg, opened, o, id := p.t, p.ev, p.tg, p.opened, p.o, p.o.IncidentID
	key, err := t.keys.Describe(ctx, tg.keyARN)
	// Denied, or not found for a key of another account: Unknown, the cluster's evidence
	// holds the incident anyway.
	key, err = lifecycle.KeyAsRead(tg.keyARN, incident.ARNAccount(aws.ToString(tg.live.DBClusterArn)), key, err)
	if err != nil {
		return o, fmt.Errorf("describe key %s: %w", tg.keyARN, err)
	}
	others, err := t.otherStatuses(ctx, id, tg.cluster, key)
	if err != nil {
		return o, err
	}

	now := t.now().UTC()
	var version int64
	got, err := t.incidents.Update(ctx, id, func(inc *incident.Incident) error {
		version = inc.Version
		if inc.State.Closed() {
			return nil // closed meanwhile: nothing left to follow
		}
		src := lifecycle.Source{EventID: ev.ID, Name: ev.EventID}
		lifecycle.SetKey(inc, key, src, now)
		lifecycle.SetClusterStatus(inc, tg.cluster, tg.clusterStatus, src, now)
		for c, status := range others {
			lifecycle.SetClusterStatus(inc, c, status, src, now)
		}
		if tg.instance != "" {
			lifecycle.SetInstanceStatus(inc, tg.instance, tg.instanceStatus)
		}
		report := lifecycle.AccessReport{Cluster: tg.cluster, Instance: tg.instance, EventID: ev.ID, Code: ev.EventID, At: ev.Time}
		if lossEvidence(ev, tg) {
			// RDS-EVENT-0418/0419, or a live status that says the cluster lost its key although
			// the event did not.
			lifecycle.KeyAccessLost(inc, report, now)
		}
		switch ev.Meaning {
		case rdsevent.KeyAccessRestored:
			lifecycle.KeyAccessRestored(inc, report, now)
		case rdsevent.Stopped:
			// RDS-EVENT-0150 dated before the key was lost: its owner stopped the cluster, and
			// remediation leaves it stopped (issue 11). Delivery order does not matter: the
			// event's own time decides.
			if tg.instance == "" {
				inc.NoteStopped(tg.cluster, ev.Time)
			}
		}
		lifecycle.Settle(inc, now)
		return nil
	})
	if err != nil {
		return o, fmt.Errorf("apply %s to incident %s: %w", ev.EventID, id, err)
	}
	switch {
	case got.State == incident.StateResolved && got.Version != version:
		o.Action = ActionResolved
	case got.State == incident.StateLost && got.Version != version:
		o.Action = ActionLost
	case opened:
		o.Action = ActionOpened
	case got.Version != version:
		o.Action = ActionUpdated
	default:
		o.Action, o.Reason = ActionUnchanged, "nothing new: a duplicate or out-of-order delivery"
		if got.State.Closed() {
			o.Reason = "the incident is " + string(got.State)
		}
	}
	if got.Version != version || opened {
		o.Changed = append(o.Changed, got)
	}
	return o, nil
}

// locate maps the event's resource to its Aurora cluster and the cluster to its storage key.
// A non-empty ignored says why the event is not keywarden's business.
func (t *Tracker) locate(ctx context.Context, ev rdsevent.Event) (tg target, ignored string, err error) {
	tg.cluster = ev.Identifier
	if !ev.IsCluster {
		tg.instance = ev.Identifier
		tg.cluster = ""
		out, err := t.rds.DescribeDBInstances(ctx, &rds.DescribeDBInstancesInput{DBInstanceIdentifier: aws.String(ev.Identifier)})
		var nf *rdstypes.DBInstanceNotFoundFault
		if errors.As(err, &nf) || (err == nil && len(out.DBInstances) == 0) {
			return tg, "instance " + ev.Identifier + " is unknown to RDS", nil
		}
		if err != nil {
			return tg, "", fmt.Errorf("describe db instance %s: %w", ev.Identifier, err)
		}
		in := out.DBInstances[0]
		tg.instanceStatus = incident.ClusterStatus(aws.ToString(in.DBInstanceStatus))
		tg.cluster = aws.ToString(in.DBClusterIdentifier)
		if tg.cluster == "" {
			return tg, "instance " + ev.Identifier + " is not a member of a DB cluster", nil
		}
	}
	c, found, err := describeCluster(ctx, t.rds, tg.cluster)
	if err != nil {
		return tg, "", err
	}
	if !found {
		return tg, "cluster " + tg.cluster + " is unknown to RDS", nil
	}
	tg.live = c
	tg.clusterStatus = incident.ClusterStatus(aws.ToString(c.Status))
	if !blast.IsAurora(aws.ToString(c.Engine)) {
		return tg, "cluster " + tg.cluster + " is not Aurora (engine " + aws.ToString(c.Engine) + ")", nil
	}
	ref := aws.ToString(c.KmsKeyId)
	if ref == "" {
		return tg, "cluster " + tg.cluster + " is not encrypted with a KMS key", nil
	}
	tg.keyARN, err = t.keys.ARN(ctx, ref)
	if errors.Is(err, kmskey.ErrNotFound) {
		return tg, "the key " + ref + " of cluster " + tg.cluster + " does not resolve (deleted?) and no incident names it", nil
	}
	if err != nil {
		return tg, "", fmt.Errorf("resolve key %s of cluster %s: %w", ref, tg.cluster, err)
	}
	return tg, "", nil
}

// stale reports why a key-access event (RDS-EVENT-0418/0419/0420) is older than the latest one
// applied for its source, "" when it is not: RDS delivers events best effort and in no
// guaranteed order ("avoid writing programs that depend on the order or existence of
// notification events", https://docs.aws.amazon.com/AmazonRDS/latest/AuroraUserGuide/working-with-events.html),
// so a 0419 dated before an applied 0420 must not reopen a healthy cluster. A stale event is
// noted on the key's open incident, when there is one.
func (t *Tracker) stale(ctx context.Context, ev rdsevent.Event, tg target) (string, error) {
	clock, ok := t.incidents.(RDSClock)
	if !ok || (ev.Meaning != rdsevent.KeyAccessLost && ev.Meaning != rdsevent.KeyAccessRestored) || ev.Time.IsZero() {
		return "", nil
	}
	applied, latestCode, latestAt, err := clock.AdvanceRDSClock(ctx, ev.Identifier, ev.EventID, ev.Time)
	if err != nil || applied {
		return "", err
	}
	reason := fmt.Sprintf("%s at %s is older than %s at %s already applied for %s: stale, nothing changed",
		ev.EventID, ev.Time.UTC().Format(time.RFC3339), latestCode, latestAt.Format(time.RFC3339), ev.Identifier)
	open, err := t.incidents.OpenFor(ctx, tg.keyARN)
	if errors.Is(err, incident.ErrNotFound) {
		return reason, nil
	}
	if err != nil {
		return reason, fmt.Errorf("find open incident for %s: %w", tg.keyARN, err)
	}
	now := t.now().UTC()
	r := lifecycle.AccessReport{Cluster: tg.cluster, Instance: tg.instance, EventID: ev.ID, Code: ev.EventID, At: ev.Time}
	if _, err := t.incidents.Update(ctx, open.ID, func(inc *incident.Incident) error {
		lifecycle.StaleReport(inc, r, latestCode, latestAt, now)
		return nil
	}); err != nil {
		return reason, fmt.Errorf("note stale %s on incident %s: %w", ev.EventID, open.ID, err)
	}
	return reason, nil
}

// incidentFor finds the open incident the event belongs to. A key-access event for a key with
// no open incident opens one through intake, whatever state KMS reports the key in: the
// CloudTrail event that made the key unusable was lost (EventBridge delivers it best effort) or
// never existed, or the key is Enabled and Aurora still cannot use it. Any other event for a key
// without an incident is not keywarden's business. reason is non-empty when there is nothing
// to do; changed is what intake changed (intake.Outcome.Changed), for the caller to announce.
func (t *Tracker) incidentFor(ctx context.Context, ev rdsevent.Event, tg target) (id string, opened bool, reason string, changed []incident.Incident, err error) {
	open, err := t.incidents.OpenFor(ctx, tg.keyARN)
	switch {
	case errors.Is(err, incident.ErrNotFound):
		if !lossEvidence(ev, tg) {
			return "", false, "no open incident for key " + tg.keyARN + ": cluster " + tg.cluster + " is not tracked", nil, nil
		}
	case err != nil:
		return "", false, "", nil, fmt.Errorf("find open incident for %s: %w", tg.keyARN, err)
	case slices.ContainsFunc(open.Clusters, func(c incident.Cluster) bool { return c.Identifier == tg.cluster }):
		return open.ID, false, "", nil, nil
	case !lossEvidence(ev, tg):
		return "", false, "cluster " + tg.cluster + " is not a dependent of incident " + open.ID, nil, nil
	}

	// Lost access with no incident, or on a cluster the open incident does not list yet:
	// intake opens, or folds and adds the cluster, by the same rules as a key event.
	who := "cluster " + tg.cluster
	if tg.instance != "" {
		who = "instance " + tg.instance + " of cluster " + tg.cluster
	}
	detail := fmt.Sprintf("RDS reported that %s cannot reach the key; the CloudTrail event that made the key unusable was not received", who)
	// ClusterLostAccess: RDS's word that the cluster cannot use the key is a loss even while
	// KMS reads Enabled (a key policy or grant shuts Aurora out, or the key came back but the
	// instances still need a reboot).
	o, err := t.opener.Ensure(ctx, intake.Signal{KeyARN: tg.keyARN, Trigger: ev.EventID, TriggerDetail: detail, At: ev.Time, EventID: ev.ID,
		ClusterLostAccess: true, Cluster: reportedCluster(tg)})
	if err != nil {
		return "", false, "", nil, fmt.Errorf("open incident for %s from %s: %w", tg.keyARN, ev.EventID, err)
	}
	switch o.Action {
	case intake.ActionOpened, intake.ActionKeyDeleted:
		// A deleted key's incident opens and closes as lost at once: still this event's opening.
		return o.IncidentID, true, "", o.Changed, nil
	case intake.ActionFolded, intake.ActionUpdated:
		return o.IncidentID, false, "", o.Changed, nil
	}
	return "", false, fmt.Sprintf("intake: %s (%s)", o.Action, o.Reason), o.Changed, nil
}

// otherStatuses reads the live status of the incident's other clusters when the key is
// Enabled, because resolving needs every dependent available, not only the one the event is
// about. Lost clusters stay lost and are not asked about.
func (t *Tracker) otherStatuses(ctx context.Context, id, except string, key kmskey.Key) (map[string]incident.ClusterStatus, error) {
	if key.State != incident.KeyStateEnabled {
		return nil, nil
	}
	inc, err := t.incidents.Get(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("read incident %s: %w", id, err)
	}
	out := map[string]incident.ClusterStatus{}
	for _, c := range inc.Clusters {
		if c.Identifier == except || c.Lost {
			continue
		}
		live, found, err := describeCluster(ctx, t.rds, c.Identifier)
		if err != nil {
			return nil, err
		}
		out[c.Identifier] = lifecycle.StatusDeleted
		if found {
			out[c.Identifier] = incident.ClusterStatus(aws.ToString(live.Status))
		}
	}
	return out, nil
}

// describeCluster reads one cluster; found is false when RDS does not know it.
func describeCluster(ctx context.Context, api RDSAPI, id string) (rdstypes.DBCluster, bool, error) {
	out, err := api.DescribeDBClusters(ctx, &rds.DescribeDBClustersInput{DBClusterIdentifier: aws.String(id)})
	var nf *rdstypes.DBClusterNotFoundFault
	if errors.As(err, &nf) || (err == nil && len(out.DBClusters) == 0) {
		return rdstypes.DBCluster{}, false, nil
	}
	if err != nil {
		return rdstypes.DBCluster{}, false, fmt.Errorf("describe db cluster %s: %w", id, err)
	}
	return out.DBClusters[0], true, nil
}
