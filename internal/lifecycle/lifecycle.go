// Package lifecycle holds the rules that move an incident as its key and clusters change: what
// a live key state, a cluster or instance status, an RDS key-access event or key-side evidence
// of the loss means for the incident's clusters and deadlines, and when the incident is over —
// resolved when the key is Enabled and every dependent cluster is available again, lost when
// the key is deleted or no dependent can be started any more.
//
// It is the one owner of these rules: intake applies them to key events, lifecycle/rdstrack to
// RDS events, the reconciler to what it reads live, remedy to what it finds and does — so an
// incident follows the same rules whichever path sees a change first. The package imports only
// the incident model and kmskey's Key, so every one of those paths can call it; it must not
// import Slack (slack-go, slackmessage), a store or an AWS client.
//
// The rules are functions on *incident.Incident that change it in place and add a timeline
// entry, with a deterministic ID, only when something really changed. They are meant to run
// inside a store's Update, which writes nothing when nothing changed: a duplicate or
// out-of-order event, or a reconcile pass that finds nothing new, leaves the incident (and its
// version) as it was. Closing goes through the model's transitions (Resolve, MarkLost).
package lifecycle

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/kmskey"
)

// StatusDeleted is not an RDS status: keywarden records it when RDS no longer knows a dependent
// cluster (DBClusterNotFoundFault, or absent from DescribeDBClusters).
const StatusDeleted incident.ClusterStatus = "deleted"

// Source says what saw a change, and makes the entry that records it idempotent.
type Source struct {
	// EventID is the EventBridge ID of the event that reported the change; "" for a pass that
	// read live state (the reconciler, a remediation run).
	EventID string
	// Name is what saw it, for people: an RDS event code ("RDS-EVENT-0151"), a KMS event name,
	// "reconciliation".
	Name string
}

// Reconciliation is the Source of what a reconcile pass reads live.
var Reconciliation = Source{Name: "reconciliation"}

// entryID is the ID of the entry recording a change seen by s. An event's change is recorded
// once per event ID however often the event is delivered; a live read's change once per
// version of the incident, so the same change found again after the incident moved on (a key
// disabled, enabled and disabled again) is recorded again.
func (s Source) entryID(inc *incident.Incident, kind string, parts ...string) string {
	if s.EventID != "" {
		return incident.EntryID(append([]string{kind, s.EventID}, parts...)...)
	}
	return incident.EntryID(append(append([]string{kind, s.Name}, parts...), fmt.Sprintf("v%d", inc.Version))...)
}

func (s Source) name() string { return cmp.Or(s.Name, s.EventID) }

// SetKey records the key's live state and deletion date, with a key-change entry when a known
// state changed (a new incident's first state is its opening, not a change). Only
// PendingDeletion has a deletion date: once the key is anything else the deadline it set is
// gone (DescribeKey's DeletionDate, never CloudTrail's string).
func SetKey(inc *incident.Incident, key kmskey.Key, src Source, now time.Time) {
	state := key.State
	if state == "" {
		return
	}
	if inc.KeyState != "" && inc.KeyState != state {
		inc.AddEntry(incident.Entry{
			ID: src.entryID(inc, "key", string(state)), At: now.UTC(), Kind: incident.KindKeyChange, Actor: incident.Keywarden,
			Target: inc.KeyARN, Result: incident.Result(state), Source: src.EventID,
			Detail: fmt.Sprintf("key state %s → %s (seen by %s)", cmp.Or(string(inc.KeyState), "unknown"), state, src.name()),
		})
	}
	inc.KeyState = state
	inc.KeyStateReason = ""
	if state == incident.KeyStateUnknown {
		inc.KeyStateReason = key.StateReason
	}
	if a := incident.KeyAccount(inc.KeyARN); a != "" {
		inc.KeyAccount = a
	}
	if key.ReplicaOf != "" {
		inc.KeyReplicaOf = key.ReplicaOf
	}
	if key.Manager != "" {
		inc.KeyManager = key.Manager
	}
	inc.KeyDeletionDate = nil
	if state == incident.KeyStatePendingDeletion {
		inc.KeyDeletionDate = key.DeletionDate
	}
}

// KeyUnknown returns the key as keywarden records a key DescribeKey would not describe (access
// denied, typically a key of another account whose policy does not name this one): state
// Unknown, with why. The cluster's own evidence still holds the incident open.
func KeyUnknown(keyARN, reason string) kmskey.Key {
	return kmskey.Key{ARN: keyARN, State: incident.KeyStateUnknown, StateReason: reason}
}

// KeyAsRead is the one rule for what DescribeKey's answer about keyARN means when a cluster in
// localAccount depends on the key ("" when not known):
//
//   - AccessDeniedException (kmskey.ErrDenied): the key policy does not let this account read
//     the key — permanent, so the key is recorded as Unknown with why, not retried;
//   - NotFoundException for a key of another account: deleted, or not shared with this account;
//     only its owner can tell, so Unknown too — never "deleted", which would close the
//     incident as lost;
//   - NotFoundException for a key of this account: Deleted.
//
// Any other error is returned as it is (a retry may help).
func KeyAsRead(keyARN, localAccount string, key kmskey.Key, err error) (kmskey.Key, error) {
	account := incident.KeyAccount(keyARN)
	switch {
	case err == nil:
		return key, nil
	case errors.Is(err, kmskey.ErrDenied):
		reason := "DescribeKey was denied"
		if account != "" {
			reason += " (the key belongs to account " + account + "; its key policy decides who may read it)"
		}
		return KeyUnknown(keyARN, reason), nil
	case errors.Is(err, kmskey.ErrNotFound):
		if account != "" && localAccount != "" && account != localAccount {
			return KeyUnknown(keyARN, "DescribeKey answered NotFound for a key of account "+account+
				": deleted, or not shared with this account; only its owner can tell"), nil
		}
		return KeyDeleted(keyARN), nil
	}
	return key, err
}

// LocalAccount is the account of the incident's clusters, as their ARNs say; "" when none is
// known.
func LocalAccount(inc incident.Incident) string {
	for _, c := range inc.Clusters {
		if c.Account != "" {
			return c.Account
		}
		if a := incident.ARNAccount(c.ARN); a != "" {
			return a
		}
	}
	return ""
}

// KeyDeleted returns the key as keywarden records a key DescribeKey no longer knows.
func KeyDeleted(keyARN string) kmskey.Key {
	return kmskey.Key{ARN: keyARN, State: incident.KeyStateDeleted}
}

// SetClusterStatus records a dependent cluster's live status, with a cluster-change entry when
// it changed; a cluster the incident does not list is ignored. It reports whether the incident
// lists the cluster.
//
// A cluster started again (stopped or recoverable before) that reads available with the key
// Enabled has started its instances, which opened the key afresh: their lost access is over
// even if RDS-EVENT-0420, delivered best effort, never comes.
func SetClusterStatus(inc *incident.Incident, id string, status incident.ClusterStatus, src Source, now time.Time) bool {
	i := slices.IndexFunc(inc.Clusters, func(c incident.Cluster) bool { return c.Identifier == id })
	if i < 0 {
		return false
	}
	c := &inc.Clusters[i]
	if status == "" || c.Status == status {
		return true
	}
	detail := fmt.Sprintf("cluster %s: %s → %s (seen by %s)", id, cmp.Or(string(c.Status), "unknown"), status, src.name())
	switch status {
	case incident.StatusTerminal:
		detail += "; it can no longer be started, only restored from a backup"
	case StatusDeleted:
		detail = fmt.Sprintf("cluster %s no longer exists in RDS (seen by %s)", id, src.name())
	}
	if status.Inaccessible() {
		// The cluster's own status says it lost the key: evidence as good as RDS-EVENT-0419.
		c.LostKeyAccess = true
	}
	if status == incident.StatusAvailable && keyMayWork(inc.KeyState) && restarting(c.Status) {
		// StartDBCluster succeeded, so the cluster reached its key: whatever it reported
		// before is over.
		c.LostKeyAccess = false
		var cleared []string
		for i := range inc.Instances {
			if in := &inc.Instances[i]; in.ClusterIdentifier == id && in.LostKeyAccess {
				in.LostKeyAccess = false
				cleared = append(cleared, in.Identifier)
			}
		}
		if len(cleared) > 0 {
			detail += "; it started with the key Enabled, so " + strings.Join(cleared, ", ") + " can reach the key again"
		}
	}
	inc.AddEntry(incident.Entry{
		ID: src.entryID(inc, "cluster", id, string(status)), At: now.UTC(), Kind: incident.KindClusterChange, Actor: incident.Keywarden,
		Target: id, Result: incident.Result(status), Source: src.EventID, Detail: detail,
	})
	c.Status = status
	return true
}

// keyMayWork reports whether the key may be usable by the cluster: Enabled, or Unknown (not
// readable by this deployment, a key of another account) — then only the cluster's own
// evidence (RDS-EVENT-0420, a status read showing it back) can say it is back.
func keyMayWork(s incident.KeyState) bool {
	return s == incident.KeyStateEnabled || s == incident.KeyStateUnknown
}

// restarting reports whether a cluster in status is on its way back through StartDBCluster.
func restarting(status incident.ClusterStatus) bool {
	return status.Startable() || status == incident.StatusStarting
}

// SetInstanceStatus records a member instance's live status (no timeline entry: the cluster's
// status tells the story). It reports whether the incident lists the instance.
func SetInstanceStatus(inc *incident.Incident, id string, status incident.ClusterStatus) bool {
	i := slices.IndexFunc(inc.Instances, func(in incident.Instance) bool { return in.Identifier == id })
	if i < 0 {
		return false
	}
	if status != "" {
		inc.Instances[i].Status = status
	}
	return true
}

// AccessReport is what an RDS key-access event (RDS-EVENT-0418/0419/0420) says.
type AccessReport struct {
	// Cluster is the cluster the event is about, or the cluster of its instance.
	Cluster string
	// Instance is the instance the event is about; "" for an event about the cluster itself,
	// which concerns every member instance.
	Instance string
	// EventID is the EventBridge event ID; Code is RDS's catalogue ID (RDS-EVENT-0418).
	EventID, Code string
	// At is when RDS says it happened.
	At time.Time
}

func (r AccessReport) target() string { return cmp.Or(r.Instance, r.Cluster) }

// entryID is the ID of the entry the report adds: one per event, however often delivered.
func (r AccessReport) entryID() string {
	if r.EventID != "" {
		return incident.EntryID("rds", r.EventID)
	}
	return incident.EntryID("rds", r.Code, r.target(), r.At.UTC().Format(time.RFC3339Nano))
}

func (r AccessReport) concerns(in incident.Instance) bool {
	return in.Identifier == r.Instance || (r.Instance == "" && in.ClusterIdentifier == r.Cluster)
}

// KeyAccessLost applies RDS-EVENT-0418/0419: RDS says an instance (or the cluster) could not
// reach the key at r.At.
//
// The first RDS report replaces the key-side estimate of the cluster's window start, later or
// not: Aurora's 7-day clock starts when the cluster itself noticed (RDS refines the window).
// Further reports only move it earlier, so duplicates and out-of-order deliveries (0419 before
// 0418, a key event folded after the RDS event) cannot move the deadline back and forth; and
// key-side evidence (KeyEvidence) no longer moves it at all.
func KeyAccessLost(inc *incident.Incident, r AccessReport, now time.Time) {
	at := r.At.UTC()
	var changes []string
	if i := slices.IndexFunc(inc.Clusters, func(c incident.Cluster) bool { return c.Identifier == r.Cluster }); i >= 0 {
		c := &inc.Clusters[i]
		if !c.WindowFromRDS || c.LostAccessAt == nil || at.Before(*c.LostAccessAt) {
			c.LostAccessAt = &at
			c.WindowFromRDS = true
			// The cluster's own report dates the window: it is no longer an estimate.
			inc.WindowEstimated = false
			if c.CanStop {
				changes = append(changes, fmt.Sprintf("cluster %s's 7-day recoverable window now starts %s", r.Cluster, at.Format(time.RFC3339)))
			}
		}
		if c.Recovered {
			c.Recovered = false
			changes = append(changes, fmt.Sprintf("cluster %s is no longer counted as recovered", r.Cluster))
		}
		// A report about the cluster itself, or about an instance the incident does not list,
		// holds the cluster; an instance's report holds it through the instance's own flag
		// (see Holding), which StartDBCluster and RDS-EVENT-0420 clear.
		listed := slices.ContainsFunc(inc.Instances, func(in incident.Instance) bool { return r.concerns(in) })
		if !c.LostKeyAccess && (r.Instance == "" || !listed) {
			c.LostKeyAccess = true
			changes = append(changes, fmt.Sprintf("cluster %s reports it cannot reach the key", r.Cluster))
		}
	}
	for i := range inc.Instances {
		in := &inc.Instances[i]
		if in.LostKeyAccess || !r.concerns(*in) {
			continue
		}
		in.LostKeyAccess = true
		changes = append(changes, "instance "+in.Identifier+" lost key access")
	}
	if len(changes) > 0 {
		inc.AddEntry(incident.Entry{
			ID: r.entryID(), At: now.UTC(), Kind: incident.KindRDSEvent, Actor: incident.Keywarden, Target: r.target(),
			Result: incident.Result(r.Code), Source: r.EventID,
			Detail: fmt.Sprintf("%s on %s at %s: %s", r.Code, r.target(), at.Format(time.RFC3339), strings.Join(changes, "; ")),
		})
	}
	inc.RecomputeDeadlines()
}

// KeyAccessRestored applies RDS-EVENT-0420: the instance (or, for an event about the cluster,
// every member instance) can reach the key again.
func KeyAccessRestored(inc *incident.Incident, r AccessReport, now time.Time) {
	var cleared []string
	for i := range inc.Instances {
		in := &inc.Instances[i]
		if in.LostKeyAccess && r.concerns(*in) {
			in.LostKeyAccess = false
			cleared = append(cleared, in.Identifier)
		}
	}
	// The cluster is back when the event is about the cluster itself, or no member instance
	// still reports lost access.
	if i := slices.IndexFunc(inc.Clusters, func(c incident.Cluster) bool { return c.Identifier == r.Cluster }); i >= 0 && inc.Clusters[i].LostKeyAccess {
		still := slices.ContainsFunc(inc.Instances, func(in incident.Instance) bool { return in.ClusterIdentifier == r.Cluster && in.LostKeyAccess })
		if r.Instance == "" || !still {
			inc.Clusters[i].LostKeyAccess = false
			cleared = append(cleared, "cluster "+r.Cluster)
		}
	}
	if len(cleared) > 0 {
		inc.AddEntry(incident.Entry{
			ID: r.entryID(), At: now.UTC(), Kind: incident.KindRDSEvent, Actor: incident.Keywarden, Target: r.target(),
			Result: incident.Result(r.Code), Source: r.EventID,
			Detail: fmt.Sprintf("%s at %s: RDS can reach the key again from %s", r.Code, r.At.UTC().Format(time.RFC3339), strings.Join(cleared, ", ")),
		})
	}
}

// StaleReport records that an RDS key-access event arrived older than the latest one already
// applied for its source (RDS delivers best effort and out of order; aws-facts §8): it changes
// nothing, and the timeline says so once per event.
func StaleReport(inc *incident.Incident, r AccessReport, latestCode string, latestAt, now time.Time) {
	inc.AddEntry(incident.Entry{
		ID: incident.EntryID("rds-stale", r.entryID()), At: now.UTC(), Kind: incident.KindNote, Actor: incident.Keywarden,
		Target: r.target(), Result: incident.ResultSkipped, Source: r.EventID,
		Detail: fmt.Sprintf("%s on %s at %s is stale: %s at %s was already applied for %s, so it changes nothing",
			r.Code, r.target(), r.At.UTC().Format(time.RFC3339), cmp.Or(latestCode, "a newer event"), latestAt.UTC().Format(time.RFC3339), r.target()),
	})
}

// KeyEvidence applies key-side evidence that the key has been unusable since at (a key event,
// CloudTrail's event history) to one cluster: a cluster that can stop starts its window then,
// unless an earlier report already started it or RDS dated it (KeyAccessLost): the cluster's
// own report beats the key side's estimate. It reports whether the window start moved.
//
// With KeyAccessLost this is the one rule for a window's start on every path, and the earliest
// evidence wins: Aurora's clock starts when the cluster noticed, which is never before the key
// became unusable, so the earliest time anyone reports can only make the deadline more
// cautious; and because the minimum does not depend on order, neither does the deadline.
func KeyEvidence(c *incident.Cluster, at time.Time) bool {
	at = at.UTC()
	if !c.CanStop || c.WindowFromRDS || (c.LostAccessAt != nil && !at.Before(*c.LostAccessAt)) {
		return false
	}
	c.LostAccessAt = &at
	return true
}

// HistorySource is the Source of the note that records RDS event history's answer
// (ApplyHistory); HistoryLookedUp finds it.
const HistorySource = "rds-event-history"

// ApplyHistory applies what rds:DescribeEvents (RDS's 14-day event history) says of the
// incident's instances and clusters: each RDS-EVENT-0418/0419 found is a key-access report
// dated by RDS (KeyAccessLost), so a loss the backstop found late gets the window Aurora
// really runs, not one from "now". The answer, found or not, is a note with Source
// HistorySource, so it is asked once.
func ApplyHistory(inc *incident.Incident, reports []AccessReport, now time.Time) {
	for _, r := range reports {
		KeyAccessLost(inc, r, now)
	}
	detail := "RDS event history (14 days) has no RDS-EVENT-0418/0419 for the incident's clusters and instances"
	result := incident.ResultSkipped
	if len(reports) > 0 {
		earliest := reports[0].At
		for _, r := range reports[1:] {
			if r.At.Before(earliest) {
				earliest = r.At
			}
		}
		detail = fmt.Sprintf("RDS event history: %d key-access report(s), the earliest at %s: the windows start then", len(reports), earliest.UTC().Format(time.RFC3339))
		result = incident.ResultOK
	}
	inc.AddEntry(incident.Entry{
		ID: incident.EntryID(HistorySource), At: now.UTC(), Kind: incident.KindNote, Actor: incident.Keywarden,
		Target: inc.KeyARN, Result: result, Source: HistorySource, Detail: detail,
	})
	inc.RecomputeDeadlines()
}

// HistoryLookedUp reports whether RDS event history was already asked about the incident.
func HistoryLookedUp(inc incident.Incident) bool {
	return slices.ContainsFunc(inc.Timeline, func(e incident.Entry) bool {
		return e.Kind == incident.KindNote && e.Source == HistorySource
	})
}

// LookupSource is the Source of the note that records CloudTrail event history's answer about
// who made the key unusable (ApplyLoss, ApplyNoLoss); LossLookedUp finds it.
const LookupSource = "cloudtrail-lookup"

// Loss is the call CloudTrail event history names as the one that made the key unusable.
type Loss struct {
	EventName string
	// EventID is CloudTrail's event ID, when known.
	EventID string
	Actor   incident.Actor
	At      time.Time
}

// ApplyLoss records what CloudTrail event history says made the key unusable: who, and when.
// The incident's LostAt and the window start of every cluster moves to the call's time when it
// is earlier (KeyEvidence) — a backstop finds a loss minutes or days after it happened. A later
// time is recorded but moves nothing. The actor replaces an unknown one (see ActorUnknown).
// The answer is a note with Source LookupSource and Result ok.
func ApplyLoss(inc *incident.Incident, l Loss, now time.Time) {
	at := l.At.UTC()
	if ActorUnknown(*inc) {
		inc.Actor = l.Actor
	}
	found := fmt.Sprintf("CloudTrail event history: %s by %s at %s", l.EventName, l.Actor.Name(), at.Format(time.RFC3339))
	if l.EventID != "" {
		found += " (event " + l.EventID + ")"
	}
	detail := found
	if !at.IsZero() {
		// The call that made the key unusable dates the loss: no longer an estimate.
		inc.WindowEstimated = false
	}
	if !at.IsZero() && at.Before(inc.LostAt) {
		old := inc.LostAt
		for i := range inc.Clusters {
			KeyEvidence(&inc.Clusters[i], at)
		}
		inc.LostAt = at
		detail += fmt.Sprintf("; the key has been unusable since then, not since %s, and the windows start then", old.Format(time.RFC3339))
	}
	added := inc.AddEntry(incident.Entry{
		ID: incident.EntryID(LookupSource, "found", cmp.Or(l.EventID, at.Format(time.RFC3339Nano))), At: now.UTC(), Kind: incident.KindNote,
		Actor: incident.Keywarden, Target: inc.KeyARN, Result: incident.ResultOK, Source: LookupSource, Detail: detail,
	})
	if added {
		// For people reading the message; nothing reads it back.
		inc.TriggerDetail = joinDetail(inc.TriggerDetail, found)
	}
	inc.RecomputeDeadlines()
}

// NoLossFound is what the incident says when event history has no call that made the key
// unusable.
const NoLossFound = "CloudTrail event history has no call that made the key unusable: the windows start when the loss was found"

// ApplyNoLoss records that event history had nothing: the incident keeps the time the loss was
// found as its start. The answer is a note with Source LookupSource and Result skipped.
func ApplyNoLoss(inc *incident.Incident, now time.Time) {
	added := inc.AddEntry(incident.Entry{
		ID: incident.EntryID(LookupSource, "none"), At: now.UTC(), Kind: incident.KindNote, Actor: incident.Keywarden,
		Target: inc.KeyARN, Result: incident.ResultSkipped, Source: LookupSource,
		Detail: fmt.Sprintf("%s (%s)", NoLossFound, inc.LostAt.UTC().Format(time.RFC3339)),
	})
	if added {
		inc.TriggerDetail = joinDetail(inc.TriggerDetail, NoLossFound)
	}
}

// LossLookedUp reports whether CloudTrail event history was already asked about the incident's
// key and answered, found or not: a note with Source LookupSource is on the timeline.
func LossLookedUp(inc incident.Incident) bool {
	return slices.ContainsFunc(inc.Timeline, func(e incident.Entry) bool {
		return e.Kind == incident.KindNote && e.Source == LookupSource
	})
}

// ActorUnknown reports whether the incident does not say who made its key unusable: no actor
// at all, or KMS itself — the actor of KMS's own events ("KMS CMK Deletion"), which name the
// service that carried out the deletion, not whoever scheduled it.
func ActorUnknown(inc incident.Incident) bool {
	a := inc.Actor
	return a == (incident.Actor{}) || (a.ARN == "" && a.Type == "AWSService" && a.Principal == kmsService)
}

// kmsService is the principal of KMS's own events.
const kmsService = "kms.amazonaws.com"

// MarkClusters brings the clusters' Recovered and Lost flags and the deadlines up to date with
// their recorded status: a cluster is lost in the terminal state or once RDS no longer knows
// it; it is recovered while it is available with the key Enabled. A recovered cluster seen
// without its key again starts a new window from now.
func MarkClusters(inc *incident.Incident, now time.Time) {
	now = now.UTC()
	enabled := keyMayWork(inc.KeyState)
	for i := range inc.Clusters {
		c := &inc.Clusters[i]
		switch {
		case c.Status == incident.StatusTerminal || c.Status == StatusDeleted:
			c.Lost, c.Recovered = true, false
		case Holding(inc, c.Identifier):
			// The cluster's own report beats the key side: not recovered whatever the key reads.
			c.Recovered = false
		case c.Settled() && enabled:
			c.Recovered = true
		case c.Recovered && !enabled:
			c.Recovered = false
			if c.CanStop {
				c.LostAccessAt = &now
			}
		}
	}
	inc.RecomputeDeadlines()
}

// Holding reports whether cluster id still reports lost key access: by itself (its
// LostKeyAccess, from a report about the cluster or an inaccessible status) or through one of
// its instances (RDS-EVENT-0418/0419 with no 0420 or start since). While it holds, the cluster
// is not recovered and keeps its window, whatever DescribeKey says.
func Holding(inc *incident.Incident, id string) bool {
	i := slices.IndexFunc(inc.Clusters, func(c incident.Cluster) bool { return c.Identifier == id })
	if i >= 0 && inc.Clusters[i].LostKeyAccess {
		return true
	}
	return slices.ContainsFunc(inc.Instances, func(in incident.Instance) bool { return in.ClusterIdentifier == id && in.LostKeyAccess })
}

// Settle brings an active incident's cluster flags and deadlines up to date (MarkClusters) and
// closes it when it is over. It returns the closing state, or "" while it stays active.
//
//   - The incident is lost when the key is deleted, or when every dependent cluster is lost.
//   - With the key Enabled and every cluster available it is resolved; when some clusters are
//     available and the rest lost, it is lost, naming what recovery remains. Neither happens
//     while an instance of a cluster not lost still has LostKeyAccess (RDS-EVENT-0418/0419
//     with no 0420 since): it needs RebootDBInstance first.
func Settle(inc *incident.Incident, now time.Time) incident.State {
	if inc.State.Closed() {
		return ""
	}
	now = now.UTC()
	MarkClusters(inc, now)

	enabled := keyMayWork(inc.KeyState)
	var available, lost []string
	lostCluster := map[string]bool{}
	for _, c := range inc.Clusters {
		switch {
		case c.Lost:
			lost = append(lost, c.Identifier)
			lostCluster[c.Identifier] = true
		case c.Settled():
			available = append(available, c.Identifier) // available, or stopped by its owner
		}
	}
	blocked := slices.ContainsFunc(inc.Instances, func(in incident.Instance) bool {
		return in.LostKeyAccess && !lostCluster[in.ClusterIdentifier]
	}) || slices.ContainsFunc(inc.Clusters, func(c incident.Cluster) bool { return c.LostKeyAccess && !c.Lost })
	var err error
	switch {
	case inc.KeyState == incident.KeyStateDeleted && inc.KeyReplicaOf != "":
		// A deleted multi-Region replica is the one deleted key that comes back: ReplicateKey
		// on its primary re-creates it (ScheduleKeyDeletion API reference; aws-facts §8). The
		// incident stays open and says how (Incident.Fixable).
		return ""
	case enabled && len(inc.Clusters) == 0 && inc.SnapshotOnly() && inc.KeyState == incident.KeyStateEnabled:
		err = inc.Resolve(incident.Keywarden, "the key is Enabled again: the snapshots and backups encrypted with it can be restored", now)
	case inc.KeyState == incident.KeyStateDeleted:
		err = inc.MarkLost(incident.Keywarden, "the key was deleted: data encrypted under it cannot be recovered, and snapshots and backups encrypted with it cannot be restored", now)
	case len(inc.Clusters) > 0 && len(lost) == len(inc.Clusters):
		err = inc.MarkLost(incident.Keywarden, "every dependent cluster is lost ("+strings.Join(lost, ", ")+"). "+restoreAdvice(inc), now)
	case blocked:
		return ""
	case enabled && len(inc.Clusters) > 0 && len(available)+len(lost) == len(inc.Clusters) && len(lost) > 0:
		err = inc.MarkLost(incident.Keywarden, fmt.Sprintf("the key is Enabled and %s available again, but %s lost. %s",
			strings.Join(available, ", "), strings.Join(lost, ", "), restoreAdvice(inc)), now)
	case enabled && len(inc.Clusters) > 0 && len(available) == len(inc.Clusters):
		err = inc.Resolve(incident.Keywarden, "the key is Enabled and every dependent cluster is available ("+strings.Join(available, ", ")+")", now)
	default:
		return ""
	}
	if err != nil {
		// Not reachable: an active incident may be resolved or lost.
		return ""
	}
	return inc.State
}

// restoreAdvice says what recovery remains once clusters are lost: a restore from a snapshot
// or point in time, which needs the key.
func restoreAdvice(inc *incident.Incident) string {
	s := "What remains is a restore from a snapshot or to a point in time"
	if n := len(inc.Snapshots); n > 0 {
		s += fmt.Sprintf(" (%d snapshot(s) or backup(s) are encrypted with the key)", n)
	}
	s += ", and both need the key"
	switch {
	case inc.KeyState == incident.KeyStateEnabled:
		return s + ", which is Enabled: keep it that way."
	case inc.KeyState.PendingDeletion():
		return s + ": cancel its deletion and enable it first."
	}
	return s + ": make it usable again first (key is " + cmp.Or(string(inc.KeyState), "unknown") + ")."
}

// joinDetail appends b to the people's text a, once.
func joinDetail(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}
