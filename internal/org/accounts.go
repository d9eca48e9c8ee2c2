package org

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/organizations"
	"github.com/aws/aws-sdk-go-v2/service/organizations/types"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/keywarden/keywarden/internal/org/member"
)

// OrganizationsAPI is the part of the Organizations client a Directory uses;
// *organizations.Client satisfies it.
type OrganizationsAPI interface {
	ListAccounts(context.Context, *organizations.ListAccountsInput, ...func(*organizations.Options)) (*organizations.ListAccountsOutput, error)
}

// Directory knows which accounts to search: a fixed list, or the organisation's active accounts.
// It reads Organizations at most once, so build one per run (a CLI command, a Lambda
// invocation) to see accounts added since. It is safe for concurrent use.
type Directory struct {
	fixed []Account
	api   OrganizationsAPI

	mu     sync.Mutex
	listed []Account
}

// NewDirectory returns a Directory over ids when there are any (each must be a 12-digit account
// ID; duplicates count once), and over the organisation's active accounts through api when ids
// is empty. It returns an error for a malformed ID, or when ids is empty and api is nil.
func NewDirectory(ids []string, api OrganizationsAPI) (*Directory, error) {
	d := &Directory{api: api}
	var errs []error
	for _, id := range ids {
		id = strings.TrimSpace(id)
		if id == "" {
			continue
		}
		if err := ValidAccountID(id); err != nil {
			errs = append(errs, err)
			continue
		}
		if !slices.ContainsFunc(d.fixed, func(a Account) bool { return a.ID == id }) {
			d.fixed = append(d.fixed, Account{ID: id})
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if len(d.fixed) == 0 && api == nil {
		return nil, errors.New("no accounts given and no Organizations client to list them")
	}
	return d, nil
}

// Accounts returns the accounts to search, sorted by ID: the fixed list, or the organisation's
// accounts whose State is ACTIVE (suspended, closed and pending accounts have nothing a role
// could read; https://docs.aws.amazon.com/organizations/latest/APIReference/API_Account.html), read with
// organizations:ListAccounts page by page. That call is allowed only in the management account
// or a delegated administrator account
// (https://docs.aws.amazon.com/organizations/latest/APIReference/API_ListAccounts.html), which is
// why NewOrganizationsClient can go through a role there. The first successful listing is kept;
// a failed one is returned and tried again on the next call.
func (d *Directory) Accounts(ctx context.Context) ([]Account, error) {
	if len(d.fixed) > 0 {
		return slices.Clone(d.fixed), nil
	}
	if d.api == nil {
		return nil, errors.New("no accounts named and no Organizations client to list them")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.listed != nil {
		return slices.Clone(d.listed), nil
	}
	var out []Account
	p := organizations.NewListAccountsPaginator(d.api, &organizations.ListAccountsInput{})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list the organisation's accounts: %w", err)
		}
		for _, a := range page.Accounts {
			if !active(a) {
				continue
			}
			out = append(out, Account{ID: aws.ToString(a.Id), Name: aws.ToString(a.Name)})
		}
	}
	slices.SortFunc(out, func(a, b Account) int { return strings.Compare(a.ID, b.ID) })
	if out == nil {
		out = []Account{}
	}
	d.listed = out
	return slices.Clone(out), nil
}

// active reports whether the account is ACTIVE. Organizations retired Account.Status on
// 2026-09-09 in favour of Account.State (API_Account.html); Status counts only when State is
// absent (an older endpoint or moto).
func active(a types.Account) bool {
	if a.State != "" {
		return a.State == types.AccountStateActive
	}
	return a.Status == types.AccountStatusActive
}

// Name returns the account's name as Organizations gave it in the last listing, or "" when it is
// unknown (a fixed list, or the account was not listed).
func (d *Directory) Name(id string) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, a := range d.listed {
		if a.ID == id {
			return a.Name
		}
	}
	return ""
}

// directories builds a Directory per search, so that each search reads the organisation's
// accounts again (a Lambda lives for hours; accounts join meanwhile), over one Organizations
// client built on first use: the client's credentials, assumed through ReadRoleARN, are then
// cached and refreshed by the SDK rather than assumed again (sts:AssumeRole) on every search.
type directories struct {
	accounts []string
	orgs     func() OrganizationsAPI // nil when the accounts are a fixed list
}

// newDirectories returns directories over the accounts settings name, or the organisation's
// read from base through settings.ReadRoleARN.
func newDirectories(settings Settings, base aws.Config) directories {
	d := directories{accounts: settings.Accounts}
	if len(settings.Accounts) == 0 {
		d.orgs = sync.OnceValue(func() OrganizationsAPI { return NewOrganizationsClient(base, settings.ReadRoleARN) })
	}
	return d
}

// fresh returns a Directory that has not listed the accounts yet (NewDirectory's errors).
func (d directories) fresh() (*Directory, error) {
	var api OrganizationsAPI
	if d.orgs != nil {
		api = d.orgs()
	}
	return NewDirectory(d.accounts, api)
}

// NewOrganizationsClient returns an Organizations client from base, acting through the role
// readRoleARN (in the management or a delegated administrator account) when it is not empty.
// The role's credentials come from sts:AssumeRole and are refreshed before they expire.
func NewOrganizationsClient(base aws.Config, readRoleARN string) *organizations.Client {
	cfg := base.Copy()
	if readRoleARN != "" {
		cfg.Credentials = aws.NewCredentialsCache(stscreds.NewAssumeRoleProvider(sts.NewFromConfig(base), readRoleARN,
			func(o *stscreds.AssumeRoleOptions) { o.RoleSessionName = member.SessionName }))
	}
	return organizations.NewFromConfig(cfg)
}
