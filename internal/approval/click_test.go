package approval

import (
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func readFixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// formBody wraps a JSON payload as Slack sends it: form-encoded in the "payload" field.
func formBody(t testing.TB, payload []byte) []byte {
	t.Helper()
	return []byte(url.Values{"payload": {string(payload)}}.Encode())
}

func TestParseClick(t *testing.T) {
	tests := []struct {
		name    string
		body    []byte
		want    Click
		wantErr error
	}{
		{
			name: "block_actions button",
			body: formBody(t, readFixture(t, "block_actions.json")),
			want: Click{
				UserID:   "U0APPROVR1",
				UserName: "ana.oncall",
				TeamID:   "T0KEYWARD1", AppID: "A0KEYWARD1",
				ChannelID:   "C0ONCALL01",
				MessageTS:   "1767225600.000100",
				ResponseURL: "https://hooks.slack.com/actions/T0KEYWARD1/1234567890123/abcdefABCDEF0123456789ab",
				ActionID:    "remediate",
				Value:       "inc-7f3a9c:4",
				TriggerID:   "10234567890.1234567890123.0123456789abcdef0123456789abcdef",
				ActionTS:    "1767225700.123456",
			},
		},
		{
			name: "minimal block_actions from the container only",
			body: formBody(t, []byte(`{"type":"block_actions","user":{"id":"W0APPROVR2","name":"bo"},`+
				`"container":{"type":"message","message_ts":"1.2","channel_id":"C1"},`+
				`"actions":[{"action_id":"acknowledge","block_id":"b","type":"button","value":"inc:1","action_ts":"3.4"}]}`)),
			want: Click{UserID: "W0APPROVR2", UserName: "bo", ChannelID: "C1", MessageTS: "1.2", ActionID: "acknowledge", Value: "inc:1", ActionTS: "3.4"},
		},
		{name: "view_submission", body: formBody(t, readFixture(t, "view_submission.json")), wantErr: ErrUnsupported},
		{name: "shortcut", body: formBody(t, []byte(`{"type":"shortcut","callback_id":"x","user":{"id":"U0APPROVR1"}}`)), wantErr: ErrUnsupported},
		{name: "garbage", body: []byte("\x00\xff%zz;;not a form"), wantErr: ErrMalformed},
		{name: "empty body", body: nil, wantErr: ErrMalformed},
		{name: "no payload field", body: []byte("token=abc&team_id=T1"), wantErr: ErrMalformed},
		{name: "payload not JSON", body: []byte("payload=%7Bnot+json"), wantErr: ErrMalformed},
		{name: "raw JSON, not form-encoded", body: readFixture(t, "block_actions.json"), wantErr: ErrMalformed},
		{name: "block_actions without actions", body: formBody(t, []byte(`{"type":"block_actions","user":{"id":"U0APPROVR1"},"actions":[]}`)), wantErr: ErrMalformed},
		{name: "attachment action only", body: formBody(t, []byte(`{"type":"block_actions","user":{"id":"U0APPROVR1"},"actions":[{"name":"x","value":"y"}]}`)), wantErr: ErrMalformed},
		{name: "no user", body: formBody(t, []byte(`{"type":"block_actions","actions":[{"action_id":"remediate","block_id":"b"}]}`)), wantErr: ErrMalformed},
		{name: "no action_id", body: formBody(t, []byte(`{"type":"block_actions","user":{"id":"U0APPROVR1"},"actions":[{"block_id":"b","value":"v"}]}`)), wantErr: ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseClick(tt.body)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("ParseClick error: got %v, want %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseClick mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func FuzzParseClick(f *testing.F) {
	f.Add(formBody(f, mustRead(f, "block_actions.json")))
	f.Add(formBody(f, mustRead(f, "view_submission.json")))
	f.Add(formBody(f, []byte(`{"type":"block_actions","user":{"id":"U1"},"actions":[{"action_id":"a","block_id":"b"}]}`)))
	f.Add([]byte("payload=%7B%7D"))
	f.Add([]byte("payload=null"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, body []byte) {
		c, err := ParseClick(body)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnsupported) {
				t.Fatalf("ParseClick error: got %v, want ErrMalformed or ErrUnsupported", err)
			}
			if c != (Click{}) {
				t.Fatalf("ParseClick on error: got %+v, want zero Click", c)
			}
			return
		}
		if c.UserID == "" || c.ActionID == "" {
			t.Fatalf("ParseClick: got %+v, want UserID and ActionID set", c)
		}
	})
}

func mustRead(f *testing.F, name string) []byte {
	f.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		f.Fatal(err)
	}
	return b
}
