package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/rds"

	"github.com/keywarden/keywarden/internal/awstest"
	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/incident/dynamostore"
)

func TestMain(m *testing.M) { awstest.Main(m) }

// cli points the CLI at moto the way a user points it at the local stack: AWS_ENDPOINT_URL.
func cli(t *testing.T) aws.Config {
	t.Helper()
	endpoint := awstest.Moto(t)
	t.Setenv("AWS_ENDPOINT_URL", endpoint)
	t.Setenv("AWS_REGION", awstest.Region)
	t.Setenv("AWS_ACCESS_KEY_ID", "test")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "test")
	return awstest.Config(t, endpoint)
}

func runCLI(t *testing.T, args ...string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	if err := run(context.Background(), args, &out, &errOut); err != nil {
		t.Fatalf("keywarden %s: %v\n%s", strings.Join(args, " "), err, errOut.String())
	}
	return out.String()
}

func TestBlastRadiusJSON(t *testing.T) {
	cfg := cli(t)
	k := kms.NewFromConfig(cfg)
	key, err := k.CreateKey(context.Background(), &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	alias := fmt.Sprintf("alias/cli-%d", rand.Int32())
	if _, err := k.CreateAlias(context.Background(), &kms.CreateAliasInput{AliasName: &alias, TargetKeyId: key.KeyMetadata.KeyId}); err != nil {
		t.Fatal(err)
	}
	id := fmt.Sprintf("cli-%d", rand.Int32())
	if _, err := rds.NewFromConfig(cfg).CreateDBCluster(context.Background(), &rds.CreateDBClusterInput{
		DBClusterIdentifier: &id, Engine: aws.String("aurora-postgresql"), StorageEncrypted: aws.Bool(true),
		KmsKeyId: &alias, MasterUsername: aws.String("admin"), MasterUserPassword: aws.String("not-a-secret-1"),
	}); err != nil {
		t.Fatal(err)
	}

	var got struct {
		KeyARN   string           `json:"key_arn"`
		Clusters []map[string]any `json:"clusters"`
		Other    []map[string]any `json:"other_engines"`
		Inst     []map[string]any `json:"instances"`
		Snaps    []map[string]any `json:"snapshots"`
	}
	out := runCLI(t, "blast-radius", "--json", alias)
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if got.KeyARN != *key.KeyMetadata.Arn || len(got.Clusters) != 1 || got.Clusters[0]["identifier"] != id {
		t.Fatalf("got %s", out)
	}
	for _, field := range []string{"identifier", "arn", "engine", "status", "can_stop", "deadline"} {
		if _, ok := got.Clusters[0][field]; !ok {
			t.Errorf("cluster object lacks %q: %s", field, out)
		}
	}
	if got.Other == nil || got.Inst == nil || got.Snaps == nil {
		t.Errorf("instances, snapshots and other_engines must be arrays, even empty: %s", out)
	}

	table := runCLI(t, "blast-radius", alias)
	if !strings.Contains(table, id) || !strings.Contains(table, "7 days") {
		t.Errorf("table lacks the cluster and its window:\n%s", table)
	}
}

func TestIncidentsJSON(t *testing.T) {
	cfg := cli(t)
	table := fmt.Sprintf("incidents-%d", rand.Int64())
	t.Setenv("INCIDENTS_TABLE", table)
	ddb := dynamodb.NewFromConfig(cfg)
	if err := dynamostore.CreateTable(context.Background(), ddb, table); err != nil {
		t.Fatal(err)
	}
	if out := strings.TrimSpace(runCLI(t, "incidents", "--json")); out != "[]" {
		t.Fatalf("empty table: got %s, want []", out)
	}

	lost := time.Date(2026, 11, 20, 9, 30, 0, 0, time.UTC)
	inc := incident.Incident{
		State: incident.StateOpen, KeyARN: "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
		KeyState: "Disabled", Trigger: "DisableKey", LostAt: lost,
		Actor:     incident.Actor{ARN: "arn:aws:iam::123456789012:user/alice"},
		Clusters:  []incident.Cluster{{Identifier: "orders", ARN: "arn:aws:rds:us-east-1:123456789012:cluster:orders", Engine: "aurora-postgresql", Status: "stopped", CanStop: true, LostAccessAt: &lost}},
		Snapshots: []incident.Snapshot{{Identifier: "orders-snap", ClusterIdentifier: "orders", Type: "manual"}},
	}
	inc.RecomputeDeadlines()
	store := dynamostore.New(ddb, table)
	created, _, err := store.Open(context.Background(), inc, incident.Entry{Source: "ev-1", At: lost, Detail: "DisableKey"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Update(context.Background(), created.ID, func(i *incident.Incident) error {
		_, _, err := i.Approve("U0APPROVER", i.Version, "click:1.2:U0APPROVER", lost, 2, "run:1.2:U0APPROVER")
		return err
	}); err != nil {
		t.Fatal(err)
	}

	out := runCLI(t, "incidents", "--json")
	var got []map[string]any
	if err := json.Unmarshal([]byte(out), &got); err != nil || len(got) != 1 {
		t.Fatalf("got %v: %s", err, out)
	}
	// Issue 2's fields, and issue 8's approvals and counts.
	for _, field := range []string{"id", "key_arn", "state", "trigger", "opened_at", "deadline", "actor", "deliveries", "clusters", "timeline",
		"approvals", "snapshot_count", "instance_count",
		// Issue 9's fields.
		"key_state", "key_account", "severity", "window_estimated", "radius_incomplete"} {
		if _, ok := got[0][field]; !ok {
			t.Errorf("incident lacks %q: %s", field, out)
		}
	}
	if a, _ := got[0]["approvals"].([]any); len(a) != 1 {
		t.Errorf("approvals: got %v, want one {user, version, at}", got[0]["approvals"])
	} else if ap, _ := a[0].(map[string]any); ap["user"] != "U0APPROVER" || ap["version"] == nil || ap["at"] == nil {
		t.Errorf("approval: got %v, want user U0APPROVER with version and at", ap)
	}
	// Issue 10: whether the incident has been heard in Slack (nothing delivered here).
	if d, _ := got[0]["slack_delivery"].(map[string]any); d["state"] != "pending" || d["pending"] != float64(1+2) {
		t.Errorf("slack_delivery: got %v, want {state: pending, pending: 3} (the message, the delivery and the approval)", got[0]["slack_delivery"])
	}
	// Severity is graded when printed: lost on 2026-11-20, the 7-day deadline has passed.
	wantSeverity := string(inc.SeverityAt(time.Now()))
	if got[0]["key_account"] != "123456789012" || got[0]["severity"] != wantSeverity || got[0]["key_state"] != "Disabled" {
		t.Errorf("key_account %v, severity %v, key_state %v; want 123456789012, "+wantSeverity+", Disabled", got[0]["key_account"], got[0]["severity"], got[0]["key_state"])
	}
	if cl, _ := got[0]["clusters"].([]any); len(cl) == 1 {
		c, _ := cl[0].(map[string]any)
		for _, field := range []string{"lost_access_at", "can_stop", "cannot_stop_reason"} {
			if _, ok := c[field]; !ok {
				t.Errorf("cluster lacks %q: %v", field, c)
			}
		}
	}
	if n, _ := got[0]["snapshot_count"].(float64); n != 1 {
		t.Errorf("snapshot_count: got %v, want 1", got[0]["snapshot_count"])
	}

	// One incident, with its whole timeline of typed entries.
	var one map[string]any
	if err := json.Unmarshal([]byte(runCLI(t, "incidents", created.ID, "--json")), &one); err != nil || one["id"] != created.ID {
		t.Fatalf("incidents %s --json: %v, %v", created.ID, err, one["id"])
	}
	entries, _ := one["timeline"].([]any)
	if len(entries) < 2 {
		t.Fatalf("timeline: got %d entries, want the delivery and the approval", len(entries))
	}
	for _, e := range entries {
		m, _ := e.(map[string]any)
		for _, field := range []string{"kind", "at", "id"} {
			if v, _ := m[field].(string); v == "" {
				t.Errorf("timeline entry lacks %q: %v", field, m)
			}
		}
		for _, field := range []string{"actor", "target", "result"} {
			if _, ok := m[field]; !ok {
				t.Errorf("timeline entry lacks %q: %v", field, m)
			}
		}
	}
	if d, _ := got[0]["deadline"].(string); d != "2026-11-27T09:30:00Z" {
		t.Errorf("deadline: got %q, want 2026-11-27T09:30:00Z (RFC 3339, UTC)", d)
	}
	if text := runCLI(t, "incidents"); !strings.Contains(text, "DisableKey") || !strings.Contains(text, "open") {
		t.Errorf("table:\n%s", text)
	}
}

func TestCountdown(t *testing.T) {
	tests := []struct {
		in   time.Duration
		want string
	}{
		{7 * 24 * time.Hour, "7d 0h"},
		{6*24*time.Hour + 23*time.Hour + 50*time.Minute, "6d 23h"},
		{5*time.Hour + 12*time.Minute, "5h 12m"},
		{42 * time.Minute, "42m"},
		{0, "overdue"},
		{-time.Hour, "overdue"},
	}
	for _, tt := range tests {
		if got := Countdown(tt.in); got != tt.want {
			t.Errorf("Countdown(%v): got %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestUnknownCommand(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"nope"}, &out, &errOut); err == nil {
		t.Fatal("got nil error for an unknown command")
	}
}
