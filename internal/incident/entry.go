package incident

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Kind says what a timeline entry records.
type Kind string

// Timeline entry kinds.
const (
	// KindDelivery: an event that concerns the incident arrived (Source is its EventBridge ID).
	KindDelivery Kind = "delivery"
	// KindKeyChange: the key's state changed (Result is the new KMS key state).
	KindKeyChange Kind = "key-change"
	// KindClusterChange: a dependent cluster or instance changed (Target names it).
	KindClusterChange Kind = "cluster-change"
	// KindRDSEvent: an RDS event about a dependent (Result is its RDS-EVENT ID).
	KindRDSEvent Kind = "rds-event"
	// KindClick: an approver's click that was acted on (Result is the action).
	KindClick Kind = "click"
	// KindApproval: an approval counted towards the quorum.
	KindApproval Kind = "approval"
	// KindRefusal: a click that changed nothing (a stranger, a stale message, a closed
	// incident). The store keeps refusals beside the incident without touching its head.
	KindRefusal Kind = "refusal"
	// KindRemediationStep: one remediation step and its API result.
	KindRemediationStep Kind = "remediation-step"
	// KindReminder: a countdown reminder was posted.
	KindReminder Kind = "reminder"
	// KindSlackDelivery: something about the incident's Slack message itself.
	KindSlackDelivery Kind = "slack-delivery"
	// KindState: the incident changed state (Result is the new State).
	KindState Kind = "state"
	// KindNote: anything else worth telling people.
	KindNote Kind = "note"
)

// Result is the outcome an entry records, for machines as well as people.
type Result string

// Results of entries. A state entry's Result is the new State and a key change's the new key
// state; these cover the rest.
const (
	ResultOK       Result = "ok"
	ResultFailed   Result = "failed"
	ResultSkipped  Result = "skipped"
	ResultRefused  Result = "refused"
	ResultApproved Result = "approved"
	ResultPosted   Result = "posted"
)

// Entry is one line of the timeline; its JSON always has id, seq, at, kind, actor, target and
// result (`keywarden incidents <id> --json` is a contract). Entries are immutable once written: the store writes an
// entry once per ID however often it is added.
type Entry struct {
	// ID is deterministic, derived from what caused the entry: the EventBridge event ID, the
	// Slack action_ts and user, the remediation run and step. Adding an entry whose ID is
	// already on the timeline changes nothing, so a retried write cannot duplicate it.
	ID string `json:"id"`
	// Seq orders the entries of one incident (1, 2, …); the store gives it. Refusals, which
	// do not touch the incident's head, have none (0).
	Seq  int64     `json:"seq"`
	At   time.Time `json:"at"`
	Kind Kind      `json:"kind"`
	// Actor is who did it: an IAM principal's ARN, a Slack user ID, or "keywarden".
	Actor string `json:"actor"`
	// Target is what it was done to: a key ARN, a cluster or instance identifier.
	Target string `json:"target"`
	Result Result `json:"result"`
	// Source is the ID of the event or click that caused the entry, when there is one.
	Source string `json:"source,omitempty"`
	// Detail is words for people. It is rendered into Slack and the CLI and never read back:
	// nothing in keywarden decides anything from it.
	Detail string `json:"detail,omitempty"`
	// Count is how many refusals one refusal entry stands for (those of one user within a
	// minute collapse into one entry and one thread reply).
	Count int `json:"count,omitempty"`
}

// Text renders the entry for people: the detail when there is one, otherwise its fields.
func (e Entry) Text() string {
	if e.Detail != "" {
		return e.Detail
	}
	parts := []string{string(e.Kind)}
	if e.Target != "" {
		parts = append(parts, e.Target)
	}
	if e.Result != "" {
		parts = append(parts, "→ "+string(e.Result))
	}
	return strings.Join(parts, " ")
}

// EntryID builds a deterministic entry ID from the parts that identify its cause, for example
// EntryID("click", actionTS, user) or EntryID("step", runID, "StartDBCluster", cluster).
func EntryID(parts ...string) string {
	return strings.Join(parts, ":")
}

// contentID is the ID of an entry added without one: a hash of what it says, so the same entry
// added twice (a retried mutation that recomputes it identically) is still stored once.
func contentID(e Entry) string {
	h := sha256.Sum256(fmt.Appendf(nil, "%s\x00%s\x00%s\x00%s\x00%s\x00%s\x00%s",
		e.At.UTC().Format(time.RFC3339Nano), e.Kind, e.Actor, e.Target, e.Result, e.Source, e.Detail))
	return string(e.Kind) + ":" + hex.EncodeToString(h[:8])
}

// AddEntry appends e to the timeline with the next Seq and reports whether it was added. An
// entry whose ID is already on the timeline is not added again. An entry without an ID gets one
// from its content; one without a time gets none set here (the store stamps it).
func (inc *Incident) AddEntry(e Entry) bool {
	if e.ID == "" {
		e.ID = contentID(e)
	}
	if inc.HasEntry(e.ID) {
		return false
	}
	inc.TimelineSeq = max(inc.TimelineSeq, inc.maxSeq()) + 1
	e.Seq = inc.TimelineSeq
	e.At = e.At.UTC()
	inc.Timeline = append(slices.Clip(inc.Timeline), e)
	return true
}

// HasEntry reports whether an entry with this ID is on the timeline.
func (inc *Incident) HasEntry(id string) bool {
	return slices.ContainsFunc(inc.Timeline, func(e Entry) bool { return e.ID == id })
}

func (inc *Incident) maxSeq() int64 {
	var m int64
	for _, e := range inc.Timeline {
		m = max(m, e.Seq)
	}
	return m
}

// RecordDelivery adds a delivery entry for one event and counts it, once per event: e.Source
// must be the event's ID (EventBridge's `id`), which is also the entry's ID. It reports whether
// the event was new.
func (inc *Incident) RecordDelivery(e Entry) bool {
	e.Kind = KindDelivery
	if e.ID == "" {
		e.ID = EntryID("delivery", e.Source)
	}
	if !inc.AddEntry(e) {
		return false
	}
	inc.Deliveries++
	return true
}

// LastEntry returns the latest entry of kind k, if any.
func (inc *Incident) LastEntry(k Kind) (Entry, bool) {
	for i := len(inc.Timeline) - 1; i >= 0; i-- {
		if inc.Timeline[i].Kind == k {
			return inc.Timeline[i], true
		}
	}
	return Entry{}, false
}

// RefusalWindow is how long refusals of one user collapse into one entry and one thread reply.
const RefusalWindow = time.Minute

// NewRefusal is the entry for a click that changed nothing: user tried action on the incident
// and was refused for reason (words for people). Its ID names the user and the minute, so every
// refusal of one user within RefusalWindow is one entry (the store counts them).
func NewRefusal(user, action, reason, source string, at time.Time) Entry {
	at = at.UTC()
	return Entry{
		ID:     EntryID("refusal", user, at.Truncate(RefusalWindow).Format("200601021504")),
		At:     at,
		Kind:   KindRefusal,
		Actor:  user,
		Target: action,
		Result: ResultRefused,
		Source: source,
		Detail: reason,
		Count:  1,
	}
}

// SortTimeline orders entries by time, then by Seq: refusals (Seq 0), kept beside the head,
// fall among the others by their time.
func SortTimeline(tl []Entry) {
	slices.SortStableFunc(tl, func(a, b Entry) int {
		if c := a.At.Compare(b.At); c != 0 {
			return c
		}
		switch {
		case a.Seq < b.Seq:
			return -1
		case a.Seq > b.Seq:
			return 1
		}
		return strings.Compare(a.ID, b.ID)
	})
}
