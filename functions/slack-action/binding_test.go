package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/keywarden/keywarden/internal/awstest"
	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/incident/dynamostore"
	"github.com/keywarden/keywarden/internal/slackmessage"
	"github.com/keywarden/keywarden/internal/slacktest"
)

// reclick is clickBody with one payload field changed: a click from elsewhere.
func reclick(sc scenario, user, action string, version int64, change func(p map[string]any)) []byte {
	form, _ := url.ParseQuery(string(clickBody(sc, user, action, version)))
	var p map[string]any
	_ = json.Unmarshal([]byte(form.Get("payload")), &p)
	change(p)
	js, _ := json.Marshal(p)
	return []byte(url.Values{"payload": {string(js)}}.Encode())
}

// TestClickBoundToItsMessage: a click from another channel, message, workspace or app, or
// with a response_url Slack did not make, changes nothing and hands nothing off; one from
// elsewhere than the installed app gets no answer at all (its URLs are not ours to call).
func TestClickBoundToItsMessage(t *testing.T) {
	eachRig(t, 1, func(t *testing.T, r *rig) {
		sc := r.scenario(t)
		tests := []struct {
			name     string
			change   func(p map[string]any)
			answered bool
		}{
			{"another channel", func(p map[string]any) {
				p["channel"] = map[string]any{"id": "C0ELSEWHERE"}
				p["container"].(map[string]any)["channel_id"] = "C0ELSEWHERE"
			}, true},
			{"another message", func(p map[string]any) {
				p["container"].(map[string]any)["message_ts"] = "1111111111.000001"
			}, true},
			{"another workspace", func(p map[string]any) {
				p["team"] = map[string]any{"id": "T0OTHERORG"}
				p["user"].(map[string]any)["team_id"] = "T0OTHERORG"
			}, false},
			{"another app", func(p map[string]any) { p["api_app_id"] = "A0IMPOSTOR" }, false},
			{"a foreign response_url", func(p map[string]any) { p["response_url"] = "https://attacker.example/hook" }, false},
			{"a look-alike hooks host", func(p map[string]any) { p["response_url"] = "https://hooks.slack.com.attacker.example/x" }, false},
		}
		for _, tc := range tests {
			r.slack.Reset()
			before := r.get(t, sc.inc.ID)
			if resp := r.do(t, signed(reclick(sc, approver, slackmessage.ActionRemediate, before.Version, tc.change), signingSecret, time.Now())); resp.StatusCode != 200 {
				t.Fatalf("%s: status %d", tc.name, resp.StatusCode)
			}
			unchanged(t, before, r.get(t, sc.inc.ID))
			if n := len(r.lambda.invoked()); n != 0 {
				t.Errorf("%s: %d hand-offs, want none", tc.name, n)
			}
			replies := append(r.ephemerals(approver), texts(r.slack.Calls("response_url"))...)
			switch {
			case tc.answered && (len(replies) != 1 || !strings.Contains(replies[0], "not on this incident's current message")):
				t.Errorf("%s: replies %q, want one saying the button is not on the incident's message", tc.name, replies)
			case !tc.answered && len(r.slack.Records()) != 0:
				t.Errorf("%s: Slack was called (%+v), want no call at all", tc.name, r.slack.Records())
			}
		}
	})
}

func texts(recs []slacktest.Record) []string {
	var out []string
	for _, c := range recs {
		out = append(out, c.Text)
	}
	return out
}

// TestEphemeralFallsBackToResponseURL: when chat.postEphemeral fails (the clicker is not in
// the channel, the token was revoked), the reply goes through the click's response_url.
func TestEphemeralFallsBackToResponseURL(t *testing.T) {
	for _, code := range []string{"user_not_in_channel", "token_revoked"} {
		t.Run(code, func(t *testing.T) {
			r := newMemRig(t, 2)
			sc := r.scenario(t)
			r.slack.Fail("chat.postEphemeral", slacktest.Fault{Error: code})
			r.click(t, sc, approver, slackmessage.ActionRemediate, sc.inc.Version)
			got := texts(r.slack.Calls("response_url"))
			if len(got) != 1 || !strings.Contains(got[0], "Your approval is recorded (1 of 2)") {
				t.Errorf("response_url posts: %q, want the approval reply", got)
			}
		})
	}
}

// newFaultRig builds the rig on the real store, with the fault proxy between it and moto, and
// returns the same table's store straight on moto, to read what landed whatever the proxy does.
func newFaultRig(t *testing.T) (*rig, *awstest.FaultProxy, *dynamostore.Store) {
	t.Helper()
	moto := awstest.Moto(t)
	proxy := awstest.NewFaultProxy(t, moto)
	cfg := awstest.Serial(awstest.Config(t, proxy.URL))
	db := dynamodb.NewFromConfig(cfg)
	table := fmt.Sprintf("slack-action-fault-%d", rand.Int64())
	if err := dynamostore.CreateTable(context.Background(), db, table); err != nil {
		t.Fatal(err)
	}
	direct := dynamostore.New(dynamodb.NewFromConfig(awstest.Config(t, moto)), table)
	return build(t, 1, cfg, dynamostore.New(db, table), table), proxy, direct
}

// TestClickNotRecorded: DynamoDB refuses the click's write (AccessDenied), or is down for
// the write and the read-back alike. Nothing changes and nothing is handed off, and the
// approver is told which: nothing was done, or it could not be confirmed either way.
func TestClickNotRecorded(t *testing.T) {
	anyCall := func(*http.Request, []byte) bool { return true }
	for _, tc := range []struct {
		name  string
		fault awstest.Fault
		reply string
	}{
		{name: "write denied", reply: "could not record your click, so nothing was done",
			fault: awstest.Fault{Match: awstest.Op("TransactWriteItems"), Times: -1, Mode: awstest.Answer, Body: awstest.AccessDenied("not authorized to perform: dynamodb:TransactWriteItems")}},
		{name: "store down", reply: "could not confirm whether it took effect",
			fault: awstest.Fault{Match: anyCall, Times: -1, Mode: awstest.Answer500}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, proxy, direct := newFaultRig(t)
			sc := r.scenario(t)
			f := proxy.Arm(&tc.fault)
			r.click(t, sc, approver, slackmessage.ActionRemediate, sc.inc.Version)
			if f.Fired() == 0 {
				t.Fatal("the fault never fired")
			}
			got, err := direct.Get(context.Background(), sc.inc.ID)
			if err != nil {
				t.Fatal(err)
			}
			unchanged(t, sc.inc, got)
			if reqs := r.remediationRequests(t); len(reqs) != 0 {
				t.Errorf("hand-offs: got %+v, want none", reqs)
			}
			if e := r.ephemerals(approver); len(e) != 1 || !strings.Contains(e[0], tc.reply) {
				t.Errorf("ephemerals: got %q, want one saying %q", e, tc.reply)
			}
		})
	}
}

// TestApproverCheckFails: Slack does not answer usergroups.users.list, so whether a group
// member may approve is unknown. Nothing changes, nothing is handed off, nothing is kept as a
// refusal, and the member is told the check failed, not that they are no approver.
func TestApproverCheckFails(t *testing.T) {
	eachRig(t, 1, func(t *testing.T, r *rig) {
		sc := r.scenario(t)
		r.slack.Fail("usergroups.users.list", slacktest.Fault{Error: "fatal_error"})
		r.click(t, sc, member, slackmessage.ActionRemediate, sc.inc.Version)
		got := r.get(t, sc.inc.ID)
		unchanged(t, sc.inc, got)
		if n := len(refusals(got, member)); n != 0 {
			t.Errorf("refusals of %s: got %d, want 0", member, n)
		}
		if reqs := r.remediationRequests(t); len(reqs) != 0 {
			t.Errorf("hand-offs: got %+v, want none", reqs)
		}
		if e := r.ephemerals(member); len(e) != 1 || !strings.Contains(e[0], "could not check whether you may approve") {
			t.Errorf("ephemerals: got %q, want one saying the check failed", e)
		}
	})
}

// TestApprovingWriteAnswerLost: the approving write lands but its answer is lost (the fault
// proxy answers 500 after DynamoDB applied it). The click is not told "nothing was done": the
// re-read finds its approval, the run is handed off once, and the approver is told so.
func TestApprovingWriteAnswerLost(t *testing.T) {
	r, proxy, _ := newFaultRig(t)
	sc := r.scenario(t)
	lost := proxy.Arm(&awstest.Fault{Match: awstest.Op("TransactWriteItems"), Times: 1, Mode: awstest.Answer500})
	r.click(t, sc, approver, slackmessage.ActionRemediate, sc.inc.Version)
	if lost.Fired() != 1 {
		t.Fatalf("the fault fired %d times, want 1", lost.Fired())
	}
	got := r.get(t, sc.inc.ID)
	if got.State != incident.StateRemediating || got.Remediation.State != incident.RemediationApproved || len(got.Approvals) != 1 {
		t.Fatalf("state %s, remediation %s, %d approvals: want remediating under one approval", got.State, got.Remediation.State, len(got.Approvals))
	}
	reqs := r.remediationRequests(t)
	if len(reqs) != 1 || reqs[0].RunID != got.Remediation.RunID {
		t.Errorf("hand-offs %+v, want run %s once", reqs, got.Remediation.RunID)
	}
	for _, e := range r.ephemerals(approver) {
		if strings.Contains(e, "nothing was done") || strings.Contains(e, "Nothing was done") || strings.Contains(e, "out of date") {
			t.Errorf("the approver was told %q after a click that took effect", e)
		}
	}
}

// TestUnsignedRefusedCheaply: a request without Slack's signature gets 401 before any Slack,
// store or Lambda call: a flood of them costs no more than the signature check.
func TestUnsignedRefusedCheaply(t *testing.T) {
	r := newMemRig(t, 1)
	sc := r.scenario(t)
	before := r.get(t, sc.inc.ID)
	req := signed(clickBody(sc, approver, slackmessage.ActionRemediate, before.Version), signingSecret, time.Now())
	delete(req.Headers, "x-slack-signature")
	start := time.Now()
	if resp := r.do(t, req); resp.StatusCode != 401 {
		t.Fatalf("unsigned: status %d, want 401", resp.StatusCode)
	}
	if took := time.Since(start); took > 50*time.Millisecond {
		t.Errorf("the refusal took %s", took)
	}
	if n := len(r.slack.Records()); n != 0 || len(r.lambda.invoked()) != 0 {
		t.Errorf("%d Slack calls and %d invokes for an unsigned request, want none", n, len(r.lambda.invoked()))
	}
	unchanged(t, before, r.get(t, sc.inc.ID))
}

// TestRebootInstanceClick: the Reboot instance button's click, by an approver, on an instance
// still reporting the loss after the grace period, hands that one reboot off (its own run, the
// instance named) and nothing else.
func TestRebootInstanceClick(t *testing.T) {
	r := newMemRig(t, 1)
	sc := r.scenario(t)
	inc, err := r.store.Update(context.Background(), sc.inc.ID, func(i *incident.Incident) error {
		i.KeyState = incident.KeyStateEnabled
		i.Clusters[1].LiveKeyARN = i.KeyARN
		i.Instances = append(i.Instances, incident.Instance{Identifier: sc.running + "-1", ClusterIdentifier: sc.running,
			Status: incident.StatusAvailable, LostKeyAccess: true, NeedsReboot: true})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	body := reclick(sc, approver, slackmessage.ActionRebootInstance, inc.Version, func(p map[string]any) {
		p["actions"].([]any)[0].(map[string]any)["value"] = slackmessage.RebootButtonValue(inc.ID, inc.Version, sc.running+"-1")
		p["actions"].([]any)[0].(map[string]any)["block_id"] = slackmessage.RebootBlockID
	})
	r.do(t, signed(body, signingSecret, time.Now()))
	reqs := r.remediationRequests(t)
	if len(reqs) != 1 || reqs[0].Instance != sc.running+"-1" || reqs[0].RunID == "" {
		t.Fatalf("hand-offs %+v, want the reboot of %s-1", reqs, sc.running)
	}
	got := r.get(t, inc.ID)
	if in := got.Instances[len(got.Instances)-1]; in.Reboot == nil || in.Reboot.State != incident.RemediationApproved || in.Reboot.RunID != reqs[0].RunID {
		t.Errorf("instance %+v, want its reboot approved under %s", in, reqs[0].RunID)
	}
	if got.State != incident.StateOpen {
		t.Errorf("state %s: a reboot approval must not start the one-click remediation", got.State)
	}
	if e := r.ephemerals(approver); len(e) != 1 || !strings.Contains(e[0], "reboot") {
		t.Errorf("ephemerals %q", e)
	}
}
