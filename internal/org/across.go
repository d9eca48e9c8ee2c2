package org

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/rds"
	rdstypes "github.com/aws/aws-sdk-go-v2/service/rds/types"
)

// AcrossAccounts answers the two RDS listings the reconciler makes — every cluster, and the
// instances of some clusters — over every account of the organisation, each through the member
// read role, as if they were one account: the reconciler keeps an incident's clusters true by
// listing them, and in organization mode they live in the members. Every account is listed in
// full (all pages) and the answer is one page (no Marker), in account order. An account that
// cannot be listed fails the call, naming it: a cluster missing from the answer would read as
// deleted, so a partial listing is never given. Cluster identifiers are unique per account only;
// the reconciler matches by identifier, so two accounts' clusters of the same name on one key
// are read as one (the incident keeps both, by ARN). It is safe for concurrent use.
type AcrossAccounts struct {
	settings Settings
	base     aws.Config
	roles    ConfigSource
	dirs     directories
}

// NewAcrossAccounts returns AcrossAccounts over the accounts settings name (or the
// organisation's), read from base, each through roles, in base's Region.
func NewAcrossAccounts(settings Settings, base aws.Config, roles ConfigSource) *AcrossAccounts {
	return &AcrossAccounts{settings: settings, base: base, roles: roles, dirs: newDirectories(settings, base)}
}

// each runs list in every account, at most the settings' concurrency at a time, and returns the
// answers in account order.
func each[T any](ctx context.Context, a *AcrossAccounts, list func(context.Context, *rds.Client) ([]T, error)) ([]T, error) {
	dir, err := a.dirs.fresh()
	if err != nil {
		return nil, err
	}
	accounts, err := dir.Accounts(ctx)
	if err != nil {
		return nil, err
	}
	results := make([][]T, len(accounts))
	errs := make([]error, len(accounts))
	sem := make(chan struct{}, max(a.settings.Concurrency, 1))
	var wg sync.WaitGroup
	for i, acct := range accounts {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			cfg, err := a.roles.Config(ctx, acct.ID, a.base.Region)
			if err != nil {
				errs[i] = err
				return
			}
			results[i], err = list(ctx, rds.NewFromConfig(cfg))
			if err != nil {
				errs[i] = fmt.Errorf("account %s: %w", acct.ID, err)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	var out []T
	for _, r := range results {
		out = append(out, r...)
	}
	return out, nil
}

// DescribeDBClusters lists the clusters of every account (the input's filters apply in each;
// its Marker is ignored: the answer is one page).
func (a *AcrossAccounts) DescribeDBClusters(ctx context.Context, in *rds.DescribeDBClustersInput, _ ...func(*rds.Options)) (*rds.DescribeDBClustersOutput, error) {
	clusters, err := each(ctx, a, func(ctx context.Context, c *rds.Client) ([]rdstypes.DBCluster, error) {
		q := *in
		q.Marker = nil
		var out []rdstypes.DBCluster
		p := rds.NewDescribeDBClustersPaginator(c, &q)
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				return nil, fmt.Errorf("describe db clusters: %w", err)
			}
			out = append(out, page.DBClusters...)
		}
		return out, nil
	})
	if err != nil {
		return nil, err
	}
	return &rds.DescribeDBClustersOutput{DBClusters: clusters}, nil
}

// DescribeDBInstances lists the instances of every account (the input's filters apply in each;
// its Marker is ignored: the answer is one page).
func (a *AcrossAccounts) DescribeDBInstances(ctx context.Context, in *rds.DescribeDBInstancesInput, _ ...func(*rds.Options)) (*rds.DescribeDBInstancesOutput, error) {
	instances, err := each(ctx, a, func(ctx context.Context, c *rds.Client) ([]rdstypes.DBInstance, error) {
		q := *in
		q.Marker = nil
		var out []rdstypes.DBInstance
		p := rds.NewDescribeDBInstancesPaginator(c, &q)
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				return nil, fmt.Errorf("describe db instances: %w", err)
			}
			out = append(out, page.DBInstances...)
		}
		return out, nil
	})
	if err != nil {
		return nil, err
	}
	return &rds.DescribeDBInstancesOutput{DBInstances: instances}, nil
}
