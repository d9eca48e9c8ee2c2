package incident

// AccountFailure is a member account whose dependents of the key could not be read in
// organization mode (issue 13): its keywarden-read role could not be assumed, or a listing in it
// failed. The incident names it (AccountsFailed) and says its radius is incomplete, so that an
// account the search missed is never silently dropped.
type AccountFailure struct {
	// Account is the 12-digit account ID.
	Account string `json:"account"`
	// Reason is the error, for people ("assume role arn:aws:iam::…:role/keywarden-read: AccessDenied …").
	Reason string `json:"reason"`
}

// AccountName returns the account's name as Organizations gave it when the incident's radius was
// read (AccountNames), or "" when it is unknown (a fixed account list, or account mode).
func (inc *Incident) AccountName(account string) string {
	return inc.AccountNames[account]
}
