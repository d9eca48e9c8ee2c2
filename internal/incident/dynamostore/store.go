// Package dynamostore keeps keywarden's incidents in one DynamoDB table. (SKELETON: the API
// other packages code against; the implementation and the item layout doc are being written.)
package dynamostore

import (
	"context"
	"errors"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/keywarden/keywarden/internal/incident"
)

// AttrExpiresAt is the table's TimeToLive attribute; template.yaml must name the same one.
const AttrExpiresAt = "expires_at"

var errTODO = errors.New("dynamostore: not implemented yet")

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

// TableAPI is the part of the DynamoDB client CreateTable uses.
type TableAPI interface {
	CreateTable(context.Context, *dynamodb.CreateTableInput, ...func(*dynamodb.Options)) (*dynamodb.CreateTableOutput, error)
	DescribeTable(context.Context, *dynamodb.DescribeTableInput, ...func(*dynamodb.Options)) (*dynamodb.DescribeTableOutput, error)
	DescribeTimeToLive(context.Context, *dynamodb.DescribeTimeToLiveInput, ...func(*dynamodb.Options)) (*dynamodb.DescribeTimeToLiveOutput, error)
	UpdateTimeToLive(context.Context, *dynamodb.UpdateTimeToLiveInput, ...func(*dynamodb.Options)) (*dynamodb.UpdateTimeToLiveOutput, error)
}

// Store keeps incidents, refusals, sightings and claims.
type Store struct {
	db     API
	table  string
	legacy string
	now    func() time.Time
}

// Option configures a Store.
type Option func(*Store)

// WithLegacyTable names the table of the one-item layout used before this package: incidents
// found there are read and carried into the new layout on their next write.
func WithLegacyTable(table string) Option { return func(s *Store) { s.legacy = table } }

// New returns a store on table (partition key pk, sort key sk).
func New(db API, table string, opts ...Option) *Store {
	s := &Store{db: db, table: table, now: time.Now}
	for _, o := range opts {
		o(s)
	}
	return s
}

// WithClock returns a copy of the store that reads the time from now.
func (s *Store) WithClock(now func() time.Time) *Store { c := *s; c.now = now; return &c }

// CreateTable creates table with the store's key schema and TTL and waits until it is ACTIVE.
func CreateTable(ctx context.Context, db TableAPI, table string) error { return errTODO }

// Open records inc as a new incident (delivery, an event's delivery entry, is recorded with
// RecordDelivery), or folds delivery into the incident already open for inc.KeyARN and applies
// fold. opened is true for the one caller that created it.
func (s *Store) Open(ctx context.Context, inc incident.Incident, delivery incident.Entry, fold func(*incident.Incident)) (got incident.Incident, opened bool, err error) {
	return incident.Incident{}, false, errTODO
}

// Get returns the whole incident id: head, dependents, remediation steps and timeline
// (refusals included), or an error wrapping incident.ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (incident.Incident, error) {
	return incident.Incident{}, errTODO
}

// OpenFor returns the open (not closed) incident for keyARN, or incident.ErrNotFound.
func (s *Store) OpenFor(ctx context.Context, keyARN string) (incident.Incident, error) {
	return incident.Incident{}, errTODO
}

// Update applies mutate to the latest version of incident id and writes what changed,
// conditioned on the head's version, retrying on a lost race.
func (s *Store) Update(ctx context.Context, id string, mutate func(*incident.Incident) error) (incident.Incident, error) {
	return incident.Incident{}, errTODO
}

// UpdateAt is Update for a caller that acted on version: incident.ErrStale when it moved on.
func (s *Store) UpdateAt(ctx context.Context, id string, version int64, mutate func(*incident.Incident) error) (incident.Incident, error) {
	return incident.Incident{}, errTODO
}

// List returns every incident, complete, the most recently opened first.
func (s *Store) List(ctx context.Context) ([]incident.Incident, error) { return nil, errTODO }

// ListActive returns the open and remediating incidents, complete, most recently opened first.
func (s *Store) ListActive(ctx context.Context) ([]incident.Incident, error) { return nil, errTODO }

// ForKey returns every incident of keyARN, closed ones included, most recently opened first.
func (s *Store) ForKey(ctx context.Context, keyARN string) ([]incident.Incident, error) {
	return nil, errTODO
}

// RecordRefusal keeps a refused click (incident.NewRefusal) beside incident id without
// touching its head: no version bump. Refusals with the same entry ID (one user, one minute)
// are one item whose Count goes up; first is true for the one call that created it.
func (s *Store) RecordRefusal(ctx context.Context, id string, e incident.Entry) (first bool, err error) {
	return false, errTODO
}

// SetSlack records where incident id's message is and the Seq of the last timeline entry
// posted in its thread, without a new version; postedSeq only goes forward.
func (s *Store) SetSlack(ctx context.Context, id string, ref incident.SlackRef, postedSeq int64) error {
	return errTODO
}

// RecordSighting upserts the sighting for sg.KeyARN and counts it.
func (s *Store) RecordSighting(ctx context.Context, sg incident.Sighting) error { return errTODO }

// Sightings returns every sighting, the most recent first.
func (s *Store) Sightings(ctx context.Context) ([]incident.Sighting, error) { return nil, errTODO }

// Claim records that name was done, once (see the old incident.Store.Claim).
func (s *Store) Claim(ctx context.Context, name string, ttl time.Duration) (bool, error) {
	return false, errTODO
}

// Release deletes the claim name.
func (s *Store) Release(ctx context.Context, name string) error { return errTODO }
