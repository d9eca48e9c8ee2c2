package approval

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/slackui"
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

// act is user's click of action at t0+seconds on the message at inc's version.
func act(inc incident.Incident, user, action string, seconds, required int) Act {
	return Act{User: user, Action: action, Version: inc.Version, ActionTS: fmt.Sprintf("1795860000.%06d", seconds),
		At: t0.Add(time.Duration(seconds) * time.Second), Required: required}
}

// TestTwoPersonRule is the approval rule on its own: two distinct approvers start remediation,
// the same approver twice counts once, and an incident given back to the approvers needs a
// fresh quorum — the approvals spent on the failed run do not count again.
func TestTwoPersonRule(t *testing.T) {
	inc := openIncident()
	step := func(user string, seconds int) (Outcome, error) {
		t.Helper()
		out, err := Apply(&inc, act(inc, user, slackui.ActionRemediate, seconds, 2))
		inc.Version++ // as the store would after a write
		return out, err
	}

	if out, err := step("U0APPROVR1", 1); err != nil || out.Started || out.Approvals != 1 {
		t.Fatalf("first approval: %+v, %v, want 1 of 2 and not started", out, err)
	}
	for k := range 10 {
		if _, err := step("U0APPROVR1", 2+k); !errors.Is(err, incident.ErrAlreadyApproved) {
			t.Fatalf("the same approver again: err %v, want ErrAlreadyApproved", err)
		}
	}
	if inc.State != incident.StateOpen || len(inc.Approvals) != 1 {
		t.Fatalf("after one approver clicked 11 times: state %s, %d approvals, want open and 1", inc.State, len(inc.Approvals))
	}
	out, err := step("U0APPROVR2", 20)
	want := Outcome{Approvals: 2, Required: 2, Started: true, RunID: "run:1795860000.000020:U0APPROVR2", ApprovedBy: []string{"U0APPROVR1", "U0APPROVR2"}}
	if err != nil || !cmp.Equal(out, want) {
		t.Fatalf("second approver: %+v, %v, want %+v", out, err, want)
	}
	if inc.State != incident.StateRemediating || inc.Remediation.RunID != want.RunID || inc.Remediation.State != incident.RemediationApproved {
		t.Fatalf("after quorum: state %s, remediation %+v, want remediating under %s", inc.State, inc.Remediation, want.RunID)
	}
	if _, err := step("U0APPROVR3", 21); !errors.Is(err, ErrRemediating) {
		t.Errorf("approval while remediating: err %v, want ErrRemediating", err)
	}

	// The run fails and the incident goes back to the approvers.
	if err := inc.GiveBack("StartDBCluster failed", t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if out, err := step("U0APPROVR1", 70); err != nil || out.Started || out.Approvals != 1 {
		t.Fatalf("first approval after the give-back: %+v, %v, want 1 of 2 (a fresh quorum)", out, err)
	}
	if _, err := step("U0APPROVR1", 71); !errors.Is(err, incident.ErrAlreadyApproved) {
		t.Fatalf("the same approver again in the new round: err %v, want ErrAlreadyApproved", err)
	}
	if inc.State != incident.StateOpen {
		t.Fatalf("one approver restarted the run alone: state %s", inc.State)
	}
	out, err = step("U0APPROVR2", 80)
	if err != nil || !out.Started || out.RunID != "run:1795860000.000080:U0APPROVR2" {
		t.Fatalf("second approver of the new round: %+v, %v, want a new run", out, err)
	}
	if diff := cmp.Diff([]string{"U0APPROVR1", "U0APPROVR2"}, inc.Remediation.ApprovedBy); diff != "" {
		t.Errorf("approved by (-want +got):\n%s", diff)
	}
}

func TestApply(t *testing.T) {
	closed := func(i *incident.Incident) {
		if err := i.MarkLost(incident.Keywarden, "every cluster turned terminal", t0); err != nil {
			panic(err)
		}
	}
	remediating := func(i *incident.Incident) {
		if err := i.StartRemediation("run:x", t0); err != nil {
			panic(err)
		}
	}
	tests := []struct {
		name     string
		setup    func(*incident.Incident)
		action   string
		required int
		wantErr  error
		wantOut  Outcome
		check    func(t *testing.T, inc incident.Incident)
	}{
		{
			name: "acknowledge", action: slackui.ActionAcknowledge,
			check: func(t *testing.T, inc incident.Incident) {
				e, ok := inc.LastEntry(incident.KindClick)
				want := incident.Entry{ID: "click:1795860000.000001:U0APPROVR1", Seq: 1, At: t0.Add(time.Second), Kind: incident.KindClick,
					Actor: "U0APPROVR1", Result: "acknowledge", Source: "click:1795860000.000001:U0APPROVR1", Detail: "acknowledge: on it"}
				if !ok || !cmp.Equal(e, want) {
					t.Errorf("click entry: got %+v, want %+v", e, want)
				}
				if inc.State != incident.StateOpen {
					t.Errorf("state: got %s, want open", inc.State)
				}
			},
		},
		{
			name: "acknowledge while remediating", setup: remediating, action: slackui.ActionAcknowledge,
			check: func(t *testing.T, inc incident.Incident) {
				if _, ok := inc.LastEntry(incident.KindClick); !ok || inc.State != incident.StateRemediating {
					t.Errorf("state %s, click recorded %v, want remediating and the click", inc.State, ok)
				}
			},
		},
		{name: "acknowledge a closed incident", setup: closed, action: slackui.ActionAcknowledge, wantErr: ErrClosed},
		{
			name: "intentional", action: slackui.ActionIntentional,
			check: func(t *testing.T, inc incident.Incident) {
				e, _ := inc.LastEntry(incident.KindState)
				if inc.State != incident.StateIntentional || inc.ClosedAt == nil || e.Actor != "U0APPROVR1" {
					t.Errorf("state %s, closed %v, state entry %+v, want intentional, closed by U0APPROVR1", inc.State, inc.ClosedAt, e)
				}
			},
		},
		{name: "intentional while remediating", setup: remediating, action: slackui.ActionIntentional, wantErr: ErrRemediating},
		{name: "intentional on a closed incident", setup: closed, action: slackui.ActionIntentional, wantErr: ErrClosed},
		{
			name: "remediate, one required", action: slackui.ActionRemediate, required: 1,
			wantOut: Outcome{Approvals: 1, Required: 1, Started: true, RunID: "run:1795860000.000001:U0APPROVR1", ApprovedBy: []string{"U0APPROVR1"}},
			check: func(t *testing.T, inc incident.Incident) {
				want := []incident.Approval{{User: "U0APPROVR1", Version: 4, At: t0.Add(time.Second), Source: "click:1795860000.000001:U0APPROVR1"}}
				if diff := cmp.Diff(want, inc.Approvals); diff != "" || inc.State != incident.StateRemediating {
					t.Errorf("state %s, approvals (-want +got):\n%s", inc.State, diff)
				}
			},
		},
		{
			name: "remediate, required 0 means 1", action: slackui.ActionRemediate, required: 0,
			wantOut: Outcome{Approvals: 1, Required: 1, Started: true, RunID: "run:1795860000.000001:U0APPROVR1", ApprovedBy: []string{"U0APPROVR1"}},
		},
		{
			name: "remediate, two required", action: slackui.ActionRemediate, required: 2,
			wantOut: Outcome{Approvals: 1, Required: 2},
			check: func(t *testing.T, inc incident.Incident) {
				if inc.State != incident.StateOpen || len(inc.Approvals) != 1 {
					t.Errorf("state %s, %d approvals, want open and 1", inc.State, len(inc.Approvals))
				}
			},
		},
		{name: "remediate while remediating", setup: remediating, action: slackui.ActionRemediate, required: 1, wantErr: ErrRemediating},
		{name: "remediate a closed incident", setup: closed, action: slackui.ActionRemediate, required: 1, wantErr: ErrClosed},
		{
			name: "remediate a deleted key", action: slackui.ActionRemediate, required: 1,
			setup:   func(i *incident.Incident) { i.KeyState = incident.KeyStateDeleted },
			wantErr: &incident.NotFixableError{},
		},
		{
			name: "remediate a key still being created", action: slackui.ActionRemediate, required: 1,
			setup:   func(i *incident.Incident) { i.KeyState = incident.KeyStateCreating },
			wantErr: ErrNotFixable,
		},
		{name: "unknown action", action: "delete-everything", required: 1, wantErr: ErrUnknownAction},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inc := openIncident()
			if tt.setup != nil {
				tt.setup(&inc)
			}
			before := inc
			before.Timeline = append([]incident.Entry(nil), inc.Timeline...)
			out, err := Apply(&inc, act(inc, "U0APPROVR1", tt.action, 1, tt.required))
			var nf *incident.NotFixableError
			switch {
			case tt.wantErr == nil && err != nil:
				t.Fatalf("Apply: %v", err)
			case errors.As(tt.wantErr, &nf):
				if !errors.As(err, &nf) || !errors.Is(err, ErrNotFixable) {
					t.Fatalf("Apply error: got %v, want ErrNotFixable with a NotFixableError", err)
				}
			case tt.wantErr != nil && !errors.Is(err, tt.wantErr):
				t.Fatalf("Apply error: got %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr != nil {
				// A refusal changes nothing.
				if diff := cmp.Diff(before, inc); diff != "" {
					t.Errorf("a refused click changed the incident (-before +after):\n%s", diff)
				}
				return
			}
			if diff := cmp.Diff(tt.wantOut, out); diff != "" {
				t.Errorf("outcome (-want +got):\n%s", diff)
			}
			if tt.check != nil {
				tt.check(t, inc)
			}
		})
	}
}

// TestApplyIsIdempotentPerClick: the same click applied twice (a retried write) records one
// entry.
func TestApplyIsIdempotentPerClick(t *testing.T) {
	inc := openIncident()
	a := act(inc, "U0APPROVR1", slackui.ActionAcknowledge, 1, 1)
	for range 2 {
		if _, err := Apply(&inc, a); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(inc.Timeline); n != 1 {
		t.Errorf("timeline: %d entries, want 1", n)
	}
}
