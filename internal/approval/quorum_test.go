package approval

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestQuorum(t *testing.T) {
	tests := []struct {
		name         string
		required     int
		approvedBy   []string
		wantMet      bool
		wantDistinct []string
	}{
		{name: "one required, none yet", required: 1, approvedBy: nil, wantMet: false},
		{name: "one required, one approver", required: 1, approvedBy: []string{"U0APPROVR1"}, wantMet: true, wantDistinct: []string{"U0APPROVR1"}},
		{name: "two required, one approver", required: 2, approvedBy: []string{"U0APPROVR1"}, wantMet: false, wantDistinct: []string{"U0APPROVR1"}},
		{name: "two required, same approver twice", required: 2, approvedBy: []string{"U0APPROVR1", "U0APPROVR1"}, wantMet: false, wantDistinct: []string{"U0APPROVR1"}},
		{name: "two required, two approvers", required: 2, approvedBy: []string{"U0APPROVR1", "U0APPROVR1", "W0APPROVR2"}, wantMet: true, wantDistinct: []string{"U0APPROVR1", "W0APPROVR2"}},
		{name: "empty IDs ignored", required: 2, approvedBy: []string{"", "U0APPROVR1", ""}, wantMet: false, wantDistinct: []string{"U0APPROVR1"}},
		{name: "zero required means one", required: 0, approvedBy: nil, wantMet: false},
		{name: "negative required means one", required: -3, approvedBy: []string{"U0APPROVR1"}, wantMet: true, wantDistinct: []string{"U0APPROVR1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			met, distinct := Quorum(tt.required, tt.approvedBy)
			if met != tt.wantMet {
				t.Errorf("met: got %v, want %v", met, tt.wantMet)
			}
			if diff := cmp.Diff(tt.wantDistinct, distinct); diff != "" {
				t.Errorf("distinct mismatch (-want +got):\n%s", diff)
			}
		})
	}
}
