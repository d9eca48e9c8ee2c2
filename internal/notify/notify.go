// Package notify keeps an incident's Slack message current: it posts the message once, updates
// it in place (chat.update) as the incident changes, and mirrors the timeline into the
// message's thread.
//
// The incident store, not Slack, is the record. Callers write the incident first and call Sync
// after, so a Slack outage or a rate limit never loses an incident: Sync returns the error, the
// caller keeps what it stored, and the next Sync (the reconciler runs every few minutes)
// re-renders the whole message from the incident and posts the thread entries it has not yet
// managed to post. Rendering lives in slackui; this package only talks to Slack.
//
// Nothing here logs, and errors carry Slack's error code, never the request, so the bot token
// cannot leak through them.
package notify

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/slack-go/slack"

	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/slackui"
)

// Poster is the part of Slack's Web API the notifier needs. slack-go's *slack.Client fits as
// is; tests point one at a local server with slack.OptionAPIURL.
type Poster interface {
	PostMessageContext(ctx context.Context, channelID string, options ...slack.MsgOption) (string, string, error)
	UpdateMessageContext(ctx context.Context, channelID, timestamp string, options ...slack.MsgOption) (string, string, string, error)
}

// Notifier posts and updates incident messages in one channel.
type Notifier struct {
	poster  Poster
	channel string
	// wait sleeps before the one retry after a rate limit; tests replace it.
	wait func(ctx context.Context, d time.Duration) error
}

// New returns a Notifier that posts new incident messages to channel (an ID such as C0123, or
// a name). Existing messages are updated where they are, in the channel stored on the incident.
func New(p Poster, channel string) *Notifier {
	return &Notifier{poster: p, channel: channel, wait: sleep}
}

// messageNotFound is Slack's error when chat.update targets a message that no longer exists
// (someone deleted it).
const messageNotFound = "message_not_found"

// Sync makes Slack show the incident as it is at time now. It posts the main message when the
// incident has none and returns the new SlackRef for the caller to store; otherwise it updates
// the message in place and returns the stored ref. A message someone deleted is posted again,
// and its new thread gets the whole timeline.
//
// Then it posts, as thread replies in Seq order, the timeline entries still to post: those with
// a Seq above inc.SlackPosted (all of them in a new thread). Entries without a Seq — refusals,
// kept beside the incident and replied to once by whoever recorded them — are never posted
// here. posted is the Seq of the last entry handled, which the caller records (Store.SetSlack)
// as the next SlackPosted, even when a later reply failed: nothing is posted twice and nothing
// is skipped.
//
// Errors are returned wrapped with the incident ID. The caller has already stored the
// incident; a failed call is repaired by the next Sync, which re-renders everything.
func (n *Notifier) Sync(ctx context.Context, inc incident.Incident, now time.Time) (ref incident.SlackRef, posted int64, err error) {
	blocks, fallback := slackui.Message(inc, now)
	msg := []slack.MsgOption{slack.MsgOptionBlocks(blocks...), slack.MsgOptionText(fallback, false)}

	posted = max(inc.SlackPosted, 0)
	after := posted // entries with a higher Seq are posted by this call
	if inc.Slack != nil && inc.Slack.TS != "" {
		ref = *inc.Slack
		err = n.retry(ctx, func() error {
			_, _, _, err := n.poster.UpdateMessageContext(ctx, ref.Channel, ref.TS, msg...)
			return err
		})
		if isSlackError(err, messageNotFound) {
			ref, err = n.post(ctx, msg)
			if err != nil {
				return *inc.Slack, posted, fmt.Errorf("repost deleted message of incident %s: %w", inc.ID, err)
			}
			after = 0 // the new thread gets the whole timeline
		} else if err != nil {
			return ref, posted, fmt.Errorf("update message %s of incident %s: %w", ref.TS, inc.ID, err)
		}
	} else {
		ref, err = n.post(ctx, msg)
		if err != nil {
			return incident.SlackRef{}, posted, fmt.Errorf("post message of incident %s: %w", inc.ID, err)
		}
	}

	// Reminders are the exception: the reconciler posts each one itself, with the escalation
	// mention that must ping, so mirroring its timeline entry would say it twice.
	for _, e := range unposted(inc.Timeline, after) {
		if e.Kind != incident.KindReminder {
			if err := n.Reply(ctx, ref, slackui.ThreadText(e)); err != nil {
				return ref, posted, fmt.Errorf("post timeline entry %d of incident %s: %w", e.Seq, inc.ID, err)
			}
		}
		posted = max(posted, e.Seq)
	}
	return ref, posted, nil
}

// unposted returns the entries of tl with a Seq above after, in Seq order: the ones a thread
// whose replies reached after still lacks. Entries without a Seq (refusals) are never among
// them.
func unposted(tl []incident.Entry, after int64) []incident.Entry {
	var out []incident.Entry
	for _, e := range tl {
		if e.Seq > 0 && e.Seq > after {
			out = append(out, e)
		}
	}
	slices.SortStableFunc(out, func(a, b incident.Entry) int { return cmp.Compare(a.Seq, b.Seq) })
	return out
}

// Reply posts text as a reply in the incident's thread: reminders, and the timeline.
func (n *Notifier) Reply(ctx context.Context, ref incident.SlackRef, text string) error {
	if ref.Channel == "" || ref.TS == "" {
		return fmt.Errorf("reply in thread %q of channel %q: incident has no message", ref.TS, ref.Channel)
	}
	err := n.retry(ctx, func() error {
		_, _, err := n.poster.PostMessageContext(ctx, ref.Channel, slack.MsgOptionText(text, false), slack.MsgOptionTS(ref.TS))
		return err
	})
	if err != nil {
		return fmt.Errorf("reply in thread %s: %w", ref.TS, err)
	}
	return nil
}

// post posts a new top-level message. Slack answers with the channel's ID even when it was
// addressed by name, and that ID is what chat.update needs later.
func (n *Notifier) post(ctx context.Context, msg []slack.MsgOption) (incident.SlackRef, error) {
	var ref incident.SlackRef
	err := n.retry(ctx, func() error {
		ch, ts, err := n.poster.PostMessageContext(ctx, n.channel, msg...)
		ref = incident.SlackRef{Channel: ch, TS: ts}
		return err
	})
	if err != nil {
		return incident.SlackRef{}, err
	}
	if ref.Channel == "" {
		ref.Channel = n.channel
	}
	return ref, nil
}

// retry runs call, and once more after Slack's Retry-After when Slack rate-limits it. Only
// once: chat.postMessage allows about one message per second per channel, so one wait clears a
// burst, and a caller that is still limited after that is better off returning and letting the
// next Sync repair the message than holding a Lambda invocation open. The wait ends early when
// ctx does.
func (n *Notifier) retry(ctx context.Context, call func() error) error {
	err := call()
	var limited *slack.RateLimitedError
	if !errors.As(err, &limited) {
		return err
	}
	if werr := n.wait(ctx, limited.RetryAfter); werr != nil {
		return fmt.Errorf("wait %s for Slack rate limit: %w", limited.RetryAfter, werr)
	}
	return call()
}

func sleep(ctx context.Context, d time.Duration) error {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
		// Waiting would outlive the caller: give up now rather than at the deadline.
		return fmt.Errorf("retry after %s exceeds the time left: %w", d, context.DeadlineExceeded)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func isSlackError(err error, code string) bool {
	var se slack.SlackErrorResponse
	return errors.As(err, &se) && se.Err == code
}
