package reconcile

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/rds"

	"github.com/keywarden/keywarden/internal/awstest"
	"github.com/keywarden/keywarden/internal/blast"
	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/intake"
)

// TestIncompleteRadiusDegradesThenCompletes: a snapshot listing that still fails after the
// SDK's retries (a proxy in front of moto answers 500 every time) does not drop the key event:
// the incident opens with what is known, marked radius_incomplete; the next reconcile run reads
// the radius in full and clears the mark.
func TestIncompleteRadiusDegradesThenCompletes(t *testing.T) {
	w := newWorld(t)
	keyID, keyARN := w.key(t)
	c := w.cluster(t, keyID)
	w.disable(t, keyID)

	p := awstest.NewFaultProxy(t, awstest.Moto(t))
	p.Arm(&awstest.Fault{Match: func(r *http.Request, b []byte) bool {
		return strings.Contains(string(b), "Action=DescribeDBClusterSnapshots")
	}, Times: -1, Mode: awstest.Answer, Status: 500, ContentType: "text/xml",
		Body: []byte(`<ErrorResponse><Error><Type>Receiver</Type><Code>InternalFailure</Code><Message>injected</Message></Error><RequestId>1</RequestId></ErrorResponse>`)})
	failing := blast.New(rds.NewFromConfig(awstest.Config(t, p.URL)), w.keys, blast.WithoutClusterAutomatedBackups())
	o, err := intake.New(w.keys, failing, w.store, w.log).Ensure(context.Background(), intake.Signal{
		KeyARN: keyARN, Trigger: "DisableKey", At: time.Now().Add(-time.Hour), EventID: "ev-incomplete",
	})
	if err != nil || o.Action != intake.ActionOpened {
		t.Fatalf("Ensure with a failing listing: got %+v, %v; want opened", o, err)
	}
	inc := w.get(t, o.IncidentID)
	if !inc.RadiusIncomplete || len(inc.Clusters) != 0 {
		t.Fatalf("got radius_incomplete %v with %d cluster(s), want true with none known", inc.RadiusIncomplete, len(inc.Clusters))
	}

	run(t, w.reconciler(nil))
	got := w.get(t, inc.ID)
	if got.RadiusIncomplete || len(got.Clusters) != 1 || got.Clusters[0].Identifier != c || got.Deadline == nil {
		t.Errorf("after reconcile: radius_incomplete %v, clusters %+v, deadline %v; want complete with %s and a deadline",
			got.RadiusIncomplete, got.Clusters, got.Deadline, c)
	}
	if got.State != incident.StateOpen {
		t.Errorf("got state %s, want open", got.State)
	}
}
