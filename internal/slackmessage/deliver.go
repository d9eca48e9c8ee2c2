package slackmessage

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/page"
)

// Store is the part of the incident store the Announcer uses; *dynamostore.Store fits.
type Store interface {
	Get(ctx context.Context, id string) (incident.Incident, error)
	Claim(ctx context.Context, name string, ttl time.Duration) (bool, error)
	Release(ctx context.Context, name string) error
	SetSlack(ctx context.Context, id string, ref incident.SlackRef, postedSeq int64) error
	RecordSlackDelivery(ctx context.Context, id string, shown int64, failure string) error
}

// Slack is the Slack side; *Client fits.
type Slack interface {
	Find(ctx context.Context, id string) (incident.SlackRef, bool, error)
	Post(ctx context.Context, msg Message) (Posted, error)
	Update(ctx context.Context, ref incident.SlackRef, msg Message) (Posted, error)
	ReplyEntry(ctx context.Context, ref incident.SlackRef, id, entryID, text string) error
	Reply(ctx context.Context, ref incident.SlackRef, text string) error
}

// Pager publishes an incident's summary to the SNS topic; *page.Pager fits.
type Pager interface {
	Enabled() bool
	Page(ctx context.Context, inc incident.Incident, why page.Why, detail string, now time.Time) (string, error)
}

// Metrics counts what alarms watch; *page.Metrics fits.
type Metrics interface {
	Count(name, id, reason string) error
}

const (
	// GiveUpAfter is how long a new incident may wait for its first Slack message before it
	// counts as undeliverable (alarm, SNS) even though Slack never refused it for good: a
	// Slack outage or a rate limit that long means nobody has heard of the incident.
	GiveUpAfter = 10 * time.Minute
	// maxRounds bounds how often one call delivers again what arrived while it delivered.
	maxRounds = 10
	// leaseMargin is added to the caller's time left to make the lease's TTL: the lease must
	// outlive the invocation holding it (a crashed holder's lease then lapses by itself).
	leaseMargin = 10 * time.Second
	// maxLease bounds the lease of a caller with no deadline.
	maxLease = 2 * time.Minute
)

// LeaseClaim names the claim that serialises deliveries of incident id.
func LeaseClaim(id string) string { return "slack-deliver#" + id }

// PageClaim names the claim that pages incident id once for why.
func PageClaim(id string, why page.Why) string { return "page#" + string(why) + "#" + id }

// Announcer delivers incidents to Slack.
type Announcer struct {
	store   Store
	slack   Slack
	pager   Pager
	metrics Metrics
	now     func() time.Time
}

// New returns an Announcer over store and slack. pager and metrics may be nil (no SNS topic;
// no metrics, as in unit tests).
func New(store Store, slack Slack, pager Pager, metrics Metrics) *Announcer {
	return &Announcer{store: store, slack: slack, pager: pager, metrics: metrics, now: time.Now}
}

// WithClock returns a copy that renders countdowns at now(), for tests and the demo.
func (a *Announcer) WithClock(now func() time.Time) *Announcer {
	c := *a
	c.now = now
	return &c
}

// Announce delivers incident inc.ID's outbox, which the caller has just stored: pages it first
// when it is critical and was not paged yet, then posts the message if it has none (or finds
// it), otherwise updates it in place, and replies in the thread every timeline entry not yet
// replied, in Seq order, recording each. inc is only read for its ID and criticality: the
// delivery reads the incident again under the lease. Errors are Slack's (*PendingError:
// left pending, retried; *UndeliverableError: recorded, alarmed, paged) or the store's,
// wrapped with the incident ID.
func (a *Announcer) Announce(ctx context.Context, inc incident.Incident) error {
	var errs []error
	// The one severity rule (incident.SeverityAt): a cluster with no window, the key deleted,
	// or under a day left all page, not only the first.
	if inc.SeverityAt(a.now()) == incident.SeverityCritical {
		if err := a.page(ctx, inc, page.WhyCritical, "critical on open"); err != nil {
			errs = append(errs, err)
		}
	}
	for round := 0; round < maxRounds; round++ {
		won, err := a.store.Claim(ctx, LeaseClaim(inc.ID), a.leaseTTL(ctx))
		if err != nil {
			return errors.Join(append(errs, fmt.Errorf("announce incident %s: take delivery lease: %w", inc.ID, err))...)
		}
		if !won {
			// Another invocation is delivering: it reads the incident again when it is done,
			// and so delivers what the caller stored before this call.
			return errors.Join(errs...)
		}
		derr := a.deliver(ctx, inc.ID)
		if rerr := a.store.Release(ctx, LeaseClaim(inc.ID)); rerr != nil {
			errs = append(errs, fmt.Errorf("announce incident %s: release delivery lease (it lapses by itself): %w", inc.ID, rerr))
		}
		if derr != nil {
			return errors.Join(append(errs, fmt.Errorf("announce: %w", derr))...)
		}
		latest, err := a.store.Get(ctx, inc.ID)
		if err != nil {
			return errors.Join(append(errs, fmt.Errorf("announce incident %s: %w", inc.ID, err))...)
		}
		if latest.SlackDelivery.Pending == 0 {
			break
		}
	}
	return errors.Join(errs...)
}

// leaseTTL outlives the caller's invocation.
func (a *Announcer) leaseTTL(ctx context.Context) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		return min(max(time.Until(dl), 0)+leaseMargin, maxLease+leaseMargin)
	}
	return maxLease
}

// deliver is one delivery of incident id under its lease.
func (a *Announcer) deliver(ctx context.Context, id string) error {
	inc, err := a.store.Get(ctx, id)
	if err != nil {
		return fmt.Errorf("incident %s: %w", id, err)
	}
	now := a.now()
	blocks, fallback := Render(inc, now)
	msg := Message{IncidentID: id, Blocks: blocks, Text: fallback, Plain: PlainText(blocks)}

	after := inc.SlackPosted
	var ref *incident.SlackRef
	var msgErr error
	if inc.Slack != nil && inc.Slack.TS != "" {
		ref = inc.Slack
	} else if found, ok, ferr := a.slack.Find(ctx, id); ferr != nil && !historyScopeMissing(ferr) {
		// Without the channel's history, a post could be the incident's second message (an
		// earlier one may have lost its answer): nothing is posted, and the delivery fails
		// as a post would (left pending, undeliverable, or given up after GiveUpAfter).
		return a.failed(ctx, inc, ferr, now)
	} else if ok {
		// Posted before by a delivery that lost the answer or died before recording it.
		ref = &found
		if err := a.store.SetSlack(ctx, id, found, after); err != nil {
			return fmt.Errorf("record slack message of incident %s: %w", id, err)
		}
	}
	var p Posted
	if ref != nil {
		p, msgErr = a.slack.Update(ctx, *ref, msg)
	} else {
		p, msgErr = a.slack.Post(ctx, msg)
	}
	if msgErr == nil {
		if ref == nil || p.Ref != *ref {
			if ref != nil {
				after = 0 // a new message: its thread gets the whole timeline
			}
			ref = &p.Ref
			if err := a.store.SetSlack(ctx, id, p.Ref, after); err != nil {
				return fmt.Errorf("record slack message of incident %s: %w", id, err)
			}
		}
		if err := a.store.RecordSlackDelivery(ctx, id, inc.Version, ""); err != nil {
			return fmt.Errorf("record slack delivery of incident %s: %w", id, err)
		}
	}
	if ref == nil {
		// No message to reply under: the whole incident waits.
		return a.failed(ctx, inc, msgErr, now)
	}
	// Thread replies go on even while chat.update fails: the thread is the audit trail.
	replyErr := a.replies(ctx, inc, *ref, after)
	switch {
	case msgErr != nil:
		return a.failed(ctx, inc, errors.Join(msgErr, replyErr), now)
	case replyErr != nil:
		return a.failed(ctx, inc, replyErr, now)
	}
	return nil
}

// historyScopeMissing reports whether Find failed only because the bot may not read the
// channel's history (missing_scope: channels:history). Then keywarden posts without looking —
// a lost answer could then mean a second message, which is better than no message — and
// `keywarden doctor` names the scope to add.
func historyScopeMissing(err error) bool {
	var u *UndeliverableError
	return errors.As(err, &u) && u.Code == "missing_scope"
}

// replies replies every entry of inc with a Seq above after, in Seq order, recording each
// before the next, so a crash or a concurrent delivery never replies one twice. Reminders are
// passed over (the reconciler posts them itself).
func (a *Announcer) replies(ctx context.Context, inc incident.Incident, ref incident.SlackRef, after int64) error {
	var todo []incident.Entry
	for _, e := range inc.Timeline {
		if e.Seq > after {
			todo = append(todo, e)
		}
	}
	slices.SortStableFunc(todo, func(x, y incident.Entry) int { return cmp.Compare(x.Seq, y.Seq) })
	for _, e := range todo {
		if e.Kind != incident.KindReminder {
			if err := a.slack.ReplyEntry(ctx, ref, inc.ID, e.ID, ThreadText(e)); err != nil {
				return err
			}
		}
		if err := a.store.SetSlack(ctx, inc.ID, ref, e.Seq); err != nil {
			return fmt.Errorf("record reply of entry %d of incident %s: %w", e.Seq, inc.ID, err)
		}
	}
	return nil
}

// failed handles a delivery that did not go through: Slack refused for good, or the incident
// still has no message GiveUpAfter after it opened. Then the incident records why
// (slack_delivery failed), the metric counts it and the summary is paged, once. Otherwise the
// delivery stays pending for the next attempt. It returns err, wrapped.
func (a *Announcer) failed(ctx context.Context, inc incident.Incident, err error, now time.Time) error {
	if err == nil {
		return nil
	}
	reason := ""
	var u *UndeliverableError
	switch {
	case errors.As(err, &u):
		reason = u.Reason()
	case inc.Slack == nil && now.Sub(inc.OpenedAt) >= GiveUpAfter:
		reason = fmt.Sprintf("no Slack message %s after the incident opened: %v", GiveUpAfter, err)
	default:
		return fmt.Errorf("incident %s: %w", inc.ID, err)
	}
	errs := []error{fmt.Errorf("incident %s undeliverable: %w", inc.ID, err)}
	if rerr := a.store.RecordSlackDelivery(ctx, inc.ID, 0, reason); rerr != nil {
		errs = append(errs, fmt.Errorf("record undeliverable incident %s: %w", inc.ID, rerr))
	}
	if a.metrics != nil {
		if merr := a.metrics.Count(page.MetricSlackUndeliverable, inc.ID, reason); merr != nil {
			errs = append(errs, merr)
		}
	}
	if perr := a.page(ctx, inc, page.WhyUndeliverable, reason); perr != nil {
		errs = append(errs, perr)
	}
	return errors.Join(errs...)
}

// page publishes inc's summary once per why: a claim for good marks it paged, and a failed
// publish gives the claim back (so the next attempt pages) and counts PageFailed.
func (a *Announcer) page(ctx context.Context, inc incident.Incident, why page.Why, detail string) error {
	if a.pager == nil || !a.pager.Enabled() {
		return nil
	}
	name := PageClaim(inc.ID, why)
	won, err := a.store.Claim(ctx, name, 0)
	if err != nil {
		return fmt.Errorf("page incident %s: %w", inc.ID, err)
	}
	if !won {
		return nil
	}
	if _, err := a.pager.Page(ctx, inc, why, detail, a.now()); err != nil {
		errs := []error{err}
		if rerr := a.store.Release(ctx, name); rerr != nil {
			errs = append(errs, fmt.Errorf("page incident %s: give the claim back: %w", inc.ID, rerr))
		}
		if a.metrics != nil {
			if merr := a.metrics.Count(page.MetricPageFailed, inc.ID, err.Error()); merr != nil {
				errs = append(errs, merr)
			}
		}
		return errors.Join(errs...)
	}
	return nil
}

// Reply posts text in the incident's thread — the reconciler's reminders — delivering the
// incident's message first when it has none yet.
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
	if err := a.slack.Reply(ctx, *inc.Slack, text); err != nil {
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
	if err := a.slack.Reply(ctx, *inc.Slack, ThreadText(e)); err != nil {
		return fmt.Errorf("reply to a refused click on incident %s: %w", id, err)
	}
	return nil
}
