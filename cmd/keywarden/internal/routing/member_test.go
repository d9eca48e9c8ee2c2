package routing

import (
	"context"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/keywarden/keywarden/internal/awstest"
	"github.com/keywarden/keywarden/internal/org"
)

// TestMemberForwarding: three accounts on one moto — the central account runs template.yaml in
// organization mode (its rules on the keywarden bus), two member accounts carry member.yaml's
// forwarding rules on their default buses. Every sample of events/ put in a member account
// reaches exactly the functions it reaches in account mode (routedSamples), through the member's
// forwarding rule and the central bus: failed calls, read-only calls and RDS events keywarden
// does not follow stop at the member.
func TestMemberForwarding(t *testing.T) {
	endpoint := awstest.Moto(t)
	central := awstest.Config(t, endpoint)
	ctx := context.Background()
	prefix := uniquePrefix(t, "org")
	r := Router{Template: "../../../../template.yaml", Prefix: prefix,
		Parameters: map[string]string{"DeploymentMode": "organization", "OrganizationId": "o-a1b2c3d4e5"}}
	if err := r.Load(ctx, central); err != nil {
		t.Fatalf("Load: %v", err)
	}
	rules, err := r.rules()
	if err != nil {
		t.Fatal(err)
	}
	for _, rule := range rules {
		if rule.Bus != "keywarden" {
			t.Errorf("%s/%s on bus %q, want keywarden", rule.Function, rule.Name, rule.Bus)
		}
	}
	centralBus := "arn:aws:events:" + awstest.Region + ":" + awstest.AccountID + ":event-bus/keywarden"
	roles := org.NewRoles(central, "keywarden-local")
	var members []string
	for _, account := range []string{"222222222222", "333333333333"} {
		cfg, err := roles.Config(ctx, account, "")
		if err != nil {
			t.Fatal(err)
		}
		if err := (Forwarder{Member: "../../../../member.yaml", CentralBusARN: centralBus, Prefix: prefix}).Load(ctx, cfg); err != nil {
			t.Fatalf("Forwarder.Load in %s: %v", account, err)
		}
		members = append(members, account)
	}

	files, err := filepath.Glob("../../../../events/*.json")
	if err != nil {
		t.Fatal(err)
	}
	samples := map[string][]byte{}
	for i, f := range files {
		name := filepath.Base(f)
		if _, ok := routedSamples[name]; !ok {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		samples[name] = data
		member, _ := roles.Config(ctx, members[i%len(members)], "")
		if _, err := r.Put(ctx, member, data); err != nil {
			t.Fatalf("Put %s: %v", name, err)
		}
	}
	if len(samples) != len(routedSamples) {
		t.Fatalf("found %d of the %d samples of routedSamples", len(samples), len(routedSamples))
	}
	// The central bus gives the forwarded event an ID of its own: match on the detail instead.
	deliveries, err := r.Collect(ctx, central, nil, 5*time.Second)
	if err != nil {
		t.Fatalf("Collect: %v", err)
	}
	got := map[string][]string{}
	for name := range samples {
		got[name] = nil
	}
	for _, d := range deliveries {
		var out map[string]any
		if err := json.Unmarshal(d.Event, &out); err != nil {
			t.Fatalf("delivered event is not JSON: %v", err)
		}
		name := sampleOf(t, samples, out)
		if name == "" {
			continue // another test's event on the shared moto
		}
		got[name] = append(got[name], d.Function)
	}
	want := map[string][]string{}
	for name := range samples {
		want[name] = routedSamples[name]
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("functions each sample reaches from a member account (-want +got):\n%s", diff)
	}
}

// sampleOf names the sample whose source, detail-type and detail the delivered event carries.
func sampleOf(t *testing.T, samples map[string][]byte, out map[string]any) string {
	t.Helper()
	for _, name := range slices.Sorted(maps.Keys(samples)) {
		var in map[string]any
		if err := json.Unmarshal(samples[name], &in); err != nil {
			t.Fatal(err)
		}
		if cmp.Equal(in["source"], out["source"]) && cmp.Equal(in["detail-type"], out["detail-type"]) && cmp.Equal(in["detail"], out["detail"]) {
			return name
		}
	}
	return ""
}
