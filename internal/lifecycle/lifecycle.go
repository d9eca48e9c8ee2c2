// Package lifecycle holds the rules that move an open incident as its key and clusters change:
// what a live key state, a cluster or instance status, or an RDS key-access event means for the
// incident's clusters and deadlines, and when the incident is over — resolved when the key is
// Enabled and every dependent cluster is available again, lost when the key is deleted or no
// dependent can be started any more. RdsEventFunction and ReconcileFunction both apply them, so an
// incident follows the same rules whichever of the two sees a change first.
//
// The rules are functions on *incident.Incident that change it in place and append a timeline
// entry only when something really changed. They are meant to run inside incident.Store.Update,
// which writes nothing when nothing changed: a duplicate or out-of-order event, or a reconcile
// pass that finds nothing new, leaves the incident (and its version) as it was.
package lifecycle

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/kmskey"
)

// Cluster and instance statuses (DescribeDBClusters Status, DescribeDBInstances
// DBInstanceStatus) the rules look at, and one of keywarden's own.
const (
	StatusAvailable = "available"
	StatusStopped   = "stopped"
	// StatusRecoverable is where Aurora keeps a cluster for 7 days after it lost its key;
	// StartDBCluster brings it back once the key is Enabled.
	StatusRecoverable = "inaccessible-encryption-credentials-recoverable"
	// StatusTerminal is the end: only a restore from backup (which needs the key) helps.
	StatusTerminal = "inaccessible-encryption-credentials"
	// StatusDeleted is not an RDS status: keywarden records it when RDS no longer knows a
	// dependent cluster (DBClusterNotFoundFault).
	StatusDeleted = "deleted"
)

// Inaccessible reports whether status is one of Aurora's lost-key states, recoverable or not.
func Inaccessible(status string) bool {
	return strings.HasPrefix(status, StatusTerminal)
}

const keyEnabled = "Enabled"

// actor is how keywarden signs the timeline entries it writes itself.
const actor = "keywarden"

// SetKey records the key's live state and deletion date, with a timeline entry when the state
// changed. source says who looked ("reconciliation", "RDS-EVENT-0151", …).
func SetKey(inc *incident.Incident, key kmskey.Key, source string, now time.Time) {
	if key.State == "" {
		return
	}
	if inc.KeyState != key.State {
		add(inc, now, incident.KindKeyState, fmt.Sprintf("key state %s → %s (seen by %s)", or(inc.KeyState, "unknown"), key.State, source))
	}
	inc.KeyState = key.State
	if key.Manager != "" {
		inc.KeyManager = key.Manager
	}
	inc.KeyDeletionDate = nil
	if key.State == "PendingDeletion" {
		inc.KeyDeletionDate = key.DeletionDate
	}
}

// KeyDeleted returns the key as keywarden records a key DescribeKey no longer knows.
func KeyDeleted(keyARN string) kmskey.Key {
	return kmskey.Key{ARN: keyARN, State: incident.KeyStateDeleted}
}

// SetClusterStatus records a dependent cluster's live status, with a timeline entry when it
// changed; a cluster the incident does not list is ignored. It reports whether the incident
// lists the cluster.
func SetClusterStatus(inc *incident.Incident, id, status, source string, now time.Time) bool {
	i := slices.IndexFunc(inc.Clusters, func(c incident.Cluster) bool { return c.Identifier == id })
	if i < 0 {
		return false
	}
	c := &inc.Clusters[i]
	if status == "" || c.Status == status {
		return true
	}
	detail := fmt.Sprintf("cluster %s: %s → %s (seen by %s)", id, or(c.Status, "unknown"), status, source)
	switch status {
	case StatusTerminal:
		detail += "; it can no longer be started, only restored from a backup"
	case StatusDeleted:
		detail = fmt.Sprintf("cluster %s no longer exists in RDS (seen by %s)", id, source)
	}
	// A cluster started again (stopped or recoverable before) with the key Enabled has started
	// its instances, which opened the key afresh: their lost access is over even if
	// RDS-EVENT-0420, delivered best effort, never comes.
	if status == StatusAvailable && inc.KeyState == keyEnabled && restarting(c.Status) {
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
	add(inc, now, incident.KindCluster, detail)
	c.Status = status
	return true
}

// restarting reports whether a cluster in status is on its way back through StartDBCluster.
func restarting(status string) bool {
	return status == StatusStopped || status == "starting" || status == StatusRecoverable
}

// SetInstanceStatus records a member instance's live status (no timeline entry: the cluster's
// status tells the story). It reports whether the incident lists the instance.
func SetInstanceStatus(inc *incident.Incident, id, status string) bool {
	i := slices.IndexFunc(inc.Instances, func(in incident.Instance) bool { return in.Identifier == id })
	if i < 0 {
		return false
	}
	if status != "" {
		inc.Instances[i].Status = status
	}
	return true
}

// KeyAccessLost applies RDS-EVENT-0418/0419: RDS says instance (of cluster clusterID) could not
// reach the key at time at. instance is "" for an event about the cluster itself, which marks
// every member instance of the cluster (as RDS-EVENT-0420 about the cluster clears them all).
//
// A cluster's window start follows one rule on every path — triage's fold of a key event,
// this RDS event, ApplyLoss's CloudTrail look-up: the earliest evidence wins. Aurora's 7-day
// clock starts when the cluster itself noticed, which is never before the key became
// unusable, so the earliest time anyone reports can only make the deadline more cautious,
// never let it pass unseen; and because the minimum does not depend on order, duplicates and
// out-of-order deliveries (0419 before 0418, a key event folded after the RDS event) cannot
// move the deadline back and forth.
func KeyAccessLost(inc *incident.Incident, clusterID, instance, eventID string, at, now time.Time) {
	at = at.UTC()
	var changes []string
	if i := slices.IndexFunc(inc.Clusters, func(c incident.Cluster) bool { return c.Identifier == clusterID }); i >= 0 {
		c := &inc.Clusters[i]
		// The first RDS report replaces the key-side estimate, later or not: the cluster's own
		// clock is what Aurora counts (issue 4: RDS refines the window). Further reports only
		// move it earlier, so duplicates and delivery order cannot move it back and forth.
		if !c.WindowFromRDS || c.LostAccessAt == nil || at.Before(*c.LostAccessAt) {
			c.LostAccessAt = &at
			c.WindowFromRDS = true
			if c.CanStop {
				changes = append(changes, fmt.Sprintf("cluster %s's 7-day recoverable window now starts %s", clusterID, at.Format(time.RFC3339)))
			}
		}
		if c.Recovered {
			c.Recovered = false
			changes = append(changes, fmt.Sprintf("cluster %s is no longer counted as recovered", clusterID))
		}
	}
	for i := range inc.Instances {
		in := &inc.Instances[i]
		if in.LostKeyAccess || !(in.Identifier == instance || (instance == "" && in.ClusterIdentifier == clusterID)) {
			continue
		}
		in.LostKeyAccess = true
		changes = append(changes, "instance "+in.Identifier+" lost key access")
	}
	if len(changes) > 0 {
		add(inc, now, incident.KindCluster, fmt.Sprintf("%s on %s at %s: %s", eventID, or(instance, clusterID), at.Format(time.RFC3339), strings.Join(changes, "; ")))
	}
	inc.RecomputeDeadlines()
}

// KeyAccessRestored applies RDS-EVENT-0420: instance can reach the key again. For an event
// about the cluster itself (instance ""), every member instance of clusterID is cleared.
func KeyAccessRestored(inc *incident.Incident, clusterID, instance, eventID string, at, now time.Time) {
	var cleared []string
	for i := range inc.Instances {
		in := &inc.Instances[i]
		if !in.LostKeyAccess {
			continue
		}
		if in.Identifier == instance || (instance == "" && in.ClusterIdentifier == clusterID) {
			in.LostKeyAccess = false
			cleared = append(cleared, in.Identifier)
		}
	}
	if len(cleared) > 0 {
		add(inc, now, incident.KindCluster, fmt.Sprintf("%s at %s: RDS can reach the key again from %s", eventID, at.UTC().Format(time.RFC3339), strings.Join(cleared, ", ")))
	}
}

// ApplyLoss records what CloudTrail event history says made the key unusable: who, and when.
// The incident's LostAt and the window start of every cluster that starts later move to the
// call's time when it is earlier — a backstop finds a loss minutes or days after it happened —
// by the same rule as KeyAccessLost: the earliest evidence wins. A later time is recorded but
// moves nothing. The actor replaces an unknown one (see ActorUnknown).
func ApplyLoss(inc *incident.Incident, eventName, eventID string, actorOf incident.Actor, at, now time.Time) {
	at = at.UTC()
	if ActorUnknown(*inc) {
		inc.Actor = actorOf
	}
	found := fmt.Sprintf("%s%s by %s at %s", lossFound, eventName, actorOf.Name(), at.Format(time.RFC3339))
	if eventID != "" {
		found += " (event " + eventID + ")"
	}
	inc.TriggerDetail = joinDetail(inc.TriggerDetail, found)
	detail := found
	if !at.IsZero() && at.Before(inc.LostAt) {
		old := inc.LostAt
		for i := range inc.Clusters {
			c := &inc.Clusters[i]
			if !c.WindowFromRDS && c.LostAccessAt != nil && at.Before(*c.LostAccessAt) {
				c.LostAccessAt = &at
			}
		}
		inc.LostAt = at
		detail += fmt.Sprintf("; the key has been unusable since then, not since %s, and the windows start then", old.Format(time.RFC3339))
	}
	add(inc, now, incident.KindNote, detail)
	inc.RecomputeDeadlines()
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

// lossFound starts what ApplyLoss adds to TriggerDetail.
const lossFound = "CloudTrail event history: "

// LossLookedUp reports whether CloudTrail event history was already asked about the incident's
// key and answered (found or not): the answer is in TriggerDetail.
func LossLookedUp(inc incident.Incident) bool {
	return strings.Contains(inc.TriggerDetail, lossFound) || strings.Contains(inc.TriggerDetail, NoLossFound)
}

// NoLossFound is added to TriggerDetail when event history has no call that made the key
// unusable; its presence also tells the reconciler the look-up is done.
const NoLossFound = "CloudTrail event history has no call that made the key unusable: the windows start when the loss was found"

// ApplyNoLoss records that event history had nothing: the incident keeps the time the loss was
// found as its start.
func ApplyNoLoss(inc *incident.Incident, now time.Time) {
	if strings.Contains(inc.TriggerDetail, NoLossFound) {
		return
	}
	inc.TriggerDetail = joinDetail(inc.TriggerDetail, NoLossFound)
	add(inc, now, incident.KindNote, fmt.Sprintf("%s (%s)", NoLossFound, inc.LostAt.UTC().Format(time.RFC3339)))
}

// Settle brings an open incident's cluster flags and deadlines up to date with what it records
// and closes it when it is over. It returns the closing state, or "" while it stays open.
//
//   - A cluster is lost in the terminal state or once RDS no longer knows it; it is recovered
//     while it is available with the key Enabled. A recovered cluster seen without its key
//     again starts a new window from now.
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
	enabled := inc.KeyState == keyEnabled
	for i := range inc.Clusters {
		c := &inc.Clusters[i]
		switch {
		case c.Status == StatusTerminal || c.Status == StatusDeleted:
			c.Lost, c.Recovered = true, false
		case c.Status == StatusAvailable && enabled:
			c.Recovered = true
		case c.Recovered && !enabled:
			c.Recovered = false
			if c.CanStop {
				c.LostAccessAt = &now
			}
		}
	}
	inc.RecomputeDeadlines()

	var available, lost []string
	lostCluster := map[string]bool{}
	for _, c := range inc.Clusters {
		switch {
		case c.Lost:
			lost = append(lost, c.Identifier)
			lostCluster[c.Identifier] = true
		case c.Status == StatusAvailable:
			available = append(available, c.Identifier)
		}
	}
	// An instance that reported lost key access (0418/0419) with no 0420 since still needs
	// RebootDBInstance, however available its cluster reads: the incident stays open for it.
	blocked := slices.ContainsFunc(inc.Instances, func(in incident.Instance) bool {
		return in.LostKeyAccess && !lostCluster[in.ClusterIdentifier]
	})
	switch {
	case inc.KeyState == incident.KeyStateDeleted:
		Close(inc, incident.StateLost, actor, "the key was deleted: data encrypted under it cannot be recovered, and snapshots and backups encrypted with it cannot be restored", now)
	case len(inc.Clusters) > 0 && len(lost) == len(inc.Clusters):
		Close(inc, incident.StateLost, actor, "every dependent cluster is lost ("+strings.Join(lost, ", ")+"). "+restoreAdvice(inc), now)
	case blocked:
		return ""
	case enabled && len(inc.Clusters) > 0 && len(available)+len(lost) == len(inc.Clusters) && len(lost) > 0:
		Close(inc, incident.StateLost, actor, fmt.Sprintf("the key is Enabled and %s available again, but %s lost. %s",
			strings.Join(available, ", "), strings.Join(lost, ", "), restoreAdvice(inc)), now)
	case enabled && len(inc.Clusters) > 0 && len(available) == len(inc.Clusters):
		Close(inc, incident.StateResolved, actor, "the key is Enabled and every dependent cluster is available ("+strings.Join(available, ", ")+")", now)
	default:
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
	switch inc.KeyState {
	case keyEnabled:
		return s + ", which is Enabled: keep it that way."
	case "PendingDeletion", "PendingReplicaDeletion":
		return s + ": cancel its deletion and enable it first."
	}
	return s + ": make it usable again first (key is " + or(inc.KeyState, "unknown") + ")."
}

// Close ends an incident in state (resolved, intentional or lost) with a final timeline entry
// saying so and why. The timeline is kept whole; a closed incident gets no reminders. Closing
// a closed incident changes nothing.
func Close(inc *incident.Incident, state incident.State, by, why string, now time.Time) {
	if inc.State.Closed() || !state.Closed() {
		return
	}
	now = now.UTC()
	inc.State = state
	inc.ClosedAt = &now
	inc.Timeline = append(inc.Timeline, incident.Entry{At: now, Kind: incident.KindClosed, Actor: by, Detail: string(state) + ": " + why})
}

func add(inc *incident.Incident, now time.Time, kind, detail string) {
	inc.Timeline = append(inc.Timeline, incident.Entry{At: now.UTC(), Kind: kind, Actor: actor, Detail: detail})
}

func joinDetail(a, b string) string {
	if a == "" {
		return b
	}
	if strings.Contains(a, b) {
		return a
	}
	return a + "; " + b
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
