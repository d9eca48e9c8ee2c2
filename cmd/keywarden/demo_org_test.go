package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestDemoOrg runs `make demo-org`'s story on a private stack (issue 13): the DisableKey of the
// security account reaches KeyEventFunction through a member's forwarding rule and the central
// bus, one incident names the clusters of both workload accounts, and the approved click
// enables the key in the security account and starts each cluster in its own, every step
// recording its account.
func TestDemoOrg(t *testing.T) {
	if testing.Short() {
		t.Skip("the organisation demo takes a minute")
	}
	localStack := privateStack(t)
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	if err := runOrgDemo(ctx, localStack, &out); err != nil {
		t.Fatalf("demo-org: %v\n%s", err, out.String())
	}
	text := out.String()
	for _, want := range []string{
		`"action":"opened"`, "ACCOUNT", orgDemoWorkloadA, orgDemoWorkloadB, ":office:",
		"EnableKey", "account " + orgDemoSecurity + " → ok", "key in " + orgDemoSecurity + ": Enabled",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("demo-org output lacks %q:\n%s", want, text)
		}
	}
	if n := strings.Count(text, "StartDBCluster"); n < 2 {
		t.Errorf("got %d StartDBCluster steps, want one per workload account:\n%s", n, text)
	}
}
