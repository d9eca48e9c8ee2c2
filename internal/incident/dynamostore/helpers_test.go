package dynamostore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/keywarden/keywarden/internal/awstest"
	"github.com/keywarden/keywarden/internal/incident"
)

func TestMain(m *testing.M) { awstest.Main(m) }

const (
	keyA = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
	keyB = "arn:aws:kms:us-east-1:123456789012:key/0987dcba-09fe-87dc-65ba-ab0987654321"
	keyC = "arn:aws:kms:us-east-1:123456789012:key/mrk-1234abcd12ab34cd56ef1234567890ab"
)

var t0 = time.Date(2026, 11, 28, 9, 30, 0, 0, time.UTC)

// fakeClock moves one second forward on every reading, so every write gets its own time.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(time.Second)
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// counter is an aws.HTTPClient that counts DynamoDB calls by operation (the X-Amz-Target
// header, "DynamoDB_20120810.<Operation>").
type counter struct {
	next  aws.HTTPClient
	mu    sync.Mutex
	calls map[string]int
}

func (c *counter) Do(req *http.Request) (*http.Response, error) {
	op := strings.TrimPrefix(req.Header.Get("X-Amz-Target"), "DynamoDB_20120810.")
	c.mu.Lock()
	if c.calls == nil {
		c.calls = map[string]int{}
	}
	c.calls[op]++
	c.mu.Unlock()
	return c.next.Do(req)
}

// take returns the calls counted since the last take, and their total.
func (c *counter) take() (map[string]int, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	calls, total := c.calls, 0
	for _, n := range calls {
		total += n
	}
	c.calls = nil
	return calls, total
}

// env is one test's tables in moto.
type env struct {
	db     *dynamodb.Client
	table  string
	legacy string
	calls  *counter
	clk    *fakeClock
}

// newEnv creates a fresh table (and, with legacy, a legacy-layout table) in moto for the
// test, reached through endpoint (moto itself when "").
func newEnv(t testing.TB, endpoint string, legacy bool) *env {
	t.Helper()
	url := awstest.Moto(t)
	if endpoint == "" {
		endpoint = url
	}
	cfg := awstest.Serial(awstest.Config(t, endpoint))
	cnt := &counter{next: cfg.HTTPClient}
	cfg.HTTPClient = cnt
	db := dynamodb.NewFromConfig(cfg)
	e := &env{db: db, table: tableName(t, "keywarden"), calls: cnt, clk: &fakeClock{now: t0}}
	ctx := context.Background()
	if err := CreateTable(ctx, db, e.table); err != nil {
		t.Fatalf("CreateTable: %v", err)
	}
	t.Cleanup(func() { deleteTable(t, db, e.table) })
	if legacy {
		e.legacy = tableName(t, "legacy")
		createLegacyTable(t, db, e.legacy)
	}
	cnt.take()
	return e
}

func (e *env) store(opts ...Option) *Store {
	if e.legacy != "" {
		opts = append([]Option{WithLegacyTable(e.legacy)}, opts...)
	}
	return New(e.db, e.table, opts...).WithClock(e.clk.Now)
}

func tableName(t testing.TB, prefix string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := regexp.MustCompile(`[^a-zA-Z0-9_.-]+`).ReplaceAllString(t.Name(), "-")
	return fmt.Sprintf("%s-%.60s-%s", prefix, name, hex.EncodeToString(b[:]))
}

func deleteTable(t testing.TB, db *dynamodb.Client, table string) {
	if _, err := db.DeleteTable(context.Background(), &dynamodb.DeleteTableInput{TableName: aws.String(table)}); err != nil {
		t.Logf("delete table %s: %v", table, err)
	}
}

// createLegacyTable creates a table of the layout before this package: hash key pk only.
func createLegacyTable(t testing.TB, db *dynamodb.Client, table string) {
	t.Helper()
	_, err := db.CreateTable(context.Background(), &dynamodb.CreateTableInput{
		TableName:            aws.String(table),
		AttributeDefinitions: []types.AttributeDefinition{{AttributeName: aws.String("pk"), AttributeType: types.ScalarAttributeTypeS}},
		KeySchema:            []types.KeySchemaElement{{AttributeName: aws.String("pk"), KeyType: types.KeyTypeHash}},
		BillingMode:          types.BillingModePayPerRequest,
	})
	if err != nil {
		t.Fatalf("create legacy table: %v", err)
	}
	t.Cleanup(func() { deleteTable(t, db, table) })
}

var eventSeq atomic.Int64

// newIncident is what KeyEventFunction would pass to Open for a loss event on key.
func newIncident(key, event string, at time.Time) incident.Incident {
	return incident.Incident{
		KeyARN:   key,
		KeyState: incident.KeyStateDisabled,
		Trigger:  event,
		LostAt:   at,
		Actor:    incident.Actor{ARN: "arn:aws:iam::123456789012:user/alice", SourceIP: "203.0.113.7"},
		Clusters: []incident.Cluster{{Identifier: "orders", CanStop: true, LostAccessAt: &at, Uses: []string{"storage"}}},
		Timeline: []incident.Entry{{ID: "opened:" + event, At: at, Kind: incident.KindState, Actor: "alice", Result: incident.Result(incident.StateOpen), Detail: event}},
	}
}

// delivery is the delivery entry of one EventBridge event; a fresh event ID unless id is given.
func delivery(at time.Time, id ...string) incident.Entry {
	src := fmt.Sprintf("evt-%d", eventSeq.Add(1))
	if len(id) > 0 {
		src = id[0]
	}
	return incident.Entry{Source: src, At: at, Actor: "alice", Detail: "DisableKey"}
}

func mustOpen(t testing.TB, s *Store, inc incident.Incident) incident.Incident {
	t.Helper()
	got, opened, err := s.Open(context.Background(), inc, delivery(inc.LostAt), nil)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if !opened {
		t.Fatalf("Open: opened = false for a new key")
	}
	return got
}

func mustGet(t testing.TB, s *Store, id string) incident.Incident {
	t.Helper()
	got, err := s.Get(context.Background(), id)
	if err != nil {
		t.Fatalf("Get(%s): %v", id, err)
	}
	return got
}

// partition returns every item of incident id's partition, by sort key.
func (e *env) partition(t testing.TB, id string) map[string]map[string]types.AttributeValue {
	t.Helper()
	out := map[string]map[string]types.AttributeValue{}
	p := dynamodb.NewQueryPaginator(e.db, &dynamodb.QueryInput{
		TableName:                 aws.String(e.table),
		KeyConditionExpression:    aws.String("pk = :pk"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":pk": str(incidentPK(id))},
		ConsistentRead:            aws.Bool(true),
	})
	for p.HasMorePages() {
		page, err := p.NextPage(context.Background())
		if err != nil {
			t.Fatalf("Query: %v", err)
		}
		for _, it := range page.Items {
			out[stringAttr(it, attrSK)] = it
		}
	}
	return out
}
