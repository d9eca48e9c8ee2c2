package reconcile

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/slack-go/slack"

	"github.com/keywarden/keywarden/internal/awstest"
	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/incident/dynamostore"
	"github.com/keywarden/keywarden/internal/slackmessage"
	"github.com/keywarden/keywarden/internal/slacktest"
)

var _ outboxLister = (*dynamostore.Store)(nil)

// TestRetryOutbox: deliveries left pending by a failed attempt are delivered by the one-minute
// pass; an undeliverable incident is not retried by it; a closed incident still pending is
// delivered by the reconcile run too.
func TestRetryOutbox(t *testing.T) {
	cfg := awstest.Serial(awstest.Config(t, awstest.Moto(t)))
	db := dynamodb.NewFromConfig(cfg)
	table := fmt.Sprintf("outbox-%d", rand.Int64())
	ctx := context.Background()
	if err := dynamostore.CreateTable(ctx, db, table); err != nil {
		t.Fatal(err)
	}
	store := dynamostore.New(db, table)
	sl := slacktest.Start(t, &slacktest.Slack{Token: "xoxb-test", KnownMessagesOnly: true})
	ann := slackmessage.New(store, slackmessage.NewClient(slack.New("xoxb-test", slack.OptionAPIURL(sl.APIURL())), slacktest.Channel).WithCallTimeout(time.Second), nil, nil)
	r := New(Deps{Incidents: store, Announcer: ann}, Options{})

	open := func(key string) incident.Incident {
		t.Helper()
		now := time.Now().UTC()
		inc, _, err := store.Open(ctx, incident.Incident{ID: incident.NewID(now), KeyARN: "arn:aws:kms:us-east-1:123456789012:key/" + key,
			KeyState: incident.KeyStateDisabled, Trigger: "DisableKey", LostAt: now}, incident.Entry{At: now, Source: "ev-" + key}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return inc
	}
	pending := open("pending")
	sl.Fail(slacktest.AnyMethod, slacktest.Fault{Error: "fatal_error", Status: 500})
	if err := ann.Announce(ctx, pending); err == nil {
		t.Fatal("Announce with Slack down: got nil error")
	}
	sl.ClearFaults()
	failed := open("failed")
	// One call: the look for an earlier message already answers is_archived (undeliverable).
	sl.Fail(slacktest.AnyMethod, slacktest.Fault{Error: "is_archived", Times: 1})
	if err := ann.Announce(ctx, failed); err == nil {
		t.Fatal("Announce to an archived channel: got nil error")
	}
	ids, err := store.SlackPending(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != 1 || ids[0] != pending.ID {
		t.Fatalf("SlackPending: got %v, want only %s (the failed one waits for an event or a run)", ids, pending.ID)
	}

	rep, err := r.RetryOutbox(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Outcomes) != 1 || rep.Outcomes[0].Action != ActionDelivered || rep.Outcomes[0].IncidentID != pending.ID {
		t.Fatalf("RetryOutbox: got %+v, want %s delivered", rep.Outcomes, pending.ID)
	}
	got, err := store.Get(ctx, pending.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.SlackDelivery.State != incident.DeliveryDelivered || got.Slack == nil {
		t.Errorf("after the retry: %+v, want delivered", got.SlackDelivery)
	}
	if ids, _ := store.SlackPending(ctx); len(ids) != 0 {
		t.Errorf("SlackPending after the retry: %v, want none", ids)
	}

	// A closed incident whose last change was not delivered: the reconcile run delivers it.
	sl.Fail("chat.update", slacktest.Fault{Error: "fatal_error", Status: 500})
	closed, err := store.Update(ctx, pending.ID, func(i *incident.Incident) error {
		return i.Resolve(incident.Keywarden, "fixed by hand", time.Now())
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = ann.Announce(ctx, closed)
	sl.ClearFaults()
	if got, _ := store.Get(ctx, pending.ID); got.SlackDelivery.State != incident.DeliveryPending {
		t.Fatalf("closed incident after a failed update: %+v, want pending", got.SlackDelivery)
	}
	var outs []Outcome
	all, err := store.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rr := &Report{}
	r.retryClosedOutbox(ctx, all, &budget{wall: time.Now, deadline: time.Now().Add(time.Minute), max: 10}, rr)
	outs = rr.Outcomes
	if len(outs) != 1 || outs[0].Action != ActionDelivered {
		t.Errorf("reconcile's outbox share: got %+v, want the closed incident delivered", outs)
	}
}
