package stack

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/keywarden/keywarden/cmd/keywarden/internal/daemon"
	"github.com/keywarden/keywarden/cmd/keywarden/internal/seed"
	"github.com/slack-go/slack"
)

// TestUpDownServices checks that Up starts the local services in the background beside moto,
// on their own port, that a second Up finds them running, that they serve Slack and run the
// stack's functions, and that Down stops them.
func TestUpDownServices(t *testing.T) {
	requireMoto(t)
	motoPort, servicesPort := testPort(t), testPort(t)
	s, logs := newTestStack(t, Options{
		Port: motoPort, ServicesPort: servicesPort, TTL: 10 * time.Minute, Resources: []seed.Resource{},
		SlackUsergroups: map[string][]string{"S0ONCALL01": {"U0APPROVR1"}},
	})
	ctx := context.Background()
	t.Cleanup(func() { _ = s.Down(context.Background()) })

	start := time.Now()
	if err := s.Up(ctx); err != nil {
		t.Fatalf("first Up: %v", err)
	}
	t.Logf("Up with fresh moto and services: %s", time.Since(start))
	first, err := s.state.readProc(servicesStateFile, s.opts.Log)
	if err != nil || first == nil {
		t.Fatalf("services state after Up: %v, %v", first, err)
	}
	if first.Port != servicesPort || !daemon.GroupAlive(first.PID) || !isOurServices(first.PID) {
		t.Fatalf("services state %+v: want port %d and a live `local serve` group", first, servicesPort)
	}
	moto := readState(t, s)
	if d := moto.ExpiresAt.Sub(first.ExpiresAt); d < -2*time.Second || d > 2*time.Second {
		t.Errorf("services expire at %s, moto at %s: want them to stop together", first.ExpiresAt, moto.ExpiresAt)
	}

	start = time.Now()
	if err := s.Up(ctx); err != nil {
		t.Fatalf("second Up: %v", err)
	}
	t.Logf("Up with everything running: %s", time.Since(start))
	if second, _ := s.state.readProc(servicesStateFile, s.opts.Log); second == nil || second.PID != first.PID {
		t.Errorf("second Up started the services again: %+v, want pid %d", second, first.PID)
	}
	if !strings.Contains(logs.String(), "local services already running") {
		t.Errorf("second Up did not say the services were running; logs:\n%s", logs)
	}

	// The background process serves the Slack stand-in with the usergroups Up was given …
	api := slack.New(testToken, slack.OptionAPIURL(s.SlackAPIURL()))
	if members, err := api.GetUserGroupMembersContext(ctx, "S0ONCALL01"); err != nil || len(members) != 1 {
		t.Errorf("usergroups.users.list: %v, %v; want [U0APPROVR1]", members, err)
	}
	if _, _, err := api.PostMessageContext(ctx, "#keywarden-local", slack.MsgOptionText("hello from the test", false)); err != nil {
		t.Errorf("chat.postMessage: %v", err)
	}
	records, err := s.SlackRecords()
	if err != nil || len(records) != 2 || records[1].Text != "hello from the test" {
		t.Errorf("SlackRecords: %+v, %v; want the two calls", records, err)
	}

	// … and runs this stack's functions (the test's echo), reaching this moto.
	out, err := lambdaClient(s).Invoke(ctx, &lambda.InvokeInput{
		FunctionName: aws.String("EchoFunction"),
		Payload:      []byte(`{"env":["AWS_ENDPOINT_URL","FROM_FUNCTION"]}`),
	})
	if err != nil || out.FunctionError != nil {
		t.Fatalf("Invoke through the background services: %v, %v", err, out)
	}
	var got echoResult
	if err := json.Unmarshal(out.Payload, &got); err != nil {
		t.Fatalf("decode %s: %v", out.Payload, err)
	}
	if got.Env["AWS_ENDPOINT_URL"] != s.Endpoint() || got.Env["FROM_FUNCTION"] != "function" {
		t.Errorf("function env %v, want this stack's moto and env file", got.Env)
	}

	if err := s.Down(ctx); err != nil {
		t.Fatalf("Down: %v", err)
	}
	if daemon.GroupAlive(first.PID) {
		t.Errorf("services' process group %d still alive after Down", first.PID)
	}
	if daemon.PortInUse(servicesPort) {
		t.Errorf("services port %d still in use after Down", servicesPort)
	}
	for _, name := range []string{servicesStateFile, servicesConfigFile} {
		if _, err := os.Stat(filepath.Join(s.opts.StateDir, name)); !os.IsNotExist(err) {
			t.Errorf("%s still there after Down (stat: %v)", name, err)
		}
	}
	// The records outlive Down, for a look after the fact.
	if records, _ := s.SlackRecords(); len(records) != 2 {
		t.Errorf("after Down: %d records, want 2", len(records))
	}
}
