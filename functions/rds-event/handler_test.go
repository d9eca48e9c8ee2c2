package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
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
	"github.com/keywarden/keywarden/internal/env"
	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/incident/dynamostore"
	"github.com/keywarden/keywarden/internal/intake"
	"github.com/keywarden/keywarden/internal/kmskey"
	"github.com/keywarden/keywarden/internal/lifecycle/rdstrack"
	"github.com/keywarden/keywarden/internal/startup"
)

func TestMain(m *testing.M) { awstest.Main(m) }

// The RDS samples in events/ describe cluster orders-aurora with instances orders-aurora-1 and
// orders-aurora-2; tests swap in a cluster of their own.
const sampleCluster = "orders-aurora"

// syncBuffer is a log sink the handler and the test share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// stack is the RDS-event path on moto: real KMS, RDS and DynamoDB APIs, the real store,
// intake and tracker, the handler under test.
type stack struct {
	kms     *kms.Client
	rds     *rds.Client
	store   *dynamostore.Store
	logs    *syncBuffer
	handler *handler
}

func newStack(t *testing.T) *stack {
	t.Helper()
	return newStackAt(t, awstest.Moto(t))
}

// newStackAt is newStack with every AWS call through endpoint (moto, or a proxy in front of it).
func newStackAt(t *testing.T, endpoint string) *stack {
	t.Helper()
	cfg := awstest.Serial(awstest.Config(t, endpoint))
	ddb := dynamodb.NewFromConfig(cfg)
	table := fmt.Sprintf("incidents-%d", rand.Int64())
	if err := dynamostore.CreateTable(context.Background(), ddb, table); err != nil {
		t.Fatal(err)
	}
	s := &stack{kms: kms.NewFromConfig(cfg), rds: rds.NewFromConfig(cfg), store: dynamostore.New(ddb, table), logs: &syncBuffer{}}
	keys := kmskey.NewResolver(s.kms)
	log := slog.New(slog.NewJSONHandler(s.logs, nil))
	// moto 5.2.1 has no DescribeDBClusterAutomatedBackups (aws-facts §8).
	opener := intake.New(keys, blast.New(s.rds, keys, blast.WithoutClusterAutomatedBackups()), s.store, log)
	s.handler = newHandler(rdstrack.NewTracker(s.rds, keys, s.store, opener), nil, log)
	return s
}

func (s *stack) key(t *testing.T) (id, arn string) {
	t.Helper()
	out, err := s.kms.CreateKey(context.Background(), &kms.CreateKeyInput{Description: aws.String(t.Name())})
	if err != nil {
		t.Fatal(err)
	}
	return *out.KeyMetadata.KeyId, *out.KeyMetadata.Arn
}

// cluster creates an encrypted Aurora cluster on keyID with instances <id>-1 and <id>-2.
func (s *stack) cluster(t *testing.T, keyID string) string {
	t.Helper()
	ctx := context.Background()
	id := fmt.Sprintf("c-%d", rand.Int32())
	_, err := s.rds.CreateDBCluster(ctx, &rds.CreateDBClusterInput{
		DBClusterIdentifier: aws.String(id), Engine: aws.String("aurora-postgresql"), StorageEncrypted: aws.Bool(true),
		KmsKeyId: aws.String(keyID), MasterUsername: aws.String("admin"), MasterUserPassword: aws.String("not-a-secret-1"),
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"-1", "-2"} {
		_, err := s.rds.CreateDBInstance(ctx, &rds.CreateDBInstanceInput{
			DBInstanceIdentifier: aws.String(id + n), DBClusterIdentifier: aws.String(id),
			Engine: aws.String("aurora-postgresql"), DBInstanceClass: aws.String("db.r6g.large"),
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return id
}

// sample reads events/<name> with the sample cluster renamed to cluster (its instances follow).
func sample(t *testing.T, name, cluster string) json.RawMessage {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "events", name))
	if err != nil {
		t.Fatal(err)
	}
	return json.RawMessage(strings.ReplaceAll(string(b), sampleCluster, cluster))
}

// sampleTime is the detail.Date of a sample.
func sampleTime(t *testing.T, raw json.RawMessage) time.Time {
	t.Helper()
	var ev struct {
		Detail struct{ Date time.Time }
	}
	if err := json.Unmarshal(raw, &ev); err != nil {
		t.Fatal(err)
	}
	return ev.Detail.Date
}

// withoutARN drops SourceArn and resources, so only SourceIdentifier names the resource, and
// sets SourceIdentifier to id (with or without the "rds:" prefix).
func withoutARN(t *testing.T, raw json.RawMessage, id string) json.RawMessage {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	delete(m, "resources")
	d := m["detail"].(map[string]any)
	delete(d, "SourceArn")
	d["SourceIdentifier"] = id
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (s *stack) handle(t *testing.T, raw json.RawMessage) Result {
	t.Helper()
	res, err := s.handler.Handle(context.Background(), raw)
	if err != nil {
		t.Fatalf("handle: %v", err)
	}
	return res
}

func action(res Result) rdstrack.Action {
	if res.Outcome == nil {
		return ""
	}
	return res.Outcome.Action
}

func (s *stack) incident(t *testing.T, keyARN string) incident.Incident {
	t.Helper()
	incs, err := s.store.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var found []incident.Incident
	for _, inc := range incs {
		if inc.KeyARN == keyARN {
			found = append(found, inc)
		}
	}
	if len(found) != 1 {
		t.Fatalf("got %d incidents for %s, want 1", len(found), keyARN)
	}
	return found[0]
}

func instance(inc incident.Incident, id string) incident.Instance {
	for _, in := range inc.Instances {
		if in.Identifier == id {
			return in
		}
	}
	return incident.Instance{}
}

// TestLifecycle drives one cluster through every RDS event shape keywarden handles, in an order
// with duplicates and out-of-order deliveries, from a lost CloudTrail event to an automatic
// resolution.
func TestLifecycle(t *testing.T) {
	s := newStack(t)
	ctx := context.Background()
	keyID, keyARN := s.key(t)
	c := s.cluster(t, keyID)
	if _, err := s.kms.DisableKey(ctx, &kms.DisableKeyInput{KeyId: &keyID}); err != nil {
		t.Fatal(err)
	}

	// A stop before anything is tracked: not keywarden's business.
	if res := s.handle(t, sample(t, "rds-cluster-stopped-0150.json", c)); action(res) != rdstrack.ActionIgnored {
		t.Fatalf("0150 with no incident: got %+v, want ignored", res.Outcome)
	}

	// 0418 with no incident open: the DisableKey event was lost, RDS opens the incident.
	lost := sample(t, "rds-instance-key-access-lost-0418.json", c)
	if res := s.handle(t, lost); action(res) != rdstrack.ActionOpened || res.Outcome.KeyARN != keyARN || res.Outcome.Cluster != c {
		t.Fatalf("0418: got %+v, want opened for %s on %s", res.Outcome, keyARN, c)
	}
	inc := s.incident(t, keyARN)
	at := sampleTime(t, lost)
	if inc.Trigger != "RDS-EVENT-0418" || !strings.Contains(inc.TriggerDetail, "CloudTrail event that made the key unusable was not received") {
		t.Errorf("got trigger %q (%q), want RDS-EVENT-0418 saying the CloudTrail event was not received", inc.Trigger, inc.TriggerDetail)
	}
	if got := inc.Clusters[0].LostAccessAt; got == nil || !got.Equal(at) {
		t.Errorf("got window start %v, want the event's %v", got, at)
	}
	if !instance(inc, c+"-1").LostKeyAccess {
		t.Errorf("got %s LostKeyAccess false, want true", c+"-1")
	}

	// The other instance, from a captured-style event without the rds: prefix.
	if res := s.handle(t, sample(t, "rds-instance-key-access-lost-0418-no-prefix.json", c)); action(res) != rdstrack.ActionUpdated {
		t.Errorf("0418 without prefix: got %+v, want updated", res.Outcome)
	}
	// 0419 after 0418: nothing new; the 0418 again, now older than the 0419 applied for the
	// instance: stale. The window stays at the earliest.
	for name, want := range map[string]rdstrack.Action{"rds-instance-key-access-lost-0419.json": rdstrack.ActionUnchanged, "rds-instance-key-access-lost-0418.json": rdstrack.ActionStale} {
		if name == "rds-instance-key-access-lost-0418.json" {
			if res := s.handle(t, sample(t, "rds-instance-key-access-lost-0419.json", c)); action(res) != rdstrack.ActionUnchanged {
				t.Errorf("0419: got %+v, want unchanged", res.Outcome)
			}
		}
		if res := s.handle(t, sample(t, name, c)); action(res) != want {
			t.Errorf("%s: got %+v, want %s", name, res.Outcome, want)
		}
	}
	inc = s.incident(t, keyARN)
	if !instance(inc, c+"-2").LostKeyAccess || inc.Deliveries != 1 || !inc.Clusters[0].LostAccessAt.Equal(at) {
		t.Errorf("got %s LostKeyAccess %v, deliveries %d, start %v; want true, 1, %v",
			c+"-2", instance(inc, c+"-2").LostKeyAccess, inc.Deliveries, inc.Clusters[0].LostAccessAt, at)
	}

	// The cluster stops (moto's stand-in for inaccessible-encryption-credentials-recoverable).
	if _, err := s.rds.StopDBCluster(ctx, &rds.StopDBClusterInput{DBClusterIdentifier: &c}); err != nil {
		t.Fatal(err)
	}
	if res := s.handle(t, sample(t, "rds-cluster-stopped-0150.json", c)); action(res) != rdstrack.ActionUpdated {
		t.Errorf("0150: got %+v, want updated", res.Outcome)
	}
	if res := s.handle(t, sample(t, "rds-instance-stopped-0087.json", c)); action(res) == rdstrack.ActionIgnored {
		t.Errorf("0087: got %+v, want handled", res.Outcome)
	}
	if got := s.incident(t, keyARN).Clusters[0].Status; got != "stopped" {
		t.Errorf("got cluster status %q, want stopped", got)
	}

	// Someone starts the cluster by hand while the key is still disabled (moto lets them).
	if _, err := s.rds.StartDBCluster(ctx, &rds.StartDBClusterInput{DBClusterIdentifier: &c}); err != nil {
		t.Fatal(err)
	}
	if res := s.handle(t, sample(t, "rds-cluster-started-0151.json", c)); action(res) != rdstrack.ActionUpdated {
		t.Errorf("0151 with the key disabled: got %+v, want updated (not resolved)", res.Outcome)
	}
	// A late duplicate 0150 must not mark the running cluster stopped: live status wins.
	if res := s.handle(t, sample(t, "rds-cluster-stopped-0150.json", c)); action(res) != rdstrack.ActionUnchanged {
		t.Errorf("late 0150: got %+v, want unchanged", res.Outcome)
	}
	if got := s.incident(t, keyARN).Clusters[0].Status; got == "stopped" {
		t.Errorf("a late 0150 marked the started cluster %s", got)
	}

	// Then enables the key; RDS reports access back, and that resolves the incident.
	if _, err := s.kms.EnableKey(ctx, &kms.EnableKeyInput{KeyId: &keyID}); err != nil {
		t.Fatal(err)
	}
	// Instance -1 reports access back; -2 lost it too (0418 above) and has not: the incident
	// stays open, since an instance still without the key needs RebootDBInstance.
	restored := sample(t, "rds-instance-key-access-restored-0420.json", c)
	if res := s.handle(t, restored); action(res) == rdstrack.ActionResolved {
		t.Fatalf("after 0420 for %s-1 only: got %+v, want still open", c, res.Outcome)
	}
	res := s.handle(t, json.RawMessage(strings.ReplaceAll(string(restored), c+"-1", c+"-2")))
	inc = s.incident(t, keyARN)
	if action(res) != rdstrack.ActionResolved || inc.State != incident.StateResolved {
		t.Fatalf("after 0420 for both instances: got %+v, state %s; want resolved", res.Outcome, inc.State)
	}
	if last, ok := inc.LastEntry(incident.KindState); !ok || last.Result != incident.Result(incident.StateResolved) || last.Source != "" {
		t.Errorf("got last state entry %+v, want the resolution", last)
	}
	// Each RDS event that changed something is on the timeline once, by its EventBridge ID.
	ids := map[string]int{}
	for _, e := range inc.Timeline {
		if e.Kind == incident.KindRDSEvent {
			ids[e.ID]++
		}
	}
	for id, n := range ids {
		if n != 1 {
			t.Errorf("RDS event entry %s recorded %d times, want once", id, n)
		}
	}
	if instance(inc, c+"-1").LostKeyAccess {
		t.Errorf("got %s LostKeyAccess after 0420, want false", c+"-1")
	}
	// Once resolved, late started events change nothing and open nothing.
	for _, name := range []string{"rds-instance-started-0088.json", "rds-cluster-started-0151.json"} {
		if res := s.handle(t, sample(t, name, c)); action(res) != rdstrack.ActionIgnored {
			t.Errorf("%s after resolution: got %+v, want ignored (no open incident)", name, res.Outcome)
		}
	}
}

// TestSourceIdentifierOnly covers events that name the resource only by SourceIdentifier, with
// and without the "rds:" prefix, for an instance and a cluster.
func TestSourceIdentifierOnly(t *testing.T) {
	s := newStack(t)
	ctx := context.Background()
	keyID, keyARN := s.key(t)
	c := s.cluster(t, keyID)
	if _, err := s.kms.DisableKey(ctx, &kms.DisableKeyInput{KeyId: &keyID}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		sample, id string
		want       rdstrack.Action
	}{
		{"rds-instance-key-access-lost-0418.json", "rds:" + c + "-1", rdstrack.ActionOpened},
		{"rds-instance-key-access-lost-0418-no-prefix.json", c + "-2", rdstrack.ActionUpdated},
		{"rds-cluster-stopped-0150.json", "rds:" + c, rdstrack.ActionUnchanged},
		{"rds-cluster-started-0151.json", c, rdstrack.ActionUnchanged},
	} {
		t.Run(tc.id, func(t *testing.T) {
			res := s.handle(t, withoutARN(t, sample(t, tc.sample, c), tc.id))
			if action(res) != tc.want || res.Outcome.KeyARN != keyARN {
				t.Errorf("got %+v, want %s for %s", res.Outcome, tc.want, keyARN)
			}
		})
	}
}

// TestUntrackedIgnoredAndLogged: events about clusters keywarden does not track are
// acknowledged (no error, no retry) and logged with the reason.
func TestUntrackedIgnoredAndLogged(t *testing.T) {
	s := newStack(t)
	keyID, _ := s.key(t) // enabled: nothing is wrong with it
	c := s.cluster(t, keyID)
	for _, tc := range []struct {
		name   string
		raw    json.RawMessage
		reason string
	}{
		{"cluster unknown to RDS", sample(t, "rds-cluster-started-0151.json", "no-such-cluster"), "unknown to RDS"},
		{"instance unknown to RDS", sample(t, "rds-instance-key-access-lost-0418.json", "no-such-cluster"), "unknown to RDS"},
		{"no incident for the key", sample(t, "rds-cluster-stopped-0150.json", c), "not tracked"},
		{"instance without incident", sample(t, "rds-instance-started-0088.json", c), "not tracked"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := s.handle(t, tc.raw)
			if action(res) != rdstrack.ActionIgnored || !strings.Contains(res.Outcome.Reason, tc.reason) {
				t.Errorf("got %+v, want ignored because %q", res.Outcome, tc.reason)
			}
			if logs := s.logs.String(); !strings.Contains(logs, `"action":"ignored"`) || !strings.Contains(logs, tc.reason) {
				t.Errorf("got logs %s, want an ignored line with the reason", logs)
			}
		})
	}
	// Not one of keywarden's event IDs: rejected, acknowledged, logged.
	res := s.handle(t, sample(t, "rds-cluster-patched-0173.json", c))
	if res.Rejected == "" || !strings.Contains(s.logs.String(), `"action":"rejected"`) {
		t.Errorf("0173: got %+v, want rejected and logged", res)
	}
	incs, err := s.store.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, inc := range incs {
		if strings.Contains(inc.KeyARN, keyID) {
			t.Errorf("got incident %s for an enabled key", inc.ID)
		}
	}
}

// TestKeyAccessLostWithEnabledKeyOpens: a cluster that reports it cannot use its key is a loss
// even while KMS calls the key Enabled (a policy or grant may shut Aurora out): issue 4 wants an
// incident for it.
func TestKeyAccessLostWithEnabledKeyOpens(t *testing.T) {
	s := newStack(t)
	keyID, keyARN := s.key(t)
	c := s.cluster(t, keyID)
	res := s.handle(t, sample(t, "rds-instance-key-access-lost-0419.json", c))
	if action(res) != rdstrack.ActionOpened {
		t.Fatalf("got %+v, want an incident opened", res.Outcome)
	}
	if inc := s.incident(t, keyARN); inc.KeyState != incident.KeyStateEnabled || inc.Trigger != "RDS-EVENT-0419" {
		t.Errorf("got key %s trigger %s, want Enabled and RDS-EVENT-0419", inc.KeyState, inc.Trigger)
	}
}

// TestMalformedAcknowledged: bytes that are not an RDS event are logged and acknowledged.
func TestMalformedAcknowledged(t *testing.T) {
	logs := &syncBuffer{}
	h := newHandler(nil, nil, slog.New(slog.NewJSONHandler(logs, nil)))
	for _, raw := range []string{`{`, `{"source":"aws.rds","detail-type":"RDS DB Instance Event","id":"x"}`, `{"source":"aws.kms","detail-type":"KMS CMK Deletion"}`} {
		res, err := h.Handle(context.Background(), json.RawMessage(raw))
		if err != nil || res.Rejected == "" {
			t.Errorf("%s: got %+v, %v; want rejected without error", raw, res, err)
		}
	}
}

func TestSettings(t *testing.T) {
	for _, tc := range []struct {
		env     map[string]string
		want    startup.Settings
		wantErr string
	}{
		{map[string]string{"INCIDENTS_TABLE": "t"}, startup.Settings{Table: "t", LogLevel: "info"}, ""},
		{map[string]string{"INCIDENTS_TABLE": "t", "SKIP_CLUSTER_AUTOMATED_BACKUPS": "true", "LOG_LEVEL": "debug"},
			startup.Settings{Table: "t", LogLevel: "debug", SkipClusterAutomatedBackups: true}, ""},
		{map[string]string{"SKIP_CLUSTER_AUTOMATED_BACKUPS": "yes"}, startup.Settings{}, "INCIDENTS_TABLE is required"},
	} {
		got, _, err := loadSettings(env.FromMap(tc.env), func(k string) string { return tc.env[k] })
		switch {
		case tc.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "SKIP_CLUSTER_AUTOMATED_BACKUPS") {
				t.Errorf("%v: got error %v, want both problems", tc.env, err)
			}
		case err != nil:
			t.Errorf("%v: %v", tc.env, err)
		case got.Table != tc.want.Table || got.LogLevel != tc.want.LogLevel || got.SkipClusterAutomatedBackups != tc.want.SkipClusterAutomatedBackups:
			t.Errorf("got %+v, want %+v", got, tc.want)
		}
	}
}

// TestStopBeforeLossIsTheOwners: RDS-EVENT-0150 dated before the loss, however late it is
// delivered, says the owner stopped the cluster: remediation will leave it stopped (issue 11).
// One dated after the loss says nothing of the kind. Cluster a reports the loss (and opens the
// incident); cluster b, on the same key, is the one stopped.
func TestStopBeforeLossIsTheOwners(t *testing.T) {
	for _, tc := range []struct {
		name  string
		shift time.Duration // the 0150's Date relative to the 0418 that opened the incident
		want  bool
	}{
		{"stopped an hour before the loss", -time.Hour, true},
		{"stopped an hour after the loss", time.Hour, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStack(t)
			ctx := context.Background()
			keyID, keyARN := s.key(t)
			a, b := s.cluster(t, keyID), s.cluster(t, keyID)
			if _, err := s.kms.DisableKey(ctx, &kms.DisableKeyInput{KeyId: &keyID}); err != nil {
				t.Fatal(err)
			}
			lost := sample(t, "rds-instance-key-access-lost-0418.json", a)
			if res := s.handle(t, lost); action(res) != rdstrack.ActionOpened {
				t.Fatalf("0418: got %+v, want opened", res.Outcome)
			}
			if _, err := s.rds.StopDBCluster(ctx, &rds.StopDBClusterInput{DBClusterIdentifier: &b}); err != nil {
				t.Fatal(err)
			}
			stop := sample(t, "rds-cluster-stopped-0150.json", b)
			var ev map[string]any
			if err := json.Unmarshal(stop, &ev); err != nil {
				t.Fatal(err)
			}
			ev["detail"].(map[string]any)["Date"] = sampleTime(t, lost).Add(tc.shift).Format(time.RFC3339Nano)
			stop, _ = json.Marshal(ev)
			s.handle(t, stop)
			inc := s.incident(t, keyARN)
			i := slices.IndexFunc(inc.Clusters, func(c incident.Cluster) bool { return c.Identifier == b })
			if i < 0 {
				t.Fatalf("cluster %s not on the incident: %+v", b, inc.Clusters)
			}
			if got := inc.Clusters[i].StoppedBeforeLoss; got != tc.want {
				t.Errorf("StoppedBeforeLoss = %v, want %v", got, tc.want)
			}
		})
	}
}

// heldKeys is the tracker's key reader, holding each DescribeKey until the handler has
// announced something (or 3 s have passed), and recording which came first.
type heldKeys struct {
	rdstrack.Keys
	announced   chan struct{}
	mu          sync.Mutex
	beforeFirst int // DescribeKey calls that found nothing announced yet
}

func (k *heldKeys) Describe(ctx context.Context, ref string) (kmskey.Key, error) {
	select {
	case <-k.announced:
	case <-time.After(3 * time.Second):
		k.mu.Lock()
		k.beforeFirst++
		k.mu.Unlock()
	}
	return k.Keys.Describe(ctx, ref)
}

// firstAnnouncer signals the first Announce.
type firstAnnouncer struct {
	once      sync.Once
	announced chan struct{}
	incidents []incident.Incident
}

func (a *firstAnnouncer) Announce(_ context.Context, inc incident.Incident) error {
	a.incidents = append(a.incidents, inc)
	a.once.Do(func() { close(a.announced) })
	return nil
}

// TestOpenedIncidentAnnouncedBeforeTheRest: an RDS event that opens an incident (the cluster
// reports the loss, no KMS event came) has it announced — Slack, and the page of a critical
// one — before the tracker reads the key and the other clusters, however slow those reads are.
func TestOpenedIncidentAnnouncedBeforeTheRest(t *testing.T) {
	s := newStack(t)
	keyID, keyARN := s.key(t)
	c := s.cluster(t, keyID)
	resolver := kmskey.NewResolver(s.kms)
	held := &heldKeys{Keys: resolver, announced: make(chan struct{})}
	a := &firstAnnouncer{announced: held.announced}
	log := slog.New(slog.NewJSONHandler(s.logs, nil))
	opener := intake.New(resolver, blast.New(s.rds, resolver, blast.WithoutClusterAutomatedBackups()), s.store, log)
	h := newHandler(rdstrack.NewTracker(s.rds, held, s.store, opener), a, log)

	res, err := h.Handle(context.Background(), sample(t, "rds-instance-key-access-lost-0419.json", c))
	if err != nil {
		t.Fatal(err)
	}
	if action(res) != rdstrack.ActionOpened {
		t.Fatalf("got %+v, want an incident opened", res.Outcome)
	}
	if held.beforeFirst != 0 {
		t.Errorf("the tracker read the key %d time(s) before the opened incident was announced", held.beforeFirst)
	}
	if len(a.incidents) < 2 || a.incidents[0].KeyARN != keyARN {
		t.Fatalf("announced %d incidents, want the opened one, then it as the event left it", len(a.incidents))
	}
	if first, last := a.incidents[0], a.incidents[len(a.incidents)-1]; first.Version >= last.Version {
		t.Errorf("announced versions %d then %d, want the opened incident first", first.Version, last.Version)
	}
}
