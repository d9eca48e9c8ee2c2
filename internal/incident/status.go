package incident

import "strings"

// KeyState is a KMS key state as DescribeKey reports it (KeyMetadata.KeyState), or
// KeyStateDeleted.
type KeyState string

// KMS key states (https://docs.aws.amazon.com/kms/latest/developerguide/key-state.html).
const (
	KeyStateEnabled                KeyState = "Enabled"
	KeyStateDisabled               KeyState = "Disabled"
	KeyStatePendingDeletion        KeyState = "PendingDeletion"
	KeyStatePendingReplicaDeletion KeyState = "PendingReplicaDeletion"
	KeyStatePendingImport          KeyState = "PendingImport"
	KeyStateUnavailable            KeyState = "Unavailable"
	KeyStateCreating               KeyState = "Creating"
	KeyStateUpdating               KeyState = "Updating"
	// KeyStateUnknown is not a KMS KeyState: the key could not be described (access denied,
	// a key in another account); Incident.KeyStateReason says why.
	KeyStateUnknown KeyState = "Unknown"
	// KeyStateDeleted is not a KMS KeyState: keywarden records it once DescribeKey answers
	// NotFoundException for a key that existed, or KMS announced "KMS CMK Deletion".
	KeyStateDeleted KeyState = "Deleted"
)

// Unusable reports whether Aurora can no longer use a key in state s. Disabled and
// PendingDeletion keys "can't be used in any cryptographic operations"; so can't a multi-Region
// primary in PendingReplicaDeletion, a key whose imported material was deleted or expired
// (PendingImport), or a key in a disconnected custom key store (Unavailable).
func (s KeyState) Unusable() bool {
	switch s {
	case KeyStateDisabled, KeyStatePendingDeletion, KeyStatePendingReplicaDeletion,
		KeyStatePendingImport, KeyStateUnavailable, KeyStateDeleted:
		return true
	}
	return false
}

// PendingDeletion reports whether a deletion is scheduled: CancelKeyDeletion applies, and
// EnableKey is refused until it ran. A multi-Region primary waiting for its replicas
// (PendingReplicaDeletion) is cancelled the same way.
func (s KeyState) PendingDeletion() bool {
	return s == KeyStatePendingDeletion || s == KeyStatePendingReplicaDeletion
}

// IsKeyARN reports whether s is a full KMS key ARN (arn:<partition>:kms:<region>:<account>:key/<id>)
// rather than a key ID, an alias name or an alias ARN — the forms RDS and KMS accept for a key
// reference (aws-facts §5). Only a key ARN can be compared with another without DescribeKey.
func IsKeyARN(s string) bool {
	parts := strings.SplitN(s, ":", 6)
	return len(parts) == 6 && parts[0] == "arn" && parts[1] != "" && parts[2] == "kms" &&
		parts[3] != "" && parts[4] != "" && strings.HasPrefix(parts[5], "key/") && len(parts[5]) > len("key/")
}

// KeyAccount is the account ID in a key ARN, "" when s is not one.
func KeyAccount(s string) string {
	if !IsKeyARN(s) {
		return ""
	}
	return ARNAccount(s)
}

// KeyID is the key ID part of a key ARN, and any other string unchanged (a bare key ID is
// already an ID).
func KeyID(s string) string {
	if !IsKeyARN(s) {
		return s
	}
	return s[strings.LastIndex(s, ":key/")+len(":key/"):]
}

// ARNAccount is the account ID field of any ARN (arn:partition:service:region:account:…), ""
// when s is not an ARN.
func ARNAccount(s string) string { return arnField(s, 4) }

// ARNRegion is the Region field of any ARN, "" when s is not an ARN (or the resource is
// global, as an IAM role's).
func ARNRegion(s string) string { return arnField(s, 3) }

// arnField is field i of ARN s (arn:partition:service:region:account:resource), "" when s is
// not an ARN.
func arnField(s string, i int) string {
	parts := strings.SplitN(s, ":", 6)
	if len(parts) != 6 || parts[0] != "arn" {
		return ""
	}
	return parts[i]
}

// ClusterStatus is an Aurora DB cluster's Status (DescribeDBClusters) or a DB instance's
// DBInstanceStatus (DescribeDBInstances): lower-case and hyphenated, the same words for both.
type ClusterStatus string

// Statuses that matter to keywarden (aws-facts §4.4).
const (
	StatusAvailable ClusterStatus = "available"
	StatusStarting  ClusterStatus = "starting"
	StatusStopping  ClusterStatus = "stopping"
	StatusStopped   ClusterStatus = "stopped"
	StatusRebooting ClusterStatus = "rebooting"
	// StatusRecoverable: the cluster lost its key and is stopped; StartDBCluster brings it back
	// once the key is usable, for seven days.
	StatusRecoverable ClusterStatus = "inaccessible-encryption-credentials-recoverable"
	// StatusTerminal: the seven days passed (or the cluster could not stop); only a restore
	// from a backup, which needs the key, helps.
	StatusTerminal ClusterStatus = "inaccessible-encryption-credentials"
)

// Inaccessible reports whether the status says the cluster or instance lost its key, either
// recoverably or for good.
func (s ClusterStatus) Inaccessible() bool {
	return s == StatusRecoverable || s == StatusTerminal
}

// Startable reports whether StartDBCluster accepts a cluster in this status: exactly stopped
// and inaccessible-encryption-credentials-recoverable (the fault RDS answers otherwise names
// both; aws-facts §4.5).
func (s ClusterStatus) Startable() bool {
	return s == StatusStopped || s == StatusRecoverable
}

// OwnerStopped reports whether the cluster is stopped by its owner: plainly stopped, and
// stopped before the key was lost (StoppedBeforeLoss). Remediation leaves it stopped, and it
// counts as settled: the incident resolves without starting it.
func (c Cluster) OwnerStopped() bool {
	return c.Status == StatusStopped && c.StoppedBeforeLoss
}

// Settled reports whether a cluster needs nothing more from remediation: available, or
// stopped by its owner. The plan, the lifecycle's resolution and the reconciler's stall rule
// all ask this one question.
func (c Cluster) Settled() bool {
	return c.Status == StatusAvailable || c.OwnerStopped()
}

// StopFacts are what decides whether Aurora can stop a cluster, as DescribeDBClusters and
// DescribeGlobalClusters report them.
type StopFacts struct {
	// GlobalCluster is the global database the cluster belongs to, "" when none.
	GlobalCluster string
	// CrossRegionReplicas are read replicas of the cluster in other Regions.
	CrossRegionReplicas []string
	// CrossRegionSource is the cluster this one replicates from in another Region, "" when none.
	CrossRegionSource string
	// EngineMode is DBCluster.EngineMode; "serverless" is Aurora Serverless v1.
	EngineMode string
	// BlueGreenDeployment is the blue/green deployment the cluster is part of, "" when none.
	BlueGreenDeployment string
}

// CannotStopReason says why Aurora cannot stop a cluster with these facts, "" when it can. Such
// a cluster never gets the seven-day recoverable window: "The inaccessible-encryption-
// credentials-recoverable state only applies to DB clusters that can stop" (Aurora User Guide,
// Overview.Encryption; the list of clusters that cannot stop is in aurora-cluster-stop-start and
// blue-green-deployments-considerations; aws-facts §4.1 and §8).
func CannotStopReason(f StopFacts) string {
	var reasons []string
	if f.GlobalCluster != "" {
		reasons = append(reasons, "member of global database "+f.GlobalCluster)
	}
	for _, r := range f.CrossRegionReplicas {
		reasons = append(reasons, "has cross-Region read replica "+r)
	}
	if f.CrossRegionSource != "" {
		reasons = append(reasons, "cross-Region read replica of "+f.CrossRegionSource)
	}
	if strings.EqualFold(f.EngineMode, "serverless") {
		reasons = append(reasons, "Aurora Serverless v1")
	}
	if f.BlueGreenDeployment != "" {
		reasons = append(reasons, "part of blue/green deployment "+f.BlueGreenDeployment)
	}
	return strings.Join(reasons, "; ")
}
