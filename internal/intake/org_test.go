package intake

import (
	"context"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/keywarden/keywarden/internal/blast"
	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/keyevent"
	"github.com/keywarden/keywarden/internal/org"
)

// fakeAccounts answers an organisation-wide search with the next of its answers.
type fakeAccounts struct {
	answers []org.Radius
	err     error
	calls   int
}

func (f *fakeAccounts) Find(context.Context, string) (org.Radius, error) {
	if f.err != nil {
		return org.Radius{}, f.err
	}
	r := f.answers[min(f.calls, len(f.answers)-1)]
	f.calls++
	return r, nil
}

// TestOrganizationCoverage: in organization mode the incident takes the organisation's radius,
// is marked organization, names the accounts not searched (incomplete) and their names; a later
// search that reads them all clears both, and a search that fails outright keeps what the last
// one said (as in account mode, a fold whose listing fails keeps the incident's radius).
func TestOrganizationCoverage(t *testing.T) {
	a := cluster("orders", true)
	a.Account = "222222222222"
	b := cluster("ledger", true)
	b.Account = "333333333333"
	accounts := []org.Account{{ID: "222222222222", Name: "payments-prod"}, {ID: "333333333333"}, {ID: "444444444444", Name: "sandbox"}}
	fake := &fakeAccounts{answers: []org.Radius{
		{Radius: blast.Radius{KeyARN: keyARN, Clusters: []incident.Cluster{a}}, Accounts: accounts, Incomplete: true,
			AccountsFailed: []org.AccountFailure{{Account: "444444444444", Reason: "assume role: AccessDenied"}}},
		{Radius: blast.Radius{KeyARN: keyARN, Clusters: []incident.Cluster{a, b}}, Accounts: accounts, AccountsFailed: []org.AccountFailure{}},
	}}
	store := newMemStore()
	svc := newService(disabled(), fakeRadius{}, store).WithAccounts(fake)

	got, err := svc.HandleKeyEvent(context.Background(), event("DisableKey", keyevent.KindLoss))
	if err != nil || got[0].Action != ActionOpened {
		t.Fatalf("got %+v, %v; want opened", got, err)
	}
	inc := store.byID[got[0].IncidentID]
	if !inc.Organization || !inc.RadiusIncomplete || len(inc.Clusters) != 1 {
		t.Errorf("opened: organization %v, incomplete %v, %d clusters; want true, true, 1", inc.Organization, inc.RadiusIncomplete, len(inc.Clusters))
	}
	if diff := cmp.Diff([]incident.AccountFailure{{Account: "444444444444", Reason: "assume role: AccessDenied"}}, inc.AccountsFailed); diff != "" {
		t.Errorf("accounts failed (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]string{"222222222222": "payments-prod", "444444444444": "sandbox"}, inc.AccountNames); diff != "" {
		t.Errorf("account names (-want +got):\n%s", diff)
	}

	second := event("DisableKey", keyevent.KindLoss)
	second.ID = "evt-2"
	if _, err := svc.HandleKeyEvent(context.Background(), second); err != nil {
		t.Fatal(err)
	}
	inc = store.byID[inc.ID]
	if inc.RadiusIncomplete || len(inc.AccountsFailed) != 0 || len(inc.Clusters) != 2 {
		t.Errorf("complete search: incomplete %v, failed %+v, %d clusters; want false, none, 2", inc.RadiusIncomplete, inc.AccountsFailed, len(inc.Clusters))
	}

	// The accounts cannot even be listed: the clusters known stay, and so does the last
	// search's word on the accounts.
	fake.err = errors.New("list the organisation's accounts: AccessDenied")
	third := event("DisableKey", keyevent.KindLoss)
	third.ID = "evt-3"
	if _, err := svc.HandleKeyEvent(context.Background(), third); err != nil {
		t.Fatal(err)
	}
	inc = store.byID[inc.ID]
	if len(inc.Clusters) != 2 || len(inc.AccountsFailed) != 0 || !inc.Organization {
		t.Errorf("listing failed: %d clusters, failed %+v, organization %v; want 2, none, true", len(inc.Clusters), inc.AccountsFailed, inc.Organization)
	}
}
