package slackmessage

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"github.com/slack-go/slack"

	"github.com/keywarden/keywarden/internal/incident"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden.json from the current output")

// golden is what a golden file holds: the blocks and the fallback text, exactly as posted.
type golden struct {
	Fallback string        `json:"fallback"`
	Blocks   []slack.Block `json:"blocks"`
}

func TestMessageGolden(t *testing.T) {
	tests := []struct {
		name string
		inc  incident.Incident
		// remediate says whether the remediate button must be there.
		remediate bool
	}{
		{"disabled_three_clusters", disabledThree(), true},
		{"deletion_before_window", deletionBeforeWindow(), true},
		{"cluster_cannot_stop", cannotStop(), true},
		{"key_deleted", keyDeletedOpen(), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			blocks, fallback := Render(tt.inc, now)
			checkLimits(t, blocks)
			if got := hasAction(blocks, ActionRemediate); got != tt.remediate {
				t.Errorf("remediate button present = %v, want %v", got, tt.remediate)
			}
			got, err := json.MarshalIndent(golden{Fallback: fallback, Blocks: blocks}, "", "  ")
			if err != nil {
				t.Fatalf("marshal blocks: %v", err)
			}
			got = append(got, '\n')
			path := filepath.Join("testdata", tt.name+".golden.json")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatalf("update golden file: %v", err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("read golden file (run go test -update to create it): %v", err)
			}
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Errorf("%s mismatch (-want +got):\n%s", path, diff)
			}
		})
	}
}

// TestMessageContent pins the facts each golden case exists for, so a careless -update
// cannot bless a regression.
func TestMessageContent(t *testing.T) {
	tests := []struct {
		name    string
		inc     incident.Incident
		want    []string
		notWant []string
	}{
		{
			name: "disabled key",
			inc:  disabledThree(),
			want: []string{
				"HIGH: Aurora key alias/orders-db disabled",
				"`arn:aws:iam::111122223333:user/alice`", "`203.0.113.7`", "aws-cli/2.22.0",
				"*Deadline 2026-12-05 09:14 UTC*", "<!date^1796462040^{date_short_pretty} {time}|2026-12-05 09:14 UTC>", "6d 23h left",
				"*Aurora clusters using this key: 3*", "*billing*", "`inaccessible-encryption-credentials-recoverable`",
				"key protects storage, master-user-secret", "4 instances (2 reported lost key access)",
				"*Acknowledged by* <@U012ABCDEF>",
				// The confirm dialog lists exactly what will run for this incident.
				"2. Wait until DescribeKey says Enabled", "3. StartDBCluster: billing",
			},
			// No reboot in the one click: instances that lost the key are watched instead.
			notWant: []string{"CancelKeyDeletion", "reports-1", "RebootDBInstance"},
		},
		{
			name: "deletion before window",
			inc:  deletionBeforeWindow(),
			want: []string{
				"KMS deletes the key for good then", "*Deadline 2026-12-04 12:00 UTC*", "6d 2h left",
				"until the key's deletion 2026-12-04 12:00 UTC", "1. CancelKeyDeletion (key is PendingDeletion)",
				"StartDBCluster: payments, payments-analytics", "PendingWindowInDays=7", "2 deliveries",
			},
		},
		{
			name: "cannot stop",
			inc:  cannotStop(),
			want: []string{
				"CRITICAL", "*no recoverable window* (member of global database global-orders)",
				"Other databases using this key: 1", "`legacy-mysql`", "1234abcd-12ab-34cd-56ef-1234567890ab",
			},
		},
		{
			name:    "key deleted",
			inc:     keyDeletedOpen(),
			want:    []string{"CRITICAL", "deleted", "One click cannot fix this", "unrecoverable", "reported by AWS KMS"},
			notWant: []string{"Re-enable key & restart clusters"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			text := render(t, tt.inc)
			for _, w := range tt.want {
				if !strings.Contains(text, w) {
					t.Errorf("message lacks %q", w)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(text, w) {
					t.Errorf("message has %q, want it absent", w)
				}
			}
		})
	}
}

func TestMessageClosedHasNoButtons(t *testing.T) {
	closedAt := now.Add(-time.Minute)
	for _, tt := range []struct {
		state incident.State
		close func(*incident.Incident) error
		why   string
	}{
		{incident.StateResolved, func(i *incident.Incident) error {
			return i.Resolve(incident.Keywarden, "every cluster is available with the key Enabled", closedAt)
		}, "every cluster is available"},
		{incident.StateIntentional, func(i *incident.Incident) error { return i.MarkIntentional("U0APPROVR1", closedAt) }, "marked intentional"},
		{incident.StateLost, func(i *incident.Incident) error {
			return i.MarkLost(incident.Keywarden, "the key was deleted", closedAt)
		}, "the key was deleted"},
	} {
		st := tt.state
		t.Run(string(st), func(t *testing.T) {
			inc := disabledThree()
			if err := tt.close(&inc); err != nil {
				t.Fatal(err)
			}
			blocks, fallback := Render(inc, now)
			checkLimits(t, blocks)
			for _, b := range blocks {
				if b.BlockType() == slack.MBTAction {
					t.Fatalf("closed incident has an actions block")
				}
			}
			text := render(t, inc)
			if !strings.Contains(text, "*Final state:*") || !strings.Contains(text, tt.why) {
				t.Errorf("closed message does not show its final state:\n%s", text)
			}
			if strings.Contains(text, "left") && strings.Contains(text, "*Deadline") {
				t.Errorf("closed message still counts down")
			}
			if !strings.HasPrefix(fallback, "["+strings.ToUpper(string(st))+"]") {
				t.Errorf("fallback = %q, want it to start with the final state", fallback)
			}
		})
	}
}

func TestMessageRemediatingKeepsOnlyAcknowledge(t *testing.T) {
	inc := disabledThree()
	inc.State = incident.StateRemediating
	blocks, _ := Render(inc, now)
	for _, id := range []string{ActionRemediate, ActionIntentional} {
		if hasAction(blocks, id) {
			t.Errorf("remediating incident offers %q", id)
		}
	}
	if !hasAction(blocks, ActionAcknowledge) {
		t.Errorf("remediating incident lost its acknowledge button")
	}
}

// TestMessageEscapesOutsideText makes sure a hostile user agent or identifier cannot ping a
// channel or forge a link.
func TestMessageEscapesOutsideText(t *testing.T) {
	inc := disabledThree()
	inc.Actor.UserAgent = "<!channel> <https://evil.example|click> `x` & co"
	inc.Clusters[0].Identifier = "<!here>"
	inc.Timeline = append(inc.Timeline, incident.Entry{At: now, Kind: incident.KindNote, Actor: "<!everyone>", Detail: "<@U999>"})
	text := render(t, inc)
	for _, bad := range []string{"<!channel>", "<!here>", "<https://evil"} {
		if strings.Contains(text, bad) {
			t.Errorf("message contains unescaped %q", bad)
		}
	}
	if got := ThreadText(inc.Timeline[len(inc.Timeline)-1]); strings.Contains(got, "<!everyone>") || strings.Contains(got, "<@U999>") {
		t.Errorf("ThreadText = %q, want outside text escaped", got)
	}
}

func TestMessageManyClustersStaysWithinLimits(t *testing.T) {
	for _, n := range []int{1, 30, 40, 200} {
		t.Run(strconv.Itoa(n)+"_clusters", func(t *testing.T) {
			inc := manyClusters(n)
			blocks, _ := Render(inc, now)
			checkLimits(t, blocks)
			text := render(t, inc)
			if n > maxClusterLines && !strings.Contains(text, "and "+strconv.Itoa(n-maxClusterLines)+" more clusters") {
				t.Errorf("%d clusters: message does not say how many were left out", n)
			}
			if !hasAction(blocks, ActionRemediate) {
				t.Errorf("%d clusters: remediate button missing", n)
			}
		})
	}
}

func TestSeverity(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*incident.Incident)
		want string
	}{
		{"days left", func(*incident.Incident) {}, SeverityHigh},
		{"no window", func(i *incident.Incident) { i.Critical = true }, SeverityCritical},
		{"under 24h", func(i *incident.Incident) { i.Deadline = ptr(now.Add(23*time.Hour + 59*time.Minute)) }, SeverityCritical},
		{"exactly 24h", func(i *incident.Incident) { i.Deadline = ptr(now.Add(24 * time.Hour)) }, SeverityHigh},
		{"passed", func(i *incident.Incident) { i.Deadline = ptr(now.Add(-time.Hour)) }, SeverityCritical},
		{"no deadline yet", func(i *incident.Incident) { i.Deadline = nil }, SeverityHigh},
		{"remediating", func(i *incident.Incident) { i.State = incident.StateRemediating }, SeverityHigh},
		{"key deleted", func(i *incident.Incident) { i.KeyState = "Deleted" }, SeverityCritical},
		{"resolved", func(i *incident.Incident) { i.State = incident.StateResolved; i.Critical = true }, "resolved"},
		{"intentional", func(i *incident.Incident) { i.State = incident.StateIntentional }, "intentional"},
		{"lost", func(i *incident.Incident) { i.State = incident.StateLost }, "lost"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inc := disabledThree()
			tt.mod(&inc)
			if got := Severity(inc, now); got != tt.want {
				t.Errorf("Severity() = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestNotFixable: the message offers the fix exactly when the model's Fixable allows it, and
// otherwise says what to do instead.
func TestNotFixable(t *testing.T) {
	tests := []struct {
		name    string
		mod     func(*incident.Incident)
		want    bool
		instead string
	}{
		{"disabled", func(*incident.Incident) {}, true, ""},
		{"pending deletion", func(i *incident.Incident) { i.KeyState = "PendingDeletion" }, true, ""},
		{"enabled but clusters stopped", func(i *incident.Incident) { i.KeyState = "Enabled" }, true, ""},
		{"some clusters lost", func(i *incident.Incident) { i.Clusters[0].Lost = true }, true, ""},
		{"no clusters", func(i *incident.Incident) { i.Clusters = nil }, true, ""},
		{"deleted", func(i *incident.Incident) { i.KeyState = "Deleted" }, false, "unrecoverable"},
		{"not found after deletion", func(i *incident.Incident) { i.KeyState = ""; i.KeyDeletionDate = ptr(now) }, false, "unrecoverable"},
		{"KMS deletion event", func(i *incident.Incident) { i.KeyState = ""; i.Trigger = "KMS CMK Deletion" }, false, "unrecoverable"},
		{"imported material gone", func(i *incident.Incident) { i.KeyState = "PendingImport" }, false, "SAME key material"},
		{"key store disconnected", func(i *incident.Incident) { i.KeyState = "Unavailable" }, false, "Reconnect"},
		{"every cluster terminal", func(i *incident.Incident) {
			for j := range i.Clusters {
				i.Clusters[j].Lost = true
			}
		}, false, "snapshot or with point-in-time recovery"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inc := disabledThree()
			tt.mod(&inc)
			if err := inc.Fixable(); (err == nil) != tt.want {
				t.Errorf("Fixable() = %v, want fixable %v", err, tt.want)
			}
			instead := notFixable(inc)
			if tt.instead == "" && instead != "" || !strings.Contains(instead, tt.instead) {
				t.Errorf("notFixable() = %q, want it to mention %q", instead, tt.instead)
			}
			if text := render(t, inc); tt.instead != "" && !strings.Contains(text, "One click cannot fix this") {
				t.Errorf("message does not say one click cannot fix it")
			}
			blocks, _ := Render(inc, now)
			if got := hasAction(blocks, ActionRemediate); got != tt.want {
				t.Errorf("remediate button present = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestConfirmSteps(t *testing.T) {
	inc := deletionBeforeWindow()
	inc.Instances = append(inc.Instances, instance("other-1", "elsewhere", "available", true))
	_, got := ConfirmSteps(inc)
	want := "For key alias/payments this will:\n" +
		"1. CancelKeyDeletion (key is PendingDeletion)\n" +
		"2. EnableKey\n" +
		"3. Wait until DescribeKey says Enabled\n" +
		"4. StartDBCluster: payments, payments-analytics"
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ConfirmSteps() text mismatch (-want +got):\n%s", diff)
	}

	// Too many names: cut at a name boundary, every kind still listed. Half the clusters still
	// run; their instances that reported lost key access are watched, never rebooted.
	inc = manyClusters(40)
	for i := range inc.Clusters {
		if i%2 == 1 {
			inc.Clusters[i].Status = incident.StatusAvailable
		}
	}
	_, got = ConfirmSteps(inc)
	if n := utf8.RuneCountInString(got); n > maxConfirmText {
		t.Errorf("ConfirmSteps() for 40 clusters is %d characters, want at most %d", n, maxConfirmText)
	}
	for _, w := range []string{"1. EnableKey", "2. Wait until DescribeKey says Enabled", "3. StartDBCluster: ", " more"} {
		if !strings.Contains(got, w) {
			t.Errorf("ConfirmSteps() for 40 clusters = %q, want it to contain %q", got, w)
		}
	}
	for _, line := range strings.Split(got, "\n")[1:] {
		_, names, ok := strings.Cut(line, ": ")
		if !ok {
			continue
		}
		names, _, _ = strings.Cut(names, " … and ")
		for _, n := range strings.Split(names, ", ") {
			if !strings.HasPrefix(n, "tenant-") || !strings.HasSuffix(n, "-eu-west-1") && !strings.HasSuffix(n, "-1") {
				t.Errorf("ConfirmSteps() cut a name: %q in %q", n, line)
			}
		}
	}

	// Nothing to run, or nothing one click can do: no steps, no dialog.
	for name, mod := range map[string]func(*incident.Incident){
		"key deleted": func(i *incident.Incident) { i.KeyState = incident.KeyStateDeleted },
		"nothing to run": func(i *incident.Incident) {
			i.KeyState = incident.KeyStateEnabled
			i.Instances = nil
			for j := range i.Clusters {
				i.Clusters[j].Status = incident.StatusAvailable
			}
		},
	} {
		inc := disabledThree()
		mod(&inc)
		if steps, text := ConfirmSteps(inc); len(steps) != 0 || text != "" {
			t.Errorf("%s: ConfirmSteps() = %v, %q, want none", name, steps, text)
		}
		if blocks, _ := Render(inc, now); hasAction(blocks, ActionRemediate) {
			t.Errorf("%s: the message offers remediate", name)
		}
	}
}

// TestConfirmDialogIsThePlan: for every golden incident (and the largest), the steps the
// confirm dialog lists are inc.Plan()'s running steps — same kinds, same targets, same order —
// and the dialog Slack shows is the text ConfirmSteps rendered from them.
func TestConfirmDialogIsThePlan(t *testing.T) {
	for name, inc := range map[string]incident.Incident{
		"disabled_three_clusters": disabledThree(),
		"deletion_before_window":  deletionBeforeWindow(),
		"cluster_cannot_stop":     cannotStop(),
		"key_deleted":             keyDeletedOpen(),
		"200_clusters":            manyClusters(200),
	} {
		t.Run(name, func(t *testing.T) {
			plan, err := inc.Plan()
			var running []incident.PlannedStep
			for _, s := range plan {
				if s.Runs() {
					running = append(running, s)
				}
			}
			steps, text := ConfirmSteps(inc)
			if diff := cmp.Diff(running, steps); diff != "" {
				t.Errorf("dialog steps differ from the plan's running steps (plan error %v) (-plan +dialog):\n%s", err, diff)
			}
			dialog, ok := confirmText(Render(inc, now))
			if ok != (len(running) > 0) {
				t.Fatalf("remediate confirm dialog present = %v, want %v (%d running steps)", ok, len(running) > 0, len(running))
			}
			if !ok {
				return
			}
			if dialog != text {
				t.Errorf("the dialog shows %q, want ConfirmSteps' %q", dialog, text)
			}
			// One numbered line per run of one kind, in the plan's order.
			var kinds []incident.StepKind
			for _, s := range running {
				if len(kinds) == 0 || kinds[len(kinds)-1] != s.Kind {
					kinds = append(kinds, s.Kind)
				}
			}
			lines := strings.Split(dialog, "\n")[1:]
			if len(lines) != len(kinds) {
				t.Fatalf("dialog has %d step lines, want %d (kinds %v):\n%s", len(lines), len(kinds), kinds, dialog)
			}
			for i, k := range kinds {
				word := string(k)
				if k == incident.StepWaitEnabled {
					word = "Wait until DescribeKey says Enabled"
				}
				if want := strconv.Itoa(i+1) + ". " + word; !strings.HasPrefix(lines[i], want) {
					t.Errorf("dialog line %d = %q, want it to start with %q", i+1, lines[i], want)
				}
			}
		})
	}
}

// confirmText is the remediate button's confirm text in blocks.
func confirmText(blocks []slack.Block, _ string) (string, bool) {
	for _, b := range blocks {
		a, ok := b.(*slack.ActionBlock)
		if !ok {
			continue
		}
		for _, e := range a.Elements.ElementSet {
			if btn, ok := e.(*slack.ButtonBlockElement); ok && btn.ActionID == ActionRemediate && btn.Confirm != nil {
				return btn.Confirm.Text.Text, true
			}
		}
	}
	return "", false
}

func TestButtonValue(t *testing.T) {
	for _, tt := range []struct {
		id      string
		version int64
	}{{"KW-20261128-1f3a9c", 7}, {"KW-1", 0}, {"KW-x", 1<<63 - 1}} {
		v := ButtonValue(tt.id, tt.version)
		id, version, err := ParseButtonValue(v)
		if err != nil || id != tt.id || version != tt.version {
			t.Errorf("ParseButtonValue(%q) = %q, %d, %v, want %q, %d, nil", v, id, version, err, tt.id, tt.version)
		}
	}
	if got := ButtonValue("KW-20261128-1f3a9c", 7); got != "KW-20261128-1f3a9c:7" {
		t.Errorf("ButtonValue() = %q, want %q", got, "KW-20261128-1f3a9c:7")
	}
	for _, v := range []string{"", ":", "KW-1", "KW-1:", ":7", "KW-1:x", "KW-1:-1", "KW-1:+1", "KW-1:07", "KW-1:7:8",
		"KW 1:7", "KW-1:7 ", "KW-1:99999999999999999999", "KW-1:0x10"} {
		if id, version, err := ParseButtonValue(v); !errors.Is(err, ErrButtonValue) {
			t.Errorf("ParseButtonValue(%q) = %q, %d, %v, want ErrButtonValue", v, id, version, err)
		}
	}
}

func FuzzParseButtonValue(f *testing.F) {
	for _, s := range []string{"KW-20261128-1f3a9c:7", "", ":", "a:b", "KW-1:-1", "KW-1:007"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		id, version, err := ParseButtonValue(v)
		if err != nil {
			return
		}
		if got := ButtonValue(id, version); got != v {
			t.Errorf("ButtonValue(ParseButtonValue(%q)) = %q, want the input back", v, got)
		}
	})
}

func TestReminder(t *testing.T) {
	inc := disabledThree()
	inc.Deadline = ptr(now.Add(23*time.Hour + 30*time.Minute))
	tests := []struct {
		name    string
		left    time.Duration
		mention string
		want    []string
		notWant []string
	}{
		{
			name: "with mention", left: 24 * time.Hour, mention: "<!subteam^S0123>",
			want: []string{"<!subteam^S0123> :alarm_clock: *Less than 24h left* on KW-20261128-1f3a9c",
				"`alias/orders-db` is Disabled", "3 Aurora clusters are still without it", "23h 30m left",
				"<!date^", "Re-enable key & restart clusters"},
		},
		{
			name: "without mention", left: 24 * time.Hour,
			want:    []string{":alarm_clock: *Less than 24h left*"},
			notWant: []string{"<!subteam", "<@"},
		},
		{
			name: "overdue", left: 0,
			want: []string{"*Deadline passed*"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Reminder(inc, tt.left, tt.mention, now)
			if tt.mention == "" && !strings.HasPrefix(got, ":alarm_clock:") {
				t.Errorf("Reminder() = %q, want it to start with the alarm, no mention", got)
			}
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("Reminder() = %q, want it to contain %q", got, w)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(got, w) {
					t.Errorf("Reminder() = %q, want no %q", got, w)
				}
			}
		})
	}
	if got := Reminder(inc, 72*time.Hour, "", now); !strings.Contains(got, "*Less than 3 days left*") {
		t.Errorf("Reminder() at 72h = %q, want it to say 3 days", got)
	}
	if got := Reminder(keyDeletedOpen(), time.Hour, "", now); !strings.Contains(got, "unrecoverable") {
		t.Errorf("Reminder() for a deleted key = %q, want it to say what to do instead", got)
	}
}

func TestThreadText(t *testing.T) {
	tests := []struct {
		e    incident.Entry
		want string
	}{
		{incident.Entry{At: now, Kind: incident.KindApproval, Actor: "U012ABCDEF", Result: incident.ResultApproved, Detail: "remediate: approval 1 of 2"},
			":ballot_box_with_check: `2026-11-28 10:00:00 UTC` *approval* · <@U012ABCDEF> — remediate: approval 1 of 2"},
		{incident.Entry{At: now, Kind: incident.KindRemediationStep, Actor: incident.Keywarden, Target: "orders", Result: incident.ResultOK},
			":wrench: `2026-11-28 10:00:00 UTC` *remediation-step* · keywarden — remediation-step orders → ok"},
		{incident.NewRefusal("U0STRANGER", "remediate", "remediate: refused, not an approver", "click:1.2:U0STRANGER", now),
			":no_entry_sign: `2026-11-28 10:00:00 UTC` *refusal* · <@U0STRANGER> — remediate: refused, not an approver"},
		{incident.Entry{At: now, Kind: incident.KindRefusal, Actor: "U0STRANGER", Detail: "refused", Count: 3},
			":no_entry_sign: `2026-11-28 10:00:00 UTC` *refusal* · <@U0STRANGER> — refused (×3)"},
		{incident.Entry{At: now, Kind: "new-kind", Actor: "arn:aws:iam::1:user/a&b", Detail: "x"},
			":small_blue_diamond: `2026-11-28 10:00:00 UTC` *new-kind* · arn:aws:iam::1:user/a&amp;b — x"},
	}
	for _, tt := range tests {
		if got := ThreadText(tt.e); got != tt.want {
			t.Errorf("ThreadText() = %q, want %q", got, tt.want)
		}
	}
	long := ThreadText(incident.Entry{At: now, Kind: incident.KindNote, Detail: strings.Repeat("x", 5000)})
	if n := utf8.RuneCountInString(long); n > maxSectionText {
		t.Errorf("ThreadText() of a long detail is %d characters, want at most %d", n, maxSectionText)
	}
}

func TestCountdown(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{7*24*time.Hour - time.Minute, "6d 23h left"},
		{5*time.Hour + 12*time.Minute + 59*time.Second, "5h 12m left"},
		{12 * time.Minute, "12m left"},
		{30 * time.Second, "under 1m left"},
		{0, "overdue"},
		{-time.Hour, "overdue"},
	}
	for _, tt := range tests {
		if got := countdown(tt.d); got != tt.want {
			t.Errorf("countdown(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
}

// render flattens every text a reader or the API sees in the message into one string.
func render(t *testing.T, inc incident.Incident) string {
	t.Helper()
	blocks, fallback := Render(inc, now)
	b, err := json.Marshal(blocks)
	if err != nil {
		t.Fatalf("marshal blocks: %v", err)
	}
	var texts []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for _, x := range v {
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		case string:
			texts = append(texts, v)
		}
	}
	var tree any
	if err := json.Unmarshal(b, &tree); err != nil {
		t.Fatalf("unmarshal blocks: %v", err)
	}
	walk(tree)
	return fallback + "\n" + strings.Join(texts, "\n")
}

func hasAction(blocks []slack.Block, actionID string) bool {
	for _, b := range blocks {
		a, ok := b.(*slack.ActionBlock)
		if !ok {
			continue
		}
		for _, e := range a.Elements.ElementSet {
			if btn, ok := e.(*slack.ButtonBlockElement); ok && btn.ActionID == actionID {
				return true
			}
		}
	}
	return false
}

// checkLimits fails the test when the blocks break a Block Kit limit Slack enforces by rejecting
// the whole message (https://docs.slack.dev/reference/block-kit).
func checkLimits(t *testing.T, blocks []slack.Block) {
	t.Helper()
	if len(blocks) > maxBlocks {
		t.Errorf("%d blocks, want at most %d", len(blocks), maxBlocks)
	}
	text := func(where string, o *slack.TextBlockObject, max int) {
		t.Helper()
		if o == nil {
			return
		}
		if err := o.Validate(); err != nil {
			t.Errorf("%s: %v", where, err)
		}
		if n := utf8.RuneCountInString(o.Text); n > max {
			t.Errorf("%s: %d characters, want at most %d", where, n, max)
		}
	}
	actions := 0
	for i, b := range blocks {
		switch b := b.(type) {
		case *slack.HeaderBlock:
			text("header", b.Text, maxHeaderText)
		case *slack.SectionBlock:
			if b.Text == nil && len(b.Fields) == 0 {
				t.Errorf("block %d: empty section", i)
			}
			text("section", b.Text, maxSectionText)
			if len(b.Fields) > maxFields {
				t.Errorf("block %d: %d fields, want at most %d", i, len(b.Fields), maxFields)
			}
			for _, f := range b.Fields {
				text("field", f, maxFieldText)
			}
		case *slack.ContextBlock:
			if n := len(b.ContextElements.Elements); n == 0 || n > maxContextElems {
				t.Errorf("block %d: %d context elements, want 1 to %d", i, n, maxContextElems)
			}
			for _, e := range b.ContextElements.Elements {
				if o, ok := e.(*slack.TextBlockObject); ok {
					text("context", o, maxSectionText)
				}
			}
		case *slack.ActionBlock:
			actions++
			if b.BlockID != ActionsBlockID {
				t.Errorf("actions block_id = %q, want %q", b.BlockID, ActionsBlockID)
			}
			if n := len(b.Elements.ElementSet); n == 0 || n > 25 {
				t.Errorf("block %d: %d action elements, want 1 to 25", i, n)
			}
			for _, e := range b.Elements.ElementSet {
				btn := e.(*slack.ButtonBlockElement)
				text("button", btn.Text, maxButtonText)
				if len(btn.Value) > 2000 || len(btn.ActionID) > 255 {
					t.Errorf("button %s: value or action_id too long", btn.ActionID)
				}
				if c := btn.Confirm; c != nil {
					text("confirm title", c.Title, maxConfirmTitle)
					text("confirm text", c.Text, maxConfirmText)
					text("confirm button", c.Confirm, maxConfirmButton)
					text("deny button", c.Deny, maxConfirmButton)
				}
			}
		case *slack.DividerBlock:
		default:
			t.Errorf("block %d: unexpected block type %T", i, b)
		}
	}
	if actions > 1 {
		t.Errorf("%d actions blocks, want at most one", actions)
	}
}

// TestTruncateAtBoundary: every cut text fits its limit and ends at a word or name boundary.
func TestTruncateAtBoundary(t *testing.T) {
	names := make([]string, 60)
	for i := range names {
		names[i] = fmt.Sprintf("orders-aurora-%02d", i)
	}
	long := strings.Join(names, ", ")
	for _, n := range []int{30, 75, 150, 300, 3000} {
		got := truncate(long, n)
		if c := utf8.RuneCountInString(got); c > n {
			t.Errorf("truncate(%d): %d runes", n, c)
		}
		if len(long) > n {
			body := strings.TrimSuffix(got, " …")
			last := body[strings.LastIndex(body, " ")+1:]
			if !slices.Contains(names, last) {
				t.Errorf("truncate(%d) = %q: cut inside the name %q", n, got, last)
			}
		}
	}
	if got := truncate(strings.Repeat("x", 40), 10); utf8.RuneCountInString(got) != 10 || !strings.HasSuffix(got, "…") {
		t.Errorf("one long word: %q", got)
	}
	if got := listNames(names, 10); !strings.HasSuffix(got, "orders-aurora-09 … and 50 more") {
		t.Errorf("listNames: %q", got)
	}
}

// TestPlainText: the plain-text form carries the message's facts, without its buttons.
func TestPlainText(t *testing.T) {
	inc := disabledThree()
	blocks, _ := Render(inc, at("2026-03-11T09:00:00Z"))
	got := PlainText(blocks)
	for _, c := range inc.Clusters {
		if !strings.Contains(got, c.Identifier) {
			t.Errorf("plain text lacks cluster %s:\n%s", c.Identifier, got)
		}
	}
	for _, want := range []string{inc.ID, "version"} {
		if !strings.Contains(got, want) {
			t.Errorf("plain text lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "action_id") {
		t.Errorf("plain text has buttons:\n%s", got)
	}
}
