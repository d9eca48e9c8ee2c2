package main

import (
	"context"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/rds"

	"github.com/keywarden/keywarden/internal/remedy"
)

// configs gives an AWS configuration acting in a member account; *member.Roles fits.
type configs interface {
	Config(ctx context.Context, account, region string) (aws.Config, error)
}

// accountClients is remedy's Clients in organization mode. A step's reads (DescribeKey,
// DescribeDBClusters, DescribeDBInstances) go through the keywarden-read role of the account it
// acts in and its writes (EnableKey, CancelKeyDeletion, StartDBCluster, RebootDBInstance) through
// keywarden-remediate there: member.yaml gives the remediate role the four writes only, and the
// template lets RemediateFunction assume both. Credentials come from sts:AssumeRole
// (member.Roles: cached per account, refreshed by the SDK). A role that cannot be assumed is a
// *remedy.ClientsError from the call that needed it, so remedy records the step as failed in
// that account. A step whose account the incident does not name runs with the function's own
// clients. It is safe for concurrent use.
type accountClients struct {
	read, write configs
	ownKMS      remedy.KMSAPI
	ownRDS      remedy.RDSAPI

	mu   sync.Mutex
	kmsc map[string]*kms.Client
	rdsc map[string]*rds.Client
}

// newAccountClients returns the clients of member accounts through the read and write roles,
// and ownKMS and ownRDS for steps whose account the incident does not name.
func newAccountClients(read, write configs, ownKMS remedy.KMSAPI, ownRDS remedy.RDSAPI) *accountClients {
	return &accountClients{read: read, write: write, ownKMS: ownKMS, ownRDS: ownRDS, kmsc: map[string]*kms.Client{}, rdsc: map[string]*rds.Client{}}
}

// config returns the configuration of roles in account and region, or a *remedy.ClientsError.
func (a *accountClients) config(ctx context.Context, roles configs, account, region string) (aws.Config, error) {
	cfg, err := roles.Config(ctx, account, region)
	if err != nil {
		return aws.Config{}, &remedy.ClientsError{Account: account, Err: err}
	}
	return cfg, nil
}

// client returns the client of roles in account and region from cache, building it with build
// on first use. name tells the read role's clients from the remediate role's.
func client[C any](ctx context.Context, a *accountClients, cache map[string]C, build func(aws.Config) C,
	roles configs, name, account, region string) (C, error) {
	key := name + "/" + account + "/" + region
	a.mu.Lock()
	c, ok := cache[key]
	a.mu.Unlock()
	if ok {
		return c, nil
	}
	cfg, err := a.config(ctx, roles, account, region)
	if err != nil {
		return c, err
	}
	c = build(cfg)
	a.mu.Lock()
	cache[key] = c
	a.mu.Unlock()
	return c, nil
}

// KMS returns the KMS client of account and region: reads through the read role, writes
// through the remediate role.
func (a *accountClients) KMS(_ context.Context, account, region string) (remedy.KMSAPI, error) {
	if account == "" {
		return a.ownKMS, nil
	}
	return memberKMS{a: a, account: account, region: region}, nil
}

// RDS returns the RDS client of account and region: reads through the read role, writes
// through the remediate role.
func (a *accountClients) RDS(_ context.Context, account, region string) (remedy.RDSAPI, error) {
	if account == "" {
		return a.ownRDS, nil
	}
	return memberRDS{a: a, account: account, region: region}, nil
}

type memberKMS struct {
	a               *accountClients
	account, region string
}

// viaKMS makes one KMS call in m's account through the read role, or the remediate role when
// write is set.
func viaKMS[In, Out any](ctx context.Context, m memberKMS, write bool, call func(*kms.Client, context.Context, *In, ...func(*kms.Options)) (*Out, error), in *In, o []func(*kms.Options)) (*Out, error) {
	roles, name := m.a.read, "read"
	if write {
		roles, name = m.a.write, "remediate"
	}
	c, err := client(ctx, m.a, m.a.kmsc, newKMS, roles, name, m.account, m.region)
	if err != nil {
		return nil, err
	}
	return call(c, ctx, in, o...)
}

func (m memberKMS) DescribeKey(ctx context.Context, in *kms.DescribeKeyInput, o ...func(*kms.Options)) (*kms.DescribeKeyOutput, error) {
	return viaKMS(ctx, m, false, (*kms.Client).DescribeKey, in, o)
}

func (m memberKMS) CancelKeyDeletion(ctx context.Context, in *kms.CancelKeyDeletionInput, o ...func(*kms.Options)) (*kms.CancelKeyDeletionOutput, error) {
	return viaKMS(ctx, m, true, (*kms.Client).CancelKeyDeletion, in, o)
}

func (m memberKMS) EnableKey(ctx context.Context, in *kms.EnableKeyInput, o ...func(*kms.Options)) (*kms.EnableKeyOutput, error) {
	return viaKMS(ctx, m, true, (*kms.Client).EnableKey, in, o)
}

type memberRDS struct {
	a               *accountClients
	account, region string
}

// viaRDS makes one RDS call in m's account through the read role, or the remediate role when
// write is set.
func viaRDS[In, Out any](ctx context.Context, m memberRDS, write bool, call func(*rds.Client, context.Context, *In, ...func(*rds.Options)) (*Out, error), in *In, o []func(*rds.Options)) (*Out, error) {
	roles, name := m.a.read, "read"
	if write {
		roles, name = m.a.write, "remediate"
	}
	c, err := client(ctx, m.a, m.a.rdsc, newRDS, roles, name, m.account, m.region)
	if err != nil {
		return nil, err
	}
	return call(c, ctx, in, o...)
}

func (m memberRDS) DescribeDBClusters(ctx context.Context, in *rds.DescribeDBClustersInput, o ...func(*rds.Options)) (*rds.DescribeDBClustersOutput, error) {
	return viaRDS(ctx, m, false, (*rds.Client).DescribeDBClusters, in, o)
}

func (m memberRDS) DescribeDBInstances(ctx context.Context, in *rds.DescribeDBInstancesInput, o ...func(*rds.Options)) (*rds.DescribeDBInstancesOutput, error) {
	return viaRDS(ctx, m, false, (*rds.Client).DescribeDBInstances, in, o)
}

func (m memberRDS) StartDBCluster(ctx context.Context, in *rds.StartDBClusterInput, o ...func(*rds.Options)) (*rds.StartDBClusterOutput, error) {
	return viaRDS(ctx, m, true, (*rds.Client).StartDBCluster, in, o)
}

func (m memberRDS) RebootDBInstance(ctx context.Context, in *rds.RebootDBInstanceInput, o ...func(*rds.Options)) (*rds.RebootDBInstanceOutput, error) {
	return viaRDS(ctx, m, true, (*rds.Client).RebootDBInstance, in, o)
}

// newKMS and newRDS build a client from a configuration: the SDK's NewFromConfig.
func newKMS(cfg aws.Config) *kms.Client { return kms.NewFromConfig(cfg) }
func newRDS(cfg aws.Config) *rds.Client { return rds.NewFromConfig(cfg) }
