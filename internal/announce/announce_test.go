package announce

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/slack-go/slack"

	"github.com/keywarden/keywarden/internal/awstest"
	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/incident/dynamostore"
	"github.com/keywarden/keywarden/internal/notify"
	"github.com/keywarden/keywarden/internal/slacktest"
	"github.com/keywarden/keywarden/internal/triage"
)

func TestMain(m *testing.M) { awstest.Main(m) }

var (
	_ triage.Announcer = (*Announcer)(nil)
	_ Store            = (*dynamostore.Store)(nil)
	_ Syncer           = (*notify.Notifier)(nil)
)

const keyARN = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"

var t0 = time.Date(2026, 11, 28, 9, 30, 0, 0, time.UTC)

type rig struct {
	store *dynamostore.Store
	slack *slacktest.Slack
	a     *Announcer
}

func newRig(t *testing.T) *rig {
	t.Helper()
	cfg := awstest.Serial(awstest.Config(t, awstest.Moto(t)))
	db := dynamodb.NewFromConfig(cfg)
	table := fmt.Sprintf("announce-%d", rand.Int64())
	if err := dynamostore.CreateTable(context.Background(), db, table); err != nil {
		t.Fatal(err)
	}
	r := &rig{store: dynamostore.New(db, table), slack: slacktest.Start(t, &slacktest.Slack{Token: "xoxb-test"})}
	client := slack.New("xoxb-test", slack.OptionAPIURL(r.slack.APIURL()))
	r.a = New(r.store, notify.New(client, "#keywarden")).WithClock(func() time.Time { return t0.Add(time.Hour) })
	return r
}

func (r *rig) open(t *testing.T, key string) incident.Incident {
	t.Helper()
	inc, _, err := r.store.Open(context.Background(), incident.Incident{
		ID: incident.NewID(t0), KeyARN: key, KeyState: incident.KeyStateDisabled, Trigger: "DisableKey", LostAt: t0,
		Clusters: []incident.Cluster{{Identifier: "orders", Engine: "aurora-postgresql", Status: incident.StatusStopped, CanStop: true, LostAccessAt: &t0}},
	}, incident.Entry{At: t0, Source: "ev-" + key, Actor: "alice", Detail: "DisableKey"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return inc
}

func (r *rig) get(t *testing.T, id string) incident.Incident {
	t.Helper()
	inc, err := r.store.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return inc
}

// threaded counts the entries a thread gets: those with a Seq (refusals have none).
func threaded(inc incident.Incident) int {
	n := 0
	for _, e := range inc.Timeline {
		if e.Seq > 0 {
			n++
		}
	}
	return n
}

func TestAnnouncePostsThenUpdates(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	inc := r.open(t, keyARN)

	if err := r.a.Announce(ctx, inc); err != nil {
		t.Fatalf("first Announce: %v", err)
	}
	got := r.get(t, inc.ID)
	if got.Slack == nil || got.Slack.Channel != slacktest.Channel || got.SlackPosted != got.TimelineSeq || got.Version != inc.Version {
		t.Fatalf("after first Announce: slack %+v, posted %d, version %d; want the message, %d, version %d",
			got.Slack, got.SlackPosted, got.Version, got.TimelineSeq, inc.Version)
	}
	posts := r.slack.Calls("chat.postMessage")
	if len(posts) != 1+threaded(got) || posts[0].ThreadTS != "" || posts[1].ThreadTS != got.Slack.TS {
		t.Fatalf("first Announce: got %d posts %+v, want the message and its %d entries in its thread", len(posts), posts, threaded(got))
	}

	// The same incident again: the message is updated, nothing is replied twice.
	r.slack.Reset()
	if err := r.a.Announce(ctx, got); err != nil {
		t.Fatalf("repeat Announce: %v", err)
	}
	if calls := r.slack.Calls(); len(calls) != 1 || calls[0].Method != "chat.update" {
		t.Errorf("repeat Announce: got %+v, want one chat.update", calls)
	}

	// A change: one more reply.
	r.slack.Reset()
	next, err := r.store.Update(ctx, inc.ID, func(i *incident.Incident) error {
		i.AddEntry(incident.Entry{ID: incident.EntryID("click", "1795860001.000200", "U0APPROVR1"), At: t0,
			Kind: incident.KindClick, Actor: "U0APPROVR1", Result: "acknowledge", Detail: "acknowledge: on it"})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.a.Announce(ctx, next); err != nil {
		t.Fatalf("Announce after a change: %v", err)
	}
	calls := r.slack.Calls()
	if len(calls) != 2 || calls[0].Method != "chat.update" || calls[1].ThreadTS != got.Slack.TS {
		t.Errorf("Announce after a change: got %+v, want chat.update then one reply", calls)
	}
	if got := r.get(t, inc.ID); got.SlackPosted != next.TimelineSeq || got.Version != next.Version {
		t.Errorf("after the change: posted %d, version %d, want %d, %d", got.SlackPosted, got.Version, next.TimelineSeq, next.Version)
	}
}

// Two invocations announcing a new incident at once post one message.
func TestAnnounceRacePostsOnce(t *testing.T) {
	r := newRig(t)
	inc := r.open(t, keyARN)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if err := r.a.Announce(context.Background(), inc); err != nil {
				t.Errorf("Announce: %v", err)
			}
		})
	}
	wg.Wait()
	var top int
	for _, c := range r.slack.Calls("chat.postMessage") {
		if c.ThreadTS == "" {
			top++
		}
	}
	if top != 1 {
		t.Errorf("top-level messages posted: got %d, want 1", top)
	}
}

// A failed post is returned and changes nothing stored; the next Announce after the claim
// expires (the reconciler) posts.
func TestAnnounceSlackDown(t *testing.T) {
	r := newRig(t)
	inc := r.open(t, keyARN)
	r.slack.Fail(slacktest.AnyMethod, slacktest.Fault{Error: "fatal_error"})
	if err := r.a.Announce(context.Background(), inc); err == nil {
		t.Fatal("Announce with Slack down: got nil error")
	}
	if got := r.get(t, inc.ID); got.Slack != nil || got.Version != inc.Version {
		t.Errorf("after a failed post: slack %+v, version %d, want none, %d", got.Slack, got.Version, inc.Version)
	}
	r.slack.ClearFaults()
	// Within the claim: nobody posts.
	if err := r.a.Announce(context.Background(), inc); err != nil || len(r.slack.Calls()) != 0 {
		t.Errorf("Announce within the claim: err %v, calls %+v, want nothing done", err, r.slack.Calls())
	}
	later := *r.a
	later.store = r.store.WithClock(func() time.Time { return time.Now().Add(PostClaimTTL + time.Minute) })
	if err := later.Announce(context.Background(), inc); err != nil {
		t.Fatalf("Announce after the claim expired: %v", err)
	}
	if got := r.get(t, inc.ID); got.Slack == nil || got.SlackPosted != got.TimelineSeq {
		t.Errorf("after the repair: slack %+v, posted %d, want the message and %d", got.Slack, got.SlackPosted, got.TimelineSeq)
	}
}

// TestAnnounceLongTimeline: every entry of a long timeline reaches the thread once, in Seq
// order, and a later Announce posts only what was added since. The store keeps every entry.
func TestAnnounceLongTimeline(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	inc := r.open(t, keyARN)
	if err := r.a.Announce(ctx, inc); err != nil {
		t.Fatal(err)
	}
	add := func(n int, tag string) incident.Incident {
		t.Helper()
		got, err := r.store.Update(ctx, inc.ID, func(i *incident.Incident) error {
			for k := range n {
				i.AddEntry(incident.Entry{ID: fmt.Sprintf("note:%s:%d", tag, k), At: t0, Kind: incident.KindNote, Detail: fmt.Sprintf("%s %d", tag, k)})
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	r.slack.Reset()
	big := add(400, "b")
	if err := r.a.Announce(ctx, big); err != nil {
		t.Fatal(err)
	}
	var replies []string
	for _, c := range r.slack.Calls("chat.postMessage") {
		replies = append(replies, c.Text)
	}
	if len(replies) != 400 {
		t.Fatalf("replies: got %d, want 400", len(replies))
	}
	for k, text := range replies {
		if want := fmt.Sprintf("b %d", k); !strings.HasSuffix(text, want) {
			t.Fatalf("reply %d = %q, want it to end with %q (Seq order)", k, text, want)
		}
	}
	if got := r.get(t, inc.ID); got.SlackPosted != big.TimelineSeq || len(got.Timeline) < 401 {
		t.Errorf("after 400 entries: posted %d, timeline %d, want %d and every entry kept", got.SlackPosted, len(got.Timeline), big.TimelineSeq)
	}

	r.slack.Reset()
	if err := r.a.Announce(ctx, add(5, "c")); err != nil {
		t.Fatal(err)
	}
	if replies := len(r.slack.Calls("chat.postMessage")); replies != 5 {
		t.Errorf("replies after five more: got %d, want 5", replies)
	}
}

// TestReplyRefusal: a burst of refused clicks by one user is recorded without touching the
// incident and gets one thread reply, posted for the refusal RecordRefusal reports first.
func TestReplyRefusal(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	inc := r.open(t, keyARN)
	if err := r.a.Announce(ctx, inc); err != nil {
		t.Fatal(err)
	}
	before := r.get(t, inc.ID)
	r.slack.Reset()
	for k := range 5 {
		e := incident.NewRefusal("U0STRANGER", "remediate", "remediate: refused, not an approver",
			incident.EntryID("click", fmt.Sprintf("1795860001.%06d", k), "U0STRANGER"), t0.Add(time.Duration(k)*time.Second))
		first, err := r.store.RecordRefusal(ctx, inc.ID, e)
		if err != nil {
			t.Fatal(err)
		}
		if first {
			if err := r.a.ReplyRefusal(ctx, inc.ID, e); err != nil {
				t.Fatalf("ReplyRefusal: %v", err)
			}
		}
	}
	posts := r.slack.Calls("chat.postMessage")
	if len(posts) != 1 || posts[0].ThreadTS != before.Slack.TS || !strings.Contains(posts[0].Text, "not an approver") {
		t.Errorf("replies: got %+v, want one in the thread saying not an approver", posts)
	}
	after := r.get(t, inc.ID)
	if after.Version != before.Version || after.State != before.State {
		t.Errorf("refusals changed the incident: version %d→%d, state %s→%s", before.Version, after.Version, before.State, after.State)
	}
	// The refusal (no Seq) is not posted again by the next Announce.
	r.slack.Reset()
	if err := r.a.Announce(ctx, after); err != nil {
		t.Fatal(err)
	}
	if calls := r.slack.Calls(); len(calls) != 1 || calls[0].Method != "chat.update" {
		t.Errorf("Announce after refusals: got %+v, want one chat.update", calls)
	}

	// No message yet: an error, nothing posted.
	other := r.open(t, keyARN+"0")
	if err := r.a.ReplyRefusal(ctx, other.ID, incident.NewRefusal("U0STRANGER", "remediate", "refused", "click:1:U0STRANGER", t0)); err == nil {
		t.Errorf("ReplyRefusal without a message: got nil error")
	}
}
