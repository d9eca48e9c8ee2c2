package approval

// Quorum applies the two-person rule: remediation runs once `required` distinct users have
// approved (REQUIRED_APPROVALS, 1 by default, 2 for two-person). approvedBy is every approval
// recorded so far, in order, possibly with repeats — a second click by the same person must not
// count twice. distinct keeps first-approval order and drops empty IDs. A required count below 1
// is treated as 1, so a misconfiguration can never mean "no approval needed".
func Quorum(required int, approvedBy []string) (met bool, distinct []string) {
	required = max(required, 1)
	seen := make(map[string]bool, len(approvedBy))
	for _, id := range approvedBy {
		if id == "" || seen[id] {
			continue
		}
		seen[id] = true
		distinct = append(distinct, id)
	}
	return len(distinct) >= required, distinct
}
