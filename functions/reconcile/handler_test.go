package main

import (
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/startup"

	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/keywarden/keywarden/internal/env"
	"github.com/keywarden/keywarden/internal/reconcile"
)

type fakeRunner struct {
	rep reconcile.Report
	err error
}

func (f fakeRunner) Run(context.Context) (reconcile.Report, error) { return f.rep, f.err }

// RetryOutbox answers a report that tells it apart from Run's.
func (f fakeRunner) RetryOutbox(context.Context) (reconcile.Report, error) {
	return reconcile.Report{Outcomes: []reconcile.Outcome{{IncidentID: "KW-2", Action: reconcile.ActionDelivered}}}, nil
}

// The one-minute schedule's event runs the outbox retry only.
func TestHandleOutboxPass(t *testing.T) {
	var logs bytes.Buffer
	h := newHandler(fakeRunner{}, slog.New(slog.NewJSONHandler(&logs, nil)))
	rep, err := h.Handle(context.Background(), []byte(`{"pass":"outbox"}`))
	if err != nil || len(rep.Outcomes) != 1 || rep.Outcomes[0].Action != reconcile.ActionDelivered {
		t.Fatalf("Handle: %+v, %v; want the outbox pass", rep, err)
	}
	if !strings.Contains(logs.String(), `"action":"outbox"`) {
		t.Errorf("logs %s: want the outbox pass named", logs.String())
	}
}

func (f fakeRunner) RunHandoffs(context.Context) (reconcile.Report, error) {
	return reconcile.Report{Outcomes: []reconcile.Outcome{{IncidentID: "KW-2", Action: reconcile.ActionHandedOff}}}, nil
}

// TestHandleHandoffPass: the one-minute schedule's {"pass":"handoff"} runs only the hand-off
// recovery.
func TestHandleHandoffPass(t *testing.T) {
	var buf bytes.Buffer
	h := newHandler(fakeRunner{err: errors.New("the full pass must not run")}, slog.New(slog.NewJSONHandler(&buf, nil)))
	rep, err := h.Handle(context.Background(), json.RawMessage(`{"pass":"handoff"}`))
	if err != nil || len(rep.Outcomes) != 1 || !strings.Contains(buf.String(), `"action":"handed-off"`) {
		t.Errorf("hand-off pass: %+v, %v, log %s", rep, err, buf.String())
	}
	h = newHandler(failingHandoffs{}, slog.New(slog.NewJSONHandler(&buf, nil)))
	if _, err := h.Handle(context.Background(), json.RawMessage(`{"pass":"handoff"}`)); err == nil {
		t.Error("a failed hand-off did not fail the invocation: the Errors alarm would not see it")
	}
}

type failingHandoffs struct{ fakeRunner }

func (failingHandoffs) RunHandoffs(context.Context) (reconcile.Report, error) {
	return reconcile.Report{Failures: 1, Outcomes: []reconcile.Outcome{{IncidentID: "KW-3", Action: reconcile.ActionFailed, Reason: "hand-off: AccessDenied"}}}, nil
}

func TestHandleLogsEveryDecision(t *testing.T) {
	for _, tc := range []struct {
		name    string
		runner  fakeRunner
		wantErr bool
		want    []string
	}{
		{"run", fakeRunner{rep: reconcile.Report{Incidents: 1, Reminders: 1, Outcomes: []reconcile.Outcome{
			{IncidentID: "KW-1", Action: reconcile.ActionReminded, Reason: "reminder: less than 6h0m0s left"},
			{KeyARN: "arn:k", Action: reconcile.ActionFailed, Reason: "backstop: throttled"},
		}}}, false, []string{`"action":"reminded"`, `"incident_id":"KW-1"`, `"level":"ERROR"`, `"action":"run"`, `"reminders":1`}},
		{"nothing readable", fakeRunner{err: errors.New("scan: unavailable")}, true, []string{`"reconcile run failed"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			h := newHandler(tc.runner, slog.New(slog.NewJSONHandler(&logs, nil)))
			_, err := h.Handle(context.Background(), []byte(`{"source":"aws.scheduler"}`))
			if (err != nil) != tc.wantErr {
				t.Errorf("got error %v, want error %v", err, tc.wantErr)
			}
			for _, w := range tc.want {
				if !strings.Contains(logs.String(), w) {
					t.Errorf("got logs %s, want %s", logs.String(), w)
				}
			}
		})
	}
}

func TestSettings(t *testing.T) {
	got, err := loadSettings(env.FromMap(map[string]string{"INCIDENTS_TABLE": "t"}))
	if err != nil {
		t.Fatal(err)
	}
	want := settings{Shared: startup.Settings{Table: "t", LogLevel: "info"}, Thresholds: reconcile.DefaultThresholds, RunBudget: reconcile.DefaultRunBudget,
		MaxCalls: reconcile.DefaultMaxCalls, CloudTrailLookup: true, CriticalEvery: reconcile.DefaultCriticalEvery,
		WatchGrace: incident.DefaultWatchGrace}
	if diff := cmp.Diff(want, got, cmpopts.IgnoreFields(startup.Settings{}, "BotToken"), cmpopts.IgnoreFields(settings{}, "Org")); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}

	got, err = loadSettings(env.FromMap(map[string]string{
		"INCIDENTS_TABLE": "t", "REMINDER_THRESHOLDS": "48h,2h", "ESCALATION_MENTION": "<!subteam^S1>", "RUN_BUDGET": "50s",
		"MAX_API_CALLS": "100", "SKIP_CLUSTER_AUTOMATED_BACKUPS": "true", "CLOUDTRAIL_LOOKUP": "off",
		"CRITICAL_REMINDER_EVERY": "90m",
		"REMEDIATE_FUNCTION":      "keywarden-remediate", "WATCH_GRACE": "10m",
	}))
	if err != nil {
		t.Fatal(err)
	}
	want = settings{Shared: startup.Settings{Table: "t", LogLevel: "info", SkipClusterAutomatedBackups: true},
		Thresholds: []time.Duration{48 * time.Hour, 2 * time.Hour}, Mention: "<!subteam^S1>", RunBudget: 50 * time.Second, MaxCalls: 100,
		CriticalEvery: 90 * time.Minute, RemediateFunction: "keywarden-remediate", WatchGrace: 10 * time.Minute}
	if diff := cmp.Diff(want, got, cmpopts.IgnoreFields(startup.Settings{}, "BotToken"), cmpopts.IgnoreFields(settings{}, "Org")); diff != "" {
		t.Errorf("local stack (-want +got):\n%s", diff)
	}

	if got.Org.Enabled {
		t.Errorf("no DEPLOYMENT_MODE: got organization mode, want account mode")
	}
	got, err = loadSettings(env.FromMap(map[string]string{"INCIDENTS_TABLE": "t", "DEPLOYMENT_MODE": "organization", "ORGANIZATION_ACCOUNTS": "111111111111"}))
	if err != nil || !got.Org.Enabled || len(got.Org.Accounts) != 1 {
		t.Errorf("organization mode: got %+v, %v", got.Org, err)
	}
	if _, err := loadSettings(env.FromMap(map[string]string{"INCIDENTS_TABLE": "t", "DEPLOYMENT_MODE": "both"})); err == nil || !strings.Contains(err.Error(), "DEPLOYMENT_MODE") {
		t.Errorf("bad DEPLOYMENT_MODE: got %v, want it named", err)
	}

	_, err = loadSettings(env.FromMap(map[string]string{"REMINDER_THRESHOLDS": "soon", "CLOUDTRAIL_LOOKUP": "maybe", "RUN_BUDGET": "-1s"}))
	for _, name := range []string{"INCIDENTS_TABLE", "REMINDER_THRESHOLDS", "CLOUDTRAIL_LOOKUP", "RUN_BUDGET"} {
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("got error %v, want it to name %s", err, name)
		}
	}
}

// TestFailureMetric: every run writes one embedded-metric-format line counting its failures
// (failed outcomes, Slack updates that failed, a run that checked nothing), zero included.
func TestFailureMetric(t *testing.T) {
	at := time.Date(2026, 3, 10, 15, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name   string
		runner fakeRunner
		want   int
	}{
		{"clean", fakeRunner{rep: reconcile.Report{Outcomes: []reconcile.Outcome{{Action: reconcile.ActionChecked}}}}, 0},
		{"every KMS call failed", fakeRunner{rep: reconcile.Report{Outcomes: []reconcile.Outcome{
			{KeyARN: "arn:a", Action: reconcile.ActionFailed}, {KeyARN: "arn:b", Action: reconcile.ActionFailed},
			{IncidentID: "KW-1", Action: reconcile.ActionAnnounceFailed},
		}}}, 3},
		{"nothing readable", fakeRunner{err: errors.New("scan: unavailable")}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var metrics bytes.Buffer
			h := newHandler(tc.runner, slog.New(slog.NewJSONHandler(io.Discard, nil))).withMetrics(&metrics, "keywarden-ReconcileFunction")
			h.now = func() time.Time { return at }
			_, _ = h.Handle(context.Background(), nil)
			var line struct {
				AWS struct {
					Timestamp         int64
					CloudWatchMetrics []struct {
						Namespace  string
						Dimensions [][]string
						Metrics    []struct{ Name, Unit string }
					}
				} `json:"_aws"`
				FunctionName      string
				ReconcileFailures int
			}
			if err := json.Unmarshal(metrics.Bytes(), &line); err != nil {
				t.Fatalf("metric line %q: %v", metrics.String(), err)
			}
			cw := line.AWS.CloudWatchMetrics
			if len(cw) != 1 || cw[0].Namespace != reconcile.MetricNamespace || cw[0].Metrics[0].Name != reconcile.MetricFailures ||
				line.AWS.Timestamp != at.UnixMilli() || line.FunctionName != "keywarden-ReconcileFunction" || line.ReconcileFailures != tc.want {
				t.Errorf("got %s, want %d failures in %s/%s", metrics.String(), tc.want, reconcile.MetricNamespace, reconcile.MetricFailures)
			}
		})
	}
}
