package slackmessage

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/slack-go/slack"

	"github.com/keywarden/keywarden/internal/incident"
)

// API is the part of Slack's Web API the Client needs. slack-go's *slack.Client fits as is;
// tests point one at the stand-in (internal/slacktest) with slack.OptionAPIURL.
type API interface {
	PostMessageContext(ctx context.Context, channelID string, options ...slack.MsgOption) (string, string, error)
	UpdateMessageContext(ctx context.Context, channelID, timestamp string, options ...slack.MsgOption) (string, string, string, error)
	GetConversationHistoryContext(ctx context.Context, params *slack.GetConversationHistoryParameters) (*slack.GetConversationHistoryResponse, error)
	GetConversationRepliesContext(ctx context.Context, params *slack.GetConversationRepliesParameters) ([]slack.Message, bool, string, error)
	JoinConversationContext(ctx context.Context, channelID string) (*slack.Channel, string, []string, error)
}

// Message metadata event types keywarden puts on what it posts
// (https://docs.slack.dev/messaging/message-metadata/). Slack returns metadata from
// conversations.history and conversations.replies when asked with include_all_metadata, which
// is how a message whose post lost its answer is found again instead of posted twice.
const (
	// EventIncident marks an incident's top-level message; its payload names the incident.
	EventIncident = "keywarden_incident"
	// EventEntry marks a thread reply of one timeline entry; its payload names the incident
	// and the entry.
	EventEntry = "keywarden_entry"
)

// Defaults.
const (
	// DefaultCallTimeout bounds one Web API call. Past it the call's outcome is unknown (Slack
	// may have acted and been slow to say so), and the Client looks before it posts again.
	DefaultCallTimeout = 8 * time.Second
	// historyLimit is how many recent top-level messages a lookup reads: an incident's message
	// is looked for right after a post whose answer was lost, or when the incident has none
	// recorded, so it is among the channel's latest.
	historyLimit = 200
	// maxWaits bounds the rate-limit waits of one call.
	maxWaits = 3
	// defaultRetryAfter is waited after a rate limit that names no Retry-After.
	defaultRetryAfter = time.Second
	// maxPlainText keeps a plain-text message under Slack's 40,000-character text limit
	// (https://docs.slack.dev/reference/methods/chat.postMessage#truncating), with room to spare.
	maxPlainText = 38000
)

// Client talks to Slack for incidents in one channel. It is safe for concurrent use.
type Client struct {
	api         API
	channel     string
	callTimeout time.Duration
	// wait sleeps for a rate limit; tests replace it.
	wait func(ctx context.Context, d time.Duration) error

	mu sync.Mutex
	// channelID is the channel's ID once known: channel itself when it is one, else the ID
	// Slack answered to a post. History lookups and conversations.join need the ID.
	channelID string
}

// NewClient returns a Client that posts new incident messages to channel (an ID such as C0123, or
// a name such as #keywarden; an ID is better: a lost answer to the first post can be looked up
// only once the ID is known). Existing messages are updated where they are, in the channel
// stored on the incident.
func NewClient(api API, channel string) *Client {
	n := &Client{api: api, channel: channel, callTimeout: DefaultCallTimeout, wait: sleep}
	if IsID(channel, "CGD", 8, 0) { // a public (C), private (G) or direct (D) conversation
		n.channelID = channel
	}
	return n
}

// WithCallTimeout returns a copy whose Web API calls each last at most d (tests shorten it to
// meet a stand-in's late answer).
func (n *Client) WithCallTimeout(d time.Duration) *Client {
	return &Client{api: n.api, channel: n.channel, callTimeout: d, wait: n.wait, channelID: n.knownChannel()}
}

// Channel is the channel new messages go to, as configured.
func (n *Client) Channel() string { return n.channel }

func (n *Client) knownChannel() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.channelID
}

func (n *Client) learnChannel(id string) {
	if id == "" {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.channelID == "" {
		n.channelID = id
	}
}

// Message is what an incident's top-level message shows: Block Kit blocks with their fallback
// text, and Plain, the same facts as plain text for when Slack rejects the blocks.
type Message struct {
	IncidentID string
	Blocks     []slack.Block
	Text       string
	Plain      string
}

// Posted is the outcome of a post or an update that reached Slack.
type Posted struct {
	Ref incident.SlackRef
	// New is set when a new top-level message carries the incident now (the first post, or a
	// repost of a message Slack no longer has): its thread holds none of the timeline yet.
	New bool
	// Found is set when the message was not posted by this call but found in the channel's
	// history by its metadata (an earlier post whose answer was lost).
	Found bool
	// Plain is set when Slack rejected the blocks and the plain-text form was posted instead.
	Plain bool
}

// Find looks for incident id's top-level message among the channel's recent messages
// (conversations.history with include_all_metadata, newest first, which needs the channel's ID:
// https://docs.slack.dev/reference/methods/conversations.history), by its metadata. found is
// false when the channel's ID is not known yet (a channel configured by name before any post
// answered). Errors: *UndeliverableError, *PendingError, wrapped.
func (n *Client) Find(ctx context.Context, id string) (ref incident.SlackRef, found bool, err error) {
	ch := n.knownChannel()
	if ch == "" {
		return incident.SlackRef{}, false, nil
	}
	var resp *slack.GetConversationHistoryResponse
	err = n.call(ctx, ch, func(cctx context.Context) error {
		var err error
		resp, err = n.api.GetConversationHistoryContext(cctx, &slack.GetConversationHistoryParameters{
			ChannelID: ch, Limit: historyLimit, IncludeAllMetadata: true,
		})
		return err
	})
	if err != nil {
		return incident.SlackRef{}, false, fmt.Errorf("look for the message of incident %s in %s: %w", id, ch, classify(err))
	}
	// Newest first: the latest message of the incident, should two exist already.
	for _, m := range resp.Messages {
		if m.Metadata.EventType == EventIncident && payloadString(m.Metadata.EventPayload, "incident_id") == id {
			return incident.SlackRef{Channel: ch, TS: m.Timestamp}, true, nil
		}
	}
	return incident.SlackRef{}, false, nil
}

// Post posts msg as the incident's new top-level message (chat.postMessage, which answers the
// channel's ID even when given a name: https://docs.slack.dev/reference/methods/chat.postMessage),
// carrying its metadata. When the
// post's answer is lost it looks in the channel's history before anything else, so one post
// that took effect is never followed by a second. Blocks Slack rejects (invalid_blocks,
// msg_too_long) are posted again as msg.Plain. Errors: *UndeliverableError, *PendingError.
func (n *Client) Post(ctx context.Context, msg Message) (Posted, error) {
	meta := incidentMetadata(msg.IncidentID)
	plain := false
	opts := []slack.MsgOption{slack.MsgOptionBlocks(msg.Blocks...), slack.MsgOptionText(msg.Text, false), meta}
	for try := 0; ; try++ {
		var ref incident.SlackRef
		// conversations.join needs the channel's ID: while it is unknown, nothing is joined.
		err := n.call(ctx, n.knownChannel(), func(cctx context.Context) error {
			ch, ts, err := n.api.PostMessageContext(cctx, n.channel, opts...)
			ref = incident.SlackRef{Channel: ch, TS: ts}
			return err
		})
		if err == nil {
			if ref.Channel == "" {
				ref.Channel = n.channel
			}
			n.learnChannel(ref.Channel)
			return Posted{Ref: ref, New: true, Plain: plain}, nil
		}
		if unknownOutcome(err) {
			if found, ok, ferr := n.Find(ctx, msg.IncidentID); ferr == nil && ok {
				return Posted{Ref: found, New: true, Found: true, Plain: plain}, nil
			}
		}
		if rejectsBlocks(err) && !plain && try == 0 {
			plain = true
			opts = []slack.MsgOption{slack.MsgOptionText(truncate(msg.Plain, maxPlainText), false), meta}
			continue
		}
		return Posted{}, fmt.Errorf("post the message of incident %s: %w", msg.IncidentID, classify(err))
	}
}

// Update shows msg in the incident's message at ref (chat.update). A message Slack no longer
// has or will not let the bot edit (message_not_found, cant_update_message,
// edit_window_closed) is replaced by a new one (Posted.New); rejected blocks are sent as
// msg.Plain. Errors: *UndeliverableError, *PendingError.
func (n *Client) Update(ctx context.Context, ref incident.SlackRef, msg Message) (Posted, error) {
	meta := incidentMetadata(msg.IncidentID)
	opts := []slack.MsgOption{slack.MsgOptionBlocks(msg.Blocks...), slack.MsgOptionText(msg.Text, false), meta}
	plain := false
	for try := 0; ; try++ {
		err := n.call(ctx, ref.Channel, func(cctx context.Context) error {
			_, _, _, err := n.api.UpdateMessageContext(cctx, ref.Channel, ref.TS, opts...)
			return err
		})
		switch {
		case err == nil:
			n.learnChannel(ref.Channel)
			return Posted{Ref: ref, Plain: plain}, nil
		case slackCode(err) == "message_not_found" || slackCode(err) == "cant_update_message" || slackCode(err) == "edit_window_closed":
			p, perr := n.Post(ctx, msg)
			if perr != nil {
				return Posted{}, fmt.Errorf("repost the message of incident %s (%s): %w", msg.IncidentID, slackCode(err), perr)
			}
			return p, nil
		case rejectsBlocks(err) && !plain && try == 0:
			plain = true
			opts = []slack.MsgOption{slack.MsgOptionBlocks(), slack.MsgOptionText(truncate(msg.Plain, maxPlainText), false), meta}
			continue
		}
		return Posted{}, fmt.Errorf("update message %s of incident %s: %w", ref.TS, msg.IncidentID, classify(err))
	}
}

// ReplyEntry replies text in the thread at ref for timeline entry entryID of incident id,
// carrying metadata that names both. When the answer is lost it looks in the thread
// (conversations.replies with include_all_metadata:
// https://docs.slack.dev/reference/methods/conversations.replies) before reporting a failure, so a reply that
// took effect counts as posted. Errors: *UndeliverableError, *PendingError.
func (n *Client) ReplyEntry(ctx context.Context, ref incident.SlackRef, id, entryID, text string) error {
	meta := slack.MsgOptionMetadata(slack.SlackMetadata{EventType: EventEntry, EventPayload: map[string]any{"incident_id": id, "entry_id": entryID}})
	err := n.reply(ctx, ref, text, meta)
	if err != nil && unknownOutcome(err) {
		if ok, ferr := n.findReply(ctx, ref, entryID); ferr == nil && ok {
			return nil
		}
	}
	if err != nil {
		return fmt.Errorf("reply entry %s of incident %s: %w", entryID, id, classify(err))
	}
	return nil
}

// Reply posts text as a reply in the thread at ref: reminders and refusals, which keep no
// outbox of their own. Errors: *UndeliverableError, *PendingError.
func (n *Client) Reply(ctx context.Context, ref incident.SlackRef, text string) error {
	if err := n.reply(ctx, ref, text); err != nil {
		return fmt.Errorf("reply in thread %s: %w", ref.TS, classify(err))
	}
	return nil
}

func (n *Client) reply(ctx context.Context, ref incident.SlackRef, text string, extra ...slack.MsgOption) error {
	if ref.Channel == "" || ref.TS == "" {
		return fmt.Errorf("reply in thread %q of channel %q: incident has no message", ref.TS, ref.Channel)
	}
	opts := append([]slack.MsgOption{slack.MsgOptionText(truncate(text, maxPlainText), false), slack.MsgOptionTS(ref.TS)}, extra...)
	return n.call(ctx, ref.Channel, func(cctx context.Context) error {
		_, _, err := n.api.PostMessageContext(cctx, ref.Channel, opts...)
		return err
	})
}

// findReply reports whether the thread at ref holds the reply of entryID.
func (n *Client) findReply(ctx context.Context, ref incident.SlackRef, entryID string) (bool, error) {
	var msgs []slack.Message
	err := n.call(ctx, ref.Channel, func(cctx context.Context) error {
		var err error
		msgs, _, _, err = n.api.GetConversationRepliesContext(cctx, &slack.GetConversationRepliesParameters{
			ChannelID: ref.Channel, Timestamp: ref.TS, Limit: 1000, IncludeAllMetadata: true,
		})
		return err
	})
	if err != nil {
		return false, err
	}
	for _, m := range msgs {
		if m.Metadata.EventType == EventEntry && payloadString(m.Metadata.EventPayload, "entry_id") == entryID {
			return true, nil
		}
	}
	return false, nil
}

// incidentMetadata marks incident id's top-level message, for Find.
func incidentMetadata(id string) slack.MsgOption {
	return slack.MsgOptionMetadata(slack.SlackMetadata{EventType: EventIncident, EventPayload: map[string]any{"incident_id": id}})
}

// call runs one Web API call within the call timeout. A rate limit is waited out (Retry-After,
// or a second when Slack names none) while the wait fits the time ctx has left, at most
// maxWaits times; not_in_channel is answered once with conversations.join on channel (a public
// channel lets a bot with channels:join in; a private one answers
// method_not_supported_for_channel_type: https://docs.slack.dev/reference/methods/conversations.join)
// and the call made again.
func (n *Client) call(ctx context.Context, channel string, op func(context.Context) error) error {
	joined := false
	for waits := 0; ; {
		cctx, cancel := context.WithTimeout(ctx, n.callTimeout)
		err := op(cctx)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w (%w)", err, ctx.Err())
		}
		if d, limited := rateLimit(err); limited {
			if waits >= maxWaits {
				return err
			}
			waits++
			if werr := n.wait(ctx, d); werr != nil {
				return &PendingError{Code: "ratelimited", RetryAfter: d, Err: werr}
			}
			continue
		}
		if slackCode(err) == "not_in_channel" && !joined && channel != "" {
			joined = true
			jctx, cancel := context.WithTimeout(ctx, n.callTimeout)
			_, _, _, jerr := n.api.JoinConversationContext(jctx, channel)
			cancel()
			if jerr == nil {
				continue
			}
			return &UndeliverableError{Code: "not_in_channel", Detail: "conversations.join answered " + errCode(jerr) +
				": invite the bot to the channel (/invite @keywarden)", Needed: neededScope(jerr)}
		}
		return err
	}
}

// UndeliverableError is Slack refusing in a way retrying cannot fix: the channel does not exist
// or is archived, the token is revoked or invalid, a scope is missing, the bot may not join
// the channel. Someone has to act; keywarden says so (the incident's slack_delivery, a metric,
// the SNS topic).
type UndeliverableError struct {
	// Code is Slack's error code.
	Code string
	// Needed is the scope Slack says is missing (missing_scope's "needed" field).
	Needed string
	// Detail says what to do, when there is more to say than the code.
	Detail string
}

func (e *UndeliverableError) Error() string { return "slack refuses for good: " + e.Reason() }

// Reason is the words the incident records: the code, the scope needed, what to do.
func (e *UndeliverableError) Reason() string {
	r := e.Code
	if e.Needed != "" {
		r += " (needs scope " + e.Needed + ")"
	}
	if e.Detail != "" {
		r += ": " + e.Detail
	}
	return r
}

// PendingError is a call that did not go through but may later: a rate limit whose wait did
// not fit the time left, Slack unavailable, an answer that never came.
type PendingError struct {
	Code       string
	RetryAfter time.Duration
	Err        error
}

func (e *PendingError) Error() string {
	if e.RetryAfter > 0 {
		return fmt.Sprintf("slack %s, retry after %s: %v", e.Code, e.RetryAfter, e.Err)
	}
	return fmt.Sprintf("slack %s: %v", e.Code, e.Err)
}

func (e *PendingError) Unwrap() error { return e.Err }

// undeliverable are Slack's error codes no retry fixes (chat.postMessage's and every method's
// errors: https://docs.slack.dev/reference/methods/chat.postMessage#errors).
var undeliverable = map[string]string{
	"channel_not_found":                     "the channel does not exist or the bot cannot see it: check SLACK_CHANNEL",
	"is_archived":                           "the channel is archived: unarchive it or set SLACK_CHANNEL to another",
	"token_revoked":                         "the bot token was revoked: reinstall the app and update the token secret",
	"token_expired":                         "the bot token expired: reinstall the app and update the token secret",
	"invalid_auth":                          "the bot token is invalid: update the token secret",
	"not_authed":                            "no bot token was sent: set the token secret",
	"account_inactive":                      "the bot's account is inactive: reinstall the app",
	"missing_scope":                         "add the scope to the app and reinstall it",
	"not_allowed_token_type":                "the token is not a bot token (xoxb-)",
	"restricted_action":                     "the workspace does not let the bot post there",
	"team_access_not_granted":               "the app is not installed in the channel's workspace",
	"ekm_access_denied":                     "the workspace's encryption keys deny access",
	"method_not_supported_for_channel_type": "the bot cannot join this kind of channel: invite it",
}

// classify turns a call's error into an *UndeliverableError or a *PendingError.
func classify(err error) error {
	var u *UndeliverableError
	var p *PendingError
	if errors.As(err, &u) || errors.As(err, &p) {
		return err
	}
	code := slackCode(err)
	if detail, ok := undeliverable[code]; ok {
		return &UndeliverableError{Code: code, Needed: neededScope(err), Detail: detail}
	}
	if code == "not_in_channel" {
		return &UndeliverableError{Code: code, Detail: "the bot is not in the channel: invite it (/invite @keywarden), or set SLACK_CHANNEL to the channel's ID so it can join a public channel"}
	}
	if d, ok := rateLimit(err); ok {
		return &PendingError{Code: "ratelimited", RetryAfter: d, Err: err}
	}
	if code == "" {
		code = "unavailable"
	}
	return &PendingError{Code: code, Err: err}
}

// rateLimit reports whether err is Slack's rate limit, and how long to wait: HTTP 429 with
// Retry-After (slack-go's *RateLimitedError; misc.go checkStatusCode), 429 without it
// (StatusCodeError), or ok:false "ratelimited" on a 200 (https://docs.slack.dev/apis/web-api/rate-limits).
func rateLimit(err error) (time.Duration, bool) {
	var rl *slack.RateLimitedError
	if errors.As(err, &rl) {
		return max(rl.RetryAfter, 0), true
	}
	var sc slack.StatusCodeError
	if errors.As(err, &sc) && sc.Code == http.StatusTooManyRequests {
		return defaultRetryAfter, true
	}
	if slackCode(err) == "ratelimited" {
		return defaultRetryAfter, true
	}
	return 0, false
}

// rejectsBlocks reports whether Slack refused the message's form rather than the message.
func rejectsBlocks(err error) bool {
	switch slackCode(err) {
	case "invalid_blocks", "invalid_blocks_format", "msg_too_long", "too_many_blocks", "invalid_metadata_format", "invalid_metadata_schema":
		return true
	}
	return false
}

// unknownOutcome reports whether Slack may have acted on a call whose answer did not arrive:
// a timeout, a dropped connection, a 5xx. Slack's own refusals and rate limits are known.
func unknownOutcome(err error) bool {
	if err == nil || slackCode(err) != "" {
		return false
	}
	if _, ok := rateLimit(err); ok {
		return false
	}
	var sc slack.StatusCodeError
	if errors.As(err, &sc) {
		return sc.Code >= 500
	}
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) || strings.Contains(err.Error(), "EOF")
}

func slackCode(err error) string {
	var se slack.SlackErrorResponse
	if errors.As(err, &se) {
		return se.Err
	}
	return ""
}

func errCode(err error) string {
	if c := slackCode(err); c != "" {
		return c
	}
	return err.Error()
}

func neededScope(err error) string {
	var se slack.SlackErrorResponse
	if errors.As(err, &se) {
		return se.Needed
	}
	return ""
}

func payloadString(p map[string]any, k string) string {
	s, _ := p[k].(string)
	return s
}

func sleep(ctx context.Context, d time.Duration) error {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
		// Waiting would outlive the caller: leave it pending rather than fail at the deadline.
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

// Transport wraps base (nil: http.DefaultTransport) so that slack-go sees every rate limit
// with its wait. slack-go reads Retry-After only as whole seconds and only on HTTP 429
// (slack-go/slack v0.35.0 misc.go checkStatusCode); RFC 9110 also allows an HTTP date, and
// Slack may answer a rate limit with ok:false "ratelimited" on a 200 carrying Retry-After
// (https://docs.slack.dev/apis/web-api/rate-limits). The transport rewrites a date into
// seconds and a 200 that carries Retry-After into a 429, so the client returns
// *slack.RateLimitedError with the wait either way.
func Transport(base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return retryAfterTransport{base: base, now: time.Now}
}

type retryAfterTransport struct {
	base http.RoundTripper
	now  func() time.Time
}

func (t retryAfterTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	ra := strings.TrimSpace(resp.Header.Get("Retry-After"))
	if ra == "" {
		return resp, nil
	}
	if _, perr := strconv.ParseInt(ra, 10, 64); perr != nil {
		secs := int64(1)
		if at, derr := http.ParseTime(ra); derr == nil {
			secs = max(int64(at.Sub(t.now()).Round(time.Second)/time.Second), 0)
		}
		resp.Header.Set("Retry-After", strconv.FormatInt(secs, 10))
	}
	if resp.StatusCode == http.StatusOK {
		resp.StatusCode, resp.Status = http.StatusTooManyRequests, "429 Too Many Requests"
	}
	return resp, nil
}
