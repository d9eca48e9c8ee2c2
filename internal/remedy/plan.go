package remedy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	kmstypes "github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/aws-sdk-go-v2/service/rds"
	rdstypes "github.com/aws/aws-sdk-go-v2/service/rds/types"

	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/kmskey"
)

// Aurora DB cluster and instance statuses that matter to remediation (DescribeDBClusters
// Status, DescribeDBInstances DBInstanceStatus; both lower-case and hyphenated).
const (
	statusAvailable   = "available"
	statusStarting    = "starting"
	statusStopped     = "stopped"
	statusRebooting   = "rebooting"
	statusRecoverable = "inaccessible-encryption-credentials-recoverable"
	statusTerminal    = "inaccessible-encryption-credentials"
)

// plan is a Plan's steps plus the live state they were derived from, which Run copies onto the
// incident so the message shows what AWS says now rather than what the events said then.
type plan struct {
	steps []Step
	// keyID is the key ID for KMS write calls: real KMS takes an ID or an ARN, moto only an ID,
	// and the ID names the same key as the ARN within its account.
	keyID        string
	keyState     string
	deletionDate *time.Time
	// clusters and instances map identifiers to live status; "" when RDS no longer knows them.
	clusters  map[string]string
	instances map[string]string
	// unsettled maps a cluster whose start was skipped only because of a passing status to
	// why: the run cannot finish it, a later click can.
	unsettled map[string]string
	// instanceCluster maps a planned instance to its cluster.
	instanceCluster map[string]string
	// keyAccessBy is when the run stops retrying RDS calls that cannot reach the key yet; zero
	// until the first KMSKeyNotAccessibleFault.
	keyAccessBy time.Time
}

// Plan reads the key's and the dependents' live state and returns every step in the documented
// recovery order, each with a Skip reason when it is not needed. It changes nothing.
//
// It returns an error wrapping ErrNotAllowed for a key outside Options.AllowedKeys and
// ErrNotFixable, with what to do instead, for a key one click cannot bring back.
func (r *Runner) Plan(ctx context.Context, inc incident.Incident) ([]Step, error) {
	p, err := r.plan(ctx, inc)
	if err != nil {
		return nil, err
	}
	return p.steps, nil
}

func (r *Runner) plan(ctx context.Context, inc incident.Incident) (*plan, error) {
	if inc.KeyARN == "" {
		return nil, fmt.Errorf("incident %s has no key ARN", inc.ID)
	}
	if r.opts.AllowedKeys != nil && !r.opts.AllowedKeys(inc.KeyARN) {
		return nil, fmt.Errorf("key %s: %w", inc.KeyARN, ErrNotAllowed)
	}
	p := &plan{clusters: map[string]string{}, instances: map[string]string{},
		unsettled: map[string]string{}, instanceCluster: map[string]string{}}
	if err := r.planKey(ctx, inc.KeyARN, p); err != nil {
		return nil, err
	}
	starting, err := r.planClusters(ctx, inc, p)
	if err != nil {
		return nil, err
	}
	if err := r.planInstances(ctx, inc, p, starting); err != nil {
		return nil, err
	}
	return p, nil
}

// planKey adds CancelKeyDeletion, EnableKey and WaitEnabled, each skipped when the key's live
// state does not need it.
func (r *Runner) planKey(ctx context.Context, keyARN string, p *plan) error {
	md, err := describeKey(ctx, r.kms, keyARN)
	var nf *kmstypes.NotFoundException
	if errors.As(err, &nf) {
		// DescribeKey stops finding a key once its waiting period is over and KMS deleted it.
		return fmt.Errorf("key %s was deleted: %w: data encrypted under it cannot be decrypted again; "+
			"restore the clusters from a snapshot or backup encrypted with another key, if one exists", keyARN, ErrNotFixable)
	}
	if err != nil {
		return err
	}
	p.keyID = aws.ToString(md.KeyId)
	if p.keyID == "" {
		p.keyID = kmskey.IDFromARN(keyARN)
	}
	p.keyState = string(md.KeyState)
	p.deletionDate = md.DeletionDate

	cancel := Step{Name: StepCancelKeyDeletion, Target: keyARN}
	enable := Step{Name: StepEnableKey, Target: keyARN}
	wait := Step{Name: StepWaitEnabled, Target: keyARN}
	switch md.KeyState {
	case kmstypes.KeyStatePendingDeletion, kmstypes.KeyStatePendingReplicaDeletion:
		// EnableKey is refused while deletion is pending; CancelKeyDeletion leaves the key
		// Disabled, so EnableKey must follow. A multi-Region primary waiting for its replicas'
		// deletion (PendingReplicaDeletion) is cancelled the same way.
	case kmstypes.KeyStateDisabled:
		cancel.Skip = "no deletion scheduled (key Disabled)"
	case kmstypes.KeyStateEnabled:
		cancel.Skip = "no deletion scheduled (key Enabled)"
		enable.Skip = "key already Enabled"
		wait.Skip = "key already Enabled"
	case kmstypes.KeyStatePendingImport:
		// Enabling does not bring back key material: only the same material, imported again,
		// decrypts what was encrypted under it.
		return fmt.Errorf("key %s has no key material (PendingImport: imported material deleted or expired): %w: "+
			"import the same key material again (GetParametersForImport, ImportKeyMaterial), then remediate again", keyARN, ErrNotFixable)
	case kmstypes.KeyStateUnavailable:
		// Only keys in a custom key store are Unavailable: the store was disconnected from its
		// CloudHSM cluster or external key store proxy, and KMS cannot enable it from here.
		return fmt.Errorf("key %s is Unavailable (its custom key store is disconnected): %w: "+
			"reconnect the custom key store (ConnectCustomKeyStore), then remediate again", keyARN, ErrNotFixable)
	case kmstypes.KeyStateCreating, kmstypes.KeyStateUpdating:
		// Transient states: a retry a little later sees the settled state.
		return fmt.Errorf("key %s is %s: try again shortly", keyARN, md.KeyState)
	default:
		return fmt.Errorf("key %s is in state %q, which remediation does not know: %w: check the key in the KMS console",
			keyARN, md.KeyState, ErrNotFixable)
	}
	p.steps = append(p.steps, cancel, enable, wait)
	return nil
}

// planClusters adds one StartDBCluster per dependent cluster and returns the clusters it will
// start. Aurora's documented recovery is StartDBCluster, which accepts exactly the statuses
// stopped and inaccessible-encryption-credentials-recoverable; RebootDBCluster is not for Aurora.
//
// A cluster whose storage the key does not encrypt (it uses the key only for Performance
// Insights, its master-user secret or its activity stream) did not stop because of the key:
// if it is stopped, its owner may have stopped it on purpose, so it is left alone unless RDS
// says it is inaccessible-encryption-credentials-recoverable.
func (r *Runner) planClusters(ctx context.Context, inc incident.Incident, p *plan) (map[string]bool, error) {
	starting := map[string]bool{}
	for _, c := range inc.Clusters {
		status, ref, err := clusterLive(ctx, r.rds, c.Identifier)
		if err != nil {
			return nil, err
		}
		p.clusters[c.Identifier] = status
		s := Step{Name: StepStartDBCluster, Target: c.Identifier}
		notStorage := !c.StorageOnKey() && status != statusRecoverable
		switch status {
		case statusStopped, statusRecoverable:
			if notStorage {
				s.Skip = notStorageReason(c, status)
				break
			}
			if c.StorageOnKey() {
				other, otherKey, err := r.onOtherKey(ctx, ref, inc.KeyARN)
				if err != nil {
					return nil, fmt.Errorf("storage key of cluster %s: %w", c.Identifier, err)
				}
				if other {
					s.Skip = "its storage is now encrypted with another key (" + otherKey + "): not this incident's to start"
					break
				}
			}
			starting[c.Identifier] = true
		case "":
			s.Skip = "cluster not found"
		case statusAvailable:
			s.Skip = "already available"
		case statusStarting:
			s.Skip = "already starting"
		case statusTerminal:
			s.Skip = "terminal (inaccessible-encryption-credentials): restore from a snapshot or point-in-time " +
				"recovery once the key is Enabled"
		default:
			if notStorage {
				s.Skip = notStorageReason(c, status)
				break
			}
			s.Skip = fmt.Sprintf("status %s: StartDBCluster needs stopped or %s; remediate again once it settles",
				status, statusRecoverable)
			p.unsettled[c.Identifier] = s.Skip
		}
		p.steps = append(p.steps, s)
	}
	return starting, nil
}

// notStorageReason is the Skip of a cluster whose storage is not on the key.
func notStorageReason(c incident.Cluster, status string) string {
	return fmt.Sprintf("the key does not encrypt its storage (used for %s); left %s, as its owner may want it",
		strings.Join(c.Uses, ", "), status)
}

// planInstances adds RebootDBInstance for instances the incident marks as having lost key
// access (RDS-EVENT-0418/0419 without a later 0420) that are still running. An instance of a
// cluster being started needs nothing more: StartDBCluster starts its instances.
func (r *Runner) planInstances(ctx context.Context, inc incident.Incident, p *plan, starting map[string]bool) error {
	for _, in := range inc.Instances {
		if !in.LostKeyAccess {
			continue
		}
		status, err := instanceStatus(ctx, r.rds, in.Identifier)
		if err != nil {
			return err
		}
		p.instances[in.Identifier] = status
		p.instanceCluster[in.Identifier] = in.ClusterIdentifier
		s := Step{Name: StepRebootDBInstance, Target: in.Identifier}
		startedAt, started := doneAt(inc, StepStartDBCluster, in.ClusterIdentifier)
		switch {
		case status == "":
			s.Skip = "instance not found"
		case starting[in.ClusterIdentifier]:
			s.Skip = fmt.Sprintf("cluster %s is being started, which starts its instances", in.ClusterIdentifier)
		case started:
			// An earlier run started the cluster: its instances read available again before
			// RDS-EVENT-0420 clears their lost access, and a reboot on top would only interrupt them.
			s.Skip = fmt.Sprintf("cluster %s was started at %s, which starts its instances",
				in.ClusterIdentifier, startedAt.UTC().Format(time.RFC3339))
		case status == statusRebooting:
			s.Skip = "already rebooting"
		case status != statusAvailable:
			s.Skip = fmt.Sprintf("status %s: not running", status)
		default:
			// The instance looks available again after a reboot, but no RDS event has cleared
			// its lost access yet; rebooting it once more would not tell us anything new.
			if at, ok := doneAt(inc, StepRebootDBInstance, in.Identifier); ok {
				s.Skip = fmt.Sprintf("rebooted at %s; waiting for RDS-EVENT-0420", at.UTC().Format(time.RFC3339))
			}
		}
		p.steps = append(p.steps, s)
	}
	return nil
}

// doneAt finds on the timeline when an earlier run completed step name on target ("ok" or
// "already …"). Live status alone cannot tell a rebooted instance from one still waiting for its
// reboot, nor an instance its cluster's start brought back from one that never stopped.
func doneAt(inc incident.Incident, name, target string) (time.Time, bool) {
	prefix := name + " " + target + " → "
	for i := len(inc.Timeline) - 1; i >= 0; i-- {
		e := inc.Timeline[i]
		if e.Kind != incident.KindRemediation || !strings.HasPrefix(e.Detail, prefix) {
			continue
		}
		if r := strings.TrimPrefix(e.Detail, prefix); r == resultOK || strings.HasPrefix(r, "already ") {
			return e.At, true
		}
	}
	return time.Time{}, false
}

func describeKey(ctx context.Context, c KMSAPI, keyARN string) (*kmstypes.KeyMetadata, error) {
	out, err := c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(keyARN)})
	if err != nil {
		return nil, fmt.Errorf("describe key %s: %w", keyARN, err)
	}
	if out.KeyMetadata == nil {
		return nil, fmt.Errorf("describe key %s: no key metadata in the answer", keyARN)
	}
	return out.KeyMetadata, nil
}

// clusterStatus is the cluster's live status, "" when RDS does not know the cluster.
func clusterStatus(ctx context.Context, c RDSAPI, id string) (string, error) {
	status, _, err := clusterLive(ctx, c, id)
	return status, err
}

// clusterLive is the cluster's live status and storage key reference (as RDS gives it: the
// key ARN on AWS, possibly another form elsewhere); "" and "" when RDS does not know it.
func clusterLive(ctx context.Context, c RDSAPI, id string) (status, kmsKeyID string, err error) {
	out, err := c.DescribeDBClusters(ctx, &rds.DescribeDBClustersInput{DBClusterIdentifier: aws.String(id)})
	var nf *rdstypes.DBClusterNotFoundFault
	if errors.As(err, &nf) {
		return "", "", nil
	}
	if err != nil {
		return "", "", fmt.Errorf("describe cluster %s: %w", id, err)
	}
	if len(out.DBClusters) == 0 {
		return "", "", nil
	}
	return aws.ToString(out.DBClusters[0].Status), aws.ToString(out.DBClusters[0].KmsKeyId), nil
}

// onOtherKey reports whether a cluster's live storage key is not keyARN: a cluster deleted and
// created again under the same name, with another key, is not this incident's to start — and
// IAM cannot tell, since StartDBCluster cannot be scoped by a cluster's key.
func (r *Runner) onOtherKey(ctx context.Context, ref, keyARN string) (bool, string, error) {
	if ref == "" || ref == keyARN {
		return false, "", nil
	}
	if strings.HasPrefix(ref, "arn:") && strings.Contains(ref, ":key/") {
		return true, ref, nil
	}
	md, err := describeKey(ctx, r.kms, ref)
	var nf *kmstypes.NotFoundException
	if errors.As(err, &nf) {
		return true, ref, nil
	}
	if err != nil {
		return false, "", err
	}
	other := aws.ToString(md.Arn)
	return other != keyARN, other, nil
}

// instanceStatus is the instance's live status, "" when RDS does not know the instance.
func instanceStatus(ctx context.Context, c RDSAPI, id string) (string, error) {
	out, err := c.DescribeDBInstances(ctx, &rds.DescribeDBInstancesInput{DBInstanceIdentifier: aws.String(id)})
	var nf *rdstypes.DBInstanceNotFoundFault
	if errors.As(err, &nf) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("describe instance %s: %w", id, err)
	}
	if len(out.DBInstances) == 0 {
		return "", nil
	}
	return aws.ToString(out.DBInstances[0].DBInstanceStatus), nil
}
