package stack

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/keywarden/keywarden/cmd/keywarden/internal/routing"
	"github.com/keywarden/keywarden/internal/awstest"
)

// TestDeliver sends an event through a template's rules to the echo Lambda's real bootstrap
// under the emulator, as `keywarden local emit` does.
func TestDeliver(t *testing.T) {
	endpoint := awstest.Moto(t)
	u, err := url.Parse(endpoint)
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		t.Fatalf("moto endpoint %s has no port", endpoint)
	}
	s, _ := newTestStack(t, Options{Port: port, FunctionTimeout: 10 * time.Second})
	ctx := context.Background()

	path := filepath.Join(t.TempDir(), "template.yaml")
	src := `
Resources:
  EchoFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: cmd/keywarden/internal/stack/testdata/echo
      Events:
        Test:
          Type: EventBridgeRule
          Properties:
            Pattern: {source: [keywarden.test], detail: {errorCode: [{exists: false}]}}
  OtherFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: cmd/keywarden/internal/stack/testdata/echo
      Events:
        Test:
          Type: EventBridgeRule
          Properties:
            Pattern: {source: [keywarden.other]}
`
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	r := routing.Router{Template: path, Prefix: fmt.Sprintf("deliver%d", time.Now().UnixNano()%1e9)}
	if err := r.Load(ctx, s.AWSConfig()); err != nil {
		t.Fatalf("Load: %v", err)
	}

	event := `{"version":"0","id":"sample-id","detail-type":"Test Event","source":"keywarden.test","account":"123456789012",
		"time":"2026-03-10T14:04:11Z","region":"us-east-1","resources":[],"detail":{"fail":"from the detail"}}`
	results, err := s.Deliver(ctx, r, []byte(event), 5*time.Second, nil)
	if err != nil {
		t.Fatalf("Deliver: %v", err)
	}
	if len(results) != 1 || results[0].Function != "EchoFunction" {
		t.Fatalf("results %+v, want one for EchoFunction", results)
	}
	// The echo Lambda fails with the event's top-level "fail" only; this event has none, so it
	// returns the event it was invoked with.
	res := results[0]
	if res.FunctionErr {
		t.Fatalf("EchoFunction failed: %s", res.Output)
	}
	var echoed struct {
		Event map[string]any `json:"event"`
	}
	if err := json.Unmarshal(res.Output, &echoed); err != nil {
		t.Fatalf("result %s: %v", res.Output, err)
	}
	wantEvent := map[string]any{
		"version": "0", "id": res.EventID, "detail-type": "Test Event", "source": "keywarden.test",
		"account": "123456789012", "time": "2026-03-10T14:04:11Z", "region": "us-east-1",
		"resources": []any{}, "detail": map[string]any{"fail": "from the detail"},
	}
	if diff := cmp.Diff(wantEvent, echoed.Event); diff != "" {
		t.Errorf("event the function got (-want +got):\n%s", diff)
	}

	// A failed call (errorCode) matches no rule: nothing is invoked.
	failed := `{"detail-type":"Test Event","source":"keywarden.test","detail":{"errorCode":"AccessDenied"}}`
	results, err = s.Deliver(ctx, r, []byte(failed), 2*time.Second, nil)
	if err != nil || len(results) != 0 {
		t.Errorf("Deliver(failed call): results %+v, err %v; want none", results, err)
	}
}
