package incident

import (
	"crypto/rand"
	"encoding/hex"
	"time"
)

// NewID returns an incident ID such as "KW-20261128-1f3a9c": the UTC date of t, for people
// reading a channel, and 24 random bits. It stays short enough for a Slack button's value with
// room for the action and version beside it. Two incidents opened the same day collide with a
// probability of about n²/2²⁵; the store creates incidents with attribute_not_exists and draws a
// new ID when that ever happens.
func NewID(t time.Time) string {
	var b [3]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (it crashes the program instead).
	return "KW-" + t.UTC().Format("20060102") + "-" + hex.EncodeToString(b[:])
}
