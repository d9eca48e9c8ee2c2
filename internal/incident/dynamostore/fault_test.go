package dynamostore

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go"
	"github.com/google/go-cmp/cmp"

	"github.com/keywarden/keywarden/internal/awstest"
	"github.com/keywarden/keywarden/internal/incident"
)

// Done-when 3: a write whose answer was lost after it landed is sent again by the SDK; the
// retry meets its own effect (moto, like DynamoDB after the ClientRequestToken's 10 minutes,
// answers it with a cancelled transaction), the store reads again, and the model dedupes: every
// entry is stored once and each event counted once.
func TestLostAnswerStoresOnce(t *testing.T) {
	for _, mode := range []struct {
		name string
		mode awstest.FaultMode
	}{{"HTTP 500", awstest.Answer500}, {"dropped connection", awstest.DropConnection}} {
		t.Run(mode.name, func(t *testing.T) {
			proxy := awstest.NewFaultProxy(t, awstest.Moto(t))
			e := newEnv(t, proxy.URL, false)
			s := e.store()
			ctx := context.Background()
			lose := func() *awstest.Fault {
				return proxy.Arm(&awstest.Fault{Match: awstest.Op("TransactWriteItems"), Times: 1, Mode: mode.mode})
			}

			f := lose()
			inc, opened, err := s.Open(ctx, newIncident(keyA, "DisableKey", t0), delivery(t0, "evt-1"), nil)
			if err != nil {
				t.Fatalf("Open (create's answer lost): %v", err)
			}
			if f.Fired() != 1 || !opened || inc.Deliveries != 1 || inc.Version != 1 {
				t.Errorf("create: fault fired %d, opened %v, deliveries %d, version %d; want 1, true, 1, 1", f.Fired(), opened, inc.Deliveries, inc.Version)
			}
			if all, err := s.List(ctx); err != nil || len(all) != 1 {
				t.Errorf("List: got %d incidents, %v, want 1", len(all), err)
			}
			e.calls.take()

			f = lose()
			got, opened, err := s.Open(ctx, newIncident(keyA, "DisableKey", t0.Add(time.Minute)), delivery(t0.Add(time.Minute), "evt-2"), nil)
			if err != nil {
				t.Fatalf("Open (fold's answer lost): %v", err)
			}
			calls, _ := e.calls.take()
			if f.Fired() != 1 || calls["TransactWriteItems"] < 2 {
				t.Errorf("fault fired %d, TransactWriteItems sent %d times; want 1 and at least 2 (the SDK's retry)", f.Fired(), calls["TransactWriteItems"])
			}
			if opened || got.ID != inc.ID || got.Deliveries != 2 || got.Version != 2 {
				t.Errorf("fold: opened %v, ID %s, deliveries %d, version %d; want false, %s, 2, 2", opened, got.ID, got.Deliveries, got.Version, inc.ID)
			}

			f = lose()
			_, err = s.Update(ctx, inc.ID, func(i *incident.Incident) error {
				i.AddEntry(incident.Entry{ID: "click:1795860000.1:U1", Kind: incident.KindClick, Actor: "U1", Detail: "acknowledge"})
				return nil
			})
			if err != nil || f.Fired() != 1 {
				t.Fatalf("Update (answer lost): %v, fault fired %d", err, f.Fired())
			}

			stored := mustGet(t, s, inc.ID)
			ids := map[string]int{}
			for _, e := range stored.Timeline {
				ids[e.ID]++
			}
			want := map[string]int{"opened:DisableKey": 1, "delivery:evt-1": 1, "delivery:evt-2": 1, "click:1795860000.1:U1": 1}
			if diff := cmp.Diff(want, ids); diff != "" {
				t.Errorf("timeline entries by ID (-want +got):\n%s", diff)
			}
			if stored.Deliveries != 2 || stored.Version != 3 || stored.TimelineSeq != 4 {
				t.Errorf("stored: deliveries %d, version %d, timeline seq %d; want 2, 3, 4", stored.Deliveries, stored.Version, stored.TimelineSeq)
			}
		})
	}
}

// The other writes whose answer can be lost: each must still report what happened once.
func TestLostAnswerOtherWrites(t *testing.T) {
	proxy := awstest.NewFaultProxy(t, awstest.Moto(t))
	e := newEnv(t, proxy.URL, false)
	s := e.store()
	ctx := context.Background()
	lose := func(op string) *awstest.Fault {
		return proxy.Arm(&awstest.Fault{Match: awstest.Op(op), Times: 1})
	}
	inc := mustOpen(t, s, newIncident(keyA, "DisableKey", t0))

	t.Run("Claim", func(t *testing.T) {
		f := lose("PutItem")
		if ok, err := s.Claim(ctx, "reminder:KW-1:24h", time.Hour); err != nil || !ok || f.Fired() != 1 {
			t.Fatalf("Claim with its answer lost: got %v, %v (fault fired %d), want true: this call made the claim", ok, err, f.Fired())
		}
		if ok, err := s.Claim(ctx, "reminder:KW-1:24h", time.Hour); err != nil || ok {
			t.Errorf("second Claim: got %v, %v, want false", ok, err)
		}
	})

	t.Run("RecordRefusal", func(t *testing.T) {
		f := lose("UpdateItem")
		first, err := s.RecordRefusal(ctx, inc.ID, incident.NewRefusal("U0STRANGER", "approve", "not an approver", "click-1", t0))
		if err != nil || !first || f.Fired() != 1 {
			t.Fatalf("RecordRefusal with its answer lost: first %v, %v (fault fired %d), want true", first, err, f.Fired())
		}
		first, err = s.RecordRefusal(ctx, inc.ID, incident.NewRefusal("U0STRANGER", "approve", "not an approver", "click-2", t0.Add(time.Second)))
		if err != nil || first {
			t.Errorf("second click: first %v, %v, want false", first, err)
		}
		got := mustGet(t, s, inc.ID)
		if r, ok := got.LastEntry(incident.KindRefusal); !ok || r.Count != 2 {
			t.Errorf("refusal: got %+v, want count 2 (two clicks, each counted once)", r)
		}
	})

	t.Run("a batched write's lease", func(t *testing.T) {
		big := e.store()
		big.maxTxItems = 2
		f := lose("UpdateItem")
		start := time.Now()
		got, err := big.Update(ctx, inc.ID, func(i *incident.Incident) error {
			for n := range 3 {
				i.AddEntry(incident.Entry{ID: fmt.Sprintf("note-%d", n), Kind: incident.KindNote})
			}
			return nil
		})
		if err != nil || f.Fired() != 1 {
			t.Fatalf("batched Update with the lease's answer lost: %v (fault fired %d)", err, f.Fired())
		}
		if d := time.Since(start); d > 5*time.Second || got.Version != inc.Version+1 {
			t.Errorf("took %v to version %d, want at once to %d: the retried lease is its own", d, got.Version, inc.Version+1)
		}
	})
}

// A refusing table (throttled once the SDK's retries are spent, or access denied by IAM) is
// answered by the fault proxy over HTTP, so the SDK's own retryer and error decoding run: every
// call comes back with the table's error wrapped, for the caller's event to be retried or its
// error to reach the function's metrics.
func TestThrottlingIsReturned(t *testing.T) {
	proxy := awstest.NewFaultProxy(t, awstest.Moto(t))
	e := newEnv(t, proxy.URL, false)
	s := e.store()
	ctx := context.Background()
	inc := mustOpen(t, s, newIncident(keyA, "DisableKey", t0))
	calls := []struct {
		name string
		call func() error
	}{
		{"Open", func() error {
			_, _, err := s.Open(ctx, newIncident(keyB, "DisableKey", t0), delivery(t0), nil)
			return err
		}},
		{"Get", func() error { _, err := s.Get(ctx, inc.ID); return err }},
		{"OpenFor", func() error { _, err := s.OpenFor(ctx, keyA); return err }},
		{"Update", func() error {
			_, err := s.Update(ctx, inc.ID, func(*incident.Incident) error { return nil })
			return err
		}},
		{"RecordRefusal", func() error {
			_, err := s.RecordRefusal(ctx, inc.ID, incident.NewRefusal("U1", "approve", "not an approver", "a", t0))
			return err
		}},
		{"SetSlack", func() error {
			return s.SetSlack(ctx, inc.ID, incident.SlackRef{Channel: "C1", TS: "1.2"}, 1)
		}},
		{"RecordSlackDelivery", func() error { return s.RecordSlackDelivery(ctx, inc.ID, 1, "") }},
		{"Claim", func() error { _, err := s.Claim(ctx, "reminder:KW-1:24h", time.Hour); return err }},
		{"ListActive", func() error { _, err := s.ListActive(ctx); return err }},
		{"SlackPending", func() error { _, err := s.SlackPending(ctx); return err }},
	}
	refusals := []struct {
		name string
		body string
		is   func(error) bool
	}{
		{"throttled", `{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException","message":"slow down"}`,
			func(err error) bool {
				var got *types.ProvisionedThroughputExceededException
				return errors.As(err, &got)
			}},
		{"access denied", string(awstest.AccessDenied("not authorized to perform dynamodb:*")),
			func(err error) bool {
				var got smithy.APIError
				return errors.As(err, &got) && got.ErrorCode() == "AccessDeniedException"
			}},
	}
	for _, r := range refusals {
		t.Run(r.name, func(t *testing.T) {
			var on atomic.Bool // the fault answers every call while on
			on.Store(true)
			defer on.Store(false)
			all := func(*http.Request, []byte) bool { return on.Load() }
			f := proxy.Arm(&awstest.Fault{Match: all, Times: -1, Mode: awstest.Answer, Body: []byte(r.body), ContentType: "application/x-amz-json-1.0"})
			for _, c := range calls {
				t.Run(c.name, func(t *testing.T) {
					if err := c.call(); !r.is(err) {
						t.Errorf("got %v, want the %s error wrapped", err, r.name)
					}
				})
			}
			if f.Fired() < len(calls) {
				t.Errorf("the fault fired %d times for %d calls", f.Fired(), len(calls))
			}
		})
	}
}
