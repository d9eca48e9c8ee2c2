// Package org follows a KMS key across the accounts of an AWS Organization: which accounts to
// search (a fixed list, or the organisation's active accounts from Organizations), an AWS
// configuration per member account through a role keywarden may assume there (keywarden-read
// to look, keywarden-remediate to fix), and the blast radius of one key over all of them.
//
// Nothing here is home-made machinery: the accounts come from organizations:ListAccounts, the
// credentials from sts:AssumeRole on a role the member.yaml StackSet creates in every account,
// and each account's dependents from the same blast.Finder a single-account deployment runs.
//
// How the other packages use it (issue 13 part B):
//
//   - each function's main reads SettingsFromEnv(os.Getenv) once (template.yaml sets the
//     variables in organization mode only); internal/startup/keyloss then builds, when
//     Settings.Enabled, Roles for the read role, Keys (keys read in their own account) and a
//     RunFinder (a Finder per search, so the account list is read again) that intake maps keys
//     with (intake.Service.WithAccounts): each dependent carries its Account, an account not
//     searched is named on the incident (accounts_failed) and makes its radius incomplete.
//   - RdsEventFunction reads each event's cluster in the SourceArn's account; ReconcileFunction
//     lists clusters in every account (AcrossAccounts) and repairs radii with ManyFinder.
//   - RemediateFunction links only internal/org/member (no blast radius): remedy.Clients over the
//     remediate role gives each step the clients of the account it acts in — the key's for
//     CancelKeyDeletion and EnableKey, each cluster's for StartDBCluster and RebootDBInstance —
//     and the step records the account. A role that cannot be assumed is a step that failed in
//     that account, never a skipped one.
//
// Boundaries: it owns following a key across accounts; it must not import Slack, DynamoDB or
// the incident store.
package org

import (
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"

	"github.com/keywarden/keywarden/internal/org/member"
)

// Default role names, the names member.yaml gives the roles unless its parameters say otherwise.
const (
	ReadRoleName      = member.ReadRoleName
	RemediateRoleName = member.RemediateRoleName
)

// DefaultConcurrency is how many accounts a Finder searches at once unless told otherwise (the
// template's AccountConcurrency parameter has the same default).
const DefaultConcurrency = member.DefaultConcurrency

// Roles gives an AWS configuration per member account through one role name there; see
// member.Roles.
type Roles = member.Roles

// RoleError is a member role that could not be assumed; see member.RoleError.
type RoleError = member.RoleError

// Settings are a function's organisation settings; see member.Settings.
type Settings = member.Settings

// NewRoles returns Roles assuming role name in each account with base's credentials
// (member.NewRoles).
func NewRoles(base aws.Config, name string) *Roles { return member.NewRoles(base, name) }

// NewRolesWith is NewRoles with the STS client given (member.NewRolesWith).
func NewRolesWith(base aws.Config, stsAPI stscreds.AssumeRoleAPIClient, name string) *Roles {
	return member.NewRolesWith(base, stsAPI, name)
}

// SettingsFromEnv reads the organisation settings through getenv (member.SettingsFromEnv).
func SettingsFromEnv(getenv func(string) string) (Settings, error) {
	return member.SettingsFromEnv(getenv)
}

// Account is one AWS account of the organisation.
type Account struct {
	// ID is the 12-digit account ID.
	ID string `json:"id"`
	// Name is the account's name as Organizations gives it; empty when the accounts came from a
	// fixed list.
	Name string `json:"name,omitempty"`
}

// AccountFailure is an account whose dependents could not be read: its role could not be
// assumed or a listing failed. It is reported, never dropped: the radius is then incomplete.
type AccountFailure struct {
	Account string `json:"account"`
	Reason  string `json:"reason"`
}

// ValidAccountID returns an error unless id is a 12-digit AWS account ID.
func ValidAccountID(id string) error { return member.ValidAccountID(id) }
