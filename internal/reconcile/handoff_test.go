package reconcile

import (
	"context"
	"errors"
	"fmt"
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

	"github.com/keywarden/keywarden/internal/approval"
	"github.com/keywarden/keywarden/internal/awstest"
	"github.com/keywarden/keywarden/internal/handoff"
	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/incident/dynamostore"
	"github.com/keywarden/keywarden/internal/remedy"
	"github.com/keywarden/keywarden/internal/slackmessage"
)

// runningStarter is Lambda's asynchronous invoke of RemediateFunction, done in process: it
// records each hand-off and runs it with the real runner, as the function would.
type runningStarter struct {
	mu     sync.Mutex
	reqs   []handoff.Request
	runner *remedy.Runner
	errs   []error
}

func (s *runningStarter) Start(ctx context.Context, req handoff.Request) error {
	s.mu.Lock()
	s.reqs = append(s.reqs, req)
	s.mu.Unlock()
	_, _, err := s.runner.Run(ctx, req.IncidentID, strings.Join(req.ApprovedBy, ","))
	s.mu.Lock()
	s.errs = append(s.errs, err)
	s.mu.Unlock()
	return nil
}

// stoppedOnDisabledKey is what a remediation starts from, on moto: an incident store, an Aurora
// cluster stopped on a key, and the key disabled.
type stoppedOnDisabledKey struct {
	store                  *dynamostore.Store
	kms                    *kms.Client
	rds                    *rds.Client
	keyID, keyARN, cluster string
}

// newStoppedOnDisabledKey sets it up through cfg, in a new table named after prefix.
func newStoppedOnDisabledKey(ctx context.Context, t *testing.T, cfg aws.Config, prefix string) stoppedOnDisabledKey {
	t.Helper()
	ddb := dynamodb.NewFromConfig(cfg)
	w := stoppedOnDisabledKey{kms: kms.NewFromConfig(cfg), rds: rds.NewFromConfig(cfg), cluster: fmt.Sprintf("orders-%d", rand.Int32())}
	table := fmt.Sprintf("%s-%d", prefix, rand.Int64())
	if err := dynamostore.CreateTable(ctx, ddb, table); err != nil {
		t.Fatal(err)
	}
	w.store = dynamostore.New(ddb, table)
	key, err := w.kms.CreateKey(ctx, &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	w.keyID, w.keyARN = aws.ToString(key.KeyMetadata.KeyId), aws.ToString(key.KeyMetadata.Arn)
	if _, err := w.rds.CreateDBCluster(ctx, &rds.CreateDBClusterInput{DBClusterIdentifier: aws.String(w.cluster), Engine: aws.String("aurora-postgresql"),
		StorageEncrypted: aws.Bool(true), KmsKeyId: aws.String(w.keyARN), MasterUsername: aws.String("admin"), MasterUserPassword: aws.String("not-a-secret-1")}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.rds.StopDBCluster(ctx, &rds.StopDBClusterInput{DBClusterIdentifier: aws.String(w.cluster)}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.kms.DisableKey(ctx, &kms.DisableKeyInput{KeyId: aws.String(w.keyID)}); err != nil {
		t.Fatal(err)
	}
	return w
}

// TestApprovingWriteAnswerLostStartsOnce: the approving click's write lands, its answer is lost
// (the fault proxy answers 500 after DynamoDB applied it), and the click's hand-off never
// reaches RemediateFunction. The reconciler's one-minute pass starts the run within a minute of
// the approval, once, however many passes see it, and the key and the cluster come back.
func TestApprovingWriteAnswerLostStartsOnce(t *testing.T) {
	ctx := context.Background()
	moto := awstest.Moto(t)
	proxy := awstest.NewFaultProxy(t, moto)
	w := newStoppedOnDisabledKey(ctx, t, awstest.Serial(awstest.Config(t, proxy.URL)), "handoff")
	store, kmsClient, rdsClient, keyARN, cluster := w.store, w.kms, w.rds, w.keyARN, w.cluster
	approvedAt := time.Now().UTC()
	inc, _, err := store.Open(ctx, incident.Incident{ID: incident.NewID(approvedAt), KeyARN: keyARN, KeyState: incident.KeyStateDisabled,
		Trigger: "DisableKey", LostAt: approvedAt.Add(-time.Hour), Slack: &incident.SlackRef{Channel: "C0ONCALL01", TS: "1.000100"},
		Clusters: []incident.Cluster{{Identifier: cluster, Engine: "aurora-postgresql", Status: incident.StatusStopped, CanStop: true, Uses: []string{"storage"}}},
	}, incident.Entry{At: approvedAt, Source: "ev-1", Detail: "DisableKey"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.SetSlack(ctx, inc.ID, incident.SlackRef{Channel: "C0ONCALL01", TS: "1.000100"}, 0); err != nil {
		t.Fatal(err)
	}
	inc, _ = store.Get(ctx, inc.ID)

	// The approving click: its write lands, its answer is lost.
	lost := proxy.Arm(&awstest.Fault{Match: awstest.Op("TransactWriteItems"), Times: 1, Mode: awstest.Answer500})
	click := approval.Click{UserID: "U0APPROVR1", TeamID: "T0KEYWARD1", ChannelID: "C0ONCALL01", MessageTS: "1.000100",
		ResponseURL: "https://hooks.slack.com/actions/T0KEYWARD1/1/x", ActionID: slackmessage.ActionRemediate,
		Value: slackmessage.ButtonValue(inc.ID, inc.Version), ActionTS: "1795860000.000001"}
	var d approval.Decision
	_, err = store.Update(ctx, inc.ID, func(i *incident.Incident) error {
		d = approval.Decide(i, click, approval.Member, approval.Installation{TeamID: "T0KEYWARD1"}, approval.Rules{Required: 1}, approvedAt)
		if !d.Write {
			return errors.New("nothing to write")
		}
		return nil
	})
	if lost.Fired() != 1 {
		t.Fatalf("the fault fired %d times, want 1 (err %v)", lost.Fired(), err)
	}
	approved, _ := store.Get(ctx, inc.ID)
	if approved.State != incident.StateRemediating || approved.Remediation.State != incident.RemediationApproved {
		t.Fatalf("after the click: %s / %s, want remediating, approved", approved.State, approved.Remediation.State)
	}

	starter := &runningStarter{runner: remedy.New(kmsClient, rdsClient, store, remedy.Options{WaitTimeout: 10 * time.Second})}
	pass := func(after time.Duration) Report {
		t.Helper()
		r := New(Deps{Incidents: store}, Options{}).WithClock(func() time.Time { return approvedAt.Add(after) }).WithHandoff(starter, 0)
		rep, err := r.RunHandoffs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	if rep := pass(10 * time.Second); len(starter.reqs) != 0 {
		t.Fatalf("handed off 10 s after the approval (%+v): the click's own hand-off gets its chance first", rep)
	}
	pass(40 * time.Second)
	pass(45 * time.Second) // an overlapping pass
	pass(2 * time.Minute)  // a later pass: the run is done
	if len(starter.reqs) != 1 || starter.reqs[0].RunID != approved.Remediation.RunID || starter.errs[0] != nil {
		t.Fatalf("hand-offs %+v (errors %v), want run %s once, run without error", starter.reqs, starter.errs, approved.Remediation.RunID)
	}
	got, _ := store.Get(ctx, inc.ID)
	if got.Remediation.State != incident.RemediationDone || got.Remediation.Attempts != 1 {
		t.Errorf("remediation %s after %d attempts, want done after 1", got.Remediation.State, got.Remediation.Attempts)
	}
	out, err := kmsClient.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(w.keyID)})
	if err != nil || out.KeyMetadata.KeyState != kmstypes.KeyStateEnabled {
		t.Errorf("key %v, %v; want Enabled", out, err)
	}
	cl, err := rdsClient.DescribeDBClusters(ctx, &rds.DescribeDBClustersInput{DBClusterIdentifier: aws.String(cluster)})
	if err != nil || aws.ToString(cl.DBClusters[0].Status) == "stopped" {
		t.Errorf("cluster still stopped (%v)", err)
	}
}

// TestWatchedInstanceRecovers: an instance that reported RDS-EVENT-0419 and keeps running is
// counted recovered by the hand-off pass after the grace period available with the key Enabled,
// without any reboot; one that RDS-EVENT-0420 cleared needs nothing.
func TestWatchedInstanceRecovers(t *testing.T) {
	ctx := context.Background()
	cfg := awstest.Serial(awstest.Config(t, awstest.Moto(t)))
	ddb := dynamodb.NewFromConfig(cfg)
	table := fmt.Sprintf("watch-%d", rand.Int64())
	if err := dynamostore.CreateTable(ctx, ddb, table); err != nil {
		t.Fatal(err)
	}
	store := dynamostore.New(ddb, table)
	t0 := time.Now().UTC()
	inc, _, err := store.Open(ctx, incident.Incident{ID: incident.NewID(t0), KeyARN: "arn:aws:kms:us-east-1:123456789012:key/k-" + fmt.Sprint(rand.Int32()),
		KeyState: incident.KeyStateEnabled, Trigger: "DisableKey", LostAt: t0.Add(-time.Hour),
		Clusters: []incident.Cluster{{Identifier: "orders", Status: incident.StatusAvailable, CanStop: true, Uses: []string{"storage"}}},
		Instances: []incident.Instance{
			{Identifier: "orders-1", ClusterIdentifier: "orders", Status: incident.StatusAvailable, LostKeyAccess: true},
			{Identifier: "orders-2", ClusterIdentifier: "orders", Status: incident.StatusAvailable},
		},
	}, incident.Entry{At: t0, Source: "ev-1", Detail: "RDS-EVENT-0419"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	pass := func(after time.Duration) {
		t.Helper()
		r := New(Deps{Incidents: store}, Options{}).WithClock(func() time.Time { return t0.Add(after) }).WithHandoff(nil, 30*time.Minute)
		if _, err := r.RunHandoffs(ctx); err != nil {
			t.Fatal(err)
		}
	}
	pass(0)
	pass(10 * time.Minute)
	if got, _ := store.Get(ctx, inc.ID); !got.Instances[0].LostKeyAccess {
		t.Fatal("recovered before the grace period")
	}
	pass(31 * time.Minute)
	got, _ := store.Get(ctx, inc.ID)
	if in := got.Instances[0]; in.LostKeyAccess || in.NeedsReboot {
		t.Fatalf("after the grace period: %+v, want recovered without a reboot", in)
	}
	e, _ := got.LastEntry(incident.KindClusterChange)
	if !strings.Contains(e.Detail, "counted recovered") || !strings.Contains(e.Detail, "not rebooted") {
		t.Errorf("timeline says %q", e.Detail)
	}
	for _, s := range got.Remediation.Steps {
		if s.Kind == incident.StepRebootDBInstance {
			t.Errorf("a reboot was recorded: %+v", s)
		}
	}
}

// TestTimedOutRunContinues: an invocation killed at Lambda's deadline (after EnableKey, before
// it could record anything else) leaves its run claimed under a lease that runs out; the
// reconciler's pass then hands it off, the next invocation claims it and finishes, and the
// step already done is recorded once.
func TestTimedOutRunContinues(t *testing.T) {
	ctx := context.Background()
	w := newStoppedOnDisabledKey(ctx, t, awstest.Serial(awstest.Config(t, awstest.Moto(t))), "timeout")
	store, kmsClient, rdsClient, keyARN, cluster := w.store, w.kms, w.rds, w.keyARN, w.cluster
	t0 := time.Now().UTC().Add(-10 * time.Minute)
	inc, _, err := store.Open(ctx, incident.Incident{ID: incident.NewID(t0), KeyARN: keyARN, KeyState: incident.KeyStateDisabled,
		Trigger: "DisableKey", LostAt: t0.Add(-time.Hour),
		Clusters: []incident.Cluster{{Identifier: cluster, Engine: "aurora-postgresql", Status: incident.StatusStopped, CanStop: true, Uses: []string{"storage"}}},
	}, incident.Entry{At: t0, Source: "ev-1", Detail: "DisableKey"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The approval, and an invocation that claimed the run, enabled the key, recorded that,
	// and was killed at its deadline.
	inc, err = store.Update(ctx, inc.ID, func(i *incident.Incident) error {
		if _, _, err := i.Approve("U0APPROVR1", i.Version, "click-1", t0, 1, "run-1"); err != nil {
			return err
		}
		if err := i.ClaimRun("run-1", "killed-invocation", t0, 3*time.Minute+30*time.Second); err != nil {
			return err
		}
		i.RecordStep(incident.StepRecord{Kind: incident.StepEnableKey, Target: keyARN, Result: incident.ResultOK, At: t0})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kmsClient.EnableKey(ctx, &kms.EnableKeyInput{KeyId: aws.String(w.keyID)}); err != nil {
		t.Fatal(err)
	}
	starter := &runningStarter{runner: remedy.New(kmsClient, rdsClient, store, remedy.Options{WaitTimeout: 10 * time.Second})}
	pass := func(at time.Time) {
		t.Helper()
		r := New(Deps{Incidents: store}, Options{}).WithClock(func() time.Time { return at }).WithHandoff(starter, 0)
		if _, err := r.RunHandoffs(ctx); err != nil {
			t.Fatal(err)
		}
	}
	pass(t0.Add(2 * time.Minute)) // inside the lease: the invocation may still be alive
	if len(starter.reqs) != 0 {
		t.Fatalf("handed off inside the lease: %+v", starter.reqs)
	}
	pass(time.Now().UTC()) // the lease ran out
	if len(starter.reqs) != 1 || starter.errs[0] != nil {
		t.Fatalf("hand-offs %+v, errors %v; want one, run without error", starter.reqs, starter.errs)
	}
	got, _ := store.Get(ctx, inc.ID)
	if got.Remediation.State != incident.RemediationDone || got.Remediation.Attempts != 2 {
		t.Errorf("remediation %s after %d attempts, want done after 2", got.Remediation.State, got.Remediation.Attempts)
	}
	n := 0
	for _, s := range got.Remediation.Steps {
		if s.Kind == incident.StepEnableKey {
			n++
		}
	}
	if _, started := got.StepDone(incident.StepStartDBCluster, cluster); n != 1 || !started {
		t.Errorf("EnableKey recorded %d times, cluster started %v; want once and started", n, started)
	}
	if e, ok := got.LastEntry(incident.KindNote); !ok || !strings.Contains(e.Detail, "killed-invocation") {
		t.Errorf("the timeline does not say the first invocation stopped without a word: %+v", e)
	}
}
