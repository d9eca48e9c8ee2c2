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

// accountClients is remedy's Clients in organization mode: KMS and RDS clients acting through
// the keywarden-remediate role of the account a step acts in (org.Roles: sts:AssumeRole, with
// the credentials cached and refreshed by the SDK). A step whose account the incident does not
// name runs with the function's own clients. Clients are cached per account and Region; a role
// that cannot be assumed is not cached, so the next run tries again.
type accountClients struct {
	roles configs
	own   remedy.Single

	mu   sync.Mutex
	kms  map[string]*kms.Client
	rdsc map[string]*rds.Client
}

func newAccountClients(roles configs, own remedy.Single) *accountClients {
	return &accountClients{roles: roles, own: own, kms: map[string]*kms.Client{}, rdsc: map[string]*rds.Client{}}
}

func (a *accountClients) config(ctx context.Context, account, region string) (aws.Config, error) {
	return a.roles.Config(ctx, account, region)
}

// KMS returns a KMS client acting in account and region.
func (a *accountClients) KMS(ctx context.Context, account, region string) (remedy.KMSAPI, error) {
	if account == "" {
		return a.own.KMSClient, nil
	}
	a.mu.Lock()
	c, ok := a.kms[account+"/"+region]
	a.mu.Unlock()
	if ok {
		return c, nil
	}
	cfg, err := a.config(ctx, account, region)
	if err != nil {
		return nil, err
	}
	c = kms.NewFromConfig(cfg)
	a.mu.Lock()
	a.kms[account+"/"+region] = c
	a.mu.Unlock()
	return c, nil
}

// RDS returns an RDS client acting in account and region.
func (a *accountClients) RDS(ctx context.Context, account, region string) (remedy.RDSAPI, error) {
	if account == "" {
		return a.own.RDSClient, nil
	}
	a.mu.Lock()
	c, ok := a.rdsc[account+"/"+region]
	a.mu.Unlock()
	if ok {
		return c, nil
	}
	cfg, err := a.config(ctx, account, region)
	if err != nil {
		return nil, err
	}
	c = rds.NewFromConfig(cfg)
	a.mu.Lock()
	a.rdsc[account+"/"+region] = c
	a.mu.Unlock()
	return c, nil
}
