package slackmessage

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/slack-go/slack"

	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/slacktest"
)

// The real client must fit API as is.
var _ API = (*slack.Client)(nil)

const token = "xoxb-000-secret-test-token"

func newClient(t *testing.T, channel string, timeout time.Duration) (*Client, *slacktest.Slack) {
	t.Helper()
	s := slacktest.Start(t, &slacktest.Slack{Token: token, KnownMessagesOnly: true})
	client := slack.New(token, slack.OptionAPIURL(s.APIURL()), slack.OptionHTTPClient(&http.Client{Transport: Transport(nil)}))
	return NewClient(client, channel).WithCallTimeout(timeout), s
}

func msg(id string) Message {
	return Message{
		IncidentID: id,
		Blocks:     []slack.Block{slack.NewSectionBlock(slack.NewTextBlockObject(slack.MarkdownType, "*key* disabled", false, false), nil, nil)},
		Text:       "key disabled",
		Plain:      "key disabled; incident " + id,
	}
}

func topLevel(s *slacktest.Slack) []slacktest.Record {
	var out []slacktest.Record
	for _, m := range slacktest.CurrentMessages(s.Records()) {
		if m.ThreadTS == "" {
			out = append(out, m)
		}
	}
	return out
}

func TestPostFindsLostAnswer(t *testing.T) {
	n, s := newClient(t, slacktest.Channel, 300*time.Millisecond)
	s.Fail("chat.postMessage", slacktest.Fault{Delay: 2 * time.Second, Times: 1})
	p, err := n.Post(t.Context(), msg("KW-1"))
	if err != nil {
		t.Fatalf("Post: %v", err)
	}
	if !p.Found || !p.New || p.Ref.Channel != slacktest.Channel {
		t.Errorf("Post: got %+v, want the message found by its metadata", p)
	}
	if top := topLevel(s); len(top) != 1 || top[0].TS != p.Ref.TS {
		t.Errorf("top-level messages: got %+v, want the one found", top)
	}
	if len(s.Calls("conversations.history")) != 1 {
		t.Error("want one conversations.history look-up")
	}
}

func TestFindByName(t *testing.T) {
	// A channel configured by name: nothing to look up until a post says its ID.
	n, _ := newClient(t, "#keywarden", time.Second)
	if _, ok, err := n.Find(t.Context(), "KW-1"); ok || err != nil {
		t.Fatalf("Find before any post: ok %v, err %v", ok, err)
	}
	p, err := n.Post(t.Context(), msg("KW-1"))
	if err != nil {
		t.Fatal(err)
	}
	ref, ok, err := n.Find(t.Context(), "KW-1")
	if err != nil || !ok || ref != p.Ref {
		t.Errorf("Find after the post: %+v %v %v, want %+v", ref, ok, err, p.Ref)
	}
	if _, ok, _ := n.Find(t.Context(), "KW-2"); ok {
		t.Error("Find found another incident's message")
	}
}

func TestPostPlainWhenBlocksRejected(t *testing.T) {
	for _, code := range []string{"invalid_blocks", "msg_too_long"} {
		t.Run(code, func(t *testing.T) {
			n, s := newClient(t, slacktest.Channel, time.Second)
			s.Fail("chat.postMessage", slacktest.Fault{Error: code, Times: 1})
			p, err := n.Post(t.Context(), msg("KW-1"))
			if err != nil || !p.Plain {
				t.Fatalf("Post: %+v, %v; want the plain form posted", p, err)
			}
			top := topLevel(s)
			if len(top) != 1 || top[0].Text != "key disabled; incident KW-1" || len(top[0].Blocks) != 0 {
				t.Errorf("message: %+v, want the plain text only", top)
			}
		})
	}
}

func TestUpdateRepostsGoneMessage(t *testing.T) {
	n, s := newClient(t, slacktest.Channel, time.Second)
	first, err := n.Post(t.Context(), msg("KW-1"))
	if err != nil {
		t.Fatal(err)
	}
	for _, code := range []string{"message_not_found", "cant_update_message", "edit_window_closed"} {
		s.Fail("chat.update", slacktest.Fault{Error: code, Times: 1})
		p, err := n.Update(t.Context(), first.Ref, msg("KW-1"))
		if err != nil || !p.New || p.Ref == first.Ref {
			t.Errorf("%s: Update got %+v, %v; want a new message", code, p, err)
		}
	}
	// An unknown ts (the stand-in knows only its own messages) is message_not_found too.
	p, err := n.Update(t.Context(), incident.SlackRef{Channel: slacktest.Channel, TS: "1.000001"}, msg("KW-1"))
	if err != nil || !p.New {
		t.Errorf("Update of a deleted message: %+v, %v", p, err)
	}
}

func TestJoinsPublicChannelOnce(t *testing.T) {
	n, s := newClient(t, slacktest.Channel, time.Second)
	s.Leave(slacktest.Channel)
	if _, err := n.Post(t.Context(), msg("KW-1")); err != nil {
		t.Fatalf("Post: %v", err)
	}
	if got := len(s.Calls("conversations.join")); got != 1 {
		t.Errorf("joins: got %d, want 1", got)
	}

	n2, s2 := newClient(t, slacktest.Channel, time.Second)
	s2.Leave(slacktest.Channel)
	s2.MakePrivate(slacktest.Channel)
	_, err := n2.Post(t.Context(), msg("KW-1"))
	var u *UndeliverableError
	if !errors.As(err, &u) || u.Code != "not_in_channel" {
		t.Fatalf("Post in a private channel: got %v, want undeliverable not_in_channel", err)
	}
	joins := 0
	for _, r := range s2.Records() {
		if r.Method == "conversations.join" {
			joins++
		}
	}
	if joins != 1 {
		t.Errorf("joins tried: got %d, want 1", joins)
	}
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		fault         slacktest.Fault
		undeliverable string
		pending       string
	}{
		{fault: slacktest.Fault{Error: "channel_not_found"}, undeliverable: "channel_not_found"},
		{fault: slacktest.Fault{Error: "is_archived"}, undeliverable: "is_archived"},
		{fault: slacktest.Fault{Error: "token_revoked"}, undeliverable: "token_revoked"},
		{fault: slacktest.Fault{Error: "invalid_auth"}, undeliverable: "invalid_auth"},
		{fault: slacktest.Fault{Error: "missing_scope", Needed: "chat:write"}, undeliverable: "missing_scope (needs scope chat:write)"},
		{fault: slacktest.Fault{Error: "fatal_error"}, pending: "fatal_error"},
		{fault: slacktest.Fault{Status: 503}, pending: "unavailable"},
		{fault: slacktest.Fault{RetryAfter: time.Hour}, pending: "ratelimited"},
		{fault: slacktest.Fault{Status: 429}, pending: "ratelimited"},
	} {
		n, s := newClient(t, slacktest.Channel, time.Second)
		s.Fail(slacktest.AnyMethod, tc.fault)
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
		_, err := n.Post(ctx, msg("KW-1"))
		cancel()
		var u *UndeliverableError
		var p *PendingError
		switch {
		case tc.undeliverable != "":
			if !errors.As(err, &u) || !strings.HasPrefix(u.Reason(), tc.undeliverable) {
				t.Errorf("%+v: got %v, want undeliverable %s", tc.fault, err, tc.undeliverable)
			}
		case !errors.As(err, &p) || p.Code != tc.pending:
			t.Errorf("%+v: got %v, want pending %s", tc.fault, err, tc.pending)
		}
	}
}

func TestRateLimitWaits(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault slacktest.Fault
	}{
		{"429 seconds", slacktest.Fault{RetryAfter: 2 * time.Second, Times: 2}},
		{"429 HTTP date", slacktest.Fault{RetryAfter: 2 * time.Second, RetryAfterDate: true, Times: 1}},
		{"ok:false on 200", slacktest.Fault{Error: "ratelimited", Status: 200, RetryAfter: 2 * time.Second, Times: 1}},
		{"ok:false on 200 without Retry-After", slacktest.Fault{Error: "ratelimited", Times: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, s := newClient(t, slacktest.Channel, time.Second)
			var waited []time.Duration
			n.wait = func(_ context.Context, d time.Duration) error { waited = append(waited, d); return nil }
			s.Fail("chat.postMessage", tc.fault)
			if _, err := n.Post(t.Context(), msg("KW-1")); err != nil {
				t.Fatalf("Post: %v", err)
			}
			if len(waited) == 0 || waited[0] < time.Second || waited[0] > 4*time.Second {
				t.Errorf("waits: got %v, want about Retry-After", waited)
			}
		})
	}
	// A wait that does not fit the time left is not waited.
	n, s := newClient(t, slacktest.Channel, time.Second)
	s.Fail("chat.postMessage", slacktest.Fault{RetryAfter: time.Minute})
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	start := time.Now()
	_, err := n.Post(ctx, msg("KW-1"))
	var p *PendingError
	if !errors.As(err, &p) || p.RetryAfter != time.Minute || time.Since(start) > time.Second {
		t.Errorf("Post: %v after %s, want pending at once with Retry-After 1m", err, time.Since(start))
	}
}

func TestReplyEntryLostAnswer(t *testing.T) {
	n, s := newClient(t, slacktest.Channel, 300*time.Millisecond)
	p, err := n.Post(t.Context(), msg("KW-1"))
	if err != nil {
		t.Fatal(err)
	}
	s.Fail("chat.postMessage", slacktest.Fault{Delay: 2 * time.Second, Times: 1})
	if err := n.ReplyEntry(t.Context(), p.Ref, "KW-1", "note:1", "hello"); err != nil {
		t.Fatalf("ReplyEntry with a lost answer: %v", err)
	}
	replies := 0
	for _, m := range slacktest.CurrentMessages(s.Records()) {
		if m.ThreadTS == p.Ref.TS {
			replies++
		}
	}
	if replies != 1 {
		t.Errorf("replies: got %d, want 1", replies)
	}
}

func TestTransport(t *testing.T) {
	now := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		status     int
		retryAfter string
		wantStatus int
		wantRA     string
	}{
		{429, "30", 429, "30"},
		{429, now.Add(45 * time.Second).Format(http.TimeFormat), 429, "45"},
		{200, "5", 429, "5"},
		{429, "soon", 429, "1"},
		{200, "", 200, ""},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			if tc.retryAfter != "" {
				w.Header().Set("Retry-After", tc.retryAfter)
			}
			w.WriteHeader(tc.status)
		}))
		rt := retryAfterTransport{base: http.DefaultTransport, now: func() time.Time { return now }}
		req, _ := http.NewRequest(http.MethodPost, srv.URL, nil)
		resp, err := rt.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		srv.Close()
		if resp.StatusCode != tc.wantStatus || resp.Header.Get("Retry-After") != tc.wantRA {
			t.Errorf("%d %q: got %d %q, want %d %q", tc.status, tc.retryAfter, resp.StatusCode, resp.Header.Get("Retry-After"), tc.wantStatus, tc.wantRA)
		}
	}
}

// TestTruncatePlainText: the plain-text form and thread replies are cut as every other text
// is (truncate), at a word, marked " …".
func TestTruncatePlainText(t *testing.T) {
	s := strings.Repeat("word ", 100)
	got := truncate(s, 52)
	if len(got) > 54 || strings.Contains(got, "wor …") || !strings.HasSuffix(got, " …") {
		t.Errorf("truncate: %q", got)
	}
}
