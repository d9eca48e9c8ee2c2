// Package announcetest is a Slack Web API stand-in for tests of the code that talks to Slack
// about incidents: an httptest server on loopback that answers chat.postMessage, chat.update,
// chat.postEphemeral and usergroups.users.list the way Slack does and records every call, so a
// test can point a real slack-go client at it (slack.OptionAPIURL) and assert what Slack saw.
package announcetest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Call is one Web API request the stand-in answered.
type Call struct {
	Method   string
	Channel  string
	TS       string
	ThreadTS string
	User     string
	Text     string
	Blocks   string
}

// Slack is the stand-in. Groups answers usergroups.users.list; Fail, when set, may refuse a call
// by returning a Slack error code; Delay, when set, is slept before answering.
type Slack struct {
	Token  string
	Groups map[string][]string
	Fail   func(method string) string
	Delay  time.Duration

	mu    sync.Mutex
	calls []Call
	next  int
	srv   *httptest.Server
}

// Channel is the ID the stand-in answers with for every channel, as Slack answers with the ID
// of a channel addressed by name.
const Channel = "C0KEYWARDEN"

// Start starts the stand-in on 127.0.0.1 and stops it when the test ends.
func Start(tb testing.TB, s *Slack) *Slack {
	tb.Helper()
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	tb.Cleanup(s.srv.Close)
	return s
}

// APIURL is the base URL for slack.OptionAPIURL.
func (s *Slack) APIURL() string { return s.srv.URL + "/api/" }

func (s *Slack) serve(w http.ResponseWriter, r *http.Request) {
	method, ok := strings.CutPrefix(r.URL.Path, "/api/")
	if !ok {
		http.NotFound(w, r)
		return
	}
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if s.Delay > 0 {
		time.Sleep(s.Delay)
	}
	token := r.Form.Get("token")
	if token == "" {
		token = strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	}
	resp := map[string]any{"ok": true}
	switch {
	case s.Token != "" && token != s.Token:
		resp = map[string]any{"ok": false, "error": "invalid_auth"}
	case s.Fail != nil && s.Fail(method) != "":
		resp = map[string]any{"ok": false, "error": s.Fail(method)}
	default:
		c := Call{
			Method: method, Channel: r.Form.Get("channel"), TS: r.Form.Get("ts"), ThreadTS: r.Form.Get("thread_ts"),
			User: r.Form.Get("user"), Text: r.Form.Get("text"), Blocks: r.Form.Get("blocks"),
		}
		s.mu.Lock()
		switch method {
		case "chat.postMessage":
			s.next++
			c.TS = fmt.Sprintf("1795860000.%06d", s.next)
			resp["channel"], resp["ts"] = Channel, c.TS
		case "chat.update":
			resp["channel"], resp["ts"] = c.Channel, c.TS
		case "chat.postEphemeral":
			s.next++
			resp["message_ts"] = fmt.Sprintf("1795860000.%06d", s.next)
		case "usergroups.users.list":
			c.Text = r.Form.Get("usergroup")
			users, ok := s.Groups[c.Text]
			if !ok {
				resp = map[string]any{"ok": false, "error": "no_such_subteam"}
			} else {
				resp["users"] = users
			}
		default:
			resp = map[string]any{"ok": false, "error": "unknown_method"}
		}
		s.calls = append(s.calls, c)
		s.mu.Unlock()
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}

// Calls returns every answered call, in order; with methods, only calls of those methods.
func (s *Slack) Calls(methods ...string) []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Call
	for _, c := range s.calls {
		if len(methods) == 0 || slices.Contains(methods, c.Method) {
			out = append(out, c)
		}
	}
	return out
}

// Reset forgets the calls recorded so far.
func (s *Slack) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = nil
}
