package org_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/organizations"
	"github.com/aws/aws-sdk-go-v2/service/organizations/types"
	"github.com/google/go-cmp/cmp"

	"github.com/keywarden/keywarden/internal/blast"
	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/org"
)

type fakeOrgs struct {
	calls atomic.Int32
	pages [][]types.Account
	err   error
}

func (f *fakeOrgs) ListAccounts(_ context.Context, in *organizations.ListAccountsInput, _ ...func(*organizations.Options)) (*organizations.ListAccountsOutput, error) {
	f.calls.Add(1)
	if f.err != nil {
		return nil, f.err
	}
	i := 0
	if in.NextToken != nil {
		i = int((*in.NextToken)[0] - '0')
	}
	out := &organizations.ListAccountsOutput{Accounts: f.pages[i]}
	if i+1 < len(f.pages) {
		out.NextToken = aws.String(string(rune('0' + i + 1)))
	}
	return out, nil
}

func TestDirectory(t *testing.T) {
	ctx := context.Background()
	acct := func(id, name string, state types.AccountState, status types.AccountStatus) types.Account {
		return types.Account{Id: aws.String(id), Name: aws.String(name), State: state, Status: status}
	}
	api := &fakeOrgs{pages: [][]types.Account{
		{acct("333333333333", "b", types.AccountStateActive, ""), acct("444444444444", "gone", types.AccountStateSuspended, types.AccountStatusActive)},
		{acct("222222222222", "a", "", types.AccountStatusActive), acct("555555555555", "closing", types.AccountStatePendingClosure, "")},
	}}
	dir, err := org.NewDirectory(nil, api)
	if err != nil {
		t.Fatalf("NewDirectory: %v", err)
	}
	for range 2 {
		got, err := dir.Accounts(ctx)
		if err != nil {
			t.Fatalf("Accounts: %v", err)
		}
		want := []org.Account{{ID: "222222222222", Name: "a"}, {ID: "333333333333", Name: "b"}}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("accounts (-want +got):\n%s", diff)
		}
	}
	if n := api.calls.Load(); n != 2 {
		t.Errorf("ListAccounts calls = %d, want 2 (two pages, read once per run)", n)
	}
	if got := dir.Name("333333333333"); got != "b" {
		t.Errorf("Name = %q, want b", got)
	}

	fixed, err := org.NewDirectory([]string{" 222222222222", "111111111111", "222222222222", ""}, api)
	if err != nil {
		t.Fatalf("NewDirectory(list): %v", err)
	}
	got, _ := fixed.Accounts(ctx)
	if diff := cmp.Diff([]org.Account{{ID: "222222222222"}, {ID: "111111111111"}}, got); diff != "" {
		t.Errorf("fixed accounts (-want +got):\n%s", diff)
	}

	for _, tc := range []struct {
		ids  []string
		api  org.OrganizationsAPI
		want string
	}{
		{[]string{"12345"}, nil, `account ID "12345": want 12 digits`},
		{[]string{"1234567890123"}, api, "want 12 digits"},
		{nil, nil, "no accounts given"},
	} {
		if _, err := org.NewDirectory(tc.ids, tc.api); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewDirectory(%v): got %v, want an error containing %q", tc.ids, err, tc.want)
		}
	}

	broken, _ := org.NewDirectory(nil, &fakeOrgs{err: errors.New("AccessDeniedException")})
	if _, err := broken.Accounts(ctx); err == nil || !strings.Contains(err.Error(), "list the organisation's accounts") {
		t.Errorf("Accounts on a refusing Organizations: got %v", err)
	}
}

type fakeConfigs struct{ refuse map[string]bool }

func (f fakeConfigs) Config(_ context.Context, account, region string) (aws.Config, error) {
	if f.refuse[account] {
		return aws.Config{}, &org.RoleError{Account: account, RoleARN: "arn:aws:iam::" + account + ":role/keywarden-read", Err: errors.New("AccessDenied")}
	}
	return aws.Config{Region: region, AppID: account}, nil
}

type fakeFinder struct {
	account  string
	inFlight *atomic.Int32
	peak     *atomic.Int32
}

func (f fakeFinder) Find(_ context.Context, keyARN string) (blast.Radius, error) {
	n := f.inFlight.Add(1)
	defer f.inFlight.Add(-1)
	for {
		p := f.peak.Load()
		if n <= p || f.peak.CompareAndSwap(p, n) {
			break
		}
	}
	time.Sleep(5 * time.Millisecond)
	if f.account == "999999999999" {
		return blast.Radius{}, errors.New("DescribeDBClusters: Throttling")
	}
	return blast.Radius{KeyARN: keyARN,
		Clusters:  []incident.Cluster{{Identifier: "db-" + f.account[:1]}},
		Instances: []incident.Instance{{Identifier: "db-" + f.account[:1] + "-1"}},
		Snapshots: []incident.Snapshot{{Identifier: "snap-" + f.account[:1], Type: blast.SnapshotManual}},
	}, nil
}

// TestFinderBoundAndFailures: at most the bound in flight; a refused role and a failed listing
// are each reported by account and make the radius incomplete; the rest is all there, with
// accounts on every dependent; the search happens in the key's Region.
func TestFinderBoundAndFailures(t *testing.T) {
	var accounts []string
	for _, d := range "12345678" {
		accounts = append(accounts, strings.Repeat(string(d), 12))
	}
	accounts = append(accounts, "999999999999")
	dir, _ := org.NewDirectory(accounts, nil)
	var inFlight, peak atomic.Int32
	var regions sync.Map
	newFinder := func(s org.Scope) org.RadiusFinder {
		regions.Store(s.Config.Region, true)
		return fakeFinder{account: s.Account, inFlight: &inFlight, peak: &peak}
	}
	f := org.NewFinder(dir, fakeConfigs{refuse: map[string]bool{"333333333333": true}}, newFinder, org.WithConcurrency(3))
	got, err := f.Find(context.Background(), "arn:aws:kms:eu-west-1:111111111111:key/k")
	if err != nil {
		t.Fatalf("Find: %v", err)
	}
	if p := peak.Load(); p > 3 || p < 2 {
		t.Errorf("peak accounts in flight = %d, want 2..3 (bound 3)", p)
	}
	if _, ok := regions.Load("eu-west-1"); !ok {
		t.Errorf("accounts not searched in the key's Region eu-west-1")
	}
	if !got.Incomplete || len(got.AccountsFailed) != 2 ||
		got.AccountsFailed[0].Account != "333333333333" || !strings.Contains(got.AccountsFailed[0].Reason, "assume role") ||
		got.AccountsFailed[1].Account != "999999999999" || !strings.Contains(got.AccountsFailed[1].Reason, "Throttling") {
		t.Errorf("Incomplete %v, AccountsFailed %+v; want 333333333333 (role) and 999999999999 (listing)", got.Incomplete, got.AccountsFailed)
	}
	if len(got.Clusters) != 7 || len(got.Instances) != 7 || len(got.Snapshots) != 7 {
		t.Fatalf("got %d clusters, %d instances, %d snapshots; want 7 each", len(got.Clusters), len(got.Instances), len(got.Snapshots))
	}
	for i, c := range got.Clusters {
		if c.Account == "" || got.Instances[i].Account != c.Account || got.Snapshots[i].Account != c.Account {
			t.Errorf("dependent %d without its account: %+v %+v %+v", i, c, got.Instances[i], got.Snapshots[i])
		}
	}
	if got.Clusters[0].Account != "111111111111" || got.Clusters[6].Account != "888888888888" {
		t.Errorf("clusters not in account order: first %s, last %s", got.Clusters[0].Account, got.Clusters[6].Account)
	}

	if _, err := f.Find(context.Background(), "alias/orders"); err == nil {
		t.Errorf("Find(alias): want an error, the Region and account come from a key ARN")
	}
}

type recordingKeys struct{ asked []string }

func (r *recordingKeys) ARN(_ context.Context, ref string) (string, error) {
	r.asked = append(r.asked, ref)
	return "resolved:" + ref, nil
}

// TestAccountKeys: in an account other than the key's, a key ID and an alias of that account are
// answered without KMS (they can only name that account's keys); key ARNs and the key account's
// alias ARNs go to KMS; in the key's own account everything does.
func TestAccountKeys(t *testing.T) {
	const keyARN = "arn:aws:kms:eu-west-1:111111111111:key/k-1"
	for _, tc := range []struct {
		account, ref, want string
		asked              bool
	}{
		{"222222222222", "1234abcd-12ab", "arn:aws:kms:eu-west-1:222222222222:key/1234abcd-12ab", false},
		{"222222222222", "alias/orders", "arn:aws:kms:eu-west-1:222222222222:alias/orders", false},
		{"222222222222", "arn:aws:kms:eu-west-1:222222222222:alias/orders", "arn:aws:kms:eu-west-1:222222222222:alias/orders", false},
		{"222222222222", "arn:aws:kms:eu-west-1:111111111111:alias/shared", "resolved:arn:aws:kms:eu-west-1:111111111111:alias/shared", true},
		{"222222222222", keyARN, "resolved:" + keyARN, true},
		{"111111111111", "alias/orders", "resolved:alias/orders", true},
		{"111111111111", "k-1", "resolved:k-1", true},
	} {
		next := &recordingKeys{}
		got, err := org.NewAccountKeys(next, tc.account, keyARN).ARN(context.Background(), tc.ref)
		if err != nil || got != tc.want || (len(next.asked) > 0) != tc.asked {
			t.Errorf("in %s, ARN(%s) = %q, %v (KMS asked %v); want %q (KMS asked: %v)", tc.account, tc.ref, got, err, next.asked, tc.want, tc.asked)
		}
	}
}

func TestSettingsFromEnv(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	for _, tc := range []struct {
		name string
		env  map[string]string
		want org.Settings
		err  string
	}{
		{"account mode", map[string]string{"ORGANIZATION_ACCOUNTS": "junk"},
			org.Settings{ReadRole: "keywarden-read", RemediateRole: "keywarden-remediate", Concurrency: 10}, ""},
		{"organization", map[string]string{"DEPLOYMENT_MODE": "organization", "ORGANIZATION_ACCOUNTS": "111111111111, 222222222222",
			"ORGANIZATION_READ_ROLE_ARN": "arn:aws:iam::999999999999:role/r", "MEMBER_READ_ROLE": "kr", "MEMBER_REMEDIATE_ROLE": "km", "ACCOUNT_CONCURRENCY": "4"},
			org.Settings{Enabled: true, Accounts: []string{"111111111111", "222222222222"}, ReadRoleARN: "arn:aws:iam::999999999999:role/r",
				ReadRole: "kr", RemediateRole: "km", Concurrency: 4}, ""},
		{"organization, template defaults", map[string]string{"DEPLOYMENT_MODE": "organization", "ORGANIZATION_ACCOUNTS": ""},
			org.Settings{Enabled: true, ReadRole: "keywarden-read", RemediateRole: "keywarden-remediate", Concurrency: 10}, ""},
		{"bad mode", map[string]string{"DEPLOYMENT_MODE": "org"}, org.Settings{}, `DEPLOYMENT_MODE "org"`},
		{"every bad variable", map[string]string{"DEPLOYMENT_MODE": "organization", "ORGANIZATION_ACCOUNTS": "12", "ACCOUNT_CONCURRENCY": "0"},
			org.Settings{}, "ORGANIZATION_ACCOUNTS: account ID \"12\": want 12 digits\nACCOUNT_CONCURRENCY \"0\""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := org.SettingsFromEnv(env(tc.env))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Errorf("got error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("settings (-want +got):\n%s", diff)
			}
		})
	}
}

// TestFinderNoAccounts: an organisation radius that would search no account is an error, never
// an empty "no Aurora impact" radius (found in review).
func TestFinderNoAccounts(t *testing.T) {
	dir, err := org.NewDirectory(nil, emptyOrganization{})
	if err != nil {
		t.Fatal(err)
	}
	f := org.NewFinder(dir, fakeConfigs{}, func(s org.Scope) org.RadiusFinder { return fakeFinder{account: s.Account} })
	if _, err := f.Find(context.Background(), "arn:aws:kms:eu-west-1:111111111111:key/k"); err == nil {
		t.Fatal("Find searched no account and reported no error")
	}
}

// emptyOrganization lists no account.
type emptyOrganization struct{}

func (emptyOrganization) ListAccounts(context.Context, *organizations.ListAccountsInput, ...func(*organizations.Options)) (*organizations.ListAccountsOutput, error) {
	return &organizations.ListAccountsOutput{}, nil
}
