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

// Scope is what a Finder gives the function that builds an account's finder.
type Scope struct {
	// Config acts in Account, in the key's Region.
	Config aws.Config
	// Account is the account searched.
	Account string
	// KeyARN is the key whose dependents are wanted.
	KeyARN string
}

// BlastFinder returns the function a Finder builds each account's finder with: blast.New over
// that account's RDS client, resolving key references through AccountKeys over that account's
// KMS.
func BlastFinder(opts ...blast.Option) func(Scope) RadiusFinder {
	return func(s Scope) RadiusFinder {
		keys := NewAccountKeys(kmskey.NewResolver(kms.NewFromConfig(s.Config)), s.Account, s.KeyARN)
		return blast.New(rds.NewFromConfig(s.Config), keys, opts...)
	}
}

// AccountKeys resolves the key references that the resources of one member account carry, when
// the key searched for may live in another account. KMS reads a bare key ID or an alias name as
// a key of the caller's own account, and a key of another account can be named only by its key
// ARN or alias ARN (https://docs.aws.amazon.com/kms/latest/developerguide/find-cmk-id-arn.html,
// "To specify a KMS key in a different AWS account, you must use its key ARN or alias ARN"). So in
// an account other than the key's, a key ID is the key ARN of that account's key, and an alias
// name or an alias ARN of that account names a key of that account — neither can be the key
// searched for, and no call is needed to say so. Everything else (the key's own account, alias
// ARNs of the key's account) goes to next, the account's KMS: DescribeKey works across accounts
// with a key ARN or alias ARN when the key policy and the caller's IAM policy both allow it
// (https://docs.aws.amazon.com/kms/latest/developerguide/key-policy-modifying-external-accounts.html);
// otherwise next's error says so. RDS stores the key ARN for a cluster on another account's key,
// so on AWS the common cross-account case costs no call at all.
type AccountKeys struct {
	next                        blast.KeyNormaliser
	account, keyAccount, region string
	partition                   string
}

// NewAccountKeys returns AccountKeys for references met in account, searching for keyARN.
func NewAccountKeys(next blast.KeyNormaliser, account, keyARN string) *AccountKeys {
	k := &AccountKeys{next: next, account: account, partition: "aws"}
	if a, err := arn.Parse(keyARN); err == nil {
		k.keyAccount, k.region, k.partition = a.AccountID, a.Region, a.Partition
	}
	return k
}

// ARN returns ref's key ARN, or, for an alias of this account when the key searched for is in
// another one, the alias's ARN (which no key ARN equals). It is safe for concurrent use when next
// is.
func (k *AccountKeys) ARN(ctx context.Context, ref string) (string, error) {
	if k.account == k.keyAccount || k.keyAccount == "" {
		return k.next.ARN(ctx, ref)
	}
	if a, err := arn.Parse(ref); err == nil {
		if a.Service == "kms" && a.AccountID == k.account && strings.HasPrefix(a.Resource, "alias/") {
			return ref, nil
		}
		return k.next.ARN(ctx, ref)
	}
	if strings.HasPrefix(ref, "alias/") {
		return fmt.Sprintf("arn:%s:kms:%s:%s:%s", k.partition, k.region, k.account, ref), nil
	}
	return fmt.Sprintf("arn:%s:kms:%s:%s:key/%s", k.partition, k.region, k.account, ref), nil
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
	newFinder   func(Scope) RadiusFinder
	concurrency int
}

// NewFinder returns a Finder searching the accounts from accounts, each through the
// configuration configs gives for it (the read role), with the finder newFinder builds over that
// configuration (BlastFinder in production).
func NewFinder(accounts AccountSource, configs ConfigSource, newFinder func(Scope) RadiusFinder, opts ...Option) *Finder {
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
	if !incident.IsKeyARN(keyARN) {
		return Radius{}, fmt.Errorf("organisation blast radius: %q is not a key ARN", keyARN)
	}
	a, _ := arn.Parse(keyARN)
	accounts, err := f.accounts.Accounts(ctx)
	if err != nil {
		return Radius{}, fmt.Errorf("organisation blast radius of %s: %w", keyARN, err)
	}
	if len(accounts) == 0 {
		// Searching nothing proves nothing: "no Aurora impact" would be a false all-clear.
		return Radius{}, fmt.Errorf("organisation blast radius of %s: no accounts to search (name them, or let Organizations list the organisation's)", keyARN)
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
	r, err := f.newFinder(Scope{Config: cfg, Account: account, KeyARN: keyARN}).Find(ctx, keyARN)
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
