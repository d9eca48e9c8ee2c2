package notify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/slack-go/slack"
	"github.com/slack-go/slack/slacktest"

	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/slackui"
)

// The real client must fit Poster as is.
var _ Poster = (*slack.Client)(nil)

const token = "xoxb-000-secret-test-token"

var now = time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)

// call is one Web API request the stand-in saw.
type call struct {
	Method   string
	Channel  string
	TS       string
	ThreadTS string
	Text     string
	Blocks   bool
}

// recorder stands in for chat.postMessage and chat.update on a slacktest server (slacktest
// has no chat.update and keeps no record of posted messages), answering as Slack does.
// fail, when set, chooses a response for a request instead of success.
type recorder struct {
	mu    sync.Mutex
	calls []call
	next  int
	fail  func(method string, n int) (status int, header http.Header, body string)
}

func (r *recorder) bind(c slacktest.Customize) {
	c.Handle("/chat.postMessage", r.handler("chat.postMessage"))
	c.Handle("/chat.update", r.handler("chat.update"))
}

func (r *recorder) handler(method string) http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		if err := req.ParseForm(); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		n := 0
		for _, c := range r.calls {
			if c.Method == method {
				n++
			}
		}
		if r.fail != nil {
			if status, header, body := r.fail(method, n); status != 0 {
				for k, v := range header {
					w.Header()[k] = v
				}
				w.WriteHeader(status)
				_, _ = w.Write([]byte(body))
				r.calls = append(r.calls, call{Method: method + " (refused)"})
				return
			}
		}
		c := call{
			Method: method, Channel: req.Form.Get("channel"), TS: req.Form.Get("ts"),
			ThreadTS: req.Form.Get("thread_ts"), Text: req.Form.Get("text"), Blocks: req.Form.Get("blocks") != "",
		}
		r.calls = append(r.calls, c)
		ts := c.TS
		if method == "chat.postMessage" {
			r.next++
			ts = fmt.Sprintf("1795860000.%06d", r.next)
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"ok": true, "channel": "C0KEYWARDEN", "ts": ts, "text": c.Text})
	}
}

func (r *recorder) seen() []call {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]call(nil), r.calls...)
}

// newSlack starts a slacktest server on loopback with the recorder bound in and returns a
// slack-go client pointed at it.
func newSlack(t *testing.T, r *recorder) *slack.Client {
	t.Helper()
	var binders []slacktest.Binder
	if r != nil {
		binders = append(binders, r.bind)
	}
	s := slacktest.NewTestServer(binders...)
	s.Start()
	t.Cleanup(s.Stop)
	return slack.New(token, slack.OptionAPIURL(s.GetAPIURL()))
}

func testIncident() incident.Incident {
	lost := now.Add(-time.Hour)
	inc := incident.Incident{
		ID: "KW-20261128-1f3a9c", Version: 1, State: incident.StateOpen,
		KeyARN:   "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
		KeyAlias: "alias/orders-db", KeyState: "Disabled", Trigger: "DisableKey", LostAt: lost,
		Actor: incident.Actor{ARN: "arn:aws:iam::111122223333:user/alice", SourceIP: "203.0.113.7"},
		Clusters: []incident.Cluster{{
			Identifier: "orders-prod", Engine: "aurora-postgresql", Status: incident.StatusAvailable, CanStop: true, LostAccessAt: &lost,
		}},
	}
	inc.RecordDelivery(incident.Entry{At: lost, Source: "ev-1", Actor: "arn:aws:iam::111122223333:user/alice", Detail: "DisableKey"})
	inc.RecordDelivery(incident.Entry{At: lost.Add(time.Minute), Source: "ev-2", Detail: "RDS-EVENT-0419 for orders-prod-1"})
	inc.RecomputeDeadlines()
	return inc
}

func TestSyncPostsOnceThenUpdatesInPlace(t *testing.T) {
	rec := &recorder{}
	n := New(newSlack(t, rec), "#keywarden")
	ctx := t.Context()
	inc := testIncident()

	ref, posted, err := n.Sync(ctx, inc, now)
	if err != nil {
		t.Fatalf("first Sync: %v", err)
	}
	want := incident.SlackRef{Channel: "C0KEYWARDEN", TS: "1795860000.000001"}
	if ref != want || posted != 2 {
		t.Fatalf("first Sync = %+v, %d, want %+v, 2", ref, posted, want)
	}

	// The caller stores the ref and what was posted and, later, the incident changes. A
	// refusal kept beside it (no Seq) is not the thread's to post: its handler replied once.
	inc.Slack, inc.SlackPosted = &ref, posted
	inc.Version++
	inc.AddEntry(incident.Entry{ID: "click:1795860001.000200:U012ABCDEF", At: now, Kind: incident.KindClick, Actor: "U012ABCDEF",
		Result: incident.Result(slackui.ActionAcknowledge), Detail: "acknowledge: on it"})
	inc.Timeline = append(inc.Timeline, incident.NewRefusal("U0STRANGER", slackui.ActionRemediate, "refused: not an approver", "click:1:U0STRANGER", now))
	ref2, posted, err := n.Sync(ctx, inc, now.Add(time.Minute))
	if err != nil {
		t.Fatalf("second Sync: %v", err)
	}
	if ref2 != ref || posted != 3 {
		t.Fatalf("second Sync = %+v, %d, want %+v, 3", ref2, posted, ref)
	}

	_, fallback := slackui.Message(inc, now.Add(time.Minute))
	wantCalls := []call{
		{Method: "chat.postMessage", Channel: "#keywarden", Text: mustFirstFallback(t), Blocks: true},
		{Method: "chat.postMessage", Channel: "C0KEYWARDEN", ThreadTS: ref.TS, Text: slackui.ThreadText(inc.Timeline[0])},
		{Method: "chat.postMessage", Channel: "C0KEYWARDEN", ThreadTS: ref.TS, Text: slackui.ThreadText(inc.Timeline[1])},
		{Method: "chat.update", Channel: "C0KEYWARDEN", TS: ref.TS, Text: fallback, Blocks: true},
		{Method: "chat.postMessage", Channel: "C0KEYWARDEN", ThreadTS: ref.TS, Text: slackui.ThreadText(inc.Timeline[2])},
	}
	if diff := cmp.Diff(wantCalls, rec.seen()); diff != "" {
		t.Errorf("Slack calls mismatch (-want +got):\n%s", diff)
	}
}

func mustFirstFallback(t *testing.T) string {
	t.Helper()
	_, fallback := slackui.Message(testIncident(), now)
	return fallback
}

// TestSyncAgainstStockSlacktest posts through slacktest's own chat.postMessage, unmodified, to
// show the real client and the real request shape work end to end.
func TestSyncAgainstStockSlacktest(t *testing.T) {
	n := New(newSlack(t, nil), "C0STOCK")
	inc := testIncident()
	inc.Timeline = nil
	ref, posted, err := n.Sync(t.Context(), inc, now)
	if err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if ref.Channel != "C0STOCK" || ref.TS == "" || posted != 0 {
		t.Errorf("Sync = %+v, %d, want channel C0STOCK, a ts, 0", ref, posted)
	}
}

func TestSyncFailures(t *testing.T) {
	slackErr := func(code string) func(string, int) (int, http.Header, string) {
		return func(string, int) (int, http.Header, string) {
			return http.StatusOK, http.Header{"Content-Type": {"application/json"}}, `{"ok":false,"error":"` + code + `"}`
		}
	}
	existing := &incident.SlackRef{Channel: "C0KEYWARDEN", TS: "1795850000.000009"}
	tests := []struct {
		name       string
		slack      *incident.SlackRef
		fail       func(string, int) (int, http.Header, string)
		wantRef    incident.SlackRef
		wantPosted int64
		wantErr    string
	}{
		{
			name: "post refused", fail: slackErr("channel_not_found"),
			wantErr: "post message of incident KW-20261128-1f3a9c: channel_not_found",
		},
		{
			name: "Slack down", fail: func(string, int) (int, http.Header, string) {
				return http.StatusServiceUnavailable, nil, "<html>down</html>"
			},
			wantErr: "post message of incident KW-20261128-1f3a9c: slack server error: 503",
		},
		{
			name: "update refused", slack: existing, fail: slackErr("cant_update_message"), wantRef: *existing,
			wantErr: "update message 1795850000.000009 of incident KW-20261128-1f3a9c: cant_update_message",
		},
		{
			name: "second thread reply refused",
			fail: func(method string, n int) (int, http.Header, string) {
				if n == 2 { // the main message and the first reply went through
					return slackErr("msg_too_long")(method, n)
				}
				return 0, nil, ""
			},
			wantRef:    incident.SlackRef{Channel: "C0KEYWARDEN", TS: "1795860000.000001"},
			wantPosted: 1,
			wantErr:    "post timeline entry 2 of incident KW-20261128-1f3a9c: reply in thread 1795860000.000001: msg_too_long",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := New(newSlack(t, &recorder{fail: tt.fail}), "#keywarden")
			inc := testIncident()
			inc.Slack = tt.slack
			ref, posted, err := n.Sync(t.Context(), inc, now)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Sync error = %v, want it to contain %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), token) {
				t.Errorf("Sync error %q contains the bot token", err)
			}
			if ref != tt.wantRef || posted != tt.wantPosted {
				t.Errorf("Sync = %+v, %d, want %+v, %d", ref, posted, tt.wantRef, tt.wantPosted)
			}
		})
	}
}

// TestSyncRepostsDeletedMessage: when someone deleted the message, chat.update fails with
// message_not_found; the next Sync posts a new one and gives its thread the whole timeline.
func TestSyncRepostsDeletedMessage(t *testing.T) {
	rec := &recorder{fail: func(method string, _ int) (int, http.Header, string) {
		if method == "chat.update" {
			return http.StatusOK, nil, `{"ok":false,"error":"message_not_found"}`
		}
		return 0, nil, ""
	}}
	n := New(newSlack(t, rec), "#keywarden")
	inc := testIncident()
	inc.Slack = &incident.SlackRef{Channel: "C0KEYWARDEN", TS: "1795850000.000009"}
	inc.SlackPosted = 2
	ref, posted, err := n.Sync(t.Context(), inc, now)
	if err != nil {
		t.Fatalf("Sync: %v", err)
	}
	// Both entries were posted in the old thread; the new thread was given them again, and
	// the last posted Seq stays 2.
	if ref.TS != "1795860000.000001" || posted != 2 {
		t.Errorf("Sync = %+v, %d, want the new message and posted 2", ref, posted)
	}
	var replies int
	for _, c := range rec.seen() {
		if c.ThreadTS == ref.TS {
			replies++
		}
	}
	if replies != 2 {
		t.Errorf("new thread got %d replies, want the whole timeline (2)", replies)
	}
}

func TestSyncRateLimit(t *testing.T) {
	limited := func(times int, retryAfter string) func(string, int) (int, http.Header, string) {
		var mu sync.Mutex
		refused := 0
		return func(method string, n int) (int, http.Header, string) {
			mu.Lock()
			defer mu.Unlock()
			if method == "chat.postMessage" && n == 0 && refused < times {
				refused++
				return http.StatusTooManyRequests, http.Header{"Retry-After": {retryAfter}}, ""
			}
			return 0, nil, ""
		}
	}
	t.Run("retried once after Retry-After", func(t *testing.T) {
		rec := &recorder{fail: limited(1, "1")}
		n := New(newSlack(t, rec), "#keywarden")
		var waited []time.Duration
		n.wait = func(ctx context.Context, d time.Duration) error { waited = append(waited, d); return nil }
		ref, _, err := n.Sync(t.Context(), testIncident(), now)
		if err != nil {
			t.Fatalf("Sync: %v", err)
		}
		if ref.TS == "" {
			t.Errorf("Sync returned no ref after the retry")
		}
		if diff := cmp.Diff([]time.Duration{time.Second}, waited); diff != "" {
			t.Errorf("waits mismatch (-want +got):\n%s", diff)
		}
		if got := rec.seen()[0].Method; got != "chat.postMessage (refused)" {
			t.Errorf("first call = %q, want the refused post", got)
		}
	})
	t.Run("really waits", func(t *testing.T) {
		n := New(newSlack(t, &recorder{fail: limited(1, "1")}), "#keywarden")
		start := time.Now()
		if _, _, err := n.Sync(t.Context(), testIncident(), now); err != nil {
			t.Fatalf("Sync: %v", err)
		}
		if d := time.Since(start); d < time.Second {
			t.Errorf("Sync retried after %v, want at least Retry-After (1s)", d)
		}
	})
	t.Run("only once", func(t *testing.T) {
		rec := &recorder{fail: limited(2, "1")}
		n := New(newSlack(t, rec), "#keywarden")
		n.wait = func(context.Context, time.Duration) error { return nil }
		_, _, err := n.Sync(t.Context(), testIncident(), now)
		var rl *slack.RateLimitedError
		if !errors.As(err, &rl) {
			t.Fatalf("Sync error = %v, want a RateLimitedError", err)
		}
		if got := len(rec.seen()); got != 2 {
			t.Errorf("%d calls, want 2 (one retry)", got)
		}
	})
	t.Run("bounded by ctx", func(t *testing.T) {
		n := New(newSlack(t, &recorder{fail: limited(1, "30")}), "#keywarden")
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		start := time.Now()
		_, _, err := n.Sync(ctx, testIncident(), now)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Sync error = %v, want context.DeadlineExceeded", err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("Sync took %v, want it to give up at once when Retry-After outlives ctx", d)
		}
	})
}

func TestReply(t *testing.T) {
	rec := &recorder{}
	n := New(newSlack(t, rec), "#keywarden")
	ref := incident.SlackRef{Channel: "C0KEYWARDEN", TS: "1795850000.000009"}
	if err := n.Reply(t.Context(), ref, "<!subteam^S0123> reminder"); err != nil {
		t.Fatalf("Reply: %v", err)
	}
	want := []call{{Method: "chat.postMessage", Channel: "C0KEYWARDEN", ThreadTS: ref.TS, Text: "<!subteam^S0123> reminder"}}
	if diff := cmp.Diff(want, rec.seen()); diff != "" {
		t.Errorf("Slack calls mismatch (-want +got):\n%s", diff)
	}
	if err := n.Reply(t.Context(), incident.SlackRef{}, "x"); err == nil {
		t.Errorf("Reply without a message = nil error, want one")
	}
}

// TestSyncPostsBySeq: the thread follows Seq, not the slice's order (a store may return the
// timeline sorted by time, refusals among it); refusals and entries already posted are left
// out; a reminder, which the reconciler posts itself, is not mirrored but counts as handled.
func TestSyncPostsBySeq(t *testing.T) {
	rec := &recorder{}
	n := New(newSlack(t, rec), "#keywarden")
	inc := testIncident()
	inc.Slack, inc.SlackPosted = &incident.SlackRef{Channel: "C0KEYWARDEN", TS: "1795850000.000009"}, 1
	inc.AddEntry(incident.Entry{ID: "note:a", At: now, Kind: incident.KindNote, Detail: "third"})
	inc.AddEntry(incident.Entry{ID: "reminder:KW-20261128-1f3a9c:24h", At: now, Kind: incident.KindReminder, Detail: "24h left"})
	inc.AddEntry(incident.Entry{ID: "note:b", At: now.Add(-time.Hour), Kind: incident.KindNote, Detail: "fifth"})
	inc.Timeline = append(inc.Timeline, incident.NewRefusal("U0STRANGER", "remediate", "refused: not an approver", "click:1:U0STRANGER", now))
	incident.SortTimeline(inc.Timeline) // by time: "fifth" now comes first

	_, posted, err := n.Sync(t.Context(), inc, now)
	if err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if posted != 5 {
		t.Errorf("posted = %d, want 5 (the last Seq)", posted)
	}
	var got []string
	for _, c := range rec.seen() {
		if c.ThreadTS != "" {
			got = append(got, c.Text)
		}
	}
	var want []string
	for _, seq := range []int64{2, 3, 5} {
		for _, e := range inc.Timeline {
			if e.Seq == seq {
				want = append(want, slackui.ThreadText(e))
			}
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("thread replies mismatch (-want +got):\n%s", diff)
	}
}
