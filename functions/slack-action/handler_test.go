package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
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
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	kmstypes "github.com/aws/aws-sdk-go-v2/service/kms/types"
	awslambda "github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/rds"
	"github.com/slack-go/slack"

	"github.com/keywarden/keywarden/internal/announce"
	"github.com/keywarden/keywarden/internal/approval"
	"github.com/keywarden/keywarden/internal/awstest"
	"github.com/keywarden/keywarden/internal/env"
	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/notify"
	"github.com/keywarden/keywarden/internal/remedy"
	"github.com/keywarden/keywarden/internal/slacktest"
	"github.com/keywarden/keywarden/internal/slackui"
)

func TestMain(m *testing.M) { awstest.Main(m) }

var (
	_ slackAPI     = (*slack.Client)(nil)
	_ incidents    = (*incident.Store)(nil)
	_ announcer    = (*announce.Announcer)(nil)
	_ remediations = invoker{}
	_ lambdaAPI    = (*awslambda.Client)(nil)
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
	if r.URL.Path != want || r.Header.Get("X-Amz-Invocation-Type") != "Event" {
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

// rig is SlackActionFunction on the local components: moto for KMS, RDS and DynamoDB, the
// real store, announcer and Lambda client, a Slack Web API stand-in, and the handler under test
// built as main builds it.
type rig struct {
	kms    *kms.Client
	rds    *rds.Client
	store  *incident.Store
	slack  *slacktest.Slack
	lambda *lambdaStandIn
	ann    *announce.Announcer
	h      *handler
}

func newRig(tb testing.TB, required int) *rig {
	tb.Helper()
	cfg := awstest.Serial(awstest.Config(tb, awstest.Moto(tb)))
	db := dynamodb.NewFromConfig(cfg)
	table := fmt.Sprintf("slack-action-%d", rand.Int64())
	if err := incident.CreateTable(context.Background(), db, table); err != nil {
		tb.Fatal(err)
	}
	r := &rig{
		kms: kms.NewFromConfig(cfg), rds: rds.NewFromConfig(cfg), store: incident.NewStore(db, table),
		slack:  slacktest.Start(tb, &slacktest.Slack{Token: botToken, Groups: map[string][]string{group: {member}}}),
		lambda: &lambdaStandIn{},
	}
	lambdaSrv := httptest.NewServer(r.lambda)
	tb.Cleanup(lambdaSrv.Close)
	lambdaClient := awslambda.NewFromConfig(cfg, func(o *awslambda.Options) {
		o.BaseEndpoint = aws.String(lambdaSrv.URL)
		o.HTTPClient = http.DefaultClient // not moto's serialised client
	})

	settings, err := loadSettings(env.FromMap(map[string]string{
		"INCIDENTS_TABLE": table, "APPROVERS": approver + "," + approver2 + " " + group,
		"REQUIRED_APPROVALS": fmt.Sprint(required), "REMEDIATE_FUNCTION": remediateFn,
		"SLACK_SIGNING_SECRET": signingSecret, "SLACK_BOT_TOKEN": botToken, "SLACK_CHANNEL": "#keywarden",
	}))
	if err != nil {
		tb.Fatal(err)
	}
	client := slack.New(botToken, slack.OptionAPIURL(r.slack.APIURL()))
	r.ann = announce.New(r.store, notify.New(client, settings.Shared.Channel))
	r.h = &handler{
		signingSecret: signingSecret,
		approvers:     settings.Approvers,
		required:      settings.RequiredApprovals,
		slack:         client,
		store:         r.store,
		remediations:  invoker{api: lambdaClient, function: settings.RemediateFunction},
		announcer:     r.ann,
		log:           slog.New(slog.NewJSONHandler(io.Discard, nil)),
		now:           time.Now,
		followUp:      defaultFollowUp,
	}
	return r
}

// scenario is a disabled key with a stopped Aurora cluster (moto's stand-in for
// inaccessible-encryption-credentials-recoverable) and a running one, and the incident as
// KeyEventFunction would have opened and announced it.
type scenario struct {
	keyID, keyARN     string
	stopped, running  string
	inc               incident.Incident
	messageTS, chanID string
}

func (r *rig) scenario(tb testing.TB) scenario {
	tb.Helper()
	ctx := context.Background()
	key, err := r.kms.CreateKey(ctx, &kms.CreateKeyInput{Description: aws.String(tb.Name())})
	if err != nil {
		tb.Fatal(err)
	}
	sc := scenario{keyID: aws.ToString(key.KeyMetadata.KeyId), keyARN: aws.ToString(key.KeyMetadata.Arn)}
	suffix := rand.Int32()
	sc.stopped, sc.running = fmt.Sprintf("orders-%d", suffix), fmt.Sprintf("reports-%d", suffix)
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
	now := time.Now().UTC()
	inc, _, err := r.store.Open(ctx, incident.Incident{
		KeyARN: sc.keyARN, KeyState: "Disabled", Trigger: "DisableKey", LostAt: now,
		Actor: incident.Actor{ARN: "arn:aws:iam::123456789012:user/alice", SourceIP: "203.0.113.7"},
		Clusters: []incident.Cluster{
			{Identifier: sc.stopped, Engine: "aurora-postgresql", Status: "stopped", CanStop: true, LostAccessAt: &now},
			{Identifier: sc.running, Engine: "aurora-postgresql", Status: "available", CanStop: true, LostAccessAt: &now},
		},
		Timeline: []incident.Entry{{At: now, Kind: incident.KindOpened, Actor: "arn:aws:iam::123456789012:user/alice", Detail: "DisableKey"}},
	}, incident.Entry{At: now, Kind: incident.KindDelivery, Detail: "DisableKey"}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	inc.RecomputeDeadlines()
	if err := r.ann.Announce(ctx, inc); err != nil {
		tb.Fatal(err)
	}
	sc.inc = r.get(tb, inc.ID)
	sc.messageTS, sc.chanID = sc.inc.Slack.TS, sc.inc.Slack.Channel
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

// clickBody is the form-encoded block_actions request Slack sends for a press of actionID on
// the message of inc as it was at version.
func clickBody(sc scenario, user, actionID string, version int64) []byte {
	payload := map[string]any{
		"type":         "block_actions",
		"user":         map[string]any{"id": user, "username": strings.ToLower(user), "team_id": "T0KEYWARD1"},
		"api_app_id":   "A0KEYWARD1",
		"team":         map[string]any{"id": "T0KEYWARD1"},
		"container":    map[string]any{"type": "message", "message_ts": sc.messageTS, "channel_id": sc.chanID},
		"channel":      map[string]any{"id": sc.chanID, "name": "keywarden"},
		"trigger_id":   "10234567890.1234567890123.0123456789abcdef",
		"response_url": "http://127.0.0.1:1/unused",
		"actions": []map[string]any{{
			"action_id": actionID, "block_id": slackui.ActionsBlockID, "type": "button",
			"value": slackui.ButtonValue(sc.inc.ID, version), "action_ts": "1795860001.000200",
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

// unchanged fails unless the incident is exactly as before, Slack bookkeeping aside.
func unchanged(tb testing.TB, before, after incident.Incident) {
	tb.Helper()
	if after.Version != before.Version || after.State != before.State || len(after.Timeline) != len(before.Timeline) {
		tb.Errorf("incident changed: version %d→%d, state %s→%s, timeline %d→%d entries",
			before.Version, after.Version, before.State, after.State, len(before.Timeline), len(after.Timeline))
	}
}

func TestSignature(t *testing.T) {
	r := newRig(t, 1)
	sc := r.scenario(t)
	body := clickBody(sc, approver, slackui.ActionAcknowledge, sc.inc.Version)
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
		{name: "valid", req: signed(clickBody(sc, approver, slackui.ActionAcknowledge, sc.inc.Version+1), signingSecret, now), wantStatus: 200},
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
				if calls := r.slack.Calls(); len(calls) != 0 {
					t.Errorf("a rejected request reached Slack: %+v", calls)
				}
				return
			}
			if after.Version != before.Version+1 {
				t.Errorf("version: got %d, want %d", after.Version, before.Version+1)
			}
			last := after.Timeline[len(after.Timeline)-1]
			if last.Kind != incident.KindClick || last.Actor != approver || !strings.HasPrefix(last.Detail, slackui.ActionAcknowledge) {
				t.Errorf("last entry: got %+v, want the acknowledge click", last)
			}
			if resp.Body != "" {
				t.Errorf("body: got %q, want empty", resp.Body)
			}
		})
	}
	if n := len(r.lambda.invoked()); n != 0 {
		t.Errorf("invokes: got %d, want none", n)
	}
}

func TestAuthorisation(t *testing.T) {
	t.Run("approver", func(t *testing.T) {
		r := newRig(t, 1)
		sc := r.scenario(t)
		r.click(t, sc, approver, slackui.ActionAcknowledge, sc.inc.Version)
		got := r.get(t, sc.inc.ID)
		if last := got.Timeline[len(got.Timeline)-1]; last.Kind != incident.KindClick || last.Actor != approver {
			t.Errorf("last entry: got %+v, want %s's click", last, approver)
		}
		if n := len(r.slack.Calls("usergroups.users.list")); n != 0 {
			t.Errorf("usergroups.users.list calls: got %d, want 0 for a listed user", n)
		}
		if got.State != incident.StateOpen {
			t.Errorf("state: got %s, want open", got.State)
		}
	})
	t.Run("user-group member", func(t *testing.T) {
		r := newRig(t, 1)
		sc := r.scenario(t)
		r.click(t, sc, member, slackui.ActionAcknowledge, sc.inc.Version)
		got := r.get(t, sc.inc.ID)
		if last := got.Timeline[len(got.Timeline)-1]; last.Kind != incident.KindClick || last.Actor != member {
			t.Errorf("last entry: got %+v, want %s's click", last, member)
		}
		if calls := r.slack.Calls("usergroups.users.list"); len(calls) != 1 || calls[0].Usergroup != group {
			t.Errorf("usergroups.users.list calls: got %+v, want one for %s", calls, group)
		}
	})
	t.Run("stranger", func(t *testing.T) {
		r := newRig(t, 1)
		sc := r.scenario(t)
		for _, action := range []string{slackui.ActionRemediate, slackui.ActionIntentional, slackui.ActionAcknowledge} {
			before := r.get(t, sc.inc.ID)
			resp := r.click(t, sc, stranger, action, before.Version)
			if resp.StatusCode != 200 {
				t.Fatalf("%s: status %d, want 200", action, resp.StatusCode)
			}
			after := r.get(t, sc.inc.ID)
			if after.State != incident.StateOpen || len(after.Timeline) != len(before.Timeline)+1 {
				t.Fatalf("%s: state %s, timeline %d→%d, want open and one entry more", action, after.State, len(before.Timeline), len(after.Timeline))
			}
			if last := after.Timeline[len(after.Timeline)-1]; last.Kind != incident.KindDenied || last.Actor != stranger || !strings.HasPrefix(last.Detail, action) {
				t.Errorf("%s: last entry: got %+v, want the denied attempt", action, last)
			}
		}
		if got := r.ephemerals(stranger); len(got) != 3 || !strings.Contains(got[0], "not allowed") {
			t.Errorf("ephemerals to the stranger: got %q, want three saying not allowed", got)
		}
		if n := len(r.lambda.invoked()); n != 0 {
			t.Errorf("invokes: got %d, want none", n)
		}
		if st := keyState(t, r, sc.keyID); st != kmstypes.KeyStateDisabled {
			t.Errorf("key state: got %s, want Disabled", st)
		}
		// The message was refreshed with the new version, and nobody was counted as approving.
		got := r.get(t, sc.inc.ID)
		if len(approvals(got.Timeline)) != 0 {
			t.Errorf("approvals: got %v, want none", approvals(got.Timeline))
		}
		if n := len(r.slack.Calls("chat.update")); n != 3 {
			t.Errorf("chat.update calls: got %d, want 3", n)
		}
	})
	t.Run("two-person rule", func(t *testing.T) {
		r := newRig(t, 2)
		sc := r.scenario(t)
		r.click(t, sc, approver, slackui.ActionRemediate, sc.inc.Version)
		first := r.get(t, sc.inc.ID)
		if first.State != incident.StateOpen || first.Timeline[len(first.Timeline)-1].Detail != "remediate: approval 1 of 2" {
			t.Fatalf("after one approval: state %s, last %+v, want open and approval 1 of 2", first.State, first.Timeline[len(first.Timeline)-1])
		}
		if n := len(r.lambda.invoked()); n != 0 {
			t.Fatalf("invoked after one approval")
		}
		// The same person again, on the refreshed message: counted once.
		r.click(t, sc, approver, slackui.ActionRemediate, first.Version)
		unchanged(t, first, r.get(t, sc.inc.ID))
		if got := r.ephemerals(approver); len(got) != 2 || !strings.Contains(got[1], "already approved") {
			t.Errorf("ephemerals to %s: got %q, want the second to say already approved", approver, got)
		}
		// A group member is the second approver.
		r.click(t, sc, member, slackui.ActionRemediate, first.Version)
		second := r.get(t, sc.inc.ID)
		if second.State != incident.StateRemediating || second.Timeline[len(second.Timeline)-1].Detail != "remediate: approval 2 of 2; remediation started" {
			t.Errorf("after two approvals: state %s, last %+v", second.State, second.Timeline[len(second.Timeline)-1])
		}
		inv := r.lambda.invoked()
		if len(inv) != 1 {
			t.Fatalf("invokes: got %d, want 1", len(inv))
		}
		var req remediationRequest
		if err := json.Unmarshal(inv[0], &req); err != nil {
			t.Fatal(err)
		}
		if req.IncidentID != sc.inc.ID || !slices.Equal(req.ApprovedBy, []string{approver, member}) {
			t.Errorf("invoke payload: got %+v, want %s approved by %s and %s", req, sc.inc.ID, approver, member)
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

func clusterStatus(tb testing.TB, r *rig, id string) string {
	tb.Helper()
	out, err := r.rds.DescribeDBClusters(context.Background(), &rds.DescribeDBClustersInput{DBClusterIdentifier: aws.String(id)})
	if err != nil {
		tb.Fatal(err)
	}
	return aws.ToString(out.DBClusters[0].Status)
}

// runRemediations does what Lambda does with the queued invokes: it runs RemediateFunction's
// domain call (remedy.Runner.Run, then the announce) on each recorded payload.
// functions/remediate tests that function's handler itself with the same payload shape.
func (r *rig) runRemediations(t *testing.T) []incident.Incident {
	t.Helper()
	runner := remedy.New(r.kms, r.rds, r.store, remedy.Options{WaitTimeout: 10 * time.Second})
	var out []incident.Incident
	for _, p := range r.lambda.invoked() {
		var req remediationRequest
		if err := json.Unmarshal(p, &req); err != nil {
			t.Fatal(err)
		}
		inc, _, err := runner.Run(context.Background(), req.IncidentID, strings.Join(req.ApprovedBy, ","))
		if err != nil {
			t.Fatalf("remediation: %v", err)
		}
		if err := r.ann.Announce(context.Background(), inc); err != nil {
			t.Fatalf("announce after remediation: %v", err)
		}
		out = append(out, inc)
	}
	return out
}

// TestClickRemediates: one approved click re-enables the key and starts the stopped cluster;
// a second click and a replayed request change nothing; the timeline tells the whole story.
func TestClickRemediates(t *testing.T) {
	r := newRig(t, 1)
	sc := r.scenario(t)
	req := signed(clickBody(sc, approver, slackui.ActionRemediate, sc.inc.Version), signingSecret, time.Now())

	if resp := r.do(t, req); resp.StatusCode != 200 || resp.Body != "" {
		t.Fatalf("click: got %d %q, want 200 and an empty body", resp.StatusCode, resp.Body)
	}
	clicked := r.get(t, sc.inc.ID)
	if clicked.State != incident.StateRemediating {
		t.Fatalf("state after the click: got %s, want remediating", clicked.State)
	}
	if n := len(r.lambda.invoked()); n != 1 {
		t.Fatalf("invokes: got %d, want 1", n)
	}
	if upd := r.slack.Calls("chat.update"); len(upd) != 1 || upd[0].TS != sc.messageTS {
		t.Errorf("message refresh: got %+v, want one chat.update of %s", upd, sc.messageTS)
	}

	// Replayed (the very same signed request) and clicked again on the old message.
	r.slack.Reset()
	for name, again := range map[string]events.LambdaFunctionURLRequest{
		"replayed":     req,
		"second click": signed(clickBody(sc, approver2, slackui.ActionRemediate, sc.inc.Version), signingSecret, time.Now()),
	} {
		if resp := r.do(t, again); resp.StatusCode != 200 {
			t.Fatalf("%s: status %d, want 200", name, resp.StatusCode)
		}
		unchanged(t, clicked, r.get(t, sc.inc.ID))
	}
	if n := len(r.lambda.invoked()); n != 1 {
		t.Errorf("invokes after the replay and second click: got %d, want still 1", n)
	}
	for _, user := range []string{approver, approver2} {
		if got := r.ephemerals(user); len(got) != 1 || !strings.Contains(got[0], "out of date") {
			t.Errorf("ephemerals to %s: got %q, want one saying the message was out of date", user, got)
		}
	}

	// Lambda runs the queued remediation.
	done := r.runRemediations(t)[0]
	if st := keyState(t, r, sc.keyID); st != kmstypes.KeyStateEnabled {
		t.Errorf("key state: got %s, want Enabled", st)
	}
	if st := clusterStatus(t, r, sc.stopped); st != "available" && st != "starting" {
		t.Errorf("stopped cluster: got %s, want started", st)
	}
	var story []string
	for _, e := range r.get(t, sc.inc.ID).Timeline {
		story = append(story, e.Kind+" "+e.Actor+" "+e.Detail)
	}
	want := []string{
		"opened",
		"click " + approver + " remediate: approval 1 of 1; remediation started",
		"remediation " + approver + " CancelKeyDeletion " + sc.keyARN + " → skipped",
		"remediation " + approver + " EnableKey " + sc.keyARN + " → ok",
		"remediation " + approver + " WaitEnabled " + sc.keyARN + " → ok",
		"remediation " + approver + " StartDBCluster " + sc.stopped + " → ok",
	}
	for _, w := range want {
		if !slices.ContainsFunc(story, func(s string) bool { return strings.HasPrefix(s, w) }) {
			t.Errorf("timeline lacks %q:\n%s", w, strings.Join(story, "\n"))
		}
	}
	if slices.ContainsFunc(story, func(s string) bool { return strings.Contains(s, "StartDBCluster "+sc.running+" → ok") }) {
		t.Errorf("the running cluster was started:\n%s", strings.Join(story, "\n"))
	}
	// Every entry reached the thread once.
	got := r.get(t, sc.inc.ID)
	if got.SlackPosted != len(got.Timeline) {
		t.Errorf("posted %d of %d timeline entries", got.SlackPosted, len(got.Timeline))
	}
	if done.State != incident.StateRemediating {
		t.Errorf("state after the run: got %s, want remediating (RDS events mark it resolved)", done.State)
	}
}

func TestAcknowledgeAndIntentional(t *testing.T) {
	r := newRig(t, 2)
	sc := r.scenario(t)
	r.click(t, sc, member, slackui.ActionAcknowledge, sc.inc.Version)
	acked := r.get(t, sc.inc.ID)
	r.click(t, sc, approver, slackui.ActionIntentional, acked.Version)
	closed := r.get(t, sc.inc.ID)
	if closed.State != incident.StateIntentional || closed.ClosedAt == nil {
		t.Fatalf("after intentional: state %s, closed %v, want intentional and a close time", closed.State, closed.ClosedAt)
	}
	active, err := r.store.ListActive(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(active, func(i incident.Incident) bool { return i.ID == sc.inc.ID }) {
		t.Errorf("an intentional incident is still active, so reminders would continue")
	}
	// A remediate click on the message as it was before: nothing runs.
	r.click(t, sc, approver2, slackui.ActionRemediate, acked.Version)
	unchanged(t, closed, r.get(t, sc.inc.ID))
	if n := len(r.lambda.invoked()); n != 0 {
		t.Errorf("invokes: got %d, want none", n)
	}
	if st := keyState(t, r, sc.keyID); st != kmstypes.KeyStateDisabled {
		t.Errorf("key state: got %s, want Disabled", st)
	}
	// The refreshed message has no buttons left.
	upd := r.slack.Calls("chat.update")
	if last := upd[len(upd)-1]; strings.Contains(string(last.Blocks), slackui.ActionsBlockID) {
		t.Errorf("the closed incident's message still has buttons")
	}
}

// A failed hand-off puts the incident back to open and says to retry; the retry works.
func TestHandOffFails(t *testing.T) {
	r := newRig(t, 1)
	sc := r.scenario(t)
	r.lambda.fail = true
	r.click(t, sc, approver, slackui.ActionRemediate, sc.inc.Version)
	back := r.get(t, sc.inc.ID)
	if back.State != incident.StateOpen {
		t.Fatalf("state: got %s, want open again", back.State)
	}
	if last := back.Timeline[len(back.Timeline)-1]; last.Kind != incident.KindRemediation || !strings.Contains(last.Detail, "could not hand") {
		t.Errorf("last entry: got %+v, want the failed hand-off", last)
	}
	if got := r.ephemerals(approver); len(got) != 1 || !strings.Contains(got[0], "retry") {
		t.Errorf("ephemerals: got %q, want one saying to retry", got)
	}
	r.lambda.fail = false
	r.click(t, sc, approver, slackui.ActionRemediate, back.Version)
	if got := r.get(t, sc.inc.ID); got.State != incident.StateRemediating || len(r.lambda.invoked()) != 1 {
		t.Errorf("retry: state %s, %d invokes, want remediating and 1", got.State, len(r.lambda.invoked()))
	}
}

// Slack slow or down must not hold the answer past the follow-up bound.
func TestAnswersWhileSlackIsSlow(t *testing.T) {
	r := newRig(t, 1)
	sc := r.scenario(t)
	r.slack.Fail(slacktest.AnyMethod, slacktest.Fault{Delay: 1500 * time.Millisecond})
	r.h.followUp = 200 * time.Millisecond
	start := time.Now()
	resp := r.click(t, sc, approver, slackui.ActionAcknowledge, sc.inc.Version)
	if took := time.Since(start); resp.StatusCode != 200 || took > time.Second {
		t.Errorf("answer: %d after %s, want 200 well within Slack's 3 s", resp.StatusCode, took)
	}
	if got := r.get(t, sc.inc.ID); got.Version != sc.inc.Version+1 {
		t.Errorf("the click was not recorded while Slack was slow")
	}
}

func TestIgnoresOtherInteractions(t *testing.T) {
	r := newRig(t, 1)
	body := []byte(url.Values{"payload": {`{"type":"view_submission","user":{"id":"U0APPROVR1"}}`}}.Encode())
	if resp := r.do(t, signed(body, signingSecret, time.Now())); resp.StatusCode != 200 {
		t.Errorf("view_submission: status %d, want 200", resp.StatusCode)
	}
	if resp := r.do(t, signed([]byte("payload=%7Bnot-json"), signingSecret, time.Now())); resp.StatusCode != 400 {
		t.Errorf("malformed payload: status %d, want 400", resp.StatusCode)
	}
	sc := scenario{inc: incident.Incident{ID: "KW-20261128-000000"}, chanID: "C0KEYWARDEN", messageTS: "1.2"}
	r.click(t, sc, approver, slackui.ActionAcknowledge, 1)
	if got := r.ephemerals(approver); len(got) != 1 || !strings.Contains(got[0], "no such incident") {
		t.Errorf("click for an unknown incident: ephemerals %q", got)
	}
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

// TestApprovalsSinceLastStart: approvals spent on a remediation that started do not count for
// the next one, so a reopened incident needs a fresh quorum under the two-person rule.
func TestApprovalsSinceLastStart(t *testing.T) {
	click := func(user, detail string) incident.Entry {
		return incident.Entry{Kind: incident.KindClick, Actor: user, Detail: detail}
	}
	tl := []incident.Entry{
		click("UAAAAAAAAA", "remediate: approval 1 of 2"),
		click("UBBBBBBBBB", "remediate: approval 2 of 2; remediation started"),
		{Kind: incident.KindRemediation, Detail: "could not hand the remediation to RemediateFunction; the incident is open again"},
	}
	if got := approvals(tl); len(got) != 0 {
		t.Fatalf("after a start: got %v, want no approvals carried over", got)
	}
	tl = append(tl, click("UAAAAAAAAA", "remediate: approval 1 of 2"), click("UCCCCCCCCC", "acknowledge: on it"))
	if got := approvals(tl); len(got) != 1 || got[0] != "UAAAAAAAAA" {
		t.Errorf("got %v, want only the new approval", got)
	}
}
