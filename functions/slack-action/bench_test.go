package main

import (
	"slices"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/slackmessage"
)

// BenchmarkSlackAction measures SlackActionFunction's time to answer a signed click: from the
// Function URL request reaching the handler to the response it returns, on moto (DynamoDB) and
// a local Slack Web API stand-in (chat.update, thread replies, chat.postEphemeral), the Lambda
// hand-off going to a local Invoke stand-in. Slack's budget is 3 s. Run it short:
//
//	go test -run '^$' -bench SlackAction -benchtime 100x ./functions/slack-action
//
// acknowledge: an approver's click recorded and the message refreshed (update + one reply).
// remediate: an approved click moved to remediating, handed off with an async invoke, and the
// message refreshed; each iteration gets a fresh incident, set up outside the timing.
// replay: a replayed request refused as stale, the user told, the message re-rendered.
func BenchmarkSlackAction(b *testing.B) {
	b.Run("acknowledge", func(b *testing.B) {
		r := newRig(b, 1)
		sc := r.scenario(b)
		version := sc.inc.Version
		lat := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for b.Loop() {
			req := signed(clickBody(sc, approver, slackmessage.ActionAcknowledge, version), signingSecret, time.Now())
			start := time.Now()
			if resp := r.do(b, req); resp.StatusCode != 200 {
				b.Fatalf("status %d", resp.StatusCode)
			}
			lat = append(lat, time.Since(start))
			version++
		}
		report(b, lat)
	})
	b.Run("remediate", func(b *testing.B) {
		r := newRig(b, 1)
		lat := make([]time.Duration, 0, b.N)
		for b.Loop() {
			b.StopTimer()
			sc := r.scenario(b)
			req := signed(clickBody(sc, approver, slackmessage.ActionRemediate, sc.inc.Version), signingSecret, time.Now())
			b.StartTimer()
			start := time.Now()
			if resp := r.do(b, req); resp.StatusCode != 200 {
				b.Fatalf("status %d", resp.StatusCode)
			}
			lat = append(lat, time.Since(start))
		}
		report(b, lat)
	})
	b.Run("replay", func(b *testing.B) {
		r := newRig(b, 1)
		sc := r.scenario(b)
		req := signed(clickBody(sc, approver, slackmessage.ActionAcknowledge, sc.inc.Version), signingSecret, time.Now())
		r.do(b, req)
		lat := make([]time.Duration, 0, b.N)
		for b.Loop() {
			start := time.Now()
			if resp := r.do(b, req); resp.StatusCode != 200 {
				b.Fatalf("status %d", resp.StatusCode)
			}
			lat = append(lat, time.Since(start))
		}
		report(b, lat)
	})
}

// report adds the time-to-answer percentiles to the benchmark's output.
func report(b *testing.B, lat []time.Duration) {
	b.Helper()
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	pct := func(p float64) float64 {
		i := min(int(p*float64(len(lat))), len(lat)-1)
		return float64(lat[i]) / float64(time.Millisecond)
	}
	b.ReportMetric(pct(0.50), "p50_ms")
	b.ReportMetric(pct(0.99), "p99_ms")
	b.ReportMetric(float64(lat[len(lat)-1])/float64(time.Millisecond), "max_ms")
}
