package approval

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/keywarden/keywarden/internal/slackmessage"
	"github.com/slack-go/slack"
)

// GroupCacheTTL is how long a user group's member list is trusted. Short, so that removing someone
// from the approvers group takes effect within a minute, yet long enough that a burst of clicks on
// one incident costs one usergroups.users.list call.
const GroupCacheTTL = time.Minute

// isApprover reports whether s is a Slack user ID (U…, or W… on Enterprise Grid) or user-group
// ID (S…): the prefix and 8 to 20 upper-case letters or digits, e.g. U024BE7LH, S0614TZR7.
func isApprover(s string) bool { return slackmessage.IsID(s, "UWS", 8, 20) }

// GroupLister lists the members of a Slack user group (usergroups.users.list). The signature is
// slack-go's, options included, so *slack.Client fits as-is.
type GroupLister interface {
	GetUserGroupMembersContext(ctx context.Context, userGroup string, options ...slack.GetUserGroupMembersOption) ([]string, error)
}

// Approvers is the parsed APPROVERS setting: the users who may approve directly, and the user
// groups whose members may. Copies share one group cache; it is safe for concurrent use.
type Approvers struct {
	users  map[string]bool
	groups []string
	cache  *groupCache
}

type groupCache struct {
	mu      sync.Mutex
	ttl     time.Duration
	now     func() time.Time
	entries map[string]groupEntry
}

type groupEntry struct {
	members map[string]bool
	fetched time.Time
}

// ParseApprovers reads APPROVERS: Slack user IDs (U…, W…) and user-group IDs (S…) separated by
// commas and/or white space. Names, @handles, mention markup (<@U…>) and channel or team IDs are
// rejected, all bad entries in one error, because a typo here would silently lock every approver
// out. An empty list is an error too: nobody could approve.
func ParseApprovers(s string) (Approvers, error) {
	a := Approvers{
		users: map[string]bool{},
		cache: &groupCache{ttl: GroupCacheTTL, now: time.Now, entries: map[string]groupEntry{}},
	}
	fields := strings.FieldsFunc(s, func(r rune) bool {
		return r == ',' || r == ' ' || r == '\t' || r == '\n' || r == '\r'
	})
	var bad []string
	seenGroup := map[string]bool{}
	for _, f := range fields {
		switch {
		case !isApprover(f):
			bad = append(bad, fmt.Sprintf("%q", f))
		case f[0] == 'S':
			if !seenGroup[f] {
				seenGroup[f] = true
				a.groups = append(a.groups, f)
			}
		default:
			a.users[f] = true
		}
	}
	if len(bad) > 0 {
		return Approvers{}, fmt.Errorf("APPROVERS: %s: not a Slack user ID (U…, W…) or user-group ID (S…)", strings.Join(bad, ", "))
	}
	if len(fields) == 0 {
		return Approvers{}, errors.New("APPROVERS: empty: list at least one Slack user ID (U…, W…) or user-group ID (S…)")
	}
	return a, nil
}

// Groups returns the user-group IDs in the order they were configured.
func (a *Approvers) Groups() []string { return append([]string(nil), a.groups...) }

// Allowed reports whether userID may approve: listed directly, or a member of a listed user group.
// Group members come from usergroups.users.list and are cached for GroupCacheTTL. If a group
// cannot be listed and no other group admits the user, Allowed returns an error rather than
// false: the caller should say it could not check, and change nothing, instead of telling an
// approver they are not one.
func (a *Approvers) Allowed(ctx context.Context, gl GroupLister, userID string) (bool, error) {
	return a.allowed(ctx, gl, userID, false)
}

// AllowedNow is Allowed reading every group's members from Slack now, not from the cache: the
// remediate and reboot_instance clicks act on production keys and databases, so an approver
// removed from a group loses the right at once rather than up to GroupCacheTTL later. What it
// reads refreshes the cache. Errors as Allowed.
func (a *Approvers) AllowedNow(ctx context.Context, gl GroupLister, userID string) (bool, error) {
	return a.allowed(ctx, gl, userID, true)
}

func (a *Approvers) allowed(ctx context.Context, gl GroupLister, userID string, fresh bool) (bool, error) {
	if userID == "" {
		return false, nil
	}
	if a.users[userID] {
		return true, nil
	}
	var errs []error
	for _, g := range a.groups {
		members, err := a.cache.members(ctx, gl, g, fresh)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if members[userID] {
			return true, nil
		}
	}
	if len(errs) > 0 {
		return false, fmt.Errorf("check approver %s: %w", userID, errors.Join(errs...))
	}
	return false, nil
}

// members returns group g's members, from the cache while fresh. The lock is not held during the
// Slack call; two concurrent misses may both fetch, which is harmless.
func (c *groupCache) members(ctx context.Context, gl GroupLister, g string, reread bool) (map[string]bool, error) {
	if c == nil {
		return nil, fmt.Errorf("list user group %s: approvers not built by ParseApprovers", g)
	}
	c.mu.Lock()
	e, ok := c.entries[g]
	fresh := ok && c.now().Sub(e.fetched) < c.ttl && !reread
	c.mu.Unlock()
	if fresh {
		return e.members, nil
	}

	ids, err := gl.GetUserGroupMembersContext(ctx, g)
	if err != nil {
		return nil, fmt.Errorf("list user group %s: %w", g, err)
	}
	e = groupEntry{members: make(map[string]bool, len(ids)), fetched: c.now()}
	for _, id := range ids {
		e.members[id] = true
	}
	c.mu.Lock()
	c.entries[g] = e
	c.mu.Unlock()
	return e.members, nil
}
