// Package member is what acting in a member account of the organisation takes, and nothing
// more: the member roles (sts:AssumeRole into keywarden-read or keywarden-remediate, credentials
// cached per account) and the organisation settings template.yaml gives the functions. It links
// no RDS, KMS or Organizations client, so RemediateFunction can act across accounts without
// the blast radius (internal/org builds on it and re-exports its names).
//
// Boundaries: it must not import the RDS, KMS or Organizations clients, the blast radius or Slack
// (RemediateFunction links it).
package member

import (
	"fmt"
	"regexp"
)

// Default role names, the names member.yaml gives the roles unless its parameters say otherwise.
const (
	ReadRoleName      = "keywarden-read"
	RemediateRoleName = "keywarden-remediate"
)

// DefaultConcurrency is how many accounts are searched at once unless told otherwise (the
// template's AccountConcurrency parameter has the same default).
const DefaultConcurrency = 10

var accountID = regexp.MustCompile(`^[0-9]{12}$`)

// ValidAccountID returns an error unless id is a 12-digit AWS account ID.
func ValidAccountID(id string) error {
	if !accountID.MatchString(id) {
		return fmt.Errorf("account ID %q: want 12 digits", id)
	}
	return nil
}
