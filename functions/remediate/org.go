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
	own         remedy.Single

	mu   sync.Mutex
	kmsc map[string]*kms.Client
	rdsc map[string]*rds.Client
}

func newAccountClients(read, write configs, own remedy.Single) *accountClients {
	return &accountClients{read: read, write: write, own: own, kmsc: map[string]*kms.Client{}, rdsc: map[string]*rds.Client{}}
}

// config returns the configuration of roles in account and region, or a *remedy.ClientsError.
func (a *accountClients) config(ctx context.Context, roles configs, account, region string) (aws.Config, error) {
	cfg, err := roles.Config(ctx, account, region)
	if err != nil {
		return aws.Config{}, &remedy.ClientsError{Account: account, Err: err}
	}
	return cfg, nil
}

func (a *accountClients) kmsClient(ctx context.Context, roles configs, name, account, region string) (*kms.Client, error) {
	key := name + "/" + account + "/" + region
	a.mu.Lock()
	c, ok := a.kmsc[key]
	a.mu.Unlock()
	if ok {
		return c, nil
	}
	cfg, err := a.config(ctx, roles, account, region)
	if err != nil {
		return nil, err
	}
	c = kms.NewFromConfig(cfg)
	a.mu.Lock()
	a.kmsc[key] = c
	a.mu.Unlock()
	return c, nil
}

func (a *accountClients) rdsClient(ctx context.Context, roles configs, name, account, region string) (*rds.Client, error) {
	key := name + "/" + account + "/" + region
	a.mu.Lock()
	c, ok := a.rdsc[key]
	a.mu.Unlock()
	if ok {
		return c, nil
	}
	cfg, err := a.config(ctx, roles, account, region)
	if err != nil {
		return nil, err
	}
	c = rds.NewFromConfig(cfg)
	a.mu.Lock()
	a.rdsc[key] = c
	a.mu.Unlock()
	return c, nil
}

// KMS returns the KMS client of account and region: reads through the read role, writes
// through the remediate role.
func (a *accountClients) KMS(_ context.Context, account, region string) (remedy.KMSAPI, error) {
	if account == "" {
		return a.own.KMSClient, nil
	}
	return memberKMS{a: a, account: account, region: region}, nil
}

// RDS returns the RDS client of account and region: reads through the read role, writes
// through the remediate role.
func (a *accountClients) RDS(_ context.Context, account, region string) (remedy.RDSAPI, error) {
	if account == "" {
		return a.own.RDSClient, nil
	}
	return memberRDS{a: a, account: account, region: region}, nil
}

type memberKMS struct {
	a               *accountClients
	account, region string
}

func (m memberKMS) DescribeKey(ctx context.Context, in *kms.DescribeKeyInput, o ...func(*kms.Options)) (*kms.DescribeKeyOutput, error) {
	c, err := m.a.kmsClient(ctx, m.a.read, "read", m.account, m.region)
	if err != nil {
		return nil, err
	}
	return c.DescribeKey(ctx, in, o...)
}

func (m memberKMS) CancelKeyDeletion(ctx context.Context, in *kms.CancelKeyDeletionInput, o ...func(*kms.Options)) (*kms.CancelKeyDeletionOutput, error) {
	c, err := m.a.kmsClient(ctx, m.a.write, "remediate", m.account, m.region)
	if err != nil {
		return nil, err
	}
	return c.CancelKeyDeletion(ctx, in, o...)
}

func (m memberKMS) EnableKey(ctx context.Context, in *kms.EnableKeyInput, o ...func(*kms.Options)) (*kms.EnableKeyOutput, error) {
	c, err := m.a.kmsClient(ctx, m.a.write, "remediate", m.account, m.region)
	if err != nil {
		return nil, err
	}
	return c.EnableKey(ctx, in, o...)
}

type memberRDS struct {
	a               *accountClients
	account, region string
}

func (m memberRDS) DescribeDBClusters(ctx context.Context, in *rds.DescribeDBClustersInput, o ...func(*rds.Options)) (*rds.DescribeDBClustersOutput, error) {
	c, err := m.a.rdsClient(ctx, m.a.read, "read", m.account, m.region)
	if err != nil {
		return nil, err
	}
	return c.DescribeDBClusters(ctx, in, o...)
}

func (m memberRDS) DescribeDBInstances(ctx context.Context, in *rds.DescribeDBInstancesInput, o ...func(*rds.Options)) (*rds.DescribeDBInstancesOutput, error) {
	c, err := m.a.rdsClient(ctx, m.a.read, "read", m.account, m.region)
	if err != nil {
		return nil, err
	}
	return c.DescribeDBInstances(ctx, in, o...)
}

func (m memberRDS) StartDBCluster(ctx context.Context, in *rds.StartDBClusterInput, o ...func(*rds.Options)) (*rds.StartDBClusterOutput, error) {
	c, err := m.a.rdsClient(ctx, m.a.write, "remediate", m.account, m.region)
	if err != nil {
		return nil, err
	}
	return c.StartDBCluster(ctx, in, o...)
}

func (m memberRDS) RebootDBInstance(ctx context.Context, in *rds.RebootDBInstanceInput, o ...func(*rds.Options)) (*rds.RebootDBInstanceOutput, error) {
	c, err := m.a.rdsClient(ctx, m.a.write, "remediate", m.account, m.region)
	if err != nil {
		return nil, err
	}
	return c.RebootDBInstance(ctx, in, o...)
}
