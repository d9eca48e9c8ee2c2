package incident

import (
	"fmt"
	"strings"
	"time"
)

// RemediationState is where the latest remediation run is.
type RemediationState string

const (
	RemediationNone     RemediationState = "none"
	RemediationApproved RemediationState = "approved"
	RemediationRunning  RemediationState = "running"
	RemediationDone     RemediationState = "done"
	RemediationFailed   RemediationState = "failed"
)

// Remediation is the latest run of the one-click fix and every step recorded, over all runs.
type Remediation struct {
	// RunID names the run StartRemediation began; RemediateFunction claims it.
	RunID      string           `json:"run_id"`
	State      RemediationState `json:"state"`
	ApprovedBy []string         `json:"approved_by,omitempty"`
	// Reason is why the last run failed, for people.
	Reason string       `json:"reason,omitempty"`
	Steps  []StepRecord `json:"steps"`

	// ApprovedAt is when the run was approved (StartRemediation); the reconciler starts a run
	// still "approved" a little after it (see AwaitingStart).
	ApprovedAt *time.Time `json:"approved_at,omitempty"`
	// ClaimedBy names the invocation that holds the run (ClaimRun), until LeaseUntil: a second
	// delivery of the hand-off, the reconciler's start and a retried click meet the claim and
	// run nothing twice. An expired lease is a run that died without a word (a Lambda timeout),
	// which the next claim continues.
	ClaimedBy  string     `json:"claimed_by,omitempty"`
	LeaseUntil *time.Time `json:"lease_until,omitempty"`
	// Attempts counts the invocations that claimed the run.
	Attempts int `json:"attempts,omitempty"`
	// StoppedAt is where the last bounded invocation stopped (a step kind and target), empty
	// when none stopped short.
	StoppedAt string `json:"stopped_at,omitempty"`
}

// StepKind is a remediation step, by the AWS API it calls.
type StepKind string

// Step kinds, in the order a plan runs them.
const (
	StepCancelKeyDeletion StepKind = "CancelKeyDeletion"
	StepEnableKey         StepKind = "EnableKey"
	// StepWaitEnabled polls DescribeKey until the key reads Enabled (KMS is eventually consistent).
	StepWaitEnabled      StepKind = "WaitEnabled"
	StepStartDBCluster   StepKind = "StartDBCluster"
	StepRebootDBInstance StepKind = "RebootDBInstance"
	// StepWatchInstance calls nothing: a running instance that reported losing the key
	// (RDS-EVENT-0418/0419) is watched after the key is back, never rebooted by the one click.
	StepWatchInstance StepKind = "WatchInstance"
)

// StepRecord is one step a run took, and what came of it.
type StepRecord struct {
	// ID is the run ID, the step kind and the target: a step is recorded once per run.
	ID      string    `json:"id"`
	Kind    StepKind  `json:"kind"`
	Target  string    `json:"target"`
	Account string    `json:"account"`
	Result  Result    `json:"result"`
	At      time.Time `json:"at"`
	// Detail is the API result for people ("InvalidDBClusterStateFault: …").
	Detail string `json:"detail,omitempty"`
}

// StepID is the ID of a step of run runID.
func StepID(runID string, kind StepKind, target string) string {
	return EntryID("step", runID, string(kind), target)
}

// RecordStep records a step's outcome on Remediation and the timeline, once per step ID; it
// reports whether it was new.
func (inc *Incident) RecordStep(s StepRecord) bool {
	if s.ID == "" {
		s.ID = StepID(inc.Remediation.RunID, s.Kind, s.Target)
	}
	for _, r := range inc.Remediation.Steps {
		if r.ID == s.ID {
			return false
		}
	}
	s.At = s.At.UTC()
	inc.Remediation.Steps = append(inc.Remediation.Steps, s)
	text := string(s.Kind) + " " + s.Target + " → " + string(s.Result)
	if s.Account != "" {
		text = string(s.Kind) + " " + s.Target + " in account " + s.Account + " → " + string(s.Result)
	}
	if s.Detail != "" {
		text += ": " + s.Detail
	}
	inc.AddEntry(Entry{ID: s.ID, At: s.At, Kind: KindRemediationStep, Actor: Keywarden, Target: s.Target,
		Result: s.Result, Source: inc.Remediation.RunID, Detail: text})
	return true
}

// StepDone reports when a step of kind on target last succeeded, in any run.
func (inc *Incident) StepDone(kind StepKind, target string) (time.Time, bool) {
	for i := len(inc.Remediation.Steps) - 1; i >= 0; i-- {
		s := inc.Remediation.Steps[i]
		if s.Kind == kind && s.Target == target && s.Result == ResultOK {
			return s.At, true
		}
	}
	return time.Time{}, false
}

// PlannedStep is one step of a remediation plan. Skip says why it does not run ("" when it
// does); Settling marks a cluster whose passing status alone kept it from starting, so a later
// run can finish it.
type PlannedStep struct {
	Kind     StepKind `json:"kind"`
	Target   string   `json:"target"`
	Skip     string   `json:"skip,omitempty"`
	Settling bool     `json:"settling,omitempty"`
}

// Runs reports whether the step makes a call that changes something.
func (s PlannedStep) Runs() bool { return s.Skip == "" }

// NotFixableError says one click cannot bring the key back, and what to do instead.
type NotFixableError struct{ Instead string }

func (e *NotFixableError) Error() string { return "not fixable with one click: " + e.Instead }

// Fixable reports whether the one-click fix (cancel deletion, enable key, start clusters) can
// recover this incident, and if not, what to do instead. The answer rests on KMS and Aurora
// behaviour: a deleted key cannot be restored; a key whose imported material is gone only works
// again with that same material; a key in a disconnected custom key store cannot be enabled
// from KMS's side; a terminal cluster cannot be started, only restored.
func (inc *Incident) Fixable() error {
	switch {
	case inc.KeyDeleted() && inc.KeyReplicaOf != "":
		return &NotFixableError{Instead: "The key was a multi-Region replica and is deleted. Unlike any other key it can be re-created: " +
			"call ReplicateKey on its primary " + inc.KeyReplicaOf + " into this Region (same key ID and material), " +
			"then start the stopped clusters with StartDBCluster."}
	case inc.KeyForeign() && inc.KeyAccount != "":
		return &NotFixableError{Instead: "The key belongs to account " + inc.KeyAccount + ": its owner must enable it " +
			"(or cancel its deletion, or restore RDS's access in the key policy); this deployment cannot. " +
			"Then start the stopped clusters with StartDBCluster."}
	case inc.KeyState == KeyStateUnknown:
		return &NotFixableError{Instead: "The key cannot be read (" + inc.KeyStateReason + "): whoever administers the key " +
			"must check it in the KMS console and make it usable for RDS, then start the stopped clusters with StartDBCluster."}
	case inc.KeyDeleted():
		return &NotFixableError{Instead: "The key is deleted. KMS cannot bring it back, so data encrypted under it — " +
			"these clusters, their snapshots and backups — is unrecoverable and a restore is impossible. " +
			"Recover from data that does not depend on this key (an export, a replica under another key), " +
			"and find out who deleted it."}
	case inc.KeyState == KeyStatePendingImport:
		return &NotFixableError{Instead: "The key's imported key material was deleted or has expired (KeyState PendingImport). " +
			"Re-import the SAME key material with ImportKeyMaterial — new material cannot decrypt existing data — " +
			"then start the stopped clusters with StartDBCluster."}
	case inc.KeyState == KeyStateUnavailable:
		return &NotFixableError{Instead: "The key's custom key store is disconnected (KeyState Unavailable). " +
			"Reconnect the store with ConnectCustomKeyStore (for CloudHSM, make sure the cluster has an active HSM), " +
			"then start the stopped clusters with StartDBCluster."}
	case inc.KeyState == KeyStateCreating || inc.KeyState == KeyStateUpdating:
		return fmt.Errorf("key is %s: try again shortly", inc.KeyState)
	case inc.KeyState != "" && !inc.KeyState.Unusable() && inc.KeyState != KeyStateEnabled:
		return &NotFixableError{Instead: fmt.Sprintf("The key is in state %q, which remediation does not know: check the key in the KMS console.", inc.KeyState)}
	case len(inc.Clusters) > 0 && allLost(inc.Clusters):
		return &NotFixableError{Instead: "Every cluster reached the terminal inaccessible-encryption-credentials state and cannot be started. " +
			"Enable the key first, then restore each cluster from a snapshot or with point-in-time recovery; both need the key."}
	}
	return nil
}

// KeyDeleted reports whether the key is gone for good: recorded as Deleted, or unreadable after
// its deletion was scheduled or KMS announced "KMS CMK Deletion".
func (inc *Incident) KeyDeleted() bool {
	if inc.KeyState == KeyStateDeleted {
		return true
	}
	return inc.KeyState == "" && (inc.KeyDeletionDate != nil || inc.Trigger == "KMS CMK Deletion")
}

func allLost(cs []Cluster) bool {
	for _, c := range cs {
		if !c.Lost {
			return false
		}
	}
	return true
}

// Plan is the one remediation plan: every step of the documented recovery, in order, each
// with a Skip reason when it is not needed, derived from the incident as it stands. The confirm
// dialog shows it from the stored incident; RemediateFunction refreshes the incident from live
// state (key state, statuses, each cluster's LiveKeyARN) and runs exactly what it returns.
//
// The order is AWS's: CancelKeyDeletion (which leaves the key Disabled), EnableKey, wait until
// DescribeKey says Enabled, then StartDBCluster for clusters stopped because of the loss
// (aws-facts §4.5). RebootDBCluster is not for Aurora, and no AWS document asks for
// RebootDBInstance: a running instance that reported losing the key gets a WatchInstance step,
// which calls nothing — it is watched until RDS-EVENT-0420 or a grace period available with the
// key Enabled (WatchInstances), and only an instance still reporting the loss after that is
// offered its own Reboot instance button (RebootPlan). A cluster its owner stopped before the
// loss stays stopped. It returns a *NotFixableError when one click cannot help.
func (inc *Incident) Plan() ([]PlannedStep, error) {
	if err := inc.Fixable(); err != nil {
		return nil, err
	}
	steps := inc.planKey()
	starting := map[string]bool{}
	for _, c := range inc.Clusters {
		s := inc.planCluster(c)
		if s.Runs() {
			starting[c.Identifier] = true
		}
		steps = append(steps, s)
	}
	for _, in := range inc.Instances {
		if in.LostKeyAccess {
			steps = append(steps, inc.planWatch(in, starting))
		}
	}
	return steps, nil
}

func (inc *Incident) planKey() []PlannedStep {
	cancel := PlannedStep{Kind: StepCancelKeyDeletion, Target: inc.KeyARN}
	enable := PlannedStep{Kind: StepEnableKey, Target: inc.KeyARN}
	wait := PlannedStep{Kind: StepWaitEnabled, Target: inc.KeyARN}
	switch {
	case inc.KeyState.PendingDeletion():
		// EnableKey is refused while deletion is pending; CancelKeyDeletion leaves the key
		// Disabled, so EnableKey must follow.
	case inc.KeyState == KeyStateEnabled:
		cancel.Skip = "no deletion scheduled (key Enabled)"
		enable.Skip = "key already Enabled"
		wait.Skip = "key already Enabled"
	default:
		cancel.Skip = fmt.Sprintf("no deletion scheduled (key %s)", orUnknown(string(inc.KeyState)))
	}
	return []PlannedStep{cancel, enable, wait}
}

// OwnerStopped is the Skip of a cluster its owner stopped before the loss.
const OwnerStopped = "stopped by its owner before the key was lost, left stopped"

// planCluster is StartDBCluster for one dependent. A cluster whose storage the key does not
// encrypt did not stop because of the key: if it is stopped, its owner may have stopped it on
// purpose, so it is left alone unless RDS says it is recoverable. A cluster stopped before the
// loss (StoppedBeforeLoss) is left stopped. A cluster whose live storage key is another key is
// not this incident's to start.
func (inc *Incident) planCluster(c Cluster) PlannedStep {
	s := PlannedStep{Kind: StepStartDBCluster, Target: c.Identifier}
	notStorage := !c.StorageOnKey() && c.Status != StatusRecoverable
	switch {
	case c.OwnerStopped():
		s.Skip = OwnerStopped
	case c.Status.Startable() && notStorage:
		s.Skip = fmt.Sprintf("the key does not encrypt its storage (used for %s); left %s, as its owner may want it",
			strings.Join(c.Uses, ", "), c.Status)
	case c.Status.Startable() && c.LiveKeyARN != "" && c.LiveKeyARN != inc.KeyARN:
		s.Skip = "its storage is now encrypted with another key (" + c.LiveKeyARN + "): not this incident's to start"
	case c.Status.Startable():
	case c.Status == "":
		s.Skip = "cluster not found"
	case c.Status == StatusAvailable:
		s.Skip = "already available"
	case c.Status == StatusStarting:
		s.Skip = "already starting"
	case c.Status == StatusTerminal:
		s.Skip = "terminal (inaccessible-encryption-credentials): restore from a snapshot or point-in-time recovery once the key is Enabled"
	case notStorage:
		s.Skip = fmt.Sprintf("the key does not encrypt its storage (used for %s); left %s, as its owner may want it",
			strings.Join(c.Uses, ", "), c.Status)
	default:
		s.Skip = fmt.Sprintf("status %s: StartDBCluster needs stopped or %s; remediate again once it settles", c.Status, StatusRecoverable)
		s.Settling = true
	}
	return s
}

// planWatch is the WatchInstance step of an instance that reported lost key access
// (RDS-EVENT-0418/0419 without a later 0420). It never runs a call: its Skip says what happens
// instead, which the run records on the timeline.
func (inc *Incident) planWatch(in Instance, starting map[string]bool) PlannedStep {
	s := PlannedStep{Kind: StepWatchInstance, Target: in.Identifier}
	_, started := inc.StepDone(StepStartDBCluster, in.ClusterIdentifier)
	switch {
	case in.Status == "":
		s.Skip = "instance not found"
	case starting[in.ClusterIdentifier] || started:
		s.Skip = fmt.Sprintf("cluster %s is started, which starts its instances", in.ClusterIdentifier)
	case in.NeedsReboot:
		s.Skip = "still reports lost key access after the grace period: use its Reboot instance button (not part of the one click)"
	default:
		s.Skip = "not rebooted (a reboot is an outage, and no AWS document asks for one): watched until RDS-EVENT-0420, " +
			"or counted recovered after the grace period available with the key Enabled"
	}
	return s
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
