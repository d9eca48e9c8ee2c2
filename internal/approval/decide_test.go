package approval

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/slackmessage"
)

var t0 = time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)

// openIncident is a disabled key with a cluster Aurora stopped for it: one click can fix it.
func openIncident() incident.Incident {
	return incident.Incident{
		ID: "KW-20261128-1f3a9c", Version: 4, State: incident.StateOpen,
		KeyARN:   "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
		KeyState: incident.KeyStateDisabled, Trigger: "DisableKey", LostAt: t0.Add(-time.Hour),
		Clusters: []incident.Cluster{{Identifier: "orders", Engine: "aurora-postgresql", Status: incident.StatusRecoverable,
			CanStop: true, Uses: []string{"storage"}}},
	}
}

var install = Installation{TeamID: "T0KEYWARD1", AppID: "A0KEYWARD1", ResponseURLPrefixes: []string{"http://127.0.0.1:4567/"}}

// messaged is openIncident with its Slack message recorded.
func messaged() incident.Incident {
	inc := openIncident()
	inc.Slack = &incident.SlackRef{Channel: "C0ONCALL01", TS: "1767225600.000100"}
	return inc
}

// press is user's click of action on inc's message as it is now, at t0+seconds.
func press(inc incident.Incident, user, action string, seconds int) Click {
	return Click{UserID: user, TeamID: "T0KEYWARD1", AppID: "A0KEYWARD1", ChannelID: inc.Slack.Channel, MessageTS: inc.Slack.TS,
		ResponseURL: "https://hooks.slack.com/actions/T0KEYWARD1/1/abc", ActionID: action,
		Value: slackmessage.ButtonValue(inc.ID, inc.Version), ActionTS: fmt.Sprintf("1795860000.%06d", seconds)}
}

func at(seconds int) time.Time { return t0.Add(time.Duration(seconds) * time.Second) }

// TestDecideRefusals: every refusal, each of which changes nothing.
func TestDecideRefusals(t *testing.T) {
	tests := []struct {
		name   string
		inc    func() *incident.Incident
		click  func(incident.Incident) Click
		who    Membership
		inst   Installation
		want   Refusal
		wantIs error
	}{
		{name: "another workspace", click: func(i incident.Incident) Click { c := press(i, "U1", "remediate", 1); c.TeamID = "T0EVIL"; return c }, want: RefuseWrongTeam},
		{name: "no workspace configured at all", inst: Installation{}, want: RefuseWrongTeam},
		{name: "the organisation of an org-wide install counts", inst: Installation{EnterpriseID: "E0ORG"},
			click: func(i incident.Incident) Click {
				c := press(i, "U1", "remediate", 1)
				c.EnterpriseID = "E0OTHER"
				return c
			}, want: RefuseWrongTeam},
		{name: "another app", click: func(i incident.Incident) Click { c := press(i, "U1", "remediate", 1); c.AppID = "A0OTHER"; return c }, want: RefuseWrongApp},
		{name: "a response_url on another host", click: func(i incident.Incident) Click {
			c := press(i, "U1", "remediate", 1)
			c.ResponseURL = "https://hooks.slack.com.evil.example/actions/x"
			return c
		}, want: RefuseResponseURL},
		{name: "a plain-http hooks URL", click: func(i incident.Incident) Click {
			c := press(i, "U1", "remediate", 1)
			c.ResponseURL = "http://hooks.slack.com/actions/x"
			return c
		}, want: RefuseResponseURL},
		{name: "a button keywarden did not make", click: func(i incident.Incident) Click { c := press(i, "U1", "remediate", 1); c.Value = "rm -rf"; return c }, want: RefuseBadButton},
		{name: "an unknown action", click: func(i incident.Incident) Click { return press(i, "U1", "delete_key", 1) }, want: RefuseUnknownAction},
		{name: "not an approver", who: NotMember, want: RefuseNotApprover},
		{name: "Slack did not answer the group check", who: MemberUnknown, want: RefuseCheckFailed},
		{name: "no such incident", inc: func() *incident.Incident { return nil }, want: RefuseNotFound},
		{name: "another channel", click: func(i incident.Incident) Click {
			c := press(i, "U1", "remediate", 1)
			c.ChannelID = "C0OTHER"
			return c
		}, want: RefuseWrongChannel},
		{name: "another message", click: func(i incident.Incident) Click {
			c := press(i, "U1", "remediate", 1)
			c.MessageTS = "1767225600.000200"
			return c
		}, want: RefuseWrongMessage},
		{name: "no message recorded", inc: func() *incident.Incident { i := messaged(); i.Slack = nil; return &i },
			click: func(incident.Incident) Click { i := messaged(); return press(i, "U1", "remediate", 1) }, want: RefuseWrongMessage},
		{name: "stale message", click: func(i incident.Incident) Click {
			c := press(i, "U1", "remediate", 1)
			c.Value = slackmessage.ButtonValue(i.ID, i.Version-1)
			return c
		}, want: RefuseStale, wantIs: incident.ErrStale},
		{name: "closed", inc: func() *incident.Incident { i := messaged(); i.State = incident.StateResolved; return &i }, want: RefuseClosed},
		{name: "remediating, run claimed", inc: func() *incident.Incident {
			i := messaged()
			_, _, _ = i.Approve("U9", i.Version, "c9", t0, 1, "run-9")
			_ = i.ClaimRun("run-9", "inv", t0, time.Hour)
			return &i
		}, want: RefuseRemediating},
		{name: "remediating, just approved: its own hand-off has its chance", inc: func() *incident.Incident {
			i := messaged()
			_, _, _ = i.Approve("U9", i.Version, "c9", at(0), 1, "run-9")
			return &i
		}, want: RefuseRemediating},
		{name: "intentional while remediating", inc: func() *incident.Incident {
			i := messaged()
			_, _, _ = i.Approve("U9", i.Version, "c9", t0, 1, "run-9")
			_ = i.ClaimRun("run-9", "inv", t0, time.Hour)
			return &i
		}, click: func(i incident.Incident) Click { return press(i, "U1", "intentional", 1) }, want: RefuseRemediating},
		{name: "already approved", inc: func() *incident.Incident {
			i := messaged()
			_, _, _ = i.Approve("U1", i.Version, "c0", t0, 2, "run-0")
			return &i
		}, want: RefuseAlreadyApproved, wantIs: incident.ErrAlreadyApproved},
		{name: "not fixable: key deleted", inc: func() *incident.Incident { i := messaged(); i.KeyState = incident.KeyStateDeleted; return &i }, want: RefuseNotFixable},
		{name: "a reboot of an instance that does not need one", inc: func() *incident.Incident {
			i := messaged()
			i.KeyState = incident.KeyStateEnabled
			i.Instances = []incident.Instance{{Identifier: "orders-1", ClusterIdentifier: "orders", Status: incident.StatusAvailable, LostKeyAccess: true}}
			return &i
		}, click: func(i incident.Incident) Click {
			c := press(i, "U1", slackmessage.ActionRebootInstance, 1)
			c.Value = slackmessage.RebootButtonValue(i.ID, i.Version, "orders-1")
			return c
		}, want: RefuseNoReboot},
		{name: "a reboot with the key not Enabled", inc: func() *incident.Incident {
			i := messaged()
			i.Instances = []incident.Instance{{Identifier: "orders-1", ClusterIdentifier: "orders", Status: incident.StatusAvailable, LostKeyAccess: true, NeedsReboot: true}}
			return &i
		}, click: func(i incident.Incident) Click {
			c := press(i, "U1", slackmessage.ActionRebootInstance, 1)
			c.Value = slackmessage.RebootButtonValue(i.ID, i.Version, "orders-1")
			return c
		}, want: RefuseNoReboot},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var inc *incident.Incident
			if tc.inc != nil {
				inc = tc.inc()
			} else {
				i := messaged()
				inc = &i
			}
			var before incident.Incident
			if inc != nil {
				before = *inc
			}
			ref := messaged()
			if inc != nil && inc.Slack != nil {
				ref = *inc
			}
			click := press(ref, "U1", slackmessage.ActionRemediate, 1)
			if tc.click != nil {
				click = tc.click(ref)
			}
			who := tc.who
			if who == 0 && tc.want != RefuseCheckFailed {
				who = Member
			}
			inst := install
			if tc.inst.TeamID != "" || tc.inst.EnterpriseID != "" || tc.name == "no workspace configured at all" {
				inst = tc.inst
			}
			d := Decide(inc, click, who, inst, Rules{Required: 2}, at(5))
			if d.Kind != Refused || d.Refusal != tc.want || d.Write || d.HandOff() || d.Reason == "" {
				t.Fatalf("got %+v, want refused %s with a reason, nothing to write or hand off", d, tc.want)
			}
			if tc.wantIs != nil && !errors.Is(d.Err, tc.wantIs) {
				t.Errorf("err %v, want %v", d.Err, tc.wantIs)
			}
			if inc != nil && (inc.Version != before.Version || inc.State != before.State || len(inc.Timeline) != len(before.Timeline) ||
				len(inc.Approvals) != len(before.Approvals) || inc.Remediation.RunID != before.Remediation.RunID) {
				t.Errorf("a refused click changed the incident")
			}
		})
	}
}

// TestDecideTransitions: every transition, the two-person rule, a reopen, and the answers to a
// click whose write landed but whose answer was lost.
func TestDecideTransitions(t *testing.T) {
	rules := Rules{Required: 2}
	inc := messaged()
	decide := func(c Click, seconds int) Decision {
		t.Helper()
		d := Decide(&inc, c, Member, install, rules, at(seconds))
		if d.Write {
			inc.Version++ // as the store does
		}
		return d
	}

	if d := decide(press(inc, "U1", slackmessage.ActionAcknowledge, 1), 1); d.Kind != Acknowledged || !d.Write || inc.Remediation.State != "" {
		t.Fatalf("acknowledge: %+v, remediation %q; want an entry and no remediation state", d, inc.Remediation.State)
	}
	first := press(inc, "U1", slackmessage.ActionRemediate, 2)
	if d := decide(first, 2); d.Kind != Approved || d.Approvals != 1 || d.HandOff() {
		t.Fatalf("first approval: %+v", d)
	}
	// The same click again (its write's answer was lost; Slack or the user retried): the
	// approval is there, it is said so, and nothing is written twice.
	if d := decide(first, 3); d.Kind != Recorded || d.Write || d.Approvals != 1 {
		t.Fatalf("the first click again: %+v, want Recorded, nothing written", d)
	}
	if d := decide(press(inc, "U1", slackmessage.ActionRemediate, 4), 4); d.Refusal != RefuseAlreadyApproved {
		t.Fatalf("the same approver's second click: %+v", d)
	}
	second := press(inc, "U2", slackmessage.ActionRemediate, 5)
	d := decide(second, 5)
	if d.Kind != Started || d.RunID != "run:1795860000.000005:U2" || len(d.ApprovedBy) != 2 || inc.State != incident.StateRemediating {
		t.Fatalf("second approver: %+v, state %s", d, inc.State)
	}
	run := d.RunID
	// The starting click retried after its answer was lost: hand the same run off again.
	if d := decide(second, 6); d.Kind != Resume || d.RunID != run || d.Write {
		t.Fatalf("the starting click again: %+v, want Resume of %s", d, run)
	}
	// Acknowledge while remediating adds an entry and changes no remediation state.
	if d := decide(press(inc, "U3", slackmessage.ActionAcknowledge, 7), 7); d.Kind != Acknowledged || inc.Remediation.State != incident.RemediationApproved || inc.Remediation.RunID != run {
		t.Fatalf("acknowledge while remediating: %+v, remediation %+v", d, inc.Remediation)
	}
	// The next approver's click, once the run has sat approved and unclaimed: hand it off again.
	if d := decide(press(inc, "U3", slackmessage.ActionRemediate, 30), 30); d.Kind != Resume || d.RunID != run || d.Write {
		t.Fatalf("a click on an approved, unstarted run: %+v, want Resume", d)
	}
	// The run fails and is given back: a fresh round, the old approvals do not count.
	if err := inc.ClaimRun(run, "inv", at(31), time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := inc.GiveBack("EnableKey failed", at(40)); err != nil {
		t.Fatal(err)
	}
	inc.Version++
	if d := decide(press(inc, "U1", slackmessage.ActionRemediate, 50), 50); d.Kind != Approved || d.Approvals != 1 {
		t.Fatalf("first approval after the reopen: %+v, want 1 of 2", d)
	}
	if d := decide(press(inc, "U2", slackmessage.ActionRemediate, 51), 51); d.Kind != Started || d.RunID == run {
		t.Fatalf("second approval after the reopen: %+v, want a new run", d)
	}
}

func TestDecideIntentionalAndReboot(t *testing.T) {
	inc := messaged()
	c := press(inc, "U1", slackmessage.ActionIntentional, 1)
	if d := Decide(&inc, c, Member, install, Rules{}, at(1)); d.Kind != Intentional || !d.Write || inc.State != incident.StateIntentional {
		t.Fatalf("intentional: %+v, state %s", d, inc.State)
	}
	inc.Version++
	if d := Decide(&inc, c, Member, install, Rules{}, at(2)); d.Kind != Intentional || d.Write {
		t.Fatalf("the same click again: %+v, want it recognised, nothing written", d)
	}
	if d := Decide(&inc, press(inc, "U2", slackmessage.ActionAcknowledge, 3), Member, install, Rules{}, at(3)); d.Refusal != RefuseClosed {
		t.Fatalf("a click on a closed incident: %+v", d)
	}

	// Reboot: the key is back, the run done, and one instance still reports the loss after
	// the grace period.
	inc = messaged()
	inc.KeyState = incident.KeyStateEnabled
	inc.Clusters[0].Status, inc.Clusters[0].LiveKeyARN = incident.StatusAvailable, inc.KeyARN
	inc.Instances = []incident.Instance{{Identifier: "orders-1", ClusterIdentifier: "orders", Status: incident.StatusAvailable, LostKeyAccess: true, NeedsReboot: true}}
	reboot := func(user string, seconds int) Decision {
		c := press(inc, user, slackmessage.ActionRebootInstance, seconds)
		c.Value = slackmessage.RebootButtonValue(inc.ID, inc.Version, "orders-1")
		d := Decide(&inc, c, Member, install, Rules{Required: 2}, at(seconds))
		if d.Write {
			inc.Version++
		}
		return d
	}
	if d := reboot("U1", 1); d.Kind != RebootApproved || d.HandOff() || d.Approvals != 1 {
		t.Fatalf("first reboot approval: %+v", d)
	}
	if d := reboot("U1", 2); d.Refusal != RefuseAlreadyApproved {
		t.Fatalf("same approver again: %+v", d)
	}
	d := reboot("U2", 3)
	if d.Kind != RebootApproved || !d.HandOff() || d.Instance != "orders-1" || len(d.ApprovedBy) != 2 {
		t.Fatalf("second reboot approval: %+v, want the reboot handed off", d)
	}
	if err := inc.ClaimReboot("orders-1", d.RunID); err != nil {
		t.Fatal(err)
	}
	if err := inc.ClaimReboot("orders-1", d.RunID); !errors.Is(err, incident.ErrRunClaimed) {
		t.Errorf("second claim of the reboot: %v", err)
	}
}
