package trail

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/cloudtrail"
	"github.com/aws/aws-sdk-go-v2/service/cloudtrail/types"
	"github.com/aws/smithy-go"
	"github.com/google/go-cmp/cmp"

	"github.com/keywarden/keywarden/internal/incident"
)

const (
	keyARN = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
	// The API reference spells the target in full; the Go SDK sends the short form. CloudTrail
	// accepts both, and so does the fake.
	lookupTarget      = "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.LookupEvents"
	lookupTargetShort = "CloudTrail_20131101.LookupEvents"
)

var now = time.Date(2026, 3, 12, 9, 0, 0, 0, time.UTC)

// lookupRequest is the JSON body the SDK sends for LookupEvents.
type lookupRequest struct {
	LookupAttributes []struct {
		AttributeKey   string
		AttributeValue string
	}
	StartTime  float64
	EndTime    float64
	MaxResults int
	NextToken  string
}

// reply is what the fake server answers to one request: a page, or an error.
type reply struct {
	status int // 0 means 200
	body   any
}

// fakeTrail is an httptest server speaking CloudTrail's JSON 1.1 protocol for LookupEvents.
// respond is given the 0-based request number and the decoded request.
type fakeTrail struct {
	t       *testing.T
	respond func(n int, req lookupRequest) reply

	mu       sync.Mutex
	requests []lookupRequest
	times    []time.Time
}

func newFakeTrail(t *testing.T, respond func(n int, req lookupRequest) reply) (*fakeTrail, *cloudtrail.Client) {
	t.Helper()
	ft := &fakeTrail{t: t, respond: respond}
	srv := httptest.NewServer(ft)
	t.Cleanup(srv.Close)
	client := cloudtrail.New(cloudtrail.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(srv.URL),
		Credentials:  credentials.NewStaticCredentialsProvider("AKIDEXAMPLE", "secret", ""),
	})
	// Warm the client up (SDK set-up, the TCP connection) outside the Finder, so that one-off
	// costs do not land on the first timed request and make the spacing checks below flaky.
	if _, err := client.LookupEvents(context.Background(), &cloudtrail.LookupEventsInput{
		LookupAttributes: []types.LookupAttribute{{AttributeKey: types.LookupAttributeKeyEventId, AttributeValue: aws.String(warmUp)}},
	}); err != nil {
		t.Fatalf("warm-up request: %v", err)
	}
	return ft, client
}

// warmUp marks the request newFakeTrail makes itself; the fake answers it and does not record it.
const warmUp = "warm-up"

func (ft *fakeTrail) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	at := time.Now()
	if r.Method != http.MethodPost || r.URL.Path != "/" {
		ft.t.Errorf("got %s %s, want POST /", r.Method, r.URL.Path)
	}
	if got := r.Header.Get("X-Amz-Target"); got != lookupTarget && got != lookupTargetShort {
		ft.t.Errorf("got X-Amz-Target %q, want %q", got, lookupTarget)
	}
	if got := r.Header.Get("Content-Type"); got != "application/x-amz-json-1.1" {
		ft.t.Errorf("got Content-Type %q, want application/x-amz-json-1.1", got)
	}
	var req lookupRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		ft.t.Errorf("decode request: %v", err)
	}
	if len(req.LookupAttributes) == 1 && req.LookupAttributes[0].AttributeValue == warmUp {
		_ = json.NewEncoder(w).Encode(map[string]any{"Events": []any{}})
		return
	}
	ft.mu.Lock()
	n := len(ft.requests)
	ft.requests = append(ft.requests, req)
	ft.times = append(ft.times, at)
	ft.mu.Unlock()

	rep := ft.respond(n, req)
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	if rep.status != 0 {
		w.WriteHeader(rep.status)
	}
	if err := json.NewEncoder(w).Encode(rep.body); err != nil {
		ft.t.Errorf("encode reply: %v", err)
	}
}

func (ft *fakeTrail) snapshot() ([]lookupRequest, []time.Time) {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	return append([]lookupRequest(nil), ft.requests...), append([]time.Time(nil), ft.times...)
}

// ctEvent builds one LookupEvents result the way CloudTrail returns it: EventTime in epoch
// seconds and the record as a JSON string.
func ctEvent(t *testing.T, id, name string, at time.Time, username string, rec map[string]any) map[string]any {
	t.Helper()
	e := map[string]any{
		"EventId":     id,
		"EventName":   name,
		"EventTime":   at.Unix(),
		"EventSource": "kms.amazonaws.com",
		"ReadOnly":    "false",
		"Resources":   []map[string]string{{"ResourceType": "AWS::KMS::Key", "ResourceName": keyARN}},
	}
	if username != "" {
		e["Username"] = username
	}
	if rec != nil {
		rec["eventID"] = id
		rec["eventName"] = name
		rec["eventTime"] = at.UTC().Format(time.RFC3339)
		rec["eventSource"] = "kms.amazonaws.com"
		b, err := json.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		e["CloudTrailEvent"] = string(b)
	}
	return e
}

func alice() map[string]any {
	return map[string]any{
		"userIdentity": map[string]any{
			"type":        "AssumedRole",
			"principalId": "AROAEXAMPLEID:alice",
			"arn":         "arn:aws:sts::123456789012:assumed-role/Admin/alice",
			"accountId":   "123456789012",
		},
		"sourceIPAddress": "203.0.113.7",
		"userAgent":       "aws-cli/2.15.0",
	}
}

var aliceActor = incident.Actor{
	ARN:       "arn:aws:sts::123456789012:assumed-role/Admin/alice",
	Principal: "AROAEXAMPLEID:alice",
	Type:      "AssumedRole",
	AccountID: "123456789012",
	SourceIP:  "203.0.113.7",
	UserAgent: "aws-cli/2.15.0",
}

func rdsDecrypt(t *testing.T, id string, at time.Time) map[string]any {
	return ctEvent(t, id, "Decrypt", at, "", map[string]any{
		"userIdentity":    map[string]any{"type": "AWSService", "invokedBy": "rds.amazonaws.com"},
		"sourceIPAddress": "rds.amazonaws.com",
		"userAgent":       "rds.amazonaws.com",
	})
}

func page(events []map[string]any, next string) reply {
	body := map[string]any{"Events": events}
	if next != "" {
		body["NextToken"] = next
	}
	return reply{body: body}
}

var throttle = reply{status: http.StatusBadRequest, body: map[string]string{"__type": "ThrottlingException", "message": "Rate exceeded"}}

// apiError returns a check that err carries the given API error code. The SDK models no
// ThrottlingException for LookupEvents, so it arrives as a smithy.GenericAPIError.
func apiError(code string) func(error) bool {
	return func(err error) bool {
		var apiErr smithy.APIError
		return errors.As(err, &apiErr) && apiErr.ErrorCode() == code
	}
}

// newTestFinder is New with a short backoff, so that only the limiter's spacing shows in the
// timings.
func newTestFinder(api LookupAPI) *Finder {
	f := New(api)
	f.backoff = func(int) time.Duration { return 10 * time.Millisecond }
	return f
}

func TestLastLoss(t *testing.T) {
	t.Parallel()
	disabledAt := now.Add(-26 * time.Hour)
	since := now.Add(-30 * 24 * time.Hour)

	tests := []struct {
		name        string
		since       time.Time
		respond     func(t *testing.T, n int, req lookupRequest) reply
		want        Finding
		wantFound   bool
		wantErr     func(error) bool // nil: no error expected
		wantCalls   int
		checkTokens []string // NextToken sent on each request
		pages       int      // maxPages, when not the default
	}{
		{
			name: "found on the first page",
			respond: func(t *testing.T, n int, _ lookupRequest) reply {
				return page([]map[string]any{
					rdsDecrypt(t, "ev-3", now.Add(-time.Hour)),
					ctEvent(t, "ev-2", "DisableKey", disabledAt, "alice", alice()),
					ctEvent(t, "ev-1", "EnableKey", disabledAt.Add(-time.Hour), "alice", alice()),
				}, "")
			},
			want:      Finding{EventName: "DisableKey", EventID: "ev-2", At: disabledAt, Actor: aliceActor},
			wantFound: true, wantCalls: 1, checkTokens: []string{""},
		},
		{
			name: "not found",
			respond: func(t *testing.T, n int, _ lookupRequest) reply {
				return page([]map[string]any{
					rdsDecrypt(t, "ev-2", now.Add(-time.Hour)),
					ctEvent(t, "ev-1", "EnableKey", disabledAt, "alice", alice()),
				}, "")
			},
			wantCalls: 1,
		},
		{
			name: "loss undone by a newer EnableKey",
			respond: func(t *testing.T, n int, _ lookupRequest) reply {
				return page([]map[string]any{
					rdsDecrypt(t, "ev-3", now.Add(-time.Hour)),
					ctEvent(t, "ev-2", "EnableKey", disabledAt.Add(time.Hour), "alice", alice()),
					ctEvent(t, "ev-1", "DisableKey", disabledAt, "alice", alice()),
				}, "")
			},
			wantCalls: 1,
		},
		{
			name: "restore on page 1 ends the search before an older loss",
			respond: func(t *testing.T, n int, _ lookupRequest) reply {
				if n == 0 {
					return page([]map[string]any{ctEvent(t, "ev-2", "ImportKeyMaterial", disabledAt.Add(time.Hour), "alice", alice())}, "token-1")
				}
				return page([]map[string]any{ctEvent(t, "ev-1", "DeleteImportedKeyMaterial", disabledAt, "alice", alice())}, "")
			},
			wantCalls: 1, checkTokens: []string{""},
		},
		{
			name: "restore on the same page, listed out of order",
			respond: func(t *testing.T, n int, _ lookupRequest) reply {
				return page([]map[string]any{
					ctEvent(t, "ev-1", "DisableKey", disabledAt, "alice", alice()),
					ctEvent(t, "ev-2", "ConnectCustomKeyStore", disabledAt.Add(time.Minute), "alice", alice()),
				}, "")
			},
			wantCalls: 1,
		},
		{
			name: "a failed EnableKey undoes nothing",
			respond: func(t *testing.T, n int, _ lookupRequest) reply {
				failed := alice()
				failed["errorCode"] = "KMSInvalidStateException"
				return page([]map[string]any{
					ctEvent(t, "ev-2", "EnableKey", disabledAt.Add(time.Hour), "alice", failed),
					ctEvent(t, "ev-1", "DisableKey", disabledAt, "alice", alice()),
				}, "")
			},
			want:      Finding{EventName: "DisableKey", EventID: "ev-1", At: disabledAt, Actor: aliceActor},
			wantFound: true, wantCalls: 1,
		},
		{
			name: "CancelKeyDeletion leaves the key Disabled: the deletion call is the loss",
			respond: func(t *testing.T, n int, _ lookupRequest) reply {
				return page([]map[string]any{
					ctEvent(t, "ev-2", "CancelKeyDeletion", disabledAt.Add(time.Hour), "alice", alice()),
					ctEvent(t, "ev-1", "ScheduleKeyDeletion", disabledAt, "alice", alice()),
				}, "")
			},
			want:      Finding{EventName: "ScheduleKeyDeletion", EventID: "ev-1", At: disabledAt, Actor: aliceActor},
			wantFound: true, wantCalls: 1,
		},
		{
			name: "loss and restore in the same second: the loss",
			respond: func(t *testing.T, n int, _ lookupRequest) reply {
				return page([]map[string]any{
					ctEvent(t, "ev-2", "EnableKey", disabledAt, "alice", alice()),
					ctEvent(t, "ev-1", "DisableKey", disabledAt, "alice", alice()),
				}, "")
			},
			want:      Finding{EventName: "DisableKey", EventID: "ev-1", At: disabledAt, Actor: aliceActor},
			wantFound: true, wantCalls: 1,
		},
		{
			name: "empty history",
			respond: func(t *testing.T, n int, _ lookupRequest) reply {
				return page(nil, "")
			},
			wantCalls: 1,
		},
		{
			name:  "found on page 2",
			since: since,
			respond: func(t *testing.T, n int, _ lookupRequest) reply {
				if n == 0 {
					return page([]map[string]any{
						rdsDecrypt(t, "ev-9", now.Add(-time.Hour)),
						rdsDecrypt(t, "ev-8", now.Add(-2*time.Hour)),
					}, "token-1")
				}
				return page([]map[string]any{
					ctEvent(t, "ev-7", "ScheduleKeyDeletion", disabledAt, "alice", alice()),
				}, "token-2")
			},
			want:      Finding{EventName: "ScheduleKeyDeletion", EventID: "ev-7", At: disabledAt, Actor: aliceActor},
			wantFound: true, wantCalls: 2, checkTokens: []string{"", "token-1"},
		},
		{
			name: "throttled twice, then answered",
			respond: func(t *testing.T, n int, _ lookupRequest) reply {
				if n < 2 {
					return throttle
				}
				return page([]map[string]any{ctEvent(t, "ev-1", "DisableKey", disabledAt, "alice", alice())}, "")
			},
			want:      Finding{EventName: "DisableKey", EventID: "ev-1", At: disabledAt, Actor: aliceActor},
			wantFound: true, wantCalls: 3, checkTokens: []string{"", "", ""},
		},
		{
			name:      "throttled on every attempt",
			respond:   func(t *testing.T, n int, _ lookupRequest) reply { return throttle },
			wantErr:   apiError("ThrottlingException"),
			wantCalls: 5, // the first attempt and maxRetries retries
		},
		{
			name: "other errors are not retried",
			respond: func(t *testing.T, n int, _ lookupRequest) reply {
				return reply{status: http.StatusBadRequest, body: map[string]string{"__type": "InvalidLookupAttributesException", "message": "bad attribute"}}
			},
			wantErr:   apiError("InvalidLookupAttributesException"),
			wantCalls: 1,
		},
		{
			name: "failed call skipped for an earlier successful one",
			respond: func(t *testing.T, n int, _ lookupRequest) reply {
				failed := alice()
				failed["errorCode"] = "AccessDeniedException"
				failed["errorMessage"] = "User is not authorized to perform kms:DisableKey"
				return page([]map[string]any{
					ctEvent(t, "ev-3", "DisableKey", now.Add(-time.Hour), "mallory", failed),
					ctEvent(t, "ev-2", "DisableKey", disabledAt, "alice", alice()),
				}, "")
			},
			want:      Finding{EventName: "DisableKey", EventID: "ev-2", At: disabledAt, Actor: aliceActor},
			wantFound: true, wantCalls: 1,
		},
		{
			name: "Username when the record has no identity",
			respond: func(t *testing.T, n int, _ lookupRequest) reply {
				return page([]map[string]any{ctEvent(t, "ev-1", "DeleteImportedKeyMaterial", disabledAt, "bob", nil)}, "")
			},
			want:      Finding{EventName: "DeleteImportedKeyMaterial", EventID: "ev-1", At: disabledAt, Actor: incident.Actor{Principal: "bob"}},
			wantFound: true, wantCalls: 1,
		},
		{
			name: "page limit",
			respond: func(t *testing.T, n int, _ lookupRequest) reply {
				return page([]map[string]any{rdsDecrypt(t, "ev", now.Add(-time.Duration(n+1)*time.Hour))}, "more")
			},
			wantErr:   func(err error) bool { return errors.Is(err, ErrPageLimit) },
			pages:     3,
			wantCalls: 3, // maxPages is 3 in this test
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ft, client := newFakeTrail(t, func(n int, req lookupRequest) reply { return tt.respond(t, n, req) })
			f := newTestFinder(client)
			if tt.pages != 0 {
				f.maxPages = tt.pages
			}

			got, found, err := f.LastLoss(context.Background(), keyARN, tt.since, now)

			switch {
			case tt.wantErr == nil && err != nil:
				t.Fatalf("got error %v, want nil", err)
			case tt.wantErr != nil && !tt.wantErr(err):
				t.Fatalf("got error %v, want a different one", err)
			}
			if found != tt.wantFound {
				t.Errorf("got found %v, want %v", found, tt.wantFound)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("finding mismatch (-want +got):\n%s", diff)
			}

			reqs, times := ft.snapshot()
			if len(reqs) != tt.wantCalls {
				t.Fatalf("got %d requests, want %d", len(reqs), tt.wantCalls)
			}
			wantStart := now.Add(-retention)
			if !tt.since.IsZero() {
				wantStart = tt.since
			}
			for i, req := range reqs {
				if len(req.LookupAttributes) != 1 || req.LookupAttributes[0].AttributeKey != "ResourceName" || req.LookupAttributes[0].AttributeValue != keyARN {
					t.Errorf("request %d: got attributes %+v, want one ResourceName = %s", i, req.LookupAttributes, keyARN)
				}
				if req.MaxResults != 50 {
					t.Errorf("request %d: got MaxResults %d, want 50", i, req.MaxResults)
				}
				if got := time.Unix(int64(req.StartTime), 0).UTC(); !got.Equal(wantStart) {
					t.Errorf("request %d: got StartTime %v, want %v", i, got, wantStart)
				}
				if got := time.Unix(int64(req.EndTime), 0).UTC(); !got.Equal(now) {
					t.Errorf("request %d: got EndTime %v, want %v", i, got, now)
				}
				if i < len(tt.checkTokens) && req.NextToken != tt.checkTokens[i] {
					t.Errorf("request %d: got NextToken %q, want %q", i, req.NextToken, tt.checkTokens[i])
				}
			}
			// Retries go through the limiter too: no two requests closer than the 2/s spacing
			// allows, with a generous margin for scheduling slack (unlimited, they would come
			// 10 ms apart).
			for i := 1; i < len(times); i++ {
				if gap := times[i].Sub(times[i-1]); gap < requestInterval-200*time.Millisecond {
					t.Errorf("requests %d and %d: got %v apart, want at least about %v", i-1, i, gap, requestInterval)
				}
			}
		})
	}
}

// TestRateLimitShared runs several look-ups at once on one Finder and checks, loosely, that the
// server never sees more than two requests in any one-second window.
func TestRateLimitShared(t *testing.T) {
	t.Parallel()
	ft, client := newFakeTrail(t, func(n int, _ lookupRequest) reply {
		// Every look-up reads two pages: the first has a next token, the second ends it.
		if n%2 == 0 {
			return page(nil, "next")
		}
		return page(nil, "")
	})
	f := newTestFinder(client)

	const lookups = 3
	var wg sync.WaitGroup
	for range lookups {
		wg.Go(func() {
			if _, _, err := f.LastLoss(context.Background(), keyARN, time.Time{}, now); err != nil {
				t.Errorf("got error %v, want nil", err)
			}
		})
	}
	wg.Wait()

	_, times := ft.snapshot()
	if len(times) < lookups {
		t.Fatalf("got %d requests, want at least %d", len(times), lookups)
	}
	// Any three consecutive requests must span about a second (exactly 2 × 500 ms at the
	// limiter); 700 ms leaves room for scheduling noise, and unlimited they would come within a
	// few milliseconds.
	for i := 2; i < len(times); i++ {
		if span := times[i].Sub(times[i-2]); span < 700*time.Millisecond {
			t.Errorf("requests %d..%d: got 3 requests within %v, want them spread over about a second", i-2, i, span)
		}
	}
}

func TestLastLossContextCancelled(t *testing.T) {
	t.Parallel()
	ft, client := newFakeTrail(t, func(int, lookupRequest) reply { return throttle })
	f := New(client) // real backoff: the context ends long before the retries do
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()

	start := time.Now()
	_, found, err := f.LastLoss(ctx, keyARN, time.Time{}, now)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got error %v, want context.DeadlineExceeded", err)
	}
	if found {
		t.Error("got found true, want false")
	}
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("got LastLoss returning after %v, want it to stop with the context", elapsed)
	}
	if reqs, _ := ft.snapshot(); len(reqs) > 2 {
		t.Errorf("got %d requests, want at most 2 before the context ended", len(reqs))
	}
}

func TestLastLossWindow(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		since     time.Time
		wantStart time.Time
		wantCalls int
	}{
		{"zero since: 90 days", time.Time{}, now.Add(-retention), 1},
		{"since older than 90 days is clipped", now.Add(-200 * 24 * time.Hour), now.Add(-retention), 1},
		{"recent since", now.Add(-time.Hour), now.Add(-time.Hour), 1},
		{"since in the future: nothing to search", now.Add(time.Hour), time.Time{}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ft, client := newFakeTrail(t, func(int, lookupRequest) reply { return page(nil, "") })
			_, found, err := newTestFinder(client).LastLoss(context.Background(), keyARN, tt.since, now)
			if err != nil || found {
				t.Fatalf("got found %v, error %v, want false, nil", found, err)
			}
			reqs, _ := ft.snapshot()
			if len(reqs) != tt.wantCalls {
				t.Fatalf("got %d requests, want %d", len(reqs), tt.wantCalls)
			}
			if tt.wantCalls > 0 {
				if got := time.Unix(int64(reqs[0].StartTime), 0).UTC(); !got.Equal(tt.wantStart) {
					t.Errorf("got StartTime %v, want %v", got, tt.wantStart)
				}
			}
		})
	}
}

func TestLatestLossActors(t *testing.T) {
	t.Parallel()
	at := now.Add(-time.Hour)
	str := func(s string) *string { return &s }
	tests := []struct {
		name   string
		event  types.Event
		want   Finding
		wantOK bool
	}{
		{
			name: "AWS service caller",
			event: types.Event{EventName: str("ScheduleKeyDeletion"), EventId: str("e1"), EventTime: &at,
				CloudTrailEvent: str(`{"userIdentity":{"type":"AWSService","invokedBy":"kms.amazonaws.com"},"sourceIPAddress":"kms.amazonaws.com"}`)},
			want:   Finding{EventName: "ScheduleKeyDeletion", EventID: "e1", At: at, Actor: incident.Actor{Type: "AWSService", Principal: "kms.amazonaws.com", SourceIP: "kms.amazonaws.com"}},
			wantOK: true,
		},
		{
			name: "unreadable record: Username",
			event: types.Event{EventName: str("DisableKey"), EventId: str("e2"), EventTime: &at, Username: str("carol"),
				CloudTrailEvent: str(`{not json`)},
			want:   Finding{EventName: "DisableKey", EventID: "e2", At: at, Actor: incident.Actor{Principal: "carol"}},
			wantOK: true,
		},
		{
			name: "time from the record when the summary has none",
			event: types.Event{EventName: str("DisableKey"), EventId: str("e3"),
				CloudTrailEvent: str(`{"eventTime":"2026-03-12T08:00:00Z","userIdentity":{"type":"Root","principalId":"123456789012","arn":"arn:aws:iam::123456789012:root"}}`)},
			want:   Finding{EventName: "DisableKey", EventID: "e3", At: at, Actor: incident.Actor{Type: "Root", Principal: "123456789012", ARN: "arn:aws:iam::123456789012:root"}},
			wantOK: true,
		},
		{
			name:  "another service's event of the same name",
			event: types.Event{EventName: str("DisableKey"), EventSource: str("example.amazonaws.com"), EventTime: &at},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := latestChange([]types.Event{tt.event})
			if ok != tt.wantOK {
				t.Fatalf("got ok %v, want %v", ok, tt.wantOK)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("finding mismatch (-want +got):\n%s", diff)
			}
		})
	}
}
