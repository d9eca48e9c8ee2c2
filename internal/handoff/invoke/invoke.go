// Package invoke queues a hand-off (handoff.Request) on RemediateFunction with an asynchronous
// Lambda invoke: what SlackActionFunction and ReconcileFunction send with. It is apart from
// package handoff so that RemediateFunction, which only decodes requests, links none of it.
//
// It makes Lambda's Invoke call itself, signed with the SDK's Signature Version 4 signer, rather
// than through the SDK's Lambda client: that client's package init (its schemas and endpoint
// tables for some eighty operations) costs a function about half an aws-lambda-go
// hello-world's cold start (make bench-cold), and SlackActionFunction, the function Slack waits
// on, needs one operation of it. The call is the documented REST binding of Invoke
// (https://docs.aws.amazon.com/lambda/latest/api/API_Invoke.html); tests run it against the
// local stack's Lambda Invoke API and a stand-in that answers as Lambda does.
//
// Boundaries: it owns sending the hand-off; it must not import the SDK's Lambda client (the point
// of the package) or any other service client, nor Slack.
package invoke

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/smithy-go/encoding/httpbinding"

	"github.com/keywarden/keywarden/internal/handoff"
)

// userAgent names the caller in CloudTrail and Lambda's logs, where the SDK's client would have
// named the SDK.
const userAgent = "keywarden-handoff (aws-sdk-go-v2 signer)"

// Invoker queues remediations on RemediateFunction with an asynchronous invoke
// (X-Amz-Invocation-Type: Event): Lambda queues the event and answers 202 at once, so a click is
// answered within Slack's 3 s while the run takes as long as it needs.
type Invoker struct {
	// Config gives the Region, the credentials and the endpoint (Endpoint).
	Config aws.Config
	// Function is RemediateFunction's name or ARN.
	Function string
	// BaseEndpoint, when set, is where the call goes, whatever Config says (as a client's
	// Options.BaseEndpoint in the SDK).
	BaseEndpoint string
	// HTTP sends the request; nil means a client with a 5 s timeout.
	HTTP *http.Client
}

// Start queues one remediation. It makes one attempt: a lost answer may still have queued
// the run, which is harmless, since RemediateFunction claims the run ID and a second delivery
// finds it claimed; a failure is picked up by the reconciler within a minute. Errors say
// which function and incident; Lambda's refusals are an *Error with its error type (for
// example ResourceNotFoundException, AccessDeniedException, TooManyRequestsException).
func (v Invoker) Start(ctx context.Context, req handoff.Request) error {
	payload, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("encode remediation of %s: %w", req.IncidentID, err)
	}
	if err := v.invoke(ctx, payload); err != nil {
		return fmt.Errorf("invoke %s for %s: %w", v.Function, req.IncidentID, err)
	}
	return nil
}

func (v Invoker) invoke(ctx context.Context, payload []byte) error {
	endpoint := v.BaseEndpoint
	if endpoint == "" {
		var err error
		if endpoint, err = Endpoint(v.Config); err != nil {
			return err
		}
	}
	u, err := url.Parse(strings.TrimSuffix(endpoint, "/"))
	if err != nil {
		return fmt.Errorf("lambda endpoint %q: %w", endpoint, err)
	}
	// The path escaped as the SDK's REST binding escapes a label (httpbinding.EscapePath: every
	// byte but the unreserved ones, so an ARN's colons are %3A), and sent that way (RawPath), so
	// what is signed is what the SDK would sign.
	u.RawPath = u.EscapedPath() + "/2015-03-31/functions/" + httpbinding.EscapePath(v.Function, true) + "/invocations"
	u.Path = u.Path + "/2015-03-31/functions/" + v.Function + "/invocations"
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(payload))
	if err != nil {
		return err
	}
	r.Header.Set("User-Agent", userAgent)
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("X-Amz-Invocation-Type", "Event")
	if v.Config.Credentials == nil {
		return fmt.Errorf("no credentials to sign with")
	}
	creds, err := v.Config.Credentials.Retrieve(ctx)
	if err != nil {
		return fmt.Errorf("credentials: %w", err)
	}
	sum := sha256.Sum256(payload)
	if err := v4.NewSigner().SignHTTP(ctx, creds, r, hex.EncodeToString(sum[:]), "lambda", v.Config.Region, time.Now()); err != nil {
		return fmt.Errorf("sign: %w", err)
	}
	client := v.HTTP
	if client == nil {
		client = &http.Client{Timeout: 5 * time.Second}
	}
	res, err := client.Do(r)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	if res.StatusCode == http.StatusAccepted {
		return nil
	}
	return newError(res, body)
}

// Error is Lambda refusing the invoke: the HTTP status and Lambda's error type and message.
type Error struct {
	StatusCode int
	// Type is the error type of the X-Amzn-ErrorType header (or the body's code or __type, as
	// the SDK's REST-JSON decoder reads them), without any ":…" suffix or "…#" namespace; for
	// example ResourceNotFoundException. (The body's "Type" is Lambda's fault class, User or
	// Service, not the error type.)
	Type    string
	Message string
}

func (e *Error) Error() string {
	msg := fmt.Sprintf("status %d", e.StatusCode)
	if e.Type != "" {
		msg += " " + e.Type
	}
	if e.Message != "" {
		msg += ": " + e.Message
	}
	if e.Type == "" && e.StatusCode < 400 {
		msg += ", want 202"
	}
	return msg
}

// ErrorCode is the error type, as the SDK's smithy.APIError names it.
func (e *Error) ErrorCode() string { return e.Type }

// newError reads Lambda's error as the SDK's REST-JSON decoder does: the type from the
// X-Amzn-ErrorType header, which may carry a ":<namespace>" suffix, else from the JSON body's
// "code" or "__type"; the message from the body's "message" or "Message".
func newError(res *http.Response, body []byte) *Error {
	e := &Error{StatusCode: res.StatusCode}
	var b struct {
		Type      string `json:"__type"`
		Code      string `json:"code"`
		Message   string `json:"message"`
		MessageUp string `json:"Message"`
	}
	_ = json.Unmarshal(body, &b)
	e.Type = res.Header.Get("X-Amzn-ErrorType")
	for _, t := range []string{b.Code, b.Type} {
		if e.Type == "" {
			e.Type = t
		}
	}
	if i := strings.IndexAny(e.Type, ":#"); i >= 0 {
		// "ResourceNotFoundException:http://…" or "com.amazon…#ResourceNotFoundException".
		if e.Type[i] == '#' {
			e.Type = e.Type[i+1:]
		} else {
			e.Type = e.Type[:i]
		}
	}
	e.Message = b.Message
	if e.Message == "" {
		e.Message = b.MessageUp
	}
	return e
}

// serviceEndpoints is the SDK's own interface for a configured service endpoint, which
// startup.AWSConfig puts in aws.Config.ConfigSources (AWS_ENDPOINT_URL_LAMBDA).
type serviceEndpoints interface {
	GetServiceBaseEndpoint(ctx context.Context, sdkID string) (string, bool, error)
}

// ignoredEndpoints is the SDK's interface for AWS_IGNORE_CONFIGURED_ENDPOINT_URLS.
type ignoredEndpoints interface {
	GetIgnoreConfiguredEndpoints(ctx context.Context) (bool, bool, error)
}

// Endpoint is where cfg's Lambda calls go, resolved as the SDK resolves a configured endpoint
// (https://docs.aws.amazon.com/sdkref/latest/guide/feature-ss-endpoints.html): the service's
// own (AWS_ENDPOINT_URL_LAMBDA, from cfg.ConfigSources), then cfg.BaseEndpoint
// (AWS_ENDPOINT_URL), both skipped when configured endpoints are ignored; else Lambda's public
// endpoint https://lambda.<region>.amazonaws.com (amazonaws.com.cn in the China Regions). The
// template sets AWS_ENDPOINT_URL_LAMBDA from AWS::URLSuffix, so a deployment in any partition
// names its endpoint exactly; a deployment that must use Lambda's FIPS endpoint sets
// AWS_ENDPOINT_URL_LAMBDA to it (AWS_USE_FIPS_ENDPOINT is not applied here). Errors: no endpoint
// configured and no Region.
func Endpoint(cfg aws.Config) (string, error) {
	ctx := context.Background()
	ignore := false
	for _, s := range cfg.ConfigSources {
		if p, ok := s.(ignoredEndpoints); ok {
			if v, found, _ := p.GetIgnoreConfiguredEndpoints(ctx); found {
				ignore = v
				break
			}
		}
	}
	if !ignore {
		for _, s := range cfg.ConfigSources {
			if p, ok := s.(serviceEndpoints); ok {
				if v, found, err := p.GetServiceBaseEndpoint(ctx, "Lambda"); err == nil && found {
					return v, nil
				}
			}
		}
		if cfg.BaseEndpoint != nil && *cfg.BaseEndpoint != "" {
			return *cfg.BaseEndpoint, nil
		}
	}
	if cfg.Region == "" {
		return "", fmt.Errorf("no Region and no Lambda endpoint configured")
	}
	suffix := "amazonaws.com"
	if strings.HasPrefix(cfg.Region, "cn-") {
		suffix = "amazonaws.com.cn"
	}
	return "https://lambda." + cfg.Region + "." + suffix, nil
}
