package slackmessage

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/slack-go/slack"

	"github.com/keywarden/keywarden/internal/incident"
)

// maxClusterLines caps the clusters listed one by one: beyond it the list stops being read, and
// "and N more" keeps the message inside Block Kit's limits for any blast radius.
const maxClusterLines = 20

// maxOtherLines caps the other-engine databases listed one by one.
const maxOtherLines = 10

// Render renders the incident's main message at time now. fallback is the plain text Slack
// shows in notifications and to clients that cannot draw blocks.
func Render(inc incident.Incident, now time.Time) (blocks []slack.Block, fallback string) {
	sev := Severity(inc, now)
	instead := notFixable(inc)

	blocks = append(blocks, slack.NewHeaderBlock(plain(truncate(headline(inc, sev), maxHeaderText))))
	blocks = append(blocks, keyBlock(inc, sev))
	blocks = append(blocks, actorBlock(inc))
	if !inc.State.Closed() {
		blocks = append(blocks, deadlineBlock(inc, now))
	}
	blocks = append(blocks, slack.NewDividerBlock())
	blocks = append(blocks, dependentBlocks(inc, now)...)
	blocks = append(blocks, slack.NewDividerBlock())
	if instead != "" && inc.State != incident.StateIntentional {
		blocks = append(blocks, section(":no_entry: *One click cannot fix this.* "+esc(instead)))
	}
	blocks = append(blocks, stateBlock(inc, now))
	if a := actionsBlock(inc); a != nil {
		blocks = append(blocks, a)
	}
	if r := RebootBlock(inc); r != nil {
		blocks = append(blocks, r)
	}
	blocks = append(blocks, slack.NewContextBlock("", mrkdwn(fmt.Sprintf("keywarden · %s · version %d · updated %s",
		esc(inc.ID), inc.Version, utc(now)))))
	return blocks, fallbackText(inc, sev, now)
}

func plain(s string) *slack.TextBlockObject {
	return slack.NewTextBlockObject(slack.PlainTextType, s, true, false)
}

func mrkdwn(s string) *slack.TextBlockObject {
	return slack.NewTextBlockObject(slack.MarkdownType, s, false, false)
}

func section(text string) *slack.SectionBlock {
	return slack.NewSectionBlock(mrkdwn(truncate(text, maxSectionText)), nil, nil)
}

var severityEmoji = map[string]string{
	SeverityCritical:                  ":rotating_light:",
	SeverityHigh:                      ":warning:",
	SeverityLow:                       ":large_blue_circle:",
	string(incident.StateResolved):    ":white_check_mark:",
	string(incident.StateIntentional): ":information_source:",
	string(incident.StateLost):        ":x:",
}

// headline is the header line: severity first, because it decides who stops what they are
// doing, then which key and what happened to it.
func headline(inc incident.Incident, sev string) string {
	return fmt.Sprintf("%s %s: Aurora key %s %s", severityEmoji[sev], strings.ToUpper(sev), keyLabel(inc), keyPhrase(inc))
}

// keyPhrase says what happened to the key in words, from its last known KMS state.
func keyPhrase(inc incident.Incident) string {
	if inc.KeyDeleted() {
		return "deleted"
	}
	switch inc.KeyState {
	case incident.KeyStateDisabled:
		return "disabled"
	case incident.KeyStatePendingDeletion:
		return "scheduled for deletion"
	case incident.KeyStatePendingReplicaDeletion:
		return "scheduled for deletion (waiting for its replicas)"
	case incident.KeyStatePendingImport:
		return "lost its imported key material"
	case incident.KeyStateUnavailable:
		return "unavailable (custom key store disconnected)"
	case incident.KeyStateEnabled:
		return "enabled again"
	case "":
		return "unusable"
	}
	return "unusable (" + string(inc.KeyState) + ")"
}

// keyStateText is the key's state as KMS last reported it; a deleted key that DescribeKey no
// longer finds reads as deleted rather than blank.
func keyStateText(inc incident.Incident) string {
	if inc.KeyState == "" && inc.KeyDeleted() {
		return "deleted (DescribeKey: not found)"
	}
	return stateWord(inc.KeyState)
}

func keyBlock(inc incident.Incident, sev string) *slack.SectionBlock {
	fields := []*slack.TextBlockObject{
		mrkdwn("*Severity*\n" + esc(sev)),
		mrkdwn("*Incident*\n" + esc(inc.ID) + " (" + esc(string(inc.State)) + ")"),
		mrkdwn(truncate("*Key*\n"+code(keyLabel(inc))+"\n"+code(inc.KeyARN), maxFieldText)),
		mrkdwn("*Key state*\n" + code(keyStateText(inc))),
	}
	if inc.KeyDeletionDate != nil {
		fields = append(fields, mrkdwn("*Deletion date*\n"+utc(*inc.KeyDeletionDate)+"\n"+dateToken(*inc.KeyDeletionDate)))
	}
	return slack.NewSectionBlock(nil, fields, nil, slack.SectionBlockOptionBlockID("incident_key"))
}

// actorBlock says who did what from where: CloudTrail's view of the call, which is the first
// thing on-call asks and the one thing that cannot be found later without Event history.
func actorBlock(inc incident.Incident) *slack.SectionBlock {
	var b strings.Builder
	if inc.Actor == (incident.Actor{}) {
		// KMS's own events (KMS CMK Deletion, imported material expiry) name no caller.
		fmt.Fprintf(&b, "*%s* reported by AWS KMS (no caller recorded)", esc(cmp.Or(inc.Trigger, "Key event")))
	} else {
		fmt.Fprintf(&b, "*%s* by %s", esc(cmp.Or(inc.Trigger, "Key event")), code(inc.Actor.Name()))
	}
	if inc.Actor.Type != "" && inc.Actor.ARN != "" {
		fmt.Fprintf(&b, " (%s)", esc(inc.Actor.Type))
	}
	if inc.Actor.Principal != "" && inc.Actor.Principal != inc.Actor.Name() {
		fmt.Fprintf(&b, ", principal %s", code(inc.Actor.Principal))
	}
	if !inc.LostAt.IsZero() {
		fmt.Fprintf(&b, " at %s", utc(inc.LostAt))
	}
	if inc.TriggerDetail != "" {
		fmt.Fprintf(&b, "\n%s", esc(truncate(inc.TriggerDetail, 300)))
	}
	if inc.Actor.SourceIP != "" {
		fmt.Fprintf(&b, "\nFrom %s", code(inc.Actor.SourceIP))
	}
	if inc.Actor.AccountID != "" {
		fmt.Fprintf(&b, " · account %s", code(inc.Actor.AccountID))
	}
	if inc.Actor.UserAgent != "" {
		fmt.Fprintf(&b, "\nUser agent %s", code(truncate(inc.Actor.UserAgent, 300)))
	}
	if inc.Deliveries > 1 {
		fmt.Fprintf(&b, "\n_%d deliveries of the event, one incident._", inc.Deliveries)
	}
	return slack.NewSectionBlock(mrkdwn(truncate(b.String(), maxSectionText)), nil, nil, slack.SectionBlockOptionBlockID("incident_actor"))
}

// deadlineBlock shows the deadline twice: as absolute UTC, which everyone can quote to each
// other, and as Slack's date token, which each reader sees in their own time zone.
func deadlineBlock(inc incident.Incident, now time.Time) *slack.SectionBlock {
	var text string
	switch {
	case inc.SnapshotOnly() && inc.KeyDeletionDate != nil && inc.KeyState.PendingDeletion():
		// Issue 9: a key that protects only DR copies is low severity, but says when they go.
		d := *inc.KeyDeletionDate
		text = fmt.Sprintf(":hourglass_flowing_sand: *No cluster depends on the key*, but %d snapshot(s) or backup(s) do: these backups become unrestorable on *%s* (%s your time) — *%s*.",
			max(inc.SnapshotCount, len(inc.Snapshots)), utc(d), dateToken(d), countdown(d.Sub(now)))
	case inc.Deadline != nil:
		text = fmt.Sprintf(":hourglass_flowing_sand: *Deadline %s* (%s your time) — *%s*\n%s",
			utc(*inc.Deadline), dateToken(*inc.Deadline), countdown(inc.Deadline.Sub(now)), deadlineReason(inc))
		if inc.Critical {
			text += "\nAlso: a cluster that cannot stop has no recoverable window and is hurt now."
		}
	case inc.KeyDeleted():
		text = ":hourglass: *No deadline left*: the key is deleted."
	case inc.Critical:
		text = ":hourglass: *No recoverable window*: a cluster that cannot stop is hurt from the first minute, and Aurora may make it terminal without the 7-day grace."
	default:
		text = ":hourglass: *No deadline yet*: no dependent cluster has lost key access so far."
	}
	// Issue 9: say when the countdown is an estimate, and when the dependents may be more.
	if inc.WindowEstimated && inc.Deadline != nil {
		text += "\n_Window estimated: nothing dated the loss, so it runs from when keywarden found it; the real deadline may be earlier._"
	}
	switch {
	case inc.RadiusIncomplete && len(inc.AccountsFailed) > 0:
		text += "\n" + accountsFailedText(inc)
	case inc.RadiusIncomplete:
		text += "\n_Blast radius incomplete: a listing failed; the next delivery or reconcile run completes it._"
	}
	return slack.NewSectionBlock(mrkdwn(text), nil, nil, slack.SectionBlockOptionBlockID("incident_deadline"))
}

// deadlineReason says what happens at the deadline, because the two causes call for different
// urgency: a key deletion ends everything, a cluster's window ends that cluster.
func deadlineReason(inc incident.Incident) string {
	if inc.KeyState == incident.KeyStatePendingDeletion && inc.KeyDeletionDate != nil && inc.KeyDeletionDate.Equal(*inc.Deadline) {
		return "KMS deletes the key for good then; every cluster, snapshot and backup under it becomes unrecoverable."
	}
	var ids []string
	for _, c := range inc.Clusters {
		if c.Deadline != nil && c.Deadline.Equal(*inc.Deadline) && !c.Recovered && !c.Lost {
			ids = append(ids, c.Identifier)
		}
	}
	switch len(ids) {
	case 0:
		return "The first dependent is lost for good then."
	case 1:
		return fmt.Sprintf("%s's 7-day recoverable window ends then and it turns terminal (restore from backup only).", code(ids[0]))
	}
	return fmt.Sprintf("The 7-day recoverable windows of %d clusters end then and they turn terminal (restore from backup only).", len(ids))
}

// dependentBlocks lists what depends on the key, most urgent first, one or two lines per
// cluster, packed into as few sections as the 3000-character limit allows.
func dependentBlocks(inc incident.Incident, now time.Time) []slack.Block {
	clusters := slices.Clone(inc.Clusters)
	slices.SortStableFunc(clusters, byUrgency)

	instances := map[string]int{}
	lostAccess := 0
	for _, in := range inc.Instances {
		instances[in.ClusterIdentifier]++
		if in.LostKeyAccess {
			lostAccess++
		}
	}
	snapshots := map[string]int{}
	for _, s := range inc.Snapshots {
		snapshots[s.ClusterIdentifier]++
	}

	var lines []string
	if inc.Organization {
		// Issue 13: the organisation's clusters grouped by account (by ID), most urgent first within each.
		slices.SortStableFunc(clusters, func(a, b incident.Cluster) int { return strings.Compare(a.Account, b.Account) })
	}
	account := "\x00"
	for i, c := range clusters {
		if i == maxClusterLines {
			lines = append(lines, fmt.Sprintf("_…and %d more clusters: `keywarden incidents --json` lists them all._", len(clusters)-i))
			break
		}
		if inc.Organization && c.Account != account {
			account = c.Account
			lines = append(lines, accountHeading(inc, account))
		}
		lines = append(lines, clusterLine(c, instances[c.Identifier], snapshots[c.Identifier], inc, now))
	}
	title := fmt.Sprintf("*Aurora clusters using this key: %d*", len(clusters))
	if len(clusters) == 0 {
		title = "*No Aurora cluster uses this key.*"
	}
	blocks := packSections(title, lines)

	var totals []string
	if n := len(inc.Instances); n > 0 {
		t := plural(n, "instance", "instances")
		if lostAccess > 0 {
			t += fmt.Sprintf(" (%d reported lost key access)", lostAccess)
		}
		totals = append(totals, t)
	}
	if n := len(inc.Snapshots); n > 0 {
		totals = append(totals, plural(n, "snapshot or backup", "snapshots and backups")+" encrypted with this key — a restore needs the key too")
	}
	if len(totals) > 0 {
		blocks = append(blocks, slack.NewContextBlock("incident_totals", mrkdwn(truncate(strings.Join(totals, " · "), maxSectionText))))
	}

	if len(inc.OtherEngines) > 0 {
		other := []string{}
		for i, c := range inc.OtherEngines {
			if i == maxOtherLines {
				other = append(other, fmt.Sprintf("_…and %d more._", len(inc.OtherEngines)-i))
				break
			}
			other = append(other, fmt.Sprintf("• %s · %s · %s", code(c.Identifier), esc(c.Engine), code(string(c.Status))))
		}
		blocks = append(blocks, packSections(
			fmt.Sprintf("*Other databases using this key: %d* — the one-click fix enables the key but does not restart these; check them after.", len(inc.OtherEngines)),
			other)...)
	}
	return blocks
}

// byUrgency orders clusters as on-call should look at them: those with no window, then by
// deadline, then the ones already lost, then the recovered.
func byUrgency(a, b incident.Cluster) int {
	rank := func(c incident.Cluster) int {
		switch {
		case c.Recovered:
			return 3
		case c.Lost:
			return 2
		case !c.CanStop:
			return 0
		}
		return 1
	}
	if r := cmp.Compare(rank(a), rank(b)); r != 0 {
		return r
	}
	return incident.CompareDeadlines(a.Deadline, b.Deadline)
}

func clusterLine(c incident.Cluster, instances, snapshots int, inc incident.Incident, now time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "• *%s* · %s · %s", esc(c.Identifier), esc(c.Engine), code(string(c.Status)))
	if instances > 0 {
		b.WriteString(" · " + plural(instances, "instance", "instances"))
	}
	if snapshots > 0 {
		b.WriteString(" · " + plural(snapshots, "snapshot", "snapshots"))
	}
	b.WriteString("\n      ")
	switch {
	case c.Recovered:
		b.WriteString(":white_check_mark: recovered")
	case c.Lost && inc.KeyDeleted():
		b.WriteString(":x: terminal — unrecoverable, the key is deleted")
	case c.Lost:
		b.WriteString(":x: terminal — restore from a snapshot or PITR with the key enabled")
	case !c.CanStop:
		b.WriteString(":red_circle: *no recoverable window*")
		if c.CannotStopReason != "" {
			b.WriteString(" (" + esc(c.CannotStopReason) + ")")
		}
	case c.Deadline != nil:
		until := "recoverable until"
		if inc.KeyState == incident.KeyStatePendingDeletion && inc.KeyDeletionDate != nil && c.Deadline.Equal(*inc.KeyDeletionDate) {
			until = "until the key's deletion"
		}
		fmt.Fprintf(&b, "%s %s (%s)", until, utc(*c.Deadline), countdown(c.Deadline.Sub(now)))
	default:
		b.WriteString("still running; a 7-day window starts when it loses key access")
	}
	if len(c.Uses) > 0 && !slices.Equal(c.Uses, []string{"storage"}) {
		b.WriteString(" · key protects " + esc(strings.Join(c.Uses, ", ")))
	}
	return truncate(b.String(), maxSectionText-200)
}

// packSections puts a title and lines into sections of at most maxSectionText characters,
// never splitting a line.
func packSections(title string, lines []string) []slack.Block {
	var blocks []slack.Block
	cur := title
	for _, l := range lines {
		if len([]rune(cur))+1+len([]rune(l)) > maxSectionText {
			blocks = append(blocks, section(cur))
			cur = l
			continue
		}
		cur += "\n" + l
	}
	return append(blocks, section(cur))
}

// stateBlock says where the incident stands and who has taken it on, read from the typed
// record — Approvals, the Remediation's approvers, click and state entries' actors — so that
// the message and the audit trail cannot disagree.
func stateBlock(inc incident.Incident, now time.Time) *slack.SectionBlock {
	var b strings.Builder
	switch inc.State {
	case incident.StateOpen:
		b.WriteString("*State:* open")
	case incident.StateRemediating:
		b.WriteString("*State:* :gear: remediating — each step is posted in the thread")
	default:
		fmt.Fprintf(&b, "*Final state:* %s %s", severityEmoji[string(inc.State)], esc(string(inc.State)))
		if inc.ClosedAt != nil {
			fmt.Fprintf(&b, " at %s", utc(*inc.ClosedAt))
		}
		if e, ok := closingEntry(inc); ok {
			b.WriteString(" — " + esc(truncate(e.Text(), 500)))
		}
	}
	for _, p := range []struct {
		label string
		users []string
	}{
		{"Acknowledged by", clickers(inc.Timeline, incident.Result(ActionAcknowledge))},
		{"Approved by", approvers(inc)},
		{"Marked intentional by", stateActors(inc.Timeline, incident.StateIntentional)},
	} {
		if len(p.users) > 0 {
			names := make([]string, len(p.users))
			for i, id := range p.users {
				names[i] = who(id)
			}
			fmt.Fprintf(&b, "\n*%s* %s", p.label, listNames(names, 10))
		}
	}
	return slack.NewSectionBlock(mrkdwn(truncate(b.String(), maxSectionText)), nil, nil, slack.SectionBlockOptionBlockID("incident_state"))
}

// clickers lists, in order and once each, the users whose acted-on clicks (KindClick entries)
// had result action. Refused clicks are KindRefusal entries and never count.
func clickers(tl []incident.Entry, action incident.Result) []string {
	var users []string
	for _, e := range tl {
		if e.Kind == incident.KindClick && e.Result == action && e.Actor != "" && !slices.Contains(users, e.Actor) {
			users = append(users, e.Actor)
		}
	}
	return users
}

// approvers is who approved what the message shows: the approvers of the running or last
// remediation once one started, otherwise the approvals counting in the current round.
func approvers(inc incident.Incident) []string {
	if inc.State == incident.StateOpen {
		return inc.RoundApprovers()
	}
	return inc.Remediation.ApprovedBy
}

// stateActors lists, once each, who moved the incident to state to.
func stateActors(tl []incident.Entry, to incident.State) []string {
	var users []string
	for _, e := range tl {
		if e.Kind == incident.KindState && e.Result == incident.Result(to) && e.Actor != "" &&
			e.Actor != incident.Keywarden && !slices.Contains(users, e.Actor) {
			users = append(users, e.Actor)
		}
	}
	return users
}

// closingEntry is the state entry that closed the incident: its text says why.
func closingEntry(inc incident.Incident) (incident.Entry, bool) {
	for i := len(inc.Timeline) - 1; i >= 0; i-- {
		if e := inc.Timeline[i]; e.Kind == incident.KindState && e.Result == incident.Result(inc.State) {
			return e, true
		}
	}
	return incident.Entry{}, false
}

// actionsBlock holds the buttons. Closed incidents get none; a running remediation keeps only
// acknowledge, so nobody starts it twice; remediate appears only when one click can fix it and
// the plan has something to run, and its confirm dialog lists exactly the plan's running steps.
func actionsBlock(inc incident.Incident) *slack.ActionBlock {
	if inc.State.Closed() {
		return nil
	}
	value := ButtonValue(inc.ID, inc.Version)
	var elems []slack.BlockElement
	if steps, text := ConfirmSteps(inc); len(steps) > 0 && inc.State == incident.StateOpen {
		elems = append(elems, slack.NewButtonBlockElement(ActionRemediate, value, plain("Re-enable key & restart clusters")).
			WithStyle(slack.StylePrimary).
			WithConfirm(slack.NewConfirmationBlockObject(
				plain("Re-enable key & restart?"),
				plain(text),
				plain("Run it"), plain("Cancel")).WithStyle(slack.StylePrimary)))
	}
	elems = append(elems, slack.NewButtonBlockElement(ActionAcknowledge, value, plain("Acknowledge")))
	if inc.State == incident.StateOpen {
		text := fmt.Sprintf("Closes %s as intended: reminders stop and no fix runs.", inc.ID)
		if n := active(inc.Clusters); n > 0 {
			text += " " + plural(n, "Aurora cluster stays", "Aurora clusters stay") + " without the key."
		}
		elems = append(elems, slack.NewButtonBlockElement(ActionIntentional, value, plain("Intentional")).
			WithStyle(slack.StyleDanger).
			WithConfirm(slack.NewConfirmationBlockObject(
				plain("Mark as intentional?"),
				plain(truncate(text, maxConfirmText)),
				plain("Mark intentional"), plain("Cancel")).WithStyle(slack.StyleDanger)))
	}
	return slack.NewActionBlock(ActionsBlockID, elems...)
}

// fallbackText is the notification line: it must carry the severity, the key and the time
// left on its own, because it is all a phone's lock screen shows.
func fallbackText(inc incident.Incident, sev string, now time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "[%s] %s: Aurora key %s %s", strings.ToUpper(sev), inc.ID, keyLabel(inc), keyPhrase(inc))
	switch {
	case inc.Trigger != "" && inc.Actor != (incident.Actor{}):
		fmt.Fprintf(&b, " (%s by %s)", inc.Trigger, inc.Actor.Name())
	case inc.Trigger != "":
		fmt.Fprintf(&b, " (%s)", inc.Trigger)
	}
	if n := len(inc.Clusters); n > 0 {
		fmt.Fprintf(&b, "; %s on it", plural(n, "cluster depends", "clusters depend"))
	}
	if !inc.State.Closed() {
		if left, ok := inc.TimeLeft(now); ok {
			fmt.Fprintf(&b, "; %s", countdown(left))
		} else if inc.Critical {
			b.WriteString("; no recoverable window")
		}
	}
	return esc(truncate(b.String(), maxSectionText))
}

// accountHeading names an account above its clusters (organization mode): its ID, and its name
// when Organizations gave one.
func accountHeading(inc incident.Incident, account string) string {
	if account == "" {
		return "_Account unknown_"
	}
	if name := inc.AccountName(account); name != "" {
		return fmt.Sprintf(":office: *Account %s* (%s)", code(account), esc(name))
	}
	return fmt.Sprintf(":office: *Account %s*", code(account))
}

// accountsFailedText names the accounts an organisation-wide search could not read, and why:
// their dependents may be missing from the message.
func accountsFailedText(inc incident.Incident) string {
	parts := make([]string, 0, len(inc.AccountsFailed))
	for _, f := range inc.AccountsFailed {
		name := code(f.Account)
		if n := inc.AccountName(f.Account); n != "" {
			name += " (" + esc(n) + ")"
		}
		parts = append(parts, name+": "+esc(truncate(f.Reason, 200)))
	}
	return truncate("_Blast radius incomplete: "+plural(len(parts), "account was", "accounts were")+" not searched — "+
		strings.Join(parts, "; ")+". Their clusters may be missing here; the next delivery or reconcile run tries again._", 1500)
}
