package remedy

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/rds"

	"github.com/keywarden/keywarden/internal/incident"
)

// Clients gives the KMS and RDS clients that act in an account (issue 13): in organization
// mode, each step runs in the account it acts in — the key's account for CancelKeyDeletion,
// EnableKey and the wait, each cluster's account for StartDBCluster and RebootDBInstance, and the
// live-state reads likewise — through that account's member roles (RemediateFunction reads
// through keywarden-read and writes through keywarden-remediate), because KMS lets only the key's
// own account enable it or cancel its deletion, and RDS acts only on clusters of the caller's
// account. account is "" when
// the incident does not say (account mode, or a dependent recorded before issue 13); region is
// the key's Region. An error (a role that cannot be assumed) fails the step in that account.
type Clients interface {
	KMS(ctx context.Context, account, region string) (KMSAPI, error)
	RDS(ctx context.Context, account, region string) (RDSAPI, error)
}

// WithClients makes the Runner call KMS and RDS through clients, per account (organization
// mode); New's two clients are then unused. Account mode does not call it: New's two clients
// act in the function's own account. It returns r.
func (r *Runner) WithClients(c Clients) *Runner {
	r.kms, r.rds = routedKMS{c}, routedRDS{c}
	return r
}

// ClientsError is an account whose clients could not be had (its role could not be assumed): the
// step in that account fails, recorded with the account.
type ClientsError struct {
	Account string
	Err     error
}

func (e *ClientsError) Error() string { return fmt.Sprintf("account %s: %v", e.Account, e.Err) }

func (e *ClientsError) Unwrap() error { return e.Err }

// where is the account and Region a call acts in, carried by the context: the Runner's existing
// calls stay as they are and are routed by routedKMS and routedRDS.
type where struct{ account, region string }

type whereKey struct{}

// inAccount returns ctx acting in account, in the Region of keyARN.
func inAccount(ctx context.Context, account, keyARN string) context.Context {
	return context.WithValue(ctx, whereKey{}, where{account: account, region: incident.ARNRegion(keyARN)})
}

func whereOf(ctx context.Context) where {
	w, _ := ctx.Value(whereKey{}).(where)
	return w
}

// stepAccount is the account a step acts in: the key's for key steps, the cluster's or the
// instance's for RDS steps and instance watches ("" when the incident does not say).
func stepAccount(inc incident.Incident, s Step) string {
	switch s.Name {
	case incident.StepStartDBCluster:
		for _, c := range inc.Clusters {
			if c.Identifier == s.Target {
				return c.Account
			}
		}
		return ""
	case incident.StepRebootDBInstance, incident.StepWatchInstance:
		for _, in := range inc.Instances {
			if in.Identifier == s.Target {
				return in.Account
			}
		}
		return ""
	}
	return inc.KeyAccount
}

type routedKMS struct{ c Clients }

func (r routedKMS) client(ctx context.Context) (KMSAPI, error) {
	w := whereOf(ctx)
	api, err := r.c.KMS(ctx, w.account, w.region)
	if err != nil {
		return nil, &ClientsError{Account: w.account, Err: err}
	}
	return api, nil
}

func (r routedKMS) DescribeKey(ctx context.Context, in *kms.DescribeKeyInput, o ...func(*kms.Options)) (*kms.DescribeKeyOutput, error) {
	api, err := r.client(ctx)
	if err != nil {
		return nil, err
	}
	return api.DescribeKey(ctx, in, o...)
}

func (r routedKMS) CancelKeyDeletion(ctx context.Context, in *kms.CancelKeyDeletionInput, o ...func(*kms.Options)) (*kms.CancelKeyDeletionOutput, error) {
	api, err := r.client(ctx)
	if err != nil {
		return nil, err
	}
	return api.CancelKeyDeletion(ctx, in, o...)
}

func (r routedKMS) EnableKey(ctx context.Context, in *kms.EnableKeyInput, o ...func(*kms.Options)) (*kms.EnableKeyOutput, error) {
	api, err := r.client(ctx)
	if err != nil {
		return nil, err
	}
	return api.EnableKey(ctx, in, o...)
}

type routedRDS struct{ c Clients }

func (r routedRDS) client(ctx context.Context) (RDSAPI, error) {
	w := whereOf(ctx)
	api, err := r.c.RDS(ctx, w.account, w.region)
	if err != nil {
		return nil, &ClientsError{Account: w.account, Err: err}
	}
	return api, nil
}

func (r routedRDS) DescribeDBClusters(ctx context.Context, in *rds.DescribeDBClustersInput, o ...func(*rds.Options)) (*rds.DescribeDBClustersOutput, error) {
	api, err := r.client(ctx)
	if err != nil {
		return nil, err
	}
	return api.DescribeDBClusters(ctx, in, o...)
}

func (r routedRDS) StartDBCluster(ctx context.Context, in *rds.StartDBClusterInput, o ...func(*rds.Options)) (*rds.StartDBClusterOutput, error) {
	api, err := r.client(ctx)
	if err != nil {
		return nil, err
	}
	return api.StartDBCluster(ctx, in, o...)
}

func (r routedRDS) DescribeDBInstances(ctx context.Context, in *rds.DescribeDBInstancesInput, o ...func(*rds.Options)) (*rds.DescribeDBInstancesOutput, error) {
	api, err := r.client(ctx)
	if err != nil {
		return nil, err
	}
	return api.DescribeDBInstances(ctx, in, o...)
}

func (r routedRDS) RebootDBInstance(ctx context.Context, in *rds.RebootDBInstanceInput, o ...func(*rds.Options)) (*rds.RebootDBInstanceOutput, error) {
	api, err := r.client(ctx)
	if err != nil {
		return nil, err
	}
	return api.RebootDBInstance(ctx, in, o...)
}
