package approval

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/slack-go/slack"
)

const (
	headerSignature = "X-Slack-Signature"
	headerTimestamp = "X-Slack-Request-Timestamp"

	// signatureVersion is the only scheme Slack signs with; the header value is "v0=<hex>".
	signatureVersion = "v0"

	// MaxClockSkew is how far the request timestamp may be from local time, in either direction.
	// Slack's guidance is five minutes, to stop an old request being replayed.
	MaxClockSkew = 5 * time.Minute
)

// Verify checks Slack's v0 signature over the raw request body, which the caller must already have
// base64-decoded if the Function URL flagged it, and must not have parsed. It is the check slack-go's
// NewSecretsVerifier makes (HMAC-SHA256 of "v0:<timestamp>:<body>" keyed with the signing secret,
// compared in constant time, timestamp within five minutes), written out so that the clock is `now`
// rather than time.Now and so that header names are matched case-insensitively even in a map built
// from a Lambda event's lower-case keys without canonicalisation.
//
// A request that fails the check returns an error wrapping ErrBadSignature and one of slack-go's
// causes (slack.ErrMissingHeaders, slack.ErrExpiredTimestamp, slack.ErrInvalidSignature). An empty
// secret is a deployment fault, not a bad request: it wraps slack.ErrInvalidConfiguration and not
// ErrBadSignature.
func Verify(header http.Header, body []byte, secret string, now time.Time) error {
	if secret == "" {
		return fmt.Errorf("verify slack request: empty signing secret: %w", slack.ErrInvalidConfiguration)
	}
	sig := headerValue(header, headerSignature)
	ts := headerValue(header, headerTimestamp)
	if sig == "" || ts == "" {
		return fmt.Errorf("%w: %w (%s and %s are required)", ErrBadSignature, slack.ErrMissingHeaders, headerSignature, headerTimestamp)
	}

	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: %w: timestamp %q is not Unix seconds", ErrBadSignature, slack.ErrInvalidSignature, ts)
	}
	if skew := now.Sub(time.Unix(sec, 0)).Abs(); skew > MaxClockSkew {
		return fmt.Errorf("%w: %w: request timestamp is %s from local time", ErrBadSignature, slack.ErrExpiredTimestamp, skew.Round(time.Second))
	}

	hexSig, ok := strings.CutPrefix(sig, signatureVersion+"=")
	if !ok {
		return fmt.Errorf("%w: %w: signature is not %s", ErrBadSignature, slack.ErrInvalidSignature, signatureVersion)
	}
	got, err := hex.DecodeString(hexSig)
	if err != nil || len(got) != sha256.Size {
		return fmt.Errorf("%w: %w: signature is not a hex SHA-256", ErrBadSignature, slack.ErrInvalidSignature)
	}
	if !hmac.Equal(got, mac(secret, ts, body)) {
		return fmt.Errorf("%w: %w", ErrBadSignature, slack.ErrInvalidSignature)
	}
	return nil
}

// mac is HMAC-SHA256 over Slack's basestring "v0:<timestamp>:<body>".
func mac(secret, ts string, body []byte) []byte {
	h := hmac.New(sha256.New, []byte(secret))
	h.Write([]byte(signatureVersion + ":" + ts + ":"))
	h.Write(body)
	return h.Sum(nil)
}

// headerValue returns the first value of the named header. http.Header.Get only finds canonical
// keys; a header map copied from a Function URL event has lower-case keys, so fall back to a
// case-insensitive scan.
func headerValue(h http.Header, name string) string {
	if v := h.Get(name); v != "" {
		return v
	}
	for k, vs := range h {
		if strings.EqualFold(k, name) && len(vs) > 0 && vs[0] != "" {
			return vs[0]
		}
	}
	return ""
}
