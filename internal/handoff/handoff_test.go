package handoff

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestDecode(t *testing.T) {
	tests := []struct {
		raw  string
		want Request
		err  error
	}{
		{raw: `{"incident_id":"KW-1","run_id":"r","approved_by":["U1","U2"]}`, want: Request{IncidentID: "KW-1", RunID: "r", ApprovedBy: Approvers{"U1", "U2"}}},
		{raw: `{"incident_id":"KW-1","approved_by":"U1, U2"}`, want: Request{IncidentID: "KW-1", ApprovedBy: Approvers{"U1", "U2"}}},
		{raw: `{"incident_id":"KW-1"}`, err: ErrInvalid},
		{raw: `{"approved_by":["U1"]}`, err: ErrInvalid},
		{raw: `{"incident_id":"KW-1","approved_by":7}`, err: ErrInvalid},
		{raw: `nope`, err: ErrInvalid},
	}
	for _, tc := range tests {
		got, err := Decode([]byte(tc.raw))
		if !errors.Is(err, tc.err) {
			t.Errorf("%s: error %v, want %v", tc.raw, err, tc.err)
			continue
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tc.raw, diff)
		}
	}
}
