package awstest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

// RoleGate is a reverse proxy in front of moto that refuses sts:AssumeRole on chosen role ARNs
// the way STS does when a role does not exist or its trust policy does not name the caller
// (HTTP 403, error code AccessDenied), and passes every other request on. moto 5.2.1 lets any
// caller assume any role ARN, existing or not, and serves the role's account to the returned
// credentials; the gate gives tests the member account whose role cannot be assumed.
type RoleGate struct {
	// URL is the gate's endpoint, for Config.
	URL string

	mu     sync.Mutex
	denied []string
}

// NewRoleGate starts a RoleGate in front of target (a moto endpoint) refusing the role ARNs
// given, and stops it when the test ends.
func NewRoleGate(tb testing.TB, target string, deniedRoleARNs ...string) *RoleGate {
	tb.Helper()
	u, err := url.Parse(target)
	if err != nil {
		tb.Fatalf("role gate target %q: %v", target, err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	g := &RoleGate{denied: slices.Clone(deniedRoleARNs)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body.Close()
		r.Body = io.NopCloser(bytes.NewReader(body))
		if form, err := url.ParseQuery(string(body)); err == nil && form.Get("Action") == "AssumeRole" && g.refuses(form.Get("RoleArn")) {
			w.Header().Set("Content-Type", "text/xml")
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprintf(w, `<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type>`+
				`<Code>AccessDenied</Code><Message>User: arn:aws:iam::%s:user/moto is not authorized to perform: sts:AssumeRole on resource: %s</Message>`+
				`</Error><RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId></ErrorResponse>`, AccountID, form.Get("RoleArn"))
			return
		}
		rp.ServeHTTP(w, r)
	}))
	tb.Cleanup(srv.Close)
	g.URL = srv.URL
	return g
}

// Deny adds role ARNs to those refused.
func (g *RoleGate) Deny(roleARNs ...string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.denied = append(g.denied, roleARNs...)
}

func (g *RoleGate) refuses(roleARN string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Contains(g.denied, roleARN)
}

// Member returns a configuration acting in account on the moto at endpoint: moto serves an
// account to the credentials sts:AssumeRole returns for a role ARN in it (any role name; moto
// 5.2.1 does not check that the role exists). Tests seed member accounts with it.
func Member(tb testing.TB, endpoint, account string) aws.Config {
	tb.Helper()
	cfg := Config(tb, endpoint)
	out, err := sts.NewFromConfig(cfg).AssumeRole(context.Background(), &sts.AssumeRoleInput{
		RoleArn: aws.String("arn:aws:iam::" + account + ":role/seed"), RoleSessionName: aws.String("seed"),
	})
	if err != nil {
		tb.Fatalf("seed role in %s: %v", account, err)
	}
	c := out.Credentials
	cfg.Credentials = credentials.NewStaticCredentialsProvider(aws.ToString(c.AccessKeyId), aws.ToString(c.SecretAccessKey), aws.ToString(c.SessionToken))
	return cfg
}

// Allow stops refusing role ARNs (the StackSet reached the account).
func (g *RoleGate) Allow(roleARNs ...string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.denied = slices.DeleteFunc(g.denied, func(a string) bool { return slices.Contains(roleARNs, a) })
}
