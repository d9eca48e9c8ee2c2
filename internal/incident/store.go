package incident

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// The table has one string partition key, pk, and holds four kinds of item:
//
//	incident#<id>   kind=incident  version (N), state, key_arn, opened_at, doc (the Incident's JSON),
//	                               slack_channel, slack_ts, slack_posted (N) (see SetSlack)
//	open#<keyARN>   kind=open-lock incident_id, key_arn: present exactly while <id> is not closed
//	seen#<keyARN>   kind=sighting  event_name, at, actor (JSON), note, count (N)
//	claim#<name>    kind=claim     claimed_at, expires_at (N, epoch seconds; the table's TTL attribute)
//
// The incident is read, changed and written back whole, conditioned on its version, so the
// Incident type stays the single definition of what an incident holds. The open-lock item is
// what makes "one open incident per key" hold: it is created in the same transaction as the
// incident and deleted in the same transaction that closes it.
//
// The Slack attributes live beside doc: SetSlack writes them without a new version, and a write
// of the incident is conditioned on them as well as on the version, so neither can undo the
// other. On read they win over the copy in doc.
const (
	attrPK         = "pk"
	attrKind       = "kind"
	attrVersion    = "version"
	attrState      = "state"
	attrKeyARN     = "key_arn"
	attrOpenedAt   = "opened_at"
	attrDoc        = "doc"
	attrIncidentID = "incident_id"
	attrEventName  = "event_name"
	attrAt         = "at"
	attrActor      = "actor"
	attrNote       = "note"
	attrCount      = "count"
	attrClaimedAt  = "claimed_at"
	attrSlackChan  = "slack_channel"
	attrSlackTS    = "slack_ts"
	attrSlackCount = "slack_posted"
	// AttrExpiresAt is the table's TimeToLive attribute: claim items carry it so DynamoDB
	// removes them eventually. template.yaml must name the same attribute.
	AttrExpiresAt = "expires_at"

	kindIncident = "incident"
	kindLock     = "open-lock"
	kindSighting = "sighting"
	kindClaim    = "claim"
)

// Timeline limits. A DynamoDB item is at most 400 KB, attribute names included, and an
// incident is one item. Its timeline is the only part that grows without bound: a key left
// disabled for days collects a reminder every few hours, a click per button press and every
// duplicate delivery, and one RemediateFunction run records each API call. What responders need
// is how it started (who, what, the first reactions) and what happened lately, so the store keeps
// the first timelineHead and the last timelineTail entries, replaces the middle with one
// KindElided entry counting what went, and cuts single entries at maxDetailBytes. If the
// document is still over maxDocBytes (large clusters or snapshot lists), it keeps halving the
// tail. Nothing is lost for audit: every event is also in CloudTrail and in the handlers' logs.
const (
	timelineHead    = 20
	timelineTail    = 300
	minTimelineTail = 10
	maxDetailBytes  = 2048
	maxDocBytes     = 300 << 10
)

// Errors the store returns (wrapped, so test with errors.Is).
var (
	// ErrNotFound: no such incident, or no open incident for the key.
	ErrNotFound = errors.New("not found")
	// ErrStale: the incident moved on since the version the caller acted on.
	ErrStale = errors.New("incident changed since that version")
	// ErrConflict: too many concurrent writers for the bounded retries, or an incident cannot
	// reopen because another one is open for its key. Retrying the whole event later may help.
	ErrConflict = errors.New("conflicting concurrent change")
)

// errRetry marks a lost optimistic-concurrency race: read again and retry.
var errRetry = errors.New("lost a concurrent write")

// DynamoAPI is the part of the DynamoDB client the store uses.
type DynamoAPI interface {
	GetItem(context.Context, *dynamodb.GetItemInput, ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error)
	PutItem(context.Context, *dynamodb.PutItemInput, ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error)
	UpdateItem(context.Context, *dynamodb.UpdateItemInput, ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error)
	DeleteItem(context.Context, *dynamodb.DeleteItemInput, ...func(*dynamodb.Options)) (*dynamodb.DeleteItemOutput, error)
	TransactWriteItems(context.Context, *dynamodb.TransactWriteItemsInput, ...func(*dynamodb.Options)) (*dynamodb.TransactWriteItemsOutput, error)
	Scan(context.Context, *dynamodb.ScanInput, ...func(*dynamodb.Options)) (*dynamodb.ScanOutput, error)
}

// TableAPI is the part of the DynamoDB client CreateTable uses.
type TableAPI interface {
	CreateTable(context.Context, *dynamodb.CreateTableInput, ...func(*dynamodb.Options)) (*dynamodb.CreateTableOutput, error)
	DescribeTable(context.Context, *dynamodb.DescribeTableInput, ...func(*dynamodb.Options)) (*dynamodb.DescribeTableOutput, error)
	DescribeTimeToLive(context.Context, *dynamodb.DescribeTimeToLiveInput, ...func(*dynamodb.Options)) (*dynamodb.DescribeTimeToLiveOutput, error)
	UpdateTimeToLive(context.Context, *dynamodb.UpdateTimeToLiveInput, ...func(*dynamodb.Options)) (*dynamodb.UpdateTimeToLiveOutput, error)
}

// Store keeps incidents, sightings and claims in one DynamoDB table. Every change is a
// conditional write: concurrent Lambda invocations never overwrite each other's work, they
// re-read and retry (a bounded number of times, with jittered backoff). Throttling and service
// errors come back wrapped once the SDK's own retries are spent, so the event is retried.
type Store struct {
	db          DynamoAPI
	table       string
	now         func() time.Time
	maxAttempts int
	// scanLimit bounds items per Scan page; 0 lets DynamoDB fill 1 MB pages. Tests lower it to
	// exercise pagination.
	scanLimit int32
}

// NewStore returns a store on table.
func NewStore(db DynamoAPI, table string) *Store {
	return &Store{db: db, table: table, now: time.Now, maxAttempts: 10}
}

// WithClock returns a copy of the store that reads the time from now.
func (s *Store) WithClock(now func() time.Time) *Store {
	c := *s
	c.now = now
	return &c
}

func (s *Store) clock() time.Time { return s.now().UTC() }

// CreateTable creates the store's table with on-demand billing and the claim TTL, and waits
// until it is ACTIVE. It is for the local stack and tests (template.yaml declares the real
// table); a table that already exists is fine.
func CreateTable(ctx context.Context, db TableAPI, table string) error {
	_, err := db.CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName:            aws.String(table),
		AttributeDefinitions: []types.AttributeDefinition{{AttributeName: aws.String(attrPK), AttributeType: types.ScalarAttributeTypeS}},
		KeySchema:            []types.KeySchemaElement{{AttributeName: aws.String(attrPK), KeyType: types.KeyTypeHash}},
		BillingMode:          types.BillingModePayPerRequest,
	})
	var inUse *types.ResourceInUseException
	if err != nil && !errors.As(err, &inUse) {
		return fmt.Errorf("create table %s: %w", table, err)
	}
	w := dynamodb.NewTableExistsWaiter(db, func(o *dynamodb.TableExistsWaiterOptions) {
		o.MinDelay, o.MaxDelay = time.Second, 5*time.Second
	})
	if err := w.Wait(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(table)}, 5*time.Minute); err != nil {
		return fmt.Errorf("wait for table %s: %w", table, err)
	}
	// UpdateTimeToLive fails with a ValidationException when TTL is already on, so look first.
	ttl, err := db.DescribeTimeToLive(ctx, &dynamodb.DescribeTimeToLiveInput{TableName: aws.String(table)})
	if err != nil {
		return fmt.Errorf("describe time to live of %s: %w", table, err)
	}
	if d := ttl.TimeToLiveDescription; d != nil && aws.ToString(d.AttributeName) == AttrExpiresAt &&
		(d.TimeToLiveStatus == types.TimeToLiveStatusEnabled || d.TimeToLiveStatus == types.TimeToLiveStatusEnabling) {
		return nil
	}
	_, err = db.UpdateTimeToLive(ctx, &dynamodb.UpdateTimeToLiveInput{
		TableName:               aws.String(table),
		TimeToLiveSpecification: &types.TimeToLiveSpecification{AttributeName: aws.String(AttrExpiresAt), Enabled: aws.Bool(true)},
	})
	if err != nil {
		return fmt.Errorf("enable time to live on %s: %w", table, err)
	}
	return nil
}

// Open records inc as a new incident, or, when an incident is already open for inc.KeyARN,
// folds this delivery into it: Deliveries+1, delivery appended to the timeline, then fold (if
// not nil) applied to merge anything new the event brought. Only the caller that created the
// incident gets opened=true, however many deliveries race: the open-lock item and the incident
// are written in one transaction, each with attribute_not_exists.
//
// For a new incident the store sets ID, Version (1), State (open, unless inc says remediating),
// OpenedAt, UpdatedAt and Deliveries (1); inc.Timeline should already carry the opening entry.
// fold may run more than once when writers race, each time on the latest version, so it must
// only change the incident it is given.
func (s *Store) Open(ctx context.Context, inc Incident, delivery Entry, fold func(*Incident)) (got Incident, opened bool, err error) {
	if inc.KeyARN == "" {
		return Incident{}, false, errors.New("open incident: no key ARN")
	}
	if inc.State == "" {
		inc.State = StateOpen
	}
	if inc.State.Closed() {
		return Incident{}, false, fmt.Errorf("open incident for %s: state %q is closed", inc.KeyARN, inc.State)
	}
	holder := "" // the open incident's ID, once known
	for attempt := 0; attempt < s.maxAttempts; attempt++ {
		if holder == "" {
			created, h, err := s.create(ctx, inc)
			switch {
			case err == nil && h == "":
				return created, true, nil
			case errors.Is(err, errRetry):
				if err := s.backoff(ctx, attempt); err != nil {
					return Incident{}, false, fmt.Errorf("open incident for %s: %w", inc.KeyARN, err)
				}
				continue
			case err != nil:
				return Incident{}, false, fmt.Errorf("open incident for %s: %w", inc.KeyARN, err)
			}
			holder = h
		}
		got, err := s.foldDelivery(ctx, inc.KeyARN, holder, delivery, fold)
		switch {
		case err == nil:
			return got, false, nil
		case errors.Is(err, errLockStale):
			holder = "" // it closed meanwhile: this delivery opens the next incident
		case errors.Is(err, errRetry):
			if err := s.backoff(ctx, attempt); err != nil {
				return Incident{}, false, fmt.Errorf("open incident for %s: %w", inc.KeyARN, err)
			}
		default:
			return Incident{}, false, fmt.Errorf("open incident for %s: add delivery to %s: %w", inc.KeyARN, holder, err)
		}
	}
	return Incident{}, false, fmt.Errorf("open incident for %s: gave up after %d attempts: %w", inc.KeyARN, s.maxAttempts, ErrConflict)
}

// errLockStale: the open-lock named an incident that is closed or gone.
var errLockStale = errors.New("open lock is stale")

// create writes inc as a new incident together with its key's open lock. When the lock is
// held, it returns the holder's incident ID instead.
func (s *Store) create(ctx context.Context, inc Incident) (created Incident, holder string, err error) {
	now := s.clock()
	inc.ID = NewID(now)
	inc.Version = 1
	inc.OpenedAt, inc.UpdatedAt = now, now
	inc.ClosedAt = nil
	inc.Deliveries = 1
	item, err := s.incidentItem(&inc)
	if err != nil {
		return Incident{}, "", err
	}
	_, err = s.db.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: []types.TransactWriteItem{
		{Put: &types.Put{
			TableName:                           aws.String(s.table),
			Item:                                s.lockItem(inc.KeyARN, inc.ID, now),
			ConditionExpression:                 aws.String("attribute_not_exists(#pk)"),
			ExpressionAttributeNames:            map[string]string{"#pk": attrPK},
			ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
		}},
		{Put: &types.Put{
			TableName:                aws.String(s.table),
			Item:                     item,
			ConditionExpression:      aws.String("attribute_not_exists(#pk)"),
			ExpressionAttributeNames: map[string]string{"#pk": attrPK},
		}},
	}})
	if err == nil {
		return inc, "", nil
	}
	reasons, ok := cancelReasons(err)
	switch {
	case !ok:
		return Incident{}, "", fmt.Errorf("create incident: %w", err)
	case reasons[0].code == condFailed:
		id := stringAttr(reasons[0].item, attrIncidentID)
		if id == "" {
			// No ALL_OLD item in the reason (a DynamoDB look-alike without it): read the lock.
			if id, err = s.lockHolder(ctx, inc.KeyARN); errors.Is(err, ErrNotFound) {
				return Incident{}, "", errRetry // closed between our write and this read
			} else if err != nil {
				return Incident{}, "", err
			}
		}
		if id == inc.ID {
			// Our own write: it landed but its response was lost and the request was sent
			// again. (The SDK's ClientRequestToken makes DynamoDB answer such a retry with
			// success within 10 minutes; this covers a retry outside that.)
			return inc, "", nil
		}
		return Incident{}, id, nil
	case reasons[1].code == condFailed: // ID collision: draw another.
		return Incident{}, "", errRetry
	case reasons.any(txConflict):
		return Incident{}, "", errRetry
	}
	return Incident{}, "", fmt.Errorf("create incident: %w", err)
}

// foldDelivery adds one delivery to the open incident id, which keyARN's open lock named: a
// single version-guarded attempt.
func (s *Store) foldDelivery(ctx context.Context, keyARN, id string, delivery Entry, fold func(*Incident)) (Incident, error) {
	cur, err := s.Get(ctx, id)
	if errors.Is(err, ErrNotFound) || (err == nil && cur.State.Closed()) {
		// The transactions keep the lock and the incident's state in step, so this is a race
		// with a close (the lock is already gone) or a lock left behind by hand. Either way
		// the lock must not name id: delete it if it still does, then open afresh.
		if err := s.releaseLock(ctx, keyARN, id); err != nil {
			return Incident{}, err
		}
		return Incident{}, errLockStale
	}
	if err != nil {
		return Incident{}, err
	}
	next := cur
	next.Deliveries++
	if delivery.At.IsZero() {
		delivery.At = s.clock()
	}
	next.Timeline = append(slices.Clip(next.Timeline), delivery)
	if fold != nil {
		fold(&next)
	}
	if err := s.checkIdentity(&cur, &next); err != nil {
		return Incident{}, err
	}
	s.stamp(&cur, &next)
	if err := s.write(ctx, &cur, &next); err != nil {
		return Incident{}, err
	}
	return next, nil
}

// releaseLock deletes keyARN's open lock if it still names id.
func (s *Store) releaseLock(ctx context.Context, keyARN, id string) error {
	_, err := s.db.DeleteItem(ctx, &dynamodb.DeleteItemInput{
		TableName:                 aws.String(s.table),
		Key:                       pkKey(lockPK(keyARN)),
		ConditionExpression:       aws.String("#id = :id"),
		ExpressionAttributeNames:  map[string]string{"#id": attrIncidentID},
		ExpressionAttributeValues: map[string]types.AttributeValue{":id": str(id)},
	})
	var ccf *types.ConditionalCheckFailedException
	if err != nil && !errors.As(err, &ccf) {
		return fmt.Errorf("release open lock of %s: %w", keyARN, err)
	}
	return nil
}

// Get returns the incident id, or ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (Incident, error) {
	out, err := s.db.GetItem(ctx, &dynamodb.GetItemInput{
		TableName:      aws.String(s.table),
		Key:            pkKey(incidentPK(id)),
		ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return Incident{}, fmt.Errorf("get incident %s: %w", id, err)
	}
	if out.Item == nil {
		return Incident{}, fmt.Errorf("get incident %s: %w", id, ErrNotFound)
	}
	inc, err := decodeIncident(out.Item)
	if err != nil {
		return Incident{}, fmt.Errorf("get incident %s: %w", id, err)
	}
	return inc, nil
}

// OpenFor returns the open (not closed) incident for keyARN, or ErrNotFound.
func (s *Store) OpenFor(ctx context.Context, keyARN string) (Incident, error) {
	id, err := s.lockHolder(ctx, keyARN)
	if err != nil {
		return Incident{}, fmt.Errorf("open incident for %s: %w", keyARN, err)
	}
	inc, err := s.Get(ctx, id)
	if err != nil {
		return Incident{}, fmt.Errorf("open incident for %s: %w", keyARN, err)
	}
	if inc.State.Closed() {
		return Incident{}, fmt.Errorf("open incident for %s: %s is %s: %w", keyARN, id, inc.State, ErrNotFound)
	}
	return inc, nil
}

func (s *Store) lockHolder(ctx context.Context, keyARN string) (string, error) {
	out, err := s.db.GetItem(ctx, &dynamodb.GetItemInput{
		TableName:      aws.String(s.table),
		Key:            pkKey(lockPK(keyARN)),
		ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return "", fmt.Errorf("read open lock: %w", err)
	}
	id := stringAttr(out.Item, attrIncidentID)
	if id == "" {
		return "", ErrNotFound
	}
	return id, nil
}

// Update applies mutate to the latest version of incident id and writes it back conditioned on
// that version, re-reading and retrying (bounded, jittered) when another writer got there
// first; so mutate may run more than once and must only change the incident it is given. An
// error from mutate aborts the update and is returned wrapped. The store sets Version (+1) and
// UpdatedAt, sets ClosedAt when the state becomes closed, and releases the key's open lock in
// the same transaction so a later loss of the key opens a new incident. When mutate changes
// nothing, nothing is written and the version stays, so a reconcile pass that finds nothing
// new does not make every Slack button stale.
func (s *Store) Update(ctx context.Context, id string, mutate func(*Incident) error) (Incident, error) {
	for attempt := 0; attempt < s.maxAttempts; attempt++ {
		cur, err := s.Get(ctx, id)
		if err != nil {
			return Incident{}, fmt.Errorf("update: %w", err)
		}
		next, err := s.apply(ctx, cur, mutate)
		switch {
		case err == nil:
			return next, nil
		case errors.Is(err, errRetry):
			if err := s.backoff(ctx, attempt); err != nil {
				return Incident{}, fmt.Errorf("update incident %s: %w", id, err)
			}
		default:
			return Incident{}, fmt.Errorf("update incident %s: %w", id, err)
		}
	}
	return Incident{}, fmt.Errorf("update incident %s: gave up after %d attempts: %w", id, s.maxAttempts, ErrConflict)
}

// UpdateAt is Update for a caller that acted on a given version (a click on a Slack message):
// ErrStale when the incident is no longer at that version. It retries only when the write lost
// to SetSlack, which records Slack bookkeeping without a new version.
func (s *Store) UpdateAt(ctx context.Context, id string, version int64, mutate func(*Incident) error) (Incident, error) {
	for attempt := 0; ; attempt++ {
		cur, err := s.Get(ctx, id)
		if err != nil {
			return Incident{}, fmt.Errorf("update: %w", err)
		}
		if cur.Version != version {
			return Incident{}, fmt.Errorf("update incident %s: at version %d, not %d: %w", id, cur.Version, version, ErrStale)
		}
		next, err := s.apply(ctx, cur, mutate)
		if errors.Is(err, errRetry) && attempt+1 < s.maxAttempts {
			// Lost to a write: if it was only SetSlack's bookkeeping, the version is still
			// ours and the read above sees that; otherwise the next read says ErrStale.
			if err := s.backoff(ctx, attempt); err != nil {
				return Incident{}, fmt.Errorf("update incident %s: %w", id, err)
			}
			continue
		}
		if errors.Is(err, errRetry) {
			return Incident{}, fmt.Errorf("update incident %s: changed since version %d: %w", id, version, ErrStale)
		}
		if err != nil {
			return Incident{}, fmt.Errorf("update incident %s: %w", id, err)
		}
		return next, nil
	}
}

// apply runs mutate on cur and writes the result conditioned on cur's version.
func (s *Store) apply(ctx context.Context, cur Incident, mutate func(*Incident) error) (Incident, error) {
	// mutate may change slice elements shared with cur, so the before-image is taken as JSON.
	before, err := json.Marshal(cur)
	if err != nil {
		return Incident{}, fmt.Errorf("encode incident: %w", err)
	}
	prev := cur // only its scalars are read below
	next := cur
	if err := mutate(&next); err != nil {
		return Incident{}, err
	}
	after, err := json.Marshal(next)
	if err != nil {
		return Incident{}, fmt.Errorf("encode incident: %w", err)
	}
	if bytes.Equal(before, after) {
		return next, nil
	}
	if err := s.checkIdentity(&prev, &next); err != nil {
		return Incident{}, err
	}
	s.stamp(&prev, &next)
	if err := s.write(ctx, &prev, &next); err != nil {
		return Incident{}, err
	}
	return next, nil
}

// checkIdentity refuses changes the item layout depends on.
func (s *Store) checkIdentity(prev, next *Incident) error {
	if next.ID != prev.ID || next.KeyARN != prev.KeyARN || next.Version != prev.Version {
		return errors.New("the change would alter the incident's ID, key ARN or version, which only the store sets")
	}
	if next.State == "" {
		return errors.New("the change leaves the incident without a state")
	}
	return nil
}

// stamp sets what the store owns on a new version.
func (s *Store) stamp(prev, next *Incident) {
	now := s.clock()
	next.Version = prev.Version + 1
	next.UpdatedAt = now
	switch {
	case next.State.Closed() && next.ClosedAt == nil:
		next.ClosedAt = &now
	case !next.State.Closed():
		next.ClosedAt = nil
	}
}

// write stores next over prev, conditioned on prev's version. Closing releases the key's open
// lock and reopening takes it again, each in the same transaction as the incident. It returns
// errRetry when the version moved on.
func (s *Store) write(ctx context.Context, prev, next *Incident) error {
	put, err := s.incidentPut(prev, next)
	if err != nil {
		return err
	}
	var lock types.TransactWriteItem
	switch {
	case !prev.State.Closed() && next.State.Closed():
		lock.Delete = &types.Delete{
			TableName:                 aws.String(s.table),
			Key:                       pkKey(lockPK(next.KeyARN)),
			ConditionExpression:       aws.String("attribute_not_exists(#pk) OR #id = :id"),
			ExpressionAttributeNames:  map[string]string{"#pk": attrPK, "#id": attrIncidentID},
			ExpressionAttributeValues: map[string]types.AttributeValue{":id": str(next.ID)},
		}
	case prev.State.Closed() && !next.State.Closed():
		lock.Put = &types.Put{
			TableName:                aws.String(s.table),
			Item:                     s.lockItem(next.KeyARN, next.ID, next.UpdatedAt),
			ConditionExpression:      aws.String("attribute_not_exists(#pk)"),
			ExpressionAttributeNames: map[string]string{"#pk": attrPK},
		}
	default:
		_, err := s.db.PutItem(ctx, &dynamodb.PutItemInput{
			TableName:                 put.TableName,
			Item:                      put.Item,
			ConditionExpression:       put.ConditionExpression,
			ExpressionAttributeNames:  put.ExpressionAttributeNames,
			ExpressionAttributeValues: put.ExpressionAttributeValues,
		})
		var ccf *types.ConditionalCheckFailedException
		var tc *types.TransactionConflictException // the item is inside another writer's transaction
		if errors.As(err, &ccf) || errors.As(err, &tc) {
			return errRetry
		}
		if err != nil {
			return fmt.Errorf("put incident %s: %w", next.ID, err)
		}
		return nil
	}
	_, err = s.db.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{
		TransactItems: []types.TransactWriteItem{{Put: &put}, lock},
	})
	if err == nil {
		return nil
	}
	reasons, ok := cancelReasons(err)
	switch {
	case !ok:
		return fmt.Errorf("write incident %s with its open lock: %w", next.ID, err)
	case reasons[0].code == condFailed || reasons.any(txConflict):
		return errRetry
	case reasons[1].code == condFailed && lock.Delete != nil:
		// The lock names another incident: that cannot happen while every write goes
		// through the store. Leave the other incident's lock alone.
		return fmt.Errorf("close incident %s: the open lock of %s names another incident", next.ID, next.KeyARN)
	case reasons[1].code == condFailed:
		return fmt.Errorf("reopen incident %s: another incident is open for %s: %w", next.ID, next.KeyARN, ErrConflict)
	}
	return fmt.Errorf("write incident %s with its open lock: %w", next.ID, err)
}

// List returns every incident, the most recently opened first.
func (s *Store) List(ctx context.Context) ([]Incident, error) {
	incs, err := s.scanIncidents(ctx, "#kind = :kind", nil, nil)
	if err != nil {
		return nil, fmt.Errorf("list incidents: %w", err)
	}
	return incs, nil
}

// ListActive returns the incidents still needing work (open or remediating), most recently
// opened first.
func (s *Store) ListActive(ctx context.Context) ([]Incident, error) {
	incs, err := s.scanIncidents(ctx, "#kind = :kind AND #state IN (:open, :remediating)",
		map[string]string{"#state": attrState},
		map[string]types.AttributeValue{":open": str(string(StateOpen)), ":remediating": str(string(StateRemediating))})
	if err != nil {
		return nil, fmt.Errorf("list active incidents: %w", err)
	}
	return incs, nil
}

// ForKey returns every incident of a key, closed ones included, most recently opened first. It
// scans: it serves rare questions (a repeated deletion event, a key the reconciler finds
// unusable again), never a hot path.
func (s *Store) ForKey(ctx context.Context, keyARN string) ([]Incident, error) {
	incs, err := s.scanIncidents(ctx, "#kind = :kind AND #key = :key",
		map[string]string{"#key": attrKeyARN},
		map[string]types.AttributeValue{":key": str(keyARN)})
	if err != nil {
		return nil, fmt.Errorf("incidents of key %s: %w", keyARN, err)
	}
	return incs, nil
}

func (s *Store) scanIncidents(ctx context.Context, filter string, names map[string]string, values map[string]types.AttributeValue) ([]Incident, error) {
	var incs []Incident
	err := s.scan(ctx, kindIncident, filter, names, values, func(item map[string]types.AttributeValue) error {
		inc, err := decodeIncident(item)
		if err != nil {
			return fmt.Errorf("%s: %w", stringAttr(item, attrPK), err)
		}
		incs = append(incs, inc)
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(incs, func(a, b Incident) int {
		if c := b.OpenedAt.Compare(a.OpenedAt); c != 0 {
			return c
		}
		return strings.Compare(b.ID, a.ID)
	})
	return incs, nil
}

// scan visits every item of kind matching filter, page by page. A Scan reads the whole table;
// that is fine at this table's size (a few items per key loss) and keeps it free of indexes.
func (s *Store) scan(ctx context.Context, kind, filter string, names map[string]string, values map[string]types.AttributeValue, visit func(map[string]types.AttributeValue) error) error {
	n := map[string]string{"#kind": attrKind}
	maps.Copy(n, names)
	v := map[string]types.AttributeValue{":kind": str(kind)}
	maps.Copy(v, values)
	in := &dynamodb.ScanInput{
		TableName:                 aws.String(s.table),
		FilterExpression:          aws.String(filter),
		ExpressionAttributeNames:  n,
		ExpressionAttributeValues: v,
		ConsistentRead:            aws.Bool(true),
	}
	if s.scanLimit > 0 {
		in.Limit = aws.Int32(s.scanLimit)
	}
	p := dynamodb.NewScanPaginator(s.db, in)
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("scan %s: %w", s.table, err)
		}
		for _, item := range page.Items {
			if err := visit(item); err != nil {
				return err
			}
		}
	}
	return nil
}

// Sighting is a loss event for a key that no Aurora resource depends on: recorded, counted,
// never escalated.
type Sighting struct {
	KeyARN    string    `json:"key_arn"`
	EventName string    `json:"event_name"`
	At        time.Time `json:"at"`
	Actor     Actor     `json:"actor"`
	// Count is how many events were seen for the key; RecordSighting ignores it and adds one.
	Count int    `json:"count"`
	Note  string `json:"note,omitempty"`
}

// RecordSighting upserts the sighting for sg.KeyARN: the latest event's name, time, actor and
// note replace the previous ones, and the count goes up by one (an atomic ADD, so concurrent
// deliveries are all counted).
func (s *Store) RecordSighting(ctx context.Context, sg Sighting) error {
	if sg.KeyARN == "" {
		return errors.New("record sighting: no key ARN")
	}
	if sg.At.IsZero() {
		sg.At = s.clock()
	}
	actor, err := json.Marshal(sg.Actor)
	if err != nil {
		return fmt.Errorf("record sighting for %s: %w", sg.KeyARN, err)
	}
	_, err = s.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:        aws.String(s.table),
		Key:              pkKey(seenPK(sg.KeyARN)),
		UpdateExpression: aws.String("SET #kind = :kind, #arn = :arn, #ev = :ev, #at = :at, #actor = :actor, #note = :note ADD #count :one"),
		ExpressionAttributeNames: map[string]string{
			"#kind": attrKind, "#arn": attrKeyARN, "#ev": attrEventName, "#at": attrAt,
			"#actor": attrActor, "#note": attrNote, "#count": attrCount,
		},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":kind": str(kindSighting), ":arn": str(sg.KeyARN), ":ev": str(sg.EventName),
			":at": str(sg.At.UTC().Format(time.RFC3339Nano)), ":actor": str(string(actor)),
			":note": str(sg.Note), ":one": num(1),
		},
	})
	if err != nil {
		return fmt.Errorf("record sighting for %s: %w", sg.KeyARN, err)
	}
	return nil
}

// Sightings returns every sighting, the most recent first.
func (s *Store) Sightings(ctx context.Context) ([]Sighting, error) {
	var sgs []Sighting
	err := s.scan(ctx, kindSighting, "#kind = :kind", nil, nil, func(item map[string]types.AttributeValue) error {
		sg, err := decodeSighting(item)
		if err != nil {
			return fmt.Errorf("%s: %w", stringAttr(item, attrPK), err)
		}
		sgs = append(sgs, sg)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list sightings: %w", err)
	}
	slices.SortFunc(sgs, func(a, b Sighting) int {
		if c := b.At.Compare(a.At); c != 0 {
			return c
		}
		return strings.Compare(a.KeyARN, b.KeyARN)
	})
	return sgs, nil
}

func decodeSighting(item map[string]types.AttributeValue) (Sighting, error) {
	sg := Sighting{
		KeyARN:    stringAttr(item, attrKeyARN),
		EventName: stringAttr(item, attrEventName),
		Note:      stringAttr(item, attrNote),
	}
	var err error
	if sg.At, err = time.Parse(time.RFC3339Nano, stringAttr(item, attrAt)); err != nil {
		return Sighting{}, fmt.Errorf("decode time: %w", err)
	}
	if a := stringAttr(item, attrActor); a != "" {
		if err := json.Unmarshal([]byte(a), &sg.Actor); err != nil {
			return Sighting{}, fmt.Errorf("decode actor: %w", err)
		}
	}
	n, err := numAttr(item, attrCount)
	if err != nil {
		return Sighting{}, err
	}
	sg.Count = int(n)
	return sg, nil
}

// Claim records that name was done, once: true for the one caller that claims it, false (and
// no error) for every later one while the claim lasts. Use it for work that must happen once
// even when two invocations overlap: a single-use Slack click, a reminder. A claim with ttl > 0
// can be made again once ttl has passed (DynamoDB's TTL deletes expired items only eventually,
// so the condition checks the time itself); ttl <= 0 claims for good.
func (s *Store) Claim(ctx context.Context, name string, ttl time.Duration) (bool, error) {
	now := s.clock()
	item := map[string]types.AttributeValue{
		attrPK:        str(claimPK(name)),
		attrKind:      str(kindClaim),
		attrClaimedAt: str(now.Format(time.RFC3339Nano)),
	}
	if ttl > 0 {
		item[AttrExpiresAt] = num(now.Add(ttl).Unix())
	}
	_, err := s.db.PutItem(ctx, &dynamodb.PutItemInput{
		TableName:                 aws.String(s.table),
		Item:                      item,
		ConditionExpression:       aws.String("attribute_not_exists(#pk) OR #exp <= :now"),
		ExpressionAttributeNames:  map[string]string{"#pk": attrPK, "#exp": AttrExpiresAt},
		ExpressionAttributeValues: map[string]types.AttributeValue{":now": num(now.Unix())},
	})
	var ccf *types.ConditionalCheckFailedException
	if errors.As(err, &ccf) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("claim %s: %w", name, err)
	}
	return true, nil
}

// Release deletes the claim name, so the next Claim of it succeeds at once. Use it when the
// work a claim stood for did not happen (a reminder whose Slack reply failed) and should be
// retried. Releasing a claim that does not exist is not an error.
func (s *Store) Release(ctx context.Context, name string) error {
	_, err := s.db.DeleteItem(ctx, &dynamodb.DeleteItemInput{
		TableName: aws.String(s.table),
		Key:       pkKey(claimPK(name)),
	})
	if err != nil {
		return fmt.Errorf("release claim %s: %w", name, err)
	}
	return nil
}

// incidentItem encodes inc, trimming its timeline to fit an item (see timelineHead).
func (s *Store) incidentItem(inc *Incident) (map[string]types.AttributeValue, error) {
	doc, err := encodeDoc(inc)
	if err != nil {
		return nil, fmt.Errorf("encode incident %s: %w", inc.ID, err)
	}
	item := map[string]types.AttributeValue{
		attrPK:       str(incidentPK(inc.ID)),
		attrKind:     str(kindIncident),
		attrVersion:  num(inc.Version),
		attrState:    str(string(inc.State)),
		attrKeyARN:   str(inc.KeyARN),
		attrOpenedAt: str(inc.OpenedAt.UTC().Format(time.RFC3339Nano)),
		attrDoc:      str(string(doc)),
	}
	if inc.Slack != nil {
		item[attrSlackChan] = str(inc.Slack.Channel)
		item[attrSlackTS] = str(inc.Slack.TS)
		item[attrSlackCount] = num(int64(inc.SlackPosted))
	}
	return item, nil
}

// incidentPut is the conditional PutItem that writes next over prev. The put replaces the whole
// item, Slack attributes included, so it carries next's and is conditioned on the Slack
// attributes being what prev read as well as on the version: a SetSlack that landed between
// the read and this write (it does not change the version) makes the write retry rather than
// be undone. (UpdateItem would leave those attributes alone without the extra condition, but
// moto 5.2.1 adds the old and the new size of an attribute when it checks an UpdateItem against
// the 400 KB item limit, so a large incident could never be rewritten there.)
func (s *Store) incidentPut(prev, next *Incident) (types.Put, error) {
	item, err := s.incidentItem(next)
	if err != nil {
		return types.Put{}, err
	}
	names := map[string]string{"#v": attrVersion, "#sts": attrSlackTS, "#sp": attrSlackCount}
	values := map[string]types.AttributeValue{":v": num(prev.Version)}
	cond := "#v = :v AND "
	if prev.Slack == nil {
		cond += "attribute_not_exists(#sts)"
		delete(names, "#sp")
	} else {
		// Or none at all: a reference only in doc, written before these attributes existed.
		cond += "((#sts = :sts AND #sp = :sp) OR attribute_not_exists(#sts))"
		values[":sts"] = str(prev.Slack.TS)
		values[":sp"] = num(int64(prev.SlackPosted))
	}
	return types.Put{
		TableName:                 aws.String(s.table),
		Item:                      item,
		ConditionExpression:       aws.String(cond),
		ExpressionAttributeNames:  names,
		ExpressionAttributeValues: values,
	}, nil
}

// SetSlack records where incident id's Slack message is and how many of its timeline entries
// (counted over the whole timeline, elided ones included) have been posted in the message's
// thread. It does not change the incident's Version: the message is a view of the incident,
// not part of it, and a new version would make every button on the message just rendered
// stale. The count only goes forward: when two invocations synced concurrently, the one that
// posted more wins and the other's call is a no-op. ErrNotFound when there is no such incident.
func (s *Store) SetSlack(ctx context.Context, id string, ref SlackRef, posted int) error {
	if ref.Channel == "" || ref.TS == "" || posted < 0 {
		return fmt.Errorf("set slack message of incident %s: incomplete reference %+v, posted %d", id, ref, posted)
	}
	_, err := s.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:        aws.String(s.table),
		Key:              pkKey(incidentPK(id)),
		UpdateExpression: aws.String("SET #ch = :ch, #ts = :ts, #n = :n"),
		ConditionExpression: aws.String("attribute_exists(#pk) AND #kind = :kind AND " +
			"(attribute_not_exists(#n) OR #n <= :n)"),
		ExpressionAttributeNames: map[string]string{
			"#pk": attrPK, "#kind": attrKind, "#ch": attrSlackChan, "#ts": attrSlackTS, "#n": attrSlackCount,
		},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":ch": str(ref.Channel), ":ts": str(ref.TS), ":n": num(int64(posted)), ":kind": str(kindIncident),
		},
	})
	var ccf *types.ConditionalCheckFailedException
	if errors.As(err, &ccf) {
		// Either no such incident, or another sync already recorded more: tell them apart.
		if _, gerr := s.Get(ctx, id); gerr != nil {
			return fmt.Errorf("set slack message: %w", gerr)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("set slack message of incident %s: %w", id, err)
	}
	return nil
}

func (s *Store) lockItem(keyARN, id string, at time.Time) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{
		attrPK:         str(lockPK(keyARN)),
		attrKind:       str(kindLock),
		attrIncidentID: str(id),
		attrKeyARN:     str(keyARN),
		attrOpenedAt:   str(at.UTC().Format(time.RFC3339Nano)),
	}
}

// encodeDoc trims inc's timeline as described at timelineHead and returns its JSON.
func encodeDoc(inc *Incident) ([]byte, error) {
	for i := range inc.Timeline {
		inc.Timeline[i].Detail = truncate(inc.Timeline[i].Detail, maxDetailBytes)
	}
	trimTimeline(inc, timelineTail)
	for {
		doc, err := json.Marshal(inc)
		if err != nil {
			return nil, err
		}
		if len(doc) <= maxDocBytes {
			return doc, nil
		}
		tail := len(inc.Timeline) - timelineHeadLen(inc.Timeline) - 1
		if tail <= minTimelineTail {
			return nil, fmt.Errorf("%d bytes, over the %d-byte budget for one item even with a trimmed timeline", len(doc), maxDocBytes)
		}
		trimTimeline(inc, tail/2)
	}
}

// trimTimeline keeps the head of inc's timeline and its last keep entries, replacing those
// between with one KindElided entry that counts everything elided so far.
func trimTimeline(inc *Incident, keep int) {
	tl := inc.Timeline
	head := timelineHeadLen(tl)
	start := head
	if head < len(tl) && tl[head].Kind == KindElided {
		start++
	}
	drop := len(tl) - start - keep
	if drop <= 0 {
		return
	}
	inc.TimelineElided += drop
	marker := Entry{
		At:     tl[start+drop-1].At,
		Kind:   KindElided,
		Actor:  "keywarden",
		Detail: fmt.Sprintf("%d entries elided to keep the incident within DynamoDB's 400 KB item limit", inc.TimelineElided),
	}
	out := make([]Entry, 0, head+1+keep)
	out = append(out, tl[:head]...)
	out = append(out, marker)
	inc.Timeline = append(out, tl[start+drop:]...)
}

// timelineHeadLen is the length of the timeline's kept head: up to the elided marker, or the
// first timelineHead entries when nothing was elided yet.
func timelineHeadLen(tl []Entry) int {
	if i := slices.IndexFunc(tl, func(e Entry) bool { return e.Kind == KindElided }); i >= 0 {
		return i
	}
	return min(len(tl), timelineHead)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const ellipsis = "…"
	cut := n - len(ellipsis)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + ellipsis
}

func decodeIncident(item map[string]types.AttributeValue) (Incident, error) {
	var inc Incident
	if err := json.Unmarshal([]byte(stringAttr(item, attrDoc)), &inc); err != nil {
		return Incident{}, fmt.Errorf("decode incident: %w", err)
	}
	v, err := numAttr(item, attrVersion)
	if err != nil {
		return Incident{}, err
	}
	inc.Version = v // the attribute the conditions test is the authority
	if ts := stringAttr(item, attrSlackTS); ts != "" {
		inc.Slack = &SlackRef{Channel: stringAttr(item, attrSlackChan), TS: ts}
		if n, err := numAttr(item, attrSlackCount); err == nil {
			inc.SlackPosted = int(n)
		}
	}
	return inc, nil
}

// backoff sleeps before retry number attempt+1: full jitter over an exponentially growing
// ceiling (10 ms doubling, at most 320 ms), so racing writers spread out.
func (s *Store) backoff(ctx context.Context, attempt int) error {
	ceiling := min(10*time.Millisecond<<min(attempt, 5), 320*time.Millisecond)
	t := time.NewTimer(time.Millisecond + rand.N(ceiling))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Cancellation reason codes of TransactWriteItems.
const (
	condFailed = "ConditionalCheckFailed"
	txConflict = "TransactionConflict"
)

type reason struct {
	code string
	item map[string]types.AttributeValue
}

type reasons []reason

func (rs reasons) any(code string) bool {
	return slices.ContainsFunc(rs, func(r reason) bool { return r.code == code })
}

// cancelReasons returns a cancelled transaction's reasons, one per item (code "None" for the
// items that were fine), padded to two so callers can index the pair they wrote.
func cancelReasons(err error) (reasons, bool) {
	var tce *types.TransactionCanceledException
	if !errors.As(err, &tce) {
		return nil, false
	}
	rs := make(reasons, max(2, len(tce.CancellationReasons)))
	for i, r := range tce.CancellationReasons {
		rs[i] = reason{code: aws.ToString(r.Code), item: r.Item}
	}
	return rs, true
}

func incidentPK(id string) string       { return "incident#" + id }
func lockPK(keyARN string) string       { return "open#" + keyARN }
func seenPK(keyARN string) string       { return "seen#" + keyARN }
func claimPK(name string) string        { return "claim#" + name }
func str(s string) types.AttributeValue { return &types.AttributeValueMemberS{Value: s} }
func num(n int64) types.AttributeValue {
	return &types.AttributeValueMemberN{Value: strconv.FormatInt(n, 10)}
}

func pkKey(pk string) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{attrPK: str(pk)}
}

func stringAttr(item map[string]types.AttributeValue, name string) string {
	if v, ok := item[name].(*types.AttributeValueMemberS); ok {
		return v.Value
	}
	return ""
}

func numAttr(item map[string]types.AttributeValue, name string) (int64, error) {
	v, ok := item[name].(*types.AttributeValueMemberN)
	if !ok {
		return 0, fmt.Errorf("attribute %s is missing or not a number", name)
	}
	n, err := strconv.ParseInt(v.Value, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("attribute %s: %w", name, err)
	}
	return n, nil
}
