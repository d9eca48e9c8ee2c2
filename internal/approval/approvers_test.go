package approval

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/slack-go/slack"

	"github.com/keywarden/keywarden/internal/slacktest"
)

var _ GroupLister = (*slack.Client)(nil)

// groupClient is a slack-go client of the Slack stand-in, whose usergroups.users.list answers
// from groups; a group not there answers no_such_subteam.
func groupClient(t *testing.T, groups map[string][]string) (*slacktest.Slack, *slack.Client) {
	t.Helper()
	s := slacktest.Start(t, &slacktest.Slack{Token: "xoxb-test", Groups: groups})
	return s, slack.New("xoxb-test", slack.OptionAPIURL(s.APIURL()))
}

// groupCalls counts the usergroups.users.list calls Slack answered, per group.
func groupCalls(s *slacktest.Slack) map[string]int {
	calls := map[string]int{}
	for _, c := range s.Calls("usergroups.users.list") {
		calls[c.Usergroup]++
	}
	return calls
}

func TestApproversAllowed(t *testing.T) {
	tests := []struct {
		name      string
		approvers string
		user      string
		want      bool
		wantErr   bool
		wantCalls map[string]int
	}{
		{name: "direct user", approvers: "U0APPROVR1, S0ONCALL01", user: "U0APPROVR1", want: true, wantCalls: map[string]int{}},
		{name: "enterprise user", approvers: "W0APPROVR2", user: "W0APPROVR2", want: true, wantCalls: map[string]int{}},
		{name: "group member", approvers: "U0APPROVR1 S0ONCALL01", user: "U0MEMBER01", want: true, wantCalls: map[string]int{"S0ONCALL01": 1}},
		{name: "stranger", approvers: "U0APPROVR1,S0ONCALL01", user: "U0STRANGER", want: false, wantCalls: map[string]int{"S0ONCALL01": 1}},
		{name: "empty user ID", approvers: "U0APPROVR1,S0ONCALL01", user: "", want: false, wantCalls: map[string]int{}},
		{name: "group listing fails", approvers: "U0APPROVR1,S0BROKEN01", user: "U0MEMBER01", want: false, wantErr: true, wantCalls: map[string]int{"S0BROKEN01": 1}},
		{name: "one group fails, another admits", approvers: "S0BROKEN01,S0ONCALL01", user: "U0MEMBER01", want: true, wantCalls: map[string]int{"S0BROKEN01": 1, "S0ONCALL01": 1}},
		{name: "one group fails, stranger", approvers: "S0ONCALL01,S0BROKEN01", user: "U0STRANGER", want: false, wantErr: true, wantCalls: map[string]int{"S0BROKEN01": 1, "S0ONCALL01": 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// S0BROKEN01 is not among the stand-in's groups: listing it answers no_such_subteam.
			gs, client := groupClient(t, map[string][]string{"S0ONCALL01": {"U0MEMBER01", "U0MEMBER02"}})
			a, err := ParseApprovers(tt.approvers)
			if err != nil {
				t.Fatal(err)
			}
			got, err := a.Allowed(context.Background(), client, tt.user)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Allowed error: got %v, want error %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("Allowed: got %v, want %v", got, tt.want)
			}
			if diff := cmp.Diff(tt.wantCalls, groupCalls(gs)); diff != "" {
				t.Errorf("usergroups.users.list calls (-want +got):\n%s", diff)
			}
		})
	}
}

func TestApproversGroupCache(t *testing.T) {
	gs, client := groupClient(t, map[string][]string{"S0ONCALL01": {"U0MEMBER01"}})
	a, err := ParseApprovers("S0ONCALL01")
	if err != nil {
		t.Fatal(err)
	}
	clock := testNow
	a.cache.now = func() time.Time { return clock }
	ctx := context.Background()

	check := func(user string, want bool) {
		t.Helper()
		got, err := a.Allowed(ctx, client, user)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("Allowed(%s): got %v, want %v", user, got, want)
		}
	}
	check("U0MEMBER01", true)
	check("U0STRANGER", false)
	if got, want := groupCalls(gs)["S0ONCALL01"], 1; got != want {
		t.Fatalf("calls within TTL: got %d, want %d", got, want)
	}

	// A copy shares the cache.
	b := a
	if ok, err := b.Allowed(ctx, client, "U0MEMBER01"); err != nil || !ok {
		t.Fatalf("copy Allowed: got %v, %v, want true, nil", ok, err)
	}
	if got, want := groupCalls(gs)["S0ONCALL01"], 1; got != want {
		t.Fatalf("calls from a copy: got %d, want %d", got, want)
	}

	// Someone removed from the group loses approval once the entry expires.
	gs.SetGroup("S0ONCALL01", []string{"U0MEMBER02"})
	clock = clock.Add(GroupCacheTTL)
	check("U0MEMBER01", false)
	check("U0MEMBER02", true)
	if got, want := groupCalls(gs)["S0ONCALL01"], 2; got != want {
		t.Fatalf("calls after TTL: got %d, want %d", got, want)
	}
}

func TestApproversFailureNotCached(t *testing.T) {
	gs, client := groupClient(t, map[string][]string{"S0ONCALL01": {"U0MEMBER01"}})
	gs.Fail("usergroups.users.list", slacktest.Fault{Error: "ratelimited"})
	a, err := ParseApprovers("S0ONCALL01")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Allowed(context.Background(), client, "U0MEMBER01"); err == nil || !strings.Contains(err.Error(), "S0ONCALL01") {
		t.Fatalf("Allowed error: got %v, want one naming S0ONCALL01", err)
	}
	gs.ClearFaults()
	if ok, err := a.Allowed(context.Background(), client, "U0MEMBER01"); err != nil || !ok {
		t.Fatalf("Allowed after recovery: got %v, %v, want true, nil", ok, err)
	}
}

func TestParseApprovers(t *testing.T) {
	tests := []struct {
		name       string
		in         string
		wantUsers  []string
		wantGroups []string
		wantErr    string // substring; empty means no error
	}{
		{name: "users and groups, commas", in: "U024BE7LH,S0614TZR7,W012A3CDE", wantUsers: []string{"U024BE7LH", "W012A3CDE"}, wantGroups: []string{"S0614TZR7"}},
		{name: "spaces, commas and newlines", in: " U024BE7LH ,  S0614TZR7\n\tU0APPROVR1,,", wantUsers: []string{"U024BE7LH", "U0APPROVR1"}, wantGroups: []string{"S0614TZR7"}},
		{name: "duplicates collapse", in: "U024BE7LH U024BE7LH S0614TZR7 S0614TZR7", wantUsers: []string{"U024BE7LH"}, wantGroups: []string{"S0614TZR7"}},
		{name: "only a group", in: "S0614TZR7", wantGroups: []string{"S0614TZR7"}},
		{name: "empty", in: "", wantErr: "empty"},
		{name: "only separators", in: " , ,\n", wantErr: "empty"},
		{name: "user name", in: "U024BE7LH,alice", wantErr: `"alice"`},
		{name: "handle", in: "@alice", wantErr: `"@alice"`},
		{name: "mention markup", in: "<@U024BE7LH>", wantErr: `"<@U024BE7LH>"`},
		{name: "channel ID", in: "C0ONCALL01", wantErr: `"C0ONCALL01"`},
		{name: "lower case", in: "u024be7lh", wantErr: `"u024be7lh"`},
		{name: "too short", in: "U123", wantErr: `"U123"`},
		{name: "every bad entry named", in: "U024BE7LH;S0614TZR7 bob", wantErr: `"U024BE7LH;S0614TZR7", "bob"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := ParseApprovers(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "APPROVERS") {
					t.Fatalf("ParseApprovers error: got %v, want one containing APPROVERS and %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseApprovers: got %v, want nil", err)
			}
			for _, u := range tt.wantUsers {
				if !a.users[u] {
					t.Errorf("users[%s]: got false, want true", u)
				}
			}
			if got, want := len(a.users), len(tt.wantUsers); got != want {
				t.Errorf("users: got %d, want %d", got, want)
			}
			if diff := cmp.Diff(tt.wantGroups, a.Groups()); diff != "" {
				t.Errorf("groups mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// slackID is the approvers' ID format written as a regular expression: the oracle the
// hand-written check (isApprover, through slackmessage.IsID) is fuzzed against.
var slackID = regexp.MustCompile(`^[UWS][A-Z0-9]{8,20}$`)

func FuzzParseApprovers(f *testing.F) {
	for _, s := range []string{"U024BE7LH,S0614TZR7", " W012A3CDE\n", "", "<@U024BE7LH>", "S0614TZR7,,u1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if isApprover(s) != slackID.MatchString(s) {
			t.Fatalf("isApprover(%q) = %v, the regular expression says %v", s, isApprover(s), slackID.MatchString(s))
		}
		a, err := ParseApprovers(s)
		if err != nil {
			return
		}
		if len(a.users)+len(a.groups) == 0 {
			t.Fatalf("ParseApprovers(%q): got no approvers and no error", s)
		}
		for _, g := range a.Groups() {
			if !slackID.MatchString(g) || g[0] != 'S' {
				t.Fatalf("ParseApprovers(%q): got group %q", s, g)
			}
		}
		for u := range a.users {
			if !slackID.MatchString(u) || u[0] == 'S' {
				t.Fatalf("ParseApprovers(%q): got user %q", s, u)
			}
		}
	})
}

// TestApproversAllowedNow: remediate re-reads membership, so an approver removed from the
// group loses the right at once, within the cache's TTL.
func TestApproversAllowedNow(t *testing.T) {
	gs, client := groupClient(t, map[string][]string{"S0ONCALL01": {"U0MEMBER01"}})
	a, err := ParseApprovers("S0ONCALL01")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if ok, err := a.Allowed(ctx, client, "U0MEMBER01"); err != nil || !ok {
		t.Fatalf("Allowed: %v, %v", ok, err)
	}
	gs.SetGroup("S0ONCALL01", nil)
	if ok, _ := a.Allowed(ctx, client, "U0MEMBER01"); !ok {
		t.Fatal("the cache should still admit the removed member (acknowledge may trust it)")
	}
	if ok, err := a.AllowedNow(ctx, client, "U0MEMBER01"); err != nil || ok {
		t.Errorf("AllowedNow after removal: %v, %v; want false at once", ok, err)
	}
	if got := groupCalls(gs)["S0ONCALL01"]; got != 2 {
		t.Errorf("usergroups.users.list calls: %d, want 2", got)
	}
}
