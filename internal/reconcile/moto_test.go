package reconcile

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
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
	"github.com/keywarden/keywarden/internal/keyevent"
	"github.com/keywarden/keywarden/internal/kmskey"
	"github.com/keywarden/keywarden/internal/trail"
)

func TestMain(m *testing.M) { awstest.Main(m) }

// replies records what would have been posted in Slack threads.
type replies struct {
	mu   sync.Mutex
	text map[string][]string // incident ID → replies
}

func (r *replies) Reply(_ context.Context, inc incident.Incident, text string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.text == nil {
		r.text = map[string][]string{}
	}
	r.text[inc.ID] = append(r.text[inc.ID], text)
	return nil
}

func (r *replies) of(id string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.text[id]...)
}

// world is moto behind the real store, resolver, blast radius and intake. rdsAPI is what
// every component sees of RDS; tests may wrap it to put clusters in states moto cannot reach.
type world struct {
	kms     *kms.Client
	rds     *rds.Client
	rdsAPI  interface{ blast.RDSAPI }
	store   *dynamostore.Store
	keys    *kmskey.Resolver
	replies *replies
	log     *slog.Logger
}

func newWorld(t *testing.T) *world {
	t.Helper()
	cfg := awstest.Serial(awstest.Config(t, awstest.Moto(t)))
	ddb := dynamodb.NewFromConfig(cfg)
	table := fmt.Sprintf("incidents-%d", rand.Int64())
	if err := dynamostore.CreateTable(context.Background(), ddb, table); err != nil {
		t.Fatal(err)
	}
	w := &world{
		kms: kms.NewFromConfig(cfg), rds: rds.NewFromConfig(cfg), store: dynamostore.New(ddb, table),
		replies: &replies{}, log: slog.New(slog.NewJSONHandler(io.Discard, nil)),
	}
	w.rdsAPI = w.rds
	w.keys = kmskey.NewResolver(w.kms)
	return w
}

func (w *world) intake() *intake.Service {
	// moto 5.2.1 has no DescribeDBClusterAutomatedBackups (aws-facts §8).
	return intake.New(w.keys, blast.New(w.rdsAPI, w.keys, blast.WithoutClusterAutomatedBackups()), w.store, w.log)
}

// reconciler builds a Reconciler on the world; edit may change its dependencies.
func (w *world) reconciler(edit func(*Deps)) *Reconciler {
	radius := blast.New(w.rdsAPI, w.keys, blast.WithoutClusterAutomatedBackups())
	d := Deps{
		RDS: w.rdsAPI, KMS: w.kms, Keys: w.keys, Radius: radius, Incidents: w.store,
		Opener: w.intake(), Replier: w.replies,
	}
	if edit != nil {
		edit(&d)
	}
	return New(d, Options{Mention: "<!subteam^S0ONCALL>", RunBudget: time.Minute, MaxCalls: 5000})
}

// key creates a customer-managed key and re-enables it when the test ends, so that the
// backstops of later tests (moto is shared) do not keep finding it.
func (w *world) key(t *testing.T) (id, arn string) {
	t.Helper()
	out, err := w.kms.CreateKey(context.Background(), &kms.CreateKeyInput{Description: aws.String(t.Name())})
	if err != nil {
		t.Fatal(err)
	}
	id = *out.KeyMetadata.KeyId
	t.Cleanup(func() { _, _ = w.kms.EnableKey(context.Background(), &kms.EnableKeyInput{KeyId: &id}) })
	return id, *out.KeyMetadata.Arn
}

func (w *world) disable(t *testing.T, keyID string) {
	t.Helper()
	if _, err := w.kms.DisableKey(context.Background(), &kms.DisableKeyInput{KeyId: &keyID}); err != nil {
		t.Fatal(err)
	}
}

func (w *world) cluster(t *testing.T, keyID string) string {
	t.Helper()
	id := fmt.Sprintf("c-%d", rand.Int32())
	_, err := w.rds.CreateDBCluster(context.Background(), &rds.CreateDBClusterInput{
		DBClusterIdentifier: aws.String(id), Engine: aws.String("aurora-postgresql"), StorageEncrypted: aws.Bool(true),
		KmsKeyId: aws.String(keyID), MasterUsername: aws.String("admin"), MasterUserPassword: aws.String("not-a-secret-1"),
	})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// open opens the key's incident as a DisableKey event at lostAt would have.
func (w *world) open(t *testing.T, keyARN string, lostAt time.Time) incident.Incident {
	t.Helper()
	o, err := w.intake().Ensure(context.Background(), intake.Signal{
		KeyARN: keyARN, Trigger: "DisableKey", At: lostAt,
		Actor: incident.Actor{ARN: "arn:aws:iam::123456789012:user/alice"},
	})
	if err != nil || o.Action != intake.ActionOpened {
		t.Fatalf("open: got %+v, %v; want opened", o, err)
	}
	return w.get(t, o.IncidentID)
}

func (w *world) get(t *testing.T, id string) incident.Incident {
	t.Helper()
	inc, err := w.store.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return inc
}

// forKey returns the incidents of keyARN.
func (w *world) forKey(t *testing.T, keyARN string) []incident.Incident {
	t.Helper()
	all, err := w.store.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []incident.Incident
	for _, inc := range all {
		if inc.KeyARN == keyARN {
			out = append(out, inc)
		}
	}
	return out
}

func run(t *testing.T, r *Reconciler) Report {
	t.Helper()
	rep, err := r.Run(context.Background())
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	for _, o := range rep.Outcomes {
		if o.Action == ActionFailed {
			t.Errorf("run outcome: %+v", o)
		}
	}
	if rep.Calls == 0 {
		t.Errorf("report counts no AWS calls: every run lists RDS at least")
	}
	return rep
}

func countKind(inc incident.Incident, kind incident.Kind) int {
	n := 0
	for _, e := range inc.Timeline {
		if e.Kind == kind {
			n++
		}
	}
	return n
}

// announced is a fake Announcer that records the incidents it was given.
type announced struct {
	mu  sync.Mutex
	got []string
}

func (a *announced) Announce(_ context.Context, inc incident.Incident) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.got = append(a.got, inc.ID)
	return nil
}

func (a *announced) ids() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.got)
}

// TestBackstopFindsKeyDisabledWithoutEvent: the key is disabled and no event is delivered;
// the next run opens the incident.
func TestBackstopFindsKeyDisabledWithoutEvent(t *testing.T) {
	w := newWorld(t)
	keyID, keyARN := w.key(t)
	c := w.cluster(t, keyID)
	w.disable(t, keyID)
	// A disabled key nothing Aurora uses is not an incident.
	unusedID, unusedARN := w.key(t)
	w.disable(t, unusedID)

	ann := &announced{}
	rep := run(t, w.reconciler(func(d *Deps) { d.Announcer = ann }))
	incs := w.forKey(t, keyARN)
	if len(incs) != 1 {
		t.Fatalf("got %d incidents for the key, want 1 (report %+v)", len(incs), rep)
	}
	inc := incs[0]
	// intake returns what it opened; the reconciler announces it.
	if !slices.Contains(ann.ids(), inc.ID) {
		t.Errorf("announced %v, want the opened incident %s among them", ann.ids(), inc.ID)
	}
	if inc.Trigger != TriggerBackstop || !strings.Contains(inc.TriggerDetail, "found by reconciliation") || inc.KeyState != "Disabled" {
		t.Errorf("got trigger %q (%q), key %s; want %s, found by reconciliation, Disabled", inc.Trigger, inc.TriggerDetail, inc.KeyState, TriggerBackstop)
	}
	if len(inc.Clusters) != 1 || inc.Clusters[0].Identifier != c || inc.Deadline == nil {
		t.Errorf("got clusters %+v, deadline %v; want %s with a deadline", inc.Clusters, inc.Deadline, c)
	}
	if n := len(w.forKey(t, unusedARN)); n != 0 {
		t.Errorf("got %d incidents for a disabled key without Aurora dependents, want 0", n)
	}

	// The next run finds the incident open and opens nothing more.
	run(t, w.reconciler(nil))
	if n := len(w.forKey(t, keyARN)); n != 1 {
		t.Errorf("after a second run: got %d incidents, want 1", n)
	}
}

// TestReminderOnceOverTwoRuns: the key event is 6 days 20 hours old, so 4 hours are left: the
// 6 h reminder is posted once, mentioning the escalation target, and not again.
func TestReminderOnceOverTwoRuns(t *testing.T) {
	w := newWorld(t)
	keyID, keyARN := w.key(t)
	w.cluster(t, keyID)
	w.disable(t, keyID)
	inc := w.open(t, keyARN, time.Now().Add(-(6*24*time.Hour + 20*time.Hour)))

	for range 2 {
		run(t, w.reconciler(nil))
	}
	got := w.replies.of(inc.ID)
	if len(got) != 1 {
		t.Fatalf("got %d reminders %q, want 1", len(got), got)
	}
	if !strings.Contains(got[0], "Less than 6h left") || !strings.HasPrefix(got[0], "<!subteam^S0ONCALL>") {
		t.Errorf("got reminder %q, want the 6h reminder with the mention", got[0])
	}
	after := w.get(t, inc.ID)
	if n := countKind(after, incident.KindReminder); n != 1 {
		t.Errorf("got %d reminder entries on the timeline, want 1", n)
	}
	if e, _ := after.LastEntry(incident.KindReminder); e.ID != ReminderEntryID(inc.ID, 6*time.Hour) {
		t.Errorf("got reminder entry ID %q, want %q", e.ID, ReminderEntryID(inc.ID, 6*time.Hour))
	}
	if after.State != incident.StateOpen {
		t.Errorf("got state %s, want open", after.State)
	}
}

// TestReminderRacingRuns: two runs at the same time post the reminder once.
func TestReminderRacingRuns(t *testing.T) {
	w := newWorld(t)
	keyID, keyARN := w.key(t)
	w.cluster(t, keyID)
	w.disable(t, keyID)
	inc := w.open(t, keyARN, time.Now().Add(-(6*24*time.Hour + 20*time.Hour)))

	var wg sync.WaitGroup
	for range 2 {
		r := w.reconciler(nil)
		wg.Go(func() {
			if _, err := r.Run(context.Background()); err != nil {
				t.Errorf("run: %v", err)
			}
		})
	}
	wg.Wait()
	if got := w.replies.of(inc.ID); len(got) != 1 {
		t.Errorf("got %d reminders from two racing runs, want 1: %q", len(got), got)
	}
}

// TestFixedByHandResolves: someone re-enables the key and starts the cluster; the next run
// resolves the incident.
func TestFixedByHandResolves(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	keyID, keyARN := w.key(t)
	c := w.cluster(t, keyID)
	w.disable(t, keyID)
	inc := w.open(t, keyARN, time.Now().Add(-time.Hour))
	if _, err := w.rds.StopDBCluster(ctx, &rds.StopDBClusterInput{DBClusterIdentifier: &c}); err != nil {
		t.Fatal(err)
	}
	run(t, w.reconciler(nil))
	if got := w.get(t, inc.ID); got.State != incident.StateOpen || got.Clusters[0].Status != "stopped" {
		t.Fatalf("got state %s, cluster %s; want open, stopped", got.State, got.Clusters[0].Status)
	}

	if _, err := w.kms.EnableKey(ctx, &kms.EnableKeyInput{KeyId: &keyID}); err != nil {
		t.Fatal(err)
	}
	// Key enabled, cluster still stopped: not yet.
	run(t, w.reconciler(nil))
	if got := w.get(t, inc.ID); got.State != incident.StateOpen || got.KeyState != "Enabled" {
		t.Fatalf("got state %s, key %s; want open with the key Enabled", got.State, got.KeyState)
	}
	if _, err := w.rds.StartDBCluster(ctx, &rds.StartDBClusterInput{DBClusterIdentifier: &c}); err != nil {
		t.Fatal(err)
	}
	rep := run(t, w.reconciler(nil))
	got := w.get(t, inc.ID)
	if got.State != incident.StateResolved || got.ClosedAt == nil || !got.Clusters[0].Recovered {
		t.Fatalf("got state %s, closed %v, recovered %v (report %+v); want resolved", got.State, got.ClosedAt, got.Clusters[0].Recovered, rep)
	}
	last, ok := got.LastEntry(incident.KindState)
	if !ok || last.Result != incident.Result(incident.StateResolved) || !strings.Contains(last.Detail, "every dependent cluster is available") {
		t.Errorf("got last state entry %+v, want the resolution, saying why", last)
	}
	// Closed: no more reminders, no more changes.
	run(t, w.reconciler(nil))
	if again := w.get(t, inc.ID); again.Version != got.Version {
		t.Errorf("a run changed a resolved incident: version %d → %d", got.Version, again.Version)
	}
}

// TestBudgetStopsCleanly: a run out of calls stops before doing anything half-way and says so.
func TestBudgetStopsCleanly(t *testing.T) {
	w := newWorld(t)
	keyID, keyARN := w.key(t)
	w.cluster(t, keyID)
	w.disable(t, keyID)
	inc := w.open(t, keyARN, time.Now().Add(-time.Hour))
	r := w.reconciler(nil)
	r.o.MaxCalls = 1 // not even the cluster listing and the instance listing
	rep, err := r.Run(context.Background())
	if err != nil || rep.Incomplete == "" {
		t.Fatalf("got %+v, %v; want an incomplete run without error", rep, err)
	}
	if got := w.get(t, inc.ID); got.Version != inc.Version {
		t.Errorf("an incomplete run changed the incident: version %d → %d", inc.Version, got.Version)
	}
}

// failingReplier fails every reply, as Slack down would.
type failingReplier struct{ calls int }

func (f *failingReplier) Reply(context.Context, incident.Incident, string) error {
	f.calls++
	return errors.New("slack: service unavailable")
}

// TestReminderRetriedAfterSlackFails: a reminder whose reply fails gives its claim back and
// writes no timeline entry, so the next run posts it.
func TestReminderRetriedAfterSlackFails(t *testing.T) {
	w := newWorld(t)
	keyID, keyARN := w.key(t)
	w.cluster(t, keyID)
	w.disable(t, keyID)
	inc := w.open(t, keyARN, time.Now().Add(-(6*24*time.Hour + 20*time.Hour)))

	failing := &failingReplier{}
	rep, err := w.reconciler(func(d *Deps) { d.Replier = failing }).Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var failed bool
	for _, o := range rep.Outcomes {
		if o.IncidentID == inc.ID && o.Action == ActionFailed && strings.Contains(o.Reason, "retried next run") {
			failed = true
		}
	}
	if failing.calls != 1 || !failed || rep.Reminders != 0 {
		t.Fatalf("got %d replies, outcomes %+v; want one failed reminder", failing.calls, rep.Outcomes)
	}
	if n := countKind(w.get(t, inc.ID), incident.KindReminder); n != 0 {
		t.Errorf("got %d reminder entries after a failed reply, want 0", n)
	}

	run(t, w.reconciler(nil))
	if got := w.replies.of(inc.ID); len(got) != 1 || !strings.Contains(got[0], "Less than 6h left") {
		t.Errorf("got replies %q on the next run, want the 6h reminder", got)
	}
	if n := countKind(w.get(t, inc.ID), incident.KindReminder); n != 1 {
		t.Errorf("got %d reminder entries, want 1", n)
	}
}

// TestNeedsLookupKMSDeletion: an incident opened by KMS's own deletion event names KMS as its
// actor, which is not who scheduled the deletion: event history is asked, and its answer
// replaces the service actor.
func TestNeedsLookupKMSDeletion(t *testing.T) {
	inc := incident.Incident{
		ID: "KW-1", State: incident.StateLost, Trigger: keyevent.DetailTypeCMKDeletion,
		Actor:  incident.Actor{Principal: "kms.amazonaws.com", Type: "AWSService", AccountID: "123456789012"},
		LostAt: time.Now().Add(-time.Hour),
	}
	if !needsLookup(inc) {
		t.Fatal("got needsLookup false for KMS's own deletion event, want true")
	}
	alice := incident.Actor{ARN: "arn:aws:iam::123456789012:user/alice", Type: "IAMUser"}
	fd := trail.Finding{EventName: "ScheduleKeyDeletion", EventID: "ev-1", At: time.Now().Add(-8 * 24 * time.Hour), Actor: alice}
	loss{found: &fd}.apply(&inc, time.Now())
	if inc.Actor != alice || needsLookup(inc) {
		t.Errorf("got actor %+v, needsLookup %v; want alice and no further look-up", inc.Actor, needsLookup(inc))
	}
	if person := (incident.Incident{Actor: alice}); needsLookup(person) {
		t.Error("got needsLookup true for an incident naming a person")
	}
}

// instanceInputs records the DescribeDBInstances requests made through it.
type instanceInputs struct {
	blast.RDSAPI
	mu     sync.Mutex
	inputs []*rds.DescribeDBInstancesInput
}

func (r *instanceInputs) DescribeDBInstances(ctx context.Context, in *rds.DescribeDBInstancesInput, o ...func(*rds.Options)) (*rds.DescribeDBInstancesOutput, error) {
	r.mu.Lock()
	r.inputs = append(r.inputs, in)
	r.mu.Unlock()
	return r.RDSAPI.DescribeDBInstances(ctx, in, o...)
}

// TestInventoryAsksForIncidentInstancesOnly: a run reads instance statuses through the
// db-cluster-id filter, for the clusters its incidents name, never by listing every instance of
// the account.
func TestInventoryAsksForIncidentInstancesOnly(t *testing.T) {
	w := newWorld(t)
	keyID, keyARN := w.key(t)
	cluster := w.cluster(t, keyID)
	if _, err := w.rds.CreateDBInstance(context.Background(), &rds.CreateDBInstanceInput{
		DBInstanceIdentifier: aws.String(cluster + "-1"), DBClusterIdentifier: aws.String(cluster),
		Engine: aws.String("aurora-postgresql"), DBInstanceClass: aws.String("db.r6g.large"),
	}); err != nil {
		t.Fatal(err)
	}
	w.disable(t, keyID)
	inc := w.open(t, keyARN, time.Now().Add(-time.Hour))
	if len(inc.Instances) != 1 {
		t.Fatalf("incident instances = %+v, want %s-1", inc.Instances, cluster)
	}

	rec := &instanceInputs{RDSAPI: w.rdsAPI}
	run(t, w.reconciler(func(d *Deps) { d.RDS = rec }))
	if len(rec.inputs) == 0 {
		t.Fatal("no DescribeDBInstances call: the incident's instance status was not read")
	}
	for _, in := range rec.inputs {
		if len(in.Filters) != 1 || aws.ToString(in.Filters[0].Name) != "db-cluster-id" || !slices.Contains(in.Filters[0].Values, cluster) {
			t.Errorf("DescribeDBInstances filters = %+v, want db-cluster-id with %s", in.Filters, cluster)
		}
	}
}
