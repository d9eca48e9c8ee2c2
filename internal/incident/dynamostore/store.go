// Package dynamostore keeps keywarden's incidents in one DynamoDB table, complete at any size:
// an incident is a head item plus one item per dependent, remediation step and timeline entry,
// all under one partition key, so no incident ever meets DynamoDB's 400 KB item limit
// (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/ServiceQuotas.html) and
// nothing is trimmed.
//
// # Items
//
// The table has a string partition key pk and a string sort key sk; expires_at
// (AttrExpiresAt) is its TimeToLive attribute. Documents (doc) are the JSON of the model types
// of package incident.
//
//	pk                 sk                    attributes
//	incident#<id>      head                  kind=head, version (N), state, key_arn, opened_at,
//	                                         doc (the Incident without the slices below),
//	                                         slack_channel, slack_ts, slack_posted (N) (SetSlack),
//	                                         commits (SS: tokens of the batched writes it took in),
//	                                         lease_token, lease_until (N) while a batched write runs
//	incident#<id>      cluster#<ARN or id>   kind=cluster,  doc (incident.Cluster),  pos (N), v (N)
//	incident#<id>      instance#<ARN or id>  kind=instance, doc (incident.Instance), pos, v
//	incident#<id>      snapshot#<ARN or id>  kind=snapshot, doc (incident.Snapshot), pos, v
//	incident#<id>      other#<ARN or id>     kind=other,    doc (incident.Cluster: OtherEngines), pos, v
//	incident#<id>      step#<step ID>        kind=step,     doc (incident.StepRecord: Remediation.Steps), pos, v
//	incident#<id>      entry#<entry ID>      kind=entry,    doc (incident.Entry), seq (N), v, w (batched only)
//	incident#<id>      refusal#<entry ID>    kind=refusal,  doc (the first incident.Entry), count (N),
//	                                         sources (SS: the clicks counted)
//	incident#<id>      slack                 kind=slack, shown (N: the version the message shows),
//	                                         reason (why Slack refuses for good) (RecordSlackDelivery)
//	open#<keyARN>      lock                  kind=open-lock, incident_id, key_arn, opened_at
//	seen#<keyARN>      sighting              kind=sighting, event_name, at, actor (JSON), note, count (N)
//	claim#<name>       claim                 kind=claim, claimed_at, claim_token, expires_at (N, epoch s)
//
// pos keeps the order of the incident's slices (a Query returns items in sort-key order). It is
// spaced (1024 apart) and kept when items around it come and go, so removing expired snapshots
// or adding a cluster rewrites only those items, not the ones after them; only a reorder
// renumbers a kind. v is the version whose write stored the item. A name too long for a sort key
// (1,024 bytes) is cut and completed with its hash. Incident items never carry expires_at: they
// are the audit trail and stay until someone deletes them. Only claims expire.
//
// # Reading
//
// An incident is read with a strongly consistent GetItem of its head and a strongly consistent,
// paginated Query of its partition (1 MB per page:
// https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_Query.html), never through
// an index, whose reads are only eventually consistent. The Query sees the head again; when its
// version differs from the GetItem's, or a child carries a newer v, a write landed between the
// two and the read starts over. (A write that only deleted items on pages the Query had not
// reached yet, landing after it passed the head, can still be missed until the next read; no
// write acts on such a read, since every write is conditioned on the version it read.) The
// timeline is the entries and the refusals, sorted with incident.SortTimeline; TimelineSeq is at
// least the highest entry's Seq.
//
// # Writing
//
// Update, UpdateAt and Open's fold read the incident, run the caller's mutate on a copy and
// diff the result against what was read: the before-image is the items' JSON as read, which
// mutate cannot reach. Changed or new dependents and steps are Put, removed ones Deleted, new
// timeline entries (IDs not read) Put with attribute_not_exists(sk), so an entry is stored once
// per ID; entries never change or disappear, and a mutate that edits or drops a stored entry has
// no effect on it. The head is Put conditioned on the version read (and on the Slack attributes,
// which SetSlack writes without a new version). When nothing changed nothing is written and the
// version stays.
//
// When the head and the changed items make at most 100 actions and 4 MB, they are one
// TransactWriteItems (https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_TransactWriteItems.html),
// together with the key's open lock when the state opens or closes: all or nothing. A larger write
// (opening an incident with thousands of snapshots, a big blast-radius refresh, migrating a long
// legacy timeline) is batched: the children go first with BatchWriteItem, 25 per call and four
// calls at a time, unprocessed items sent again with backoff
// (https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_BatchWriteItem.html), and the
// head (with the lock) last, in one transaction. That is safe because
//
//   - a new incident's children go under a partition no head names yet: if the head's
//     transaction loses (another delivery opened the key's incident), nothing reads them;
//   - on an existing incident the writer first takes a lease on the head (lease_token,
//     lease_until, conditioned on the version), which every other version-changing write
//     respects, so no one else commits while the batch runs;
//   - batched entries carry the write's token in w and count only once the head that commits the
//     write lists the token in commits: a writer that lost, crashed or ran out of lease leaves
//     entries nobody sees, and a later write may overwrite them (its condition is
//     attribute_not_exists(sk) OR attribute_exists(w));
//   - dependents and steps are facts as some writer observed them, not a consequence of the
//     version: a losing writer's dependents are visible at once and correct as far as anyone
//     knows; its retry re-reads them and finds nothing left to write.
//
// The limits: a batched write must finish within its lease (two minutes, with 20 seconds kept in
// hand; it gives up otherwise), other writers (and a read-then-write such as a click) wait for it,
// at most until the lease ends; a crashed batched write leaves its dependents' values behind and
// blocks writers until its lease ends; a losing one costs the storage of its invisible entries;
// the head itself (with every Approval ever given) must stay under 400 KB.
//
// A cancelled transaction because of the head's condition (another version, a lease, a SetSlack)
// is a lost race: read again and re-run mutate, a bounded number of times (ten) with jittered
// backoff, then incident.ErrConflict. An entry's attribute_not_exists failing means it is stored already (a write whose
// answer was lost and which the SDK sent again): read again, and the model's AddEntry and
// RecordDelivery dedupe it.
//
// # Legacy layout
//
// WithLegacyTable names the table of the layout used before this package (hash key pk only;
// incident#<id> items with the whole incident in doc, version, state, key_arn and the slack_*
// attributes; open#<keyARN> locks naming incident_id). An incident this table lacks is read
// from there: Get, OpenFor (through the legacy lock), Open (a ConditionCheck on the legacy lock
// in its create transaction sends the delivery to the legacy incident instead of opening a
// second one), List, ListActive and ForKey (both tables merged, this one winning). Old timeline
// entries become typed entries "legacy:<n>" with Seq n; old approvals were not typed, so a
// migrated incident starts a fresh approval round (see convertLegacy). Reads never migrate, and
// neither does a write that changes nothing; the first write that changes something carries the
// incident over at its version (children first, then one transaction: the new head with
// attribute_not_exists, the legacy item's delete conditioned on its version, the open lock moved
// when open) and then applies the change on the new layout. SetSlack and RecordRefusal work on
// a legacy incident without migrating it.
//
// Boundaries: it owns the incident's DynamoDB layout; it must not import Slack or any AWS service
// but DynamoDB.
package dynamostore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	mrand "math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/keywarden/keywarden/internal/incident"
)

// AttrExpiresAt is the table's TimeToLive attribute; template.yaml must name the same one.
// Only claim items carry it.
const AttrExpiresAt = "expires_at"

// API is the part of the DynamoDB client the store uses; *dynamodb.Client fits.
type API interface {
	GetItem(context.Context, *dynamodb.GetItemInput, ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error)
	PutItem(context.Context, *dynamodb.PutItemInput, ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error)
	UpdateItem(context.Context, *dynamodb.UpdateItemInput, ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error)
	DeleteItem(context.Context, *dynamodb.DeleteItemInput, ...func(*dynamodb.Options)) (*dynamodb.DeleteItemOutput, error)
	TransactWriteItems(context.Context, *dynamodb.TransactWriteItemsInput, ...func(*dynamodb.Options)) (*dynamodb.TransactWriteItemsOutput, error)
	BatchWriteItem(context.Context, *dynamodb.BatchWriteItemInput, ...func(*dynamodb.Options)) (*dynamodb.BatchWriteItemOutput, error)
	Query(context.Context, *dynamodb.QueryInput, ...func(*dynamodb.Options)) (*dynamodb.QueryOutput, error)
	Scan(context.Context, *dynamodb.ScanInput, ...func(*dynamodb.Options)) (*dynamodb.ScanOutput, error)
}

// TableAPI is the part of the DynamoDB client CreateTable uses; *dynamodb.Client fits.
type TableAPI interface {
	CreateTable(context.Context, *dynamodb.CreateTableInput, ...func(*dynamodb.Options)) (*dynamodb.CreateTableOutput, error)
	DescribeTable(context.Context, *dynamodb.DescribeTableInput, ...func(*dynamodb.Options)) (*dynamodb.DescribeTableOutput, error)
	DescribeTimeToLive(context.Context, *dynamodb.DescribeTimeToLiveInput, ...func(*dynamodb.Options)) (*dynamodb.DescribeTimeToLiveOutput, error)
	UpdateTimeToLive(context.Context, *dynamodb.UpdateTimeToLiveInput, ...func(*dynamodb.Options)) (*dynamodb.UpdateTimeToLiveOutput, error)
}

// Store keeps incidents, refusals, sightings and claims in one table (see the package doc for
// the items). Build it with New; it is safe for concurrent use. Every change is a
// conditional write: concurrent Lambda invocations never overwrite each other's work, they
// re-read and retry (bounded, jittered). Throttling and service errors come back wrapped once
// the SDK's own retries are spent, so the caller's event can be retried.
type Store struct {
	db     API
	table  string
	legacy string
	now    func() time.Time

	maxAttempts int
	// leaseFor is how long a batched write may hold an incident's head (see the package doc).
	leaseFor time.Duration
	// pageLimit bounds items per Query and Scan page; 0 lets DynamoDB fill 1 MB pages. Tests
	// lower it to exercise pagination.
	pageLimit int32
	// maxTxItems is TransactWriteItems' action limit; tests lower it to exercise batching.
	maxTxItems int
}

// Option configures a Store; pass options to New.
type Option func(*Store)

// WithLegacyTable names the table of the one-item layout used before this package: incidents
// found there are read and carried into the new layout on their next write (see the package
// doc's Legacy layout). The store then also reads that table (strongly consistent GetItem and
// Scan) and writes it in the migrating transaction, which may span both tables
// (https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_TransactWriteItems.html).
func WithLegacyTable(table string) Option { return func(s *Store) { s.legacy = table } }

// New returns a store on table (partition key pk, sort key sk; see CreateTable) that calls db,
// configured by opts.
func New(db API, table string, opts ...Option) *Store {
	s := &Store{db: db, table: table, now: time.Now, maxAttempts: 10, leaseFor: 2 * time.Minute, maxTxItems: 100}
	for _, o := range opts {
		o(s)
	}
	return s
}

// WithClock returns a copy of the store that reads the time from now (tests pass a fake
// clock). The time stamps OpenedAt, UpdatedAt, new entries, claims and leases.
func (s *Store) WithClock(now func() time.Time) *Store { c := *s; c.now = now; return &c }

func (s *Store) clock() time.Time { return s.now().UTC() }

// CreateTable creates table with the store's key schema (pk and sk, both strings), on-demand
// billing and TTL on AttrExpiresAt, and waits until it is ACTIVE. It is for the local stack and
// tests (template.yaml declares the real table); a table that already exists is fine.
// UpdateTimeToLive answers a ValidationException when TTL is already on, so it looks first
// (https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_UpdateTimeToLive.html).
func CreateTable(ctx context.Context, db TableAPI, table string) error {
	_, err := db.CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName: aws.String(table),
		AttributeDefinitions: []types.AttributeDefinition{
			{AttributeName: aws.String(attrPK), AttributeType: types.ScalarAttributeTypeS},
			{AttributeName: aws.String(attrSK), AttributeType: types.ScalarAttributeTypeS},
		},
		KeySchema: []types.KeySchemaElement{
			{AttributeName: aws.String(attrPK), KeyType: types.KeyTypeHash},
			{AttributeName: aws.String(attrSK), KeyType: types.KeyTypeRange},
		},
		BillingMode: types.BillingModePayPerRequest,
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

// errRetry marks a lost optimistic-concurrency race: read again and retry.
var errRetry = errors.New("lost a concurrent write")

// errLockStale: the open lock named an incident that is closed or gone.
var errLockStale = errors.New("open lock is stale")

// errReread: read the incident again and retry without counting an attempt: it was just
// carried from the legacy table, or another writer's lease ended.
var errReread = errors.New("migrated from the legacy layout")

// Open records inc as a new incident, or folds delivery into the incident already open for
// inc.KeyARN and applies fold.
//
// For a new incident the store sets ID (incident.NewID), Version 1, State (open unless inc says
// remediating), OpenedAt and UpdatedAt, records delivery with inc.RecordDelivery (so Deliveries
// is 1) and numbers the timeline; inc.Timeline may carry the opening entries. For an incident
// already open (in this table, or in the legacy table through its legacy open lock), delivery
// is recorded with RecordDelivery on the latest version and fold (if not nil) runs after it; a
// redelivery of an event already recorded changes nothing: no write, no new version, fold not
// run. delivery.Source must be the event's ID. fold may run more than once when writers race,
// each time on the latest version, so it must only change the incident it is given.
//
// opened is true for the one caller that created the incident, however many race: the open lock
// and the head are created in one TransactWriteItems, each with attribute_not_exists, and a
// losing creator learns the holder from the lock's old image
// (ReturnValuesOnConditionCheckFailure ALL_OLD;
// https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_TransactWriteItems.html). A
// create whose answer was lost and which the SDK sent again finds the lock naming its own
// incident and succeeds. An incident too large for one transaction writes its items first (see
// the package doc). Errors: a closed or keyless inc; incident.ErrConflict after too many lost
// races; DynamoDB's errors, wrapped.
func (s *Store) Open(ctx context.Context, inc incident.Incident, delivery incident.Entry, fold func(*incident.Incident)) (got incident.Incident, opened bool, err error) {
	if inc.KeyARN == "" {
		return incident.Incident{}, false, errors.New("open incident: no key ARN")
	}
	if inc.State == "" {
		inc.State = incident.StateOpen
	}
	if inc.State.Closed() {
		return incident.Incident{}, false, fmt.Errorf("open incident for %s: state %q is closed", inc.KeyARN, inc.State)
	}
	holder := ""
	for attempt := 0; attempt < s.maxAttempts; {
		if holder == "" {
			created, h, err := s.create(ctx, inc, delivery)
			switch {
			case err == nil && h == "":
				return created, true, nil
			case errors.Is(err, errRetry):
				if err := s.backoff(ctx, attempt); err != nil {
					return incident.Incident{}, false, fmt.Errorf("open incident for %s: %w", inc.KeyARN, err)
				}
				attempt++
				continue
			case err != nil:
				return incident.Incident{}, false, fmt.Errorf("open incident for %s: %w", inc.KeyARN, err)
			}
			holder = h
		}
		got, err := s.foldDelivery(ctx, inc.KeyARN, holder, delivery, fold)
		switch {
		case err == nil:
			return got, false, nil
		case errors.Is(err, errLockStale):
			holder = "" // it closed meanwhile: this delivery opens the next incident
			attempt++
		case errors.Is(err, errReread):
		case errors.Is(err, errRetry):
			if err := s.backoff(ctx, attempt); err != nil {
				return incident.Incident{}, false, fmt.Errorf("open incident for %s: %w", inc.KeyARN, err)
			}
			attempt++
		default:
			return incident.Incident{}, false, fmt.Errorf("open incident for %s: add delivery to %s: %w", inc.KeyARN, holder, err)
		}
	}
	return incident.Incident{}, false, fmt.Errorf("open incident for %s: gave up after %d attempts: %w", inc.KeyARN, s.maxAttempts, incident.ErrConflict)
}

// foldDelivery adds one delivery to the open incident id, which keyARN's open lock named: a
// single version-guarded attempt.
func (s *Store) foldDelivery(ctx context.Context, keyARN, id string, delivery incident.Entry, fold func(*incident.Incident)) (incident.Incident, error) {
	cur, err := s.load(ctx, id)
	if errors.Is(err, incident.ErrNotFound) || (err == nil && cur.inc.State.Closed()) {
		// The transactions keep the lock and the incident's state in step, so this is a race
		// with a close (the lock is already gone) or a lock left behind by hand. Either way
		// the lock must not name id: delete it if it still does, then open afresh.
		if err := s.releaseLock(ctx, keyARN, id); err != nil {
			return incident.Incident{}, err
		}
		return incident.Incident{}, errLockStale
	}
	if err != nil {
		return incident.Incident{}, err
	}
	if err := s.awaitLease(ctx, cur); err != nil {
		return incident.Incident{}, err
	}
	return s.apply(ctx, cur, func(inc *incident.Incident) error {
		if !inc.RecordDelivery(delivery) {
			return nil // this event is folded in already
		}
		if fold != nil {
			fold(inc)
		}
		return nil
	})
}

// releaseLock deletes keyARN's open lock (in either table) if it still names id.
func (s *Store) releaseLock(ctx context.Context, keyARN, id string) error {
	del := func(table string, k map[string]types.AttributeValue) error {
		_, err := s.db.DeleteItem(ctx, &dynamodb.DeleteItemInput{
			TableName:                 aws.String(table),
			Key:                       k,
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
	if err := del(s.table, key(lockPK(keyARN), skLock)); err != nil {
		return err
	}
	if s.legacy != "" {
		return del(s.legacy, legacyKey(lockPK(keyARN)))
	}
	return nil
}

// Get returns the whole incident id: head, dependents, remediation steps and timeline
// (refusals included), from this table or else the legacy one, or an error wrapping
// incident.ErrNotFound (incident.ErrConflict if it kept changing under ten reads). It reads
// with a strongly consistent GetItem of the head and a strongly consistent Query of the
// partition, page by page (at most 1 MB each:
// https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_Query.html; consistency:
// https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/HowItWorks.ReadConsistency.html),
// so an incident of any size costs one call per MB plus one.
func (s *Store) Get(ctx context.Context, id string) (incident.Incident, error) {
	cur, err := s.load(ctx, id)
	if err != nil {
		return incident.Incident{}, err
	}
	return cur.inc, nil
}

// OpenFor returns the open (not closed) incident for keyARN, found through its open lock in
// this table or else the legacy one (strongly consistent GetItems), or an error wrapping
// incident.ErrNotFound.
func (s *Store) OpenFor(ctx context.Context, keyARN string) (incident.Incident, error) {
	id, err := s.lockHolder(ctx, keyARN)
	if err != nil {
		return incident.Incident{}, fmt.Errorf("open incident for %s: %w", keyARN, err)
	}
	inc, err := s.Get(ctx, id)
	if err != nil {
		return incident.Incident{}, fmt.Errorf("open incident for %s: %w", keyARN, err)
	}
	if inc.State.Closed() {
		return incident.Incident{}, fmt.Errorf("open incident for %s: %s is %s: %w", keyARN, id, inc.State, incident.ErrNotFound)
	}
	return inc, nil
}

func (s *Store) lockHolder(ctx context.Context, keyARN string) (string, error) {
	out, err := s.db.GetItem(ctx, &dynamodb.GetItemInput{
		TableName:      aws.String(s.table),
		Key:            key(lockPK(keyARN), skLock),
		ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return "", fmt.Errorf("read open lock: %w", err)
	}
	if id := stringAttr(out.Item, attrIncidentID); id != "" {
		return id, nil
	}
	if s.legacy != "" {
		return s.legacyLockHolder(ctx, keyARN)
	}
	return "", incident.ErrNotFound
}

// load reads incident id (see the package doc's Reading), falling back to the legacy table.
func (s *Store) load(ctx context.Context, id string) (*snapshot, error) {
	for attempt := 0; ; attempt++ {
		out, err := s.db.GetItem(ctx, &dynamodb.GetItemInput{
			TableName:      aws.String(s.table),
			Key:            key(incidentPK(id), skHead),
			ConsistentRead: aws.Bool(true),
		})
		if err != nil {
			return nil, fmt.Errorf("get incident %s: %w", id, err)
		}
		if out.Item == nil {
			if s.legacy != "" {
				return s.loadLegacy(ctx, id)
			}
			return nil, fmt.Errorf("get incident %s: %w", id, incident.ErrNotFound)
		}
		snap, again, err := s.loadPartition(ctx, out.Item)
		if err != nil {
			return nil, fmt.Errorf("get incident %s: %w", id, err)
		}
		if !again {
			return snap, nil
		}
		if attempt+1 >= s.maxAttempts {
			return nil, fmt.Errorf("get incident %s: it kept changing while read: %w", id, incident.ErrConflict)
		}
		if err := s.backoff(ctx, attempt); err != nil {
			return nil, fmt.Errorf("get incident %s: %w", id, err)
		}
	}
}

// loadPartition reads the partition of the incident whose head item is headItem. again is set
// when a write landed during the read.
func (s *Store) loadPartition(ctx context.Context, headItem map[string]types.AttributeValue) (*snapshot, bool, error) {
	inc, h, err := decodeHead(headItem)
	if err != nil {
		return nil, false, err
	}
	a := newAssembler(inc, h, "")
	in := &dynamodb.QueryInput{
		TableName:                 aws.String(s.table),
		KeyConditionExpression:    aws.String("#pk = :pk"),
		ExpressionAttributeNames:  map[string]string{"#pk": attrPK},
		ExpressionAttributeValues: map[string]types.AttributeValue{":pk": str(incidentPK(inc.ID))},
		ConsistentRead:            aws.Bool(true),
	}
	if s.pageLimit > 0 {
		in.Limit = aws.Int32(s.pageLimit)
	}
	p := dynamodb.NewQueryPaginator(s.db, in)
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, false, fmt.Errorf("query items: %w", err)
		}
		for _, item := range page.Items {
			if err := a.add(item); err != nil {
				return nil, false, err
			}
		}
	}
	snap := a.done()
	if snap.headJSON, err = headDoc(&snap.inc); err != nil {
		return nil, false, err
	}
	return &snap, a.headSeen != h.version || a.newer, nil
}

// awaitLease waits while another writer's batched write holds the incident's head (see the
// package doc), at most until the lease ends; the caller then reads again.
func (s *Store) awaitLease(ctx context.Context, cur *snapshot) error {
	until := time.Unix(0, cur.head.leaseUntil)
	if cur.head.leaseToken == "" || !s.clock().Before(until) {
		return nil
	}
	wait := min(until.Sub(s.clock()), 250*time.Millisecond)
	if err := sleep(ctx, wait+mrand.N(25*time.Millisecond)); err != nil {
		return err
	}
	return errReread // not counted as an attempt: read again
}

// Update applies mutate to the latest version of incident id and writes what changed (see the
// package doc's Writing), conditioned on the head's version, re-reading and retrying (bounded,
// jittered) when another writer got there first; so mutate may run more than once and must
// only change the incident it is given. An error from mutate aborts the update and is returned
// wrapped. The store sets Version (+1), UpdatedAt, ClosedAt when the state closes, the counts
// (incident.Incident.Count), and moves the key's open lock in the same transaction when the
// state closes or reopens. When mutate changes nothing, nothing is written and the version
// stays. Up to 100 actions and 4 MB the write is one TransactWriteItems
// (https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_TransactWriteItems.html);
// beyond, the items go first with BatchWriteItem, 25 a call, under a lease on the head, and the
// head last (see the package doc). Errors wrap incident.ErrNotFound, incident.ErrConflict (gave
// up, or reopening while another incident holds the key) or DynamoDB's.
func (s *Store) Update(ctx context.Context, id string, mutate func(*incident.Incident) error) (incident.Incident, error) {
	for attempt := 0; attempt < s.maxAttempts; {
		cur, err := s.load(ctx, id)
		if err != nil {
			return incident.Incident{}, fmt.Errorf("update: %w", err)
		}
		next, err := s.applyAfterLease(ctx, cur, mutate)
		switch {
		case err == nil:
			return next, nil
		case errors.Is(err, errReread):
		case errors.Is(err, errRetry):
			if err := s.backoff(ctx, attempt); err != nil {
				return incident.Incident{}, fmt.Errorf("update incident %s: %w", id, err)
			}
			attempt++
		default:
			return incident.Incident{}, fmt.Errorf("update incident %s: %w", id, err)
		}
	}
	return incident.Incident{}, fmt.Errorf("update incident %s: gave up after %d attempts: %w", id, s.maxAttempts, incident.ErrConflict)
}

// UpdateAt is Update for a caller that acted on version (a click on a Slack message): an
// error wrapping incident.ErrStale when the incident is no longer at that version. It retries
// only when the write lost to a change that kept the version (SetSlack's bookkeeping, a
// redelivered write of its own).
func (s *Store) UpdateAt(ctx context.Context, id string, version int64, mutate func(*incident.Incident) error) (incident.Incident, error) {
	for attempt := 0; ; {
		cur, err := s.load(ctx, id)
		if err != nil {
			return incident.Incident{}, fmt.Errorf("update: %w", err)
		}
		if cur.inc.Version != version {
			return incident.Incident{}, fmt.Errorf("update incident %s: at version %d, not %d: %w", id, cur.inc.Version, version, incident.ErrStale)
		}
		next, err := s.applyAfterLease(ctx, cur, mutate)
		switch {
		case err == nil:
			return next, nil
		case errors.Is(err, errReread):
			continue
		case errors.Is(err, errRetry) && attempt+1 < s.maxAttempts:
			if err := s.backoff(ctx, attempt); err != nil {
				return incident.Incident{}, fmt.Errorf("update incident %s: %w", id, err)
			}
			attempt++
		case errors.Is(err, errRetry):
			return incident.Incident{}, fmt.Errorf("update incident %s: changed since version %d: %w", id, version, incident.ErrStale)
		default:
			return incident.Incident{}, fmt.Errorf("update incident %s: %w", id, err)
		}
	}
}

func (s *Store) applyAfterLease(ctx context.Context, cur *snapshot, mutate func(*incident.Incident) error) (incident.Incident, error) {
	if err := s.awaitLease(ctx, cur); err != nil {
		return incident.Incident{}, err
	}
	return s.apply(ctx, cur, mutate)
}

// List returns every incident, complete, the most recently opened first. It scans the table
// for heads (and the legacy table for its incidents, this table winning) and reads each
// incident's partition (see Get). A Scan reads the whole table, children included, 1 MB a page
// (https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_Scan.html), with a
// strongly consistent read and a filter on kind=head: fine for the rare listings (the CLI, the
// reconciler) it serves, and free of indexes, whose reads are only eventually consistent.
func (s *Store) List(ctx context.Context) ([]incident.Incident, error) {
	incs, err := s.scanIncidents(ctx, "", nil, nil)
	if err != nil {
		return nil, fmt.Errorf("list incidents: %w", err)
	}
	return incs, nil
}

// ListActive returns the open and remediating incidents, complete, most recently opened first
// (see List for how).
func (s *Store) ListActive(ctx context.Context) ([]incident.Incident, error) {
	incs, err := s.scanIncidents(ctx, "#state IN (:open, :remediating)",
		map[string]string{"#state": attrState},
		map[string]types.AttributeValue{":open": str(string(incident.StateOpen)), ":remediating": str(string(incident.StateRemediating))})
	if err != nil {
		return nil, fmt.Errorf("list active incidents: %w", err)
	}
	return incs, nil
}

// ForKey returns every incident of keyARN, closed ones included, most recently opened first
// (see List for how). It serves rare questions (a repeated deletion event, a key found unusable
// again), never a hot path.
func (s *Store) ForKey(ctx context.Context, keyARN string) ([]incident.Incident, error) {
	incs, err := s.scanIncidents(ctx, "#key = :key",
		map[string]string{"#key": attrKeyARN},
		map[string]types.AttributeValue{":key": str(keyARN)})
	if err != nil {
		return nil, fmt.Errorf("incidents of key %s: %w", keyARN, err)
	}
	return incs, nil
}

func (s *Store) scanIncidents(ctx context.Context, filter string, names map[string]string, values map[string]types.AttributeValue) ([]incident.Incident, error) {
	var incs []incident.Incident
	seen := map[string]bool{}
	err := s.scan(ctx, s.table, []string{kindHead}, filter, names, values, func(item map[string]types.AttributeValue) error {
		snap, again, err := s.loadPartition(ctx, item)
		if err == nil && again {
			snap, err = s.load(ctx, strings.TrimPrefix(stringAttr(item, attrPK), "incident#"))
		}
		if err != nil {
			return fmt.Errorf("%s: %w", stringAttr(item, attrPK), err)
		}
		seen[snap.inc.ID] = true
		incs = append(incs, snap.inc)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if s.legacy != "" {
		err := s.scan(ctx, s.legacy, []string{legacyKindIncident}, filter, names, values, func(item map[string]types.AttributeValue) error {
			if seen[strings.TrimPrefix(stringAttr(item, attrPK), "incident#")] {
				return nil // migrated meanwhile: this table's copy wins
			}
			snap, err := s.legacySnapshot(ctx, item)
			if err != nil {
				return fmt.Errorf("legacy %s: %w", stringAttr(item, attrPK), err)
			}
			incs = append(incs, snap.inc)
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	slices.SortFunc(incs, func(a, b incident.Incident) int {
		if c := b.OpenedAt.Compare(a.OpenedAt); c != 0 {
			return c
		}
		return strings.Compare(b.ID, a.ID)
	})
	return incs, nil
}

// scan visits every item of table whose kind is one of kinds and that matches filter, page by
// page (a strongly consistent Scan; see List).
func (s *Store) scan(ctx context.Context, table string, kinds []string, filter string, names map[string]string, values map[string]types.AttributeValue, visit func(map[string]types.AttributeValue) error) error {
	n := map[string]string{"#kind": attrKind}
	maps.Copy(n, names)
	v := map[string]types.AttributeValue{}
	refs := make([]string, len(kinds))
	for i, k := range kinds {
		refs[i] = fmt.Sprintf(":kind%d", i)
		v[refs[i]] = str(k)
	}
	maps.Copy(v, values)
	expr := "#kind IN (" + strings.Join(refs, ", ") + ")"
	if filter != "" {
		expr += " AND " + filter
	}
	in := &dynamodb.ScanInput{
		TableName:                 aws.String(table),
		FilterExpression:          aws.String(expr),
		ExpressionAttributeNames:  n,
		ExpressionAttributeValues: v,
		ConsistentRead:            aws.Bool(true),
	}
	if s.pageLimit > 0 {
		in.Limit = aws.Int32(s.pageLimit)
	}
	p := dynamodb.NewScanPaginator(s.db, in)
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("scan %s: %w", table, err)
		}
		for _, item := range page.Items {
			if err := visit(item); err != nil {
				return err
			}
		}
	}
	return nil
}

// RecordRefusal keeps a refused click (incident.NewRefusal) beside incident id without
// touching its head: no version bump, so the buttons on the incident's message stay valid and a
// flood of refused clicks cannot make anyone's approval stale. Refusals with the same entry ID
// (one user, one minute) are one item whose count goes up by e.Count (1 when unset) with an
// atomic ADD in one UpdateItem; first is true for the one click that created the item, told by
// the item's old image (ReturnValues UPDATED_OLD;
// https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_UpdateItem.html).
//
// A click is counted once: its e.Source (the click's ID) is ADDed to a string set, and the
// update is conditioned on the set not holding it yet, so an UpdateItem that the SDK sends again
// after its answer was lost counts nothing and still reports first for the click that created
// the item. A refusal without a Source is counted every time it is recorded. The first refusal's
// document is kept. A refusal for an incident that does not exist (yet, in this table) is kept
// and shows once the incident does. Errors: an entry without ID, DynamoDB's, wrapped.
func (s *Store) RecordRefusal(ctx context.Context, id string, e incident.Entry) (first bool, err error) {
	if e.ID == "" {
		return false, fmt.Errorf("record refusal on %s: entry has no ID", id)
	}
	if e.At.IsZero() {
		e.At = s.clock()
	}
	e.At = e.At.UTC()
	n := max(e.Count, 1)
	e.Seq, e.Count = 0, 0
	doc, err := encode(e)
	if err != nil {
		return false, fmt.Errorf("record refusal on %s: %w", id, err)
	}
	in := &dynamodb.UpdateItemInput{
		TableName:                 aws.String(s.table),
		Key:                       key(incidentPK(id), refusalSK(e.ID)),
		UpdateExpression:          aws.String("SET #kind = :kind, #doc = if_not_exists(#doc, :doc) ADD #count :n"),
		ExpressionAttributeNames:  map[string]string{"#kind": attrKind, "#doc": attrDoc, "#count": attrCount},
		ExpressionAttributeValues: map[string]types.AttributeValue{":kind": str(kindRefusal), ":doc": str(doc), ":n": num(int64(n))},
		ReturnValues:              types.ReturnValueUpdatedOld,
	}
	if e.Source != "" {
		in.UpdateExpression = aws.String(*in.UpdateExpression + ", #src :srcs")
		in.ConditionExpression = aws.String("attribute_not_exists(#src) OR NOT contains(#src, :src)")
		in.ExpressionAttributeNames["#src"] = attrSources
		in.ExpressionAttributeValues[":srcs"] = &types.AttributeValueMemberSS{Value: []string{e.Source}}
		in.ExpressionAttributeValues[":src"] = str(e.Source)
	}
	out, err := s.db.UpdateItem(ctx, in)
	var ccf *types.ConditionalCheckFailedException
	if errors.As(err, &ccf) {
		// This click is counted already: its first attempt landed and lost its answer.
		got, gerr := s.db.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(s.table), Key: in.Key, ConsistentRead: aws.Bool(true)})
		if gerr != nil {
			return false, fmt.Errorf("record refusal %s on %s: %w", e.ID, id, gerr)
		}
		srcs := stringSet(got.Item, attrSources)
		return len(srcs) == 1 && srcs[0] == e.Source, nil
	}
	if err != nil {
		return false, fmt.Errorf("record refusal %s on %s: %w", e.ID, id, err)
	}
	_, had := out.Attributes[attrCount]
	return !had, nil
}

// SetSlack records where incident id's message is and the Seq of the last timeline entry
// posted in its thread, without a new version: the message is a view of the incident, and a new
// version would make every button on the message just rendered stale. postedSeq only goes
// forward for one message: when two syncs race, the one that posted more wins and the other's
// call is a no-op; a new message (a repost, whose thread starts empty) may start lower.
// Writes of the incident are conditioned on these attributes, so neither undoes the other. It
// is one conditional UpdateItem on the head (or on the legacy item of an incident not migrated
// yet): attribute_exists(pk) and slack_posted <= postedSeq
// (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Expressions.ConditionExpressions.html).
// Errors: an incomplete ref, incident.ErrNotFound, DynamoDB's, wrapped.
func (s *Store) SetSlack(ctx context.Context, id string, ref incident.SlackRef, postedSeq int64) error {
	if ref.Channel == "" || ref.TS == "" || postedSeq < 0 {
		return fmt.Errorf("set slack message of incident %s: incomplete reference %+v, posted %d", id, ref, postedSeq)
	}
	in := &dynamodb.UpdateItemInput{
		TableName:        aws.String(s.table),
		Key:              key(incidentPK(id), skHead),
		UpdateExpression: aws.String("SET #ch = :ch, #ts = :ts, #n = :n"),
		ConditionExpression: aws.String("attribute_exists(#pk) AND #kind = :kind AND " +
			"(attribute_not_exists(#n) OR #n <= :n OR #ts <> :ts)"),
		ExpressionAttributeNames: map[string]string{
			"#pk": attrPK, "#kind": attrKind, "#ch": attrSlackChan, "#ts": attrSlackTS, "#n": attrSlackPost,
		},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":ch": str(ref.Channel), ":ts": str(ref.TS), ":n": num(postedSeq), ":kind": str(kindHead),
		},
	}
	_, err := s.db.UpdateItem(ctx, in)
	var ccf *types.ConditionalCheckFailedException
	if errors.As(err, &ccf) {
		// No such head, or another sync already recorded more: tell them apart.
		out, gerr := s.db.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(s.table), Key: in.Key, ConsistentRead: aws.Bool(true)})
		switch {
		case gerr != nil:
			return fmt.Errorf("set slack message of incident %s: %w", id, gerr)
		case out.Item != nil:
			return nil
		case s.legacy != "":
			return s.setLegacySlack(ctx, id, in)
		}
		return fmt.Errorf("set slack message of incident %s: %w", id, incident.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("set slack message of incident %s: %w", id, err)
	}
	return nil
}

// RecordSighting upserts the sighting for sg.KeyARN: the latest event's name, time, actor and
// note replace the previous ones, and the count goes up by one with an atomic ADD in one
// UpdateItem (https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_UpdateItem.html),
// so concurrent deliveries are all counted. Errors: no key ARN, DynamoDB's, wrapped.
func (s *Store) RecordSighting(ctx context.Context, sg incident.Sighting) error {
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
		Key:              key(seenPK(sg.KeyARN), skSighting),
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

// Sightings returns every sighting, the most recent first. It scans the table (see List).
func (s *Store) Sightings(ctx context.Context) ([]incident.Sighting, error) {
	var sgs []incident.Sighting
	err := s.scan(ctx, s.table, []string{kindSighting}, "", nil, nil, func(item map[string]types.AttributeValue) error {
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
	slices.SortFunc(sgs, func(a, b incident.Sighting) int {
		if c := b.At.Compare(a.At); c != 0 {
			return c
		}
		return strings.Compare(a.KeyARN, b.KeyARN)
	})
	return sgs, nil
}

func decodeSighting(item map[string]types.AttributeValue) (incident.Sighting, error) {
	sg := incident.Sighting{
		KeyARN:    stringAttr(item, attrKeyARN),
		EventName: stringAttr(item, attrEventName),
		Note:      stringAttr(item, attrNote),
	}
	var err error
	if sg.At, err = time.Parse(time.RFC3339Nano, stringAttr(item, attrAt)); err != nil {
		return incident.Sighting{}, fmt.Errorf("decode time: %w", err)
	}
	if a := stringAttr(item, attrActor); a != "" {
		if err := json.Unmarshal([]byte(a), &sg.Actor); err != nil {
			return incident.Sighting{}, fmt.Errorf("decode actor: %w", err)
		}
	}
	n, err := numAttr(item, attrCount)
	if err != nil {
		return incident.Sighting{}, err
	}
	sg.Count = int(n)
	return sg, nil
}

// Claim records that name was done, once: true for the one caller that claims it, false (and
// no error) for every later one while the claim lasts. Use it for work that must happen once
// even when two invocations overlap: a single-use Slack click, a reminder. A claim with ttl > 0
// can be made again once ttl has passed: DynamoDB's TTL deletes expired items only eventually
// (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/howitworks-ttl.html), so the
// PutItem's condition checks the time itself; ttl <= 0 claims for good. Each call writes its
// own token, so a PutItem that landed, lost its answer and failed its condition when the SDK
// sent it again is still recognised as this call's claim. Errors: DynamoDB's, wrapped.
func (s *Store) Claim(ctx context.Context, name string, ttl time.Duration) (bool, error) {
	now := s.clock()
	token := newToken()
	item := map[string]types.AttributeValue{
		attrPK:         str(claimPK(name)),
		attrSK:         str(skClaim),
		attrKind:       str(kindClaim),
		attrClaimedAt:  str(now.Format(time.RFC3339Nano)),
		attrClaimToken: str(token),
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
		// Someone holds it; maybe this very call, whose first attempt landed and lost its
		// answer before the SDK sent it again.
		out, gerr := s.db.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(s.table), Key: key(claimPK(name), skClaim), ConsistentRead: aws.Bool(true)})
		if gerr != nil {
			return false, fmt.Errorf("claim %s: %w", name, gerr)
		}
		return stringAttr(out.Item, attrClaimToken) == token, nil
	}
	if err != nil {
		return false, fmt.Errorf("claim %s: %w", name, err)
	}
	return true, nil
}

// Release deletes the claim name, so the next Claim of it succeeds at once. Use it when the
// work a claim stood for did not happen and should be retried. Releasing a claim that does not
// exist is not an error (DeleteItem of a missing item succeeds). Errors: DynamoDB's, wrapped.
func (s *Store) Release(ctx context.Context, name string) error {
	_, err := s.db.DeleteItem(ctx, &dynamodb.DeleteItemInput{
		TableName: aws.String(s.table),
		Key:       key(claimPK(name), skClaim),
	})
	if err != nil {
		return fmt.Errorf("release claim %s: %w", name, err)
	}
	return nil
}

// backoff sleeps before retry number attempt+1: full jitter over an exponentially growing
// ceiling (10 ms doubling, at most 320 ms), so racing writers spread out.
func (s *Store) backoff(ctx context.Context, attempt int) error {
	ceiling := min(10*time.Millisecond<<min(attempt, 5), 320*time.Millisecond)
	return sleep(ctx, time.Millisecond+mrand.N(ceiling))
}

// sleep waits d, or until ctx ends (then its error).
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// newToken names one batched write (see the package doc).
func newToken() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return hex.EncodeToString(b[:])
}

// RecordSlackDelivery records how incident id's Slack delivery went, without touching its head
// (no new version, so the buttons of the message just rendered stay valid, and no head write
// has to retry for it): shown is the Version the message now shows (0 leaves it; it only goes
// forward), and failure is why Slack refuses the incident in a way retrying cannot fix ("" when
// the attempt reached Slack, which clears an earlier failure). It is one UpdateItem of the
// incident's slack item (kind slack, beside the head: shown (N), reason), which Get lays over
// the incident as SlackShown and SlackDelivery.Reason; SlackDelivery's State and Pending follow
// (incident.Incident.SettleSlackDelivery). The shown condition keeps a slower delivery from
// moving it back (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Expressions.ConditionExpressions.html).
// Errors: DynamoDB's, wrapped.
func (s *Store) RecordSlackDelivery(ctx context.Context, id string, shown int64, failure string) error {
	names := map[string]string{"#kind": attrKind, "#reason": attrReason, "#shown": attrShown}
	values := map[string]types.AttributeValue{":kind": str(kindSlack)}
	set := "SET #kind = :kind, #shown = if_not_exists(#shown, :zero)"
	cond := ""
	if shown > 0 {
		set = "SET #kind = :kind, #shown = :shown"
		values[":shown"] = num(shown)
		cond = "attribute_not_exists(#shown) OR #shown <= :shown"
	} else {
		values[":zero"] = num(0)
	}
	expr := set
	if failure != "" {
		expr += ", #reason = :reason"
		values[":reason"] = str(failure)
	} else {
		expr += " REMOVE #reason"
	}
	in := &dynamodb.UpdateItemInput{
		TableName:                 aws.String(s.table),
		Key:                       key(incidentPK(id), skSlack),
		UpdateExpression:          aws.String(expr),
		ExpressionAttributeNames:  names,
		ExpressionAttributeValues: values,
	}
	if cond != "" {
		in.ConditionExpression = aws.String(cond)
	}
	_, err := s.db.UpdateItem(ctx, in)
	var ccf *types.ConditionalCheckFailedException
	if errors.As(err, &ccf) {
		// A later version is shown already: record only the failure, or its absence.
		return s.RecordSlackDelivery(ctx, id, 0, failure)
	}
	if err != nil {
		return fmt.Errorf("record slack delivery of incident %s: %w", id, err)
	}
	return nil
}

// SlackPending returns the IDs of the incidents whose Slack delivery may be pending and has
// not failed: no message yet, a timeline entry above the last one replied, or a version the
// message does not show. It scans heads and slack items only, deciding from their attributes
// without reading each incident's partition (the one-minute retry pass runs it; a caller
// checks the candidates with Get, whose SlackDelivery is exact). Legacy incidents are not
// scanned. A Scan reads the whole table, 1 MB a page
// (https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_Scan.html). Errors:
// DynamoDB's, wrapped.
func (s *Store) SlackPending(ctx context.Context) ([]string, error) {
	type cand struct {
		version, seq, shown int64
		slack, failed       bool
	}
	cands := map[string]*cand{}
	get := func(pk string) *cand {
		id := strings.TrimPrefix(pk, "incident#")
		if cands[id] == nil {
			cands[id] = &cand{}
		}
		return cands[id]
	}
	err := s.scan(ctx, s.table, []string{kindHead, kindSlack}, "", nil, nil, func(item map[string]types.AttributeValue) error {
		c := get(stringAttr(item, attrPK))
		if stringAttr(item, attrKind) == kindSlack {
			c.shown, c.failed = optNum(item, attrShown), stringAttr(item, attrReason) != ""
			return nil
		}
		inc, h, err := decodeHead(item)
		if err != nil {
			return fmt.Errorf("%s: %w", stringAttr(item, attrPK), err)
		}
		c.version, c.seq, c.slack = h.version, inc.TimelineSeq-h.slackPost, h.slackTS != ""
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list pending slack deliveries: %w", err)
	}
	var ids []string
	for id, c := range cands {
		if c.version > 0 && !c.failed && (!c.slack || c.seq > 0 || c.version > c.shown) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids, nil
}
