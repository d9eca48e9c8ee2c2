// Package incident is keywarden's record of one key-loss incident: which key, who made it
// unusable, which Aurora resources depend on it, the deadlines that follow, and an append-only
// timeline of everything that happened since. It knows nothing of Lambda or Slack.
//
// The JSON form of an Incident is a contract: `keywarden incidents --json` prints it and other
// tools read it, so field names change only with that contract.
package incident

import (
	"time"
)

// State is where an incident is in its life: open → remediating → resolved, or open →
// intentional, or → lost.
type State string

const (
	StateOpen        State = "open"
	StateRemediating State = "remediating"
	StateResolved    State = "resolved"
	StateIntentional State = "intentional"
	StateLost        State = "lost"
)

// Closed reports whether no further work or reminder belongs to an incident in state s.
func (s State) Closed() bool {
	return s == StateResolved || s == StateIntentional || s == StateLost
}

// Incident is one key's loss, from the first event to its close.
type Incident struct {
	ID      string `json:"id"`
	Version int64  `json:"version"`
	State   State  `json:"state"`

	KeyARN   string `json:"key_arn"`
	KeyAlias string `json:"key_alias,omitempty"`
	// KeyState is KMS's KeyState as last read with DescribeKey (Disabled, PendingDeletion, …).
	KeyState string `json:"key_state"`
	// KeyDeletionDate is DescribeKey's DeletionDate, never CloudTrail's human-formatted string.
	KeyDeletionDate *time.Time `json:"key_deletion_date,omitempty"`
	// KeyManager is CUSTOMER or AWS; only customer-managed keys can be made unusable.
	KeyManager string `json:"key_manager,omitempty"`

	// Trigger is the event name that opened the incident (DisableKey, KMS CMK Deletion, …).
	Trigger       string `json:"trigger"`
	TriggerDetail string `json:"trigger_detail,omitempty"`
	// LostAt is when the key became unusable, as far as we know: the triggering event's time.
	LostAt    time.Time  `json:"lost_at"`
	OpenedAt  time.Time  `json:"opened_at"`
	UpdatedAt time.Time  `json:"updated_at"`
	ClosedAt  *time.Time `json:"closed_at,omitempty"`
	// Deadline is the earliest deadline of any dependent: the first moment something is lost
	// for good. Nil when no dependent has a window (every cluster is one that cannot stop, or the
	// key is pending replica deletion and no cluster has lost access).
	Deadline *time.Time `json:"deadline"`
	// Critical is set when some dependent has no recoverable window at all.
	Critical bool `json:"critical"`

	Actor      Actor `json:"actor"`
	Deliveries int   `json:"deliveries"`

	Clusters     []Cluster  `json:"clusters"`
	Instances    []Instance `json:"instances"`
	Snapshots    []Snapshot `json:"snapshots"`
	OtherEngines []Cluster  `json:"other_engines"`

	Slack *SlackRef `json:"slack,omitempty"`
	// SlackPosted counts the timeline entries already posted as replies in the message's
	// thread, over the whole timeline, elided entries included (see Store.SetSlack). Like Slack,
	// it is Slack bookkeeping, not incident state: recording it does not change Version.
	SlackPosted int     `json:"slack_posted,omitempty"`
	Timeline    []Entry `json:"timeline"`
	// TimelineElided counts the timeline entries the store dropped to keep the incident within
	// DynamoDB's item size limit; a KindElided entry marks where they were.
	TimelineElided int `json:"timeline_elided,omitempty"`
}

// Actor is who made the call, from CloudTrail's userIdentity and request context.
type Actor struct {
	ARN       string `json:"arn,omitempty"`
	Principal string `json:"principal,omitempty"`
	Type      string `json:"type,omitempty"`
	AccountID string `json:"account_id,omitempty"`
	SourceIP  string `json:"source_ip,omitempty"`
	UserAgent string `json:"user_agent,omitempty"`
}

// Name is the best single label for the actor.
func (a Actor) Name() string {
	switch {
	case a.ARN != "":
		return a.ARN
	case a.Principal != "":
		return a.Principal
	case a.Type != "":
		return a.Type
	}
	return "unknown"
}

// Cluster is one database cluster that depends on the key. The same object appears in
// `keywarden blast-radius --json` (with no deadline) and in an incident.
type Cluster struct {
	Identifier string `json:"identifier"`
	ARN        string `json:"arn"`
	Engine     string `json:"engine"`
	Status     string `json:"status"`
	// CanStop is false for global database members, clusters with cross-Region replicas and
	// Aurora Serverless v1: Aurora gives those no recoverable window.
	CanStop          bool   `json:"can_stop"`
	CannotStopReason string `json:"cannot_stop_reason,omitempty"`
	// Uses says what the key protects: storage, master-user-secret, performance-insights,
	// activity-stream.
	Uses    []string `json:"uses"`
	Members []string `json:"members,omitempty"`

	// LostAccessAt starts the cluster's 7-day recoverable window: the key event's time until an
	// RDS event says when the cluster itself noticed.
	LostAccessAt *time.Time `json:"lost_access_at,omitempty"`
	// WindowFromRDS is set once RDS-EVENT-0418/0419 said when the cluster itself lost access:
	// Aurora's clock starts then, not at the key event, so key-side evidence no longer moves it.
	WindowFromRDS bool       `json:"window_from_rds,omitempty"`
	Deadline      *time.Time `json:"deadline"`
	// Recovered is set once the cluster is available again with the key enabled.
	Recovered bool `json:"recovered,omitempty"`
	// Lost is set once the cluster reached the terminal inaccessible-encryption-credentials state.
	Lost bool `json:"lost,omitempty"`
}

// Instance is a DB instance of a dependent cluster.
type Instance struct {
	Identifier        string `json:"identifier"`
	ARN               string `json:"arn"`
	ClusterIdentifier string `json:"cluster_identifier"`
	Status            string `json:"status"`
	// Uses is non-empty when the instance itself names the key (Performance Insights).
	Uses []string `json:"uses,omitempty"`
	// LostKeyAccess is set by RDS-EVENT-0418/0419 and cleared by RDS-EVENT-0420.
	LostKeyAccess bool `json:"lost_key_access,omitempty"`
}

// Snapshot is a cluster snapshot or automated backup encrypted with the key: restoring it
// needs the key too.
type Snapshot struct {
	Identifier        string `json:"identifier"`
	ARN               string `json:"arn"`
	ClusterIdentifier string `json:"cluster_identifier"`
	// Type is manual, automated, or automated-backup (a retained DescribeDBClusterAutomatedBackups entry).
	Type string `json:"type"`
}

// SlackRef locates the incident's message.
type SlackRef struct {
	Channel string `json:"channel"`
	TS      string `json:"ts"`
}

// Entry is one line of the timeline.
type Entry struct {
	At     time.Time `json:"at"`
	Kind   string    `json:"kind"`
	Actor  string    `json:"actor,omitempty"`
	Detail string    `json:"detail"`
}

// Timeline entry kinds.
const (
	KindOpened      = "opened"
	KindDelivery    = "delivery"
	KindKeyState    = "key-state"
	KindCluster     = "cluster"
	KindSlack       = "slack"
	KindClick       = "click"
	KindDenied      = "denied"
	KindRemediation = "remediation"
	KindReminder    = "reminder"
	KindClosed      = "closed"
	KindNote        = "note"
	// KindElided marks where the store dropped older entries (see Incident.TimelineElided).
	KindElided = "elided"
)
