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
//     variables in organization mode only) and, when Settings.Enabled, builds two Roles from its
//     base configuration: NewRoles(cfg, s.ReadRole) and NewRoles(cfg, s.RemediateRole).
//   - triage (and the reconciler's backstop) build one Finder per run with
//     Settings.Finder(cfg, readRoles, blast options) and call Finder.Find(ctx, keyARN) instead of
//     blast.Finder.Find; Radius.Radius is the blast radius with every dependent's Account set,
//     Radius.Incomplete goes to incident.Incident.RadiusIncomplete, and Radius.AccountsFailed
//     names the accounts the incident must say were not searched.
//   - remedy asks a Roles for the remediate role for the configuration of the account a step
//     acts in: Roles.Config(ctx, incident.KeyAccount, region) for CancelKeyDeletion and
//     EnableKey, Roles.Config(ctx, cluster.Account, region) for StartDBCluster and
//     RebootDBInstance, and records the account on the step. A *RoleError is a step that
//     failed in that account, never a skipped one.
package org

import (
	"fmt"
	"regexp"
)

// Default role names, the names member.yaml gives the roles unless its parameters say otherwise.
const (
	ReadRoleName      = "keywarden-read"
	RemediateRoleName = "keywarden-remediate"
)

// DefaultConcurrency is how many accounts a Finder searches at once unless told otherwise (the
// template's AccountConcurrency parameter has the same default).
const DefaultConcurrency = 10

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

var accountID = regexp.MustCompile(`^[0-9]{12}$`)

// ValidAccountID returns an error unless id is a 12-digit AWS account ID.
func ValidAccountID(id string) error {
	if !accountID.MatchString(id) {
		return fmt.Errorf("account ID %q: want 12 digits", id)
	}
	return nil
}
