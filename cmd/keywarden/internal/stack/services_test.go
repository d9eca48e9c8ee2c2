package stack

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/keywarden/keywarden/internal/slacktest"
	"github.com/slack-go/slack"
)

// startServices runs Serve in-process on a free loopback port over a test stack whose
// ServicesPort is that port, so functions it invokes are given its URLs, and stops it when the
// test ends.
func startServices(t *testing.T, opts Options) (*Stack, *syncBuffer) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	opts.ServicesPort = l.Addr().(*net.TCPAddr).Port
	s, logs := newStack(t, opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, l, s) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s, logs
}

const testToken = "xoxb-test-token-must-never-be-recorded"

// incidentBlocks is a message shaped like the incident message: a header, a section with
// fields, a context line and the three buttons, one with a confirm dialog.
func incidentBlocks(state string) []slack.Block {
	text := func(s string) *slack.TextBlockObject {
		return slack.NewTextBlockObject(slack.MarkdownType, s, false, false)
	}
	plain := func(s string) *slack.TextBlockObject {
		return slack.NewTextBlockObject(slack.PlainTextType, s, false, false)
	}
	remediate := slack.NewButtonBlockElement("remediate", "inc-1:3", plain("Re-enable key & restart clusters")).WithStyle(slack.StylePrimary)
	remediate.Confirm = slack.NewConfirmationBlockObject(plain("Re-enable?"), text("1. EnableKey\n2. StartDBCluster"), plain("Run"), plain("Cancel"))
	return []slack.Block{
		slack.NewHeaderBlock(plain("KMS key " + state)),
		slack.NewSectionBlock(text("*Key* alias/orders\n*Deadline* 2026-01-08 12:00 UTC"), []*slack.TextBlockObject{text("*orders-db* aurora-postgresql")}, nil),
		slack.NewContextBlock("", text("DisableKey by alice from 203.0.113.9")),
		slack.NewActionBlock("actions",
			remediate,
			slack.NewButtonBlockElement("acknowledge", "inc-1:3", plain("Acknowledge")),
			slack.NewButtonBlockElement("intentional", "inc-1:3", plain("Intended")).WithStyle(slack.StyleDanger),
		),
	}
}

// TestSlackStandIn drives the stand-in with a real slack-go client, the way the functions do.
func TestSlackStandIn(t *testing.T) {
	s, logs := startServices(t, Options{SlackUsergroups: map[string][]string{"S0ONCALL01": {"U0APPROVR1", "U0APPROVR2"}}})
	api := slack.New(testToken, slack.OptionAPIURL(s.SlackAPIURL()))
	ctx := context.Background()
	tsPattern := regexp.MustCompile(`^\d{10}\.\d{6}$`)

	if _, err := api.AuthTestContext(ctx); err != nil {
		t.Fatalf("auth.test: %v", err)
	}

	channel, ts, err := api.PostMessageContext(ctx, "#keywarden-local", slack.MsgOptionText("KMS key disabled", false), slack.MsgOptionBlocks(incidentBlocks("disabled")...))
	if err != nil {
		t.Fatalf("chat.postMessage: %v", err)
	}
	if !regexp.MustCompile(`^C[A-Z0-9]{8,}$`).MatchString(channel) || !tsPattern.MatchString(ts) {
		t.Fatalf("chat.postMessage answered channel %q ts %q, want a channel ID and a Slack ts", channel, ts)
	}
	// The same name gives the same ID: what a second process or a second run relies on.
	channel2, _, err := api.PostMessageContext(ctx, "keywarden-local", slack.MsgOptionText("second", false))
	if err != nil || channel2 != channel {
		t.Errorf("second post to the channel: channel %q, err %v; want %q", channel2, err, channel)
	}

	_, replyTS, err := api.PostMessageContext(ctx, channel, slack.MsgOptionText("Alice acknowledged", false), slack.MsgOptionTS(ts))
	if err != nil || replyTS == ts {
		t.Fatalf("thread reply: ts %q, err %v; want a new ts", replyTS, err)
	}

	gotChannel, gotTS, gotText, err := api.UpdateMessageContext(ctx, channel, ts, slack.MsgOptionText("KMS key remediating", false), slack.MsgOptionBlocks(incidentBlocks("remediating")...))
	if err != nil {
		t.Fatalf("chat.update: %v", err)
	}
	if gotChannel != channel || gotTS != ts || gotText != "KMS key remediating" {
		t.Errorf("chat.update answered %q %q %q, want %q %q and the new text", gotChannel, gotTS, gotText, channel, ts)
	}

	for _, tc := range []struct{ name, channel, ts, want string }{
		{"unknown ts", channel, "1700000000.000001", "message_not_found"},
		{"channel name instead of ID", "#keywarden-local", ts, "channel_not_found"},
	} {
		_, _, _, err := api.UpdateMessageContext(ctx, tc.channel, tc.ts, slack.MsgOptionText("x", false))
		if err == nil || err.Error() != tc.want {
			t.Errorf("chat.update with %s: got %v, want %s", tc.name, err, tc.want)
		}
	}

	ephemeralTS, err := api.PostEphemeralContext(ctx, channel, "U0STRANGER", slack.MsgOptionText("You are not allowed to do that.", false))
	if err != nil || !tsPattern.MatchString(ephemeralTS) {
		t.Errorf("chat.postEphemeral: ts %q, err %v", ephemeralTS, err)
	}

	members, err := api.GetUserGroupMembersContext(ctx, "S0ONCALL01")
	if err != nil {
		t.Fatalf("usergroups.users.list: %v", err)
	}
	if diff := cmp.Diff([]string{"U0APPROVR1", "U0APPROVR2"}, members); diff != "" {
		t.Errorf("group members (-want +got):\n%s", diff)
	}
	if _, err := api.GetUserGroupMembersContext(ctx, "S0NOSUCH"); err == nil || err.Error() != "no_such_subteam" {
		t.Errorf("unknown group: got %v, want no_such_subteam", err)
	}

	// A JSON body, as slack-go sends some methods, with blocks as an array.
	blocks, _ := json.Marshal(incidentBlocks("json"))
	body, _ := json.Marshal(map[string]any{"channel": channel, "text": "as JSON", "thread_ts": ts, "blocks": json.RawMessage(blocks)})
	req, _ := http.NewRequest(http.MethodPost, s.SlackAPIURL()+"chat.postMessage", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var answer struct {
		OK bool   `json:"ok"`
		TS string `json:"ts"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&answer)
	resp.Body.Close()
	if !answer.OK || answer.TS == "" {
		t.Errorf("JSON chat.postMessage answered %+v, want ok and a ts", answer)
	}

	records, err := s.SlackRecords()
	if err != nil {
		t.Fatalf("SlackRecords: %v", err)
	}
	type summary struct{ Method, Channel, TS, ThreadTS, User, Usergroup, Text, Error string }
	var got []summary
	for _, r := range records {
		got = append(got, summary{r.Method, r.Channel, r.TS, r.ThreadTS, r.User, r.Usergroup, r.Text, r.Error})
	}
	want := []summary{
		{Method: "auth.test"},
		{Method: "chat.postMessage", Channel: channel, TS: ts, Text: "KMS key disabled"},
		{Method: "chat.postMessage", Channel: channel, TS: records[2].TS, Text: "second"},
		{Method: "chat.postMessage", Channel: channel, TS: replyTS, ThreadTS: ts, Text: "Alice acknowledged"},
		{Method: "chat.update", Channel: channel, TS: ts, Text: "KMS key remediating"},
		{Method: "chat.update", Channel: channel, TS: "1700000000.000001", Text: "x", Error: "message_not_found"},
		{Method: "chat.update", Channel: "#keywarden-local", TS: ts, Text: "x", Error: "channel_not_found"},
		{Method: "chat.postEphemeral", Channel: channel, TS: ephemeralTS, User: "U0STRANGER", Text: "You are not allowed to do that."},
		{Method: "usergroups.users.list", Usergroup: "S0ONCALL01"},
		{Method: "usergroups.users.list", Usergroup: "S0NOSUCH", Error: "no_such_subteam"},
		{Method: "chat.postMessage", Channel: channel, TS: answer.TS, ThreadTS: ts, Text: "as JSON"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("records (-want +got):\n%s", diff)
	}

	// The records served over HTTP are the same records.
	resp, err = http.Get(s.ServicesURL() + SlackRecordedPath)
	if err != nil {
		t.Fatal(err)
	}
	var served []slacktest.Record
	if err := json.NewDecoder(resp.Body).Decode(&served); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if diff := cmp.Diff(records, served); diff != "" {
		t.Errorf("GET %s differs from slack.jsonl (-file +served):\n%s", SlackRecordedPath, diff)
	}

	// The message as it reads now: updated in place, with its buttons.
	current := slacktest.CurrentMessages(records)
	if len(current) != 4 || current[0].TS != ts || current[0].Text != "KMS key remediating" {
		t.Fatalf("CurrentMessages: %+v; want 4 messages, the first updated", current)
	}
	wantButtons := []slacktest.Button{
		{ActionID: "remediate", Text: "Re-enable key & restart clusters", Value: "inc-1:3", Style: "primary", BlockID: "actions"},
		{ActionID: "acknowledge", Text: "Acknowledge", Value: "inc-1:3", BlockID: "actions"},
		{ActionID: "intentional", Text: "Intended", Value: "inc-1:3", Style: "danger", BlockID: "actions"},
	}
	if diff := cmp.Diff(wantButtons, current[0].Buttons()); diff != "" {
		t.Errorf("buttons (-want +got):\n%s", diff)
	}
	wantTexts := []string{"KMS key remediating", "*Key* alias/orders\n*Deadline* 2026-01-08 12:00 UTC", "*orders-db* aurora-postgresql", "DisableKey by alice from 203.0.113.9"}
	if diff := cmp.Diff(wantTexts, current[0].BlockTexts()); diff != "" {
		t.Errorf("block texts (-want +got):\n%s", diff)
	}

	file, err := os.ReadFile(s.SlackRecordPath())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(file), testToken) || strings.Contains(logs.String(), testToken) {
		t.Errorf("the token reached the records or the log")
	}
}

// TestSlackStandInRefusesNoToken checks Slack's not_authed, without a token to leak.
func TestSlackStandInRefusesNoToken(t *testing.T) {
	s, _ := startServices(t, Options{})
	resp, err := http.PostForm(s.SlackAPIURL()+"chat.postMessage", map[string][]string{"channel": {"#x"}, "text": {"hi"}})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var answer map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&answer)
	if answer["ok"] != false || answer["error"] != "not_authed" {
		t.Errorf("answer %v, want ok false, error not_authed", answer)
	}
}

func TestParseUsergroups(t *testing.T) {
	got, err := ParseUsergroups("S0ONCALL01=U0APPROVR1,U0APPROVR2; S0EMPTY=")
	if err != nil {
		t.Fatalf("ParseUsergroups: %v", err)
	}
	if diff := cmp.Diff(map[string][]string{"S0ONCALL01": {"U0APPROVR1", "U0APPROVR2"}, "S0EMPTY": {}}, got); diff != "" {
		t.Errorf("groups (-want +got):\n%s", diff)
	}
	if _, err := ParseUsergroups("S0ONCALL01"); err == nil {
		t.Errorf("ParseUsergroups without '=': got nil error")
	}
}
