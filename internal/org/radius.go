package org

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/arn"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/rds"

	"github.com/keywarden/keywarden/internal/blast"
	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/kmskey"
)

// AccountSource lists the accounts to search; *Directory satisfies it.
type AccountSource interface {
	Accounts(ctx context.Context) ([]Account, error)
}

// ConfigSource gives an AWS configuration acting in an account and Region; *Roles satisfies it.
// An error for one account must name it (a *RoleError does).
type ConfigSource interface {
	Config(ctx context.Context, account, region string) (aws.Config, error)
}

// RadiusFinder finds one account's dependents of a key; *blast.Finder satisfies it.
type RadiusFinder interface {
	Find(ctx context.Context, keyARN string) (blast.Radius, error)
}

// BlastFinder returns the function a Finder builds each account's finder with: blast.New over
// that account's RDS and KMS clients. Each account resolves the key references its clusters
// carry through its own KMS: an alias or key ID there names a key of that account, and a key
// ARN is its own answer and costs no call. A reference to a key of another account in another
// form (an alias ARN) resolves only if that key's policy lets the member account describe it —
// KMS's DescribeKey works across accounts with a key ARN or alias ARN when the key policy and
// the caller's IAM policy both allow it
// (https://docs.aws.amazon.com/kms/latest/developerguide/key-policy-modifying-external-accounts.html);
// otherwise it is treated as a key that does not exist there. RDS stores the key ARN for a
// cluster on another account's key (a cross-account key must be named by ARN), so that case is
// what the ARN comparison covers.
func BlastFinder(opts ...blast.Option) func(aws.Config) RadiusFinder {
	return func(cfg aws.Config) RadiusFinder {
		return blast.New(rds.NewFromConfig(cfg), kmskey.NewResolver(kms.NewFromConfig(cfg)), opts...)
	}
}

// Radius is everything that depends on one key across the organisation.
type Radius struct {
	// Radius is the blast radius over every account searched, each dependent with its Account;
	// clusters, instances and snapshots sorted by account, then identifier.
	blast.Radius
	// Accounts are the accounts searched (with their names when Organizations gave them),
	// failed ones included.
	Accounts []Account `json:"accounts"`
	// AccountsFailed are the accounts whose dependents could not be read, sorted by account.
	AccountsFailed []AccountFailure `json:"accounts_failed"`
	// Incomplete is true when an account failed: the radius may miss its dependents.
	Incomplete bool `json:"radius_incomplete"`
}

// Option changes how a Finder works.
type Option func(*Finder)

// WithConcurrency bounds how many accounts are searched at once (DefaultConcurrency unless
// given; values below 1 mean 1).
func WithConcurrency(n int) Option {
	return func(f *Finder) { f.concurrency = max(n, 1) }
}

// Finder finds a key's dependents in every account of the organisation. It is safe for
// concurrent use.
type Finder struct {
	accounts    AccountSource
	configs     ConfigSource
	newFinder   func(aws.Config) RadiusFinder
	concurrency int
}

// NewFinder returns a Finder searching the accounts from accounts, each through the
// configuration configs gives for it (the read role), with the finder newFinder builds over that
// configuration (BlastFinder in production).
func NewFinder(accounts AccountSource, configs ConfigSource, newFinder func(aws.Config) RadiusFinder, opts ...Option) *Finder {
	f := &Finder{accounts: accounts, configs: configs, newFinder: newFinder, concurrency: DefaultConcurrency}
	for _, o := range opts {
		o(f)
	}
	return f
}

// Find returns the dependents of the key keyARN (a key ARN: it says the key's Region) in every
// account, searched in the key's Region only — KMS keys are Regional, and a multi-Region replica
// is a key of its own with its own ARN. Accounts are searched concurrently, at most the Finder's
// concurrency at a time. An account whose role cannot be assumed or whose search fails is in
// AccountsFailed with the reason, and makes the radius Incomplete; it never fails the call and
// is never dropped. Find returns an error only when keyARN is not a key ARN, when the accounts
// cannot be listed, or when ctx ends.
func (f *Finder) Find(ctx context.Context, keyARN string) (Radius, error) {
	a, err := arn.Parse(keyARN)
	if err != nil || a.Service != "kms" || !strings.HasPrefix(a.Resource, "key/") {
		return Radius{}, fmt.Errorf("organisation blast radius: %q is not a key ARN", keyARN)
	}
	accounts, err := f.accounts.Accounts(ctx)
	if err != nil {
		return Radius{}, fmt.Errorf("organisation blast radius of %s: %w", keyARN, err)
	}

	type result struct {
		account string
		radius  blast.Radius
		err     error
	}
	results := make([]result, len(accounts))
	sem := make(chan struct{}, f.concurrency)
	var wg sync.WaitGroup
	for i, acct := range accounts {
		wg.Go(func() {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				results[i] = result{account: acct.ID, err: ctx.Err()}
				return
			}
			defer func() { <-sem }()
			r, err := f.searchAccount(ctx, acct.ID, a.Region, keyARN)
			results[i] = result{account: acct.ID, radius: r, err: err}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return Radius{}, fmt.Errorf("organisation blast radius of %s: %w", keyARN, err)
	}

	out := Radius{
		Radius: blast.Radius{KeyARN: keyARN, Clusters: []incident.Cluster{}, Instances: []incident.Instance{},
			Snapshots: []incident.Snapshot{}, OtherEngines: []incident.Cluster{}},
		Accounts:       accounts,
		AccountsFailed: []AccountFailure{},
	}
	if out.Accounts == nil {
		out.Accounts = []Account{}
	}
	for _, r := range results {
		if r.err != nil {
			out.AccountsFailed = append(out.AccountsFailed, AccountFailure{Account: r.account, Reason: r.err.Error()})
			continue
		}
		out.Clusters = append(out.Clusters, withAccount(r.radius.Clusters, r.account)...)
		out.OtherEngines = append(out.OtherEngines, withAccount(r.radius.OtherEngines, r.account)...)
		for _, in := range r.radius.Instances {
			in.Account = r.account
			out.Instances = append(out.Instances, in)
		}
		for _, s := range r.radius.Snapshots {
			s.Account = r.account
			out.Snapshots = append(out.Snapshots, s)
		}
	}
	out.Incomplete = len(out.AccountsFailed) > 0
	byCluster := func(a, b incident.Cluster) int {
		return cmp.Or(strings.Compare(a.Account, b.Account), strings.Compare(a.Identifier, b.Identifier))
	}
	slices.SortFunc(out.Clusters, byCluster)
	slices.SortFunc(out.OtherEngines, byCluster)
	slices.SortFunc(out.Instances, func(a, b incident.Instance) int {
		return cmp.Or(strings.Compare(a.Account, b.Account), strings.Compare(a.Identifier, b.Identifier))
	})
	slices.SortFunc(out.Snapshots, func(a, b incident.Snapshot) int {
		return cmp.Or(strings.Compare(a.Account, b.Account), strings.Compare(a.Identifier, b.Identifier), strings.Compare(a.Type, b.Type))
	})
	slices.SortFunc(out.AccountsFailed, func(a, b AccountFailure) int { return strings.Compare(a.Account, b.Account) })
	return out, nil
}

// searchAccount runs the account's finder in region. Errors name the account.
func (f *Finder) searchAccount(ctx context.Context, account, region, keyARN string) (blast.Radius, error) {
	cfg, err := f.configs.Config(ctx, account, region)
	if err != nil {
		return blast.Radius{}, err
	}
	r, err := f.newFinder(cfg).Find(ctx, keyARN)
	if err != nil {
		return blast.Radius{}, fmt.Errorf("account %s: %w", account, err)
	}
	return r, nil
}

func withAccount(cs []incident.Cluster, account string) []incident.Cluster {
	out := make([]incident.Cluster, 0, len(cs))
	for _, c := range cs {
		c.Account = account
		out = append(out, c)
	}
	return out
}
