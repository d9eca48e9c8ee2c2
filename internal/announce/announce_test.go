package announce

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/slack-go/slack"

	"github.com/keywarden/keywarden/internal/awstest"
	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/notify"
	"github.com/keywarden/keywarden/internal/slacktest"
	"github.com/keywarden/keywarden/internal/triage"
)

func TestMain(m *testing.M) { awstest.Main(m) }

var (
	_ triage.Announcer = (*Announcer)(nil)
	_ Store            = (*incident.Store)(nil)
	_ Syncer           = (*notify.Notifier)(nil)
)

const keyARN = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"

var t0 = time.Date(2026, 11, 28, 9, 30, 0, 0, time.UTC)

type rig struct {
	store *incident.Store
	slack *slacktest.Slack
	a     *Announcer
}

func newRig(t *testing.T) *rig {
	t.Helper()
	cfg := awstest.Serial(awstest.Config(t, awstest.Moto(t)))
	db := dynamodb.NewFromConfig(cfg)
	table := fmt.Sprintf("announce-%d", rand.Int64())
	if err := incident.CreateTable(context.Background(), db, table); err != nil {
		t.Fatal(err)
	}
	r := &rig{store: incident.NewStore(db, table), slack: slacktest.Start(t, &slacktest.Slack{Token: "xoxb-test"})}
	client := slack.New("xoxb-test", slack.OptionAPIURL(r.slack.APIURL()))
	r.a = New(r.store, notify.New(client, "#keywarden")).WithClock(func() time.Time { return t0.Add(time.Hour) })
	return r
}

func (r *rig) open(t *testing.T, key string) incident.Incident {
	t.Helper()
	inc, _, err := r.store.Open(context.Background(), incident.Incident{
		KeyARN: key, KeyState: "Disabled", Trigger: "DisableKey", LostAt: t0,
		Clusters: []incident.Cluster{{Identifier: "orders", Engine: "aurora-postgresql", Status: "stopped", CanStop: true, LostAccessAt: &t0}},
		Timeline: []incident.Entry{{At: t0, Kind: incident.KindOpened, Actor: "alice", Detail: "DisableKey"}},
	}, incident.Entry{At: t0, Kind: incident.KindDelivery, Detail: "DisableKey"}, nil)
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

func TestAnnouncePostsThenUpdates(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	inc := r.open(t, keyARN)

	if err := r.a.Announce(ctx, inc); err != nil {
		t.Fatalf("first Announce: %v", err)
	}
	got := r.get(t, inc.ID)
	if got.Slack == nil || got.Slack.Channel != slacktest.Channel || got.SlackPosted != 1 || got.Version != inc.Version {
		t.Fatalf("after first Announce: slack %+v, posted %d, version %d; want the message, 1, version %d", got.Slack, got.SlackPosted, got.Version, inc.Version)
	}
	posts := r.slack.Calls("chat.postMessage")
	if len(posts) != 2 || posts[0].ThreadTS != "" || posts[1].ThreadTS != got.Slack.TS {
		t.Fatalf("first Announce: got %d posts %+v, want the message and the opening entry in its thread", len(posts), posts)
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
		i.Timeline = append(i.Timeline, incident.Entry{At: t0, Kind: incident.KindClick, Actor: "U0APPROVR1", Detail: "acknowledge"})
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
	if got := r.get(t, inc.ID); got.SlackPosted != 2 || got.Version != next.Version {
		t.Errorf("after the change: posted %d, version %d, want 2, %d", got.SlackPosted, got.Version, next.Version)
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
	if got := r.get(t, inc.ID); got.Slack == nil || got.SlackPosted != 1 {
		t.Errorf("after the repair: slack %+v, posted %d, want the message and 1", got.Slack, got.SlackPosted)
	}
}

// TestAnnounceAcrossElision: a timeline the store trims is still posted exactly once per entry
// that survives, with the marker standing for those dropped before they were posted.
func TestAnnounceAcrossElision(t *testing.T) {
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
				i.Timeline = append(i.Timeline, incident.Entry{At: t0, Kind: incident.KindNote, Detail: fmt.Sprintf("%s %d", tag, k)})
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	// 10 entries, posted; then 400 more at once, so the store drops some before they are posted.
	if err := r.a.Announce(ctx, add(10, "a")); err != nil {
		t.Fatal(err)
	}
	r.slack.Reset()
	big := add(400, "b")
	if big.TimelineElided == 0 {
		t.Fatalf("the store elided nothing; the test needs a longer timeline")
	}
	if err := r.a.Announce(ctx, big); err != nil {
		t.Fatal(err)
	}
	replies := len(r.slack.Calls("chat.postMessage"))
	m := marker(big)
	// From the head's unposted part (the head keeps 20; 11 were posted) to the end, marker included.
	if want := len(big.Timeline) - 11; replies != want {
		t.Errorf("replies: got %d, want %d (marker at %d, %d elided)", replies, want, m, big.TimelineElided)
	}
	got := r.get(t, inc.ID)
	if want := len(big.Timeline) - 1 + big.TimelineElided; got.SlackPosted != want {
		t.Errorf("SlackPosted: got %d, want %d", got.SlackPosted, want)
	}

	// More entries, another trim: only the new ones are posted.
	r.slack.Reset()
	more := add(5, "c")
	if err := r.a.Announce(ctx, more); err != nil {
		t.Fatal(err)
	}
	if replies := len(r.slack.Calls("chat.postMessage")); replies != 5 {
		t.Errorf("replies after a further trim: got %d, want 5", replies)
	}
}

func TestFromIndexAndPosted(t *testing.T) {
	entries := func(n int, elidedAt int) []incident.Entry {
		es := make([]incident.Entry, n)
		for i := range es {
			es[i].Kind = incident.KindNote
		}
		if elidedAt >= 0 {
			es[elidedAt].Kind = incident.KindElided
		}
		return es
	}
	tests := []struct {
		name     string
		inc      incident.Incident
		wantFrom int
	}{
		{name: "nothing posted", inc: incident.Incident{Timeline: entries(5, -1)}, wantFrom: 0},
		{name: "some posted", inc: incident.Incident{Timeline: entries(5, -1), SlackPosted: 3}, wantFrom: 3},
		{name: "all posted", inc: incident.Incident{Timeline: entries(5, -1), SlackPosted: 5}, wantFrom: 5},
		{name: "count beyond the timeline", inc: incident.Incident{Timeline: entries(5, -1), SlackPosted: 9}, wantFrom: 5},
		// Head of 20, marker for 100 dropped, tail of 10: 130 real entries in all.
		{name: "head partly posted", inc: incident.Incident{Timeline: entries(31, 20), TimelineElided: 100, SlackPosted: 12}, wantFrom: 12},
		{name: "dropped entries unposted", inc: incident.Incident{Timeline: entries(31, 20), TimelineElided: 100, SlackPosted: 50}, wantFrom: 20},
		{name: "all dropped were posted", inc: incident.Incident{Timeline: entries(31, 20), TimelineElided: 100, SlackPosted: 120}, wantFrom: 21},
		{name: "tail partly posted", inc: incident.Incident{Timeline: entries(31, 20), TimelineElided: 100, SlackPosted: 125}, wantFrom: 26},
		{name: "everything posted", inc: incident.Incident{Timeline: entries(31, 20), TimelineElided: 100, SlackPosted: 130}, wantFrom: 31},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := FromIndex(tt.inc); got != tt.wantFrom {
				t.Errorf("FromIndex: got %d, want %d", got, tt.wantFrom)
			}
		})
	}
	inc := incident.Incident{Timeline: entries(31, 20), TimelineElided: 100}
	for i, want := range map[int]int{0: 0, 20: 20, 21: 120, 31: 130} {
		if got := Posted(inc, i); got != want {
			t.Errorf("Posted(%d): got %d, want %d", i, got, want)
		}
	}
}
