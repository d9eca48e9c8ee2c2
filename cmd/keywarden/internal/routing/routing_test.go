package routing

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	"github.com/google/go-cmp/cmp"

	"github.com/keywarden/keywarden/internal/awstest"
)

func TestMain(m *testing.M) { awstest.Main(m) }

// routedSamples says which functions each sample of events/ reaches through template.yaml's
// rules. Every sample must have a row, so a new sample cannot go unrouted by accident.
var routedSamples = map[string][]string{
	// Successful KMS calls of the key-event path, in every shape.
	"kms-disable-key.json":                      {"KeyEventFunction"},
	"kms-disable-key-legacy-null-response.json": {"KeyEventFunction"},
	"kms-disable-key-no-resources.json":         {"KeyEventFunction"},
	"kms-schedule-key-deletion.json":            {"KeyEventFunction"},
	"kms-schedule-key-deletion-replica.json":    {"KeyEventFunction"},
	"kms-schedule-key-deletion-comma-date.json": {"KeyEventFunction"},
	"kms-schedule-key-deletion-24h-pm.json":     {"KeyEventFunction"},
	"kms-enable-key.json":                       {"KeyEventFunction"},
	"kms-enable-key-legacy-null-response.json":  {"KeyEventFunction"},
	"kms-cancel-key-deletion.json":              {"KeyEventFunction"},
	"kms-delete-imported-key-material.json":     {"KeyEventFunction"},
	"kms-disconnect-custom-key-store.json":      {"KeyEventFunction"},
	"kms-put-key-policy.json":                   {"KeyEventFunction"},
	"kms-revoke-grant.json":                     {"KeyEventFunction"},
	"kms-retire-grant.json":                     {"KeyEventFunction"},
	"kms-cmk-deletion.json":                     {"KeyEventFunction"},
	"kms-imported-key-material-expiration.json": {"KeyEventFunction"},
	// Issue 9: the recovery calls are routed; the snapshot-only deletion like any other.
	"kms-import-key-material.json":                         {"KeyEventFunction"},
	"kms-connect-custom-key-store.json":                    {"KeyEventFunction"},
	"kms-schedule-key-deletion-snapshot-only.json":         {"KeyEventFunction"},
	"kms-disable-key-failed.json":                          nil, // errorCode: the call changed nothing
	"kms-describe-key-readonly.json":                       nil, // read-only: not an event name of the rule
	"rds-instance-key-access-lost-0418.json":               {"RdsEventFunction"},
	"rds-instance-key-access-lost-0418-no-prefix.json":     {"RdsEventFunction"},
	"rds-instance-key-access-lost-0419.json":               {"RdsEventFunction"},
	"rds-instance-key-access-restored-0420.json":           {"RdsEventFunction"},
	"rds-instance-key-access-lost-0419-cross-account.json": {"RdsEventFunction"},
	"rds-instance-key-access-lost-0418-key-enabled.json":   {"RdsEventFunction"},
	"rds-instance-key-access-lost-0419-deleted-key.json":   {"RdsEventFunction"},
	"rds-instance-key-access-lost-0419-older.json":         {"RdsEventFunction"},
	"rds-cluster-stopped-0150.json":                        {"RdsEventFunction"},
	"rds-cluster-started-0151.json":                        {"RdsEventFunction"},
	"rds-instance-stopped-0087.json":                       {"RdsEventFunction"},
	"rds-instance-started-0088.json":                       {"RdsEventFunction"},
	"rds-cluster-patched-0173.json":                        nil, // an RDS event keywarden does not handle
	// The schedule's own event: the schedule rule targets ReconcileFunction directly, and no
	// pattern rule may pick it up as well.
	"reconcile-scheduled.json": nil,
}

// directInvokes are samples that are not EventBridge events: payloads of a direct invocation
// (RemediateFunction's hand-off) or a Function URL request (a Slack click).
var directInvokes = map[string]bool{"remediate-request.json": true, "slack-click-remediate.json": true}

// uniquePrefix keeps each test's rules and queues apart on the shared moto.
func uniquePrefix(t *testing.T, name string) string {
	t.Helper()
	return fmt.Sprintf("%s%d", name, time.Now().UnixNano()%1e9)
}

// TestEventRouting loads template.yaml's rules into moto's EventBridge and sends every sample of
// events/ through them: each must reach exactly the functions of routedSamples, as the event
// Lambda would get on AWS.
func TestEventRouting(t *testing.T) {
	cfg := awstest.Config(t, awstest.Moto(t))
	ctx := context.Background()
	r := Router{Template: "../../../../template.yaml", Prefix: uniquePrefix(t, "route")}
	// Twice: Up runs every resource on each call.
	for range 2 {
		if err := r.Load(ctx, cfg); err != nil {
			t.Fatalf("Load: %v", err)
		}
	}

	files, err := filepath.Glob("../../../../events/*.json")
	if err != nil {
		t.Fatal(err)
	}
	samples := map[string][]byte{}
	for _, f := range files {
		name := filepath.Base(f)
		if name == "env.json" || directInvokes[name] {
			continue
		}
		if _, ok := routedSamples[name]; !ok {
			t.Errorf("sample %s has no row in routedSamples", name)
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		samples[name] = data
	}
	for name := range routedSamples {
		if _, ok := samples[name]; !ok {
			t.Errorf("routedSamples names %s, which is not in events/", name)
		}
	}

	// Send all, then collect all: one wait for the lot.
	byID := map[string]string{}
	var ids []string
	for _, name := range slices.Sorted(maps.Keys(samples)) {
		id, err := r.Put(ctx, cfg, samples[name])
		if err != nil {
			t.Fatalf("Put %s: %v", name, err)
		}
		byID[id] = name
		ids = append(ids, id)
	}
	deliveries, err := r.Collect(ctx, cfg, ids, 10*time.Second)
	if err != nil {
		t.Fatalf("Collect: %v", err)
	}
	got := map[string][]string{}
	for name := range samples {
		got[name] = nil
	}
	for _, d := range deliveries {
		name := byID[d.EventID]
		got[name] = append(got[name], d.Function)
		checkDelivered(t, name, samples[name], d)
	}
	want := map[string][]string{}
	for name := range samples {
		want[name] = routedSamples[name]
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("functions each sample reaches (-want +got):\n%s", diff)
	}
}

// checkDelivered: the function gets the sample as EventBridge delivers it — same source,
// detail-type, detail, resources and time, with EventBridge's id, account and region.
func checkDelivered(t *testing.T, name string, sample []byte, d Delivery) {
	t.Helper()
	var in, out map[string]any
	if err := json.Unmarshal(sample, &in); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if err := json.Unmarshal(d.Event, &out); err != nil {
		t.Fatalf("%s: delivered event is not JSON: %v: %s", name, err, d.Event)
	}
	for _, k := range []string{"source", "detail-type", "detail", "time", "region", "account"} {
		if diff := cmp.Diff(in[k], out[k]); diff != "" {
			t.Errorf("%s → %s: %q differs (-sample +delivered):\n%s", name, d.Function, k, diff)
		}
	}
	// CloudTrail events carry "resources": [] in the envelope; EventBridge passes it as is.
	if diff := cmp.Diff(in["resources"], out["resources"]); diff != "" && in["resources"] != nil {
		t.Errorf("%s → %s: resources differ (-sample +delivered):\n%s", name, d.Function, diff)
	}
	if out["id"] != d.EventID || out["version"] != "0" {
		t.Errorf("%s → %s: id %v, version %v; want EventBridge's id %s and version 0", name, d.Function, out["id"], out["version"], d.EventID)
	}
}

// TestEventRoutingReload: loading a changed template replaces this router's rules and leaves
// other routers' rules alone.
func TestEventRoutingReload(t *testing.T) {
	cfg := awstest.Config(t, awstest.Moto(t))
	ctx := context.Background()
	dir := t.TempDir()
	prefix := uniquePrefix(t, "reload")
	write := func(name, rules string) string {
		path := filepath.Join(dir, name)
		src := "Resources:\n  EchoFunction:\n    Type: AWS::Serverless::Function\n    Properties:\n      CodeUri: x\n      Events:\n" + rules
		if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	rule := func(name, source string) string {
		return "        " + name + ":\n          Type: EventBridgeRule\n          Properties:\n            Pattern:\n              source: [" + source + "]\n"
	}
	first := write("first.yaml", rule("A", "a")+rule("B", "b"))
	second := write("second.yaml", rule("A", "a2"))

	other := Router{Template: first, Prefix: prefix + "-other"}
	if err := other.Load(ctx, cfg); err != nil {
		t.Fatalf("Load other: %v", err)
	}
	r := Router{Template: first, Prefix: prefix}
	if err := r.Load(ctx, cfg); err != nil {
		t.Fatalf("Load first: %v", err)
	}
	r.Template = second
	if err := r.Load(ctx, cfg); err != nil {
		t.Fatalf("Load second: %v", err)
	}

	out, err := eventbridge.NewFromConfig(cfg).ListRules(ctx, &eventbridge.ListRulesInput{NamePrefix: aws.String(prefix)})
	if err != nil {
		t.Fatalf("ListRules: %v", err)
	}
	got := map[string]string{}
	for _, rule := range out.Rules {
		got[aws.ToString(rule.Name)] = aws.ToString(rule.EventPattern)
	}
	want := map[string]string{
		prefix + "-EchoFunction-A":       `{"source":["a2"]}`,
		prefix + "-other-EchoFunction-A": `{"source":["a"]}`,
		prefix + "-other-EchoFunction-B": `{"source":["b"]}`,
	}
	for name, pattern := range got {
		var compact map[string]any
		if err := json.Unmarshal([]byte(pattern), &compact); err == nil {
			b, _ := json.Marshal(compact)
			got[name] = string(b)
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("rules after reload (-want +got):\n%s", diff)
	}
}

func TestPutRefusesNonEvents(t *testing.T) {
	r := Router{Template: "../../../../template.yaml"}
	for _, tc := range []struct{ name, event, want string }{
		{"not JSON", `nope`, "not an EventBridge event"},
		{"no source", `{"detail-type":"x","detail":{}}`, "no source"},
		{"no detail-type", `{"source":"x","detail":{}}`, "no detail-type"},
		{"detail not an object", `{"source":"x","detail-type":"y","detail":"z"}`, "detail is not a JSON object"},
		{"bad time", `{"source":"x","detail-type":"y","detail":{},"time":"yesterday"}`, `event time "yesterday"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Refused before any call: the config points nowhere.
			_, err := r.Put(context.Background(), aws.Config{Region: awstest.Region}, []byte(tc.event))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Put: got error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// TestCollectLeavesOthersEvents: an emitter collects only its own event; one that arrived for
// someone else stays in the queue for them.
func TestCollectLeavesOthersEvents(t *testing.T) {
	cfg := awstest.Config(t, awstest.Moto(t))
	ctx := context.Background()
	r := Router{Template: "../../../../template.yaml", Prefix: uniquePrefix(t, "others")}
	if err := r.Load(ctx, cfg); err != nil {
		t.Fatalf("Load: %v", err)
	}
	sample, err := os.ReadFile("../../../../events/kms-disable-key.json")
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := r.Put(ctx, cfg, sample)
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	mine, err := r.Put(ctx, cfg, sample)
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	got, err := r.Collect(ctx, cfg, []string{mine}, 2*time.Second)
	if err != nil || len(got) != 1 || got[0].EventID != mine {
		t.Fatalf("Collect(mine): %+v, %v; want my event only", got, err)
	}
	got, err = r.Collect(ctx, cfg, []string{theirs}, 2*time.Second)
	if err != nil || len(got) != 1 || got[0].EventID != theirs || got[0].Function != "KeyEventFunction" {
		t.Fatalf("Collect(theirs): %+v, %v; want their event, still in KeyEventFunction's queue", got, err)
	}
}
