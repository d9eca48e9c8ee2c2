package incident

import (
	"cmp"
	"slices"
)

// The outbox: what of an incident Slack has not shown yet. Nothing is queued separately: the
// incident is the outbox. Its message is pending while it has none or shows an older Version
// (SlackShown), and each timeline entry is pending while its Seq is above SlackPosted, the
// last entry replied in the message's thread. A delivery that fails leaves both where they
// were, so the next delivery, the one-minute retry pass or the reconciler delivers them.

// SlackOutbox returns what Slack has yet to show of inc: whether the message itself is out of
// date (no message, or one showing an older Version), and the timeline entries still to reply
// in its thread, in Seq order. Reminders are not among them: the reconciler posts each one
// itself, with a mention that must ping, so replying its entry would say it twice. Refusals
// (no Seq) are replied by whoever recorded them and are never pending here.
func (inc *Incident) SlackOutbox() (message bool, entries []Entry) {
	message = inc.Slack == nil || inc.Slack.TS == "" || inc.Version > inc.SlackShown
	for _, e := range inc.Timeline {
		if e.Seq > 0 && e.Seq > inc.SlackPosted && e.Kind != KindReminder {
			entries = append(entries, e)
		}
	}
	sortBySeq(entries)
	return message, entries
}

// SettleSlackDelivery sets SlackDelivery's Pending and State from the outbox and the recorded
// failure reason: failed while a reason is recorded (Slack refused in a way retrying cannot
// fix), else pending while anything waits, else delivered. The store calls it on every read.
func (inc *Incident) SettleSlackDelivery() {
	msg, entries := inc.SlackOutbox()
	n := len(entries)
	if msg {
		n++
	}
	inc.SlackDelivery.Pending = n
	switch {
	case inc.SlackDelivery.Reason != "":
		inc.SlackDelivery.State = DeliveryFailed
	case n > 0:
		inc.SlackDelivery.State = DeliveryPending
	default:
		inc.SlackDelivery.State = DeliveryDelivered
	}
}

func sortBySeq(es []Entry) {
	slices.SortStableFunc(es, func(a, b Entry) int { return cmp.Compare(a.Seq, b.Seq) })
}
