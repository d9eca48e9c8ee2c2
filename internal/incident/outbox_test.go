package incident

import "testing"

func TestSlackOutbox(t *testing.T) {
	inc := Incident{Version: 3}
	for _, k := range []Kind{KindDelivery, KindReminder, KindNote} {
		inc.AddEntry(Entry{Kind: k, Detail: string(k)})
	}
	inc.Timeline = append(inc.Timeline, Entry{ID: "refusal:x", Kind: KindRefusal}) // no Seq
	for _, tc := range []struct {
		name          string
		slack         *SlackRef
		posted, shown int64
		reason        string
		msg           bool
		entries       int
		state         DeliveryState
		pending       int
	}{
		{name: "nothing delivered", msg: true, entries: 2, state: DeliveryPending, pending: 3},
		{name: "message shown, replies pending", slack: &SlackRef{"C1", "1.1"}, shown: 3, entries: 2, state: DeliveryPending, pending: 2},
		{name: "all delivered (the reminder is the reconciler's)", slack: &SlackRef{"C1", "1.1"}, shown: 3, posted: 3, state: DeliveryDelivered},
		{name: "an older version shown", slack: &SlackRef{"C1", "1.1"}, shown: 2, posted: 3, msg: true, state: DeliveryPending, pending: 1},
		{name: "failed", reason: "is_archived", msg: true, entries: 2, state: DeliveryFailed, pending: 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := inc
			c.Slack, c.SlackPosted, c.SlackShown, c.SlackDelivery = tc.slack, tc.posted, tc.shown, SlackDelivery{Reason: tc.reason}
			msg, entries := c.SlackOutbox()
			if msg != tc.msg || len(entries) != tc.entries {
				t.Errorf("SlackOutbox: got %v, %d entries; want %v, %d", msg, len(entries), tc.msg, tc.entries)
			}
			c.SettleSlackDelivery()
			if c.SlackDelivery.State != tc.state || c.SlackDelivery.Pending != tc.pending {
				t.Errorf("SettleSlackDelivery: got %+v, want %s with %d pending", c.SlackDelivery, tc.state, tc.pending)
			}
		})
	}
}
