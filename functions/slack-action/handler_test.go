package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	kmstypes "github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/aws-sdk-go-v2/service/rds"
	"github.com/slack-go/slack"

	"github.com/keywarden/keywarden/internal/approval"
	"github.com/keywarden/keywarden/internal/awstest"
	"github.com/keywarden/keywarden/internal/env"
	"github.com/keywarden/keywarden/internal/handoff"
	"github.com/keywarden/keywarden/internal/handoff/invoke"
	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/incident/dynamostore"
	"github.com/keywarden/keywarden/internal/slackmessage"
	"github.com/keywarden/keywarden/internal/slacktest"
)

func TestMain(m *testing.M) { awstest.Main(m) }

var (
	_ slackAPI     = (*slack.Client)(nil)
	_ incidents    = (*dynamostore.Store)(nil)
	_ announcer    = (*slackmessage.Announcer)(nil)
	_ remediations = invoke.Invoker{}
	_ rigStore     = (*dynamostore.Store)(nil)
	_ rigStore     = (*memStore)(nil)
)

const (
	signingSecret = "8f742231b10e8888abcd99yyyzzz85a5"
	botToken      = "xoxb-test-bot-token"
	approver      = "U0APPROVR1"
	approver2     = "U0APPROVR2"
	member        = "U0MEMBER01"
	stranger      = "U0STRANGER"
	group         = "S0ONCALL01"
	remediateFn   = "keywarden-RemediateFunction"
)

// lambdaStandIn answers Lambda's Invoke API as Lambda does for InvocationType Event (202, empty
// body) and records each payload, so a test can run the remediation afterwards as
// RemediateFunction would. fail, when set, answers 500 instead.
type lambdaStandIn struct {
	mu       sync.Mutex
	payloads [][]byte
	fail     bool
}

func (l *lambdaStandIn) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	want := "/2015-03-31/functions/" + remediateFn + "/invocations"
	// Signed as Lambda wants: Signature Version 4 for the service "lambda" in the rig's Region.
	signed := strings.HasPrefix(r.Header.Get("Authorization"), "AWS4-HMAC-SHA256 Credential=test/") &&
		strings.Contains(r.Header.Get("Authorization"), "/"+awstest.Region+"/lambda/aws4_request")
	if r.URL.Path != want || r.Header.Get("X-Amz-Invocation-Type") != "Event" || !signed {
		http.Error(w, fmt.Sprintf(`{"message":"unexpected %s %s (invocation type %q)"}`, r.Method, r.URL.Path, r.Header.Get("X-Amz-Invocation-Type")), http.StatusBadRequest)
		return
	}
	body, _ := io.ReadAll(r.Body)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fail {
		w.Header().Set("X-Amzn-Errortype", "ServiceException")
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = w.Write([]byte(`{"message":"lambda is down"}`))
		return
	}
	l.payloads = append(l.payloads, body)
	w.WriteHeader(http.StatusAccepted)
}

func (l *lambdaStandIn) invoked() [][]byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.payloads)
}

// rigStore is what the tests need of an incident store: the handler's and the announcer's
// methods, and opening incidents as KeyEventFunction does.
type rigStore interface {
	incidents
	slackmessage.Store
	Open(ctx context.Context, inc incident.Incident, delivery incident.Entry, fold func(*incident.Incident)) (incident.Incident, bool, error)
	ListActive(ctx context.Context) ([]incident.Incident, error)
}

// rig is SlackActionFunction on local components: the real announcer, Slack client and Lambda
// client, a Slack Web API stand-in, a Lambda Invoke stand-in, and the handler under test built
// as main builds it. Its store is the real one on moto (with KMS and RDS there too), or the
// in-memory memStore (kms and rds nil).
type rig struct {
	kms    *kms.Client
	rds    *rds.Client
	store  rigStore
	slack  *slacktest.Slack
	lambda *lambdaStandIn
	ann    *slackmessage.Announcer
	h      *handler
}

// newRig builds the rig on moto and the real store.
func newRig(tb testing.TB, required int) *rig {
	tb.Helper()
	cfg := awstest.Serial(awstest.Config(tb, awstest.Moto(tb)))
	db := dynamodb.NewFromConfig(cfg)
	table := fmt.Sprintf("slack-action-%d", rand.Int64())
	if err := dynamostore.CreateTable(context.Background(), db, table); err != nil {
		tb.Fatal(err)
	}
	r := build(tb, required, cfg, dynamostore.New(db, table), table)
	r.kms, r.rds = kms.NewFromConfig(cfg), rds.NewFromConfig(cfg)
	return r
}

// newMemRig builds the rig on the in-memory store, with no AWS but the Lambda stand-in.
func newMemRig(tb testing.TB, required int) *rig {
	tb.Helper()
	cfg := aws.Config{Region: awstest.Region, Credentials: aws.AnonymousCredentials{}}
	return build(tb, required, cfg, newMemStore(), "in-memory")
}

func build(tb testing.TB, required int, cfg aws.Config, store rigStore, table string) *rig {
	tb.Helper()
	r := &rig{
		store:  store,
		slack:  slacktest.Start(tb, &slacktest.Slack{Token: botToken, Groups: map[string][]string{group: {member}}}),
		lambda: &lambdaStandIn{},
	}
	lambdaSrv := httptest.NewServer(r.lambda)
	tb.Cleanup(lambdaSrv.Close)
	lambdaCfg := cfg.Copy()
	if _, anonymous := lambdaCfg.Credentials.(aws.AnonymousCredentials); anonymous || lambdaCfg.Credentials == nil {
		lambdaCfg.Credentials = credentials.NewStaticCredentialsProvider("test", "test", "")
	}

	settings, err := loadSettings(env.FromMap(map[string]string{
		"INCIDENTS_TABLE": table, "APPROVERS": approver + "," + approver2 + " " + group,
		"REQUIRED_APPROVALS": fmt.Sprint(required), "REMEDIATE_FUNCTION": remediateFn,
		"SLACK_SIGNING_SECRET": signingSecret, "SLACK_BOT_TOKEN": botToken, "SLACK_CHANNEL": "#keywarden",
		"SLACK_TEAM_ID": "T0KEYWARD1", "SLACK_APP_ID": "A0KEYWARD1", "SLACK_API_URL": r.slack.APIURL(),
	}))
	if err != nil {
		tb.Fatal(err)
	}
	client := slack.New(botToken, slack.OptionAPIURL(r.slack.APIURL()))
	r.ann = slackmessage.New(store, slackmessage.NewClient(client, settings.Shared.Channel), nil, nil)
	// The middle of a minute: refusals of one user collapse per minute, and a test's clicks
	// must not straddle two.
	clock := time.Now().UTC().Truncate(time.Minute).Add(30 * time.Second)
	r.h = &handler{
		signingSecret: signingSecret,
		approvers:     settings.Approvers,
		required:      settings.RequiredApprovals,
		slack:         client,
		store:         store,
		remediations:  invoke.Invoker{Config: lambdaCfg, Function: settings.RemediateFunction, BaseEndpoint: lambdaSrv.URL},
		install:       settings.Install,
		announcer:     r.ann,
		log:           slog.New(slog.NewJSONHandler(io.Discard, nil)),
		now:           func() time.Time { return clock },
		followUp:      defaultFollowUp,
	}
	return r
}

// eachRig runs test on the in-memory rig and on the real store on moto.
func eachRig(t *testing.T, required int, test func(t *testing.T, r *rig)) {
	t.Run("memory", func(t *testing.T) { test(t, newMemRig(t, required)) })
	t.Run("dynamostore", func(t *testing.T) { test(t, newRig(t, required)) })
}

// scenario is a disabled key with a stopped Aurora cluster (moto's stand-in for
// inaccessible-encryption-credentials-recoverable) and a running one, and the incident as
// KeyEventFunction would have opened and announced it.
type scenario struct {
	keyID, keyARN     string
	stopped, running  string
	inc               incident.Incident
	messageTS, chanID string
	// responseURL is the clicks' response_url, on the Slack stand-in.
	responseURL string
}

func (r *rig) scenario(tb testing.TB) scenario {
	tb.Helper()
	ctx := context.Background()
	suffix := rand.Int32()
	sc := scenario{stopped: fmt.Sprintf("orders-%d", suffix), running: fmt.Sprintf("reports-%d", suffix)}
	if r.kms == nil {
		sc.keyID = fmt.Sprintf("1234abcd-12ab-34cd-56ef-%012d", suffix)
		sc.keyARN = "arn:aws:kms:" + awstest.Region + ":123456789012:key/" + sc.keyID
	} else {
		key, err := r.kms.CreateKey(ctx, &kms.CreateKeyInput{Description: aws.String(tb.Name())})
		if err != nil {
			tb.Fatal(err)
		}
		sc.keyID, sc.keyARN = aws.ToString(key.KeyMetadata.KeyId), aws.ToString(key.KeyMetadata.Arn)
		for _, id := range []string{sc.stopped, sc.running} {
			_, err := r.rds.CreateDBCluster(ctx, &rds.CreateDBClusterInput{
				DBClusterIdentifier: aws.String(id), Engine: aws.String("aurora-postgresql"), StorageEncrypted: aws.Bool(true),
				KmsKeyId: aws.String(sc.keyARN), MasterUsername: aws.String("admin"), MasterUserPassword: aws.String("not-a-secret-1"),
			})
			if err != nil {
				tb.Fatal(err)
			}
		}
		if _, err := r.rds.StopDBCluster(ctx, &rds.StopDBClusterInput{DBClusterIdentifier: aws.String(sc.stopped)}); err != nil {
			tb.Fatal(err)
		}
		if _, err := r.kms.DisableKey(ctx, &kms.DisableKeyInput{KeyId: aws.String(sc.keyID)}); err != nil {
			tb.Fatal(err)
		}
	}
	now := time.Now().UTC()
	alice := "arn:aws:iam::123456789012:user/alice"
	inc, _, err := r.store.Open(ctx, incident.Incident{
		ID: incident.NewID(now), KeyARN: sc.keyARN, KeyState: incident.KeyStateDisabled, Trigger: "DisableKey", LostAt: now,
		Actor: incident.Actor{ARN: alice, SourceIP: "203.0.113.7"},
		Clusters: []incident.Cluster{
			{Identifier: sc.stopped, Engine: "aurora-postgresql", Status: incident.StatusStopped, CanStop: true, Uses: []string{"storage"}, LostAccessAt: &now},
			{Identifier: sc.running, Engine: "aurora-postgresql", Status: incident.StatusAvailable, CanStop: true, Uses: []string{"storage"}, LostAccessAt: &now},
		},
	}, incident.Entry{At: now, Source: fmt.Sprintf("ev-%d", suffix), Actor: alice, Detail: "DisableKey"}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	if err := r.ann.Announce(ctx, inc); err != nil {
		tb.Fatal(err)
	}
	sc.inc = r.get(tb, inc.ID)
	sc.messageTS, sc.chanID = sc.inc.Slack.TS, sc.inc.Slack.Channel
	sc.responseURL = r.slack.ResponseURL(sc.inc.ID)
	r.slack.Reset()
	return sc
}

func (r *rig) get(tb testing.TB, id string) incident.Incident {
	tb.Helper()
	inc, err := r.store.Get(context.Background(), id)
	if err != nil {
		tb.Fatal(err)
	}
	return inc
}

// actionTS numbers clicks: each press Slack sends has its own action_ts.
var actionTS atomic.Int64

// clickBody is the form-encoded block_actions request Slack sends for a press of actionID on
// the message of inc as it was at version. Each call is a new press (its own action_ts).
func clickBody(sc scenario, user, actionID string, version int64) []byte {
	payload := map[string]any{
		"type":         "block_actions",
		"user":         map[string]any{"id": user, "username": strings.ToLower(user), "team_id": "T0KEYWARD1"},
		"api_app_id":   "A0KEYWARD1",
		"team":         map[string]any{"id": "T0KEYWARD1"},
		"container":    map[string]any{"type": "message", "message_ts": sc.messageTS, "channel_id": sc.chanID},
		"channel":      map[string]any{"id": sc.chanID, "name": "keywarden"},
		"trigger_id":   "10234567890.1234567890123.0123456789abcdef",
		"response_url": sc.responseURL,
		"actions": []map[string]any{{
			"action_id": actionID, "block_id": slackmessage.ActionsBlockID, "type": "button",
			"value": slackmessage.ButtonValue(sc.inc.ID, version), "action_ts": fmt.Sprintf("1795860001.%06d", actionTS.Add(1)),
		}},
	}
	js, _ := json.Marshal(payload)
	return []byte(url.Values{"payload": {string(js)}}.Encode())
}

// signed is the Function URL request (payload format 2.0) carrying body, signed at ts with
// secret; Function URLs lower-case header names.
func signed(body []byte, secret string, ts time.Time) events.LambdaFunctionURLRequest {
	req := events.LambdaFunctionURLRequest{
		Version: "2.0", RawPath: "/", Body: string(body),
		Headers: map[string]string{"content-type": "application/x-www-form-urlencoded", "user-agent": "Slackbot 1.0 (+https://api.slack.com/robots)"},
	}
	req.RequestContext.HTTP.Method = http.MethodPost
	req.RequestContext.HTTP.SourceIP = "127.0.0.1"
	for k, v := range approval.Sign(secret, ts, body) {
		req.Headers[strings.ToLower(k)] = v[0]
	}
	return req
}

func (r *rig) do(tb testing.TB, req events.LambdaFunctionURLRequest) events.LambdaFunctionURLResponse {
	tb.Helper()
	resp, err := r.h.Handle(context.Background(), req)
	if err != nil {
		tb.Fatalf("Handle returned an error: %v", err)
	}
	return resp
}

func (r *rig) click(tb testing.TB, sc scenario, user, actionID string, version int64) events.LambdaFunctionURLResponse {
	tb.Helper()
	return r.do(tb, signed(clickBody(sc, user, actionID, version), signingSecret, time.Now()))
}

// ephemerals returns the texts shown to user.
func (r *rig) ephemerals(user string) []string {
	var out []string
	for _, c := range r.slack.Calls("chat.postEphemeral") {
		if c.User == user {
			out = append(out, c.Text)
		}
	}
	return out
}

// threadReplies returns the texts replied in the message's thread.
func (r *rig) threadReplies(sc scenario) []string {
	var out []string
	for _, c := range r.slack.Calls("chat.postMessage") {
		if c.ThreadTS == sc.messageTS {
			out = append(out, c.Text)
		}
	}
	return out
}

// remediationRequests decodes the payloads handed to RemediateFunction.
func (r *rig) remediationRequests(tb testing.TB) []handoff.Request {
	tb.Helper()
	var out []handoff.Request
	for _, p := range r.lambda.invoked() {
		var req handoff.Request
		if err := json.Unmarshal(p, &req); err != nil {
			tb.Fatal(err)
		}
		out = append(out, req)
	}
	return out
}

// unchanged fails unless the incident's head is exactly as before: version, state, timeline
// entries (refusals, kept beside the head without a Seq, aside) and approvals.
func unchanged(tb testing.TB, before, after incident.Incident) {
	tb.Helper()
	if after.Version != before.Version || after.State != before.State || after.TimelineSeq != before.TimelineSeq ||
		len(after.Approvals) != len(before.Approvals) || after.Remediation.RunID != before.Remediation.RunID {
		tb.Errorf("incident changed: version %d→%d, state %s→%s, timeline seq %d→%d, approvals %d→%d, run %q→%q",
			before.Version, after.Version, before.State, after.State, before.TimelineSeq, after.TimelineSeq,
			len(before.Approvals), len(after.Approvals), before.Remediation.RunID, after.Remediation.RunID)
	}
}

// refusals returns the refusal entries of user on the incident.
func refusals(inc incident.Incident, user string) []incident.Entry {
	var out []incident.Entry
	for _, e := range inc.Timeline {
		if e.Kind == incident.KindRefusal && e.Actor == user {
			out = append(out, e)
		}
	}
	return out
}

func TestSignature(t *testing.T) {
	eachRig(t, 1, func(t *testing.T, r *rig) {
		sc := r.scenario(t)
		body := clickBody(sc, approver, slackmessage.ActionAcknowledge, sc.inc.Version)
		now := time.Now()
		b64 := func(req events.LambdaFunctionURLRequest) events.LambdaFunctionURLRequest {
			req.Body, req.IsBase64Encoded = base64.StdEncoding.EncodeToString([]byte(req.Body)), true
			return req
		}
		tests := []struct {
			name       string
			req        events.LambdaFunctionURLRequest
			wantStatus int
		}{
			{name: "wrong secret", req: signed(body, "not-the-signing-secret", now), wantStatus: 401},
			{name: "stale", req: signed(body, signingSecret, now.Add(-approval.MaxClockSkew-time.Minute)), wantStatus: 401},
			{name: "from the future", req: signed(body, signingSecret, now.Add(approval.MaxClockSkew+time.Minute)), wantStatus: 401},
			{name: "missing headers", req: func() events.LambdaFunctionURLRequest {
				req := signed(body, signingSecret, now)
				delete(req.Headers, "x-slack-signature")
				delete(req.Headers, "x-slack-request-timestamp")
				return req
			}(), wantStatus: 401},
			{name: "missing signature", req: func() events.LambdaFunctionURLRequest {
				req := signed(body, signingSecret, now)
				delete(req.Headers, "x-slack-signature")
				return req
			}(), wantStatus: 401},
			{name: "body changed after signing", req: func() events.LambdaFunctionURLRequest {
				req := signed(body, signingSecret, now)
				req.Body = strings.Replace(req.Body, approver, approver2, 1)
				return req
			}(), wantStatus: 401},
			{name: "base64 body signed over its encoding", req: func() events.LambdaFunctionURLRequest {
				enc := []byte(base64.StdEncoding.EncodeToString(body))
				req := signed(enc, signingSecret, now)
				req.IsBase64Encoded = true
				return req
			}(), wantStatus: 401},
			{name: "base64 flag on a body that is not base64", req: func() events.LambdaFunctionURLRequest {
				req := signed(body, signingSecret, now)
				req.IsBase64Encoded = true
				return req
			}(), wantStatus: 400},
			// Accepted last: each changes the incident.
			{name: "valid, base64 body", req: b64(signed(body, signingSecret, now)), wantStatus: 200},
			{name: "valid", req: signed(clickBody(sc, approver, slackmessage.ActionAcknowledge, sc.inc.Version+1), signingSecret, now), wantStatus: 200},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				r.slack.Reset()
				before := r.get(t, sc.inc.ID)
				resp := r.do(t, tt.req)
				if resp.StatusCode != tt.wantStatus {
					t.Fatalf("status: got %d, want %d (body %q)", resp.StatusCode, tt.wantStatus, resp.Body)
				}
				after := r.get(t, sc.inc.ID)
				if tt.wantStatus != 200 {
					unchanged(t, before, after)
					if n := len(refusals(after, approver)); n != 0 {
						t.Errorf("a rejected request was kept as a refusal")
					}
					if calls := r.slack.Calls(); len(calls) != 0 {
						t.Errorf("a rejected request reached Slack: %+v", calls)
					}
					return
				}
				if after.Version != before.Version+1 {
					t.Errorf("version: got %d, want %d", after.Version, before.Version+1)
				}
				e, ok := after.LastEntry(incident.KindClick)
				if !ok || e.Actor != approver || e.Result != incident.Result(slackmessage.ActionAcknowledge) || e.Seq != after.TimelineSeq {
					t.Errorf("last click entry: got %+v, want the acknowledge click, newest on the timeline", e)
				}
				if resp.Body != "" {
					t.Errorf("body: got %q, want empty", resp.Body)
				}
			})
		}
		if n := len(r.lambda.invoked()); n != 0 {
			t.Errorf("invokes: got %d, want none", n)
		}
	})
}

func TestAuthorisation(t *testing.T) {
	t.Run("approver", func(t *testing.T) {
		eachRig(t, 1, func(t *testing.T, r *rig) {
			sc := r.scenario(t)
			r.click(t, sc, approver, slackmessage.ActionAcknowledge, sc.inc.Version)
			got := r.get(t, sc.inc.ID)
			if e, ok := got.LastEntry(incident.KindClick); !ok || e.Actor != approver {
				t.Errorf("click entry: got %+v, want %s's click", e, approver)
			}
			if n := len(r.slack.Calls("usergroups.users.list")); n != 0 {
				t.Errorf("usergroups.users.list calls: got %d, want 0 for a listed user", n)
			}
			if got.State != incident.StateOpen {
				t.Errorf("state: got %s, want open", got.State)
			}
		})
	})
	t.Run("user-group member", func(t *testing.T) {
		eachRig(t, 1, func(t *testing.T, r *rig) {
			sc := r.scenario(t)
			r.click(t, sc, member, slackmessage.ActionAcknowledge, sc.inc.Version)
			got := r.get(t, sc.inc.ID)
			if e, ok := got.LastEntry(incident.KindClick); !ok || e.Actor != member {
				t.Errorf("click entry: got %+v, want %s's click", e, member)
			}
			if calls := r.slack.Calls("usergroups.users.list"); len(calls) != 1 || calls[0].Usergroup != group {
				t.Errorf("usergroups.users.list calls: got %+v, want one for %s", calls, group)
			}
		})
	})
	t.Run("stranger", func(t *testing.T) {
		eachRig(t, 1, func(t *testing.T, r *rig) {
			sc := r.scenario(t)
			before := r.get(t, sc.inc.ID)
			for _, action := range []string{slackmessage.ActionRemediate, slackmessage.ActionIntentional, slackmessage.ActionAcknowledge} {
				if resp := r.click(t, sc, stranger, action, before.Version); resp.StatusCode != 200 {
					t.Fatalf("%s: status %d, want 200", action, resp.StatusCode)
				}
				unchanged(t, before, r.get(t, sc.inc.ID))
			}
			after := r.get(t, sc.inc.ID)
			// Kept beside the incident, the three attempts of one minute as one refusal.
			got := refusals(after, stranger)
			if len(got) != 1 || got[0].Count != 3 || got[0].Seq != 0 || !strings.Contains(got[0].Detail, "not an approver") {
				t.Errorf("refusals: got %+v, want one counting 3, without a Seq, saying not an approver", got)
			}
			if got := r.ephemerals(stranger); len(got) != 3 || !strings.Contains(got[0], "not allowed") {
				t.Errorf("ephemerals to the stranger: got %q, want three saying not allowed", got)
			}
			if got := r.threadReplies(sc); len(got) != 1 || !strings.Contains(got[0], "not an approver") {
				t.Errorf("thread replies: got %q, want one for the burst", got)
			}
			if n := len(r.slack.Calls("chat.update")); n != 0 {
				t.Errorf("chat.update calls: got %d, want none: nothing changed", n)
			}
			if n := len(r.lambda.invoked()); n != 0 {
				t.Errorf("invokes: got %d, want none", n)
			}
			if len(after.Approvals) != 0 {
				t.Errorf("approvals: got %+v, want none", after.Approvals)
			}
			if r.kms != nil {
				if st := keyState(t, r, sc.keyID); st != kmstypes.KeyStateDisabled {
					t.Errorf("key state: got %s, want Disabled", st)
				}
			}
		})
	})
	t.Run("two-person rule", func(t *testing.T) {
		eachRig(t, 2, func(t *testing.T, r *rig) {
			sc := r.scenario(t)
			r.click(t, sc, approver, slackmessage.ActionRemediate, sc.inc.Version)
			first := r.get(t, sc.inc.ID)
			if first.State != incident.StateOpen || !slices.Equal(first.RoundApprovers(), []string{approver}) {
				t.Fatalf("after one approval: state %s, approvers %v, want open and %s", first.State, first.RoundApprovers(), approver)
			}
			if e, _ := first.LastEntry(incident.KindApproval); e.Actor != approver || e.Detail != "remediate: approval 1 of 2" {
				t.Errorf("approval entry: got %+v, want approval 1 of 2 by %s", e, approver)
			}
			if n := len(r.lambda.invoked()); n != 0 {
				t.Fatalf("invoked after one approval")
			}
			// The same person again, on the refreshed message: refused, counted once.
			r.click(t, sc, approver, slackmessage.ActionRemediate, first.Version)
			unchanged(t, first, r.get(t, sc.inc.ID))
			if got := r.ephemerals(approver); len(got) != 2 || !strings.Contains(got[1], "already approved") {
				t.Errorf("ephemerals to %s: got %q, want the second to say already approved", approver, got)
			}
			// A group member is the second approver.
			r.click(t, sc, member, slackmessage.ActionRemediate, first.Version)
			second := r.get(t, sc.inc.ID)
			if second.State != incident.StateRemediating || !slices.Equal(second.Remediation.ApprovedBy, []string{approver, member}) {
				t.Errorf("after two approvals: state %s, approved by %v, want remediating by %s and %s", second.State, second.Remediation.ApprovedBy, approver, member)
			}
			reqs := r.remediationRequests(t)
			if len(reqs) != 1 {
				t.Fatalf("invokes: got %d, want 1", len(reqs))
			}
			want := handoff.Request{IncidentID: sc.inc.ID, ApprovedBy: []string{approver, member}, RunID: second.Remediation.RunID, Source: "slack-action"}
			if !strings.HasPrefix(want.RunID, "run:") || !strings.HasSuffix(want.RunID, ":"+member) || !slices.Equal(reqs[0].ApprovedBy, want.ApprovedBy) ||
				reqs[0].IncidentID != want.IncidentID || reqs[0].RunID != want.RunID {
				t.Errorf("invoke payload: got %+v, want %+v (a run named by the deciding click)", reqs[0], want)
			}
		})
	})
}

// TestManyStrangersThenOneApprover: 400 clicks by people who are not approvers, then one
// approver's, under the two-person rule: remediation does not start. The refused clicks
// changed nothing — no version, no approval — and each stranger's burst got one thread reply.
func TestManyStrangersThenOneApprover(t *testing.T) {
	eachRig(t, 2, func(t *testing.T, r *rig) {
		sc := r.scenario(t)
		before := r.get(t, sc.inc.ID)
		strangers := []string{"U0STRANGR1", "U0STRANGR2", "U0STRANGR3", "U0STRANGR4"}
		for k := range 400 {
			user := strangers[k%len(strangers)]
			if resp := r.click(t, sc, user, slackmessage.ActionRemediate, before.Version); resp.StatusCode != 200 {
				t.Fatalf("click %d: status %d, want 200", k, resp.StatusCode)
			}
		}
		after := r.get(t, sc.inc.ID)
		unchanged(t, before, after)
		counted := 0
		for _, u := range strangers {
			for _, e := range refusals(after, u) {
				counted += e.Count
			}
		}
		if counted != 400 {
			t.Errorf("refusals kept: %d clicks counted, want 400", counted)
		}
		if got := r.threadReplies(sc); len(got) != len(strangers) {
			t.Errorf("thread replies: got %d, want %d (one per stranger's burst)", len(got), len(strangers))
		}

		r.click(t, sc, approver, slackmessage.ActionRemediate, before.Version)
		got := r.get(t, sc.inc.ID)
		if got.State != incident.StateOpen || got.Version != before.Version+1 || !slices.Equal(got.RoundApprovers(), []string{approver}) {
			t.Errorf("after the approver: state %s, version %d, approvers %v; want open, %d, only %s",
				got.State, got.Version, got.RoundApprovers(), before.Version+1, approver)
		}
		if n := len(r.lambda.invoked()); n != 0 {
			t.Errorf("remediation handed off %d times, want never", n)
		}
	})
}

// TestRefusedClickChangesNothing: every kind of refused click leaves the incident's version
// and head as they were, is kept beside it as a refusal, tells the user why, and gets one
// thread reply.
func TestRefusedClickChangesNothing(t *testing.T) {
	tests := []struct {
		name     string
		required int
		// setup prepares the incident and returns the version the refused click is made on.
		setup  func(t *testing.T, r *rig, sc scenario) int64
		user   string
		action string
		reply  string
	}{
		{
			name: "stranger", required: 1, user: stranger, action: slackmessage.ActionRemediate, reply: "not allowed",
			setup: func(t *testing.T, r *rig, sc scenario) int64 { return sc.inc.Version },
		},
		{
			name: "stale version", required: 1, user: approver, action: slackmessage.ActionRemediate, reply: "now shows the current state",
			setup: func(t *testing.T, r *rig, sc scenario) int64 {
				r.click(t, sc, approver2, slackmessage.ActionAcknowledge, sc.inc.Version)
				return sc.inc.Version // the message before the acknowledgement
			},
		},
		{
			name: "closed incident", required: 1, user: approver, action: slackmessage.ActionAcknowledge, reply: "already closed",
			setup: func(t *testing.T, r *rig, sc scenario) int64 {
				r.click(t, sc, approver2, slackmessage.ActionIntentional, sc.inc.Version)
				return r.get(t, sc.inc.ID).Version
			},
		},
		{
			name: "already remediating", required: 1, user: approver2, action: slackmessage.ActionIntentional, reply: "already approved and under way",
			setup: func(t *testing.T, r *rig, sc scenario) int64 {
				r.click(t, sc, approver, slackmessage.ActionRemediate, sc.inc.Version)
				return r.get(t, sc.inc.ID).Version
			},
		},
		{
			name: "already approved", required: 2, user: approver, action: slackmessage.ActionRemediate, reply: "already approved",
			setup: func(t *testing.T, r *rig, sc scenario) int64 {
				r.click(t, sc, approver, slackmessage.ActionRemediate, sc.inc.Version)
				return r.get(t, sc.inc.ID).Version
			},
		},
		{
			name: "not fixable", required: 1, user: approver, action: slackmessage.ActionRemediate, reply: "One click cannot fix this",
			setup: func(t *testing.T, r *rig, sc scenario) int64 {
				inc, err := r.store.Update(context.Background(), sc.inc.ID, func(i *incident.Incident) error {
					i.KeyState = incident.KeyStateDeleted
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
				return inc.Version
			},
		},
		{
			name: "bad button", required: 1, user: approver, action: "delete-everything", reply: "not one keywarden made",
			setup: func(t *testing.T, r *rig, sc scenario) int64 { return sc.inc.Version },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eachRig(t, tt.required, func(t *testing.T, r *rig) {
				sc := r.scenario(t)
				version := tt.setup(t, r, sc)
				invokes := len(r.lambda.invoked())
				r.slack.Reset()
				before := r.get(t, sc.inc.ID)

				if resp := r.click(t, sc, tt.user, tt.action, version); resp.StatusCode != 200 {
					t.Fatalf("status %d, want 200", resp.StatusCode)
				}
				after := r.get(t, sc.inc.ID)
				unchanged(t, before, after)
				if after.Version != before.Version {
					t.Errorf("version: got %d, want %d unchanged", after.Version, before.Version)
				}
				if got := refusals(after, tt.user); len(got) != 1 || got[0].Target != tt.action || got[0].Result != incident.ResultRefused {
					t.Errorf("refusals of %s: got %+v, want one for %s", tt.user, got, tt.action)
				}
				if got := r.ephemerals(tt.user); len(got) != 1 || !strings.Contains(got[0], tt.reply) {
					t.Errorf("ephemerals: got %q, want one saying %q", got, tt.reply)
				}
				if got := r.threadReplies(sc); len(got) != 1 || !strings.Contains(got[0], "refused") {
					t.Errorf("thread replies: got %q, want the one refusal", got)
				}
				if n := len(r.lambda.invoked()); n != invokes {
					t.Errorf("invokes: got %d, want %d", n, invokes)
				}
			})
		})
	}
}

// TestStaleClickWhenRefreshFails: the reply to a click on an outdated message says the message
// is current only when the refresh worked.
func TestStaleClickWhenRefreshFails(t *testing.T) {
	eachRig(t, 1, func(t *testing.T, r *rig) {
		sc := r.scenario(t)
		r.click(t, sc, approver2, slackmessage.ActionAcknowledge, sc.inc.Version)
		r.slack.Reset()
		r.slack.Fail("chat.update", slacktest.Fault{Error: "fatal_error"})
		r.click(t, sc, approver, slackmessage.ActionRemediate, sc.inc.Version)
		got := r.ephemerals(approver)
		if len(got) != 1 || !strings.Contains(got[0], "out of date") || strings.Contains(got[0], "now shows") || !strings.Contains(got[0], "could not be refreshed") {
			t.Errorf("ephemerals: got %q, want one saying out of date and not refreshed", got)
		}
		if n := len(r.lambda.invoked()); n != 0 {
			t.Errorf("invokes: got %d, want none", n)
		}
	})
}

func keyState(tb testing.TB, r *rig, keyID string) kmstypes.KeyState {
	tb.Helper()
	out, err := r.kms.DescribeKey(context.Background(), &kms.DescribeKeyInput{KeyId: aws.String(keyID)})
	if err != nil {
		tb.Fatal(err)
	}
	return out.KeyMetadata.KeyState
}

// TestClickHandsOff: one approved click moves the incident to remediating and hands the run
// to RemediateFunction once; a replayed request and a second click on the old message change
// nothing and say the message was out of date.
func TestClickHandsOff(t *testing.T) {
	eachRig(t, 1, func(t *testing.T, r *rig) {
		sc := r.scenario(t)
		req := signed(clickBody(sc, approver, slackmessage.ActionRemediate, sc.inc.Version), signingSecret, time.Now())
		if resp := r.do(t, req); resp.StatusCode != 200 || resp.Body != "" {
			t.Fatalf("click: got %d %q, want 200 and an empty body", resp.StatusCode, resp.Body)
		}
		clicked := r.get(t, sc.inc.ID)
		if clicked.State != incident.StateRemediating || clicked.Remediation.State != incident.RemediationApproved {
			t.Fatalf("after the click: state %s, remediation %s, want remediating and approved", clicked.State, clicked.Remediation.State)
		}
		reqs := r.remediationRequests(t)
		if len(reqs) != 1 || reqs[0].RunID != clicked.Remediation.RunID || reqs[0].IncidentID != sc.inc.ID {
			t.Fatalf("invokes: got %+v, want one for run %s", reqs, clicked.Remediation.RunID)
		}
		if upd := r.slack.Calls("chat.update"); len(upd) != 1 || upd[0].TS != sc.messageTS {
			t.Errorf("message refresh: got %+v, want one chat.update of %s", upd, sc.messageTS)
		}

		r.slack.Reset()
		for _, again := range []struct {
			name string
			req  events.LambdaFunctionURLRequest
		}{
			{"replayed", req},
			{"second click", signed(clickBody(sc, approver2, slackmessage.ActionRemediate, sc.inc.Version), signingSecret, time.Now())},
		} {
			if resp := r.do(t, again.req); resp.StatusCode != 200 {
				t.Fatalf("%s: status %d, want 200", again.name, resp.StatusCode)
			}
			unchanged(t, clicked, r.get(t, sc.inc.ID))
		}
		// The replay is the starting click again (its answer may have been lost): the same run
		// is handed off again, which RemediateFunction's claim runs once. The second click is
		// refused: the run is approved and its hand-off has its chance.
		reqs = r.remediationRequests(t)
		if len(reqs) != 2 || reqs[1].RunID != clicked.Remediation.RunID {
			t.Errorf("invokes after the replay and second click: got %+v, want the same run handed off twice", reqs)
		}
		if got := r.ephemerals(approver); len(got) != 1 || !strings.Contains(got[0], "handed it off again") {
			t.Errorf("ephemerals to %s: got %q, want one saying it was handed off again", approver, got)
		}
		if got := r.ephemerals(approver2); len(got) != 1 || !strings.Contains(got[0], "already") {
			t.Errorf("ephemerals to %s: got %q, want one saying remediation is already under way", approver2, got)
		}
	})
}

func TestAcknowledgeAndIntentional(t *testing.T) {
	eachRig(t, 2, func(t *testing.T, r *rig) {
		sc := r.scenario(t)
		r.click(t, sc, member, slackmessage.ActionAcknowledge, sc.inc.Version)
		acked := r.get(t, sc.inc.ID)
		r.click(t, sc, approver, slackmessage.ActionIntentional, acked.Version)
		closed := r.get(t, sc.inc.ID)
		if closed.State != incident.StateIntentional || closed.ClosedAt == nil {
			t.Fatalf("after intentional: state %s, closed %v, want intentional and a close time", closed.State, closed.ClosedAt)
		}
		if e, _ := closed.LastEntry(incident.KindState); e.Actor != approver || e.Result != incident.Result(incident.StateIntentional) {
			t.Errorf("state entry: got %+v, want intentional by %s", e, approver)
		}
		active, err := r.store.ListActive(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if slices.ContainsFunc(active, func(i incident.Incident) bool { return i.ID == sc.inc.ID }) {
			t.Errorf("an intentional incident is still active, so reminders would continue")
		}
		// A remediate click on the message as it was before: nothing runs.
		r.click(t, sc, approver2, slackmessage.ActionRemediate, acked.Version)
		unchanged(t, closed, r.get(t, sc.inc.ID))
		if n := len(r.lambda.invoked()); n != 0 {
			t.Errorf("invokes: got %d, want none", n)
		}
		if r.kms != nil {
			if st := keyState(t, r, sc.keyID); st != kmstypes.KeyStateDisabled {
				t.Errorf("key state: got %s, want Disabled", st)
			}
		}
		// The refreshed message has no buttons left.
		upd := r.slack.Calls("chat.update")
		if last := upd[len(upd)-1]; strings.Contains(string(last.Blocks), slackmessage.ActionsBlockID) {
			t.Errorf("the closed incident's message still has buttons")
		}
	})
}

// A failed hand-off leaves the run approved and says the truth: it starts within a minute.
// The next approver's click, once the run has sat unclaimed, hands it off again.
func TestHandOffFails(t *testing.T) {
	eachRig(t, 1, func(t *testing.T, r *rig) {
		sc := r.scenario(t)
		r.lambda.fail = true
		r.click(t, sc, approver, slackmessage.ActionRemediate, sc.inc.Version)
		got := r.get(t, sc.inc.ID)
		if got.State != incident.StateRemediating || got.Remediation.State != incident.RemediationApproved {
			t.Fatalf("state %s, remediation %s: want the run still approved", got.State, got.Remediation.State)
		}
		if e := r.ephemerals(approver); len(e) != 1 || !strings.Contains(e[0], "within a minute") || strings.Contains(e[0], "Nothing was done") {
			t.Errorf("ephemerals: got %q, want one saying it starts within a minute", e)
		}
		r.lambda.fail = false
		later := r.h.now().Add(time.Minute)
		r.h.now = func() time.Time { return later }
		r.click(t, sc, approver2, slackmessage.ActionRemediate, got.Version)
		reqs := r.remediationRequests(t)
		if len(reqs) != 1 || reqs[0].RunID != got.Remediation.RunID {
			t.Errorf("after the next click: invokes %+v, want run %s handed off", reqs, got.Remediation.RunID)
		}
		unchanged(t, got, r.get(t, sc.inc.ID))
	})
}

// Slack slow or down must not hold the answer past the follow-up bound.
func TestAnswersWhileSlackIsSlow(t *testing.T) {
	eachRig(t, 1, func(t *testing.T, r *rig) {
		sc := r.scenario(t)
		r.slack.Fail(slacktest.AnyMethod, slacktest.Fault{Delay: 1500 * time.Millisecond})
		r.h.followUp = 200 * time.Millisecond
		start := time.Now()
		resp := r.click(t, sc, approver, slackmessage.ActionAcknowledge, sc.inc.Version)
		if took := time.Since(start); resp.StatusCode != 200 || took > time.Second {
			t.Errorf("answer: %d after %s, want 200 well within Slack's 3 s", resp.StatusCode, took)
		}
		if got := r.get(t, sc.inc.ID); got.Version != sc.inc.Version+1 {
			t.Errorf("the click was not recorded while Slack was slow")
		}
	})
}

func TestIgnoresOtherInteractions(t *testing.T) {
	eachRig(t, 1, func(t *testing.T, r *rig) {
		body := []byte(url.Values{"payload": {`{"type":"view_submission","user":{"id":"U0APPROVR1"}}`}}.Encode())
		if resp := r.do(t, signed(body, signingSecret, time.Now())); resp.StatusCode != 200 {
			t.Errorf("view_submission: status %d, want 200", resp.StatusCode)
		}
		if resp := r.do(t, signed([]byte("payload=%7Bnot-json"), signingSecret, time.Now())); resp.StatusCode != 400 {
			t.Errorf("malformed payload: status %d, want 400", resp.StatusCode)
		}
		sc := scenario{inc: incident.Incident{ID: "KW-20261128-000000"}, chanID: "C0KEYWARDEN", messageTS: "1.2", responseURL: r.slack.ResponseURL("x")}
		r.click(t, sc, approver, slackmessage.ActionAcknowledge, 1)
		if got := r.ephemerals(approver); len(got) != 1 || !strings.Contains(got[0], "no such incident") {
			t.Errorf("click for an unknown incident: ephemerals %q", got)
		}
		if _, err := r.store.Get(context.Background(), sc.inc.ID); !errors.Is(err, incident.ErrNotFound) {
			t.Errorf("Get after a click for an unknown incident: %v, want ErrNotFound", err)
		}
	})
}

func TestLoadSettings(t *testing.T) {
	_, err := loadSettings(env.FromMap(map[string]string{"APPROVERS": "alice", "REQUIRED_APPROVALS": "0"}))
	if err == nil {
		t.Fatal("want a configuration error")
	}
	for _, want := range []string{"INCIDENTS_TABLE", "REMEDIATE_FUNCTION", "SLACK_SIGNING_SECRET", "SLACK_BOT_TOKEN", "SLACK_CHANNEL", "APPROVERS", "REQUIRED_APPROVALS"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("configuration error %q does not name %s", err, want)
		}
	}
}
