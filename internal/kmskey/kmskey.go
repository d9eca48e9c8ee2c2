// Package kmskey turns any reference to a KMS key — key ID, key ARN, alias name or alias ARN —
// into the key itself, and reads the key's live state.
//
// RDS documents every key field as "key ARN, key ID, alias ARN, or alias name": real RDS
// reports a cluster's storage key as an ARN, but the activity-stream key is whatever was passed
// to StartActivityStream, and moto keeps every field in the caller's form. So every comparison
// between keys goes through ARN, which asks KMS once per reference and remembers the answer.
//
// Boundaries: it owns reading keys through KMS; it must not import RDS, DynamoDB, the incident
// store or Slack.
package kmskey

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/arn"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/smithy-go"

	"github.com/keywarden/keywarden/internal/incident"
)

// ErrNotFound means the key or alias does not exist (KMS NotFoundException): it was never
// there, or it has been deleted. Errors carrying it also wrap the KMS error and say which
// reference was asked for.
var ErrNotFound = errors.New("kms key not found")

// ErrDenied means KMS refused to answer about the key (AccessDeniedException): the key policy
// does not let this account read it — always so for a key of another account whose policy does
// not name this one (https://docs.aws.amazon.com/kms/latest/developerguide/key-policy-modifying-external-accounts.html).
// It is permanent: retrying changes nothing until someone edits the key policy, so callers
// record it and go on rather than fail the event.
var ErrDenied = errors.New("kms key access denied")

// KMSAPI is the part of the KMS client the resolver uses; *kms.Client satisfies it.
type KMSAPI interface {
	DescribeKey(context.Context, *kms.DescribeKeyInput, ...func(*kms.Options)) (*kms.DescribeKeyOutput, error)
	ListKeys(context.Context, *kms.ListKeysInput, ...func(*kms.Options)) (*kms.ListKeysOutput, error)
	ListAliases(context.Context, *kms.ListAliasesInput, ...func(*kms.Options)) (*kms.ListAliasesOutput, error)
}

// Key is a KMS key's metadata as DescribeKey reports it.
type Key struct {
	ARN string
	ID  string
	// State is KMS's KeyState: Enabled, Disabled, PendingDeletion, PendingReplicaDeletion, …
	State incident.KeyState
	// Manager is CUSTOMER or AWS. AWS managed (and AWS owned) keys cannot be disabled or
	// deleted by anyone, so they can never cause an incident.
	Manager string
	// Origin is AWS_KMS, EXTERNAL (imported key material, which can expire or be deleted),
	// AWS_CLOUDHSM or EXTERNAL_KEY_STORE (which depend on a custom key store staying connected).
	Origin           string
	CustomKeyStoreID string
	// DeletionDate is when a key pending deletion is gone for good. It is nil when no deletion
	// is scheduled, and always nil while a multi-Region primary is PendingReplicaDeletion:
	// its waiting period only starts once the last replica is deleted.
	DeletionDate *time.Time
	MultiRegion  bool
	// StateReason says why State is Unknown (DescribeKey denied); "" otherwise. Describe never
	// sets it: callers that record a key they could not read do (lifecycle.KeyUnknown).
	StateReason string
	// ReplicaOf is the primary key's ARN when the key is a multi-Region replica
	// (MultiRegionConfiguration.MultiRegionKeyType REPLICA); "" otherwise.
	ReplicaOf string
}

// CustomerManaged reports whether the key is one a customer can disable or delete.
func (k Key) CustomerManaged() bool { return k.Manager == string(types.KeyManagerTypeCustomer) }

// DefaultAliasTTL is how long an alias's target is remembered. An alias can be re-pointed
// with UpdateAlias (a common way to rotate keys by hand), so unlike a key ID its answer may
// change; a key ID's ARN never does and is remembered for the resolver's lifetime.
const DefaultAliasTTL = 5 * time.Minute

// Resolver resolves key references through KMS and caches the resolved ARNs. It is safe for
// concurrent use; two concurrent misses for the same reference may both call KMS, which is
// harmless because they get the same answer.
type Resolver struct {
	api      KMSAPI
	aliasTTL time.Duration
	now      func() time.Time

	mu    sync.Mutex
	cache map[string]cached
}

type cached struct {
	arn     string
	expires time.Time // zero: never
}

// NewResolver returns a resolver that asks api.
func NewResolver(api KMSAPI) *Resolver {
	return &Resolver{api: api, aliasTTL: DefaultAliasTTL, now: time.Now, cache: map[string]cached{}}
}

// ARN normalises a key ID, key ARN, alias name ("alias/x") or alias ARN to the key ARN. A full
// key ARN is returned as it is without asking KMS, which also keeps working for keys that have
// since been deleted; every other form goes through DescribeKey once and is then answered from
// the cache. Errors wrap ErrNotFound when the key or alias does not exist.
func (r *Resolver) ARN(ctx context.Context, ref string) (string, error) {
	if incident.IsKeyARN(ref) {
		return ref, nil
	}
	if a, ok := r.lookup(ref); ok {
		return a, nil
	}
	k, err := r.Describe(ctx, ref)
	if err != nil {
		return "", err
	}
	return k.ARN, nil
}

// Describe returns the key's live metadata. It is never cached, because state changes are the
// whole point of asking; it does feed the reference cache used by ARN.
func (r *Resolver) Describe(ctx context.Context, ref string) (Key, error) {
	out, err := r.api.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(ref)})
	if err != nil {
		return Key{}, fmt.Errorf("describe key %s: %w", ref, classify(err))
	}
	if out.KeyMetadata == nil || aws.ToString(out.KeyMetadata.Arn) == "" {
		return Key{}, fmt.Errorf("describe key %s: response has no key metadata", ref)
	}
	k := keyFrom(out.KeyMetadata)
	r.remember(ref, k)
	return k, nil
}

// Alias returns the key's first alias name in name order ("alias/x"), or "" when it has none.
// A key can have many aliases; the first in name order is a stable label for humans.
func (r *Resolver) Alias(ctx context.Context, keyARN string) (string, error) {
	var names []string
	p := kms.NewListAliasesPaginator(r.api, &kms.ListAliasesInput{KeyId: aws.String(keyARN)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return "", fmt.Errorf("list aliases of %s: %w", keyARN, classify(err))
		}
		for _, a := range page.Aliases {
			if n := aws.ToString(a.AliasName); n != "" {
				names = append(names, n)
			}
		}
	}
	if len(names) == 0 {
		return "", nil
	}
	return slices.Min(names), nil
}

// describeConcurrency bounds the DescribeKey calls KeysInStore makes at once: KMS throttles
// DescribeKey per account (a shared quota), so a burst over hundreds of keys would hurt other
// callers.
const describeConcurrency = 8

// UndescribedKeys is the error KeysInStore returns beside the keys it could read when some
// keys of the account could not be described: they may or may not belong to the store. Failed
// maps each key ID to its error.
type UndescribedKeys struct {
	StoreID string
	Failed  map[string]error
}

// Error names the store and the keys that could not be described, sorted.
func (e *UndescribedKeys) Error() string {
	ids := make([]string, 0, len(e.Failed))
	for id := range e.Failed {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return fmt.Sprintf("keys in custom key store %s: %d key(s) could not be described: %s", e.StoreID, len(ids), strings.Join(ids, ", "))
}

// KeysInStore lists the keys whose CustomKeyStoreId is storeID, sorted by ARN. ListKeys reports
// only IDs, so every key in the account and region is described; keys deleted between the
// listing and the description are skipped. One key that cannot be described (access denied by
// its key policy, throttled past the SDK's retries) does not hide the others: the keys read are
// returned with an *UndescribedKeys error naming the rest. A ListKeys failure returns no keys.
func (r *Resolver) KeysInStore(ctx context.Context, storeID string) ([]Key, error) {
	var ids []string
	p := kms.NewListKeysPaginator(r.api, &kms.ListKeysInput{})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list keys: %w", classify(err))
		}
		for _, k := range page.Keys {
			if id := aws.ToString(k.KeyArn); id != "" {
				ids = append(ids, id)
			} else if id := aws.ToString(k.KeyId); id != "" {
				ids = append(ids, id)
			}
		}
	}

	var (
		mu     sync.Mutex
		keys   []Key
		failed = map[string]error{}
		wg     sync.WaitGroup
		sem    = make(chan struct{}, describeConcurrency)
	)
	for _, id := range ids {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			k, err := r.Describe(ctx, id)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.Is(err, ErrNotFound):
			case err != nil:
				failed[id] = err
			case k.CustomKeyStoreID == storeID:
				keys = append(keys, k)
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("keys in custom key store %s: %w", storeID, err)
	}
	slices.SortFunc(keys, func(a, b Key) int { return strings.Compare(a.ARN, b.ARN) })
	if len(failed) > 0 {
		return keys, &UndescribedKeys{StoreID: storeID, Failed: failed}
	}
	return keys, nil
}

// IDFromARN returns the key ID part of a key ARN, and any other string unchanged (a bare key
// ID is already an ID). moto's KMS write APIs misbehave when given a key ARN (aws-facts §8),
// and real KMS accepts the ID for keys in the caller's own account, so writers pass the ID.
func IDFromARN(s string) string {
	return incident.KeyID(s)
}

func (r *Resolver) lookup(ref string) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.cache[ref]
	if !ok {
		return "", false
	}
	if !c.expires.IsZero() && !r.now().Before(c.expires) {
		delete(r.cache, ref)
		return "", false
	}
	return c.arn, true
}

// remember caches what a description taught us: the reference asked for and the key's own ID.
// Alias references expire after aliasTTL, since an alias can be moved to another key.
func (r *Resolver) remember(ref string, k Key) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if k.ID != "" {
		r.cache[k.ID] = cached{arn: k.ARN}
	}
	if incident.IsKeyARN(ref) || ref == k.ID {
		return
	}
	var expires time.Time
	if isAlias(ref) {
		expires = r.now().Add(r.aliasTTL)
	}
	r.cache[ref] = cached{arn: k.ARN, expires: expires}
}

// isAlias reports whether ref names an alias: "alias/x" or an alias ARN.
func isAlias(ref string) bool {
	if strings.HasPrefix(ref, "alias/") {
		return true
	}
	a, err := arn.Parse(ref)
	return err == nil && strings.HasPrefix(a.Resource, "alias/")
}

func keyFrom(m *types.KeyMetadata) Key {
	k := Key{
		ARN:              aws.ToString(m.Arn),
		ID:               aws.ToString(m.KeyId),
		State:            incident.KeyState(m.KeyState),
		Manager:          string(m.KeyManager),
		Origin:           string(m.Origin),
		CustomKeyStoreID: aws.ToString(m.CustomKeyStoreId),
		MultiRegion:      aws.ToBool(m.MultiRegion),
	}
	if mr := m.MultiRegionConfiguration; mr != nil && mr.MultiRegionKeyType == types.MultiRegionKeyTypeReplica && mr.PrimaryKey != nil {
		k.ReplicaOf = aws.ToString(mr.PrimaryKey.Arn)
	}
	if m.DeletionDate != nil && m.KeyState != types.KeyStatePendingReplicaDeletion {
		d := m.DeletionDate.UTC()
		k.DeletionDate = &d
	}
	return k
}

// classify adds ErrNotFound to KMS's NotFoundException and ErrDenied to AccessDeniedException
// (an error code KMS shares with every AWS service, so it is matched by code), keeping the
// original error too.
func classify(err error) error {
	var nf *types.NotFoundException
	if errors.As(err, &nf) {
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	var api smithy.APIError
	if errors.As(err, &api) && api.ErrorCode() == "AccessDeniedException" {
		return fmt.Errorf("%w: %w", ErrDenied, err)
	}
	return err
}
