package localstack

import (
	"bufio"
	"crypto/sha256"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"mime"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
)

// SlackRecordFile is the file, in the state folder, where the Slack stand-in appends every call
// it answers, one JSON SlackRecord a line.
const SlackRecordFile = "slack.jsonl"

// slackTeam is who the stand-in says the token belongs to (auth.test).
const (
	slackTeamID = "T0KEYWARDEN"
	slackBotID  = "B0KEYWARDEN"
	slackUserID = "U0KEYWARDEN"
)

// maxSlackBody bounds a Web API request; Slack's own limit on a message's blocks is 50 blocks
// of at most 3000 characters each, far below it.
const maxSlackBody = 1 << 20

// SlackRecord is one Web API call the stand-in answered, as kept in memory, appended to
// slack.jsonl and returned by GET /slack/_recorded. Tokens are never recorded.
type SlackRecord struct {
	// Seq numbers the calls of one services process from 1.
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
	// OK and Error are Slack's answer.
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

// slackStandIn answers the Slack Web API methods keywarden calls, the way Slack does, and
// records every call. Messages live as long as the process, as moto's state does.
type slackStandIn struct {
	groups map[string][]string
	log    *slog.Logger
	now    func() time.Time

	mu       sync.Mutex
	records  []SlackRecord
	file     *os.File
	lastTS   int64                               // microseconds of the last ts handed out
	messages map[string]map[string]*slackMessage // channel ID → ts → message
	names    map[string]string                   // channel ID → name, for channels addressed by name
}

type slackMessage struct {
	Text     string
	Blocks   json.RawMessage
	ThreadTS string
}

// newSlackStandIn truncates recordPath, so a new services process starts a new workspace.
func newSlackStandIn(recordPath string, groups map[string][]string, log *slog.Logger) (*slackStandIn, error) {
	f, err := os.OpenFile(recordPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("slack record file: %w", err)
	}
	return &slackStandIn{
		groups: groups, log: log, now: time.Now, file: f,
		messages: map[string]map[string]*slackMessage{}, names: map[string]string{},
	}, nil
}

func (s *slackStandIn) close() error { return s.file.Close() }

// slackRequest is the part of a Web API request the stand-in reads. slack-go sends the chat
// methods as forms (blocks a JSON string) and some methods as JSON bodies (blocks an array).
type slackRequest struct {
	token                                        string
	channel, ts, threadTS, text, user, userGroup string
	blocks                                       json.RawMessage
}

func parseSlackRequest(r *http.Request) (slackRequest, error) {
	var req slackRequest
	r.Body = http.MaxBytesReader(nil, r.Body, maxSlackBody)
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

// ServeHTTP answers POST /slack/api/<method>.
func (s *slackStandIn) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	method := r.PathValue("method")
	req, err := parseSlackRequest(r)
	if err != nil {
		respondJSON(w, http.StatusOK, map[string]any{"ok": false, "error": "invalid_form_data"})
		return
	}
	resp := s.answer(method, req)
	respondJSON(w, http.StatusOK, resp)
}

// answer records the call and returns Slack's answer to it.
func (s *slackStandIn) answer(method string, req slackRequest) map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec := SlackRecord{
		Method: method, TS: req.ts, ThreadTS: req.threadTS, User: req.user, Usergroup: req.userGroup,
		Text: req.text, Blocks: req.blocks,
	}
	resp := s.dispatch(method, req, &rec)
	if errCode, _ := resp["error"].(string); errCode != "" {
		rec.Error = errCode
	} else {
		rec.OK = true
	}
	s.record(rec)
	return resp
}

// dispatch must be called with s.mu held.
func (s *slackStandIn) dispatch(method string, req slackRequest, rec *SlackRecord) map[string]any {
	fail := func(code string) map[string]any { return map[string]any{"ok": false, "error": code} }
	if req.token == "" {
		return fail("not_authed")
	}
	switch method {
	case "auth.test":
		return map[string]any{
			"ok": true, "url": "https://keywarden-local.slack.com/", "team": "keywarden local",
			"user": "keywarden", "team_id": slackTeamID, "user_id": slackUserID, "bot_id": slackBotID,
		}
	case "chat.postMessage":
		id, name, ok := s.channelID(req.channel, true)
		rec.Channel, rec.ChannelName = id, name
		if !ok {
			return fail("channel_not_found")
		}
		if req.text == "" && len(req.blocks) == 0 {
			return fail("no_text")
		}
		if req.threadTS != "" && s.messages[id][req.threadTS] == nil {
			// Slack posts a reply to an unknown thread as a plain message; keywarden never
			// means to, so say so in the record without failing the call.
			s.log.Warn("slack reply to an unknown thread", "channel", id, "thread_ts", req.threadTS)
		}
		ts := s.nextTS()
		rec.TS = ts
		if s.messages[id] == nil {
			s.messages[id] = map[string]*slackMessage{}
		}
		s.messages[id][ts] = &slackMessage{Text: req.text, Blocks: req.blocks, ThreadTS: req.threadTS}
		return map[string]any{"ok": true, "channel": id, "ts": ts, "message": s.messageJSON(ts, s.messages[id][ts])}
	case "chat.update":
		// Slack's chat.update takes the channel's ID, not its name: what chat.postMessage
		// answered is what a caller must keep.
		id, _, ok := s.channelID(req.channel, false)
		rec.Channel = id
		if !ok {
			return fail("channel_not_found")
		}
		if req.ts == "" {
			return fail("message_not_found")
		}
		m := s.messages[id][req.ts]
		if m == nil {
			return fail("message_not_found")
		}
		if req.text == "" && len(req.blocks) == 0 {
			return fail("no_text")
		}
		m.Text, m.Blocks = req.text, req.blocks
		rec.ThreadTS = m.ThreadTS
		return map[string]any{"ok": true, "channel": id, "ts": req.ts, "text": m.Text, "message": s.messageJSON(req.ts, m)}
	case "chat.postEphemeral":
		id, name, ok := s.channelID(req.channel, true)
		rec.Channel, rec.ChannelName = id, name
		if !ok {
			return fail("channel_not_found")
		}
		if req.user == "" {
			return fail("user_not_in_channel")
		}
		if req.text == "" && len(req.blocks) == 0 {
			return fail("no_text")
		}
		// Ephemeral messages are not stored: they cannot be updated through chat.update.
		ts := s.nextTS()
		rec.TS = ts
		return map[string]any{"ok": true, "message_ts": ts}
	case "usergroups.users.list":
		users, ok := s.groups[req.userGroup]
		if !ok {
			return fail("no_such_subteam")
		}
		return map[string]any{"ok": true, "users": slices.Clone(users)}
	}
	return fail("unknown_method")
}

// channelIDPattern matches Slack channel IDs: public (C), private (G) and direct (D).
var channelIDPattern = regexp.MustCompile(`^[CGD][A-Z0-9]{8,}$`)

// channelID returns the ID of the channel ref names. An ID stands for itself; a name, when
// byName allows it, gets a stable ID derived from it, so every process and every run agree.
func (s *slackStandIn) channelID(ref string, byName bool) (id, name string, ok bool) {
	switch {
	case ref == "":
		return "", "", false
	case channelIDPattern.MatchString(ref):
		return ref, s.names[ref], true
	case !byName:
		return ref, "", false
	}
	name = strings.TrimPrefix(ref, "#")
	sum := sha256.Sum256([]byte(name))
	id = "C0" + base32.StdEncoding.EncodeToString(sum[:])[:9]
	s.names[id] = name
	return id, name, true
}

// nextTS hands out Slack-shaped message timestamps ("1732800000.000100"): the current time in
// microseconds, strictly increasing, so each is unique within the process as Slack's are
// within a channel.
func (s *slackStandIn) nextTS() string {
	us := s.now().UnixMicro()
	if us <= s.lastTS {
		us = s.lastTS + 1
	}
	s.lastTS = us
	return fmt.Sprintf("%d.%06d", us/1_000_000, us%1_000_000)
}

func (s *slackStandIn) messageJSON(ts string, m *slackMessage) map[string]any {
	out := map[string]any{
		"type": "message", "subtype": "bot_message", "text": m.Text, "ts": ts,
		"bot_id": slackBotID, "user": slackUserID, "team": slackTeamID,
	}
	if len(m.Blocks) > 0 {
		out["blocks"] = m.Blocks
	}
	if m.ThreadTS != "" {
		out["thread_ts"] = m.ThreadTS
	}
	return out
}

// record keeps rec in memory and appends it to the record file. Must be called with s.mu held.
func (s *slackStandIn) record(rec SlackRecord) {
	rec.Seq = len(s.records) + 1
	rec.At = s.now().UTC()
	s.records = append(s.records, rec)
	line, err := json.Marshal(rec)
	if err == nil {
		_, err = s.file.Write(append(line, '\n'))
	}
	if err != nil {
		s.log.Error("slack record not written", "method", rec.Method, "error", err)
	}
	attrs := []any{"method", rec.Method, "ok", rec.OK}
	for _, kv := range [][2]string{{"channel", rec.Channel}, {"ts", rec.TS}, {"thread_ts", rec.ThreadTS}, {"error", rec.Error}} {
		if kv[1] != "" {
			attrs = append(attrs, kv[0], kv[1])
		}
	}
	s.log.Info("slack call", attrs...)
}

// serveRecorded answers GET /slack/_recorded with every record so far, as a JSON array.
func (s *slackStandIn) serveRecorded(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	recs := slices.Clone(s.records)
	s.mu.Unlock()
	if recs == nil {
		recs = []SlackRecord{}
	}
	respondJSON(w, http.StatusOK, recs)
}

// ReadSlackRecords reads a record file (slack.jsonl). A missing file holds no records.
func ReadSlackRecords(path string) ([]SlackRecord, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read slack records: %w", err)
	}
	defer f.Close()
	var recs []SlackRecord
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 4*maxSlackBody)
	for n := 1; sc.Scan(); n++ {
		var rec SlackRecord
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
func CurrentMessages(records []SlackRecord) []SlackRecord {
	var out []SlackRecord
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

// SlackButton is one button of a message's actions blocks.
type SlackButton struct {
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

func (r SlackRecord) blocks() []blockJSON {
	var blocks []blockJSON
	_ = json.Unmarshal(r.Blocks, &blocks)
	return blocks
}

// Buttons returns the buttons of the record's actions blocks, in order.
func (r SlackRecord) Buttons() []SlackButton {
	var out []SlackButton
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
			btn := SlackButton{ActionID: e.ActionID, Value: e.Value, Style: e.Style, BlockID: b.BlockID}
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
func (r SlackRecord) BlockTexts() []string {
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

// ParseUsergroups reads LOCAL_SLACK_USERGROUPS: "S0ONCALL01=U0APPROVR1,U0APPROVR2", several
// groups separated by ";" or spaces.
func ParseUsergroups(v string) (map[string][]string, error) {
	groups := map[string][]string{}
	var errs []error
	for _, entry := range strings.FieldsFunc(v, func(r rune) bool { return r == ';' || r == ' ' || r == '\n' }) {
		id, members, ok := strings.Cut(entry, "=")
		id = strings.TrimSpace(id)
		if !ok || id == "" {
			errs = append(errs, fmt.Errorf("%q: want GROUP=USER,USER", entry))
			continue
		}
		users := []string{}
		for _, u := range strings.Split(members, ",") {
			if u = strings.TrimSpace(u); u != "" {
				users = append(users, u)
			}
		}
		groups[id] = users
	}
	return groups, errors.Join(errs...)
}

func respondJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
