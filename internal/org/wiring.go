package org

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/arn"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/keywarden/keywarden/internal/blast"
	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/kmskey"
)

// RunFinder is a Finder built afresh for every search, so that the organisation's accounts are
// listed again per key (a Lambda lives for hours; accounts join the organisation meanwhile). It
// is what intake's WithAccounts takes in a function. It is safe for concurrent use.
type RunFinder struct {
	settings Settings
	dirs     directories
	roles    ConfigSource
	opts     []blast.Option
}

// NewRunFinder returns a RunFinder searching the accounts settings name (or the organisation's,
// through ReadRoleARN) from base, each account through roles (the read role), with blast's
// options.
func NewRunFinder(settings Settings, base aws.Config, roles ConfigSource, opts ...blast.Option) *RunFinder {
	return &RunFinder{settings: settings, dirs: newDirectories(settings, base), roles: roles, opts: opts}
}

// Find returns the key's dependents across the organisation (Finder.Find): the same answer and
// the same errors, with a fresh account list.
func (r *RunFinder) Find(ctx context.Context, keyARN string) (Radius, error) {
	dir, err := r.dirs.fresh()
	if err != nil {
		return Radius{}, err
	}
	return NewFinder(dir, r.roles, BlastFinder(r.opts...), WithConcurrency(r.settings.Concurrency)).Find(ctx, keyARN)
}

// IncompleteError is an organisation-wide radius that missed accounts, for a caller that only
// knows "the radius could not be read in full" (the reconciler's one-account Radius interface).
type IncompleteError struct {
	Failed []AccountFailure
}

func (e *IncompleteError) Error() string {
	msg := "organisation blast radius incomplete:"
	for _, f := range e.Failed {
		msg += " " + f.Reason + ";"
	}
	return msg
}

// ManyFinder adapts an organisation-wide finder to the one-listing FindMany of a one-account
// blast.Finder, which the reconciler's backstop and radius repair call: one organisation search
// per key. A key whose search missed accounts is left out of the map and the error is an
// *IncompleteError naming them, so the caller keeps the radius marked incomplete.
type ManyFinder struct {
	Finder interface {
		Find(ctx context.Context, keyARN string) (Radius, error)
	}
}

// FindMany returns each key's dependents across the organisation; see ManyFinder.
func (m ManyFinder) FindMany(ctx context.Context, keyARNs []string) (map[string]blast.Radius, error) {
	out := make(map[string]blast.Radius, len(keyARNs))
	var errs []error
	for _, k := range keyARNs {
		r, err := m.Finder.Find(ctx, k)
		switch {
		case err != nil:
			errs = append(errs, err)
		case r.Incomplete:
			errs = append(errs, &IncompleteError{Failed: r.AccountsFailed})
		default:
			out[k] = r.Radius
		}
	}
	return out, errors.Join(errs...)
}

// Keys reads keys in the account that owns them, through a member role there (keywarden-read):
// KMS answers DescribeKey and ListAliases for a key of another account only when that key's
// policy names the caller, and ListAliases never lists another account's aliases
// (https://docs.aws.amazon.com/kms/latest/APIReference/API_ListAliases.html), so an
// organization-mode deployment asks the key's own account. A reference that is not a key ARN
// (a key ID, an alias name, a custom key store) is read by local, the central account's
// resolver. A role that cannot be assumed is reported as kmskey.ErrDenied wrapping the
// *RoleError: permanent for a key-side signal, a key of Unknown state for a cluster's own report.
// It fits intake.Keys, rdstrack.Keys and reconcile.Keys, and is safe for concurrent use.
type Keys struct {
	local *kmskey.Resolver
	roles ConfigSource

	mu       sync.Mutex
	accounts map[string]*kmskey.Resolver
}

// NewKeys returns Keys reading through roles (the read role), with local for references that
// name no account.
func NewKeys(local *kmskey.Resolver, roles ConfigSource) *Keys {
	return &Keys{local: local, roles: roles, accounts: map[string]*kmskey.Resolver{}}
}

// resolver returns the resolver for ref's account, or local when ref is not an ARN.
func (k *Keys) resolver(ctx context.Context, ref string) (*kmskey.Resolver, error) {
	a, err := arn.Parse(ref)
	if err != nil || a.AccountID == "" {
		return k.local, nil
	}
	key := a.AccountID + "/" + a.Region
	k.mu.Lock()
	r, ok := k.accounts[key]
	k.mu.Unlock()
	if ok {
		return r, nil
	}
	cfg, err := k.roles.Config(ctx, a.AccountID, a.Region)
	if err != nil {
		var re *RoleError
		if errors.As(err, &re) {
			return nil, fmt.Errorf("%w: %w", kmskey.ErrDenied, err)
		}
		return nil, err
	}
	r = kmskey.NewResolver(kms.NewFromConfig(cfg))
	k.mu.Lock()
	defer k.mu.Unlock()
	if prev, ok := k.accounts[key]; ok {
		return prev, nil
	}
	k.accounts[key] = r
	return r, nil
}

// ARN returns ref's key ARN, asked of ref's account (kmskey.Resolver.ARN).
func (k *Keys) ARN(ctx context.Context, ref string) (string, error) {
	if incident.IsKeyARN(ref) {
		return ref, nil // no call, and no role: the same rule as kmskey.Resolver.ARN
	}
	r, err := k.resolver(ctx, ref)
	if err != nil {
		return "", err
	}
	return r.ARN(ctx, ref)
}

// Describe reads the key in its own account (kmskey.Resolver.Describe).
func (k *Keys) Describe(ctx context.Context, ref string) (kmskey.Key, error) {
	r, err := k.resolver(ctx, ref)
	if err != nil {
		return kmskey.Key{}, err
	}
	return r.Describe(ctx, ref)
}

// Alias returns the key's alias, read in its own account (kmskey.Resolver.Alias).
func (k *Keys) Alias(ctx context.Context, keyARN string) (string, error) {
	r, err := k.resolver(ctx, keyARN)
	if err != nil {
		return "", err
	}
	return r.Alias(ctx, keyARN)
}

// KeysInStore lists the keys of a custom key store of the central account: the event
// (DisconnectCustomKeyStore) names the store, not the account (kmskey.Resolver.KeysInStore).
func (k *Keys) KeysInStore(ctx context.Context, storeID string) ([]kmskey.Key, error) {
	return k.local.KeysInStore(ctx, storeID)
}
