package keyevent_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/keyevent"
)

const (
	eventsDir = "../../events"
	account   = "123456789012"
	region    = "us-east-1"
	keyID     = "1234abcd-12ab-34cd-56ef-1234567890ab"
	keyARN    = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
	extARN    = "arn:aws:kms:us-east-1:123456789012:key/0987dcba-09fe-87dc-65ba-ab0987654321"
	mrkARN    = "arn:aws:kms:us-east-1:123456789012:key/mrk-1234abcd12ab34cd56ef1234567890ab"
)

// summary is the part of an Event each sample is checked on.
type summary struct {
	Kind              keyevent.Kind
	Name              string
	KeyRef            string
	CustomKeyStoreID  string
	Failed            bool
	ErrorCode         string
	KeyStateHint      string
	PendingWindowDays int
	DeletionDateText  string
	Actor             incident.Actor
}

func summarise(e keyevent.Event) summary {
	return summary{
		Kind:              e.Kind,
		Name:              e.Name,
		KeyRef:            e.KeyRef,
		CustomKeyStoreID:  e.CustomKeyStoreID,
		Failed:            e.Failed(),
		ErrorCode:         e.ErrorCode,
		KeyStateHint:      e.KeyStateHint,
		PendingWindowDays: e.PendingWindowDays,
		DeletionDateText:  e.DeletionDateText,
		Actor:             e.Actor,
	}
}

func cliUA(command string) string {
	return "aws-cli/2.27.41 md/awscrt#0.26.1 ua/2.1 os/linux#6.8.0-1031-aws md/arch#x86_64 lang/python#3.13.4 md/pyimpl#CPython m/E,Z cfg/retry-mode#standard md/installer#exe md/distrib#ubuntu.24 md/prompt#off md/command#kms." + command
}

// alice is the SSO administrator who makes most calls in the samples.
func alice(command string) incident.Actor {
	return incident.Actor{
		ARN:       "arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_AdministratorAccess_0123456789abcdef/alice@example.com",
		Principal: "AROAEXAMPLEROLEID1234:alice@example.com",
		Type:      "AssumedRole",
		AccountID: account,
		SourceIP:  "203.0.113.24",
		UserAgent: cliUA(command),
	}
}

// bob is the IAM user of the legacy-shaped samples.
func bob(command string) incident.Actor {
	return incident.Actor{
		ARN:       "arn:aws:iam::123456789012:user/bob",
		Principal: "AIDAEXAMPLEUSERID5678",
		Type:      "IAMUser",
		AccountID: account,
		SourceIP:  "198.51.100.7",
		UserAgent: cliUA(command),
	}
}

var kmsItself = incident.Actor{Principal: "kms.amazonaws.com", Type: "AWSService", AccountID: account}

// TestParseSamples decodes every events/kms-*.json, so the samples cannot rot: a sample without
// an expectation here, or an expectation without a sample, fails the test.
func TestParseSamples(t *testing.T) {
	tests := map[string]struct {
		want    summary
		wantErr error
	}{
		"kms-disable-key.json": {want: summary{
			Kind: keyevent.KindLoss, Name: "DisableKey", KeyRef: keyARN, Actor: alice("disablekey"),
		}},
		"kms-disable-key-legacy-null-response.json": {want: summary{
			Kind: keyevent.KindLoss, Name: "DisableKey", KeyRef: keyARN, Actor: bob("disablekey"),
		}},
		"kms-disable-key-failed.json": {want: summary{
			Kind: keyevent.KindLoss, Name: "DisableKey", KeyRef: keyID, Failed: true, ErrorCode: "AccessDeniedException",
			Actor: incident.Actor{
				ARN:       "arn:aws:sts::123456789012:assumed-role/Developer/bob",
				Principal: "AROAEXAMPLEDEVROLE99:bob",
				Type:      "AssumedRole",
				AccountID: account,
				SourceIP:  "198.51.100.23",
				UserAgent: cliUA("disablekey"),
			},
		}},
		"kms-disable-key-no-resources.json": {want: summary{
			Kind: keyevent.KindLoss, Name: "DisableKey", KeyRef: keyARN, Actor: alice("disablekey"),
		}},
		"kms-schedule-key-deletion.json": {want: summary{
			Kind: keyevent.KindLoss, Name: "ScheduleKeyDeletion", KeyRef: keyARN, KeyStateHint: "PendingDeletion",
			PendingWindowDays: 7, DeletionDateText: "Mar 17, 2026 2:04:11 PM", Actor: alice("schedulekeydeletion"),
		}},
		"kms-schedule-key-deletion-replica.json": {want: summary{
			Kind: keyevent.KindLoss, Name: "ScheduleKeyDeletion", KeyRef: mrkARN, KeyStateHint: "PendingReplicaDeletion",
			PendingWindowDays: 30, Actor: alice("schedulekeydeletion"),
		}},
		"kms-schedule-key-deletion-comma-date.json": {want: summary{
			Kind: keyevent.KindLoss, Name: "ScheduleKeyDeletion", KeyRef: keyARN, KeyStateHint: "PendingDeletion",
			PendingWindowDays: 30, DeletionDateText: "Apr 9, 2026, 11:25:25 PM", Actor: alice("schedulekeydeletion"),
		}},
		"kms-schedule-key-deletion-24h-pm.json": {want: summary{
			Kind: keyevent.KindLoss, Name: "ScheduleKeyDeletion", KeyRef: keyARN, KeyStateHint: "PendingDeletion",
			PendingWindowDays: 14, DeletionDateText: "Mar 24, 2026 18:58:30 PM", Actor: alice("schedulekeydeletion"),
		}},
		"kms-enable-key.json": {want: summary{
			Kind: keyevent.KindRestore, Name: "EnableKey", KeyRef: keyARN, Actor: alice("enablekey"),
		}},
		"kms-enable-key-legacy-null-response.json": {want: summary{
			Kind: keyevent.KindRestore, Name: "EnableKey", KeyRef: keyARN, Actor: bob("enablekey"),
		}},
		"kms-cancel-key-deletion.json": {want: summary{
			Kind: keyevent.KindRestore, Name: "CancelKeyDeletion", KeyRef: keyARN, Actor: alice("cancelkeydeletion"),
		}},
		"kms-delete-imported-key-material.json": {want: summary{
			Kind: keyevent.KindLoss, Name: "DeleteImportedKeyMaterial", KeyRef: extARN, Actor: alice("deleteimportedkeymaterial"),
		}},
		"kms-disconnect-custom-key-store.json": {want: summary{
			Kind: keyevent.KindLoss, Name: "DisconnectCustomKeyStore", CustomKeyStoreID: "cks-1234567890abcdef0",
			Actor: alice("disconnectcustomkeystore"),
		}},
		"kms-connect-custom-key-store.json": {want: summary{
			Kind: keyevent.KindRestore, Name: "ConnectCustomKeyStore", CustomKeyStoreID: "cks-1234567890abcdef0",
			Actor: alice("connectcustomkeystore"),
		}},
		"kms-import-key-material.json": {want: summary{
			Kind: keyevent.KindRestore, Name: "ImportKeyMaterial", KeyRef: extARN, Actor: alice("importkeymaterial"),
		}},
		"kms-schedule-key-deletion-snapshot-only.json": {want: summary{
			Kind: keyevent.KindLoss, Name: "ScheduleKeyDeletion", KeyRef: "arn:aws:kms:us-east-1:123456789012:key/5f6e7d8c-9b0a-4c1d-8e2f-3a4b5c6d7e8f",
			KeyStateHint: "PendingDeletion", PendingWindowDays: 30, DeletionDateText: "Apr 14, 2026 11:12:13 AM", Actor: alice("schedulekeydeletion"),
		}},
		"kms-put-key-policy.json": {want: summary{
			Kind: keyevent.KindAccess, Name: "PutKeyPolicy", KeyRef: keyARN, Actor: alice("putkeypolicy"),
		}},
		"kms-revoke-grant.json": {want: summary{
			Kind: keyevent.KindAccess, Name: "RevokeGrant", KeyRef: keyARN, Actor: alice("revokegrant"),
		}},
		"kms-retire-grant.json": {want: summary{
			Kind: keyevent.KindAccess, Name: "RetireGrant", KeyRef: keyARN,
			Actor: incident.Actor{Principal: "rds.amazonaws.com", Type: "AWSService", SourceIP: "rds.amazonaws.com", UserAgent: "rds.amazonaws.com"},
		}},
		"kms-cmk-deletion.json": {want: summary{
			Kind: keyevent.KindLoss, Name: "KMS CMK Deletion", KeyRef: keyARN, Actor: kmsItself,
		}},
		"kms-imported-key-material-expiration.json": {want: summary{
			Kind: keyevent.KindLoss, Name: "KMS Imported Key Material Expiration", KeyRef: extARN, Actor: kmsItself,
		}},
		"kms-describe-key-readonly.json": {wantErr: keyevent.ErrUnsupported},
	}

	files, err := filepath.Glob(filepath.Join(eventsDir, "kms-*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no samples in %s", eventsDir)
	}
	seen := map[string]bool{}
	for _, path := range files {
		name := filepath.Base(path)
		seen[name] = true
		t.Run(name, func(t *testing.T) {
			tc, ok := tests[name]
			if !ok {
				t.Fatalf("sample %s has no expectation in TestParseSamples", name)
			}
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			got, err := keyevent.Parse(raw)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Parse: got error %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: got error %v, want nil", err)
			}
			if diff := cmp.Diff(tc.want, summarise(got)); diff != "" {
				t.Errorf("Parse (-want +got):\n%s", diff)
			}
			checkEnvelope(t, raw, got)
		})
	}
	for name := range tests {
		if !seen[name] {
			t.Errorf("expectation for %s has no sample in %s", name, eventsDir)
		}
	}
}

// checkEnvelope checks the fields every sample shares with its envelope.
func checkEnvelope(t *testing.T, raw []byte, got keyevent.Event) {
	t.Helper()
	var env struct {
		ID         string    `json:"id"`
		DetailType string    `json:"detail-type"`
		Time       time.Time `json:"time"`
		Detail     struct {
			EventID string `json:"eventID"`
		} `json:"detail"`
	}
	if err := json.Unmarshal(raw, &env); err != nil {
		t.Fatal(err)
	}
	if got.ID != env.ID {
		t.Errorf("ID: got %v, want %v", got.ID, env.ID)
	}
	if got.DetailType != env.DetailType {
		t.Errorf("DetailType: got %v, want %v", got.DetailType, env.DetailType)
	}
	if got.CloudTrailEventID != env.Detail.EventID {
		t.Errorf("CloudTrailEventID: got %v, want %v", got.CloudTrailEventID, env.Detail.EventID)
	}
	// Every sample's eventTime equals its envelope time.
	if !got.Time.Equal(env.Time) || got.Time.Location() != time.UTC {
		t.Errorf("Time: got %v, want %v in UTC", got.Time, env.Time)
	}
	if got.Region != region || got.Account != account {
		t.Errorf("Region, Account: got %v %v, want %v %v", got.Region, got.Account, region, account)
	}
}

// sample returns events/<name> decoded as a generic map, for a test to bend out of shape.
func sample(t *testing.T, name string) map[string]any {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(eventsDir, name))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func detail(m map[string]any) map[string]any { return m["detail"].(map[string]any) }

func encode(t *testing.T, m map[string]any) []byte {
	t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseEdgeCases(t *testing.T) {
	tests := []struct {
		name    string
		sample  string                     // a file in events/ to start from
		edit    func(env map[string]any)   // applied to the decoded sample
		raw     string                     // used instead of sample when set
		check   func(keyevent.Event) error // extra checks on success
		wantRef string
		wantErr error
	}{
		{name: "not JSON", raw: `{"id": "x",`, wantErr: keyevent.ErrMalformed},
		{name: "empty", raw: ``, wantErr: keyevent.ErrMalformed},
		{name: "JSON null", raw: `null`, wantErr: keyevent.ErrMalformed},
		{name: "JSON array", raw: `[{"id":"x"}]`, wantErr: keyevent.ErrMalformed},
		{name: "trailing garbage", raw: `{"id":"x"} {}`, wantErr: keyevent.ErrMalformed},
		{
			name: "detail a string", sample: "kms-disable-key.json",
			edit:    func(m map[string]any) { m["detail"] = `{"eventName":"DisableKey"}` },
			wantErr: keyevent.ErrMalformed,
		},
		{
			name: "detail null", sample: "kms-disable-key.json",
			edit:    func(m map[string]any) { m["detail"] = nil },
			wantErr: keyevent.ErrMalformed,
		},
		{
			name: "detail missing", sample: "kms-cmk-deletion.json",
			edit:    func(m map[string]any) { delete(m, "detail") },
			wantErr: keyevent.ErrMalformed,
		},
		{
			name: "missing id", sample: "kms-disable-key.json",
			edit:    func(m map[string]any) { delete(m, "id") },
			wantErr: keyevent.ErrMalformed,
		},
		{
			name: "id not a string", sample: "kms-disable-key.json",
			edit:    func(m map[string]any) { m["id"] = 42 },
			wantErr: keyevent.ErrMalformed,
		},
		{
			name: "missing detail-type", sample: "kms-disable-key.json",
			edit:    func(m map[string]any) { delete(m, "detail-type") },
			wantErr: keyevent.ErrMalformed,
		},
		{
			name: "unknown detail-type", sample: "kms-cmk-deletion.json",
			edit:    func(m map[string]any) { m["detail-type"] = "KMS CMK Rotation" },
			wantErr: keyevent.ErrUnsupported,
		},
		{
			name: "unknown detail-type wins over a bad detail", sample: "kms-cmk-deletion.json",
			edit: func(m map[string]any) {
				m["detail-type"] = "KMS CMK Rotation"
				m["detail"] = "rotated"
			},
			wantErr: keyevent.ErrUnsupported,
		},
		{
			name: "missing eventName", sample: "kms-disable-key.json",
			edit:    func(m map[string]any) { delete(detail(m), "eventName") },
			wantErr: keyevent.ErrMalformed,
		},
		{
			name: "eventName not a string", sample: "kms-disable-key.json",
			edit:    func(m map[string]any) { detail(m)["eventName"] = []any{"DisableKey"} },
			wantErr: keyevent.ErrMalformed,
		},
		{
			name: "read-only eventName", sample: "kms-disable-key.json",
			edit:    func(m map[string]any) { detail(m)["eventName"] = "ListKeys" },
			wantErr: keyevent.ErrUnsupported,
		},
		{
			name: "non-kms source", sample: "kms-disable-key.json",
			edit:    func(m map[string]any) { m["source"] = "aws.rds" },
			wantErr: keyevent.ErrUnsupported,
		},
		{
			name: "missing source", sample: "kms-disable-key.json",
			edit:    func(m map[string]any) { delete(m, "source") },
			wantErr: keyevent.ErrMalformed,
		},
		{
			name: "non-kms eventSource", sample: "kms-disable-key.json",
			edit:    func(m map[string]any) { detail(m)["eventSource"] = "rds.amazonaws.com" },
			wantErr: keyevent.ErrUnsupported,
		},
		{
			name: "missing eventSource", sample: "kms-disable-key.json",
			edit:    func(m map[string]any) { delete(detail(m), "eventSource") },
			wantErr: keyevent.ErrMalformed,
		},
		{
			name: "resources null", sample: "kms-disable-key.json",
			edit:    func(m map[string]any) { detail(m)["resources"] = nil },
			wantRef: keyARN,
		},
		{
			name: "resources null and legacy null response", sample: "kms-disable-key-legacy-null-response.json",
			edit:    func(m map[string]any) { detail(m)["resources"] = nil },
			wantRef: keyID,
		},
		{
			name: "resources empty, requestParameters null", sample: "kms-retire-grant.json",
			edit:    func(m map[string]any) { detail(m)["resources"] = []any{} },
			wantErr: keyevent.ErrMalformed,
		},
		{
			name: "resources not an array", sample: "kms-disable-key.json",
			edit:    func(m map[string]any) { detail(m)["resources"] = "nope" },
			wantRef: keyARN,
		},
		{
			name: "resource entry not an object", sample: "kms-put-key-policy.json",
			edit:    func(m map[string]any) { detail(m)["resources"] = []any{keyARN, nil, 7} },
			wantRef: keyID,
		},
		{
			name: "alias resource is not the key", sample: "kms-revoke-grant.json",
			edit: func(m map[string]any) {
				detail(m)["resources"] = []any{
					map[string]any{"type": "AWS::KMS::Alias", "ARN": "arn:aws:kms:us-east-1:123456789012:alias/aurora-prod"},
					map[string]any{"type": "AWS::KMS::Key", "ARN": keyARN},
				}
			},
			wantRef: keyARN,
		},
		{
			name: "alias ARN in request never beats a key ID", sample: "kms-disable-key-failed.json",
			edit: func(m map[string]any) {
				detail(m)["resources"] = []any{map[string]any{"ARN": "arn:aws:kms:us-east-1:123456789012:alias/aurora-prod"}}
			},
			wantRef: keyID,
		},
		{
			name: "alias only is still returned", sample: "kms-disable-key-failed.json",
			edit: func(m map[string]any) {
				detail(m)["requestParameters"] = map[string]any{"keyId": "alias/aurora-prod"}
			},
			wantRef: "alias/aurora-prod",
		},
		{
			name: "another service's ARN is not a key", sample: "kms-disable-key-failed.json",
			edit: func(m map[string]any) {
				detail(m)["requestParameters"] = map[string]any{"keyId": "arn:aws:s3:::my-bucket"}
			},
			wantErr: keyevent.ErrMalformed,
		},
		{
			name: "GovCloud key ARN", sample: "kms-disable-key-no-resources.json",
			edit: func(m map[string]any) {
				detail(m)["requestParameters"] = map[string]any{"keyId": "arn:aws-us-gov:kms:us-gov-west-1:123456789012:key/" + keyID}
			},
			wantRef: "arn:aws-us-gov:kms:us-gov-west-1:123456789012:key/" + keyID,
		},
		{
			name: "no key anywhere", sample: "kms-disable-key.json",
			edit: func(m map[string]any) {
				d := detail(m)
				delete(d, "resources")
				d["requestParameters"] = nil
				d["responseElements"] = nil
			},
			wantErr: keyevent.ErrMalformed,
		},
		{
			name: "disconnect without a store", sample: "kms-disconnect-custom-key-store.json",
			edit:    func(m map[string]any) { detail(m)["requestParameters"] = nil },
			wantErr: keyevent.ErrMalformed,
		},
		{
			name: "unknown fields everywhere", sample: "kms-schedule-key-deletion.json",
			edit: func(m map[string]any) {
				m["future-envelope-field"] = map[string]any{"x": 1}
				d := detail(m)
				d["futureField"] = []any{1, "two"}
				d["userIdentity"].(map[string]any)["onBehalfOf"] = map[string]any{"userId": "u"}
				d["requestParameters"].(map[string]any)["keyMaterialId"] = "m"
				d["responseElements"].(map[string]any)["keyMaterialId"] = "m"
				d["resources"].([]any)[0].(map[string]any)["extra"] = true
			},
			wantRef: keyARN,
			check: func(e keyevent.Event) error {
				if e.PendingWindowDays != 7 || e.KeyStateHint != "PendingDeletion" {
					return errors.New("lost the deletion fields")
				}
				return nil
			},
		},
		{
			name: "fields of unexpected types read as absent", sample: "kms-schedule-key-deletion.json",
			edit: func(m map[string]any) {
				d := detail(m)
				d["userIdentity"] = "someone"
				d["responseElements"] = map[string]any{"keyId": 17, "keyState": false, "pendingWindowInDays": "9"}
			},
			wantRef: keyARN,
			check: func(e keyevent.Event) error {
				if e.PendingWindowDays != 9 || e.KeyStateHint != "" || e.Actor.ARN != "" {
					return errors.New("odd fields not ignored")
				}
				return nil
			},
		},
		{
			name: "eventTime missing falls back to envelope time", sample: "kms-enable-key.json",
			edit: func(m map[string]any) {
				delete(detail(m), "eventTime")
				m["time"] = "2026-03-10T14:32:00Z"
			},
			wantRef: keyARN,
			check: func(e keyevent.Event) error {
				if want := time.Date(2026, 3, 10, 14, 32, 0, 0, time.UTC); !e.Time.Equal(want) {
					return errors.New("time not from envelope: " + e.Time.String())
				}
				return nil
			},
		},
		{
			name: "no usable time", sample: "kms-enable-key.json",
			edit: func(m map[string]any) {
				detail(m)["eventTime"] = "yesterday"
				delete(m, "time")
			},
			wantErr: keyevent.ErrMalformed,
		},
		{
			name: "region and account fall back to envelope", sample: "kms-enable-key.json",
			edit: func(m map[string]any) {
				delete(detail(m), "awsRegion")
				delete(detail(m), "recipientAccountId")
				m["region"] = "eu-west-1"
				m["account"] = "210987654321"
			},
			wantRef: keyARN,
			check: func(e keyevent.Event) error {
				if e.Region != "eu-west-1" || e.Account != "210987654321" {
					return errors.New("region/account not from envelope")
				}
				return nil
			},
		},
		{
			name: "no region at all", sample: "kms-cmk-deletion.json",
			edit:    func(m map[string]any) { delete(m, "region") },
			wantErr: keyevent.ErrMalformed,
		},
		{
			name: "service event with a handled name", sample: "kms-disable-key.json",
			edit: func(m map[string]any) {
				m["detail-type"] = "AWS Service Event via CloudTrail"
				detail(m)["eventType"] = "AwsServiceEvent"
			},
			wantRef: keyARN,
		},
		{
			name: "service event keywarden leaves to KMS's own events", sample: "kms-disable-key.json",
			edit: func(m map[string]any) {
				m["detail-type"] = "AWS Service Event via CloudTrail"
				d := detail(m)
				d["eventName"] = "DeleteExpiredKeyMaterial"
				d["eventType"] = "AwsServiceEvent"
			},
			wantErr: keyevent.ErrUnsupported,
		},
		{
			name: "native event without envelope resources", sample: "kms-cmk-deletion.json",
			edit:    func(m map[string]any) { m["resources"] = nil },
			wantRef: keyID,
		},
		{
			name: "native event without any key", sample: "kms-cmk-deletion.json",
			edit: func(m map[string]any) {
				m["resources"] = []any{}
				m["detail"] = map[string]any{}
			},
			wantErr: keyevent.ErrMalformed,
		},
		{
			name: "invokedBy names a service acting on a user's behalf only when it acts alone", sample: "kms-disable-key.json",
			edit: func(m map[string]any) {
				detail(m)["userIdentity"].(map[string]any)["invokedBy"] = "rds.amazonaws.com"
			},
			wantRef: keyARN,
			check: func(e keyevent.Event) error {
				if e.Actor.Principal != "AROAEXAMPLEROLEID1234:alice@example.com" {
					return errors.New("invokedBy replaced a user principal: " + e.Actor.Principal)
				}
				return nil
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			raw := []byte(tc.raw)
			if tc.sample != "" {
				m := sample(t, tc.sample)
				if tc.edit != nil {
					tc.edit(m)
				}
				raw = encode(t, m)
			}
			got, err := keyevent.Parse(raw)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Parse: got error %v, want %v", err, tc.wantErr)
				}
				if diff := cmp.Diff(keyevent.Event{}, got); diff != "" {
					t.Errorf("Parse returned a partial event with its error (-want +got):\n%s", diff)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: got error %v, want nil", err)
			}
			if got.KeyRef != tc.wantRef {
				t.Errorf("KeyRef: got %v, want %v", got.KeyRef, tc.wantRef)
			}
			if tc.check != nil {
				if err := tc.check(got); err != nil {
					t.Error(err)
				}
			}
		})
	}
}

func TestErrorsNameTheEvent(t *testing.T) {
	m := sample(t, "kms-describe-key-readonly.json")
	_, err := keyevent.Parse(encode(t, m))
	if err == nil {
		t.Fatal("Parse: got nil error, want ErrUnsupported")
	}
	for _, want := range []string{m["id"].(string), "DescribeKey"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q: got no %v, want it named for the log", err, want)
		}
	}
	if errors.Is(err, keyevent.ErrMalformed) {
		t.Errorf("errors.Is(%v, ErrMalformed): got true, want false", err)
	}
}

func TestFailed(t *testing.T) {
	tests := []struct {
		code string
		want bool
	}{
		{"", false},
		{"AccessDeniedException", true},
		{"NotFoundException", true},
	}
	for _, tc := range tests {
		if got := (keyevent.Event{ErrorCode: tc.code}).Failed(); got != tc.want {
			t.Errorf("Failed() with errorCode %q: got %v, want %v", tc.code, got, tc.want)
		}
	}
}

func TestParseDeletionDate(t *testing.T) {
	tests := []struct {
		in     string
		want   time.Time
		wantOK bool
	}{
		{"Apr 12, 2021 18:58:30 PM", time.Date(2021, 4, 12, 18, 58, 30, 0, time.UTC), true},
		{"Nov 2, 2021, 11:25:25 PM", time.Date(2021, 11, 2, 23, 25, 25, 0, time.UTC), true},
		{"Jan 1, 2019 12:00:00 AM", time.Date(2019, 1, 1, 0, 0, 0, 0, time.UTC), true},
		{"Mar 17, 2026 2:04:11 PM", time.Date(2026, 3, 17, 14, 4, 11, 0, time.UTC), true},
		{"Mar 17, 2026 12:30:00 PM", time.Date(2026, 3, 17, 12, 30, 0, 0, time.UTC), true},
		{"Nov 2, 2021, 11:25:25\u202fPM", time.Date(2021, 11, 2, 23, 25, 25, 0, time.UTC), true},
		{"  nov 2, 2021,  11:25:25 pm ", time.Date(2021, 11, 2, 23, 25, 25, 0, time.UTC), true},
		{"Mar 17, 2026 14:04:11", time.Date(2026, 3, 17, 14, 4, 11, 0, time.UTC), true},
		{"2026-03-17T14:04:11Z", time.Date(2026, 3, 17, 14, 4, 11, 0, time.UTC), true},
		{"", time.Time{}, false},
		{"soon", time.Time{}, false},
		{"Feb 30, 2026 1:00:00 PM", time.Time{}, false},
		{"Mar 17, 2026 25:00:00 PM", time.Time{}, false},
		{"17/03/2026 14:04", time.Time{}, false},
		{"Mar 17, 2026", time.Time{}, false},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, ok := keyevent.ParseDeletionDate(tc.in)
			if ok != tc.wantOK || !got.Equal(tc.want) {
				t.Fatalf("ParseDeletionDate(%q): got %v, %v, want %v, %v", tc.in, got, ok, tc.want, tc.wantOK)
			}
			if ok && got.Location() != time.UTC {
				t.Errorf("location: got %v, want UTC", got.Location())
			}
		})
	}
}

// TestSampleDeletionDates keeps the samples' deletionDate text readable and consistent with
// eventTime + pendingWindowInDays, which is how a human would cross-check it.
func TestSampleDeletionDates(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(eventsDir, "kms-*.json"))
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, path := range files {
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		e, err := keyevent.Parse(raw)
		if err != nil || e.DeletionDateText == "" {
			continue
		}
		checked++
		t.Run(filepath.Base(path), func(t *testing.T) {
			got, ok := keyevent.ParseDeletionDate(e.DeletionDateText)
			if !ok {
				t.Fatalf("ParseDeletionDate(%q): got ok=false, want true", e.DeletionDateText)
			}
			if want := e.Time.AddDate(0, 0, e.PendingWindowDays); !got.Equal(want) {
				t.Errorf("deletion date: got %v, want %v (eventTime + %d days)", got, want, e.PendingWindowDays)
			}
		})
	}
	// A glob or parser change that leaves no sample with a deletionDate would make this test
	// pass while checking nothing.
	if checked == 0 {
		t.Errorf("no events/kms-*.json sample has a deletionDate: got 0 checked, want at least 1")
	}
}
