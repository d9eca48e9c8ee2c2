package template_test

import (
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/keywarden/keywarden/internal/template"
)

// memberPath is the member accounts' StackSet template, from this package's folder.
const memberPath = "../../member.yaml"

func loadMember(t *testing.T) *template.Template {
	t.Helper()
	m, err := template.Load(memberPath)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return m
}

const centralBus = "arn:${AWS::Partition}:events:${AWS::Region}:${CentralAccountId}:event-bus/${CentralEventBusName}"

// TestMemberPatternsMatch: a member forwards exactly what the central functions' rules route —
// each of template.yaml's event patterns once, word for word, from the member's default bus to
// the central bus, with the forwarding role.
func TestMemberPatternsMatch(t *testing.T) {
	rules, err := loadTemplate(t).Rules()
	if err != nil {
		t.Fatalf("Rules: %v", err)
	}
	canonical := func(v any) string {
		data, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}
	var want []string
	for _, r := range rules {
		var p any
		if err := json.Unmarshal(r.Pattern, &p); err != nil {
			t.Fatal(err)
		}
		want = append(want, canonical(p))
	}
	var got []string
	for _, r := range loadMember(t).Resources {
		if r.Type != "AWS::Events::Rule" {
			continue
		}
		got = append(got, canonical(r.Properties["EventPattern"]))
		if bus, ok := r.Properties["EventBusName"]; ok {
			t.Errorf("%s on bus %v, want the member's default bus (AWS services publish there)", r.LogicalID, bus)
		}
		targets, _ := r.Properties["Targets"].([]any)
		if len(targets) != 1 {
			t.Errorf("%s: %d targets, want the central bus only", r.LogicalID, len(targets))
			continue
		}
		tg, _ := targets[0].(map[string]any)
		if got := template.ResourceText(tg["Arn"]); got != centralBus {
			t.Errorf("%s target %s, want %s", r.LogicalID, got, centralBus)
		}
		if got := template.ResourceText(tg["RoleArn"]); got != "${ForwardRole.Arn}" {
			t.Errorf("%s target role %s, want ForwardRole", r.LogicalID, got)
		}
	}
	slices.Sort(want)
	slices.Sort(got)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("member patterns (-template.yaml +member.yaml):\n%s", diff)
	}
}

// memberAllowed is every action each member role may have, with nothing else.
var memberAllowed = map[string][]string{
	// EventBridge's role for the forwarding rules: put events on the central bus, nothing else.
	"ForwardRole": {"events:PutEvents"},
	// keywarden-read: the blast radius, key descriptions, event history (CloudTrail and RDS).
	"ReadRole": {
		"rds:DescribeDBClusters", "rds:DescribeDBInstances", "rds:DescribeDBClusterSnapshots",
		"rds:DescribeDBClusterAutomatedBackups", "rds:DescribeGlobalClusters", "rds:DescribeEvents",
		"kms:ListKeys", "kms:ListAliases", "kms:DescribeKey", "cloudtrail:LookupEvents",
	},
	// keywarden-remediate: the four writes of the one-click fix, as RemediateFunction has them.
	"RemediateRole": {"kms:CancelKeyDeletion", "kms:EnableKey", "rds:StartDBCluster", "rds:RebootDBInstance"},
}

// memberResource is the only Resource text each action may have in a member role.
var memberResource = map[string][]string{
	"events:PutEvents":     {centralBus},
	"kms:DescribeKey":      {"arn:${AWS::Partition}:kms:*:${AWS::AccountId}:key/*"},
	"rds:StartDBCluster":   {"arn:${AWS::Partition}:rds:*:${AWS::AccountId}:cluster:*"},
	"rds:RebootDBInstance": {"arn:${AWS::Partition}:rds:*:${AWS::AccountId}:db:*"},
	// Checked per branch below: RemediationKeyArns, or this account's keys.
	"kms:CancelKeyDeletion": {"${RemediationKeyArns}", "arn:${AWS::Partition}:kms:*:${AWS::AccountId}:key/*"},
	"kms:EnableKey":         {"${RemediationKeyArns}", "arn:${AWS::Partition}:kms:*:${AWS::AccountId}:key/*"},
}

// TestMemberLeastPrivilege holds member.yaml to the rules template.yaml is held to: named
// actions only, "*" only where IAM allows nothing narrower, writes only in the remediate role and
// scoped by the same key restriction, and roles trusted only by whom they serve.
func TestMemberLeastPrivilege(t *testing.T) {
	m := loadMember(t)
	got := map[string]map[string]bool{}
	keyWriteBranches := map[string]bool{}
	for _, id := range slices.Sorted(maps.Keys(m.Resources)) {
		r := m.Resources[id]
		if strings.HasPrefix(r.Type, "AWS::IAM::") && r.Type != "AWS::IAM::Role" {
			t.Errorf("%s: %s grants permissions outside the three roles", id, r.Type)
		}
		if r.Type != "AWS::IAM::Role" {
			continue
		}
		if _, ok := r.Properties["ManagedPolicyArns"]; ok {
			t.Errorf("%s: managed policies hide their actions from this test", id)
		}
		checkTrust(t, id, r.Properties["AssumeRolePolicyDocument"])
		var docs []any
		policies, _ := r.Properties["Policies"].([]any)
		for _, p := range policies {
			docs = append(docs, p.(map[string]any)["PolicyDocument"])
		}
		stmts, other, err := template.Function{LogicalID: id, Properties: map[string]any{"Policies": docs}}.Statements()
		if err != nil || len(other) > 0 {
			t.Fatalf("%s: statements: %v %v", id, err, other)
		}
		got[id] = map[string]bool{}
		for _, s := range stmts {
			where := id + " " + s.Sid
			if s.Effect != "Allow" || s.Principal != nil || len(s.NotActions)+len(s.NotResources) > 0 {
				t.Errorf("%s: want a plain Allow statement", where)
			}
			for _, a := range s.Actions {
				got[id][a] = true
				if strings.ContainsAny(a, "*?") {
					t.Errorf("%s: wildcard action %q", where, a)
				}
				for _, res := range s.Resources {
					text := template.ResourceText(res)
					switch {
					case text == "*":
						if !unscopable[a] && a != "rds:DescribeEvents" {
							t.Errorf("%s: %s on \"*\"; it can be scoped", where, a)
						}
					case !slices.Contains(memberResource[a], text):
						t.Errorf("%s: %s on %s, want one of %v", where, a, text, memberResource[a])
					}
				}
				if a == "kms:EnableKey" {
					keys := slices.Contains(s.Branches, "HasRemediationKeys")
					tag := slices.Contains(s.Branches, "HasRemediationKeyTag")
					keyWriteBranches[strings.Join(s.Branches, " ")] = true
					if text := template.ResourceText(s.Resources[0]); keys != (text == "${RemediationKeyArns}") {
						t.Errorf("%s under %v: resource %s", where, s.Branches, text)
					}
					if tag != (s.Condition != nil) {
						t.Errorf("%s under %v: condition %v", where, s.Branches, s.Condition)
					}
				}
			}
		}
	}
	for id, want := range memberAllowed {
		if diff := cmp.Diff(slices.Sorted(slices.Values(want)), slices.Sorted(maps.Keys(got[id]))); diff != "" {
			t.Errorf("%s actions (-allowed +member.yaml):\n%s", id, diff)
		}
	}
	if len(got) != len(memberAllowed) {
		t.Errorf("roles %v, want %v", slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(memberAllowed)))
	}
	if len(keyWriteBranches) != 4 {
		t.Errorf("key writes under %v; want all four choices of RemediationKeyArns and RemediationKeyTag", slices.Sorted(maps.Keys(keyWriteBranches)))
	}
	for _, role := range []string{"ReadRole", "RemediateRole"} {
		if m.Resources[role].Condition != "CreatesRoles" {
			t.Errorf("%s: created in every Region; IAM names are global, want Condition CreatesRoles", role)
		}
	}
}

// checkTrust: EventBridge may assume the forwarding role for this account's rules only; the
// member roles trust the central account's principals named by the parameters only.
func checkTrust(t *testing.T, id string, doc any) {
	t.Helper()
	stmts, _ := doc.(map[string]any)["Statement"].([]any)
	if len(stmts) != 1 {
		t.Errorf("%s: %d trust statements, want 1", id, len(stmts))
		return
	}
	s := stmts[0].(map[string]any)
	principal := map[string]any{"AWS": map[string]any{"Fn::Sub": "arn:${AWS::Partition}:iam::${CentralAccountId}:root"}}
	var condition map[string]any
	switch id {
	case "ForwardRole":
		principal = map[string]any{"Service": "events.amazonaws.com"}
		condition = map[string]any{"StringEquals": map[string]any{"aws:SourceAccount": map[string]any{"Ref": "AWS::AccountId"}}}
	case "ReadRole":
		condition = map[string]any{"ArnLike": map[string]any{"aws:PrincipalArn": map[string]any{"Ref": "CentralReadPrincipals"}}}
	case "RemediateRole":
		condition = map[string]any{"ArnLike": map[string]any{"aws:PrincipalArn": map[string]any{"Ref": "CentralRemediatePrincipals"}}}
	}
	want := map[string]any{"Effect": "Allow", "Principal": principal, "Action": "sts:AssumeRole", "Condition": condition}
	if diff := cmp.Diff(want, s); diff != "" {
		t.Errorf("%s trust policy (-want +got):\n%s", id, diff)
	}
}

// TestOrganizationMode: what organization mode adds to template.yaml, resolved as deployed — the
// bus and its organisation-only policy, the rules on that bus, the functions' environment and
// the outputs member.yaml's StackSet takes.
func TestOrganizationMode(t *testing.T) {
	tpl, err := loadTemplate(t).Resolve(map[string]string{"DeploymentMode": "organization", "OrganizationId": "o-a1b2c3d4e5"})
	if err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	bus := tpl.Resources["KeywardenEventBus"]
	if bus.Type != "AWS::Events::EventBus" || bus.Properties["Name"] != "keywarden" {
		t.Errorf("KeywardenEventBus = %+v, want the bus named keywarden", bus)
	}
	policy := tpl.Resources["KeywardenEventBusPolicy"].Properties["Statement"]
	wantPolicy := map[string]any{
		"Effect": "Allow", "Principal": "*", "Action": "events:PutEvents",
		"Resource":  map[string]any{"Fn::GetAtt": []any{"KeywardenEventBus", "Arn"}},
		"Condition": map[string]any{"StringEquals": map[string]any{"aws:PrincipalOrgID": map[string]any{"Ref": "OrganizationId"}}},
	}
	if diff := cmp.Diff(wantPolicy, policy); diff != "" {
		t.Errorf("bus policy (-want +got):\n%s", diff)
	}
	rules, err := tpl.Rules()
	if err != nil {
		t.Fatalf("Rules: %v", err)
	}
	for _, r := range rules {
		if r.Bus != "keywarden" {
			t.Errorf("%s/%s on bus %q, want keywarden", r.Function, r.Name, r.Bus)
		}
	}
	env, _ := tpl.Globals["Function"].(map[string]any)["Environment"].(map[string]any)["Variables"].(map[string]any)
	for name, want := range map[string]any{
		"DEPLOYMENT_MODE": "organization", "MEMBER_READ_ROLE": map[string]any{"Ref": "MemberReadRoleName"},
		"MEMBER_REMEDIATE_ROLE": map[string]any{"Ref": "MemberRemediateRoleName"},
		"ACCOUNT_CONCURRENCY":   map[string]any{"Ref": "AccountConcurrency"},
	} {
		if diff := cmp.Diff(want, env[name]); diff != "" {
			t.Errorf("Globals %s (-want +got):\n%s", name, diff)
		}
	}
	// internal/org's SettingsFromEnv reads these names.
	for _, name := range []string{"DEPLOYMENT_MODE", "ORGANIZATION_ACCOUNTS", "ORGANIZATION_READ_ROLE_ARN",
		"MEMBER_READ_ROLE", "MEMBER_REMEDIATE_ROLE", "ACCOUNT_CONCURRENCY"} {
		if _, ok := env[name]; !ok {
			t.Errorf("Globals lacks %s in organization mode", name)
		}
	}
	for _, o := range []string{"OrganizationEventBusArn", "MemberReadPrincipals", "MemberRemediatePrincipals"} {
		if _, ok := tpl.Outputs[o]; !ok {
			t.Errorf("output %s missing", o)
		}
	}
	// Which function may assume which role, per way of finding the accounts.
	for _, tc := range []struct {
		params map[string]string
		want   map[string][]string
	}{
		{map[string]string{}, map[string][]string{
			"KeyEventFunction":  {"organizations:ListAccounts", "sts:AssumeRole ${MemberReadRoleName}"},
			"RdsEventFunction":  {"organizations:ListAccounts", "sts:AssumeRole ${MemberReadRoleName}"},
			"ReconcileFunction": {"organizations:ListAccounts", "sts:AssumeRole ${MemberReadRoleName}"},
			"RemediateFunction": {"sts:AssumeRole ${MemberReadRoleName}", "sts:AssumeRole ${MemberRemediateRoleName}"},
		}},
		{map[string]string{"OrganizationReadRoleArn": "arn:aws:iam::123456789012:role/r"}, map[string][]string{
			"KeyEventFunction":  {"sts:AssumeRole ${MemberReadRoleName}", "sts:AssumeRole ${OrganizationReadRoleArn}"},
			"RdsEventFunction":  {"sts:AssumeRole ${MemberReadRoleName}", "sts:AssumeRole ${OrganizationReadRoleArn}"},
			"ReconcileFunction": {"sts:AssumeRole ${MemberReadRoleName}", "sts:AssumeRole ${OrganizationReadRoleArn}"},
			"RemediateFunction": {"sts:AssumeRole ${MemberReadRoleName}", "sts:AssumeRole ${MemberRemediateRoleName}"},
		}},
		{map[string]string{"Accounts": "111111111111,222222222222"}, map[string][]string{
			"KeyEventFunction":  {"sts:AssumeRole ${MemberReadRoleName}"},
			"RdsEventFunction":  {"sts:AssumeRole ${MemberReadRoleName}"},
			"ReconcileFunction": {"sts:AssumeRole ${MemberReadRoleName}"},
			"RemediateFunction": {"sts:AssumeRole ${MemberReadRoleName}", "sts:AssumeRole ${MemberRemediateRoleName}"},
		}},
	} {
		params := map[string]string{"DeploymentMode": "organization", "OrganizationId": "o-a1b2c3d4e5"}
		maps.Copy(params, tc.params)
		tpl, err := loadTemplate(t).Resolve(params)
		if err != nil {
			t.Fatalf("Resolve: %v", err)
		}
		got := map[string][]string{}
		for _, f := range tpl.Functions() {
			stmts, _, err := f.Statements()
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range stmts {
				for _, a := range s.Actions {
					switch {
					case a == "organizations:ListAccounts":
						got[f.LogicalID] = append(got[f.LogicalID], a)
					case a == "sts:AssumeRole":
						text := template.ResourceText(s.Resources[0])
						got[f.LogicalID] = append(got[f.LogicalID], a+" "+text[strings.LastIndex(text, "$"):])
					}
				}
			}
			slices.Sort(got[f.LogicalID])
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("%v: organisation permissions (-want +got):\n%s", tc.params, diff)
		}
	}
}
