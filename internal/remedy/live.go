package remedy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	kmstypes "github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/aws-sdk-go-v2/service/rds"
	rdstypes "github.com/aws/aws-sdk-go-v2/service/rds/types"

	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/kmskey"
	"github.com/keywarden/keywarden/internal/lifecycle"
)

// live is what AWS says now about an incident's key and dependents.
type live struct {
	// keyID is the key ID for KMS write calls: real KMS takes an ID or an ARN, moto only an ID,
	// and the ID names the same key as the ARN within its account.
	keyID string
	// key is the key as DescribeKey reports it; State is Deleted once KMS no longer knows it.
	key kmskey.Key
	// clusters maps each dependent cluster to its live status and storage key; found is false
	// when RDS no longer knows it.
	clusters map[string]liveCluster
	// instances maps each instance that reported lost key access to its live status, "" when
	// RDS no longer knows it.
	instances map[string]incident.ClusterStatus
}

type liveCluster struct {
	found  bool
	status incident.ClusterStatus
	// keyARN is the cluster's storage key as a key ARN, or as RDS gave it when KMS cannot
	// resolve it (then it is never the incident's key); "" when the cluster has none.
	keyARN string
}

// read reads the live state the plan depends on: DescribeKey for the key, DescribeDBClusters
// for each dependent cluster's status and storage key (normalised to a key ARN through
// DescribeKey when RDS gives another form), DescribeDBInstances for each instance that reported
// lost key access. It changes nothing; errors are AWS failures, which a retry may cure.
func (r *Runner) read(ctx context.Context, inc incident.Incident) (*live, error) {
	lv := &live{clusters: map[string]liveCluster{}, instances: map[string]incident.ClusterStatus{}}
	md, err := describeKey(inAccount(ctx, inc.KeyAccount, inc.KeyARN), r.kms, inc.KeyARN)
	var nf *kmstypes.NotFoundException
	switch {
	case errors.As(err, new(*ClientsError)):
		// The key's account cannot be reached: the key steps are planned from what the
		// incident knows and fail in that account, recorded (issue 13).
		lv.key, lv.keyID = kmskey.Key{ARN: inc.KeyARN, State: inc.KeyState}, kmskey.IDFromARN(inc.KeyARN)
	case errors.As(err, &nf):
		// DescribeKey stops finding a key once its waiting period is over and KMS deleted it.
		lv.key = lifecycle.KeyDeleted(inc.KeyARN)
		lv.keyID = kmskey.IDFromARN(inc.KeyARN)
	case err != nil:
		return nil, err
	default:
		lv.keyID = aws.ToString(md.KeyId)
		if lv.keyID == "" {
			lv.keyID = kmskey.IDFromARN(inc.KeyARN)
		}
		lv.key = kmskey.Key{ARN: aws.ToString(md.Arn), ID: lv.keyID, State: incident.KeyState(md.KeyState), Manager: string(md.KeyManager)}
		if md.KeyState == kmstypes.KeyStatePendingDeletion {
			lv.key.DeletionDate = md.DeletionDate
		}
	}
	keyARNs := map[string]string{} // storage key reference → key ARN, within this read
	for _, c := range inc.Clusters {
		lc, err := r.readCluster(inAccount(ctx, c.Account, inc.KeyARN), c.Identifier, keyARNs)
		if ce := (*ClientsError)(nil); errors.As(err, &ce) {
			// The cluster's account cannot be reached: its start is planned from what the
			// incident knows and fails in that account, recorded (issue 13).
			lc, err = liveCluster{found: true, status: c.Status, keyARN: inc.KeyARN}, nil
		}
		if err != nil {
			return nil, err
		}
		lv.clusters[c.Identifier] = lc
	}
	for _, in := range inc.Instances {
		if !in.LostKeyAccess {
			continue
		}
		status, err := instanceStatus(inAccount(ctx, in.Account, inc.KeyARN), r.rds, in.Identifier)
		if err != nil {
			return nil, err
		}
		lv.instances[in.Identifier] = status
	}
	return lv, nil
}

// readCluster reads one cluster's status and storage key. RDS reports the key as an ARN on AWS
// but may give another form (moto keeps the caller's); anything that is not a key ARN is
// resolved with DescribeKey, since a cluster deleted and created again under the same name with
// another key is not the incident's to start — and IAM cannot tell, as StartDBCluster cannot be
// scoped by a cluster's key.
func (r *Runner) readCluster(ctx context.Context, id string, keyARNs map[string]string) (liveCluster, error) {
	out, err := r.rds.DescribeDBClusters(ctx, &rds.DescribeDBClustersInput{DBClusterIdentifier: aws.String(id)})
	var nf *rdstypes.DBClusterNotFoundFault
	if errors.As(err, &nf) || (err == nil && len(out.DBClusters) == 0) {
		return liveCluster{}, nil
	}
	if err != nil {
		return liveCluster{}, fmt.Errorf("describe cluster %s: %w", id, err)
	}
	c := out.DBClusters[0]
	lc := liveCluster{found: true, status: incident.ClusterStatus(aws.ToString(c.Status))}
	ref := aws.ToString(c.KmsKeyId)
	switch {
	case ref == "" || incident.IsKeyARN(ref):
		lc.keyARN = ref
	case keyARNs[ref] != "":
		lc.keyARN = keyARNs[ref]
	default:
		md, err := describeKey(ctx, r.kms, ref)
		var knf *kmstypes.NotFoundException
		switch {
		case errors.As(err, &knf):
			lc.keyARN = ref // not a key KMS knows here, so not the incident's
		case err != nil:
			return liveCluster{}, fmt.Errorf("storage key of cluster %s: %w", id, err)
		default:
			lc.keyARN = aws.ToString(md.Arn)
		}
		keyARNs[ref] = lc.keyARN
	}
	return lc, nil
}

// view is a copy of inc refreshed with the live state, for planning: the stored incident is not
// changed. A cluster RDS no longer knows has no status in the view, which the plan skips as not
// found.
func (lv *live) view(inc incident.Incident, now time.Time) incident.Incident {
	v := inc
	v.Clusters = slices.Clone(inc.Clusters)
	v.Instances = slices.Clone(inc.Instances)
	v.Timeline = slices.Clone(inc.Timeline)
	lv.apply(&v, now)
	for i := range v.Clusters {
		if lc := lv.clusters[v.Clusters[i].Identifier]; !lc.found {
			v.Clusters[i].Status = ""
		}
	}
	for i := range v.Instances {
		if status, ok := lv.instances[v.Instances[i].Identifier]; ok && status == "" {
			v.Instances[i].Status = ""
		}
	}
	return v
}

// source is the lifecycle Source of what a run reads and does.
var source = lifecycle.Source{Name: "remediation"}

// apply records the live state on an incident by lifecycle's rules: the key's state and
// deletion date, each found cluster's status and storage key, each read instance's status.
func (lv *live) apply(i *incident.Incident, now time.Time) {
	lifecycle.SetKey(i, lv.key, source, now)
	for k := range i.Clusters {
		c := &i.Clusters[k]
		lc, ok := lv.clusters[c.Identifier]
		if !ok || !lc.found {
			continue
		}
		c.LiveKeyARN = lc.keyARN
		lifecycle.SetClusterStatus(i, c.Identifier, lc.status, source, now)
	}
	for id, status := range lv.instances {
		lifecycle.SetInstanceStatus(i, id, status)
	}
	lifecycle.MarkClusters(i, now)
}

func describeKey(ctx context.Context, c KMSAPI, ref string) (*kmstypes.KeyMetadata, error) {
	out, err := c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(ref)})
	if err != nil {
		return nil, fmt.Errorf("describe key %s: %w", ref, err)
	}
	if out.KeyMetadata == nil {
		return nil, fmt.Errorf("describe key %s: no key metadata in the answer", ref)
	}
	return out.KeyMetadata, nil
}

// clusterStatus is the cluster's live status, "" when RDS does not know the cluster.
func clusterStatus(ctx context.Context, c RDSAPI, id string) (incident.ClusterStatus, error) {
	out, err := c.DescribeDBClusters(ctx, &rds.DescribeDBClustersInput{DBClusterIdentifier: aws.String(id)})
	var nf *rdstypes.DBClusterNotFoundFault
	if errors.As(err, &nf) || (err == nil && len(out.DBClusters) == 0) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("describe cluster %s: %w", id, err)
	}
	return incident.ClusterStatus(aws.ToString(out.DBClusters[0].Status)), nil
}

// instanceStatus is the instance's live status, "" when RDS does not know the instance.
func instanceStatus(ctx context.Context, c RDSAPI, id string) (incident.ClusterStatus, error) {
	out, err := c.DescribeDBInstances(ctx, &rds.DescribeDBInstancesInput{DBInstanceIdentifier: aws.String(id)})
	var nf *rdstypes.DBInstanceNotFoundFault
	if errors.As(err, &nf) || (err == nil && len(out.DBInstances) == 0) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("describe instance %s: %w", id, err)
	}
	return incident.ClusterStatus(aws.ToString(out.DBInstances[0].DBInstanceStatus)), nil
}
