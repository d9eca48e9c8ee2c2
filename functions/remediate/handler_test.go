package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	kmstypes "github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/aws-sdk-go-v2/service/rds"
	rdstypes "github.com/aws/aws-sdk-go-v2/service/rds/types"
	"github.com/aws/smithy-go"
	"github.com/slack-go/slack"

	"github.com/keywarden/keywarden/internal/awstest"
	"github.com/keywarden/keywarden/internal/env"
	"github.com/keywarden/keywarden/internal/handoff"
	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/incident/dynamostore"
	"github.com/keywarden/keywarden/internal/remedy"
	"github.com/keywarden/keywarden/internal/slackmessage"
	"github.com/keywarden/keywarden/internal/slacktest"
)

func TestMain(m *testing.M) { awstest.Main(m) }

var (
	_ runner    = (*remedy.Runner)(nil)
	_ incidents = (*dynamostore.Store)(nil)
	_ announcer = (*slackmessage.Announcer)(nil)
)

const botToken = "xoxb-test-bot-token"

// crashingRDS passes calls to moto and counts the writes; crashAfter, when set, makes the
// StartDBCluster of that cluster succeed at RDS and then fail as if the function died before it
// could record the result (the invocation timing out).
//
// refuse, when set, makes StartDBCluster of that cluster fail for good without reaching RDS;
// unreachable makes StartDBCluster of every cluster answer KMSKeyNotAccessibleFault that many
// times first, as RDS may while KMS propagates a key it just enabled.
type crashingRDS struct {
	remedy.RDSAPI
	mu          sync.Mutex
	starts      map[string]int
	crashAfter  string
	refuse      string
	unreachable int
}

func (c *crashingRDS) StartDBCluster(ctx context.Context, in *rds.StartDBClusterInput, o ...func(*rds.Options)) (*rds.StartDBClusterOutput, error) {
	id := aws.ToString(in.DBClusterIdentifier)
	c.mu.Lock()
	switch {
	case id == c.refuse:
		c.mu.Unlock()
		return nil, &smithy.GenericAPIError{Code: "AccessDenied", Message: "not authorized to perform rds:StartDBCluster", Fault: smithy.FaultClient}
	case c.unreachable > 0:
		c.unreachable--
		c.mu.Unlock()
		return nil, &rdstypes.KMSKeyNotAccessibleFault{Message: aws.String("The specified KMS key is not accessible")}
	}
	c.mu.Unlock()
	out, err := c.RDSAPI.StartDBCluster(ctx, in, o...)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.starts[id]++
	if err == nil && id == c.crashAfter {
		c.crashAfter = ""
		return nil, fmt.Errorf("simulated crash after StartDBCluster %s: %w", id, context.DeadlineExceeded)
	}
	return out, err
}

type countingKMS struct {
	remedy.KMSAPI
	mu    sync.Mutex
	calls map[string]int
}

func (c *countingKMS) CancelKeyDeletion(ctx context.Context, in *kms.CancelKeyDeletionInput, o ...func(*kms.Options)) (*kms.CancelKeyDeletionOutput, error) {
	c.mu.Lock()
	c.calls["CancelKeyDeletion"]++
	c.mu.Unlock()
	return c.KMSAPI.CancelKeyDeletion(ctx, in, o...)
}

func (c *countingKMS) EnableKey(ctx context.Context, in *kms.EnableKeyInput, o ...func(*kms.Options)) (*kms.EnableKeyOutput, error) {
	c.mu.Lock()
	c.calls["EnableKey"]++
	c.mu.Unlock()
	return c.KMSAPI.EnableKey(ctx, in, o...)
}

type rig struct {
	kms   *kms.Client
	rds   *rds.Client
	store *dynamostore.Store
	slack *slacktest.Slack
	ckms  *countingKMS
	crds  *crashingRDS
	h     *handler
}

func newRig(t *testing.T, allowed []string) *rig {
	t.Helper()
	return newRigAt(t, allowed, awstest.Moto(t))
}

// newRigAt is newRig with every AWS call through endpoint (moto, or a fault proxy in front of it).
func newRigAt(t *testing.T, allowed []string, endpoint string) *rig {
	t.Helper()
	cfg := awstest.Serial(awstest.Config(t, endpoint))
	db := dynamodb.NewFromConfig(cfg)
	table := fmt.Sprintf("remediate-%d", rand.Int64())
	if err := dynamostore.CreateTable(context.Background(), db, table); err != nil {
		t.Fatal(err)
	}
	r := &rig{kms: kms.NewFromConfig(cfg), rds: rds.NewFromConfig(cfg), store: dynamostore.New(db, table)}
	r.slack = slacktest.Start(t, &slacktest.Slack{Token: botToken})
	r.ckms = &countingKMS{KMSAPI: r.kms, calls: map[string]int{}}
	r.crds = &crashingRDS{RDSAPI: r.rds, starts: map[string]int{}}
	client := slack.New(botToken, slack.OptionAPIURL(r.slack.APIURL()))
	r.h = &handler{
		runner: remedy.New(r.ckms, r.crds, r.store, remedy.Options{WaitTimeout: 10 * time.Second, KeyAccessTimeout: 2 * time.Second,
			AllowedKeys: allowedKeys(allowed)}),
		store:           r.store,
		announcer:       slackmessage.New(r.store, slackmessage.NewClient(client, "#keywarden"), nil, nil),
		log:             slog.New(slog.NewJSONHandler(io.Discard, nil)),
		announceTimeout: 5 * time.Second,
	}
	return r
}

// incident is a key made unusable by breakKey, two stopped clusters and one running, and the
// incident as SlackActionFunction leaves it after an approved click: remediating under run-1.
func (r *rig) incident(t *testing.T, breakKey func(keyID string) error) (inc incident.Incident, keyID string, stopped []string) {
	t.Helper()
	ctx := context.Background()
	key, err := r.kms.CreateKey(ctx, &kms.CreateKeyInput{Description: aws.String(t.Name())})
	if err != nil {
		t.Fatal(err)
	}
	keyID, keyARN := aws.ToString(key.KeyMetadata.KeyId), aws.ToString(key.KeyMetadata.Arn)
	n := rand.Int32()
	stopped = []string{fmt.Sprintf("orders-%d", n), fmt.Sprintf("billing-%d", n)}
	running := fmt.Sprintf("reports-%d", n)
	var clusters []incident.Cluster
	for _, id := range append(clone(stopped), running) {
		_, err := r.rds.CreateDBCluster(ctx, &rds.CreateDBClusterInput{
			DBClusterIdentifier: aws.String(id), Engine: aws.String("aurora-mysql"), StorageEncrypted: aws.Bool(true),
			KmsKeyId: aws.String(keyARN), MasterUsername: aws.String("admin"), MasterUserPassword: aws.String("not-a-secret-1"),
		})
		if err != nil {
			t.Fatal(err)
		}
		status := "available"
		if id != running {
			if _, err := r.rds.StopDBCluster(ctx, &rds.StopDBClusterInput{DBClusterIdentifier: aws.String(id)}); err != nil {
				t.Fatal(err)
			}
			status = "stopped"
		}
		clusters = append(clusters, incident.Cluster{Identifier: id, Engine: "aurora-mysql", Status: incident.ClusterStatus(status), CanStop: true})
	}
	if err := breakKey(keyID); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	inc, _, err = r.store.Open(ctx, incident.Incident{
		KeyARN: keyARN, KeyState: incident.KeyStateDisabled, Trigger: "DisableKey", LostAt: now, State: incident.StateOpen,
		Clusters: clusters,
	}, incident.Entry{Source: fmt.Sprintf("ev-%d", n), Actor: "alice", Detail: "DisableKey"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	inc, err = r.store.Update(ctx, inc.ID, func(i *incident.Incident) error {
		_, _, err := i.Approve("U0APPROVR1", i.Version, "click:1", now, 1, "run-1")
		return err
	})
	if err != nil || inc.State != incident.StateRemediating {
		t.Fatalf("approve: %v, state %s", err, inc.State)
	}
	return inc, keyID, stopped
}

func clone(s []string) []string { return append([]string(nil), s...) }

func (r *rig) disable(keyID string) error {
	_, err := r.kms.DisableKey(context.Background(), &kms.DisableKeyInput{KeyId: aws.String(keyID)})
	return err
}

func (r *rig) schedule(keyID string) error {
	_, err := r.kms.ScheduleKeyDeletion(context.Background(), &kms.ScheduleKeyDeletionInput{KeyId: aws.String(keyID), PendingWindowInDays: aws.Int32(7)})
	return err
}

func (r *rig) invoke(t *testing.T, payload string) (Result, error) {
	t.Helper()
	return r.h.Handle(context.Background(), json.RawMessage(payload))
}

func (r *rig) keyState(t *testing.T, keyID string) kmstypes.KeyState {
	t.Helper()
	out, err := r.kms.DescribeKey(context.Background(), &kms.DescribeKeyInput{KeyId: aws.String(keyID)})
	if err != nil {
		t.Fatal(err)
	}
	return out.KeyMetadata.KeyState
}

func (r *rig) clusterStatus(t *testing.T, id string) string {
	t.Helper()
	out, err := r.rds.DescribeDBClusters(context.Background(), &rds.DescribeDBClustersInput{DBClusterIdentifier: aws.String(id)})
	if err != nil {
		t.Fatal(err)
	}
	return aws.ToString(out.DBClusters[0].Status)
}

func payload(id string, approvedBy ...string) string {
	b, _ := json.Marshal(map[string]any{"incident_id": id, "run_id": "run-1", "approved_by": approvedBy})
	return string(b)
}

// recorded is the incident's recorded steps as "Kind target result: detail".
func recorded(inc incident.Incident) []string {
	var out []string
	for _, s := range inc.Remediation.Steps {
		out = append(out, fmt.Sprintf("%s %s %s: %s", s.Kind, s.Target, s.Result, s.Detail))
	}
	return out
}

// stepCount counts the recorded steps of kind on target with result.
func stepCount(inc incident.Incident, kind incident.StepKind, target string, result incident.Result) int {
	n := 0
	for _, s := range inc.Remediation.Steps {
		if s.Kind == kind && s.Target == target && s.Result == result {
			n++
		}
	}
	return n
}

func TestRemediates(t *testing.T) {
	r := newRig(t, nil)
	inc, keyID, stopped := r.incident(t, r.schedule)
	res, err := r.invoke(t, payload(inc.ID, "U0APPROVR1", "U0APPROVR2"))
	if err != nil {
		t.Fatalf("Handle: %v", err)
	}
	if st := r.keyState(t, keyID); st != kmstypes.KeyStateEnabled {
		t.Errorf("key: got %s, want Enabled", st)
	}
	for _, id := range stopped {
		if st := r.clusterStatus(t, id); st != "available" && st != "starting" {
			t.Errorf("cluster %s: got %s, want started", id, st)
		}
	}
	var results []string
	for _, s := range res.Steps {
		results = append(results, string(s.Name)+" "+string(s.Result))
	}
	want := []string{"CancelKeyDeletion ok", "EnableKey ok", "WaitEnabled ok", "StartDBCluster ok", "StartDBCluster ok"}
	if !equalPrefix(results, want) {
		t.Errorf("steps: got %q, want %q first", results, want)
	}
	if res.Error != "" || res.State != string(incident.StateRemediating) {
		t.Errorf("result: state %q, error %q", res.State, res.Error)
	}
	got, _ := r.store.Get(context.Background(), inc.ID)
	// A run that did everything leaves the incident remediating, the run done: the lifecycle
	// resolves it once the clusters read available.
	if got.State != incident.StateRemediating || got.Remediation.State != incident.RemediationDone || got.Remediation.RunID != "run-1" {
		t.Errorf("stored state %s, remediation %s of run %q; want remediating, done, run-1", got.State, got.Remediation.State, got.Remediation.RunID)
	}
	if last, _ := got.LastEntry(incident.KindRemediationStep); last.Source != "run-1" || last.Actor != incident.Keywarden {
		t.Errorf("last step entry: got %+v, want keywarden's, of run-1", last)
	}
	// The message was posted, with every entry in its thread.
	if got.Slack == nil || got.SlackPosted != got.TimelineSeq {
		t.Errorf("message %+v, entries posted up to %d of %d", got.Slack, got.SlackPosted, got.TimelineSeq)
	}
	// The JSON answer is what `make invoke` shows.
	js, _ := json.Marshal(res)
	if !strings.Contains(string(js), `"name":"EnableKey"`) {
		t.Errorf("result JSON: %s", js)
	}
}

func equalPrefix(got, want []string) bool {
	if len(got) < len(want) {
		return false
	}
	for i := range want {
		if got[i] != want[i] {
			return false
		}
	}
	return true
}

// TestResumesAfterCrash: the first run dies just after StartDBCluster of one cluster succeeded,
// before recording it (the invocation timing out); Lambda's retry runs again and finishes
// without repeating the key steps or that cluster's start.
func TestResumesAfterCrash(t *testing.T) {
	r := newRig(t, nil)
	inc, keyID, stopped := r.incident(t, r.disable)
	r.crds.crashAfter = stopped[0]

	_, err := r.invoke(t, payload(inc.ID, "U0APPROVR1"))
	if err == nil || !remedy.Retryable(err) {
		t.Fatalf("first run: got %v, want a retryable error so Lambda retries", err)
	}
	if _, err := r.invoke(t, payload(inc.ID, "U0APPROVR1")); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if st := r.keyState(t, keyID); st != kmstypes.KeyStateEnabled {
		t.Errorf("key: got %s, want Enabled", st)
	}
	for _, id := range stopped {
		if st := r.clusterStatus(t, id); st != "available" && st != "starting" {
			t.Errorf("cluster %s: got %s, want started", id, st)
		}
		if n := r.crds.starts[id]; n != 1 {
			t.Errorf("StartDBCluster %s: called %d times, want 1", id, n)
		}
	}
	if n := r.ckms.calls["EnableKey"]; n != 1 {
		t.Errorf("EnableKey: called %d times, want 1", n)
	}
	if n := r.ckms.calls["CancelKeyDeletion"]; n != 0 {
		t.Errorf("CancelKeyDeletion: called %d times, want 0 for a disabled key", n)
	}
	got, _ := r.store.Get(context.Background(), inc.ID)
	// The run's steps, recorded once each: the crashed attempt is not a step (the timeline says
	// where the run stopped), and the retry records how it found the cluster.
	for _, want := range []struct {
		kind   incident.StepKind
		target string
		result incident.Result
	}{
		{incident.StepEnableKey, inc.KeyARN, incident.ResultOK},
		{incident.StepStartDBCluster, stopped[0], incident.ResultSkipped},
		{incident.StepStartDBCluster, stopped[1], incident.ResultOK},
	} {
		if n := stepCount(got, want.kind, want.target, want.result); n != 1 {
			t.Errorf("%s %s %s recorded %d times, want once:\n%s", want.kind, want.target, want.result, n, strings.Join(recorded(got), "\n"))
		}
	}
	if got.Remediation.State != incident.RemediationDone {
		t.Errorf("remediation %s after the retry, want done", got.Remediation.State)
	}
}

func TestStopsAndReopens(t *testing.T) {
	r := newRig(t, []string{"arn:aws:kms:us-east-1:123456789012:key/some-other-key"})
	inc, keyID, _ := r.incident(t, r.disable)
	res, err := r.invoke(t, payload(inc.ID, "U0APPROVR1"))
	if err != nil {
		t.Fatalf("a key outside REMEDIATION_KEYS: got error %v, want it acknowledged", err)
	}
	if !strings.Contains(res.Error, "not allowed") || res.State != string(incident.StateOpen) {
		t.Errorf("result: state %q, error %q, want open and not allowed", res.State, res.Error)
	}
	if st := r.keyState(t, keyID); st != kmstypes.KeyStateDisabled {
		t.Errorf("key: got %s, want Disabled", st)
	}
	got, _ := r.store.Get(context.Background(), inc.ID)
	if e, _ := got.LastEntry(incident.KindState); got.State != incident.StateOpen || got.Remediation.State != incident.RemediationFailed ||
		e.Result != incident.Result(incident.StateOpen) {
		t.Errorf("incident: state %s, remediation %s, last state entry %+v; want given back", got.State, got.Remediation.State, e)
	}
}

// lastMessage is the incident message as last posted or updated (not a thread reply).
func (r *rig) lastMessage(t *testing.T) slacktest.Record {
	t.Helper()
	var last slacktest.Record
	for _, c := range r.slack.Calls("chat.postMessage", "chat.update") {
		if c.ThreadTS == "" {
			last = c
		}
	}
	if last.Method == "" {
		t.Fatal("no incident message posted")
	}
	return last
}

// A cluster whose start fails for good: the others are started, and the incident goes back to
// open, naming the cluster, so the remediate button returns instead of the incident sitting in
// remediating with no button.
func TestReopensWhenIncomplete(t *testing.T) {
	r := newRig(t, nil)
	inc, keyID, stopped := r.incident(t, r.disable)
	r.crds.refuse = stopped[0]
	res, err := r.invoke(t, payload(inc.ID, "U0APPROVR1"))
	if err != nil {
		t.Fatalf("Handle: got %v, want it acknowledged (a retry would change nothing)", err)
	}
	if res.State != string(incident.StateOpen) || !strings.Contains(res.Error, "incomplete") {
		t.Errorf("result: state %q, error %q, want open and incomplete", res.State, res.Error)
	}
	if st := r.keyState(t, keyID); st != kmstypes.KeyStateEnabled {
		t.Errorf("key: got %s, want Enabled", st)
	}
	if st := r.clusterStatus(t, stopped[1]); st != "available" && st != "starting" {
		t.Errorf("cluster %s: got %s, want started", stopped[1], st)
	}
	got, _ := r.store.Get(context.Background(), inc.ID)
	why := got.Remediation.Reason
	if got.State != incident.StateOpen || got.Remediation.State != incident.RemediationFailed ||
		!strings.Contains(why, "still need attention: "+stopped[0]+" (StartDBCluster failed: AccessDenied") || strings.Contains(why, stopped[1]) {
		t.Errorf("incident: state %s, remediation %s, reason %q; want given back, telling people about %s only", got.State, got.Remediation.State, why, stopped[0])
	}
	if n := stepCount(got, incident.StepStartDBCluster, stopped[0], incident.ResultFailed); n != 1 {
		t.Errorf("the failed start is recorded %d times, want once", n)
	}
	if msg := r.lastMessage(t); !strings.Contains(string(msg.Blocks), `"action_id":"remediate"`) {
		t.Errorf("message after the run has no remediate button: %s", msg.Blocks)
	}
}

// RDS may not reach a key KMS just enabled: the run retries within itself, and when that is
// not enough it asks Lambda for a retry, leaving the incident remediating meanwhile.
func TestKeyNotAccessibleIsRetried(t *testing.T) {
	t.Run("within the run", func(t *testing.T) {
		r := newRig(t, nil)
		inc, _, stopped := r.incident(t, r.disable)
		r.crds.unreachable = 2
		res, err := r.invoke(t, payload(inc.ID, "U0APPROVR1"))
		if err != nil || res.Error != "" || res.State != string(incident.StateRemediating) {
			t.Fatalf("Handle: %+v, %v; want remediating, no error", res, err)
		}
		for _, id := range stopped {
			if st := r.clusterStatus(t, id); st != "available" && st != "starting" {
				t.Errorf("cluster %s: got %s, want started", id, st)
			}
		}
	})
	t.Run("by Lambda", func(t *testing.T) {
		r := newRig(t, nil)
		inc, _, stopped := r.incident(t, r.disable)
		r.crds.unreachable = 1 << 30
		res, err := r.invoke(t, payload(inc.ID, "U0APPROVR1"))
		if err == nil || !remedy.Retryable(err) {
			t.Fatalf("first run: got %v, want a retryable error so Lambda retries", err)
		}
		got, _ := r.store.Get(context.Background(), inc.ID)
		if res.State != string(incident.StateRemediating) || got.State != incident.StateRemediating {
			t.Errorf("state %q / %s, want remediating while Lambda retries", res.State, got.State)
		}
		r.crds.unreachable = 0
		if res, err := r.invoke(t, payload(inc.ID, "U0APPROVR1")); err != nil || res.State != string(incident.StateRemediating) {
			t.Fatalf("retry: %+v, %v; want remediating, no error", res, err)
		}
		for _, id := range stopped {
			if st := r.clusterStatus(t, id); st != "available" && st != "starting" {
				t.Errorf("cluster %s: got %s, want started", id, st)
			}
		}
	})
}

func TestRejectsAndAcknowledges(t *testing.T) {
	r := newRig(t, nil)
	for name, p := range map[string]string{
		"not JSON":         `{`,
		"no incident":      `{"approved_by":["U0APPROVR1"]}`,
		"no approver":      `{"incident_id":"KW-1"}`,
		"approvers object": `{"incident_id":"KW-1","approved_by":{"a":1}}`,
	} {
		res, err := r.invoke(t, p)
		if err != nil || res.Rejected == "" {
			t.Errorf("%s: got %+v, %v, want rejected and no error", name, res, err)
		}
	}
	res, err := r.invoke(t, `{"incident_id":"KW-20261128-000000","approved_by":"U0APPROVR1"}`)
	if err != nil || res.Error == "" {
		t.Errorf("unknown incident: got %+v, %v, want acknowledged with the error", res, err)
	}

	// An open incident nobody approved: a hand invoke must not re-enable its key.
	open, _, _ := r.incident(t, r.disable)
	if _, err := r.store.Update(context.Background(), open.ID, func(i *incident.Incident) error {
		return i.GiveBack("test", time.Now())
	}); err != nil {
		t.Fatal(err)
	}
	res, err = r.invoke(t, payload(open.ID, "U0APPROVR1"))
	if err != nil || !strings.Contains(res.Error, "not approved") {
		t.Errorf("unapproved incident: got %+v, %v, want refused as not approved", res, err)
	}
	if n := r.ckms.calls["EnableKey"]; n != 0 {
		t.Errorf("EnableKey called %d times for an unapproved incident", n)
	}

	// A run that is not the incident's current one: given back and approved again since.
	stale, _, _ := r.incident(t, r.disable)
	if _, err := r.store.Update(context.Background(), stale.ID, func(i *incident.Incident) error {
		if err := i.GiveBack("test", time.Now()); err != nil {
			return err
		}
		_, _, err := i.Approve("U0APPROVR2", i.Version, "click:2", time.Now(), 1, "run-2")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	res, err = r.invoke(t, payload(stale.ID, "U0APPROVR1"))
	if err != nil || !strings.Contains(res.Error, "not approved") {
		t.Errorf("stale run: got %+v, %v, want refused as not approved", res, err)
	}
	if n := r.ckms.calls["EnableKey"]; n != 0 {
		t.Errorf("EnableKey called %d times for a stale run", n)
	}

	inc, _, _ := r.incident(t, r.disable)
	if _, err := r.store.Update(context.Background(), inc.ID, func(i *incident.Incident) error {
		return i.MarkLost(incident.Keywarden, "test", time.Now())
	}); err != nil {
		t.Fatal(err)
	}
	res, err = r.invoke(t, payload(inc.ID, "U0APPROVR1"))
	if err != nil || !strings.Contains(res.Error, "closed") {
		t.Errorf("closed incident: got %+v, %v, want acknowledged as closed", res, err)
	}
	if n := r.ckms.calls["EnableKey"]; n != 0 {
		t.Errorf("EnableKey called %d times for a closed incident", n)
	}
}

func TestApproversInput(t *testing.T) {
	for in, want := range map[string]string{
		`"U0A"`:            "U0A",
		`"U0A,U0B"`:        "U0A|U0B",
		`["U0A","U0B"]`:    "U0A|U0B",
		`"U0A, U0B "`:      "U0A|U0B",
		`[]`:               "",
		`"" `:              "",
		`["U0A", "U0A"]  `: "U0A|U0A",
	} {
		var a handoff.Approvers
		if err := json.Unmarshal([]byte(in), &a); err != nil {
			t.Errorf("%s: %v", in, err)
			continue
		}
		if got := strings.Join(a, "|"); got != want {
			t.Errorf("%s: got %q, want %q", in, got, want)
		}
	}
}

func TestLoadSettings(t *testing.T) {
	c, err := loadSettings(env.FromMap(map[string]string{
		"INCIDENTS_TABLE": "t", "SLACK_BOT_TOKEN": botToken, "SLACK_CHANNEL": "#k", "WAIT_TIMEOUT": "20s",
		"REMEDIATION_KEYS": "arn:aws:kms:us-east-1:123456789012:key/a, arn:aws:kms:us-east-1:123456789012:key/b",
	}))
	if err != nil {
		t.Fatal(err)
	}
	allowed := allowedKeys(c.AllowedKeys)
	if c.WaitTimeout != 20*time.Second || !allowed("arn:aws:kms:us-east-1:123456789012:key/b") || allowed("arn:aws:kms:us-east-1:123456789012:key/c") {
		t.Errorf("settings: %+v", c)
	}
	_, err = loadSettings(env.FromMap(map[string]string{"REMEDIATION_KEYS": "alias/orders", "WAIT_TIMEOUT": "soon"}))
	for _, want := range []string{"INCIDENTS_TABLE", "SLACK_BOT_TOKEN", "SLACK_CHANNEL", "REMEDIATION_KEYS", "WAIT_TIMEOUT"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("configuration error %v does not name %s", err, want)
		}
	}
}
