package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/rds"

	"github.com/keywarden/keywarden/cmd/keywarden/internal/seed"
	"github.com/keywarden/keywarden/cmd/keywarden/internal/stack"
	"github.com/keywarden/keywarden/internal/awstest"
	"github.com/keywarden/keywarden/internal/incident/dynamostore"
	"github.com/keywarden/keywarden/internal/slackmessage"
)

// BenchmarkSlackActionLocalStack measures what Slack waits for: the time from posting a signed
// click to SlackActionFunction's answer, with the real bootstrap under the Lambda emulator, the
// incident in moto's DynamoDB and the message refreshed on the local Slack stand-in. Slack
// gives up after 3 s. The function is kept warm, as Lambda keeps an execution environment;
// the first invocation's time (init included) is reported as cold_ms.
//
// Each click is an acknowledge on the incident's current version, so every one is a real
// decision: a conditional write, a timeline entry and a message update.
func BenchmarkSlackActionLocalStack(b *testing.B) {
	awstest.RequireMoto(b)
	ctx := context.Background()
	port := freeTCPPort(b)
	localStack, err := stack.New(stack.Options{Port: port, ServicesPort: freeTCPPort(b), StateDir: b.TempDir(), TTL: 10 * time.Minute, Log: io.Discard})
	if err != nil {
		b.Fatal(err)
	}
	if err := localStack.Up(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = localStack.Down(context.Background()) })

	d := &demo{stack: localStack, out: io.Discard, suffix: randomSuffix(), cfg: localStack.AWSConfig()}
	d.kms, d.rds = kms.NewFromConfig(d.cfg), rds.NewFromConfig(d.cfg)
	d.store = dynamostore.New(dynamodb.NewFromConfig(d.cfg), seed.DefaultIncidentsTable)
	for _, step := range []func(context.Context) error{d.seed, d.disable, d.deliver} {
		if err := step(ctx); err != nil {
			b.Fatal(err)
		}
	}
	fn, err := localStack.StartWarm(ctx, "SlackActionFunction", slackEnv(), 15*time.Minute)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(fn.Close)

	click := func() time.Duration {
		inc, err := d.store.OpenFor(ctx, d.keyARN)
		if err != nil {
			b.Fatal(err)
		}
		payload := fmt.Sprintf(`{"type":"block_actions","user":{"id":%q},"team":{"id":"T0KEYWARDEN"},"channel":{"id":%q},`+
			`"container":{"type":"message","message_ts":%q,"channel_id":%q},"actions":[{"action_id":"acknowledge","block_id":"incident_actions","type":"button","value":%q}]}`,
			demoApprover, inc.Slack.Channel, inc.Slack.TS, inc.Slack.Channel, slackmessage.ButtonValue(inc.ID, inc.Version))
		req := signedRequest("payload=" + url.QueryEscape(payload))
		start := time.Now()
		out, fnErr, err := fn.Invoke(ctx, req)
		took := time.Since(start)
		if err != nil || fnErr {
			b.Fatalf("click: %v %s", err, out)
		}
		return took
	}

	cold := click()
	var took []time.Duration
	b.ResetTimer()
	for b.Loop() {
		took = append(took, click())
	}
	b.StopTimer()
	slices.Sort(took)
	b.ReportMetric(ms(cold), "cold_ms")
	b.ReportMetric(ms(percentile(took, 0.50)), "p50_ms")
	b.ReportMetric(ms(percentile(took, 0.99)), "p99_ms")
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(p*float64(len(sorted))))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func freeTCPPort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
