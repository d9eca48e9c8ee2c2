package template_test

import (
	"encoding/json"
	"flag"
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/keywarden/keywarden/internal/template"
)

var update = flag.Bool("update", false, "rewrite testdata/account-mode.json from template.yaml")

// accountMode decides the conditions of organization mode the way DeploymentMode=account does:
// all false, whatever OrganizationId, Accounts or OrganizationReadRoleArn say.
var accountMode = map[string]bool{
	"IsOrganization": false, "ListsOrganization": false,
	"AssumesOrganizationReadRole": false, "ListsOrganizationDirectly": false,
}

// deployed is what a template deploys: its resources, Globals and outputs.
func deployed(t *testing.T, tpl *template.Template) []byte {
	t.Helper()
	data, err := json.MarshalIndent(map[string]any{"Resources": tpl.Resources, "Globals": tpl.Globals, "Outputs": tpl.Outputs}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(data, '\n')
}

// TestAccountModeUnchanged: with DeploymentMode=account, template.yaml deploys exactly what it
// deployed before organization mode existed — every function, rule, policy, table, alarm and
// output, under every choice of the other parameters (their conditions stay undecided).
// testdata/account-mode.json is that template before issue 13, decided the same way; refresh it
// with -update only for a change meant for account mode too.
func TestAccountModeUnchanged(t *testing.T) {
	tpl, err := loadTemplate(t).Decide(accountMode)
	if err != nil {
		t.Fatalf("Decide: %v", err)
	}
	got := deployed(t, tpl)
	const golden = "testdata/account-mode.json"
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("account mode deploys something else (-%s +template.yaml):\n%s", golden, diff)
	}
}
