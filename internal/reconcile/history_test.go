package reconcile

import (
	"bytes"
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/rds"

	"github.com/keywarden/keywarden/internal/awstest"
	"github.com/keywarden/keywarden/internal/incident"
)

// describeEventsAnswer is rds:DescribeEvents' answer (Query protocol XML) with one
// RDS-EVENT-0419 of instance at date, in the catalogue's words.
func describeEventsAnswer(instance string, date time.Time) []byte {
	return []byte(`<DescribeEventsResponse xmlns="http://rds.amazonaws.com/doc/2014-10-31/"><DescribeEventsResult><Events><Event>` +
		`<SourceIdentifier>` + instance + `</SourceIdentifier><SourceType>db-instance</SourceType>` +
		`<Message>Amazon RDS has been unable to access the KMS encryption key for database instance ` + instance + `. This database will be placed into an inaccessible state. Please refer to the troubleshooting section in the Amazon RDS documentation for further details.</Message>` +
		`<Date>` + date.UTC().Format(time.RFC3339) + `</Date><EventCategories><EventCategory>availability</EventCategory></EventCategories>` +
		`</Event></Events></DescribeEventsResult><ResponseMetadata><RequestId>1</RequestId></ResponseMetadata></DescribeEventsResponse>`)
}

// TestBackstopDatedByRDSHistory: a loss the backstop finds late opens with its window
// estimated from "now"; the next run reads RDS's 14-day event history (moto keeps none of
// 0418/0419: an answering proxy in front of it supplies the instance's 0419 from three days
// ago) and dates the window from it — four days left, not seven.
func TestBackstopDatedByRDSHistory(t *testing.T) {
	for _, tc := range []struct {
		name     string
		answer   bool
		estimate bool
	}{
		{"history has the 0419", true, false},
		{"history is empty", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			ctx := context.Background()
			keyID, keyARN := w.key(t)
			c := w.cluster(t, keyID)
			inst := c + "-1"
			if _, err := w.rds.CreateDBInstance(ctx, &rds.CreateDBInstanceInput{
				DBInstanceIdentifier: aws.String(inst), DBClusterIdentifier: aws.String(c),
				Engine: aws.String("aurora-postgresql"), DBInstanceClass: aws.String("db.r6g.large"),
			}); err != nil {
				t.Fatal(err)
			}
			w.disable(t, keyID)
			lost := time.Now().Add(-72 * time.Hour).Truncate(time.Second)
			p := awstest.NewFaultProxy(t, awstest.Moto(t))
			if tc.answer {
				p.Arm(&awstest.Fault{Match: func(r *http.Request, b []byte) bool {
					return bytes.Contains(b, []byte("Action=DescribeEvents")) && bytes.Contains(b, []byte("SourceIdentifier="+inst))
				}, Times: -1, Mode: awstest.Answer, Status: 200, ContentType: "text/xml", Body: describeEventsAnswer(inst, lost)})
			}
			events := rds.NewFromConfig(awstest.Config(t, p.URL))
			withHistory := func(d *Deps) { d.Events = events }

			run(t, w.reconciler(withHistory)) // the backstop opens
			incs := w.forKey(t, keyARN)
			if len(incs) != 1 || !incs[0].WindowEstimated {
				t.Fatalf("after the backstop: got %d incident(s) %+v, want one with its window estimated", len(incs), incs)
			}
			run(t, w.reconciler(withHistory)) // the refresh dates it
			got := w.get(t, incs[0].ID)
			if got.WindowEstimated != tc.estimate {
				t.Errorf("window_estimated = %v, want %v", got.WindowEstimated, tc.estimate)
			}
			if tc.answer {
				want := lost.Add(incident.RecoverableWindow)
				if got.Deadline == nil || !got.Deadline.Equal(want) || !got.Clusters[0].WindowFromRDS {
					t.Errorf("got deadline %v (from RDS %v), want %v from the history's 0419", got.Deadline, got.Clusters[0].WindowFromRDS, want)
				}
			}
			run(t, w.reconciler(withHistory)) // asked once
			if n := countKind(w.get(t, incs[0].ID), incident.KindNote); n < 1 {
				t.Errorf("no history note on the timeline")
			}
		})
	}
}
