package member

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Settings are a function's organisation settings, as template.yaml sets them in organization
// mode (Globals): DEPLOYMENT_MODE, ORGANIZATION_ACCOUNTS, ORGANIZATION_READ_ROLE_ARN,
// MEMBER_READ_ROLE, MEMBER_REMEDIATE_ROLE and ACCOUNT_CONCURRENCY. In account mode none is set.
type Settings struct {
	// Enabled is DEPLOYMENT_MODE=organization.
	Enabled bool
	// Accounts are the account IDs to search; empty means the organisation's active accounts.
	Accounts []string
	// ReadRoleARN is the optional role that lists the organisation's accounts.
	ReadRoleARN string
	// ReadRole and RemediateRole are the member roles' names.
	ReadRole, RemediateRole string
	// Concurrency is how many accounts a radius searches at once.
	Concurrency int
}

// SettingsFromEnv reads the settings through getenv (os.Getenv in main). An unset or empty
// DEPLOYMENT_MODE, or "account", is account mode, with every other variable ignored. Every
// malformed variable is reported in one error.
func SettingsFromEnv(getenv func(string) string) (Settings, error) {
	s := Settings{ReadRole: ReadRoleName, RemediateRole: RemediateRoleName, Concurrency: DefaultConcurrency}
	switch mode := getenv("DEPLOYMENT_MODE"); mode {
	case "", "account":
		return s, nil
	case "organization":
		s.Enabled = true
	default:
		return s, fmt.Errorf("DEPLOYMENT_MODE %q: want account or organization", mode)
	}
	var errs []error
	for _, id := range strings.Split(getenv("ORGANIZATION_ACCOUNTS"), ",") {
		if id = strings.TrimSpace(id); id == "" {
			continue
		}
		if err := ValidAccountID(id); err != nil {
			errs = append(errs, fmt.Errorf("ORGANIZATION_ACCOUNTS: %w", err))
			continue
		}
		s.Accounts = append(s.Accounts, id)
	}
	s.ReadRoleARN = getenv("ORGANIZATION_READ_ROLE_ARN")
	if v := getenv("MEMBER_READ_ROLE"); v != "" {
		s.ReadRole = v
	}
	if v := getenv("MEMBER_REMEDIATE_ROLE"); v != "" {
		s.RemediateRole = v
	}
	if v := getenv("ACCOUNT_CONCURRENCY"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			errs = append(errs, fmt.Errorf("ACCOUNT_CONCURRENCY %q: want a whole number of at least 1", v))
		} else {
			s.Concurrency = n
		}
	}
	return s, errors.Join(errs...)
}
