package member

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

// SessionName is the role session name keywarden's assumed roles carry, so that CloudTrail in
// the member account says who acted.
const SessionName = "keywarden"

// RoleError is a member role that could not be assumed: the role does not exist in that
// account (the StackSet has not reached it), its trust policy does not name this caller, or STS
// refused for another reason. It names the account, so a radius can report it and a remediation
// step can record where it failed.
type RoleError struct {
	Account string
	RoleARN string
	Err     error
}

func (e *RoleError) Error() string {
	return fmt.Sprintf("account %s: assume role %s: %v", e.Account, e.RoleARN, e.Err)
}

func (e *RoleError) Unwrap() error { return e.Err }

// Roles gives an AWS configuration per member account, acting through one role name there
// (keywarden-read or keywarden-remediate). Credentials come from sts:AssumeRole
// (https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRole.html) through the SDK's
// stscreds provider and are cached per account, refreshed by the SDK before they expire; one
// Roles is meant to live as long as the process (a Lambda cold start, a CLI run). It is safe for
// concurrent use.
type Roles struct {
	base      aws.Config
	sts       stscreds.AssumeRoleAPIClient
	name      string
	partition string

	mu    sync.Mutex
	cache map[string]aws.CredentialsProvider
}

// NewRoles returns Roles assuming role name (a role name, optionally with its path, such as
// "keywarden-read") in each account with base's credentials, in the partition of base's Region
// ("aws" unless the Region is a China or GovCloud one).
func NewRoles(base aws.Config, name string) *Roles {
	return NewRolesWith(base, sts.NewFromConfig(base), name)
}

// NewRolesWith is NewRoles with the STS client given, for a test or a client built elsewhere.
func NewRolesWith(base aws.Config, stsAPI stscreds.AssumeRoleAPIClient, name string) *Roles {
	return &Roles{base: base, sts: stsAPI, name: strings.Trim(name, "/"), partition: partitionOf(base.Region),
		cache: map[string]aws.CredentialsProvider{}}
}

// RoleARN returns the ARN of the role in account.
func (r *Roles) RoleARN(account string) string {
	return fmt.Sprintf("arn:%s:iam::%s:role/%s", r.partition, account, r.name)
}

// Config returns base's configuration acting as the role in account, in region (base's Region
// when empty). The first call for an account assumes the role at once, so that a role that
// cannot be assumed is a *RoleError here, naming the account, rather than a failure of whatever
// call comes first; later calls reuse the cached credentials. A failure is not cached: the next
// call tries again.
func (r *Roles) Config(ctx context.Context, account, region string) (aws.Config, error) {
	if err := ValidAccountID(account); err != nil {
		return aws.Config{}, err
	}
	creds, err := r.credentials(ctx, account)
	if err != nil {
		return aws.Config{}, err
	}
	cfg := r.base.Copy()
	cfg.Credentials = creds
	if region != "" {
		cfg.Region = region
	}
	return cfg, nil
}

func (r *Roles) credentials(ctx context.Context, account string) (aws.CredentialsProvider, error) {
	r.mu.Lock()
	creds, ok := r.cache[account]
	r.mu.Unlock()
	if ok {
		return creds, nil
	}
	roleARN := r.RoleARN(account)
	c := aws.NewCredentialsCache(stscreds.NewAssumeRoleProvider(r.sts, roleARN,
		func(o *stscreds.AssumeRoleOptions) { o.RoleSessionName = SessionName }))
	if _, err := c.Retrieve(ctx); err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("account %s: %w", account, errors.Join(ctx.Err(), err))
		}
		return nil, &RoleError{Account: account, RoleARN: roleARN, Err: err}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if prev, ok := r.cache[account]; ok {
		return prev, nil
	}
	r.cache[account] = c
	return c, nil
}

// partitionOf returns the partition of a Region name: IAM role ARNs carry it.
func partitionOf(region string) string {
	switch {
	case strings.HasPrefix(region, "cn-"):
		return "aws-cn"
	case strings.HasPrefix(region, "us-gov-"):
		return "aws-us-gov"
	}
	return "aws"
}
