// Package announce keeps an incident's Slack message in step with the stored incident: it is the
// triage.Announcer (and what SlackActionFunction, RemediateFunction and the reconciler call after
// each change), built on notify's Slack calls and the incident store's Slack bookkeeping.
//
// The store is the record and is always written before anything here runs. A Slack failure is
// returned for the caller to log; nothing is lost, because the next Announce re-renders the whole
// message from the incident and posts the thread replies not yet posted. The message reference
// and the count of posted replies are kept with Store.SetSlack, which does not change the
// incident's version: refreshing the message must not make its own buttons stale.
package announce

import (
	"context"
	"fmt"
	"time"

	"github.com/keywarden/keywarden/internal/incident"
)

// PostClaimTTL is how long the right to post an incident's first message is held. Two
// invocations that change a new incident at once (a delivery and an RDS event) would otherwise
// both see no message and post two; the one that loses the claim leaves it to the winner, and if
// the winner died without posting, the reconciler posts once the claim has expired.
const PostClaimTTL = 5 * time.Minute

// Store is the part of the incident store the Announcer uses; *incident.Store fits.
type Store interface {
	Get(ctx context.Context, id string) (incident.Incident, error)
	Claim(ctx context.Context, name string, ttl time.Duration) (bool, error)
	SetSlack(ctx context.Context, id string, ref incident.SlackRef, posted int) error
}

// Syncer posts or updates an incident's message and replies its timeline from index from on,
// and posts other replies in its thread; *notify.Notifier fits.
type Syncer interface {
	Sync(ctx context.Context, inc incident.Incident, from int, now time.Time) (incident.SlackRef, int, error)
	Reply(ctx context.Context, ref incident.SlackRef, text string) error
}

// Announcer posts and refreshes incident messages.
type Announcer struct {
	store    Store
	notifier Syncer
	now      func() time.Time
}

// New returns an Announcer over store and notifier.
func New(store Store, notifier Syncer) *Announcer {
	return &Announcer{store: store, notifier: notifier, now: time.Now}
}

// WithClock returns a copy that renders countdowns at now(), for tests.
func (a *Announcer) WithClock(now func() time.Time) *Announcer {
	c := *a
	c.now = now
	return &c
}

// Announce makes Slack show inc, which the caller has just stored: it posts the message if the
// incident has none yet (one poster per incident, see PostClaimTTL), otherwise updates it in
// place, then replies in the thread every timeline entry not yet posted, and records the message
// and the new count. Errors are Slack's or the store's, wrapped with the incident ID.
func (a *Announcer) Announce(ctx context.Context, inc incident.Incident) error {
	if inc.Slack == nil {
		won, err := a.store.Claim(ctx, "slack-post#"+inc.ID, PostClaimTTL)
		if err != nil {
			return fmt.Errorf("announce incident %s: %w", inc.ID, err)
		}
		if !won {
			return nil // another invocation is posting it
		}
		// The caller's copy may predate a message posted by an invocation whose claim expired
		// since: read the latest before posting a second one.
		latest, err := a.store.Get(ctx, inc.ID)
		if err != nil {
			return fmt.Errorf("announce incident %s: %w", inc.ID, err)
		}
		inc = latest
	}

	from := FromIndex(inc)
	ref, posted, err := a.notifier.Sync(ctx, inc, from, a.now())
	if ref.TS != "" && (inc.Slack == nil || *inc.Slack != ref || posted > 0) {
		// Record even a partly failed sync: the message exists, and what was replied is done.
		if serr := a.store.SetSlack(ctx, inc.ID, ref, Posted(inc, from+posted)); serr != nil && err == nil {
			err = fmt.Errorf("record slack message of incident %s: %w", inc.ID, serr)
		}
	}
	if err != nil {
		return fmt.Errorf("announce: %w", err)
	}
	return nil
}

// Reply posts text in the incident's thread — the reconciler's reminders — posting the incident's
// message first when it has none yet.
func (a *Announcer) Reply(ctx context.Context, inc incident.Incident, text string) error {
	if inc.Slack == nil {
		if err := a.Announce(ctx, inc); err != nil {
			return err
		}
		latest, err := a.store.Get(ctx, inc.ID)
		if err != nil {
			return fmt.Errorf("reply to incident %s: %w", inc.ID, err)
		}
		if latest.Slack == nil {
			return fmt.Errorf("reply to incident %s: its message is not posted yet", inc.ID)
		}
		inc = latest
	}
	if err := a.notifier.Reply(ctx, *inc.Slack, text); err != nil {
		return fmt.Errorf("reply to incident %s: %w", inc.ID, err)
	}
	return nil
}

// The posted count is absolute: it counts the real entries (not the elision marker) over the
// whole life of the timeline, so it stays true when the store elides old entries to keep the
// incident within one DynamoDB item. The store keeps a head, then one KindElided marker standing
// for TimelineElided dropped entries, then the tail; the number of real entries, len(Timeline)
// minus the marker plus TimelineElided, only grows. A real entry after the marker at index i is
// entry i-1+TimelineElided of the whole timeline.

// FromIndex is the index in inc.Timeline of the first entry not yet posted, given the absolute
// count inc.SlackPosted. When some entries were elided before they were posted, it starts at the
// marker, which says so in the thread.
func FromIndex(inc incident.Incident) int {
	p := max(inc.SlackPosted, 0)
	m := marker(inc)
	var from int
	switch {
	case m < 0 || p <= m:
		from = p
	case p < m+inc.TimelineElided:
		from = m
	default:
		from = p + 1 - inc.TimelineElided
	}
	return min(from, len(inc.Timeline))
}

// Posted converts i, an index into inc.Timeline before which everything is posted, to the
// absolute count SetSlack stores.
func Posted(inc incident.Incident, i int) int {
	if m := marker(inc); m >= 0 && i > m {
		return i - 1 + inc.TimelineElided
	}
	return i
}

// marker is the index of the KindElided entry, or -1 when nothing was elided.
func marker(inc incident.Incident) int {
	if inc.TimelineElided == 0 {
		return -1
	}
	for i, e := range inc.Timeline {
		if e.Kind == incident.KindElided {
			return i
		}
	}
	return -1
}
