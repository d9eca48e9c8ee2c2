package reconcile

import (
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/rds"
	rdstypes "github.com/aws/aws-sdk-go-v2/service/rds/types"

	"github.com/keywarden/keywarden/internal/incident"
)

// eventHistory answers DescribeEvents with fixed events for every source.
type eventHistory []rdstypes.Event

func (h eventHistory) DescribeEvents(context.Context, *rds.DescribeEventsInput, ...func(*rds.Options)) (*rds.DescribeEventsOutput, error) {
	return &rds.DescribeEventsOutput{Events: h}, nil
}

// TestHistorySkipsRestoredLosses: RDS's 14-day history holds a loss twelve days ago that an
// RDS-EVENT-0420 ended, and the current loss an hour ago. Only the current one dates the
// window; the old one would put the deadline days in the past (found in review).
func TestHistorySkipsRestoredLosses(t *testing.T) {
	now := time.Date(2026, 3, 20, 12, 0, 0, 0, time.UTC)
	msg := func(text string, at time.Time) rdstypes.Event {
		return rdstypes.Event{Message: aws.String(text), Date: aws.Time(at)}
	}
	const lost = "Amazon RDS has been unable to access the KMS encryption key for database instance a-1. This database will be placed into an inaccessible state."
	const back = "Amazon RDS can now successfully access the KMS encryption key for database instance a-1."
	old, fixed, current := now.Add(-12*24*time.Hour), now.Add(-11*24*time.Hour), now.Add(-time.Hour)
	r := &Reconciler{d: Deps{Events: eventHistory{msg(lost, old), msg(back, fixed), msg(lost, current)}}}
	inc := incident.Incident{ID: "KW-1", WindowEstimated: true,
		Instances: []incident.Instance{{Identifier: "a-1", ClusterIdentifier: "a"}}}
	h := r.rdsHistory(context.Background(), inc, &budget{max: 100, wall: func() time.Time { return now }, deadline: now.Add(time.Minute)}, &Report{})
	if len(h.reports) != 1 || !h.reports[0].At.Equal(current) {
		t.Fatalf("reports %+v, want only the loss after the restoration (%v)", h.reports, current)
	}
}
