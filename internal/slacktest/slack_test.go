package slacktest_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/slack-go/slack"

	"github.com/keywarden/keywarden/internal/slacktest"
)

const token = "xoxb-test"

func client(s *slacktest.Slack, opts ...slack.Option) *slack.Client {
	return slack.New(token, append([]slack.Option{slack.OptionAPIURL(s.APIURL())}, opts...)...)
}

func post(ctx context.Context, api *slack.Client, text string) (string, string, error) {
	return api.PostMessageContext(ctx, "#oncall", slack.MsgOptionText(text, false))
}

// A started stand-in answers what keywarden calls, as Slack does, with one channel ID.
func TestStartedStandIn(t *testing.T) {
	s := slacktest.Start(t, &slacktest.Slack{Token: token, Groups: map[string][]string{"S0ONCALL01": {"U0APPROVR1"}}})
	api := client(s)
	ctx := context.Background()

	channel, ts, err := post(ctx, api, "KMS key disabled")
	if err != nil || channel != slacktest.Channel || ts == "" {
		t.Fatalf("chat.postMessage: channel %q ts %q err %v, want %s, a ts, nil", channel, ts, err, slacktest.Channel)
	}
	// An update of a message posted before the stand-in existed is accepted unless
	// KnownMessagesOnly says otherwise.
	if _, _, _, err := api.UpdateMessageContext(ctx, channel, "1700000000.000001", slack.MsgOptionText("x", false)); err != nil {
		t.Errorf("chat.update of an earlier message: %v", err)
	}
	if members, err := api.GetUserGroupMembersContext(ctx, "S0ONCALL01"); err != nil || len(members) != 1 {
		t.Errorf("usergroups.users.list: %v, %v", members, err)
	}
	if _, err := api.GetUserGroupMembersContext(ctx, "S0NOSUCH"); err == nil || err.Error() != "no_such_subteam" {
		t.Errorf("unknown group: got %v, want no_such_subteam", err)
	}
	if _, _, err := post(ctx, slack.New("xoxb-wrong", slack.OptionAPIURL(s.APIURL())), "x"); err == nil || err.Error() != "invalid_auth" {
		t.Errorf("wrong token: got %v, want invalid_auth", err)
	}

	type call struct{ Method, Channel, TS, Usergroup, Text, Error string }
	var got []call
	for _, c := range s.Calls() {
		got = append(got, call{c.Method, c.Channel, c.TS, c.Usergroup, c.Text, c.Error})
	}
	want := []call{
		{Method: "chat.postMessage", Channel: slacktest.Channel, TS: ts, Text: "KMS key disabled"},
		{Method: "chat.update", Channel: slacktest.Channel, TS: "1700000000.000001", Text: "x"},
		{Method: "usergroups.users.list", Usergroup: "S0ONCALL01"},
		{Method: "usergroups.users.list", Usergroup: "S0NOSUCH", Error: "no_such_subteam"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Calls (-want +got):\n%s", diff)
	}
	if n := len(s.Records()); n != 5 {
		t.Errorf("Records: got %d, want 5 (the refused token too)", n)
	}
	if n := len(s.Calls("chat.update")); n != 1 {
		t.Errorf("Calls(chat.update): got %d, want 1", n)
	}
	s.Reset()
	if n := len(s.Calls()); n != 0 {
		t.Errorf("after Reset: got %d calls, want 0", n)
	}
}

func TestKnownMessagesOnly(t *testing.T) {
	s := slacktest.Start(t, &slacktest.Slack{KnownMessagesOnly: true})
	_, _, _, err := client(s).UpdateMessageContext(context.Background(), slacktest.Channel, "1700000000.000001", slack.MsgOptionText("x", false))
	if err == nil || err.Error() != "message_not_found" {
		t.Errorf("chat.update of an unknown message: got %v, want message_not_found", err)
	}
}

// Fail: per method, N times or always, with a Slack error, an HTTP status, a Retry-After or a
// late answer; slack-go sees each as it would see Slack's.
func TestFail(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name   string
		faults map[string][]slacktest.Fault
		// check runs the calls and checks each answer.
		check func(t *testing.T, api *slack.Client)
		// wantFaults is how many calls a fault answered.
		wantFaults int
	}{
		{
			name:   "N times, then Slack again",
			faults: map[string][]slacktest.Fault{"chat.postMessage": {{Error: "fatal_error", Times: 2}}},
			check: func(t *testing.T, api *slack.Client) {
				for i := range 2 {
					if _, _, err := post(ctx, api, "x"); err == nil || err.Error() != "fatal_error" {
						t.Errorf("call %d: got %v, want fatal_error", i+1, err)
					}
				}
				if _, _, err := post(ctx, api, "x"); err != nil {
					t.Errorf("third call: got %v, want success", err)
				}
			},
			wantFaults: 2,
		},
		{
			name:   "always, for that method only",
			faults: map[string][]slacktest.Fault{"chat.update": {{Error: "cant_update_message"}}},
			check: func(t *testing.T, api *slack.Client) {
				channel, ts, err := post(ctx, api, "x")
				if err != nil {
					t.Fatalf("chat.postMessage: %v", err)
				}
				for i := range 3 {
					if _, _, _, err := api.UpdateMessageContext(ctx, channel, ts, slack.MsgOptionText("y", false)); err == nil || err.Error() != "cant_update_message" {
						t.Errorf("update %d: got %v, want cant_update_message", i+1, err)
					}
				}
			},
			wantFaults: 3,
		},
		{
			name:   "rate limited with Retry-After",
			faults: map[string][]slacktest.Fault{slacktest.AnyMethod: {{RetryAfter: 1500 * time.Millisecond, Times: 1}}},
			check: func(t *testing.T, api *slack.Client) {
				_, _, err := post(ctx, api, "x")
				var rl *slack.RateLimitedError
				if !errors.As(err, &rl) || rl.RetryAfter != 2*time.Second {
					t.Errorf("got %v, want a RateLimitedError with RetryAfter 2s (rounded up)", err)
				}
			},
			wantFaults: 1,
		},
		{
			name:   "HTTP status",
			faults: map[string][]slacktest.Fault{"chat.postMessage": {{Status: http.StatusServiceUnavailable, Times: 1}}},
			check: func(t *testing.T, api *slack.Client) {
				_, _, err := post(ctx, api, "x")
				var sc slack.StatusCodeError
				if !errors.As(err, &sc) || sc.Code != http.StatusServiceUnavailable {
					t.Errorf("got %v, want StatusCodeError 503", err)
				}
			},
			wantFaults: 1,
		},
		{
			name: "faults in order, the method's before AnyMethod's",
			faults: map[string][]slacktest.Fault{
				"chat.postMessage":  {{Error: "first", Times: 1}, {Error: "second", Times: 1}},
				slacktest.AnyMethod: {{Error: "any"}},
			},
			check: func(t *testing.T, api *slack.Client) {
				for _, want := range []string{"first", "second", "any", "any"} {
					if _, _, err := post(ctx, api, "x"); err == nil || err.Error() != want {
						t.Errorf("got %v, want %s", err, want)
					}
				}
			},
			wantFaults: 4,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := slacktest.Start(t, &slacktest.Slack{Token: token})
			for method, fs := range tt.faults {
				for _, f := range fs {
					s.Fail(method, f)
				}
			}
			tt.check(t, client(s))
			faults := 0
			for _, r := range s.Records() {
				if r.Fault {
					faults++
				}
			}
			if faults != tt.wantFaults {
				t.Errorf("records answered by a fault: got %d, want %d", faults, tt.wantFaults)
			}
		})
	}
}

// A late answer: the message is posted, the answer comes after the client gave up.
func TestFailLateAnswer(t *testing.T) {
	s := slacktest.Start(t, &slacktest.Slack{Token: token})
	s.Fail("chat.postMessage", slacktest.Fault{Delay: time.Second, Times: 1})
	api := client(s, slack.OptionHTTPClient(&http.Client{Timeout: 100 * time.Millisecond}))
	start := time.Now()
	if _, _, err := post(context.Background(), api, "slow"); err == nil {
		t.Fatal("post with a late answer: got nil error, want the client's timeout")
	}
	if took := time.Since(start); took > 900*time.Millisecond {
		t.Errorf("the client waited %s, want its own 100ms timeout", took)
	}
	if calls := s.Calls("chat.postMessage"); len(calls) != 1 || !calls[0].OK || calls[0].Text != "slow" {
		t.Errorf("calls %+v, want the message posted although its answer came late", calls)
	}
	// Once the fault is spent, answers are on time.
	start = time.Now()
	if _, _, err := post(context.Background(), client(s), "fast"); err != nil || time.Since(start) > 500*time.Millisecond {
		t.Errorf("second post: err %v after %s, want a prompt answer", err, time.Since(start))
	}
}

func TestClearFaults(t *testing.T) {
	s := slacktest.Start(t, &slacktest.Slack{Token: token})
	s.Fail(slacktest.AnyMethod, slacktest.Fault{Error: "fatal_error"})
	if _, _, err := post(context.Background(), client(s), "x"); err == nil {
		t.Fatal("with a fault: got nil error")
	}
	s.ClearFaults()
	if _, _, err := post(context.Background(), client(s), "x"); err != nil {
		t.Errorf("after ClearFaults: %v", err)
	}
	if calls := s.Calls(); len(calls) != 1 {
		t.Errorf("Calls: got %d, want 1 (the refused call is not one Slack answered)", len(calls))
	}
}

// The records of a stand-in that writes them can be read back, and never hold the token.
func TestRecordTo(t *testing.T) {
	path := filepath.Join(t.TempDir(), "slack.jsonl")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	s := slacktest.Start(t, &slacktest.Slack{RecordTo: f})
	if _, _, err := post(context.Background(), client(s), "hello"); err != nil {
		t.Fatal(err)
	}
	recs, err := slacktest.ReadRecords(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(s.Records(), recs); diff != "" {
		t.Errorf("records read back (-in memory +file):\n%s", diff)
	}
	if data, _ := os.ReadFile(path); strings.Contains(string(data), token) {
		t.Errorf("the record file holds the token: %s", data)
	}
	if recs, err := slacktest.ReadRecords(filepath.Join(t.TempDir(), "none.jsonl")); err != nil || recs != nil {
		t.Errorf("missing file: got %v, %v, want no records", recs, err)
	}
}
