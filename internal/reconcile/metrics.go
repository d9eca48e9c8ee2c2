package reconcile

import (
	"time"

	"github.com/keywarden/keywarden/internal/page"
)

// The reconciler's failure metric, which template.yaml's ReconcileFailuresAlarm watches.
const (
	MetricNamespace = page.Namespace
	MetricFailures  = "ReconcileFailures"
)

// FailureCount is how many things a run failed to do: failed outcomes (a key it could not
// describe, an incident it could not refresh or remind), Slack messages it could not update,
// and the run itself when it could check nothing (runErr non-nil).
func FailureCount(rep Report, runErr error) int {
	n := 0
	for _, o := range rep.Outcomes {
		if o.Action == ActionFailed || o.Action == ActionAnnounceFailed {
			n++
		}
	}
	if runErr != nil {
		n++
	}
	return n
}

// MetricLine is one CloudWatch embedded-metric-format log line (page.MetricLine) publishing
// FailureCount as MetricFailures in MetricNamespace with the dimension FunctionName=function,
// at time at. A Lambda function writes it to stdout; CloudWatch Logs extracts the metric with
// no API call. Every run emits it, zero included, so the alarm sees a series and not missing
// data.
func MetricLine(function string, failures int, at time.Time) []byte {
	return page.MetricLine("FunctionName", function, MetricFailures, failures, at, nil)
}
