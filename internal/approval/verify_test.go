package approval

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/slack-go/slack"
)

const testSecret = "8f742231b10e8888abcd99yyyzzz85a5"

var testNow = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func TestVerify(t *testing.T) {
	body := formBody(t, readFixture(t, "block_actions.json"))
	signed := Sign(testSecret, testNow, body)

	lower := func(h http.Header) http.Header {
		// Built as a Function URL event's headers are: lower-case keys, no canonicalisation.
		return http.Header{
			"x-slack-signature":         {h.Get(headerSignature)},
			"x-slack-request-timestamp": {h.Get(headerTimestamp)},
		}
	}
	without := func(h http.Header, name string) http.Header {
		h = h.Clone()
		h.Del(name)
		return h
	}
	withSig := func(h http.Header, sig string) http.Header {
		h = h.Clone()
		h.Set(headerSignature, sig)
		return h
	}

	tests := []struct {
		name      string
		header    http.Header
		body      []byte
		secret    string
		wantErr   error // nil, ErrBadSignature, or slack.ErrInvalidConfiguration
		wantCause error
	}{
		{name: "valid", header: signed, body: body, secret: testSecret},
		{name: "valid 5 minutes old", header: Sign(testSecret, testNow.Add(-5*time.Minute), body), body: body, secret: testSecret},
		{name: "valid 4 minutes ahead", header: Sign(testSecret, testNow.Add(4*time.Minute), body), body: body, secret: testSecret},
		{name: "lower-case header names", header: lower(signed), body: body, secret: testSecret},
		{name: "wrong secret", header: Sign("not-the-secret", testNow, body), body: body, secret: testSecret,
			wantErr: ErrBadSignature, wantCause: slack.ErrInvalidSignature},
		{name: "stale 6 minutes", header: Sign(testSecret, testNow.Add(-6*time.Minute), body), body: body, secret: testSecret,
			wantErr: ErrBadSignature, wantCause: slack.ErrExpiredTimestamp},
		{name: "future 6 minutes", header: Sign(testSecret, testNow.Add(6*time.Minute), body), body: body, secret: testSecret,
			wantErr: ErrBadSignature, wantCause: slack.ErrExpiredTimestamp},
		{name: "missing signature header", header: without(signed, headerSignature), body: body, secret: testSecret,
			wantErr: ErrBadSignature, wantCause: slack.ErrMissingHeaders},
		{name: "missing timestamp header", header: without(signed, headerTimestamp), body: body, secret: testSecret,
			wantErr: ErrBadSignature, wantCause: slack.ErrMissingHeaders},
		{name: "no headers", header: http.Header{}, body: body, secret: testSecret,
			wantErr: ErrBadSignature, wantCause: slack.ErrMissingHeaders},
		{name: "signature without v0= prefix", header: withSig(signed, strings.TrimPrefix(signed.Get(headerSignature), "v0=")), body: body, secret: testSecret,
			wantErr: ErrBadSignature, wantCause: slack.ErrInvalidSignature},
		{name: "signature v1=", header: withSig(signed, "v1="+strings.TrimPrefix(signed.Get(headerSignature), "v0=")), body: body, secret: testSecret,
			wantErr: ErrBadSignature, wantCause: slack.ErrInvalidSignature},
		{name: "signature not hex", header: withSig(signed, "v0=zz"), body: body, secret: testSecret,
			wantErr: ErrBadSignature, wantCause: slack.ErrInvalidSignature},
		{name: "timestamp not a number", header: func() http.Header {
			h := signed.Clone()
			h.Set(headerTimestamp, "yesterday")
			return h
		}(), body: body, secret: testSecret, wantErr: ErrBadSignature, wantCause: slack.ErrInvalidSignature},
		{name: "timestamp replaced", header: func() http.Header {
			h := signed.Clone()
			h.Set(headerTimestamp, strconv.FormatInt(testNow.Unix()+1, 10))
			return h
		}(), body: body, secret: testSecret, wantErr: ErrBadSignature, wantCause: slack.ErrInvalidSignature},
		{name: "tampered body", header: signed, body: append([]byte(nil), strings.Replace(string(body), "remediate", "intentional", 1)...), secret: testSecret,
			wantErr: ErrBadSignature, wantCause: slack.ErrInvalidSignature},
		{name: "empty body signed for another", header: signed, body: nil, secret: testSecret,
			wantErr: ErrBadSignature, wantCause: slack.ErrInvalidSignature},
		{name: "empty secret", header: Sign("", testNow, body), body: body, secret: "",
			wantErr: slack.ErrInvalidConfiguration},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Verify(tt.header, tt.body, tt.secret, testNow)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Verify: got %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Verify: got %v, want %v", err, tt.wantErr)
			}
			if tt.wantCause != nil && !errors.Is(err, tt.wantCause) {
				t.Errorf("Verify cause: got %v, want %v", err, tt.wantCause)
			}
			if tt.wantErr != ErrBadSignature && errors.Is(err, ErrBadSignature) {
				t.Errorf("Verify: got %v, want it not to be ErrBadSignature", err)
			}
		})
	}
}

// TestVerifyAgreesWithSlackGo checks Verify against slack-go's own verifier, which only knows
// time.Now, so these requests are signed with the real clock.
func TestVerifyAgreesWithSlackGo(t *testing.T) {
	now := time.Now()
	body := formBody(t, readFixture(t, "block_actions.json"))
	tests := []struct {
		name   string
		header http.Header
		body   []byte
		secret string
	}{
		{"valid", Sign(testSecret, now, body), body, testSecret},
		{"valid empty body", Sign(testSecret, now, nil), nil, testSecret},
		{"valid 4 minutes old", Sign(testSecret, now.Add(-4*time.Minute), body), body, testSecret},
		{"wrong secret", Sign("other", now, body), body, testSecret},
		{"tampered body", Sign(testSecret, now, body), append(append([]byte(nil), body...), '&'), testSecret},
		{"stale", Sign(testSecret, now.Add(-6*time.Minute), body), body, testSecret},
		{"future", Sign(testSecret, now.Add(6*time.Minute), body), body, testSecret},
		{"missing headers", http.Header{}, body, testSecret},
		{"empty secret", Sign("", now, body), body, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ours := Verify(tt.header, tt.body, tt.secret, now)
			theirs := slackGoVerify(tt.header, tt.body, tt.secret)
			if (ours == nil) != (theirs == nil) {
				t.Fatalf("accept: got %v (Verify), want %v (slack-go)", ours, theirs)
			}
			if theirs != nil && !errors.Is(ours, theirs) {
				t.Errorf("cause: got %v, want %v", ours, theirs)
			}
		})
	}
}

func slackGoVerify(h http.Header, body []byte, secret string) error {
	sv, err := slack.NewSecretsVerifier(h, secret)
	if err != nil {
		return err
	}
	if _, err := sv.Write(body); err != nil {
		return err
	}
	return sv.Ensure()
}

func TestSign(t *testing.T) {
	h := Sign(testSecret, testNow, []byte("payload=%7B%7D"))
	if got, want := h.Get("x-slack-request-timestamp"), strconv.FormatInt(testNow.Unix(), 10); got != want {
		t.Errorf("timestamp: got %q, want %q", got, want)
	}
	sig := h.Get("X-Slack-Signature")
	if !strings.HasPrefix(sig, "v0=") || len(sig) != len("v0=")+64 {
		t.Errorf("signature: got %q, want v0= and 64 hex digits", sig)
	}
}
