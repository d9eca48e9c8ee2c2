package main

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/slack-go/slack"

	"github.com/keywarden/keywarden/internal/blast"
	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/intake"
	"github.com/keywarden/keywarden/internal/kmskey"
	"github.com/keywarden/keywarden/internal/reconcile"
	"github.com/keywarden/keywarden/internal/slackmessage"
	"github.com/keywarden/keywarden/internal/slacktest"
)

// TestSlackDownLeavesTheIncidentPending: Slack failing (HTTP 500 from the stand-in) while
// KeyEventFunction announces a new incident does not fail the event or end in a log line: the
// incident records its delivery as pending (keywarden incidents shows it), and the one-minute
// outbox pass posts it once Slack answers.
func TestSlackDownLeavesTheIncidentPending(t *testing.T) {
	s := newStack(t)
	keyID, keyARN := s.key(t)
	s.cluster(t, "aurora-postgresql", keyID)
	if _, err := s.kms.DisableKey(context.Background(), &kms.DisableKeyInput{KeyId: &keyID}); err != nil {
		t.Fatal(err)
	}
	sl := slacktest.Start(t, &slacktest.Slack{Token: "xoxb-test", KnownMessagesOnly: true})
	ann := slackmessage.New(s.store, slackmessage.NewClient(slack.New("xoxb-test", slack.OptionAPIURL(sl.APIURL())), slacktest.Channel).WithCallTimeout(time.Second), nil, nil)
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	keys := kmskey.NewResolver(s.kms)
	h := newHandler(intake.New(keys, blast.New(s.rds, keys, blast.WithoutClusterAutomatedBackups()), s.store, log), ann, log)

	sl.Fail(slacktest.AnyMethod, slacktest.Fault{Error: "fatal_error", Status: 500})
	res, err := h.Handle(context.Background(), sample(t, "kms-disable-key.json", keyID))
	if err != nil {
		t.Fatalf("Slack down failed the event: %v", err)
	}
	if len(res.Outcomes) != 1 || res.Outcomes[0].Action != intake.ActionOpened {
		t.Fatalf("outcomes %+v, want one incident opened", res.Outcomes)
	}
	inc, err := s.store.OpenFor(context.Background(), keyARN)
	if err != nil {
		t.Fatal(err)
	}
	if inc.SlackDelivery.State != incident.DeliveryPending || inc.Slack != nil {
		t.Fatalf("slack_delivery %+v, message %+v; want pending and no message yet", inc.SlackDelivery, inc.Slack)
	}
	if !strings.Contains(logs.String(), `"level":"WARN"`) || !strings.Contains(logs.String(), inc.ID) {
		t.Errorf("no warning naming %s in the log:\n%s", inc.ID, logs.String())
	}

	sl.ClearFaults()
	rep, err := reconcile.New(reconcile.Deps{Incidents: s.store, Announcer: ann}, reconcile.Options{}).RetryOutbox(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Failures != 0 {
		t.Fatalf("outbox pass: %+v", rep)
	}
	inc, _ = s.store.OpenFor(context.Background(), keyARN)
	if inc.SlackDelivery.State != incident.DeliveryDelivered || inc.Slack == nil || len(sl.Calls("chat.postMessage")) == 0 {
		t.Fatalf("after the outbox pass: slack_delivery %+v, message %+v; want delivered and posted", inc.SlackDelivery, inc.Slack)
	}
}
