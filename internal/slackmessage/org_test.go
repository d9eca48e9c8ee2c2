package slackmessage

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/keywarden/keywarden/internal/incident"
)

// TestOrganizationGroupsByAccount: an organization-mode incident lists its clusters under their
// accounts (ID, and the name Organizations gave), and names the account it could not search with
// the reason; the same incident in account mode shows neither.
func TestOrganizationGroupsByAccount(t *testing.T) {
	inc := disabledThree()
	accounts := []string{"333333333333", "222222222222", "333333333333"}
	for i := range inc.Clusters {
		inc.Clusters[i].Account = accounts[i%len(accounts)]
	}
	plain, _ := Render(inc, at("2026-03-11T09:00:00Z"))

	inc.Organization = true
	inc.AccountNames = map[string]string{"222222222222": "payments-prod"}
	inc.RadiusIncomplete = true
	inc.AccountsFailed = []incident.AccountFailure{{Account: "444444444444", Reason: "assume role arn:aws:iam::444444444444:role/keywarden-read: AccessDenied"}}
	blocks, _ := Render(inc, at("2026-03-11T09:00:00Z"))
	b, _ := json.Marshal(blocks)
	text := string(b)
	a, bIdx := strings.Index(text, "Account `222222222222`* (payments-prod)"), strings.Index(text, "Account `333333333333`*")
	if a < 0 || bIdx < 0 || a > bIdx {
		t.Errorf("want both accounts as headings, 222222222222 with its name first: %s", text)
	}
	if strings.Count(text, ":office:") != 2 {
		t.Errorf("got %d account headings, want 2 (clusters grouped)", strings.Count(text, ":office:"))
	}
	if !strings.Contains(text, "`444444444444`: assume role") || !strings.Contains(text, "1 account was not searched") {
		t.Errorf("the unsearched account is not named with its reason: %s", text)
	}
	pb, _ := json.Marshal(plain)
	if strings.Contains(string(pb), ":office:") {
		t.Errorf("account mode groups by account: %s", pb)
	}
}
