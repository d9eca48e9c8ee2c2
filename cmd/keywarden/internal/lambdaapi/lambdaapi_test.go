package lambdaapi

import (
	"context"
	"testing"
)

func TestResolveFunctionName(t *testing.T) {
	a := New(context.Background(), Config{Functions: []string{
		"KeyEventFunction", "RdsEventFunction", "SlackActionFunction", "RemediateFunction", "ReconcileFunction",
	}})
	tests := []struct{ name, want string }{
		{"RemediateFunction", "RemediateFunction"},
		{"RemediateFunction:live", "RemediateFunction"},
		{"arn:aws:lambda:us-east-1:123456789012:function:RemediateFunction", "RemediateFunction"},
		{"arn:aws:lambda:us-east-1:123456789012:function:RemediateFunction:$LATEST", "RemediateFunction"},
		{"123456789012:function:SlackActionFunction", "SlackActionFunction"},
		{"keywarden-RemediateFunction-1A2B3C4D5E6F", "RemediateFunction"},
		{"arn:aws:lambda:us-east-1:123456789012:function:keywarden-RemediateFunction-1A2B3C4D5E6F", "RemediateFunction"},
		{"keywarden-RemediateFunction-ReconcileFunction", ""},
		{"NoSuchFunction", ""},
		{"", ""},
	}
	for _, tc := range tests {
		got, ok := a.resolve(tc.name)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("resolve(%q) = %q, %v; want %q", tc.name, got, ok, tc.want)
		}
	}
}
