package template_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/keywarden/keywarden/internal/incident/dynamostore"
	"github.com/keywarden/keywarden/internal/page"
	"github.com/keywarden/keywarden/internal/reconcile"
	"github.com/keywarden/keywarden/internal/template"
)

// templatePath is the repository's template, from this package's folder.
const templatePath = "../../template.yaml"

func loadTemplate(t *testing.T) *template.Template {
	t.Helper()
	tpl, err := template.Load(templatePath)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return tpl
}

func TestParseShortForms(t *testing.T) {
	src := `
Resources:
  Thing:
    Type: AWS::X::Y
    Properties:
      Ref: !Ref Table
      RefNumberLike: !Ref 5
      GetAtt: !GetAtt Table.Arn
      GetAttList: !GetAtt [Table, Arn]
      Sub: !Sub arn:${AWS::Partition}:kms:*
      SubList: !Sub ["${A}", {A: !Ref B}]
      If: !If [Cond, [!Ref A], !Ref AWS::NoValue]
      Join: !Join [",", !Ref List]
      Not: !Not [!Equals [!Ref P, ""]]
      Plain: {n: 30, b: false, s: "2010-09-09", list: [1.5, null]}
`
	tpl, err := template.Parse([]byte(src))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	got := tpl.Resources["Thing"].Properties
	want := map[string]any{
		"Ref":           map[string]any{"Ref": "Table"},
		"RefNumberLike": map[string]any{"Ref": "5"},
		"GetAtt":        map[string]any{"Fn::GetAtt": []any{"Table", "Arn"}},
		"GetAttList":    map[string]any{"Fn::GetAtt": []any{"Table", "Arn"}},
		"Sub":           map[string]any{"Fn::Sub": "arn:${AWS::Partition}:kms:*"},
		"SubList":       map[string]any{"Fn::Sub": []any{"${A}", map[string]any{"A": map[string]any{"Ref": "B"}}}},
		"If": map[string]any{"Fn::If": []any{"Cond", []any{map[string]any{"Ref": "A"}},
			map[string]any{"Ref": "AWS::NoValue"}}},
		"Join": map[string]any{"Fn::Join": []any{",", map[string]any{"Ref": "List"}}},
		"Not": map[string]any{"Fn::Not": []any{map[string]any{"Fn::Equals": []any{
			map[string]any{"Ref": "P"}, ""}}}},
		"Plain": map[string]any{"n": 30, "b": false, "s": "2010-09-09", "list": []any{1.5, nil}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("properties (-want +got):\n%s", diff)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ name, src, want string }{
		{"unknown tag", "Resources:\n  A:\n    Type: X\n    Properties: {P: !Nope x}\n", "unknown tag !Nope"},
		{"bad GetAtt", "Resources:\n  A:\n    Type: X\n    Properties: {P: !GetAtt Table}\n", "want Resource.Attribute"},
		{"duplicate key", "Resources:\n  A:\n    Type: X\n  A:\n    Type: Y\n", "duplicate key"},
		{"no resources", "Parameters: {}\n", "no Resources"},
		{"no type", "Resources:\n  A:\n    Properties: {}\n", "resource A: no Type"},
		{"not a mapping", "- 1\n", "want a mapping"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := template.Parse([]byte(tc.src))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Parse: got error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestStatementsExpandIf(t *testing.T) {
	src := `
Resources:
  F:
    Type: AWS::Serverless::Function
    Properties:
      Policies:
        - Statement:
            - Effect: Allow
              Action: kms:EnableKey
              Resource: !If [HasKeys, !Ref Keys, "arn:key/*"]
              Condition: !If [HasTag, {StringEquals: {"aws:ResourceTag/t": !Ref Tag}}, !Ref AWS::NoValue]
            - !If [HasKeys, {Effect: Allow, Action: [kms:DescribeKey], Resource: "*"}, !Ref AWS::NoValue]
        - AWSLambdaBasicExecutionRole
        - DynamoDBCrudPolicy: {TableName: !Ref T}
`
	tpl, err := template.Parse([]byte(src))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	fn, _ := tpl.Function("F")
	stmts, other, err := fn.Statements()
	if err != nil {
		t.Fatalf("Statements: %v", err)
	}
	type row struct {
		Actions   []string
		Resources []string
		Tagged    bool
		Branches  []string
	}
	var got []row
	for _, s := range stmts {
		r := row{Actions: s.Actions, Branches: s.Branches, Tagged: s.Condition != nil}
		for _, res := range s.Resources {
			r.Resources = append(r.Resources, template.ResourceText(res))
		}
		got = append(got, r)
	}
	// Statements are expanded list element by list element: both statements' choices combine
	// consistently, and the second statement exists only where HasKeys holds.
	want := []row{
		{[]string{"kms:EnableKey"}, []string{"${Keys}"}, true, []string{"HasKeys", "HasTag"}},
		{[]string{"kms:DescribeKey"}, []string{"*"}, false, []string{"HasKeys", "HasTag"}},
		{[]string{"kms:EnableKey"}, []string{"${Keys}"}, false, []string{"!HasTag", "HasKeys"}},
		{[]string{"kms:DescribeKey"}, []string{"*"}, false, []string{"!HasTag", "HasKeys"}},
		{[]string{"kms:EnableKey"}, []string{"arn:key/*"}, true, []string{"!HasKeys", "HasTag"}},
		{[]string{"kms:EnableKey"}, []string{"arn:key/*"}, false, []string{"!HasKeys", "!HasTag"}},
	}
	sortRows := func(rs []row) {
		slices.SortFunc(rs, func(a, b row) int {
			return strings.Compare(strings.Join(append(a.Branches, a.Actions...), ","), strings.Join(append(b.Branches, b.Actions...), ","))
		})
	}
	sortRows(got)
	sortRows(want)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("statements (-want +got):\n%s", diff)
	}
	wantOther := []string{`"AWSLambdaBasicExecutionRole"`, `{"DynamoDBCrudPolicy":{"TableName":{"Ref":"T"}}}`}
	if diff := cmp.Diff(wantOther, other); diff != "" {
		t.Errorf("other policies (-want +got):\n%s", diff)
	}
}

// TestTemplateFunctions: every function of the contract is in the template, in its folder, built
// by the Makefile, and the Globals are those of issue 5.
func TestTemplateFunctions(t *testing.T) {
	tpl := loadTemplate(t)
	got := map[string]string{}
	for _, f := range tpl.Functions() {
		got[f.LogicalID] = f.CodeURI
		if f.BuildMethod != "makefile" {
			t.Errorf("%s: BuildMethod %q, want makefile", f.LogicalID, f.BuildMethod)
		}
		for _, forbidden := range []string{"Role", "Runtime", "Architectures", "PermissionsBoundary"} {
			if _, ok := f.Properties[forbidden]; ok {
				t.Errorf("%s sets %s; the Globals (and the generated role) are the only source", f.LogicalID, forbidden)
			}
		}
	}
	// cmd/keywarden/internal/stack's TestTemplateFunctions checks that the local stack runs
	// exactly these functions, from these folders, with this timeout.
	if len(got) == 0 {
		t.Errorf("template.yaml has no functions")
	}

	fn, _ := tpl.Globals["Function"].(map[string]any)
	want := map[string]any{
		"Runtime":       "provided.al2023",
		"Architectures": []any{"arm64"},
		"Handler":       "bootstrap",
		"LoggingConfig": map[string]any{"LogFormat": "JSON"},
	}
	for k, v := range want {
		if diff := cmp.Diff(v, fn[k]); diff != "" {
			t.Errorf("Globals.Function.%s (-want +got):\n%s", k, diff)
		}
	}
	if timeout, _ := fn["Timeout"].(int); timeout < 3 || timeout > 900 {
		t.Errorf("Globals.Function.Timeout = %v, want 3..900 seconds", fn["Timeout"])
	}
	if mem, _ := fn["MemorySize"].(int); mem < 128 || mem > 1024 {
		t.Errorf("Globals.Function.MemorySize = %v, want 128..1024 MB", fn["MemorySize"])
	}
}

// TestTemplateRules pins every event pattern: which events wake which function is part of the
// product (TestEventRouting in cmd/keywarden/internal/routing checks what they match, on EventBridge).
func TestTemplateRules(t *testing.T) {
	tpl := loadTemplate(t)
	rules, err := tpl.Rules()
	if err != nil {
		t.Fatalf("Rules: %v", err)
	}
	got := map[string]any{}
	for _, r := range rules {
		var p any
		if err := json.Unmarshal(r.Pattern, &p); err != nil {
			t.Fatalf("%s/%s: pattern is not JSON: %v", r.Function, r.Name, err)
		}
		if r.Bus != "" {
			t.Errorf("%s/%s on bus %q, want the default bus (AWS services publish there)", r.Function, r.Name, r.Bus)
		}
		got[r.Function+"/"+r.Name] = p
	}
	want := map[string]any{
		"KeyEventFunction/KmsApiCall": map[string]any{
			"source":      []any{"aws.kms"},
			"detail-type": []any{"AWS API Call via CloudTrail"},
			"detail": map[string]any{
				"eventSource": []any{"kms.amazonaws.com"},
				"eventName": []any{"DisableKey", "ScheduleKeyDeletion", "EnableKey", "CancelKeyDeletion",
					"PutKeyPolicy", "RevokeGrant", "RetireGrant", "DeleteImportedKeyMaterial", "DisconnectCustomKeyStore",
					// Issue 9: the recovery calls, which update an open incident.
					"ImportKeyMaterial", "ConnectCustomKeyStore"},
				"errorCode": []any{map[string]any{"exists": false}},
			},
		},
		"KeyEventFunction/KmsServiceEvent": map[string]any{
			"source":      []any{"aws.kms"},
			"detail-type": []any{"KMS CMK Deletion", "KMS Imported Key Material Expiration"},
		},
		"RdsEventFunction/RdsEvent": map[string]any{
			"source":      []any{"aws.rds"},
			"detail-type": []any{"RDS DB Instance Event", "RDS DB Cluster Event"},
			"detail": map[string]any{"EventID": []any{"RDS-EVENT-0418", "RDS-EVENT-0419", "RDS-EVENT-0420",
				"RDS-EVENT-0150", "RDS-EVENT-0151", "RDS-EVENT-0087", "RDS-EVENT-0088"}},
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("rules (-want +got):\n%s", diff)
	}

	rec, _ := tpl.Function("ReconcileFunction")
	var schedules []string // "expression input"
	for _, e := range rec.Events {
		if e.Type == "Schedule" || e.Type == "ScheduleV2" {
			s, _ := e.Properties["Schedule"].(string)
			if s == "" {
				s, _ = e.Properties["ScheduleExpression"].(string)
			}
			in, _ := e.Properties["Input"].(string)
			schedules = append(schedules, s+" "+in)
		}
	}
	slices.Sort(schedules)
	// The full pass every 5 minutes; within a minute, the Slack outbox retry alone
	// (reconcile.OutboxEvent, issue 10) and the hand-off recovery alone (issue 11).
	wantSchedules := []string{"rate(1 minute) {\"pass\": \"handoff\"}", "rate(1 minute) {\"pass\":\"" + reconcile.OutboxEvent + "\"}", "rate(5 minutes) "}
	if diff := cmp.Diff(wantSchedules, schedules); diff != "" {
		t.Errorf("ReconcileFunction schedules (-want +got):\n%s", diff)
	}
}

// TestTemplateResources checks the deployment's other promises of issue 5.
func TestTemplateResources(t *testing.T) {
	tpl := loadTemplate(t)

	key := func(names ...string) []any {
		var ks []any
		for i, n := range names {
			ks = append(ks, map[string]any{"AttributeName": n, "KeyType": []string{"HASH", "RANGE"}[i]})
		}
		return ks
	}
	// The record's table (dynamostore: head and items under one partition key) and the
	// one-item table of earlier versions, kept unchanged so the store can migrate from it.
	for name, schema := range map[string][]any{"IncidentRecordsTable": key("pk", "sk"), "IncidentsTable": key("pk")} {
		table := tpl.Resources[name]
		if table.Type != "AWS::DynamoDB::Table" || table.DeletionPolicy != "Retain" || table.UpdateReplacePolicy != "Retain" {
			t.Errorf("%s: type %q, DeletionPolicy %q, UpdateReplacePolicy %q; want a retained AWS::DynamoDB::Table",
				name, table.Type, table.DeletionPolicy, table.UpdateReplacePolicy)
		}
		wantTable := map[string]any{
			"BillingMode":                      "PAY_PER_REQUEST",
			"PointInTimeRecoverySpecification": map[string]any{"PointInTimeRecoveryEnabled": true},
			// The store's claims expire through this attribute.
			"TimeToLiveSpecification": map[string]any{"AttributeName": dynamostore.AttrExpiresAt, "Enabled": true},
			"KeySchema":               schema,
		}
		for k, v := range wantTable {
			if diff := cmp.Diff(v, table.Properties[k]); diff != "" {
				t.Errorf("%s.%s (-want +got):\n%s", name, k, diff)
			}
		}
	}
	env, _ := tpl.Globals["Function"].(map[string]any)["Environment"].(map[string]any)["Variables"].(map[string]any)
	for name, table := range map[string]string{"INCIDENTS_TABLE": "IncidentRecordsTable", "LEGACY_INCIDENTS_TABLE": "IncidentsTable"} {
		if diff := cmp.Diff(map[string]any{"Ref": table}, env[name]); diff != "" {
			t.Errorf("Globals %s (-want +got):\n%s", name, diff)
		}
	}

	slackFn, _ := tpl.Function("SlackActionFunction")
	if diff := cmp.Diff(map[string]any{"AuthType": "NONE"}, slackFn.Properties["FunctionUrlConfig"]); diff != "" {
		t.Errorf("SlackActionFunction.FunctionUrlConfig (-want +got):\n%s", diff)
	}
	out := tpl.Outputs["SlackInteractivityUrl"]["Value"]
	if diff := cmp.Diff(map[string]any{"Fn::GetAtt": []any{"SlackActionFunctionUrl", "FunctionUrl"}}, out); diff != "" {
		t.Errorf("Outputs.SlackInteractivityUrl (-want +got):\n%s", diff)
	}

	rem, _ := tpl.Function("RemediateFunction")
	cfg, _ := rem.Properties["EventInvokeConfig"].(map[string]any)
	if n, ok := cfg["MaximumRetryAttempts"].(int); !ok || n > 2 {
		t.Errorf("RemediateFunction EventInvokeConfig.MaximumRetryAttempts = %v, want 0..2", cfg["MaximumRetryAttempts"])
	}
	onFailure := map[string]any{"Type": "SQS", "Destination": map[string]any{"Fn::GetAtt": []any{"RemediationFailureQueue", "Arn"}}}
	if diff := cmp.Diff(map[string]any{"OnFailure": onFailure}, cfg["DestinationConfig"]); diff != "" {
		t.Errorf("RemediateFunction EventInvokeConfig.DestinationConfig (-want +got):\n%s", diff)
	}

	// Issue 9: the event functions' failures land on a queue each, never discarded.
	for fn, queue := range map[string]string{"KeyEventFunction": "KeyEventFailureQueue", "RdsEventFunction": "RdsEventFailureQueue"} {
		f, _ := tpl.Function(fn)
		cfg, _ := f.Properties["EventInvokeConfig"].(map[string]any)
		onFailure := map[string]any{"Type": "SQS", "Destination": map[string]any{"Fn::GetAtt": []any{queue, "Arn"}}}
		if diff := cmp.Diff(map[string]any{"OnFailure": onFailure}, cfg["DestinationConfig"]); diff != "" {
			t.Errorf("%s EventInvokeConfig.DestinationConfig (-want +got):\n%s", fn, diff)
		}
		if tpl.Resources[queue].Type != "AWS::SQS::Queue" {
			t.Errorf("%s: type %q, want AWS::SQS::Queue", queue, tpl.Resources[queue].Type)
		}
	}
	rec, _ := tpl.Function("ReconcileFunction")
	recEnv, _ := rec.Properties["Environment"].(map[string]any)["Variables"].(map[string]any)
	if diff := cmp.Diff(map[string]any{"Ref": "CriticalReminderEvery"}, recEnv["CRITICAL_REMINDER_EVERY"]); diff != "" {
		t.Errorf("ReconcileFunction CRITICAL_REMINDER_EVERY (-want +got):\n%s", diff)
	}
	if d := tpl.Parameters["CriticalReminderEvery"]["Default"]; d != "6h" {
		t.Errorf("CriticalReminderEvery default %v, want 6h", d)
	}

	// Alarms: Errors of every function, the failure queues' depth and the reconciler's own
	// failure metric, to the topic parameter.
	alarmed := map[string]bool{}
	for _, r := range tpl.Resources {
		if r.Type != "AWS::CloudWatch::Alarm" {
			continue
		}
		wantActions := map[string]any{"Fn::If": []any{"HasAlarmTopic", []any{map[string]any{"Ref": "AlarmTopicArn"}}, map[string]any{"Ref": "AWS::NoValue"}}}
		if diff := cmp.Diff(wantActions, r.Properties["AlarmActions"]); diff != "" {
			t.Errorf("%s.AlarmActions (-want +got):\n%s", r.LogicalID, diff)
		}
		dims, _ := r.Properties["Dimensions"].([]any)
		for _, d := range dims {
			dim, _ := d.(map[string]any)
			switch {
			case r.Properties["MetricName"] == "Errors" && dim["Name"] == "FunctionName":
				alarmed[template.ResourceText(dim["Value"])] = true
			case r.Properties["MetricName"] == "ApproximateNumberOfMessagesVisible" && dim["Name"] == "QueueName":
				alarmed[template.ResourceText(dim["Value"])] = true
			case r.Properties["Namespace"] == reconcile.MetricNamespace && r.Properties["MetricName"] == reconcile.MetricFailures && dim["Name"] == "FunctionName":
				alarmed["metric "+template.ResourceText(dim["Value"])] = true
			}
		}
	}
	wantAlarmed := map[string]bool{
		"${RemediationFailureQueue.QueueName}": true, "${KeyEventFailureQueue.QueueName}": true,
		"${RdsEventFailureQueue.QueueName}": true, "metric ${ReconcileFunction}": true,
	}
	for _, f := range tpl.Functions() {
		wantAlarmed["${"+f.LogicalID+"}"] = true
	}
	if diff := cmp.Diff(wantAlarmed, alarmed); diff != "" {
		t.Errorf("alarmed metrics (-want +got):\n%s", diff)
	}

	// Deployment settings are parameters; secrets are not: only their ARNs are.
	for _, p := range []string{"SlackChannel", "Approvers", "RequiredApprovals", "EscalationMention", "ReminderThresholds",
		"SlackBotTokenSecretArn", "SlackSigningSecretArn", "RemediationKeyArns", "RemediationKeyTag", "AlarmTopicArn"} {
		if _, ok := tpl.Parameters[p]; !ok {
			t.Errorf("parameter %s is missing", p)
		}
	}
	for name := range tpl.Parameters {
		lower := strings.ToLower(name)
		if (strings.Contains(lower, "token") || strings.Contains(lower, "secret")) && !strings.HasSuffix(name, "SecretArn") {
			t.Errorf("parameter %s looks like a secret: pass secrets as Secrets Manager ARNs", name)
		}
	}
	for _, f := range tpl.Functions() {
		env, _ := f.Properties["Environment"].(map[string]any)
		vars, _ := env["Variables"].(map[string]any)
		for _, name := range []string{"SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET"} {
			if _, ok := vars[name]; ok {
				t.Errorf("%s sets %s: a deployment passes %s_SECRET_ARN only", f.LogicalID, name, name)
			}
		}
	}
}

// TestNotificationTemplate: the optional SNS topic reaches every function as
// NOTIFICATION_TOPIC_ARN (empty means none), and the metric internal/page writes when Slack
// refuses an incident for good is alarmed, with the dimension the functions write.
func TestNotificationTemplate(t *testing.T) {
	tpl := loadTemplate(t)
	param := tpl.Parameters["NotificationTopicArn"]
	if param["Default"] != "" || param["Type"] != "String" {
		t.Errorf("NotificationTopicArn: %v, want an optional String defaulting to empty", param)
	}
	wantCond := map[string]any{"Fn::Not": []any{map[string]any{"Fn::Equals": []any{map[string]any{"Ref": "NotificationTopicArn"}, ""}}}}
	if diff := cmp.Diff(wantCond, tpl.Conditions["HasNotificationTopic"]); diff != "" {
		t.Errorf("HasNotificationTopic (-want +got):\n%s", diff)
	}
	env, _ := tpl.Globals["Function"].(map[string]any)["Environment"].(map[string]any)["Variables"].(map[string]any)
	for name, want := range map[string]any{
		"NOTIFICATION_TOPIC_ARN": map[string]any{"Ref": "NotificationTopicArn"},
		"STACK_NAME":             map[string]any{"Ref": "AWS::StackName"},
	} {
		if diff := cmp.Diff(want, env[name]); diff != "" {
			t.Errorf("Globals %s (-want +got):\n%s", name, diff)
		}
	}
	for _, metric := range []string{page.MetricSlackUndeliverable, page.MetricPageFailed} {
		found := false
		for _, r := range tpl.Resources {
			if r.Type != "AWS::CloudWatch::Alarm" || r.Properties["MetricName"] != metric {
				continue
			}
			found = true
			if r.Properties["Namespace"] != page.Namespace {
				t.Errorf("%s: namespace %v, want %s", r.LogicalID, r.Properties["Namespace"], page.Namespace)
			}
			wantDims := []any{map[string]any{"Name": "Stack", "Value": map[string]any{"Ref": "AWS::StackName"}}}
			if diff := cmp.Diff(wantDims, r.Properties["Dimensions"]); diff != "" {
				t.Errorf("%s dimensions (-want +got):\n%s", r.LogicalID, diff)
			}
			if r.Properties["Threshold"] != 1 || r.Properties["Statistic"] != "Sum" {
				t.Errorf("%s: threshold %v statistic %v, want Sum >= 1", r.LogicalID, r.Properties["Threshold"], r.Properties["Statistic"])
			}
		}
		if !found {
			t.Errorf("no alarm on %s/%s", page.Namespace, metric)
		}
	}
}
