package template_test

import (
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/keywarden/keywarden/internal/template"
)

// allowedActions is every IAM action each function may have, and nothing else: adding one to the
// template fails this test until it is added here too, in review, with the reason beside it.
var allowedActions = map[string][]string{
	// rds:DescribeBlueGreenDeployments (issue 9): a blue/green deployment's clusters cannot
	// stop, so they get no recoverable window; the blast radius lists the deployments.
	"KeyEventFunction": {
		"kms:ListKeys", "kms:ListAliases", "kms:DescribeKey",
		"rds:DescribeDBClusters", "rds:DescribeDBInstances", "rds:DescribeDBClusterSnapshots",
		"rds:DescribeDBClusterAutomatedBackups", "rds:DescribeGlobalClusters", "rds:DescribeBlueGreenDeployments",
		"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem",
		"dynamodb:ConditionCheckItem", "dynamodb:Query", "dynamodb:BatchWriteItem", "dynamodb:Scan",
		"secretsmanager:GetSecretValue",
		// Organization mode only: the member accounts' keywarden-read role, and the accounts to
		// search from Organizations (directly, or through OrganizationReadRoleArn).
		"sts:AssumeRole", "organizations:ListAccounts",
	},
	// Triage like KeyEvent: it opens the incidents whose CloudTrail event was lost.
	"RdsEventFunction": {
		"kms:ListKeys", "kms:ListAliases", "kms:DescribeKey",
		"rds:DescribeDBClusters", "rds:DescribeDBInstances", "rds:DescribeDBClusterSnapshots",
		"rds:DescribeDBClusterAutomatedBackups", "rds:DescribeGlobalClusters", "rds:DescribeBlueGreenDeployments",
		"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem",
		"dynamodb:ConditionCheckItem", "dynamodb:Query", "dynamodb:BatchWriteItem", "dynamodb:Scan",
		"secretsmanager:GetSecretValue",
		"sts:AssumeRole", "organizations:ListAccounts", // organization mode, as KeyEventFunction
	},
	// No KMS and no RDS at all: a click can only reach them through RemediateFunction.
	"SlackActionFunction": {
		"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem",
		"dynamodb:ConditionCheckItem", "dynamodb:Query", "dynamodb:BatchWriteItem",
		"secretsmanager:GetSecretValue",
		"lambda:InvokeFunction",
	},
	"RemediateFunction": {
		"kms:DescribeKey", "kms:CancelKeyDeletion", "kms:EnableKey",
		"rds:DescribeDBClusters", "rds:DescribeDBInstances", "rds:StartDBCluster", "rds:RebootDBInstance",
		"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem",
		"dynamodb:ConditionCheckItem", "dynamodb:Query", "dynamodb:BatchWriteItem",
		"secretsmanager:GetSecretValue",
		// Organization mode only: keywarden-read and keywarden-remediate in the key's and the
		// clusters' accounts.
		"sts:AssumeRole",
	},
	// rds:DescribeEvents (issue 9): RDS's 14-day event history dates a loss the backstop
	// finds late.
	"ReconcileFunction": {
		"kms:ListKeys", "kms:ListAliases", "kms:DescribeKey",
		"rds:DescribeDBClusters", "rds:DescribeDBInstances", "rds:DescribeDBClusterSnapshots",
		"rds:DescribeDBClusterAutomatedBackups", "rds:DescribeGlobalClusters", "rds:DescribeBlueGreenDeployments",
		"rds:DescribeEvents",
		"cloudtrail:LookupEvents",
		"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem",
		"dynamodb:ConditionCheckItem", "dynamodb:Query", "dynamodb:BatchWriteItem", "dynamodb:Scan",
		"secretsmanager:GetSecretValue",
		"sts:AssumeRole", "organizations:ListAccounts", // organization mode, as KeyEventFunction
		// Issue 11: the hand-off recovery starts an approved remediation whose hand-off was
		// lost (an asynchronous invoke of RemediateFunction only, which claims the run).
		"lambda:InvokeFunction",
	},
}

// keyWrites are the KMS and RDS write actions of issue 5 rule 2: RemediateFunction only.
var keyWrites = []string{"kms:EnableKey", "kms:CancelKeyDeletion", "rds:StartDBCluster", "rds:RebootDBInstance"}

// unscopable are the actions that have no resource-level permissions (or, for RDS Describe*,
// none when listing every resource), so "*" is their only possible Resource.
var unscopable = map[string]bool{
	"kms:ListKeys": true, "kms:ListAliases": true, "cloudtrail:LookupEvents": true,
	"rds:DescribeDBClusters": true, "rds:DescribeDBInstances": true, "rds:DescribeDBClusterSnapshots": true,
	"rds:DescribeDBClusterAutomatedBackups": true, "rds:DescribeGlobalClusters": true,
	"organizations:ListAccounts":       true,
	"rds:DescribeBlueGreenDeployments": true, "rds:DescribeEvents": true,
}

// publishers may publish to the notification topic: every function announces incidents, and
// each pages a critical incident on open or one Slack cannot carry (internal/page).
var publishers = []string{"KeyEventFunction", "RdsEventFunction", "SlackActionFunction", "RemediateFunction", "ReconcileFunction"}

// anyAccountKeys is the one Resource kms:DescribeKey may have besides this account's keys
// (issue 9): a cluster may use a key of another account in the Region, whose key policy still
// decides whether it answers. Only DescribeKey, a read; every KMS write stays on this account.
const anyAccountKeys = "arn:${AWS::Partition}:kms:${AWS::Region}:*:key/*"

// resourceFor is the only Resource text a service's actions may have (besides "*" for
// unscopable ones); KMS and RDS writes are checked on their own below.
var resourceFor = map[string][]string{
	"dynamodb": {"${IncidentRecordsTable.Arn}", "${IncidentsTable.Arn}"},
	"lambda":   {"${RemediateFunction.Arn}"},
	"kms":      {"arn:${AWS::Partition}:kms:${AWS::Region}:${AWS::AccountId}:key/*"},
	// Organization mode: the member roles by name in any account (each member role trusts only
	// the central functions' roles), and the optional role that lists the organisation.
	"sts": {"arn:${AWS::Partition}:iam::*:role/${MemberReadRoleName}",
		"arn:${AWS::Partition}:iam::*:role/${MemberRemediateRoleName}", "${OrganizationReadRoleArn}"},
	// The optional notification topic only, and only when it is set (HasNotificationTopic).
	"sns": {"${NotificationTopicArn}"},
}

// legacyActions are all a function may do on the table of the old one-item layout: read an
// incident, check its open lock in a transaction, and delete it once it is carried over.
var legacyActions = []string{"dynamodb:GetItem", "dynamodb:DeleteItem", "dynamodb:ConditionCheckItem", "dynamodb:Scan"}

// allStatements returns every statement of every function, failing on any policy the test
// cannot see into.
func allStatements(t *testing.T, tpl *template.Template) []template.Statement {
	t.Helper()
	var all []template.Statement
	for _, f := range tpl.Functions() {
		stmts, other, err := f.Statements()
		if err != nil {
			t.Fatalf("%s: %v", f.LogicalID, err)
		}
		for _, o := range other {
			t.Errorf("%s: policy %s is not an inline statement list; managed policies and SAM policy templates hide their actions from this test", f.LogicalID, o)
		}
		all = append(all, stmts...)
	}
	if g, _ := tpl.Globals["Function"].(map[string]any); g != nil {
		for _, k := range []string{"Policies", "Role", "PermissionsBoundary"} {
			if _, ok := g[k]; ok {
				t.Errorf("Globals.Function.%s is set; permissions are per function", k)
			}
		}
	}
	for _, r := range tpl.Resources {
		if strings.HasPrefix(r.Type, "AWS::IAM::") || r.Type == "AWS::Serverless::Connector" {
			t.Errorf("resource %s of type %s grants permissions outside the functions' Policies", r.LogicalID, r.Type)
		}
	}
	return all
}

func TestLeastPrivilege(t *testing.T) {
	tpl := loadTemplate(t)
	stmts := allStatements(t, tpl)
	if len(stmts) == 0 {
		t.Fatal("no policy statements found")
	}

	got := map[string]map[string]bool{}
	for _, s := range stmts {
		where := s.Function + " " + s.Sid
		if s.Effect != "Allow" && s.Effect != "Deny" {
			t.Errorf("%s: Effect %q", where, s.Effect)
		}
		if len(s.NotActions) > 0 || len(s.NotResources) > 0 || s.Principal != nil {
			t.Errorf("%s: NotAction, NotResource or Principal in an identity policy", where)
		}
		if len(s.Actions) == 0 || len(s.Resources) == 0 {
			t.Errorf("%s: no Action or no Resource", where)
		}
		if got[s.Function] == nil {
			got[s.Function] = map[string]bool{}
		}
		for _, a := range s.Actions {
			// No "*", "kms:*", "rds:*" or "rds:Describe*": every action named.
			if strings.Contains(a, "*") || strings.Contains(a, "?") {
				t.Errorf("%s: wildcard action %q", where, a)
			}
			if s.Effect == "Allow" {
				got[s.Function][a] = true
			}
			if (strings.HasPrefix(a, "sts:") || strings.HasPrefix(a, "organizations:")) && !slices.Contains(s.Branches, "IsOrganization") &&
				!slices.Contains(s.Branches, "AssumesOrganizationReadRole") && !slices.Contains(s.Branches, "ListsOrganizationDirectly") {
				t.Errorf("%s: %s outside organization mode (branches %v)", where, a, s.Branches)
			}
			if len(s.Resources) > 0 && strings.Contains(template.ResourceText(s.Resources[0]), "${MemberRemediateRoleName}") && s.Function != "RemediateFunction" {
				t.Errorf("%s: the member remediate role outside RemediateFunction", where)
			}
			if slices.Contains(keyWrites, a) && s.Function != "RemediateFunction" {
				t.Errorf("%s: write action %s outside RemediateFunction", where, a)
			}
			service, _, _ := strings.Cut(a, ":")
			for _, r := range s.Resources {
				text := template.ResourceText(r)
				switch {
				case text == "*":
					if !unscopable[a] {
						t.Errorf("%s: %s on Resource \"*\"; it can be scoped", where, a)
					}
				case slices.Contains(keyWrites, a):
					// Checked in TestRemediationScope.
				case text == anyAccountKeys:
					if a != "kms:DescribeKey" || s.Function == "RemediateFunction" {
						t.Errorf("%s: %s on keys of any account; only the event and reconcile functions' kms:DescribeKey may be", where, a)
					}
				case service == "secretsmanager":
					if text != "${SlackBotTokenSecretArn}" && text != "${SlackSigningSecretArn}" {
						t.Errorf("%s: %s on %s, want only the Slack secret ARN parameters", where, a, text)
					}
				case text == "${IncidentsTable.Arn}" && !slices.Contains(legacyActions, a):
					t.Errorf("%s: %s on the legacy incidents table, which is only read and emptied", where, a)
				case service == "sns" && !slices.Contains(s.Branches, "HasNotificationTopic"):
					t.Errorf("%s: %s without HasNotificationTopic: an empty topic must grant nothing", where, a)
				case resourceFor[service] != nil:
					if !slices.Contains(resourceFor[service], text) {
						t.Errorf("%s: %s on %s, want one of %v", where, a, text, resourceFor[service])
					}
				default:
					t.Errorf("%s: %s on %s: no rule for this resource in the test", where, a, text)
				}
			}
		}
	}

	for id, want := range allowedActions {
		if slices.Contains(publishers, id) {
			want = append(slices.Clone(want), "sns:Publish")
		}
		gotList := slices.Sorted(maps.Keys(got[id]))
		wantList := slices.Sorted(slices.Values(want))
		if diff := cmp.Diff(wantList, gotList); diff != "" {
			t.Errorf("%s actions (-allowed +template):\n%s", id, diff)
		}
	}
	for id := range got {
		if _, ok := allowedActions[id]; !ok {
			t.Errorf("%s has permissions but no entry in allowedActions", id)
		}
	}
}

// TestSecretsScope: each function reads only the secrets it uses — the signing secret only
// where Slack's requests arrive.
func TestSecretsScope(t *testing.T) {
	tpl := loadTemplate(t)
	// A statement appears once per choice of the policy's conditions: collect each secret once.
	got := map[string][]string{}
	for _, s := range allStatements(t, tpl) {
		if !slices.Contains(s.Actions, "secretsmanager:GetSecretValue") {
			continue
		}
		for _, r := range s.Resources {
			if text := template.ResourceText(r); !slices.Contains(got[s.Function], text) {
				got[s.Function] = append(got[s.Function], text)
			}
		}
	}
	want := map[string][]string{
		"KeyEventFunction":    {"${SlackBotTokenSecretArn}"},
		"RdsEventFunction":    {"${SlackBotTokenSecretArn}"},
		"SlackActionFunction": {"${SlackBotTokenSecretArn}", "${SlackSigningSecretArn}"},
		"RemediateFunction":   {"${SlackBotTokenSecretArn}"},
		"ReconcileFunction":   {"${SlackBotTokenSecretArn}"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("GetSecretValue resources (-want +got):\n%s", diff)
	}
}

// TestRemediationScope: the KMS writes are limited to RemediationKeyArns when it is set and to
// keys tagged keywarden:remediation=<RemediationKeyTag> when that is set, in every combination;
// the RDS writes to this account and region's clusters and instances.
func TestRemediationScope(t *testing.T) {
	tpl := loadTemplate(t)
	const anyKey = "arn:${AWS::Partition}:kms:${AWS::Region}:${AWS::AccountId}:key/*"
	wantRDS := map[string]string{
		"rds:StartDBCluster":   "arn:${AWS::Partition}:rds:${AWS::Region}:${AWS::AccountId}:cluster:*",
		"rds:RebootDBInstance": "arn:${AWS::Partition}:rds:${AWS::Region}:${AWS::AccountId}:db:*",
	}
	seen := map[string]bool{}
	for _, s := range allStatements(t, tpl) {
		var kmsWrites, rdsWrites []string
		for _, a := range s.Actions {
			switch {
			case a == "kms:EnableKey" || a == "kms:CancelKeyDeletion":
				kmsWrites = append(kmsWrites, a)
			case wantRDS[a] != "":
				rdsWrites = append(rdsWrites, a)
			}
		}
		if len(kmsWrites) > 0 && len(rdsWrites) > 0 {
			t.Errorf("%s %s mixes KMS and RDS writes; keep them apart so each is scoped on its own", s.Function, s.Sid)
		}
		for _, a := range rdsWrites {
			for _, r := range s.Resources {
				if got := template.ResourceText(r); got != wantRDS[a] {
					t.Errorf("%s %s: %s on %s, want %s", s.Function, s.Sid, a, got, wantRDS[a])
				}
			}
		}
		if len(kmsWrites) == 0 {
			continue
		}
		keys := slices.Contains(s.Branches, "HasRemediationKeys")
		noKeys := slices.Contains(s.Branches, "!HasRemediationKeys")
		tag := slices.Contains(s.Branches, "HasRemediationKeyTag")
		noTag := slices.Contains(s.Branches, "!HasRemediationKeyTag")
		if keys == noKeys || tag == noTag {
			t.Errorf("%s %s: KMS writes under conditions %v; want them decided by HasRemediationKeys and HasRemediationKeyTag", s.Function, s.Sid, s.Branches)
			continue
		}
		// Other conditions of the policy (the deployment mode, HasNotificationTopic) multiply the
		// branches; only the key restriction decides the KMS writes.
		var decided []string
		for _, b := range s.Branches {
			if strings.Contains(b, "HasRemediationKey") {
				decided = append(decided, b)
			}
		}
		seen[strings.Join(decided, " ")] = true
		var resources []string
		for _, r := range s.Resources {
			resources = append(resources, template.ResourceText(r))
		}
		wantResources := []string{anyKey}
		if keys {
			wantResources = []string{"${RemediationKeyArns}"}
		}
		if diff := cmp.Diff(wantResources, resources); diff != "" {
			t.Errorf("%s %s under %v: resources (-want +got):\n%s", s.Function, s.Sid, s.Branches, diff)
		}
		var wantCondition map[string]any
		if tag {
			wantCondition = map[string]any{"StringEquals": map[string]any{
				"aws:ResourceTag/keywarden:remediation": map[string]any{"Ref": "RemediationKeyTag"}}}
		}
		if diff := cmp.Diff(wantCondition, s.Condition); diff != "" {
			t.Errorf("%s %s under %v: condition (-want +got):\n%s", s.Function, s.Sid, s.Branches, diff)
		}
	}
	if len(seen) != 4 {
		t.Errorf("KMS writes seen under %v; want all four combinations of the two conditions", slices.Sorted(maps.Keys(seen)))
	}

	// The same restriction reaches the function, which refuses other keys before calling KMS.
	rem, _ := tpl.Function("RemediateFunction")
	env, _ := rem.Properties["Environment"].(map[string]any)
	vars, _ := env["Variables"].(map[string]any)
	want := map[string]any{"Fn::If": []any{"HasRemediationKeys",
		map[string]any{"Fn::Join": []any{",", map[string]any{"Ref": "RemediationKeyArns"}}}, ""}}
	if diff := cmp.Diff(want, vars["REMEDIATION_KEYS"]); diff != "" {
		t.Errorf("RemediateFunction REMEDIATION_KEYS (-want +got):\n%s", diff)
	}
}
