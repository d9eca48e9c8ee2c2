package reconcile

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/keywarden/keywarden/internal/approval"
	"github.com/keywarden/keywarden/internal/awstest"
	"github.com/keywarden/keywarden/internal/handoff/invoke"
	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/incident/dynamostore"
	"github.com/keywarden/keywarden/internal/slackmessage"
)

// TestHandoffRefusedIsAFailureAndRetried: Lambda refusing the reconciler's hand-off (429,
// TooManyRequestsException, over HTTP as Lambda answers) is a failed outcome the
// ReconcileFailures alarm counts, not a quiet retry; the claim is released, so the next pass
// hands the run off once Lambda accepts.
func TestHandoffRefusedIsAFailureAndRetried(t *testing.T) {
	ctx := context.Background()
	cfg := awstest.Serial(awstest.Config(t, awstest.Moto(t)))
	ddb := dynamodb.NewFromConfig(cfg)
	table := fmt.Sprintf("handoff-http-%d", rand.Int64())
	if err := dynamostore.CreateTable(ctx, ddb, table); err != nil {
		t.Fatal(err)
	}
	store := dynamostore.New(ddb, table)

	approvedAt := time.Now().UTC()
	inc, _, err := store.Open(ctx, incident.Incident{ID: incident.NewID(approvedAt), KeyARN: "arn:aws:kms:us-east-1:123456789012:key/" + fmt.Sprint(rand.Int64()),
		KeyState: incident.KeyStateDisabled, Trigger: "DisableKey", LostAt: approvedAt.Add(-time.Hour),
		Clusters: []incident.Cluster{{Identifier: "orders", Engine: "aurora-postgresql", Status: incident.StatusStopped, CanStop: true, Uses: []string{"storage"}}},
	}, incident.Entry{At: approvedAt, Source: "ev-1", Detail: "DisableKey"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The click is on the incident's message.
	if err := store.SetSlack(ctx, inc.ID, incident.SlackRef{Channel: "C0ONCALL01", TS: "1.000100"}, 0); err != nil {
		t.Fatal(err)
	}
	if inc, err = store.Get(ctx, inc.ID); err != nil {
		t.Fatal(err)
	}
	click := approval.Click{UserID: "U0APPROVR1", TeamID: "T0KEYWARD1", ChannelID: "C0ONCALL01", MessageTS: "1.000100",
		ResponseURL: "https://hooks.slack.com/actions/T0KEYWARD1/1/x", ActionID: slackmessage.ActionRemediate,
		Value: slackmessage.ButtonValue(inc.ID, inc.Version), ActionTS: "1795860000.000001"}
	if _, err := store.Update(ctx, inc.ID, func(i *incident.Incident) error {
		if d := approval.Decide(i, click, approval.Member, approval.Installation{TeamID: "T0KEYWARD1"}, approval.Rules{Required: 1}, approvedAt); !d.Write {
			return errors.New("the click did not approve")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	accept := false
	var accepted []string
	lambda := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		if !accept {
			w.Header().Set("X-Amzn-ErrorType", "TooManyRequestsException")
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = io.WriteString(w, `{"Reason":"ReservedFunctionConcurrentInvocationLimitExceeded","message":"Rate exceeded"}`)
			return
		}
		accepted = append(accepted, string(body))
		w.WriteHeader(http.StatusAccepted)
	}))
	defer lambda.Close()
	starter := invoke.Invoker{Config: aws.Config{Region: awstest.Region, Credentials: credentials.NewStaticCredentialsProvider("test", "test", "")},
		Function: "RemediateFunction", BaseEndpoint: lambda.URL}
	pass := func(after time.Duration) Report {
		t.Helper()
		rep, err := New(Deps{Incidents: store}, Options{}).WithClock(func() time.Time { return approvedAt.Add(after) }).WithHandoff(starter, 0).RunHandoffs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}

	rep := pass(incident.HandOffGrace + 10*time.Second)
	if rep.Failures != 1 || len(rep.Outcomes) != 1 || rep.Outcomes[0].Action != ActionFailed || !strings.Contains(rep.Outcomes[0].Reason, "TooManyRequestsException") {
		t.Fatalf("refused hand-off reported as %+v, want one failure naming TooManyRequestsException", rep)
	}
	mu.Lock()
	accept = true
	mu.Unlock()
	rep = pass(incident.HandOffGrace + 70*time.Second)
	if rep.Failures != 0 || len(accepted) != 1 || !strings.Contains(accepted[0], inc.ID) {
		t.Fatalf("after Lambda accepts: report %+v, hand-offs %q; want the run handed off once", rep, accepted)
	}
}
