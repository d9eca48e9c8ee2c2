// Package trail asks CloudTrail's event history who made a KMS key unusable, and when, for the
// incidents whose own event did not say: those found by the reconciler's backstop, opened from an
// RDS event because the CloudTrail event never arrived, or opened from KMS's own deletion event.
//
// Event history (LookupEvents) keeps 90 days of management events per Region, filters on a single
// lookup attribute, returns at most 50 events a page, newest first, and allows two requests per
// second per account and Region before it throttles. So the Finder asks for ResourceName = key
// ARN, which also returns the key's Decrypt and GenerateDataKey calls, filters the key-loss calls
// itself, stops at the first page that has one, reads a bounded number of pages, and spaces every
// request it sends, retries included, at least half a second apart.
//
// Boundaries: it owns CloudTrail's event history; it must not import Slack, the store or any AWS
// service but CloudTrail.
package trail

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/cloudtrail"
	"github.com/aws/aws-sdk-go-v2/service/cloudtrail/types"
	"github.com/aws/smithy-go"

	"github.com/keywarden/keywarden/internal/incident"
)

// LookupAPI is the one CloudTrail call the Finder makes; *cloudtrail.Client satisfies it.
type LookupAPI interface {
	LookupEvents(ctx context.Context, in *cloudtrail.LookupEventsInput, optFns ...func(*cloudtrail.Options)) (*cloudtrail.LookupEventsOutput, error)
}

// Finding is the key-loss call found in event history.
type Finding struct {
	// EventName is DisableKey, ScheduleKeyDeletion, DeleteImportedKeyMaterial or
	// DisconnectCustomKeyStore.
	EventName string
	// EventID is CloudTrail's event ID, for a console link or a later look-up.
	EventID string
	// At is when the call was made, UTC.
	At    time.Time
	Actor incident.Actor
}

// ErrPageLimit is returned, with found=false, when the Finder read its maximum number of pages
// without finding a key-loss call while event history had more. The key is busy (RDS decrypts
// with it) and the call, if any, is older than what was read; callers treat it as "not found in
// the most recent events", not as a failure worth retrying at once.
var ErrPageLimit = errors.New("event history page limit reached")

// lossEvents are the calls that make a key unusable. DisconnectCustomKeyStore is listed for
// completeness, but its record names the key store, not the key, so a ResourceName = key ARN
// query finds it only if CloudTrail ever starts listing the store's keys as resources.
var lossEvents = map[string]bool{
	"DisableKey":                true,
	"ScheduleKeyDeletion":       true,
	"DeleteImportedKeyMaterial": true,
	"DisconnectCustomKeyStore":  true,
}

// restoreEvents are the calls that make a key usable again: a loss older than the newest of
// them was undone and says nothing about the key's current loss. (ConnectCustomKeyStore, like
// DisconnectCustomKeyStore, names the store, not the key.) CancelKeyDeletion is deliberately
// not one: it leaves the key Disabled (aws-facts §4.5), so the key has been unusable since the
// ScheduleKeyDeletion (or DisableKey) before it, which is the loss to report.
var restoreEvents = map[string]bool{
	"EnableKey":             true,
	"ImportKeyMaterial":     true,
	"ConnectCustomKeyStore": true,
}

const (
	// retention is how far back event history goes.
	retention = 90 * 24 * time.Hour
	// pageSize is LookupEvents' maximum and default.
	pageSize = 50
	// requestInterval keeps the Finder at two requests per second, LookupEvents' documented
	// limit per account and Region.
	requestInterval = 500 * time.Millisecond
)

// Finder looks up key-loss calls in CloudTrail event history. One Finder should serve a whole
// process: its rate limiter is shared by every call on it, including concurrent ones.
type Finder struct {
	api     LookupAPI
	limiter *limiter
	// maxPages bounds one LastLoss call to maxPages requests plus throttling retries.
	maxPages int
	// maxRetries is how many times one throttled request is retried.
	maxRetries int
	// backoff is the pause before retry n (0-based) of a throttled request, on top of the
	// limiter's spacing.
	backoff func(n int) time.Duration
}

// New returns a Finder that calls api at most twice a second.
func New(api LookupAPI) *Finder {
	return &Finder{
		api:        api,
		limiter:    &limiter{interval: requestInterval},
		maxPages:   10,
		maxRetries: 4,
		backoff:    jitteredBackoff,
	}
}

// LastLoss finds the most recent successful key-loss call on keyARN in event history, looking
// back at most 90 days from now and not before since when since is non-zero. found is false when
// history holds none, or when a successful restore call (EnableKey, ImportKeyMaterial,
// ConnectCustomKeyStore) is newer than the newest loss: that loss was undone, and taking its
// time would start the windows up to 90 days too early. The error is then nil, or wraps
// ErrPageLimit when the search was cut short. Failed calls (records with an errorCode) are
// skipped: they changed nothing.
func (f *Finder) LastLoss(ctx context.Context, keyARN string, since, now time.Time) (Finding, bool, error) {
	if keyARN == "" {
		return Finding{}, false, errors.New("look up key-loss calls: empty key ARN")
	}
	start := now.Add(-retention)
	if !since.IsZero() && since.After(start) {
		start = since
	}
	if start.After(now) {
		return Finding{}, false, nil
	}
	in := &cloudtrail.LookupEventsInput{
		LookupAttributes: []types.LookupAttribute{{
			AttributeKey:   types.LookupAttributeKeyResourceName,
			AttributeValue: aws.String(keyARN),
		}},
		StartTime:  aws.Time(start.UTC()),
		EndTime:    aws.Time(now.UTC()),
		MaxResults: aws.Int32(pageSize),
	}
	for page := 1; page <= f.maxPages; page++ {
		out, err := f.lookup(ctx, in)
		if err != nil {
			return Finding{}, false, fmt.Errorf("look up CloudTrail events for %s (page %d): %w", keyARN, page, err)
		}
		if fd, ok := latestChange(out.Events); ok {
			// Pages come newest first, so nothing on a later page is newer than this.
			if restoreEvents[fd.EventName] {
				return Finding{}, false, nil
			}
			return fd, true, nil
		}
		if aws.ToString(out.NextToken) == "" {
			return Finding{}, false, nil
		}
		in.NextToken = out.NextToken
	}
	return Finding{}, false, fmt.Errorf("look up CloudTrail events for %s: no key-loss call in the %d most recent pages: %w", keyARN, f.maxPages, ErrPageLimit)
}

// lookup makes one LookupEvents request, retrying it while CloudTrail throttles. The retries
// are done here rather than by the SDK's retryer, which is switched off for this call, so that
// every attempt waits its turn at the limiter; the SDK's retryer would resend from inside the
// client, past it. Errors other than throttling are returned as they are.
func (f *Finder) lookup(ctx context.Context, in *cloudtrail.LookupEventsInput) (*cloudtrail.LookupEventsOutput, error) {
	for n := 0; ; n++ {
		if err := f.limiter.wait(ctx); err != nil {
			return nil, err
		}
		out, err := f.api.LookupEvents(ctx, in, withoutSDKRetries)
		if err == nil {
			return out, nil
		}
		if !throttled(err) || n >= f.maxRetries {
			if n > 0 {
				return nil, fmt.Errorf("after %d attempts: %w", n+1, err)
			}
			return nil, err
		}
		if err := sleep(ctx, f.backoff(n)); err != nil {
			return nil, err
		}
	}
}

func withoutSDKRetries(o *cloudtrail.Options) {
	o.Retryer = aws.NopRetryer{}
}

// throttled reports whether err is CloudTrail saying "slow down": a throttling error code, an
// HTTP 429, or the "Rate exceeded" message LookupEvents sends with its ThrottlingException.
func throttled(err error) bool {
	if retry.IsErrorThrottles(retry.DefaultThrottles).IsErrorThrottle(err) == aws.TrueTernary {
		return true
	}
	var apiErr smithy.APIError
	return errors.As(err, &apiErr) && strings.Contains(apiErr.ErrorMessage(), "Rate exceeded")
}

// jitteredBackoff waits 0.5 s, 1 s, 2 s, 4 s, … (at most 8 s) before successive retries, each
// scaled by a random factor in [0.5, 1) so that concurrent Finders do not retry in step.
func jitteredBackoff(n int) time.Duration {
	d := min(500*time.Millisecond<<min(n, 4), 8*time.Second)
	return d/2 + rand.N(d/2)
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// limiter spaces requests at least interval apart, in the order callers arrive. A caller whose
// context ends while waiting gives up its turn without handing it back, which only errs on the
// slow side.
type limiter struct {
	interval time.Duration

	mu   sync.Mutex
	next time.Time
}

func (l *limiter) wait(ctx context.Context) error {
	l.mu.Lock()
	now := time.Now()
	at := l.next
	if at.Before(now) {
		at = now
	}
	l.next = at.Add(l.interval)
	l.mu.Unlock()
	return sleep(ctx, at.Sub(now))
}

// latestChange returns the newest successful key-loss or restore call in events (the caller
// tells them apart by EventName); on a tie the loss wins, the cautious reading. Event history
// lists events newest first, but the page is scanned whole rather than trusting that.
func latestChange(events []types.Event) (Finding, bool) {
	var best Finding
	found := false
	for _, e := range events {
		name := aws.ToString(e.EventName)
		if !lossEvents[name] && !restoreEvents[name] {
			continue
		}
		if src := aws.ToString(e.EventSource); src != "" && src != "kms.amazonaws.com" {
			continue
		}
		rec, ok := decodeRecord(aws.ToString(e.CloudTrailEvent))
		if ok && rec.ErrorCode != "" {
			continue
		}
		fd := Finding{EventName: name, EventID: aws.ToString(e.EventId)}
		switch {
		case e.EventTime != nil:
			fd.At = e.EventTime.UTC()
		case ok:
			if t, err := time.Parse(time.RFC3339, rec.EventTime); err == nil {
				fd.At = t.UTC()
			}
		}
		if fd.EventID == "" && ok {
			fd.EventID = rec.EventID
		}
		if ok {
			fd.Actor = rec.actor()
		}
		if fd.Actor.ARN == "" && fd.Actor.Principal == "" {
			fd.Actor.Principal = aws.ToString(e.Username)
		}
		if !found || fd.At.After(best.At) || (fd.At.Equal(best.At) && lossEvents[name] && restoreEvents[best.EventName]) {
			best, found = fd, true
		}
	}
	return best, found
}

// record is the part of a CloudTrail record (LookupEvents' CloudTrailEvent string) the Finder
// reads.
type record struct {
	EventID      string `json:"eventID"`
	EventTime    string `json:"eventTime"`
	ErrorCode    string `json:"errorCode"`
	SourceIP     string `json:"sourceIPAddress"`
	UserAgent    string `json:"userAgent"`
	UserIdentity struct {
		Type        string `json:"type"`
		PrincipalID string `json:"principalId"`
		ARN         string `json:"arn"`
		AccountID   string `json:"accountId"`
		InvokedBy   string `json:"invokedBy"`
	} `json:"userIdentity"`
}

// decodeRecord reads a CloudTrail record. A record that cannot be read is not a reason to drop
// the event: the caller still has the event's name, time and user name.
func decodeRecord(s string) (record, bool) {
	var r record
	if s == "" || json.Unmarshal([]byte(s), &r) != nil {
		return record{}, false
	}
	return r, true
}

func (r record) actor() incident.Actor {
	a := incident.Actor{
		ARN:       r.UserIdentity.ARN,
		Principal: r.UserIdentity.PrincipalID,
		Type:      r.UserIdentity.Type,
		AccountID: r.UserIdentity.AccountID,
		SourceIP:  r.SourceIP,
		UserAgent: r.UserAgent,
	}
	if a.Principal == "" {
		// An AWS service acting on its own (type AWSService) has no principal ID, only the
		// service that made the call.
		a.Principal = r.UserIdentity.InvokedBy
	}
	return a
}
