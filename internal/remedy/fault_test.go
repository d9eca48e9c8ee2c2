package remedy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	kmstypes "github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/aws-sdk-go-v2/service/rds"

	"github.com/keywarden/keywarden/internal/awstest"
	"github.com/keywarden/keywarden/internal/incident"
)

// faultWorld is a pending-deletion key with one stopped cluster on moto, reached through a
// FaultProxy.
type faultWorld struct {
	proxy   *awstest.FaultProxy
	kms     *kms.Client
	rds     *rds.Client
	keyARN  string
	stopped string
	inc     incident.Incident
}

func newFaultWorld(t *testing.T) faultWorld {
	t.Helper()
	ctx := context.Background()
	proxy := awstest.NewFaultProxy(t, awstest.Moto(t))
	cfg := awstest.Config(t, proxy.URL)
	w := faultWorld{proxy: proxy, kms: kms.NewFromConfig(cfg), rds: rds.NewFromConfig(cfg)}
	key, err := w.kms.CreateKey(ctx, &kms.CreateKeyInput{Description: aws.String(t.Name())})
	if err != nil {
		t.Fatal(err)
	}
	w.keyARN = aws.ToString(key.KeyMetadata.Arn)
	if _, err := w.kms.ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{KeyId: key.KeyMetadata.KeyId, PendingWindowInDays: aws.Int32(7)}); err != nil {
		t.Fatal(err)
	}
	w.stopped = fmt.Sprintf("orders-%d", time.Now().UnixNano())
	createCluster(t, w.rds, w.stopped, w.keyARN)
	if _, err := w.rds.StopDBCluster(ctx, &rds.StopDBClusterInput{DBClusterIdentifier: aws.String(w.stopped)}); err != nil {
		t.Fatal(err)
	}
	w.inc = testIncident([]incident.Cluster{{Identifier: w.stopped, Engine: "aurora-postgresql", Status: incident.StatusStopped, CanStop: true, Uses: []string{"storage"}}}, nil)
	w.inc.ID, w.inc.KeyARN, w.inc.KeyState = "inc-"+w.stopped, w.keyARN, incident.KeyStatePendingDeletion
	return w
}

// KMS is eventually consistent: EnableKey right after CancelKeyDeletion may be refused with
// KMSInvalidStateException. The run retries it and succeeds; nothing is given back.
func TestEnableKeyRetriesKMSInvalidState(t *testing.T) {
	w := newFaultWorld(t)
	refused := w.proxy.Arm(&awstest.Fault{Match: awstest.Op("EnableKey"), Times: 1, Mode: awstest.Answer,
		Body: []byte(`{"__type":"KMSInvalidStateException","message":"arn:aws:kms:…:key/… is pending deletion."}`)})
	store := newMemStore(w.inc)
	got, _, err := New(w.kms, w.rds, store, Options{WaitTimeout: 10 * time.Second}).Run(context.Background(), w.inc.ID, approver)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if refused.Fired() != 1 {
		t.Fatalf("the fault fired %d times, want 1", refused.Fired())
	}
	if st := keyState(t, w.kms, w.keyARN); st != kmstypes.KeyStateEnabled {
		t.Errorf("key %s, want Enabled", st)
	}
	if st := liveClusterStatus(t, w.rds, w.stopped); st == incident.StatusStopped {
		t.Error("cluster still stopped")
	}
	if got.State != incident.StateRemediating || got.Remediation.State != incident.RemediationDone {
		t.Errorf("state %s, remediation %s; want remediating, done", got.State, got.Remediation.State)
	}
	for _, s := range got.Remediation.Steps {
		if s.Kind == incident.StepEnableKey && (s.Result != incident.ResultOK || !strings.Contains(s.Detail, "attempt 2")) {
			t.Errorf("EnableKey step %+v, want ok on attempt 2", s)
		}
	}
}

// Past the consistency bound, the run fails and gives the incident back at once, saying why.
func TestEnableKeyConsistencyBound(t *testing.T) {
	w := newFaultWorld(t)
	w.proxy.Arm(&awstest.Fault{Match: awstest.Op("EnableKey"), Times: 1 << 20, Mode: awstest.Answer,
		Body: []byte(`{"__type":"KMSInvalidStateException","message":"still pending deletion"}`)})
	store := newMemStore(w.inc)
	clk := newClock()
	got, _, err := New(w.kms, w.rds, store, Options{ConsistencyTimeout: 5 * time.Second, Now: clk.Now, Sleep: clk.Sleep}).
		Run(context.Background(), w.inc.ID, approver)
	var invalid *kmstypes.KMSInvalidStateException
	if !errors.As(err, &invalid) {
		t.Fatalf("Run error %v, want KMSInvalidStateException after the bound", err)
	}
	givenBack(t, got)
	if !strings.Contains(got.Remediation.Reason, "KMSInvalidStateException") {
		t.Errorf("reason %q does not say why", got.Remediation.Reason)
	}
}

// An invocation that reaches its stop margin mid-run records the steps done, says where it
// stopped and releases the run; the next invocation continues it, and each step is recorded
// once.
func TestRunStopsBeforeDeadlineAndContinues(t *testing.T) {
	w := newFaultWorld(t)
	store := newMemStore(w.inc)
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	ck := &hookKMS{KMSAPI: w.kms, afterEnable: func() {
		// EnableKey took long: the invocation is now inside its stop margin.
		mu.Lock()
		now = now.Add(45 * time.Second)
		mu.Unlock()
	}}
	r := New(ck, w.rds, store, Options{Now: clock, StopMargin: 20 * time.Second, WaitTimeout: 10 * time.Second, Invocation: func(context.Context) string { return "inv-1" }})
	ctx, cancel := context.WithDeadline(context.Background(), now.Add(60*time.Second))
	defer cancel()
	got, _, err := r.Run(ctx, w.inc.ID, approver)
	if !errors.Is(err, ErrPaused) {
		t.Fatalf("first invocation: %v, want ErrPaused", err)
	}
	if got.Remediation.State != incident.RemediationApproved || !strings.HasPrefix(got.Remediation.StoppedAt, string(incident.StepWaitEnabled)) {
		t.Fatalf("remediation %s stopped at %q, want approved again, stopped at WaitEnabled", got.Remediation.State, got.Remediation.StoppedAt)
	}
	if st := liveClusterStatus(t, w.rds, w.stopped); st != incident.StatusStopped {
		t.Fatalf("cluster %s after the first invocation, want still stopped", st)
	}
	if !got.AwaitingStart(clock().Add(time.Minute), 20*time.Second) {
		t.Error("the paused run does not await a start: the reconciler would not continue it")
	}

	ck.afterEnable = nil
	r2 := New(ck, w.rds, store, Options{Now: clock, WaitTimeout: 10 * time.Second, Invocation: func(context.Context) string { return "inv-2" }})
	got, _, err = r2.Run(context.Background(), w.inc.ID, approver)
	if err != nil {
		t.Fatalf("second invocation: %v", err)
	}
	if st := liveClusterStatus(t, w.rds, w.stopped); st == incident.StatusStopped {
		t.Error("cluster still stopped after the continuation")
	}
	count := map[string]int{}
	for _, s := range got.Remediation.Steps {
		count[string(s.Kind)+" "+s.Target]++
	}
	for k, n := range count {
		if n != 1 {
			t.Errorf("%s recorded %d times, want once", k, n)
		}
	}
	if count["EnableKey "+w.keyARN] != 1 || count["StartDBCluster "+w.stopped] != 1 {
		t.Errorf("steps %v: want EnableKey and StartDBCluster recorded", count)
	}
	if got.Remediation.State != incident.RemediationDone || got.Remediation.Attempts != 2 {
		t.Errorf("remediation %s after %d attempts, want done after 2", got.Remediation.State, got.Remediation.Attempts)
	}
}

type hookKMS struct {
	KMSAPI
	afterEnable func()
}

func (h *hookKMS) EnableKey(ctx context.Context, in *kms.EnableKeyInput, o ...func(*kms.Options)) (*kms.EnableKeyOutput, error) {
	out, err := h.KMSAPI.EnableKey(ctx, in, o...)
	if h.afterEnable != nil {
		h.afterEnable()
	}
	return out, err
}
