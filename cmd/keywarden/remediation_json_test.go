package main

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/incident"
)

// TestIncidentsJSONRemediation: `keywarden incidents --json` gives every incident
// remediation {run_id, state, steps}: state "none" when no run was approved, steps an array,
// and each step's id, kind, target, account, result and at.
func TestIncidentsJSONRemediation(t *testing.T) {
	at := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	ran := incident.Incident{ID: "KW-2"}
	ran.Remediation = incident.Remediation{RunID: "run-1", State: incident.RemediationDone,
		Steps: []incident.StepRecord{{ID: "s1", Kind: incident.StepEnableKey, Target: "arn:k", Result: incident.ResultOK, At: at}}}
	for _, tc := range []struct {
		inc       incident.Incident
		state     string
		run       string
		stepCount int
	}{
		{incident.Incident{ID: "KW-1"}, "none", "", 0},
		{ran, "done", "run-1", 1},
	} {
		b, err := json.Marshal(arrays(tc.inc, time.Now()))
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			Remediation map[string]json.RawMessage `json:"remediation"`
		}
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		var state, run string
		var steps []map[string]any
		_ = json.Unmarshal(got.Remediation["state"], &state)
		_ = json.Unmarshal(got.Remediation["run_id"], &run)
		if err := json.Unmarshal(got.Remediation["steps"], &steps); err != nil || steps == nil {
			t.Errorf("%s: steps %s, want an array", tc.inc.ID, got.Remediation["steps"])
		}
		if _, ok := got.Remediation["run_id"]; !ok || state != tc.state || run != tc.run || len(steps) != tc.stepCount {
			t.Errorf("%s: remediation %s, want run_id %q, state %q, %d steps", tc.inc.ID, b, tc.run, tc.state, tc.stepCount)
		}
		for _, s := range steps {
			for _, k := range []string{"id", "kind", "target", "account", "result", "at"} {
				if _, ok := s[k]; !ok {
					t.Errorf("%s: step %v lacks %q", tc.inc.ID, s, k)
				}
			}
		}
	}
}
