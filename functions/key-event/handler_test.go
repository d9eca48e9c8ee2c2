package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/rds"

	"github.com/keywarden/keywarden/internal/awstest"
	"github.com/keywarden/keywarden/internal/blast"
	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/incident/dynamostore"
	"github.com/keywarden/keywarden/internal/intake"
	"github.com/keywarden/keywarden/internal/kmskey"
)

func TestMain(m *testing.M) { awstest.Main(m) }

// sampleKeyIDs are the keys the KMS samples in events/ name; tests swap in a real key. The
// multi-Region key (mrk-…) is left alone: it stands for a key this account does not have.
var sampleKeyIDs = []string{"1234abcd-12ab-34cd-56ef-1234567890ab", "0987dcba-09fe-87dc-65ba-ab0987654321", "5f6e7d8c-9b0a-4c1d-8e2f-3a4b5c6d7e8f"}

// stack is the key-event path on moto: real KMS, RDS and DynamoDB APIs, the real store,
// resolver and blast radius, the handler under test.
type stack struct {
	kms     *kms.Client
	rds     *rds.Client
	store   *dynamostore.Store
	handler *handler
}

func newStack(t *testing.T) *stack {
	t.Helper()
	cfg := awstest.Serial(awstest.Config(t, awstest.Moto(t)))
	ddb := dynamodb.NewFromConfig(cfg)
	table := fmt.Sprintf("incidents-%d", rand.Int64())
	if err := dynamostore.CreateTable(context.Background(), ddb, table); err != nil {
		t.Fatal(err)
	}
	s := &stack{kms: kms.NewFromConfig(cfg), rds: rds.NewFromConfig(cfg), store: dynamostore.New(ddb, table)}
	keys := kmskey.NewResolver(s.kms)
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	// moto 5.2.1 has no DescribeDBClusterAutomatedBackups (aws-facts §8).
	s.handler = newHandler(intake.New(keys, blast.New(s.rds, keys, blast.WithoutClusterAutomatedBackups()), s.store, log), nil, log)
	return s
}

// key creates a customer-managed key and returns its ID and ARN.
func (s *stack) key(t *testing.T) (id, arn string) {
	t.Helper()
	out, err := s.kms.CreateKey(context.Background(), &kms.CreateKeyInput{Description: aws.String(t.Name())})
	if err != nil {
		t.Fatal(err)
	}
	return *out.KeyMetadata.KeyId, *out.KeyMetadata.Arn
}

// cluster creates an encrypted cluster whose KmsKeyId is keyRef, exactly as given.
func (s *stack) cluster(t *testing.T, engine, keyRef string) string {
	t.Helper()
	id := fmt.Sprintf("c-%d", rand.Int32())
	_, err := s.rds.CreateDBCluster(context.Background(), &rds.CreateDBClusterInput{
		DBClusterIdentifier: aws.String(id), Engine: aws.String(engine), StorageEncrypted: aws.Bool(true),
		KmsKeyId: aws.String(keyRef), MasterUsername: aws.String("admin"), MasterUserPassword: aws.String("not-a-secret-1"),
	})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// sample reads events/<name> with the sample key swapped for keyID and ARN.
func sample(t *testing.T, name, keyID string) json.RawMessage {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "events", name))
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range sampleKeyIDs {
		b = []byte(strings.ReplaceAll(string(b), id, keyID))
	}
	return json.RawMessage(b)
}

func (s *stack) handle(t *testing.T, raw json.RawMessage) Result {
	t.Helper()
	res, err := s.handler.Handle(context.Background(), raw)
	if err != nil {
		t.Fatalf("handle: %v", err)
	}
	return res
}

func TestDisableKeyOpensOneIncident(t *testing.T) {
	s := newStack(t)
	keyID, keyARN := s.key(t)
	orders := s.cluster(t, "aurora-postgresql", keyID)
	billing := s.cluster(t, "aurora-mysql", keyARN)
	s.cluster(t, "neptune", keyARN)
	if _, err := s.kms.DisableKey(context.Background(), &kms.DisableKeyInput{KeyId: &keyID}); err != nil {
		t.Fatal(err)
	}

	raw := sample(t, "kms-disable-key.json", keyID)
	res := s.handle(t, raw)
	if len(res.Outcomes) != 1 || res.Outcomes[0].Action != intake.ActionOpened {
		t.Fatalf("got %+v, want one opened incident", res)
	}
	inc, err := s.store.OpenFor(context.Background(), keyARN)
	if err != nil {
		t.Fatal(err)
	}
	eventTime := time.Date(2026, 3, 10, 14, 2, 11, 0, time.UTC)
	if inc.Deadline == nil || !inc.Deadline.Equal(eventTime.Add(7*24*time.Hour)) {
		t.Errorf("deadline: got %v, want 7 days after %v", inc.Deadline, eventTime)
	}
	var ids []string
	for _, c := range inc.Clusters {
		ids = append(ids, c.Identifier)
	}
	if len(ids) != 2 || !strings.Contains(strings.Join(ids, " "), orders) || !strings.Contains(strings.Join(ids, " "), billing) {
		t.Errorf("clusters: got %v, want %s and %s", ids, orders, billing)
	}
	if len(inc.OtherEngines) != 1 {
		t.Errorf("other engines: got %d, want the neptune cluster", len(inc.OtherEngines))
	}
	if inc.Actor.SourceIP != "203.0.113.24" || !strings.Contains(inc.Actor.ARN, "alice@example.com") {
		t.Errorf("actor: got %+v", inc.Actor)
	}

	// EventBridge delivers at least once: the same event again folds into the incident, and
	// counts once.
	res = s.handle(t, raw)
	if res.Outcomes[0].Action != intake.ActionFolded || res.Outcomes[0].IncidentID != inc.ID {
		t.Fatalf("redelivery: got %+v, want folded into %s", res.Outcomes, inc.ID)
	}
	all, err := s.store.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 1 || all[0].Deliveries != 1 || countDeliveries(all[0], res.EventID) != 1 {
		t.Errorf("got %d incidents, deliveries %d; want 1 incident with the one event recorded once", len(all), all[0].Deliveries)
	}
}

// countDeliveries counts the delivery entries of EventBridge event id.
func countDeliveries(inc incident.Incident, id string) int {
	n := 0
	for _, e := range inc.Timeline {
		if e.Kind == incident.KindDelivery && e.Source == id {
			n++
		}
	}
	return n
}

func TestRacingDeliveriesOpenOneIncident(t *testing.T) {
	s := newStack(t)
	keyID, keyARN := s.key(t)
	s.cluster(t, "aurora-postgresql", keyARN)
	if _, err := s.kms.DisableKey(context.Background(), &kms.DisableKeyInput{KeyId: &keyID}); err != nil {
		t.Fatal(err)
	}
	raws := []json.RawMessage{sample(t, "kms-disable-key.json", keyID), sample(t, "kms-disable-key-legacy-null-response.json", keyID)}
	const n = 8
	var wg sync.WaitGroup
	opened := make(chan bool, n)
	for i := range n {
		wg.Go(func() {
			res, err := s.handler.Handle(context.Background(), raws[i%2])
			if err != nil {
				t.Error(err)
				return
			}
			opened <- len(res.Outcomes) == 1 && res.Outcomes[0].Action == intake.ActionOpened
		})
	}
	wg.Wait()
	close(opened)
	count := 0
	for o := range opened {
		if o {
			count++
		}
	}
	all, err := s.store.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// n deliveries of two distinct events: two deliveries counted.
	if count != 1 || len(all) != 1 || all[0].Deliveries != len(raws) {
		t.Fatalf("got %d opened and %d incidents, want 1 and 1 with %d deliveries: %+v", count, len(all), len(raws), all)
	}
}

// TestEverySample sends each KMS sample through the handler against moto and checks what it
// does: no sample may fail the invocation, and each does what its event means.
func TestEverySample(t *testing.T) {
	want := map[string]intake.Action{
		"kms-disable-key.json":                         intake.ActionOpened,
		"kms-disable-key-legacy-null-response.json":    intake.ActionOpened,
		"kms-disable-key-no-resources.json":            intake.ActionOpened,
		"kms-disable-key-failed.json":                  intake.ActionIgnored,
		"kms-schedule-key-deletion.json":               intake.ActionOpened,
		"kms-schedule-key-deletion-comma-date.json":    intake.ActionOpened,
		"kms-schedule-key-deletion-24h-pm.json":        intake.ActionOpened,
		"kms-delete-imported-key-material.json":        intake.ActionOpened,
		"kms-imported-key-material-expiration.json":    intake.ActionOpened,
		"kms-enable-key.json":                          intake.ActionIgnored, // no open incident: never opens one
		"kms-enable-key-legacy-null-response.json":     intake.ActionIgnored,
		"kms-cancel-key-deletion.json":                 intake.ActionIgnored,
		"kms-put-key-policy.json":                      intake.ActionOpened, // the key is found Disabled: a loss we missed
		"kms-revoke-grant.json":                        intake.ActionOpened,
		"kms-retire-grant.json":                        intake.ActionOpened,
		"kms-cmk-deletion.json":                        intake.ActionOpened,
		"kms-schedule-key-deletion-replica.json":       intake.ActionIgnored, // a multi-Region key this account does not have
		"kms-disconnect-custom-key-store.json":         intake.ActionIgnored, // moto has no custom key stores: no keys in it
		"kms-connect-custom-key-store.json":            intake.ActionIgnored, // a recovery call: never opens
		"kms-import-key-material.json":                 intake.ActionIgnored, // a recovery call: never opens
		"kms-schedule-key-deletion-snapshot-only.json": intake.ActionOpened,
	}
	s := newStack(t)
	files, err := filepath.Glob(filepath.Join("..", "..", "events", "kms-*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no samples: %v", err)
	}
	for _, f := range files {
		name := filepath.Base(f)
		t.Run(name, func(t *testing.T) {
			keyID, keyARN := s.key(t)
			s.cluster(t, "aurora-postgresql", keyARN)
			if _, err := s.kms.DisableKey(context.Background(), &kms.DisableKeyInput{KeyId: &keyID}); err != nil {
				t.Fatal(err)
			}
			res := s.handle(t, sample(t, name, keyID))
			if name == "kms-describe-key-readonly.json" {
				if res.Rejected == "" {
					t.Errorf("got %+v, want the read-only call rejected", res)
				}
				return
			}
			wantAction, ok := want[name]
			if !ok {
				t.Fatalf("no expectation for new sample %s: add one", name)
			}
			if len(res.Outcomes) == 0 || res.Outcomes[0].Action != wantAction {
				t.Errorf("got %+v, want %s", res, wantAction)
			}
		})
	}
}

func TestUnhandleableInputIsAcknowledged(t *testing.T) {
	s := newStack(t)
	for _, raw := range []string{`{not json`, `{"detail-type":"Unknown","source":"aws.kms","detail":{}}`, `"a string"`} {
		res, err := s.handler.Handle(context.Background(), json.RawMessage(raw))
		if err != nil || res.Rejected == "" {
			t.Errorf("%s: got %+v, %v; want rejected with no error (no retry storm)", raw, res, err)
		}
	}
	if all, _ := s.store.List(context.Background()); len(all) != 0 {
		t.Errorf("got %d incidents, want none written", len(all))
	}
}

func TestEnableKeyUpdatesOpenIncident(t *testing.T) {
	s := newStack(t)
	keyID, keyARN := s.key(t)
	s.cluster(t, "aurora-postgresql", keyARN)
	if _, err := s.kms.DisableKey(context.Background(), &kms.DisableKeyInput{KeyId: &keyID}); err != nil {
		t.Fatal(err)
	}
	s.handle(t, sample(t, "kms-disable-key.json", keyID))
	if _, err := s.kms.EnableKey(context.Background(), &kms.EnableKeyInput{KeyId: &keyID}); err != nil {
		t.Fatal(err)
	}
	res := s.handle(t, sample(t, "kms-enable-key.json", keyID))
	if res.Outcomes[0].Action != intake.ActionUpdated {
		t.Fatalf("got %+v, want updated", res.Outcomes)
	}
	inc, err := s.store.OpenFor(context.Background(), keyARN)
	if err != nil {
		t.Fatal(err)
	}
	if inc.KeyState != incident.KeyStateEnabled || inc.State != incident.StateOpen {
		t.Errorf("got key %s, incident %s; want Enabled and still open until the clusters are back", inc.KeyState, inc.State)
	}
	if e, ok := inc.LastEntry(incident.KindKeyChange); !ok || e.Result != incident.Result(incident.KeyStateEnabled) || e.Source != res.EventID {
		t.Errorf("got key change %+v, want one to Enabled from the EnableKey event", e)
	}
}

func TestKeyWithoutAuroraIsSeenNotEscalated(t *testing.T) {
	s := newStack(t)
	keyID, _ := s.key(t)
	if _, err := s.kms.DisableKey(context.Background(), &kms.DisableKeyInput{KeyId: &keyID}); err != nil {
		t.Fatal(err)
	}
	res := s.handle(t, sample(t, "kms-disable-key.json", keyID))
	if res.Outcomes[0].Action != intake.ActionNoImpact {
		t.Fatalf("got %+v, want no-aurora-impact", res.Outcomes)
	}
	seen, err := s.store.Sightings(context.Background())
	if err != nil || len(seen) != 1 {
		t.Fatalf("got %v, %v; want one sighting", seen, err)
	}
}

func TestAWSDownIsRetried(t *testing.T) {
	cfg := awstest.Config(t, "http://127.0.0.1:1") // nothing listens there
	ddb := dynamodb.NewFromConfig(cfg)
	keys := kmskey.NewResolver(kms.NewFromConfig(cfg))
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	h := newHandler(intake.New(keys, blast.New(rds.NewFromConfig(cfg), keys), dynamostore.New(ddb, "t"), log), nil, log)
	if _, err := h.Handle(context.Background(), sample(t, "kms-disable-key.json", sampleKeyIDs[0])); err == nil {
		t.Fatal("got nil error, want an error so Lambda retries")
	}
}
