package rdsevent

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const samples = "../../events"

func mustTime(t *testing.T, s string) time.Time {
	t.Helper()
	tm, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatal(err)
	}
	return tm
}

// TestParseSamples decodes every events/rds-*.json, so the samples cannot rot: a new sample
// without a row here fails the test.
func TestParseSamples(t *testing.T) {
	type want struct {
		meaning    Meaning
		eventID    string
		identifier string
		isCluster  bool
		time       string
		err        error
	}
	cases := map[string]want{
		"rds-instance-key-access-lost-0418.json":               {KeyAccessLost, "RDS-EVENT-0418", "orders-aurora-1", false, "2026-03-10T14:07:31.482Z", nil},
		"rds-instance-key-access-lost-0418-no-prefix.json":     {KeyAccessLost, "RDS-EVENT-0418", "orders-aurora-2", false, "2026-03-10T14:07:33.027Z", nil},
		"rds-instance-key-access-lost-0419.json":               {KeyAccessLost, "RDS-EVENT-0419", "orders-aurora-1", false, "2026-03-10T14:37:12.905Z", nil},
		"rds-instance-key-access-restored-0420.json":           {KeyAccessRestored, "RDS-EVENT-0420", "orders-aurora-1", false, "2026-03-11T09:15:48.316Z", nil},
		"rds-instance-key-access-lost-0419-cross-account.json": {KeyAccessLost, "RDS-EVENT-0419", "orders-aurora-1", false, "2026-03-12T08:21:40.118Z", nil},
		"rds-instance-key-access-lost-0419-deleted-key.json":   {KeyAccessLost, "RDS-EVENT-0419", "orders-aurora-1", false, "2026-03-13T10:02:05.771Z", nil},
		"rds-instance-key-access-lost-0419-older.json":         {KeyAccessLost, "RDS-EVENT-0419", "orders-aurora-1", false, "2026-03-11T09:02:17.204Z", nil},
		"rds-instance-key-access-lost-0418-key-enabled.json":   {KeyAccessLost, "RDS-EVENT-0418", "orders-aurora-1", false, "2026-03-14T16:45:09.337Z", nil},
		"rds-cluster-stopped-0150.json":                        {Stopped, "RDS-EVENT-0150", "orders-aurora", true, "2026-03-10T15:02:44.750Z", nil},
		"rds-cluster-started-0151.json":                        {Started, "RDS-EVENT-0151", "orders-aurora", true, "2026-03-11T09:31:05.193Z", nil},
		"rds-instance-stopped-0087.json":                       {Stopped, "RDS-EVENT-0087", "orders-aurora-2", false, "2026-03-10T15:01:58.641Z", nil},
		"rds-instance-started-0088.json":                       {Started, "RDS-EVENT-0088", "orders-aurora-2", false, "2026-03-11T09:36:22.558Z", nil},
		"rds-cluster-patched-0173.json":                        {err: ErrUnsupported},
	}

	files, err := filepath.Glob(filepath.Join(samples, "rds-*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no rds-*.json samples under %s", samples)
	}
	seen := map[string]bool{}
	for _, file := range files {
		name := filepath.Base(file)
		seen[name] = true
		t.Run(name, func(t *testing.T) {
			w, ok := cases[name]
			if !ok {
				t.Fatalf("sample %s has no expected result in TestParseSamples", name)
			}
			raw, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			got, err := Parse(raw)
			if w.err != nil {
				if !errors.Is(err, w.err) {
					t.Fatalf("got error %v, want %v", err, w.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v, want nil", err)
			}
			kind := "db"
			sourceType := SourceTypeInstance
			detailType := DetailTypeInstance
			if w.isCluster {
				kind, sourceType, detailType = "cluster", SourceTypeCluster, DetailTypeCluster
			}
			wantEv := Event{
				ID:         got.ID, // checked non-empty below
				DetailType: detailType,
				Time:       mustTime(t, w.time),
				EventID:    w.eventID,
				Meaning:    w.meaning,
				SourceType: sourceType,
				SourceARN:  "arn:aws:rds:us-east-1:123456789012:" + kind + ":" + w.identifier,
				Identifier: w.identifier,
				IsCluster:  w.isCluster,
				Message:    got.Message,
				Region:     "us-east-1",
				Account:    "123456789012",
			}
			if diff := cmp.Diff(wantEv, got); diff != "" {
				t.Errorf("Parse mismatch (-want +got):\n%s", diff)
			}
			if got.ID == "" {
				t.Error("got empty ID, want the envelope id")
			}
			if got.Time.Location() != time.UTC {
				t.Errorf("got location %v, want UTC", got.Time.Location())
			}
			if strings.HasPrefix(w.eventID, "RDS-EVENT-04") && !strings.Contains(got.Message, w.identifier) {
				t.Errorf("got message %q, want it to name %s", got.Message, w.identifier)
			}
		})
	}
	for name := range cases {
		if !seen[name] {
			t.Errorf("expected sample %s is missing from %s", name, samples)
		}
	}
}

// envelope builds an event with the given detail body, for the hand-made cases below.
func env(detailType, resources, detail string) []byte {
	return []byte(`{"version":"0","id":"11111111-2222-3333-4444-555555555555","detail-type":"` + detailType +
		`","source":"aws.rds","account":"123456789012","time":"2026-03-10T14:07:31Z","region":"us-east-1","resources":` +
		resources + `,"detail":` + detail + `}`)
}

func TestParse(t *testing.T) {
	instARN := "arn:aws:rds:us-east-1:123456789012:db:orders-aurora-1"
	clusterARN := "arn:aws:rds:us-east-1:123456789012:cluster:orders-aurora"
	tests := []struct {
		name           string
		raw            []byte
		wantIdentifier string
		wantARN        string
		wantCluster    bool
		wantTime       string
		wantErr        error
	}{
		{
			name:           "prefixed SourceIdentifier, ARN wins",
			raw:            env(DetailTypeInstance, `["`+instARN+`"]`, `{"SourceType":"DB_INSTANCE","SourceArn":"`+instARN+`","Date":"2026-03-10T14:07:31.482Z","SourceIdentifier":"rds:orders-aurora-1","EventID":"RDS-EVENT-0418"}`),
			wantIdentifier: "orders-aurora-1", wantARN: instARN, wantTime: "2026-03-10T14:07:31.482Z",
		},
		{
			name:           "bare SourceIdentifier",
			raw:            env(DetailTypeInstance, `["`+instARN+`"]`, `{"SourceType":"DB_INSTANCE","SourceArn":"`+instARN+`","Date":"2026-03-10T14:07:31.482Z","SourceIdentifier":"orders-aurora-1","EventID":"RDS-EVENT-0418"}`),
			wantIdentifier: "orders-aurora-1", wantARN: instARN, wantTime: "2026-03-10T14:07:31.482Z",
		},
		{
			name:           "SourceIdentifier disagrees with SourceArn: ARN is authoritative",
			raw:            env(DetailTypeInstance, `[]`, `{"SourceArn":"`+instARN+`","Date":"2026-03-10T14:07:31.482Z","SourceIdentifier":"rds:something-else","EventID":"RDS-EVENT-0419"}`),
			wantIdentifier: "orders-aurora-1", wantARN: instARN, wantTime: "2026-03-10T14:07:31.482Z",
		},
		{
			name:           "no SourceArn: envelope resources",
			raw:            env(DetailTypeCluster, `["`+clusterARN+`"]`, `{"SourceType":"CLUSTER","Date":"2026-03-10T14:07:31.482Z","SourceIdentifier":"rds:orders-aurora","EventID":"RDS-EVENT-0150"}`),
			wantIdentifier: "orders-aurora", wantARN: clusterARN, wantCluster: true, wantTime: "2026-03-10T14:07:31.482Z",
		},
		{
			name:           "no ARN anywhere: prefixed SourceIdentifier stripped",
			raw:            env(DetailTypeCluster, `[]`, `{"SourceType":"CLUSTER","Date":"2026-03-10T14:07:31.482Z","SourceIdentifier":"rds:orders-aurora","EventID":"RDS-EVENT-0151"}`),
			wantIdentifier: "orders-aurora", wantCluster: true, wantTime: "2026-03-10T14:07:31.482Z",
		},
		{
			name:           "no ARN anywhere: bare SourceIdentifier, type from detail-type",
			raw:            env(DetailTypeInstance, `null`, `{"Date":"2026-03-10T14:07:31.482Z","SourceIdentifier":"orders-aurora-1","EventID":"RDS-EVENT-0087"}`),
			wantIdentifier: "orders-aurora-1", wantTime: "2026-03-10T14:07:31.482Z",
		},
		{
			name:           "key-access event arriving as a cluster event is tolerated",
			raw:            env(DetailTypeCluster, `["`+clusterARN+`"]`, `{"SourceType":"CLUSTER","SourceArn":"`+clusterARN+`","Date":"2026-03-10T14:07:31.482Z","SourceIdentifier":"orders-aurora","EventID":"RDS-EVENT-0418"}`),
			wantIdentifier: "orders-aurora", wantARN: clusterARN, wantCluster: true, wantTime: "2026-03-10T14:07:31.482Z",
		},
		{
			name:           "no Date: envelope time",
			raw:            env(DetailTypeInstance, `["`+instARN+`"]`, `{"SourceArn":"`+instARN+`","EventID":"RDS-EVENT-0420"}`),
			wantIdentifier: "orders-aurora-1", wantARN: instARN, wantTime: "2026-03-10T14:07:31Z",
		},
		{
			name:           "unreadable Date: envelope time",
			raw:            env(DetailTypeInstance, `["`+instARN+`"]`, `{"SourceArn":"`+instARN+`","Date":"10/03/2026","EventID":"RDS-EVENT-0420"}`),
			wantIdentifier: "orders-aurora-1", wantARN: instARN, wantTime: "2026-03-10T14:07:31Z",
		},
		{
			name:           "Date with offset is normalised to UTC",
			raw:            env(DetailTypeInstance, `["`+instARN+`"]`, `{"SourceArn":"`+instARN+`","Date":"2026-03-10T16:07:31.482+02:00","EventID":"RDS-EVENT-0420"}`),
			wantIdentifier: "orders-aurora-1", wantARN: instARN, wantTime: "2026-03-10T14:07:31.482Z",
		},
		{
			name:           "other partition",
			raw:            env(DetailTypeInstance, `[]`, `{"SourceArn":"arn:aws-cn:rds:cn-north-1:123456789012:db:orders-aurora-1","Date":"2026-03-10T14:07:31.482Z","EventID":"RDS-EVENT-0088"}`),
			wantIdentifier: "orders-aurora-1", wantARN: "arn:aws-cn:rds:cn-north-1:123456789012:db:orders-aurora-1", wantTime: "2026-03-10T14:07:31.482Z",
		},

		{name: "cluster event without EventID", raw: env(DetailTypeCluster, `["`+clusterARN+`"]`, `{"SourceType":"CLUSTER","SourceArn":"`+clusterARN+`","Date":"2026-03-10T14:07:31.482Z","Message":"DB cluster stopped."}`), wantErr: ErrUnsupported},
		{name: "unhandled event ID", raw: env(DetailTypeInstance, `["`+instARN+`"]`, `{"SourceArn":"`+instARN+`","EventID":"RDS-EVENT-0049"}`), wantErr: ErrUnsupported},
		{name: "snapshot detail-type", raw: env("RDS DB Cluster Snapshot Event", `[]`, `{"EventID":"RDS-EVENT-0418"}`), wantErr: ErrUnsupported},
		{name: "other source", raw: []byte(`{"id":"x","detail-type":"RDS DB Instance Event","source":"aws.kms","detail":{}}`), wantErr: ErrUnsupported},
		{name: "snapshot ARN", raw: env(DetailTypeCluster, `[]`, `{"SourceArn":"arn:aws:rds:us-east-1:123456789012:cluster-snapshot:rds:orders-2026-03-10","EventID":"RDS-EVENT-0150"}`), wantErr: ErrUnsupported},
		{name: "parameter-group source type", raw: env(DetailTypeInstance, `[]`, `{"SourceType":"DB_PARAM","SourceIdentifier":"default-aurora","EventID":"RDS-EVENT-0087"}`), wantErr: ErrUnsupported},

		{name: "not JSON", raw: []byte(`RDS-EVENT-0418`), wantErr: ErrMalformed},
		{name: "empty", raw: nil, wantErr: ErrMalformed},
		{name: "JSON array", raw: []byte(`[]`), wantErr: ErrMalformed},
		{name: "no source", raw: []byte(`{"detail-type":"RDS DB Instance Event","detail":{}}`), wantErr: ErrMalformed},
		{name: "null detail", raw: env(DetailTypeInstance, `[]`, `null`), wantErr: ErrMalformed},
		{name: "detail is a string", raw: env(DetailTypeInstance, `[]`, `"RDS-EVENT-0418"`), wantErr: ErrMalformed},
		{name: "EventID is a number", raw: env(DetailTypeInstance, `[]`, `{"EventID":418}`), wantErr: ErrMalformed},
		{name: "no time at all", raw: []byte(`{"id":"x","detail-type":"RDS DB Instance Event","source":"aws.rds","detail":{"SourceArn":"` + instARN + `","EventID":"RDS-EVENT-0418"}}`), wantErr: ErrMalformed},
		{name: "no resource at all", raw: env(DetailTypeInstance, `[]`, `{"Date":"2026-03-10T14:07:31.482Z","EventID":"RDS-EVENT-0418"}`), wantErr: ErrMalformed},
		{name: "only the rds: prefix", raw: env(DetailTypeInstance, `[]`, `{"SourceIdentifier":"rds:","EventID":"RDS-EVENT-0418"}`), wantErr: ErrMalformed},
		{name: "SourceArn not an ARN", raw: env(DetailTypeInstance, `[]`, `{"SourceArn":"orders-aurora-1","EventID":"RDS-EVENT-0418"}`), wantErr: ErrMalformed},
		{name: "SourceArn of another service", raw: env(DetailTypeInstance, `[]`, `{"SourceArn":"arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab","EventID":"RDS-EVENT-0418"}`), wantErr: ErrMalformed},
		{name: "identifier with odd characters", raw: env(DetailTypeInstance, `[]`, `{"SourceArn":"arn:aws:rds:us-east-1:123456789012:db:orders aurora<1>","EventID":"RDS-EVENT-0418"}`), wantErr: ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.raw)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("got error %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v, want nil", err)
			}
			if got.Identifier != tt.wantIdentifier {
				t.Errorf("got identifier %q, want %q", got.Identifier, tt.wantIdentifier)
			}
			if got.SourceARN != tt.wantARN {
				t.Errorf("got ARN %q, want %q", got.SourceARN, tt.wantARN)
			}
			if got.IsCluster != tt.wantCluster {
				t.Errorf("got IsCluster %v, want %v", got.IsCluster, tt.wantCluster)
			}
			if want := mustTime(t, tt.wantTime); !got.Time.Equal(want) || got.Time.Location() != time.UTC {
				t.Errorf("got time %v, want %v in UTC", got.Time, want)
			}
		})
	}
}

func TestUnsupportedMessageSaysWhy(t *testing.T) {
	raw := env(DetailTypeCluster, `[]`, `{"SourceType":"CLUSTER","SourceIdentifier":"orders-aurora","Message":"DB cluster stopped."}`)
	_, err := Parse(raw)
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "no EventID") {
		t.Errorf("got %v, want ErrUnsupported saying the event has no EventID", err)
	}
}

// FuzzParse checks that no input panics Parse and that every accepted event carries what the
// handler relies on. Run: go test ./internal/rdsevent -run '^$' -fuzz FuzzParse -fuzztime 20s
func FuzzParse(f *testing.F) {
	files, err := filepath.Glob(filepath.Join(samples, "rds-*.json"))
	if err != nil {
		f.Fatal(err)
	}
	for _, file := range files {
		raw, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
	f.Add([]byte(`{}`))
	f.Add(env(DetailTypeCluster, `[]`, `{"SourceIdentifier":"rds:orders-aurora","EventID":"RDS-EVENT-0150"}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		ev, err := Parse(raw)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnsupported) {
				t.Fatalf("got error %v, want one wrapping ErrMalformed or ErrUnsupported", err)
			}
			return
		}
		if !validIdentifier(ev.Identifier) {
			t.Errorf("got identifier %q, want a valid RDS identifier", ev.Identifier)
		}
		if _, ok := meanings[ev.EventID]; !ok || meanings[ev.EventID] != ev.Meaning {
			t.Errorf("got event ID %q with meaning %q, want a handled pair", ev.EventID, ev.Meaning)
		}
		if ev.Time.IsZero() || ev.Time.Location() != time.UTC {
			t.Errorf("got time %v, want a non-zero UTC time", ev.Time)
		}
		if ev.SourceARN != "" {
			if a, err := parseARN(ev.SourceARN); err != nil || a.name != ev.Identifier {
				t.Errorf("got ARN %q and identifier %q, want the identifier to end the ARN", ev.SourceARN, ev.Identifier)
			}
		}
	})
}

func TestHistoryKeyAccessLost(t *testing.T) {
	for _, name := range []string{"rds-instance-key-access-lost-0418.json", "rds-instance-key-access-lost-0419.json", "rds-instance-key-access-restored-0420.json", "rds-cluster-stopped-0150.json"} {
		b, err := os.ReadFile(filepath.Join("..", "..", "events", name))
		if err != nil {
			t.Fatal(err)
		}
		var ev struct {
			Detail struct{ EventID, Message string }
		}
		if err := json.Unmarshal(b, &ev); err != nil {
			t.Fatal(err)
		}
		want := ev.Detail.EventID
		if want != "RDS-EVENT-0418" && want != "RDS-EVENT-0419" {
			want = ""
		}
		if got := HistoryKeyAccessLost(ev.Detail.Message); got != want {
			t.Errorf("%s: got %q, want %q", name, got, want)
		}
	}
}
