package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/rds"

	"github.com/keywarden/keywarden/cmd/keywarden/internal/rie"
	"github.com/keywarden/keywarden/cmd/keywarden/internal/seed"
	"github.com/keywarden/keywarden/cmd/keywarden/internal/stack"
	"github.com/keywarden/keywarden/internal/awstest"
	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/incident/dynamostore"
)

// privateStack starts a local stack of the test's own — moto, the local services, every
// resource — on free ports with its state in a temporary folder, and stops it after the test.
func privateStack(t *testing.T) *stack.Stack {
	t.Helper()
	s, _ := privateStackWithLog(t)
	return s
}

// privateStackWithLog is privateStack, and what the stack logged so far: its own progress and
// the functions' log lines.
func privateStackWithLog(t *testing.T) (*stack.Stack, func() string) {
	t.Helper()
	awstest.RequireMoto(t)
	log := &syncWriter{w: &bytes.Buffer{}}
	localStack, err := stack.New(stack.Options{
		Port: freeTCPPort(t), ServicesPort: freeTCPPort(t), StateDir: t.TempDir(), TTL: 15 * time.Minute, Log: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	awstest.Require(t, rie.Name, func() error {
		_, err := localStack.Emulator(context.Background())
		return err
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := localStack.Up(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = localStack.Down(context.Background())
		if t.Failed() {
			log.mu.Lock()
			t.Logf("local stack log:\n%s", log.w.(*bytes.Buffer).String())
			log.mu.Unlock()
		}
	})
	return localStack, func() string {
		log.mu.Lock()
		defer log.mu.Unlock()
		return log.w.(*bytes.Buffer).String()
	}
}

// TestKeyEventBootstrapEndToEnd builds KeyEventFunction's real bootstrap, runs it under the
// Lambda Runtime Interface Emulator with the DisableKey sample delivered through template.yaml's
// EventBridge rules, and reads the incident back from the table.
func TestKeyEventBootstrapEndToEnd(t *testing.T) {
	localStack, logs := privateStackWithLog(t)
	ctx := context.Background()
	cfg := localStack.AWSConfig()
	k, r := kms.NewFromConfig(cfg), rds.NewFromConfig(cfg)
	key, err := k.CreateKey(ctx, &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	id := "e2e-orders"
	if _, err := r.CreateDBCluster(ctx, &rds.CreateDBClusterInput{
		DBClusterIdentifier: &id, Engine: aws.String("aurora-postgresql"), StorageEncrypted: aws.Bool(true),
		KmsKeyId: key.KeyMetadata.KeyId, MasterUsername: aws.String("admin"), MasterUserPassword: aws.String("not-a-secret-1"),
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := k.DisableKey(ctx, &kms.DisableKeyInput{KeyId: key.KeyMetadata.KeyId}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(localStack.Dir(), "events", "kms-disable-key.json"))
	if err != nil {
		t.Fatal(err)
	}
	event := strings.ReplaceAll(string(b), "1234abcd-12ab-34cd-56ef-1234567890ab", *key.KeyMetadata.KeyId)

	results, err := localStack.Deliver(ctx, localStack.Router(), []byte(event), 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 1 || results[0].Function != "KeyEventFunction" || results[0].FunctionErr {
		t.Fatalf("got %+v, want one successful delivery to KeyEventFunction", results)
	}
	if !strings.Contains(string(results[0].Output), `"action":"opened"`) {
		t.Errorf("result: got %s, want an opened incident", results[0].Output)
	}

	store := dynamostore.New(dynamodb.NewFromConfig(cfg), seed.DefaultIncidentsTable)
	inc, err := store.OpenFor(ctx, *key.KeyMetadata.Arn)
	if err != nil {
		t.Fatal(err)
	}
	want := time.Date(2026, 3, 10, 14, 2, 11, 0, time.UTC).Add(incident.RecoverableWindow)
	if inc.Trigger != "DisableKey" || inc.KeyState != "Disabled" || len(inc.Clusters) != 1 || inc.Clusters[0].Identifier != id ||
		inc.Deadline == nil || !inc.Deadline.Equal(want) || inc.Actor.SourceIP != "203.0.113.24" {
		t.Errorf("incident: got trigger %s, key %s, clusters %+v, deadline %v, actor %+v", inc.Trigger, inc.KeyState, inc.Clusters, inc.Deadline, inc.Actor)
	}
	if inc.Slack == nil {
		t.Errorf("the incident has no Slack message: the function should have posted it to the local stand-in")
	}
	// The handler's decision line carries the invocation's request ID (internal/lambdalog).
	var decision string
	for line := range strings.Lines(logs()) {
		if strings.Contains(line, `"msg":"key event"`) {
			decision = line
		}
	}
	if !regexp.MustCompile(`"request_id":"[0-9a-f-]{36}"`).MatchString(decision) {
		t.Errorf("KeyEventFunction's decision line %q: want a request_id", decision)
	}
}

// TestDemo runs `make demo`'s story on a private stack and checks how it ends: the first
// incident resolved after the approved click, the reminder posted once for the second.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("the demo takes a minute")
	}
	localStack := privateStack(t)
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	if err := runDemo(ctx, localStack, &out); err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	text := out.String()
	for _, want := range []string{
		`"action":"opened"`, `"action":"folded"`, "only U0STRANGR1 sees",
		"EnableKey", "→ ok", "is resolved", "Less than 6h left",
		"keywarden doctor", "ok   slack channel", "ok   event rules",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("demo output lacks %q:\n%s", want, text)
		}
	}
	// The replayed click took effect the first time: it is told so (its run handed off again
	// while unclaimed, which RemediateFunction's claim runs once), never "nothing was done".
	if !strings.Contains(text, "handed it off again") && !strings.Contains(text, "already been recorded") {
		t.Errorf("demo output lacks the replayed click's answer:\n%s", text)
	}
	if n := strings.Count(text, "thread reply:"); n != 1 {
		t.Errorf("got %d reminders in the thread, want exactly 1 over two reconciler runs", n)
	}
}

// syncWriter serialises writes from the stack's processes' log copiers.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
