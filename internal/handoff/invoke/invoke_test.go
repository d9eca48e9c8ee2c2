package invoke

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awslambda "github.com/aws/aws-sdk-go-v2/service/lambda"
	lambdatypes "github.com/aws/aws-sdk-go-v2/service/lambda/types"

	"github.com/keywarden/keywarden/internal/handoff"
)

const fnARN = "arn:aws:lambda:eu-west-1:123456789012:function:keywarden-RemediateFunction-AbC"

func config(endpoint string) aws.Config {
	cfg := aws.Config{Region: "eu-west-1", Credentials: credentials.NewStaticCredentialsProvider("AKIDEXAMPLE", "secret", "session")}
	if endpoint != "" {
		cfg.BaseEndpoint = aws.String(endpoint)
	}
	return cfg
}

var req = handoff.Request{IncidentID: "KW-1", RunID: "run-1", ApprovedBy: handoff.Approvers{"U0A"}, Source: "slack-action"}

// lambda answers as Lambda's Invoke does for InvocationType Event, after checking what a
// signed Invoke request carries.
func lambda(t *testing.T, answer func(w http.ResponseWriter)) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		auth := r.Header.Get("Authorization")
		checks := map[string]bool{
			"POST":                    r.Method == http.MethodPost,
			"path names the function": r.URL.Path == "/2015-03-31/functions/"+fnARN+"/invocations",
			"asynchronous":            r.Header.Get("X-Amz-Invocation-Type") == "Event",
			"SigV4 for lambda":        strings.HasPrefix(auth, "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/") && strings.Contains(auth, "/eu-west-1/lambda/aws4_request"),
			"signed headers":          strings.Contains(auth, "SignedHeaders=") && strings.Contains(auth, "x-amz-invocation-type"),
			"session token":           r.Header.Get("X-Amz-Security-Token") == "session",
			"dated":                   r.Header.Get("X-Amz-Date") != "",
			"payload is the request":  strings.Contains(string(body), `"incident_id":"KW-1"`) && strings.Contains(string(body), `"run_id":"run-1"`),
		}
		for what, ok := range checks {
			if !ok {
				t.Errorf("request fails %q: %s %s %v", what, r.Method, r.URL.EscapedPath(), r.Header)
			}
		}
		answer(w)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestStartQueuesAnAsynchronousInvoke(t *testing.T) {
	srv := lambda(t, func(w http.ResponseWriter) { w.WriteHeader(http.StatusAccepted) })
	if err := (Invoker{Config: config(srv.URL), Function: fnARN}).Start(context.Background(), req); err != nil {
		t.Fatal(err)
	}
}

// Lambda's refusals reach the caller typed, whichever way Lambda spells the error type.
func TestStartRefused(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		header     string
		body       string
		wantType   string
		wantInText string
	}{
		{name: "no such function", status: 404, header: "ResourceNotFoundException:http://internal.amazon.com/coral/com.amazonaws.awslambda/",
			body: `{"Type":"User","message":"Function not found: ` + fnARN + `"}`, wantType: "ResourceNotFoundException", wantInText: "Function not found"},
		{name: "throttled", status: 429, header: "TooManyRequestsException", body: `{"Reason":"ReservedFunctionConcurrentInvocationLimitExceeded","message":"Rate exceeded"}`,
			wantType: "TooManyRequestsException", wantInText: "Rate exceeded"},
		{name: "fault class is not the type", status: 500, body: `{"Type":"Service","message":"Internal error"}`, wantInText: "Internal error"},
		{name: "denied, type in the body", status: 403, body: `{"__type":"com.amazon.coral.service#AccessDeniedException","Message":"not authorized to perform: lambda:InvokeFunction"}`,
			wantType: "AccessDeniedException", wantInText: "lambda:InvokeFunction"},
		{name: "answered synchronously", status: 200, body: `null`, wantInText: "want 202"},
		{name: "no body", status: 502, wantInText: "status 502"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := lambda(t, func(w http.ResponseWriter) {
				if tc.header != "" {
					w.Header().Set("X-Amzn-ErrorType", tc.header)
				}
				w.WriteHeader(tc.status)
				_, _ = io.WriteString(w, tc.body)
			})
			err := Invoker{Config: config(srv.URL), Function: fnARN}.Start(context.Background(), req)
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v (%T), want *Error", err, err)
			}
			if e.StatusCode != tc.status || e.Type != tc.wantType {
				t.Errorf("status %d type %q, want %d %q", e.StatusCode, e.Type, tc.status, tc.wantType)
			}
			for _, want := range []string{tc.wantInText, fnARN, "KW-1"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
		})
	}
}

func TestStartLostAnswer(t *testing.T) {
	srv := lambda(t, func(w http.ResponseWriter) {
		conn, _, _ := w.(http.Hijacker).Hijack()
		_ = conn.Close()
	})
	if err := (Invoker{Config: config(srv.URL), Function: fnARN}).Start(context.Background(), req); err == nil {
		t.Fatal("a dropped connection is not an error")
	}
}

type endpointSource map[string]string

func (e endpointSource) GetServiceBaseEndpoint(_ context.Context, id string) (string, bool, error) {
	v, ok := e[id]
	return v, ok, nil
}

type ignore struct{}

func (ignore) GetIgnoreConfiguredEndpoints(context.Context) (bool, bool, error) {
	return true, true, nil
}

func TestEndpoint(t *testing.T) {
	tests := []struct {
		name string
		cfg  aws.Config
		want string
	}{
		{"public", aws.Config{Region: "eu-west-1"}, "https://lambda.eu-west-1.amazonaws.com"},
		{"China", aws.Config{Region: "cn-north-1"}, "https://lambda.cn-north-1.amazonaws.com.cn"},
		{"AWS_ENDPOINT_URL", aws.Config{Region: "eu-west-1", BaseEndpoint: aws.String("http://127.0.0.1:4566")}, "http://127.0.0.1:4566"},
		{"AWS_ENDPOINT_URL_LAMBDA wins", aws.Config{Region: "eu-west-1", BaseEndpoint: aws.String("http://moto"), ConfigSources: []any{endpointSource{"Lambda": "http://invoke"}}}, "http://invoke"},
		{"another service's is not Lambda's", aws.Config{Region: "eu-west-1", ConfigSources: []any{endpointSource{"DynamoDB": "http://ddb"}}}, "https://lambda.eu-west-1.amazonaws.com"},
		{"ignored", aws.Config{Region: "eu-west-1", ConfigSources: []any{ignore{}, endpointSource{"Lambda": "http://invoke"}}}, "https://lambda.eu-west-1.amazonaws.com"},
	}
	for _, tc := range tests {
		got, err := Endpoint(tc.cfg)
		if err != nil || got != tc.want {
			t.Errorf("%s: %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
	if _, err := Endpoint(aws.Config{}); err == nil {
		t.Error("no Region and no endpoint: no error")
	}
}

// TestRequestMatchesTheSDKs sends the same Invoke through the SDK's own Lambda client and
// through Invoker, and holds the wire path and the signed headers to the SDK's: what is signed
// is then what Lambda checks the SDK's requests against. Names and ARNs, with and without a
// qualifier, cover the characters a FunctionName may hold.
func TestRequestMatchesTheSDKs(t *testing.T) {
	type seen struct{ path, signed, invocationType string }
	var got []seen
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		_, signed, _ := strings.Cut(auth, "SignedHeaders=")
		signed, _, _ = strings.Cut(signed, ",")
		got = append(got, seen{path: r.URL.EscapedPath(), signed: signed, invocationType: r.Header.Get("X-Amz-Invocation-Type")})
		w.WriteHeader(http.StatusAccepted)
	}))
	defer srv.Close()
	cfg := config(srv.URL)
	sdk := awslambda.NewFromConfig(cfg)
	for _, fn := range []string{"keywarden-RemediateFunction-AbC", fnARN, fnARN + ":$LATEST", "123456789012:function:fn:prod"} {
		got = nil
		if _, err := sdk.Invoke(context.Background(), &awslambda.InvokeInput{FunctionName: aws.String(fn), InvocationType: lambdatypes.InvocationTypeEvent, Payload: []byte(`{}`)}); err != nil {
			t.Fatalf("SDK Invoke %s: %v", fn, err)
		}
		if err := (Invoker{Config: cfg, Function: fn}).Start(context.Background(), req); err != nil {
			t.Fatalf("Invoker %s: %v", fn, err)
		}
		if len(got) != 2 {
			t.Fatalf("%s: %d requests seen, want 2", fn, len(got))
		}
		sdkReq, ours := got[0], got[1]
		if ours.path != sdkReq.path || ours.invocationType != sdkReq.invocationType {
			t.Errorf("%s: path %q type %q, the SDK's %q %q", fn, ours.path, ours.invocationType, sdkReq.path, sdkReq.invocationType)
		}
		for _, h := range []string{"host", "x-amz-date", "x-amz-invocation-type", "x-amz-security-token"} {
			if !strings.Contains(ours.signed, h) || !strings.Contains(sdkReq.signed, h) {
				t.Errorf("%s: signed headers %q (ours) and %q (SDK's) should both cover %s", fn, ours.signed, sdkReq.signed, h)
			}
		}
	}
}
