// Package announce keeps an incident's Slack message in step with the stored incident: it is the
// triage.Announcer (and what SlackActionFunction, RemediateFunction and the reconciler call after
// each change), built on notify's Slack calls and the incident store's Slack bookkeeping.
//
// The store is the record and is always written before anything here runs. A Slack failure is
// returned for the caller to log; nothing is lost, because the next Announce re-renders the whole
// message from the incident and posts the thread replies not yet posted. The message reference
// and the Seq of the last timeline entry replied in its thread are kept with Store.SetSlack,
// which does not change the incident's version: refreshing the message must not make its own
// buttons stale. The store never trims a timeline, so "not yet posted" is simply "Seq above
// SlackPosted".
package announce

import (
	"context"
	"fmt"
	"time"

	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/slackui"
)

// PostClaimTTL is how long the right to post an incident's first message is held. Two
// invocations that change a new incident at once (a delivery and an RDS event) would otherwise
// both see no message and post two; the one that loses the claim leaves it to the winner, and if
// the winner died without posting, the reconciler posts once the claim has expired.
const PostClaimTTL = 5 * time.Minute

// Store is the part of the incident store the Announcer uses; *dynamostore.Store fits.
type Store interface {
	Get(ctx context.Context, id string) (incident.Incident, error)
	Claim(ctx context.Context, name string, ttl time.Duration) (bool, error)
	SetSlack(ctx context.Context, id string, ref incident.SlackRef, postedSeq int64) error
}

// Syncer posts or updates an incident's message and replies in its thread the timeline entries
// with a Seq above inc.SlackPosted, returning the last Seq it handled; it also posts other
// replies in the thread. *notify.Notifier fits.
type Syncer interface {
	Sync(ctx context.Context, inc incident.Incident, now time.Time) (incident.SlackRef, int64, error)
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
// place, then replies in the thread every timeline entry not yet posted (Seq above
// inc.SlackPosted, in Seq order), and records the message and the last Seq posted. Errors are
// Slack's or the store's, wrapped with the incident ID.
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

	ref, posted, err := a.notifier.Sync(ctx, inc, a.now())
	if ref.TS != "" && (inc.Slack == nil || *inc.Slack != ref || posted > inc.SlackPosted) {
		// Record even a partly failed sync: the message exists, and what was replied is done.
		if serr := a.store.SetSlack(ctx, inc.ID, ref, posted); serr != nil && err == nil {
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

// ReplyRefusal posts the one thread reply for a refused click on incident id: e is the refusal
// (incident.NewRefusal) that the store's RecordRefusal reported as the first of its window, so
// a burst of refused clicks by one user is one reply. Refusals have no Seq and never reach the
// thread through Announce. An incident without a message yet gets no reply: the refusal stays
// on its timeline.
func (a *Announcer) ReplyRefusal(ctx context.Context, id string, e incident.Entry) error {
	inc, err := a.store.Get(ctx, id)
	if err != nil {
		return fmt.Errorf("reply to a refused click on incident %s: %w", id, err)
	}
	if inc.Slack == nil {
		return fmt.Errorf("reply to a refused click on incident %s: its message is not posted yet", id)
	}
	if err := a.notifier.Reply(ctx, *inc.Slack, slackui.ThreadText(e)); err != nil {
		return fmt.Errorf("reply to a refused click on incident %s: %w", id, err)
	}
	return nil
}
