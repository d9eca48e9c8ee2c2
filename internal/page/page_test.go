package page

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/keywarden/keywarden/internal/awstest"
	"github.com/keywarden/keywarden/internal/incident"
)

func TestMain(m *testing.M) { awstest.Main(m) }

var _ Publisher = (*sns.Client)(nil)

var now = time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)

func testIncident() incident.Incident {
	dl := now.Add(6 * 24 * time.Hour)
	return incident.Incident{
		ID: "KW-20261129-abcdef", State: incident.StateOpen, Severity: incident.SeverityCritical, Critical: true,
		KeyARN: "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab", KeyState: incident.KeyStateDisabled,
		Trigger: "DisableKey", LostAt: now, Deadline: &dl, Actor: incident.Actor{ARN: "arn:aws:iam::123456789012:user/alice"},
		Clusters: []incident.Cluster{{Identifier: "orders", Status: "stopped", CanStop: true}, {Identifier: "global-1", Status: "available"}},
	}
}

func TestSummary(t *testing.T) {
	subject, body := Summary(testIncident(), WhyUndeliverable, "is_archived: the channel is archived", now)
	if len(subject) >= 100 || strings.ContainsAny(subject, "\n\r") || !strings.Contains(subject, "CRITICAL") {
		t.Errorf("subject %q: want under 100 ASCII characters, one line, saying critical", subject)
	}
	for _, want := range []string{"KW-20261129-abcdef", "is_archived", "DisableKey by arn:aws:iam::123456789012:user/alice", "orders (stopped)",
		"global-1 (available) cannot stop", "144h0m0s left"} {
		if !strings.Contains(body, want) {
			t.Errorf("body lacks %q:\n%s", want, body)
		}
	}
}

func TestMetricsEMF(t *testing.T) {
	var buf bytes.Buffer
	m := NewMetrics(&buf, "keywarden-prod")
	m.now = func() time.Time { return now }
	if err := m.Count(MetricSlackUndeliverable, "KW-1", "is_archived"); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		AWS struct {
			Timestamp         int64
			CloudWatchMetrics []struct {
				Namespace  string
				Dimensions [][]string
				Metrics    []struct{ Name, Unit string }
			}
		} `json:"_aws"`
		Stack              string
		SlackUndeliverable float64
		IncidentID         string `json:"incident_id"`
	}
	if err := json.Unmarshal(buf.Bytes(), &doc); err != nil {
		t.Fatalf("not one JSON line: %v: %s", err, buf.String())
	}
	d := doc.AWS.CloudWatchMetrics
	if doc.AWS.Timestamp != now.UnixMilli() || len(d) != 1 || d[0].Namespace != Namespace || fmt.Sprint(d[0].Dimensions) != "[[Stack]]" ||
		d[0].Metrics[0].Name != MetricSlackUndeliverable || doc.Stack != "keywarden-prod" || doc.SlackUndeliverable != 1 || doc.IncidentID != "KW-1" {
		t.Errorf("EMF document: %s", buf.String())
	}
	var nilMetrics *Metrics
	if err := nilMetrics.Count(MetricPageFailed, "KW-1", ""); err != nil {
		t.Errorf("nil Metrics: %v", err)
	}
}

// TestPageOnMoto publishes to moto's SNS and reads the page from an SQS queue subscribed to
// the topic, as an email or paging subscription would receive it.
func TestPageOnMoto(t *testing.T) {
	cfg := awstest.Config(t, awstest.Moto(t))
	ctx := context.Background()
	snsc, sqsc := sns.NewFromConfig(cfg), sqs.NewFromConfig(cfg)
	n := rand.Int64()
	topic, err := snsc.CreateTopic(ctx, &sns.CreateTopicInput{Name: aws.String(fmt.Sprintf("page-%d", n))})
	if err != nil {
		t.Fatal(err)
	}
	q, err := sqsc.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(fmt.Sprintf("page-%d", n))})
	if err != nil {
		t.Fatal(err)
	}
	qa, err := sqsc.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: q.QueueUrl, AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameQueueArn}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := snsc.Subscribe(ctx, &sns.SubscribeInput{TopicArn: topic.TopicArn, Protocol: aws.String("sqs"), Endpoint: aws.String(qa.Attributes["QueueArn"])}); err != nil {
		t.Fatal(err)
	}

	if id, err := New(snsc, "").Page(ctx, testIncident(), WhyCritical, "", now); id != "" || err != nil {
		t.Errorf("Page without a topic: %q, %v; want nothing done", id, err)
	}
	id, err := New(snsc, aws.ToString(topic.TopicArn)).Page(ctx, testIncident(), WhyCritical, "", now)
	if err != nil || id == "" {
		t.Fatalf("Page: %q, %v", id, err)
	}
	got, err := sqsc.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: q.QueueUrl, MaxNumberOfMessages: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Messages) != 1 {
		t.Fatalf("messages on the subscribed queue: %d, want 1", len(got.Messages))
	}
	var env struct{ Subject, Message, MessageId string }
	if err := json.Unmarshal([]byte(aws.ToString(got.Messages[0].Body)), &env); err != nil {
		t.Fatal(err)
	}
	if env.MessageId != id || !strings.Contains(env.Subject, "CRITICAL") || !strings.Contains(env.Message, "KW-20261129-abcdef") || !strings.Contains(env.Message, "critical") {
		t.Errorf("notification: %+v", env)
	}

	// A topic that does not exist: SNS's error, wrapped.
	if _, err := New(snsc, "arn:aws:sns:us-east-1:123456789012:nope").Page(ctx, testIncident(), WhyCritical, "", now); err == nil {
		t.Error("Page to a missing topic: got nil error")
	}
}
