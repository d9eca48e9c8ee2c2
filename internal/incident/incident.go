// Package incident is keywarden's model of one key-loss incident: which key, who made it
// unusable, which Aurora resources depend on it, the deadlines that follow, who approved what,
// how far remediation got, and a typed timeline of everything that happened since.
//
// It is the model only: it must not import the AWS SDK, Slack or any other keywarden package
// (a test checks `go list -deps`), so a parser or a renderer can use it without linking the database; the DynamoDB
// store lives in incident/dynamostore.
//
// # The state machine
//
// Every change of State goes through one method, which refuses an illegal change with a
// *TransitionError (errors.Is(err, ErrIllegalTransition)):
//
//	             Approve (quorum met)              Resolve
//	┌────────┐ ──StartRemediation──▶ ┌─────────────┐ ───────▶ ┌──────────┐
//	│  open  │                       │ remediating │          │ resolved │
//	└────────┘ ◀──────GiveBack────── └─────────────┘          └──────────┘
//	  │  │  │                              │                        ▲
//	  │  │  └────────────Resolve───────────┼────────────────────────┘
//	  │  └──MarkIntentional──▶ intentional │
//	  └──────MarkLost──────────▶  lost  ◀──┘ MarkLost
//
// resolved, intentional and lost are closed: nothing leaves them. GiveBack is "give the
// incident back to the approvers": a remediation that failed, stalled or could not be handed
// off ends, the approval round it spent is over, and the message offers the button again.
//
// # The record is typed
//
// Decisions read fields, never text: approvals are Approval values, remediation progress is
// Remediation with its StepRecord values, deliveries count distinct event IDs. Timeline entries
// carry a Kind, actor, target, Result and the ID of the event or click that caused them; their
// Detail is words for people, rendered into Slack and never read back.
//
// The JSON form of an Incident is a contract: `keywarden incidents --json` prints it and other
// tools read it, so field names change only with that contract.
package incident

import (
	"time"
)

// Incident is one key's loss, from the first event to its close.
type Incident struct {
	ID      string `json:"id"`
	Version int64  `json:"version"`
	State   State  `json:"state"`

	KeyARN   string `json:"key_arn"`
	KeyAlias string `json:"key_alias,omitempty"`
	// KeyState is KMS's KeyState as last read with DescribeKey (Disabled, PendingDeletion, …),
	// or KeyStateDeleted.
	KeyState KeyState `json:"key_state"`
	// KeyDeletionDate is DescribeKey's DeletionDate, never CloudTrail's human-formatted string.
	KeyDeletionDate *time.Time `json:"key_deletion_date,omitempty"`
	// KeyManager is CUSTOMER or AWS; only customer-managed keys can be made unusable.
	KeyManager string `json:"key_manager,omitempty"`
	// KeyStateReason says why KeyState is KeyStateUnknown (DescribeKey denied, the key in
	// another account, …); empty otherwise.
	KeyStateReason string `json:"key_state_reason,omitempty"`
	// KeyAccount is the AWS account that owns the key (from its ARN): only that account can
	// enable it or cancel its deletion.
	KeyAccount string `json:"key_account"`
	// Severity is how loud the incident is: critical, high or low (SeverityAt is the rule;
	// RecomputeDeadlines stores the part that does not depend on the clock, and the CLI prints
	// SeverityAt(now)).
	Severity Severity `json:"severity"`
	// KeyReplicaOf is the primary key's ARN when the key is a multi-Region replica: deleting a
	// replica is recoverable, ReplicateKey on the primary re-creates it.
	KeyReplicaOf string `json:"key_replica_of,omitempty"`
	// WindowEstimated is set when no evidence dated the loss and the window runs from when
	// keywarden found it: the real deadline may be earlier.
	WindowEstimated bool `json:"window_estimated"`
	// RadiusIncomplete is set when some part of the blast radius could not be read (a listing
	// failed after retries, an account could not be searched): the next delivery or reconcile
	// completes it.
	RadiusIncomplete bool `json:"radius_incomplete"`
	// Organization is set when the incident was opened by an organization-mode deployment
	// (issue 13): its dependents were searched across the organisation's accounts, and Slack and
	// the CLI group them by account. Never set in account mode.
	Organization bool `json:"organization,omitempty"`
	// AccountsFailed are the accounts the latest organisation-wide search could not read, with
	// why (organization mode only); RadiusIncomplete is set while there are any.
	AccountsFailed []AccountFailure `json:"accounts_failed,omitempty"`
	// AccountNames maps account IDs to their names as Organizations gave them (organization mode,
	// when the accounts were listed from Organizations).
	AccountNames map[string]string `json:"account_names,omitempty"`

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

	Actor Actor `json:"actor"`
	// Deliveries counts the distinct events (EventBridge event IDs) folded into the incident; a
	// redelivery of one event does not count again (see RecordDelivery).
	Deliveries int `json:"deliveries"`

	Clusters     []Cluster  `json:"clusters"`
	Instances    []Instance `json:"instances"`
	Snapshots    []Snapshot `json:"snapshots"`
	OtherEngines []Cluster  `json:"other_engines"`
	// InstanceCount and SnapshotCount are len(Instances) and len(Snapshots) as of the last
	// write (see Count): listings that read only incidents' heads still show the sizes.
	InstanceCount int `json:"instance_count"`
	SnapshotCount int `json:"snapshot_count"`

	// Approvals is every approval ever given, in order, never trimmed; the ones of the current
	// ApprovalRound count towards the quorum (see Approve).
	Approvals []Approval `json:"approvals"`
	// ApprovalRound counts the remediation rounds started: each StartRemediation spends the
	// round's approvals and opens the next, so a reopened incident needs a fresh quorum.
	ApprovalRound int `json:"approval_round"`
	// Remediation is the latest remediation run and its steps.
	Remediation Remediation `json:"remediation"`

	Slack *SlackRef `json:"slack,omitempty"`
	// SlackDelivery is whether the incident has been heard in Slack: delivered, pending (to
	// retry) or failed (Slack refuses in a way retrying cannot fix; the fallback was used).
	SlackDelivery SlackDelivery `json:"slack_delivery"`
	// SlackPosted is the Seq of the last timeline entry posted as a reply in the message's
	// thread; entries with a higher Seq are still to post. Like Slack, it is Slack bookkeeping,
	// not incident state: the store records it without a new Version.
	SlackPosted int64 `json:"slack_posted,omitempty"`
	// SlackShown is the Version the Slack message last showed: a higher Version is a message
	// change still to deliver (see SlackOutbox). Slack bookkeeping, recorded without a new
	// Version.
	SlackShown int64 `json:"slack_shown,omitempty"`
	// TimelineSeq is the highest Seq given to a timeline entry so far.
	TimelineSeq int64   `json:"timeline_seq,omitempty"`
	Timeline    []Entry `json:"timeline"`
}

// Count sets InstanceCount and SnapshotCount from the slices; the store calls it before each
// write.
func (inc *Incident) Count() {
	inc.InstanceCount = len(inc.Instances)
	inc.SnapshotCount = len(inc.Snapshots)
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
	Identifier string        `json:"identifier"`
	ARN        string        `json:"arn"`
	Engine     string        `json:"engine"`
	Status     ClusterStatus `json:"status"`
	// Account is the AWS account the cluster lives in.
	Account string `json:"account,omitempty"`
	// CanStop is false for global database members, clusters with cross-Region replicas and
	// Aurora Serverless v1: Aurora gives those no recoverable window (see CannotStopReason).
	CanStop          bool   `json:"can_stop"`
	CannotStopReason string `json:"cannot_stop_reason"`
	// Uses says what the key protects: storage, master-user-secret, performance-insights,
	// activity-stream.
	Uses    []string `json:"uses"`
	Members []string `json:"members,omitempty"`

	// LostAccessAt starts the cluster's 7-day recoverable window: the key event's time until an
	// RDS event says when the cluster itself noticed.
	LostAccessAt *time.Time `json:"lost_access_at"`
	// WindowFromRDS is set once RDS-EVENT-0418/0419 said when the cluster itself lost access:
	// Aurora's clock starts then, not at the key event, so key-side evidence no longer moves it.
	WindowFromRDS bool       `json:"window_from_rds,omitempty"`
	Deadline      *time.Time `json:"deadline"`
	// LostKeyAccess is set while the cluster itself reports it cannot reach the key
	// (RDS-EVENT-0418/0419 about the cluster or one of its instances, or an inaccessible
	// status), whatever DescribeKey says; RDS-EVENT-0420 or a status read that shows the cluster
	// back clears it. While set the cluster keeps its window and does not count as recovered.
	LostKeyAccess bool `json:"lost_key_access,omitempty"`
	// Recovered is set once the cluster is available again with the key enabled.
	Recovered bool `json:"recovered,omitempty"`
	// Lost is set once the cluster reached the terminal inaccessible-encryption-credentials state.
	Lost bool `json:"lost,omitempty"`
	// LiveKeyARN is the cluster's storage key as RDS reported it at the last live read, as a
	// key ARN; empty when not read. Remediation starts only clusters whose live key is the
	// incident's (IAM cannot scope StartDBCluster by key).
	LiveKeyARN string `json:"live_key_arn,omitempty"`
	// StoppedBeforeLoss is set when the cluster was stopped before the key was lost (its RDS
	// events or the incident's record say so, see NoteStopped): its owner stopped it, and
	// remediation leaves it stopped.
	StoppedBeforeLoss bool `json:"stopped_before_loss,omitempty"`
}

// Instance is a DB instance of a dependent cluster.
type Instance struct {
	Identifier        string        `json:"identifier"`
	ARN               string        `json:"arn"`
	ClusterIdentifier string        `json:"cluster_identifier"`
	Status            ClusterStatus `json:"status"`
	// Account is the AWS account the instance lives in.
	Account string `json:"account,omitempty"`
	// Uses is non-empty when the instance itself names the key (Performance Insights).
	Uses []string `json:"uses,omitempty"`
	// LostKeyAccess is set by RDS-EVENT-0418/0419 and cleared by RDS-EVENT-0420, or by
	// WatchInstances after a grace period available with the key Enabled.
	LostKeyAccess bool `json:"lost_key_access,omitempty"`
	// LostAccessAt is when the instance last reported losing the key (RDS-EVENT-0418/0419).
	LostAccessAt *time.Time `json:"lost_access_at,omitempty"`
	// WatchSince is when the watch of an instance that lost the key began (the key read
	// Enabled); AvailableSince is since when it has been seen available without a break. Both
	// belong to WatchInstances.
	WatchSince     *time.Time `json:"watch_since,omitempty"`
	AvailableSince *time.Time `json:"available_since,omitempty"`
	// NeedsReboot is set when the instance still reported the loss a grace period after the key
	// came back: the message offers its own Reboot instance button.
	NeedsReboot bool `json:"needs_reboot,omitempty"`
	// Reboot is the instance's own Reboot instance approval and run (ApproveReboot), never part
	// of the one click.
	Reboot *InstanceReboot `json:"reboot,omitempty"`
}

// InstanceReboot is the approval and progress of one instance's reboot.
type InstanceReboot struct {
	// Approvals of this reboot, by distinct users; the quorum is the deployment's.
	Approvals []Approval `json:"approvals"`
	// RunID names the approved reboot, which RemediateFunction claims (State approved →
	// running) before it calls RebootDBInstance.
	RunID string           `json:"run_id,omitempty"`
	State RemediationState `json:"state"`
}

// Snapshot is a cluster snapshot or automated backup encrypted with the key: restoring it
// needs the key too.
type Snapshot struct {
	Identifier        string `json:"identifier"`
	ARN               string `json:"arn"`
	ClusterIdentifier string `json:"cluster_identifier"`
	// Account is the AWS account the snapshot lives in.
	Account string `json:"account,omitempty"`
	// Type is manual, automated, or automated-backup (a retained DescribeDBClusterAutomatedBackups entry).
	Type string `json:"type"`
}

// Severity is how loud an incident is.
type Severity string

const (
	SeverityCritical Severity = "critical"
	SeverityHigh     Severity = "high"
	SeverityLow      Severity = "low"
)

// DeliveryState is where the incident's Slack delivery is.
type DeliveryState string

const (
	DeliveryPending   DeliveryState = "pending"
	DeliveryDelivered DeliveryState = "delivered"
	DeliveryFailed    DeliveryState = "failed"
)

// SlackDelivery is the incident's Slack delivery: its state, why it failed, and how many
// changes still wait to be delivered.
type SlackDelivery struct {
	State   DeliveryState `json:"state"`
	Reason  string        `json:"reason,omitempty"`
	Pending int           `json:"pending"`
}

// SlackRef locates the incident's message.
type SlackRef struct {
	Channel string `json:"channel"`
	TS      string `json:"ts"`
}
