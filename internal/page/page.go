// Package page is keywarden's second way out of an incident, for when Slack is not enough: it
// publishes an incident's summary to an optional SNS topic (NOTIFICATION_TOPIC_ARN), so the
// email addresses, phone numbers or paging tool subscribed to it hear the incident, and it
// writes the CloudWatch metrics (embedded metric format) that template.yaml's alarms watch:
// SlackUndeliverable when Slack refuses an incident for good, PageFailed when the topic
// refused the summary.
//
// Critical incidents are paged when they open, whatever Slack does; any incident Slack cannot
// carry is paged once it is given up as undeliverable (see slackmessage's Announcer).
//
// Boundaries: it owns the SNS summary and the alarmed metrics; it must not import Slack
// (slack-go, slackmessage: slackmessage calls it when Slack is not enough, never the other way
// round) or any AWS service but SNS.
package page

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	snstypes "github.com/aws/aws-sdk-go-v2/service/sns/types"

	"github.com/keywarden/keywarden/internal/incident"
)

// Publisher is the part of the SNS client a Pager uses; *sns.Client fits.
type Publisher interface {
	Publish(ctx context.Context, in *sns.PublishInput, opts ...func(*sns.Options)) (*sns.PublishOutput, error)
}

// Why an incident is paged.
type Why string

const (
	// WhyCritical: the incident is critical (a dependent has no recoverable window); paged on
	// open whatever Slack does.
	WhyCritical Why = "critical"
	// WhyUndeliverable: Slack refuses the incident in a way retrying cannot fix.
	WhyUndeliverable Why = "slack-undeliverable"
)

// Pager publishes incident summaries to one SNS topic.
type Pager struct {
	sns   Publisher
	topic string
}

// New returns a Pager publishing to topicARN with p. An empty topicARN gives a Pager that
// pages nobody (Enabled is false): the topic is optional.
func New(p Publisher, topicARN string) *Pager { return &Pager{sns: p, topic: topicARN} }

// Enabled reports whether a topic is configured.
func (p *Pager) Enabled() bool { return p != nil && p.topic != "" && p.sns != nil }

// Page publishes inc's summary, saying why, to the topic (sns:Publish; Subject at most 100
// ASCII characters without line breaks:
// https://docs.aws.amazon.com/sns/latest/api/API_Publish.html). detail adds what Slack said.
// It returns the SNS message ID; an error is SNS's, wrapped. A Pager that is not Enabled
// publishes nothing and returns "", nil.
func (p *Pager) Page(ctx context.Context, inc incident.Incident, why Why, detail string, now time.Time) (string, error) {
	if !p.Enabled() {
		return "", nil
	}
	subject, body := Summary(inc, why, detail, now)
	out, err := p.sns.Publish(ctx, &sns.PublishInput{
		TopicArn: aws.String(p.topic),
		Subject:  aws.String(subject),
		Message:  aws.String(body),
		MessageAttributes: map[string]snstypes.MessageAttributeValue{
			"incident_id": {DataType: aws.String("String"), StringValue: aws.String(inc.ID)},
			"why":         {DataType: aws.String("String"), StringValue: aws.String(string(why))},
			"severity":    {DataType: aws.String("String"), StringValue: aws.String(orNone(string(inc.Severity)))},
		},
	})
	if err != nil {
		return "", fmt.Errorf("publish incident %s to %s: %w", inc.ID, p.topic, err)
	}
	return aws.ToString(out.MessageId), nil
}

// Summary is the subject and body of inc's page: which key, what happened, what depends on
// it, the deadline, the state, and why it is paged — what an on-call person needs without
// Slack.
func Summary(inc incident.Incident, why Why, detail string, now time.Time) (subject, body string) {
	head := "keywarden: KMS key"
	if inc.SeverityAt(now) == incident.SeverityCritical {
		head = "keywarden CRITICAL: KMS key"
	}
	subject = asciiSubject(fmt.Sprintf("%s %s %s (%d Aurora clusters)", head, incident.KeyID(inc.KeyARN), orNone(string(inc.KeyState)), len(inc.Clusters)))
	var b strings.Builder
	fmt.Fprintf(&b, "Incident %s (%s)\n", inc.ID, inc.State)
	switch why {
	case WhyCritical:
		b.WriteString("Paged because the incident is critical: a dependent cluster has no recoverable window, the key is deleted, or less than a day is left.\n")
	case WhyUndeliverable:
		b.WriteString("Paged because Slack cannot carry this incident: " + detail + "\n")
	}
	fmt.Fprintf(&b, "Key: %s (state %s)\n", inc.KeyARN, orNone(string(inc.KeyState)))
	if inc.Trigger != "" {
		fmt.Fprintf(&b, "Trigger: %s by %s at %s\n", inc.Trigger, inc.Actor.Name(), inc.LostAt.UTC().Format(time.RFC3339))
	}
	if inc.Deadline != nil {
		fmt.Fprintf(&b, "Deadline: %s (%s left)\n", inc.Deadline.UTC().Format(time.RFC3339), inc.Deadline.Sub(now).Truncate(time.Minute))
	}
	fmt.Fprintf(&b, "Severity: %s\n", orNone(string(inc.Severity)))
	fmt.Fprintf(&b, "Aurora clusters (%d):\n", len(inc.Clusters))
	for i, c := range inc.Clusters {
		if i == 50 {
			fmt.Fprintf(&b, "  … and %d more\n", len(inc.Clusters)-i)
			break
		}
		line := fmt.Sprintf("  %s (%s)", c.Identifier, c.Status)
		if !c.CanStop {
			line += " cannot stop: no recoverable window"
		}
		b.WriteString(line + "\n")
	}
	fmt.Fprintf(&b, "Instances: %d, snapshots: %d\n", inc.InstanceCount, inc.SnapshotCount)
	b.WriteString("Details: keywarden incidents " + inc.ID + "\n")
	return subject, b.String()
}

func orNone(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// asciiSubject keeps what SNS accepts in a Subject: printable ASCII, no line breaks, under 100
// characters.
func asciiSubject(s string) string {
	s = strings.Map(func(r rune) rune {
		if r > unicode.MaxASCII || !unicode.IsPrint(r) {
			return ' '
		}
		return r
	}, s)
	if len(s) > 99 {
		s = s[:96] + "..."
	}
	return s
}

// Metric names, in namespace Namespace with the dimension Stack. template.yaml alarms on them.
const (
	Namespace = "keywarden"
	// MetricSlackUndeliverable counts deliveries Slack refused for good.
	MetricSlackUndeliverable = "SlackUndeliverable"
	// MetricPageFailed counts summaries the SNS topic refused.
	MetricPageFailed = "PageFailed"
	// MetricKeyUnreadable counts KMS events KeyEventFunction acknowledged without reading the
	// key they name (DescribeKey denied): no incident opens from them until the key's clusters
	// report the loss themselves.
	MetricKeyUnreadable = "KeyUnreadable"
)

// Metrics writes CloudWatch metrics in the embedded metric format: one JSON line on the
// function's standard output per data point, which Lambda sends to CloudWatch Logs and
// CloudWatch extracts as a metric, no PutMetricData call or permission needed
// (https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html;
// in Lambda: https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Lambda.html).
// A Go function on provided.al2023 writes its standard output to its log group as is, so the
// line must be the JSON document alone, which Count writes. It is safe for concurrent use.
type Metrics struct {
	mu    sync.Mutex
	w     io.Writer
	stack string
	now   func() time.Time
}

// NewMetrics writes metrics to w (os.Stdout in a function) with the dimension Stack=stack
// (the CloudFormation stack's name, so two stacks in one account alarm apart).
func NewMetrics(w io.Writer, stack string) *Metrics {
	if stack == "" {
		stack = "keywarden"
	}
	return &Metrics{w: w, stack: stack, now: time.Now}
}

// Count writes one data point of 1 for metric name about incident id; reason rides along as a
// log field (not a dimension). A nil Metrics writes nothing. Write errors are returned.
func (m *Metrics) Count(name, id, reason string) error {
	if m == nil || m.w == nil {
		return nil
	}
	line := MetricLine("Stack", m.stack, name, 1, m.now(), map[string]any{
		"incident_id": id, "reason": reason, "msg": "keywarden metric " + name,
	})
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, err := m.w.Write(line); err != nil {
		return fmt.Errorf("metric %s: %w", name, err)
	}
	return nil
}

// MetricLine is one embedded-metric-format log line: value as metric name in Namespace, with
// the one dimension dim=dimValue, at time at, and fields added to the line as log fields (not
// dimensions). It ends in a newline, for a function's standard output. keywarden's metrics are
// all written through it: Metrics.Count, and the reconciler's run metric.
func MetricLine(dim, dimValue, name string, value int, at time.Time, fields map[string]any) []byte {
	doc := map[string]any{
		"_aws": map[string]any{
			"Timestamp": at.UnixMilli(),
			"CloudWatchMetrics": []any{map[string]any{
				"Namespace":  Namespace,
				"Dimensions": [][]string{{dim}},
				"Metrics":    []any{map[string]any{"Name": name, "Unit": "Count"}},
			}},
		},
	}
	for k, v := range fields {
		doc[k] = v
	}
	doc[dim], doc[name] = dimValue, value
	b, _ := json.Marshal(doc) // a map of plain values always marshals
	return append(b, '\n')
}
