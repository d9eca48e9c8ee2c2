package slackmessage

import (
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/keywarden/keywarden/internal/incident"
)

// Block Kit limits (https://docs.slack.dev/reference/block-kit): Slack rejects the whole
// message with invalid_blocks when one is exceeded, so the renderer truncates rather than
// trusting the size of an incident.
const (
	maxBlocks        = 50
	maxSectionText   = 3000
	maxFieldText     = 2000
	maxFields        = 10
	maxHeaderText    = 150
	maxButtonText    = 75
	maxConfirmTitle  = 100
	maxConfirmText   = 300
	maxConfirmButton = 30
	maxContextElems  = 10
)

// escaper escapes the three characters Slack treats as control sequences in message text. Every
// value that came from outside (CloudTrail's user agent, identifiers, timeline details) goes
// through it, so a crafted user agent such as "<!channel>" cannot ping a channel or forge a link.
var escaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")

func esc(s string) string { return escaper.Replace(s) }

// code renders an outside value as inline code; a backtick inside would end the span early.
func code(s string) string {
	if s == "" {
		return "—"
	}
	return "`" + esc(strings.ReplaceAll(s, "`", "'")) + "`"
}

// truncate shortens s to at most n runes, marking the cut with an ellipsis. It cuts at a word
// or name boundary (a space, a line break, or the ", " between names) when one lies in the
// last half of the room, so a reader never sees half a name that looks like a whole one; a
// single word longer than that is cut inside it.
func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	if n <= 1 {
		return "…"
	}
	r := []rune(s)[:n-1]
	for i := len(r) - 1; i >= n/2; i-- {
		if unicode.IsSpace(r[i]) || r[i] == ',' {
			// r[:i] has at most n-2 runes: room for " …".
			return strings.TrimRightFunc(string(r[:i]), func(c rune) bool { return unicode.IsSpace(c) || c == ',' }) + " …"
		}
	}
	return string(r) + "…"
}

// IsID reports whether s is a Slack ID of one of the types prefixes names (U and W users, S
// user groups, C, G and D conversations): that letter, then at least min and at most max (no
// limit when max is 0) upper-case letters or digits. Slack documents its IDs as opaque strings
// of that form and may lengthen them
// (https://api.slack.com/changelog/2016-08-11-user-id-format-changes). A loop, not a regular
// expression: it runs at every function's start, where each compiled expression costs init.
func IsID(s, prefixes string, min, max int) bool {
	if s == "" || !strings.ContainsRune(prefixes, rune(s[0])) {
		return false
	}
	rest := s[1:]
	if len(rest) < min || (max > 0 && len(rest) > max) {
		return false
	}
	for _, c := range rest {
		if !('A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

// who renders a timeline actor: a Slack user becomes a mention so readers see a name, anything
// else (an IAM ARN, "keywarden") is shown as escaped text.
func who(actor string) string {
	switch {
	case actor == "":
		return "keywarden"
	case IsID(actor, "UW", 2, 0): // as the action handler records a Slack user in Actor
		return "<@" + actor + ">"
	}
	return esc(actor)
}

// utc formats t as an absolute time every reader can compare, whatever their time zone.
func utc(t time.Time) string { return t.UTC().Format("2006-01-02 15:04 UTC") }

// dateToken wraps t in Slack's date formatting token, which each client renders in the reader's
// own time zone; the fallback is the absolute UTC time for clients that cannot.
func dateToken(t time.Time) string {
	return fmt.Sprintf("<!date^%d^{date_short_pretty} {time}|%s>", t.Unix(), utc(t))
}

// countdown renders the time until a deadline the way the message counts down: "6d 23h left",
// "5h 12m left", "12m left", "overdue". It rounds down, so it never promises more time than
// there is.
func countdown(d time.Duration) string {
	if d <= 0 {
		return "overdue"
	}
	return Span(d) + " left"
}

// Span renders a positive duration in its two largest units, rounded down so it never
// promises more time than there is: "6d 23h", "5h 12m", "12m". The CLI counts down with it too.
func Span(d time.Duration) string {
	days := int(d / (24 * time.Hour))
	hours := int(d % (24 * time.Hour) / time.Hour)
	mins := int(d % time.Hour / time.Minute)
	switch {
	case days > 0:
		return fmt.Sprintf("%dd %dh", days, hours)
	case hours > 0:
		return fmt.Sprintf("%dh %dm", hours, mins)
	case mins > 0:
		return fmt.Sprintf("%dm", mins)
	}
	return "under 1m"
}

// keyLabel names the key the way people know it: its alias, else the key ID from its ARN.
func keyLabel(inc incident.Incident) string {
	if inc.KeyAlias != "" {
		return inc.KeyAlias
	}
	if incident.IsKeyARN(inc.KeyARN) {
		return incident.KeyID(inc.KeyARN)
	}
	if inc.KeyARN != "" {
		return inc.KeyARN
	}
	return "unknown key"
}

// plural returns "1 cluster" or "3 clusters".
func plural(n int, one, many string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, one)
	}
	return fmt.Sprintf("%d %s", n, many)
}

// listNames joins names, ending with "… and N more" after max of them.
func listNames(names []string, max int) string {
	if len(names) <= max {
		return strings.Join(names, ", ")
	}
	return strings.Join(names[:max], ", ") + fmt.Sprintf(" … and %d more", len(names)-max)
}

// kindEmoji makes the kinds of timeline entry tell apart at a glance in a long thread.
var kindEmoji = map[incident.Kind]string{
	incident.KindDelivery:        ":inbox_tray:",
	incident.KindKeyChange:       ":key:",
	incident.KindClusterChange:   ":card_file_box:",
	incident.KindRDSEvent:        ":card_file_box:",
	incident.KindClick:           ":point_right:",
	incident.KindApproval:        ":ballot_box_with_check:",
	incident.KindRefusal:         ":no_entry_sign:",
	incident.KindRemediationStep: ":wrench:",
	incident.KindReminder:        ":alarm_clock:",
	incident.KindSlackDelivery:   ":speech_balloon:",
	incident.KindState:           ":checkered_flag:",
	incident.KindNote:            ":memo:",
}

// ThreadText renders one timeline entry as a thread reply: its kind, who, and Entry.Text. The
// time is absolute UTC with seconds because the thread is the audit trail: two clicks a second
// apart must read apart.
func ThreadText(e incident.Entry) string {
	emoji := kindEmoji[e.Kind]
	if emoji == "" {
		emoji = ":small_blue_diamond:"
	}
	line := fmt.Sprintf("%s `%s` *%s*", emoji, e.At.UTC().Format("2006-01-02 15:04:05 UTC"), esc(string(e.Kind)))
	if e.Actor != "" {
		line += " · " + who(e.Actor)
	}
	if text := e.Text(); text != "" {
		line += " — " + esc(text)
	}
	if e.Count > 1 {
		line += fmt.Sprintf(" (×%d)", e.Count)
	}
	return truncate(line, maxSectionText)
}

// Reminder renders the reply posted when the countdown crosses a threshold (left is the
// threshold, such as 24h). mention is configuration — a user-group or channel mention such
// as "<!subteam^S0123>" — and is inserted as is so that it notifies; everything else is escaped.
func Reminder(inc incident.Incident, left time.Duration, mention string, now time.Time) string {
	var b strings.Builder
	if mention != "" {
		b.WriteString(mention + " ")
	}
	switch {
	case inc.Deadline == nil && inc.Critical:
		// A critical incident with no deadline reminds on a fixed cadence (reconcile's
		// CriticalEvery), not at thresholds.
		fmt.Fprintf(&b, ":rotating_light: *Still critical* on %s", esc(inc.ID))
	case left > 0:
		fmt.Fprintf(&b, ":alarm_clock: *Less than %s left* on %s", threshold(left), esc(inc.ID))
	default:
		fmt.Fprintf(&b, ":alarm_clock: *Deadline passed* on %s", esc(inc.ID))
	}
	fmt.Fprintf(&b, ": key %s is %s", code(keyLabel(inc)), esc(keyStateText(inc)))
	if n := active(inc.Clusters); n > 0 {
		fmt.Fprintf(&b, " and %s still without it", plural(n, "Aurora cluster is", "Aurora clusters are"))
	}
	b.WriteString(".")
	if actual, ok := inc.TimeLeft(now); ok {
		fmt.Fprintf(&b, " Deadline %s (%s) — %s.", utc(*inc.Deadline), dateToken(*inc.Deadline), countdown(actual))
	} else if inc.Critical {
		b.WriteString(" A cluster that cannot stop has no recoverable window: act now.")
	}
	if steps, _ := ConfirmSteps(inc); len(steps) > 0 {
		b.WriteString(" Use *Re-enable key & restart clusters* on the message above, or *Intentional* if this is wanted.")
	} else if instead := notFixable(inc); instead != "" {
		b.WriteString(" " + instead)
	}
	return truncate(b.String(), maxSectionText)
}

// threshold names a reminder threshold the way people say it: "3 days", "24h", "30m".
func threshold(d time.Duration) string {
	switch {
	case d >= 48*time.Hour && d%(24*time.Hour) == 0:
		return fmt.Sprintf("%d days", d/(24*time.Hour))
	case d >= time.Hour && d%time.Hour == 0:
		return fmt.Sprintf("%dh", d/time.Hour)
	}
	return Span(d)
}

// stateWord is how a KMS key state reads in a sentence.
func stateWord(keyState incident.KeyState) string {
	if keyState == "" {
		return "unusable"
	}
	return string(keyState)
}

// active counts clusters still waiting for their key: neither recovered nor lost.
func active(cs []incident.Cluster) int {
	n := 0
	for _, c := range cs {
		if !c.Recovered && !c.Lost {
			n++
		}
	}
	return n
}
