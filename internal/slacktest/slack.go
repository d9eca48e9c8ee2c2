// Package slacktest is the one Slack Web API stand-in of the project: the tests of the code that
// talks to Slack, the local stack's services and the demo all use it. It answers the methods
// keywarden calls (auth.test with its X-OAuth-Scopes header, chat.postMessage, chat.update,
// chat.postEphemeral, conversations.history and conversations.replies with message metadata,
// conversations.join, conversations.info, conversations.list, usergroups.users.list) the way
// Slack does and records every call, so a test or a developer can
// point a real slack-go client at it (slack.OptionAPIURL) and see what Slack saw.
//
// Fail makes it misbehave on purpose, per method: refuse N calls or every call with a Slack error
// code, an HTTP status and a Retry-After, or answer late — what a test of retries and of
// delivery that must survive a slow or failing Slack needs.
//
// It is test support, like internal/awstest: no product code may import it, and it must not
// import anything of keywarden's (or the product would test against itself).
package slacktest

import (
	"bufio"
	"cmp"
	"crypto/sha256"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"mime"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Channel is the ID that a stand-in started with Start answers for every channel addressed by
// name, as Slack answers with the ID of a channel addressed by name.
const Channel = "C0KEYWARDEN"

// Who the stand-in says the token belongs to (auth.test), and the author of its messages.
const (
	teamID = "T0KEYWARDEN"
	botID  = "B0KEYWARDEN"
	userID = "U0KEYWARDEN"
)

// maxBody bounds a Web API request; Slack's own limit on a message's blocks is 50 blocks of at
// most 3000 characters each, far below it.
const maxBody = 1 << 20

// Record is one Web API call the stand-in answered, as kept in memory, written to RecordTo (the
// local stack's slack.jsonl) and served by ServeRecords. Tokens are never recorded.
type Record struct {
	// Seq numbers the calls of one stand-in from 1.
	Seq    int       `json:"seq"`
	At     time.Time `json:"at"`
	Method string    `json:"method"`
	// Channel is the channel ID, as Slack answers it; ChannelName the name the caller used
	// when it addressed the channel by name (chat.postMessage "#keywarden-local").
	Channel     string `json:"channel,omitempty"`
	ChannelName string `json:"channel_name,omitempty"`
	// TS is the message's timestamp: the one assigned (chat.postMessage, chat.postEphemeral) or
	// the one updated (chat.update).
	TS        string          `json:"ts,omitempty"`
	ThreadTS  string          `json:"thread_ts,omitempty"`
	User      string          `json:"user,omitempty"`
	Usergroup string          `json:"usergroup,omitempty"`
	Text      string          `json:"text,omitempty"`
	Blocks    json.RawMessage `json:"blocks,omitempty"`
	// Metadata is the message metadata sent with chat.postMessage or chat.update.
	Metadata json.RawMessage `json:"metadata,omitempty"`
	// OK and Error are Slack's answer.
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	// Fault says that a Fault given to Fail answered, not the stand-in's Slack.
	Fault bool `json:"fault,omitempty"`
}

// Fault is how the stand-in misbehaves on a call, for Fail. The zero Fault changes nothing.
type Fault struct {
	// Error is the Slack error code to refuse the call with ({"ok": false, "error": Error}),
	// such as "ratelimited", "channel_not_found" or "fatal_error". The call changes nothing.
	Error string
	// Status is the HTTP status to answer with; 0 is 200, which is how Slack answers almost
	// every error. 429 with no Error answers "ratelimited"; another status with no Error
	// answers the status's text, as a proxy in front of Slack would.
	Status int
	// RetryAfter is sent as the Retry-After header, in whole seconds rounded up. Slack sends
	// it only with 429, so a Fault with RetryAfter and no Status answers 429.
	RetryAfter time.Duration
	// Delay holds the answer back: the call takes effect (or is refused) at once and its
	// answer leaves Delay later, or never if the client gives up first — a Slack that posted
	// the message but was too slow to say so. With no Error and no Status the answer itself
	// is the normal one.
	Delay time.Duration
	// Times is how many calls the fault answers; 0 means every call until ClearFaults.
	Times int
	// Needed is sent as the answer's "needed" field, as Slack names the scope a
	// missing_scope call lacks.
	Needed string
	// RetryAfterDate sends Retry-After as an HTTP date rather than seconds (RFC 9110 allows
	// both).
	RetryAfterDate bool
}

// refuses reports whether the fault answers instead of the stand-in.
func (f Fault) refuses() bool { return f.Error != "" || f.Status != 0 || f.RetryAfter > 0 }

// AnyMethod given to Fail applies the fault to every method that has none of its own.
const AnyMethod = "*"

// Slack is the stand-in. Set its fields before the first call; the zero value is a stand-in
// that accepts any token, knows no user groups, gives each channel name an ID of its own and
// records in memory only.
type Slack struct {
	// Token, when set, is the only bot token accepted: another answers invalid_auth. A call
	// with no token at all answers not_authed, as Slack does.
	Token string
	// Groups answers usergroups.users.list: group ID → member user IDs. An unknown group is
	// no_such_subteam.
	Groups map[string][]string
	// ChannelID, when set, is the ID of every channel addressed by name: tests that speak to
	// one on-call channel compare with it (Start sets Channel). Empty, each name gets a stable
	// ID derived from it, so every process and every run of the local stack agree.
	ChannelID string
	// KnownMessagesOnly makes chat.update of a message the stand-in never posted answer
	// message_not_found, as Slack does (the local stack sets it). Off, such an update
	// succeeds: a test may start from an incident whose message was posted before the
	// stand-in existed.
	KnownMessagesOnly bool
	// RecordTo, when set, receives every record as one JSON line (ReadRecords reads them).
	RecordTo io.Writer
	// Log receives one line per call. Default: none.
	Log *slog.Logger
	// Scopes is what auth.test answers in its X-OAuth-Scopes header; nil answers
	// DefaultScopes.
	Scopes []string

	now func() time.Time
	srv *httptest.Server

	mu       sync.Mutex
	seq      int
	records  []Record
	lastTS   int64                          // microseconds of the last ts handed out
	messages map[string]map[string]*message // channel ID → ts → message
	names    map[string]string              // channel ID → name, for channels addressed by name
	faults   map[string][]*fault            // method or AnyMethod → faults, first first
	outside  map[string]bool                // channel IDs the bot is not a member of
	private  map[string]bool                // channel IDs of private channels
}

// DefaultScopes are the bot token scopes the stand-in reports when Scopes is nil: those
// keywarden's Slack app manifest asks for.
var DefaultScopes = []string{"chat:write", "channels:read", "channels:history", "channels:join", "groups:read", "groups:history", "usergroups:read"}

// Leave takes the bot out of the channel with ID id: chat.postMessage and chat.update there
// answer not_in_channel until conversations.join (public channels only) puts it back, as when
// a bot was never invited.
func (s *Slack) Leave(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.outside == nil {
		s.outside = map[string]bool{}
	}
	s.outside[id] = true
}

// SetGroup makes the user group with ID id list members from now on (nil: a group with no
// members), as when someone is added to or removed from it in Slack.
func (s *Slack) SetGroup(id string, members []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.Groups == nil {
		s.Groups = map[string][]string{}
	}
	s.Groups[id] = slices.Clone(members)
}

// MakePrivate makes the channel with ID id private: conversations.join answers
// method_not_supported_for_channel_type there, as Slack does for a private channel.
func (s *Slack) MakePrivate(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.private == nil {
		s.private = map[string]bool{}
	}
	s.private[id] = true
}

type message struct {
	Text     string
	Blocks   json.RawMessage
	ThreadTS string
	Metadata json.RawMessage
}

type fault struct {
	Fault
	left int // calls still to answer when Times > 0
}

// Start serves s on 127.0.0.1 under /api/ (APIURL) until the test ends, with ChannelID set to
// Channel when empty, and returns it.
func Start(tb testing.TB, s *Slack) *Slack {
	tb.Helper()
	if s.ChannelID == "" {
		s.ChannelID = Channel
	}
	mux := http.NewServeMux()
	mux.Handle("/api/", s)
	mux.HandleFunc("GET /_recorded", s.ServeRecords)
	s.srv = httptest.NewServer(mux)
	tb.Cleanup(s.srv.Close)
	return s
}

// APIURL is the base URL for slack.OptionAPIURL of a stand-in started with Start.
func (s *Slack) APIURL() string { return s.srv.URL + "/api/" }

// Fail makes the stand-in answer calls of method (a Web API method such as "chat.update", or
// AnyMethod) with f. Faults given for one method answer in the order given: a fault with
// Times N answers the next N calls, then the next fault takes over; one with Times 0 answers
// every call from then on. A method's own faults come before AnyMethod's.
func (s *Slack) Fail(method string, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.faults == nil {
		s.faults = map[string][]*fault{}
	}
	s.faults[method] = append(s.faults[method], &fault{Fault: f, left: f.Times})
}

// ClearFaults makes the stand-in behave again.
func (s *Slack) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

// nextFault returns the fault that answers a call of method, if any, and counts the call
// against it. Must be called with s.mu held.
func (s *Slack) nextFault(method string) (Fault, bool) {
	for _, m := range []string{method, AnyMethod} {
		fs := s.faults[m]
		if len(fs) == 0 {
			continue
		}
		f := fs[0]
		if f.Times > 0 {
			f.left--
			if f.left <= 0 {
				s.faults[m] = fs[1:]
			}
		}
		return f.Fault, true
	}
	return Fault{}, false
}

// Records returns every call answered so far, in order, refused ones included.
func (s *Slack) Records() []Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.records)
}

// Calls returns the calls the stand-in answered as Slack would — not those refused for their
// token or by a Fault — in order; with methods, only calls of those methods.
func (s *Slack) Calls(methods ...string) []Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Record
	for _, r := range s.records {
		if r.Fault || r.Error == "not_authed" || r.Error == "invalid_auth" {
			continue
		}
		if len(methods) == 0 || slices.Contains(methods, r.Method) {
			out = append(out, r)
		}
	}
	return out
}

// Reset forgets the calls recorded so far; messages posted stay, as they do in Slack.
func (s *Slack) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records = nil
}

// request is the part of a Web API request the stand-in reads. slack-go sends the chat
// methods as forms (blocks a JSON string) and some methods as JSON bodies (blocks an array).
type request struct {
	token                                        string
	channel, ts, threadTS, text, user, userGroup string
	blocks                                       json.RawMessage
	metadata                                     json.RawMessage
	allMetadata                                  bool
}

func parseRequest(r *http.Request) (request, error) {
	var req request
	r.Body = http.MaxBytesReader(nil, r.Body, maxBody)
	mediaType, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mediaType == "application/json" {
		var body map[string]json.RawMessage
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil && !errors.Is(err, io.EOF) {
			return req, fmt.Errorf("decode JSON body: %w", err)
		}
		str := func(k string) string {
			var v string
			if json.Unmarshal(body[k], &v) != nil {
				// Numbers (a ts sent unquoted) keep their JSON text.
				return strings.Trim(string(body[k]), `"`)
			}
			return v
		}
		req.token = str("token")
		req.channel, req.ts, req.threadTS, req.text = str("channel"), str("ts"), str("thread_ts"), str("text")
		req.user, req.userGroup = str("user"), str("usergroup")
		if b := body["blocks"]; len(b) > 0 && string(b) != "null" {
			req.blocks = blocksJSON(b)
		}
		if m := body["metadata"]; len(m) > 0 && string(m) != "null" {
			req.metadata = blocksJSON(m)
		}
		req.allMetadata = str("include_all_metadata") == "true" || str("include_all_metadata") == "1"
	} else {
		if err := r.ParseForm(); err != nil {
			return req, fmt.Errorf("parse form: %w", err)
		}
		f := r.Form
		req.token = f.Get("token")
		req.channel, req.ts, req.threadTS, req.text = f.Get("channel"), f.Get("ts"), f.Get("thread_ts"), f.Get("text")
		req.user, req.userGroup = f.Get("user"), f.Get("usergroup")
		if b := f.Get("blocks"); b != "" {
			req.blocks = blocksJSON(json.RawMessage(b))
		}
		if m := f.Get("metadata"); m != "" {
			req.metadata = blocksJSON(json.RawMessage(m))
		}
		req.allMetadata = f.Get("include_all_metadata") == "true" || f.Get("include_all_metadata") == "1"
	}
	if req.token == "" {
		req.token = strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	}
	return req, nil
}

// blocksJSON accepts blocks as an array or as a JSON string holding one, as Slack does.
func blocksJSON(b json.RawMessage) json.RawMessage {
	var s string
	if json.Unmarshal(b, &s) == nil {
		b = json.RawMessage(s)
	}
	if !json.Valid(b) {
		return nil
	}
	return b
}

// ServeHTTP answers a Web API call: POST <anything>/<method>, such as /api/chat.postMessage.
func (s *Slack) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.Contains(r.URL.Path, "/response/") {
		s.serveResponseURL(w, r)
		return
	}
	method := r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]
	req, err := parseRequest(r)
	if err != nil {
		respondJSON(w, http.StatusOK, map[string]any{"ok": false, "error": "invalid_form_data"})
		return
	}
	status, header, resp, delay := s.answer(method, req)
	if delay > 0 {
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			return
		}
	}
	for k, v := range header {
		w.Header()[k] = v
	}
	if text, ok := resp.(string); ok {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, text)
		return
	}
	respondJSON(w, status, resp)
}

// ResponseURL is a click's response_url on the stand-in (id tells clicks apart): a POST to it is
// recorded as method "response_url", as Slack's hooks URLs accept {"text", "response_type"}
// without a token (https://docs.slack.dev/interactivity/handling-user-interaction#message_responses).
// Fail("response_url", …) makes it refuse.
func (s *Slack) ResponseURL(id string) string { return s.srv.URL + "/api/response/" + id }

func (s *Slack) serveResponseURL(w http.ResponseWriter, r *http.Request) {
	req, err := parseRequest(r)
	if err != nil {
		http.Error(w, "invalid_payload", http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	rec := Record{Method: "response_url", Text: req.text, Blocks: req.blocks}
	f, failing := s.nextFault("response_url")
	status, body := http.StatusOK, "ok"
	if failing && f.refuses() {
		rec.Fault, status, body = true, cmp.Or(f.Status, http.StatusNotFound), cmp.Or(f.Error, "expired_url")
		rec.Error = body
	} else {
		rec.OK = true
	}
	s.record(rec)
	s.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

// answer records the call and returns the answer to it: the HTTP status, headers, the body (a
// JSON value, or a string for a plain-text body) and how long to hold it back.
func (s *Slack) answer(method string, req request) (int, http.Header, any, time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec := Record{
		Method: method, TS: req.ts, ThreadTS: req.threadTS, User: req.user, Usergroup: req.userGroup,
		Text: req.text, Blocks: req.blocks, Metadata: req.metadata,
	}
	status, header := http.StatusOK, http.Header{}
	var resp any
	var delay time.Duration
	switch f, ok := s.nextFault(method); {
	case req.token == "":
		resp = failure("not_authed")
	case s.Token != "" && req.token != s.Token:
		resp = failure("invalid_auth")
	case ok && f.refuses():
		rec.Fault, delay = true, f.Delay
		status, resp = faultAnswer(f, header, s.clock())
	default:
		delay = f.Delay // zero without a fault
		resp = s.dispatch(method, req, &rec)
		if method == "auth.test" {
			scopes := s.Scopes
			if scopes == nil {
				scopes = DefaultScopes
			}
			// Slack names the token's scopes in this header of every Web API answer
			// (https://docs.slack.dev/authentication/tokens/).
			header.Set("X-OAuth-Scopes", strings.Join(scopes, ","))
		}
	}
	switch r := resp.(type) {
	case map[string]any:
		if code, _ := r["error"].(string); code != "" {
			rec.Error = code
		} else {
			rec.OK = true
		}
	case string:
		rec.Error = r
	}
	s.record(rec)
	return status, header, resp, delay
}

// faultAnswer is what a refusing fault answers.
func faultAnswer(f Fault, header http.Header, now time.Time) (int, any) {
	status := f.Status
	if status == 0 && f.RetryAfter > 0 {
		status = http.StatusTooManyRequests
	}
	if status == 0 {
		status = http.StatusOK
	}
	if f.RetryAfter > 0 {
		secs := int(math.Ceil(f.RetryAfter.Seconds()))
		if f.RetryAfterDate {
			header.Set("Retry-After", now.Add(time.Duration(secs+1)*time.Second).UTC().Format(http.TimeFormat))
		} else {
			header.Set("Retry-After", fmt.Sprint(secs))
		}
	}
	switch {
	case f.Error != "" && f.Needed != "":
		r := failure(f.Error)
		r["needed"], r["provided"] = f.Needed, "chat:write"
		return status, r
	case f.Error != "":
		return status, failure(f.Error)
	case status == http.StatusTooManyRequests:
		return status, failure("ratelimited")
	}
	return status, http.StatusText(status)
}

func failure(code string) map[string]any { return map[string]any{"ok": false, "error": code} }

// dispatch must be called with s.mu held.
func (s *Slack) dispatch(method string, req request, rec *Record) map[string]any {
	if s.messages == nil {
		s.messages, s.names = map[string]map[string]*message{}, map[string]string{}
	}
	switch method {
	case "auth.test":
		return map[string]any{
			"ok": true, "url": "https://keywarden-local.slack.com/", "team": "keywarden local",
			"user": "keywarden", "team_id": teamID, "user_id": userID, "bot_id": botID,
		}
	case "chat.postMessage":
		id, name, ok := s.channelID(req.channel, true)
		rec.Channel, rec.ChannelName = id, name
		if !ok {
			return failure("channel_not_found")
		}
		if s.outside[id] {
			return failure("not_in_channel")
		}
		if req.text == "" && len(req.blocks) == 0 {
			return failure("no_text")
		}
		if req.threadTS != "" && s.messages[id][req.threadTS] == nil && s.KnownMessagesOnly {
			// Slack posts a reply to an unknown thread as a plain message; keywarden never
			// means to, so say so in the log without failing the call.
			s.logger().Warn("slack reply to an unknown thread", "channel", id, "thread_ts", req.threadTS)
		}
		ts := s.nextTS()
		rec.TS = ts
		if s.messages[id] == nil {
			s.messages[id] = map[string]*message{}
		}
		s.messages[id][ts] = &message{Text: req.text, Blocks: req.blocks, ThreadTS: req.threadTS, Metadata: req.metadata}
		return map[string]any{"ok": true, "channel": id, "ts": ts, "message": messageJSON(ts, s.messages[id][ts])}
	case "chat.update":
		// Slack's chat.update takes the channel's ID, not its name: what chat.postMessage
		// answered is what a caller must keep.
		id, _, ok := s.channelID(req.channel, false)
		rec.Channel = id
		if !ok {
			return failure("channel_not_found")
		}
		if req.ts == "" {
			return failure("message_not_found")
		}
		if s.outside[id] {
			return failure("not_in_channel")
		}
		m := s.messages[id][req.ts]
		if m == nil {
			if s.KnownMessagesOnly {
				return failure("message_not_found")
			}
			if s.messages[id] == nil {
				s.messages[id] = map[string]*message{}
			}
			m = &message{}
			s.messages[id][req.ts] = m
		}
		if req.text == "" && len(req.blocks) == 0 {
			return failure("no_text")
		}
		m.Text, m.Blocks = req.text, req.blocks
		if len(req.metadata) > 0 {
			m.Metadata = req.metadata
		}
		rec.ThreadTS = m.ThreadTS
		return map[string]any{"ok": true, "channel": id, "ts": req.ts, "text": m.Text, "message": messageJSON(req.ts, m)}
	case "chat.postEphemeral":
		id, name, ok := s.channelID(req.channel, true)
		rec.Channel, rec.ChannelName = id, name
		if !ok {
			return failure("channel_not_found")
		}
		if req.user == "" {
			return failure("user_not_in_channel")
		}
		if req.text == "" && len(req.blocks) == 0 {
			return failure("no_text")
		}
		// Ephemeral messages are not stored: they cannot be updated through chat.update.
		ts := s.nextTS()
		rec.TS = ts
		return map[string]any{"ok": true, "message_ts": ts}
	case "conversations.join":
		id, name, ok := s.channelID(req.channel, false)
		rec.Channel, rec.ChannelName = id, name
		switch {
		case !ok:
			return failure("channel_not_found")
		case s.private[id]:
			return failure("method_not_supported_for_channel_type")
		}
		delete(s.outside, id)
		return map[string]any{"ok": true, "channel": s.channelJSON(id)}
	case "conversations.info":
		id, name, ok := s.channelID(req.channel, false)
		rec.Channel, rec.ChannelName = id, name
		if !ok {
			return failure("channel_not_found")
		}
		return map[string]any{"ok": true, "channel": s.channelJSON(id)}
	case "conversations.list":
		// Every channel the stand-in has been told of by name (and ChannelID), one page.
		var chans []map[string]any
		seen := map[string]bool{}
		for id := range s.names {
			seen[id] = true
			chans = append(chans, s.channelJSON(id))
		}
		if s.ChannelID != "" && !seen[s.ChannelID] {
			chans = append(chans, s.channelJSON(s.ChannelID))
		}
		slices.SortFunc(chans, func(a, b map[string]any) int { return strings.Compare(a["id"].(string), b["id"].(string)) })
		return map[string]any{"ok": true, "channels": chans, "response_metadata": map[string]any{"next_cursor": ""}}
	case "conversations.history":
		id, _, ok := s.channelID(req.channel, false)
		rec.Channel = id
		if !ok {
			return failure("channel_not_found")
		}
		if s.outside[id] {
			return failure("not_in_channel")
		}
		return map[string]any{"ok": true, "messages": s.listMessages(id, "", req.allMetadata), "has_more": false}
	case "conversations.replies":
		id, _, ok := s.channelID(req.channel, false)
		rec.Channel = id
		if !ok {
			return failure("channel_not_found")
		}
		if s.messages[id][req.ts] == nil {
			return failure("thread_not_found")
		}
		return map[string]any{"ok": true, "messages": s.listMessages(id, req.ts, req.allMetadata), "has_more": false}
	case "usergroups.users.list":
		users, ok := s.Groups[req.userGroup]
		if !ok {
			return failure("no_such_subteam")
		}
		return map[string]any{"ok": true, "users": slices.Clone(users)}
	}
	return failure("unknown_method")
}

func (s *Slack) clock() time.Time {
	if s.now != nil {
		return s.now()
	}
	return time.Now()
}

func (s *Slack) logger() *slog.Logger {
	if s.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Log
}

// channelIDPattern matches Slack channel IDs: public (C), private (G) and direct (D).
var channelIDPattern = regexp.MustCompile(`^[CGD][A-Z0-9]{8,}$`)

// channelID returns the ID of the channel ref names. An ID stands for itself; a name, when
// byName allows it, is ChannelID or gets a stable ID derived from it.
func (s *Slack) channelID(ref string, byName bool) (id, name string, ok bool) {
	switch {
	case ref == "":
		return "", "", false
	case channelIDPattern.MatchString(ref):
		return ref, s.names[ref], true
	case !byName:
		return ref, "", false
	}
	name = strings.TrimPrefix(ref, "#")
	if id = s.ChannelID; id == "" {
		sum := sha256.Sum256([]byte(name))
		id = "C0" + base32.StdEncoding.EncodeToString(sum[:])[:9]
	}
	s.names[id] = name
	return id, name, true
}

// nextTS hands out Slack-shaped message timestamps ("1732800000.000100"): the current time in
// microseconds, strictly increasing, so each is unique within the stand-in as Slack's are
// within a channel.
func (s *Slack) nextTS() string {
	us := s.clock().UnixMicro()
	if us <= s.lastTS {
		us = s.lastTS + 1
	}
	s.lastTS = us
	return fmt.Sprintf("%d.%06d", us/1_000_000, us%1_000_000)
}

// channelJSON is conversations.info's channel object. Must be called with s.mu held.
func (s *Slack) channelJSON(id string) map[string]any {
	return map[string]any{
		"id": id, "name": s.names[id], "is_channel": !s.private[id], "is_private": s.private[id],
		"is_member": !s.outside[id], "is_archived": false,
	}
}

// listMessages answers conversations.history (thread "", top-level messages, newest first) and
// conversations.replies (the thread's parent, then its replies, oldest first), with each
// message's metadata only when allMetadata asks for it (include_all_metadata). Must be called
// with s.mu held.
func (s *Slack) listMessages(channel, thread string, allMetadata bool) []map[string]any {
	var tss []string
	for ts, m := range s.messages[channel] {
		if (thread == "" && m.ThreadTS == "") || (thread != "" && (ts == thread || m.ThreadTS == thread)) {
			tss = append(tss, ts)
		}
	}
	slices.Sort(tss)
	if thread == "" {
		slices.Reverse(tss)
	}
	out := make([]map[string]any, 0, len(tss))
	for _, ts := range tss {
		m := s.messages[channel][ts]
		j := messageJSON(ts, m)
		if allMetadata && len(m.Metadata) > 0 {
			j["metadata"] = m.Metadata
		}
		out = append(out, j)
	}
	return out
}

func messageJSON(ts string, m *message) map[string]any {
	out := map[string]any{
		"type": "message", "subtype": "bot_message", "text": m.Text, "ts": ts,
		"bot_id": botID, "user": userID, "team": teamID,
	}
	if len(m.Blocks) > 0 {
		out["blocks"] = m.Blocks
	}
	if m.ThreadTS != "" {
		out["thread_ts"] = m.ThreadTS
	}
	return out
}

// record keeps rec in memory and writes it to RecordTo. Must be called with s.mu held.
func (s *Slack) record(rec Record) {
	s.seq++
	rec.Seq = s.seq
	rec.At = s.clock().UTC()
	s.records = append(s.records, rec)
	log := s.logger()
	if s.RecordTo != nil {
		line, err := json.Marshal(rec)
		if err == nil {
			_, err = s.RecordTo.Write(append(line, '\n'))
		}
		if err != nil {
			log.Error("slack record not written", "method", rec.Method, "error", err)
		}
	}
	attrs := []any{"method", rec.Method, "ok", rec.OK}
	for _, kv := range [][2]string{{"channel", rec.Channel}, {"ts", rec.TS}, {"thread_ts", rec.ThreadTS}, {"error", rec.Error}} {
		if kv[1] != "" {
			attrs = append(attrs, kv[0], kv[1])
		}
	}
	if rec.Fault {
		attrs = append(attrs, "fault", true)
	}
	log.Info("slack call", attrs...)
}

// ServeRecords answers GET with every record so far, as a JSON array.
func (s *Slack) ServeRecords(w http.ResponseWriter, _ *http.Request) {
	recs := s.Records()
	if recs == nil {
		recs = []Record{}
	}
	respondJSON(w, http.StatusOK, recs)
}

// ReadRecords reads what a stand-in wrote to RecordTo from the file at path (the local stack's
// slack.jsonl). A missing file holds no records.
func ReadRecords(path string) ([]Record, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read slack records: %w", err)
	}
	defer f.Close()
	var recs []Record
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 4*maxBody)
	for n := 1; sc.Scan(); n++ {
		var rec Record
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			// The last line may be one the stand-in is writing right now.
			if !sc.Scan() {
				break
			}
			return nil, fmt.Errorf("read slack records: %s line %d: %w", path, n, err)
		}
		recs = append(recs, rec)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read slack records: %w", err)
	}
	return recs, nil
}

// CurrentMessages returns every message posted with chat.postMessage, in the order posted,
// as it reads now: the text and blocks of its last successful chat.update. Replies in a
// thread are messages too, with ThreadTS set. Method is "chat.postMessage" for each.
func CurrentMessages(records []Record) []Record {
	var out []Record
	index := map[[2]string]int{}
	for _, r := range records {
		if !r.OK {
			continue
		}
		key := [2]string{r.Channel, r.TS}
		switch r.Method {
		case "chat.postMessage":
			index[key] = len(out)
			out = append(out, r)
		case "chat.update":
			if i, ok := index[key]; ok {
				out[i].Text, out[i].Blocks = r.Text, r.Blocks
			}
		}
	}
	return out
}

// Button is one button of a message's actions blocks.
type Button struct {
	ActionID string `json:"action_id"`
	Text     string `json:"text"`
	Value    string `json:"value,omitempty"`
	Style    string `json:"style,omitempty"`
	BlockID  string `json:"block_id,omitempty"`
}

// blockJSON is the part of a Block Kit block this package reads.
type blockJSON struct {
	Type     string          `json:"type"`
	BlockID  string          `json:"block_id"`
	Text     *textJSON       `json:"text"`
	Fields   []textJSON      `json:"fields"`
	Elements json.RawMessage `json:"elements"`
}

type textJSON struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

type elementJSON struct {
	Type     string    `json:"type"`
	Text     *textJSON `json:"text"`
	ActionID string    `json:"action_id"`
	Value    string    `json:"value"`
	Style    string    `json:"style"`
}

func (r Record) blocks() []blockJSON {
	var blocks []blockJSON
	_ = json.Unmarshal(r.Blocks, &blocks)
	return blocks
}

// Buttons returns the buttons of the record's actions blocks, in order.
func (r Record) Buttons() []Button {
	var out []Button
	for _, b := range r.blocks() {
		if b.Type != "actions" {
			continue
		}
		var elems []elementJSON
		_ = json.Unmarshal(b.Elements, &elems)
		for _, e := range elems {
			if e.Type != "button" {
				continue
			}
			btn := Button{ActionID: e.ActionID, Value: e.Value, Style: e.Style, BlockID: b.BlockID}
			if e.Text != nil {
				btn.Text = e.Text.Text
			}
			out = append(out, btn)
		}
	}
	return out
}

// BlockTexts returns the texts of the record's header, section (text and fields) and context
// blocks, in order: what a reader of the message sees, less the buttons.
func (r Record) BlockTexts() []string {
	var out []string
	for _, b := range r.blocks() {
		switch b.Type {
		case "header", "section":
			if b.Text != nil && b.Text.Text != "" {
				out = append(out, b.Text.Text)
			}
			for _, f := range b.Fields {
				out = append(out, f.Text)
			}
		case "context":
			var elems []textJSON
			_ = json.Unmarshal(b.Elements, &elems)
			for _, e := range elems {
				if e.Text != "" {
					out = append(out, e.Text)
				}
			}
		}
	}
	return out
}

func respondJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// ClearMembership puts the bot back in every channel Leave took it out of, and makes every
// channel public again.
func (s *Slack) ClearMembership() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.outside, s.private = nil, nil
}
