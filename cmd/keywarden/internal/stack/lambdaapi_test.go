package stack

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	lambdatypes "github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/google/go-cmp/cmp"

	"github.com/keywarden/keywarden/internal/handoff"
	"github.com/keywarden/keywarden/internal/handoff/invoke"
)

// lambdaClient is a real aws-sdk-go-v2 Lambda client pointed at the local services, as
// AWS_ENDPOINT_URL_LAMBDA points a function's.
func lambdaClient(s *Stack) *lambda.Client {
	return lambda.New(lambda.Options{
		Region:       Region,
		Credentials:  credentials.NewStaticCredentialsProvider("test", "test", ""),
		BaseEndpoint: aws.String(s.ServicesURL()),
	})
}

// TestLambdaInvokeAPI drives the local Invoke API with the SDK's client against the echo
// function's real bootstrap under the emulator.
func TestLambdaInvokeAPI(t *testing.T) {
	s, logs := startServices(t, Options{Port: 45998, FunctionTimeout: 5 * time.Second})
	requireEmulator(t, s)
	client := lambdaClient(s)
	ctx := context.Background()

	t.Run("RequestResponse", func(t *testing.T) {
		out, err := client.Invoke(ctx, &lambda.InvokeInput{
			FunctionName: aws.String("EchoFunction"),
			Payload:      []byte(`{"env":["SLACK_API_URL","AWS_ENDPOINT_URL_LAMBDA","REMEDIATE_FUNCTION","AWS_ENDPOINT_URL"]}`),
		})
		if err != nil {
			t.Fatalf("Invoke: %v", err)
		}
		if out.StatusCode != http.StatusOK || out.FunctionError != nil {
			t.Fatalf("status %d, function error %v; want 200 and none", out.StatusCode, aws.ToString(out.FunctionError))
		}
		var got echoResult
		if err := json.Unmarshal(out.Payload, &got); err != nil {
			t.Fatalf("payload %s: %v", out.Payload, err)
		}
		// The function is given the services' URLs: its own async invokes come back here.
		want := map[string]string{
			"SLACK_API_URL":           s.ServicesURL() + "/slack/api/",
			"AWS_ENDPOINT_URL_LAMBDA": s.ServicesURL(),
			"REMEDIATE_FUNCTION":      "RemediateFunction",
			"AWS_ENDPOINT_URL":        "http://127.0.0.1:45998",
		}
		if diff := cmp.Diff(want, got.Env); diff != "" {
			t.Errorf("function environment (-want +got):\n%s", diff)
		}
	})

	t.Run("function error", func(t *testing.T) {
		out, err := client.Invoke(ctx, &lambda.InvokeInput{
			// A full ARN with a qualifier names the same function.
			FunctionName: aws.String("arn:aws:lambda:us-east-1:123456789012:function:EchoFunction:live"),
			Payload:      []byte(`{"fail":"key is gone"}`),
		})
		if err != nil {
			t.Fatalf("Invoke: %v", err)
		}
		if out.StatusCode != http.StatusOK || aws.ToString(out.FunctionError) != "Unhandled" {
			t.Errorf("status %d, function error %q; want 200 and Unhandled", out.StatusCode, aws.ToString(out.FunctionError))
		}
		if !strings.Contains(string(out.Payload), "key is gone") {
			t.Errorf("payload %s, want Lambda's error object with the message", out.Payload)
		}
	})

	t.Run("Event", func(t *testing.T) {
		marker := randomHex(t)
		start := time.Now()
		out, err := client.Invoke(ctx, &lambda.InvokeInput{
			FunctionName:   aws.String("EchoFunction"),
			InvocationType: lambdatypes.InvocationTypeEvent,
			Payload:        []byte(`{"sleep_ms":1500,"marker":"` + marker + `"}`),
		})
		answered := time.Since(start)
		if err != nil {
			t.Fatalf("Invoke: %v", err)
		}
		if out.StatusCode != http.StatusAccepted || len(out.Payload) != 0 {
			t.Fatalf("status %d, payload %q; want 202 and none", out.StatusCode, out.Payload)
		}
		if answered > time.Second {
			t.Errorf("answered after %s; an asynchronous invoke must not wait for the function (1.5 s)", answered)
		}
		requestID, _ := awsmiddleware.GetRequestIDMetadata(out.ResultMetadata)
		if requestID == "" {
			t.Fatalf("no request ID in the response")
		}
		// The function ran: its result, the event echoed, is logged under the request ID.
		deadline := time.Now().Add(30 * time.Second)
		for {
			if line := logLine(logs.String(), requestID, "asynchronous invocation finished"); line != "" {
				if !strings.Contains(line, marker) || !strings.Contains(line, `"function_error":false`) {
					t.Errorf("log line %s, want the echoed marker %s and no function error", line, marker)
				}
				t.Logf("202 after %s; function finished after %s", answered, time.Since(start))
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no finished asynchronous invocation %s logged within 30 s", requestID)
			}
			time.Sleep(50 * time.Millisecond)
		}
	})

	t.Run("unknown function", func(t *testing.T) {
		for _, name := range []string{"NoSuchFunction", "MissingFunction"} {
			_, err := client.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String(name), Payload: []byte(`{}`)})
			var notFound *lambdatypes.ResourceNotFoundException
			if !errors.As(err, &notFound) {
				t.Errorf("Invoke(%s): got %v, want ResourceNotFoundException", name, err)
			}
		}
	})

	// keywarden's own hand-off (package invoke, which signs Lambda's Invoke itself rather than
	// link the SDK's Lambda client) speaks the same protocol: 202 for an Event, and Lambda's
	// error type for a function that is not there.
	t.Run("hand-off", func(t *testing.T) {
		cfg := aws.Config{Region: Region, Credentials: credentials.NewStaticCredentialsProvider("test", "test", ""), BaseEndpoint: aws.String(s.ServicesURL())}
		req := handoff.Request{IncidentID: "KW-local", RunID: "run-1", ApprovedBy: handoff.Approvers{"U0A"}}
		if err := (invoke.Invoker{Config: cfg, Function: "EchoFunction"}).Start(ctx, req); err != nil {
			t.Errorf("hand-off to EchoFunction: %v", err)
		}
		err := invoke.Invoker{Config: cfg, Function: "NoSuchFunction"}.Start(ctx, req)
		var refused *invoke.Error
		if !errors.As(err, &refused) || refused.Type != "ResourceNotFoundException" {
			t.Errorf("hand-off to NoSuchFunction: %v, want ResourceNotFoundException", err)
		}
	})

	t.Run("bad request", func(t *testing.T) {
		_, err := client.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("EchoFunction"), Payload: []byte(`{not json`)})
		var bad *lambdatypes.InvalidRequestContentException
		if !errors.As(err, &bad) {
			t.Errorf("invalid JSON payload: got %v, want InvalidRequestContentException", err)
		}
		out, err := client.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("EchoFunction"), InvocationType: lambdatypes.InvocationTypeDryRun})
		if err != nil || out.StatusCode != http.StatusNoContent {
			t.Errorf("DryRun: got %v, %v; want 204", out, err)
		}
	})
}

// logLine returns the log line that mentions both requestID and msg, if any.
func logLine(logs, requestID, msg string) string {
	for line := range strings.Lines(logs) {
		if strings.Contains(line, requestID) && strings.Contains(line, msg) {
			return line
		}
	}
	return ""
}

func randomHex(t *testing.T) string {
	t.Helper()
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}
