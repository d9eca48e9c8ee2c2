package incident

import (
	"errors"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)

// TestTransitions covers every transition method from every state: the legal ones move the
// state and add one state entry; the illegal ones return a *TransitionError and change nothing.
func TestTransitions(t *testing.T) {
	all := []State{StateOpen, StateRemediating, StateResolved, StateIntentional, StateLost}
	type move struct {
		name  string
		to    State
		from  []State // the states it is legal from
		apply func(*Incident) error
	}
	moves := []move{
		{"StartRemediation", StateRemediating, []State{StateOpen}, func(i *Incident) error { return i.StartRemediation("run-1", t0) }},
		{"GiveBack", StateOpen, []State{StateRemediating}, func(i *Incident) error { return i.GiveBack("EnableKey failed", t0) }},
		{"Resolve", StateResolved, []State{StateOpen, StateRemediating}, func(i *Incident) error { return i.Resolve(Keywarden, "every cluster is available", t0) }},
		{"MarkIntentional", StateIntentional, []State{StateOpen}, func(i *Incident) error { return i.MarkIntentional("U1", t0) }},
		{"MarkLost", StateLost, []State{StateOpen, StateRemediating}, func(i *Incident) error { return i.MarkLost(Keywarden, "the key was deleted", t0) }},
	}
	for _, m := range moves {
		for _, from := range all {
			legal := false
			for _, f := range m.from {
				legal = legal || f == from
			}
			t.Run(m.name+"/from "+string(from), func(t *testing.T) {
				inc := Incident{ID: "KW-1", Version: 3, State: from}
				err := m.apply(&inc)
				if !legal {
					var te *TransitionError
					if !errors.As(err, &te) || !errors.Is(err, ErrIllegalTransition) || te.From != from || te.To != m.to {
						t.Fatalf("got %v, want a TransitionError from %s to %s", err, from, m.to)
					}
					if inc.State != from || len(inc.Timeline) != 0 {
						t.Errorf("a refused transition changed the incident: state %s, %d entries", inc.State, len(inc.Timeline))
					}
					return
				}
				if err != nil {
					t.Fatalf("got %v, want a legal move", err)
				}
				if inc.State != m.to {
					t.Errorf("state %s, want %s", inc.State, m.to)
				}
				if (inc.ClosedAt != nil) != m.to.Closed() {
					t.Errorf("ClosedAt %v for state %s", inc.ClosedAt, m.to)
				}
				e, ok := inc.LastEntry(KindState)
				if !ok || e.Result != Result(m.to) || e.Seq != 1 || e.ID == "" {
					t.Errorf("state entry %+v, want one with result %s, seq 1 and an ID", e, m.to)
				}
			})
		}
	}
}

// TestApproveTwoPersonRule: two distinct approvers start remediation; the same approver twice
// does not; a reopened incident needs a fresh quorum; refusals and clicks elsewhere on the
// timeline never count.
func TestApproveTwoPersonRule(t *testing.T) {
	inc := Incident{ID: "KW-1", Version: 2, State: StateOpen}
	for i := range 400 {
		inc.AddEntry(NewRefusal("UStranger", "remediate", "not an approver", "", t0.Add(time.Duration(i)*time.Minute)))
	}
	if n, started, err := inc.Approve("UA", 2, "click:1:UA", t0, 2, "run-1"); err != nil || started || n != 1 {
		t.Fatalf("first approval: %d, %v, %v; want 1, not started", n, started, err)
	}
	if _, started, err := inc.Approve("UA", 2, "click:2:UA", t0, 2, "run-1"); !errors.Is(err, ErrAlreadyApproved) || started {
		t.Fatalf("the same approver again: started %v, err %v; want ErrAlreadyApproved", started, err)
	}
	if inc.State != StateOpen {
		t.Fatalf("state %s after one approver; want open", inc.State)
	}
	n, started, err := inc.Approve("UB", 2, "click:3:UB", t0, 2, "run-1")
	if err != nil || !started || n != 2 || inc.State != StateRemediating {
		t.Fatalf("second approver: %d, %v, %v, state %s; want remediation started", n, started, err, inc.State)
	}
	if inc.Remediation.RunID != "run-1" || inc.Remediation.State != RemediationApproved || len(inc.Remediation.ApprovedBy) != 2 {
		t.Errorf("remediation %+v", inc.Remediation)
	}
	if err := inc.GiveBack("StartDBCluster failed", t0); err != nil {
		t.Fatal(err)
	}
	// The round's approvals were spent: one approver alone cannot start the next run.
	if _, started, err := inc.Approve("UA", 5, "click:4:UA", t0, 2, "run-2"); err != nil || started {
		t.Fatalf("after a give-back, one approver: started %v, err %v; want a fresh quorum", started, err)
	}
	if len(inc.Approvals) != 3 {
		t.Errorf("%d approvals kept, want 3 (never trimmed)", len(inc.Approvals))
	}
	if _, _, err := (&Incident{State: StateResolved}).Approve("UA", 1, "c", t0, 1, "r"); !errors.Is(err, ErrIllegalTransition) {
		t.Errorf("approving a closed incident: %v, want ErrIllegalTransition", err)
	}
	// A misconfigured quorum of 0 still needs one approval.
	one := Incident{State: StateOpen}
	if _, started, _ := one.Approve("UA", 1, "c", t0, 0, "r"); !started {
		t.Error("required 0 should count as 1 and start on the first approval")
	}
}

func TestAddEntryIsIdempotent(t *testing.T) {
	var inc Incident
	e := Entry{ID: "delivery:ev-1", At: t0, Kind: KindDelivery, Source: "ev-1"}
	if !inc.RecordDelivery(e) || inc.RecordDelivery(e) {
		t.Fatal("the same event should be recorded once")
	}
	inc.RecordDelivery(Entry{Source: "ev-2", At: t0})
	if inc.Deliveries != 2 || len(inc.Timeline) != 2 || inc.Timeline[1].Seq != 2 {
		t.Errorf("deliveries %d, %d entries, last seq %d; want 2, 2, 2", inc.Deliveries, len(inc.Timeline), inc.Timeline[1].Seq)
	}
	// An entry without an ID gets one from its content, so recomputing it adds nothing.
	note := Entry{At: t0, Kind: KindNote, Detail: "checked"}
	if !inc.AddEntry(note) || inc.AddEntry(note) {
		t.Error("a content-identified entry should be added once")
	}
}

func TestRecordStepOncePerRun(t *testing.T) {
	inc := Incident{State: StateRemediating, Remediation: Remediation{RunID: "run-1"}}
	s := StepRecord{Kind: StepEnableKey, Target: "arn:aws:kms:us-east-1:111122223333:key/k", Result: ResultOK, At: t0}
	if !inc.RecordStep(s) || inc.RecordStep(s) {
		t.Fatal("a step should be recorded once per run")
	}
	if at, ok := inc.StepDone(StepEnableKey, s.Target); !ok || !at.Equal(t0) {
		t.Errorf("StepDone: %v %v", at, ok)
	}
	if e, _ := inc.LastEntry(KindRemediationStep); e.ID != StepID("run-1", StepEnableKey, s.Target) {
		t.Errorf("step entry ID %q", e.ID)
	}
}

func TestIsKeyARN(t *testing.T) {
	for s, want := range map[string]bool{
		"arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab": true,
		"arn:aws-cn:kms:cn-north-1:111122223333:key/mrk-1234":                         true,
		"arn:aws:kms:us-east-1:111122223333:alias/app":                                false,
		"1234abcd-12ab-34cd-56ef-1234567890ab":                                        false,
		"alias/app":                                                                   false,
		"arn:aws:kms:us-east-1:111122223333:key/":                                     false,
		"arn:aws:rds:us-east-1:111122223333:cluster:a":                                false,
	} {
		if got := IsKeyARN(s); got != want {
			t.Errorf("IsKeyARN(%q) = %v, want %v", s, got, want)
		}
	}
	if got := KeyAccount("arn:aws:kms:us-east-1:111122223333:key/k"); got != "111122223333" {
		t.Errorf("KeyAccount = %q", got)
	}
}

func TestCannotStopReason(t *testing.T) {
	if r := CannotStopReason(StopFacts{EngineMode: "provisioned"}); r != "" {
		t.Errorf("a plain cluster: %q", r)
	}
	r := CannotStopReason(StopFacts{GlobalCluster: "g", CrossRegionReplicas: []string{"arn:aws:rds:eu-west-1:1:cluster:r"}, EngineMode: "serverless", BlueGreenDeployment: "bgd-1"})
	want := "member of global database g; has cross-Region read replica arn:aws:rds:eu-west-1:1:cluster:r; Aurora Serverless v1; part of blue/green deployment bgd-1"
	if r != want {
		t.Errorf("got %q, want %q", r, want)
	}
}
