package reconcile

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/rds"
	rdstypes "github.com/aws/aws-sdk-go-v2/service/rds/types"

	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/lifecycle"
	"github.com/keywarden/keywarden/internal/rdsevent"
)

// EventHistory reads RDS's event history; *rds.Client fits.
type EventHistory interface {
	DescribeEvents(context.Context, *rds.DescribeEventsInput, ...func(*rds.Options)) (*rds.DescribeEventsOutput, error)
}

// historyMinutes is how far back rds:DescribeEvents reaches: 14 days
// (https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_DescribeEvents.html).
const historyMinutes = 14 * 24 * 60

// history is RDS event history's answer for one incident: the key-access reports found, or
// asked false when it was not asked (no EventHistory, budget spent, claimed by another run).
type history struct {
	asked   bool
	reports []lifecycle.AccessReport
}

func (h history) apply(i *incident.Incident, now time.Time) {
	if h.asked && !lifecycle.HistoryLookedUp(*i) {
		lifecycle.ApplyHistory(i, h.reports, now)
	}
}

// rdsHistory asks RDS event history for the RDS-EVENT-0418/0419 of an incident whose window is
// an estimate (a loss the backstop found late), once per incident: the instances' events (the
// catalogue's key-access events are DB instance events) and the clusters' (Parse accepts them
// on a cluster too). One DescribeEvents per resource, within the run's budget; a failure is an
// outcome and the next run asks again.
func (r *Reconciler) rdsHistory(ctx context.Context, inc incident.Incident, b *budget, rep *Report) history {
	if r.d.Events == nil || !inc.WindowEstimated || lifecycle.HistoryLookedUp(inc) {
		return history{}
	}
	type source struct {
		id, cluster, instance string
		kind                  rdstypes.SourceType
	}
	var sources []source
	for _, c := range inc.Clusters {
		sources = append(sources, source{id: c.Identifier, cluster: c.Identifier, kind: rdstypes.SourceTypeDbCluster})
	}
	for _, in := range inc.Instances {
		sources = append(sources, source{id: in.Identifier, cluster: in.ClusterIdentifier, instance: in.Identifier, kind: rdstypes.SourceTypeDbInstance})
	}
	if len(sources) == 0 || !b.spend(len(sources)) {
		return history{}
	}
	var h history
	for _, s := range sources {
		// Per source: its losses, and when it last got the key back (RDS-EVENT-0420). A loss
		// before that restoration was fixed already: it must not date the current one (it
		// would put the deadline days in the past).
		var lost []lifecycle.AccessReport
		var restored time.Time
		p := rds.NewDescribeEventsPaginator(r.d.Events, &rds.DescribeEventsInput{
			SourceIdentifier: aws.String(s.id), SourceType: s.kind, Duration: aws.Int32(historyMinutes),
		})
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				rep.add(Outcome{IncidentID: inc.ID, KeyARN: inc.KeyARN, Action: ActionFailed,
					Reason: fmt.Sprintf("RDS event history of %s (asked again next run): %v", s.id, err)})
				return history{}
			}
			for _, ev := range page.Events {
				if ev.Date == nil {
					continue
				}
				if rdsevent.HistoryKeyAccessRestored(aws.ToString(ev.Message)) {
					restored = latest(restored, ev.Date.UTC())
					continue
				}
				code := rdsevent.HistoryKeyAccessLost(aws.ToString(ev.Message))
				if code == "" {
					continue
				}
				lost = append(lost, lifecycle.AccessReport{
					Cluster: s.cluster, Instance: s.instance, Code: code + " (event history)", At: ev.Date.UTC(),
				})
			}
		}
		for _, r := range lost {
			if r.At.After(restored) {
				h.reports = append(h.reports, r)
			}
		}
	}
	h.asked = true
	return h
}
