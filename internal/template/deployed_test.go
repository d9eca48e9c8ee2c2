package template_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/awstest"
)

// cfnResource is one resource of the template CloudFormation deploys (after the SAM transform).
type cfnResource struct {
	Type       string         `json:"Type"`
	Properties map[string]any `json:"Properties"`
}

// deployedAll runs samtransform.py (the SAM translator that cfn-lint brings, as cfn-lint runs
// it) once on template.yaml as it is and as each mutation file changes it, and returns each
// transformed template's resources by mutation file ("" for template.yaml itself): what
// CloudFormation will deploy, with SAM policy templates, managed policy names, Function URLs and
// their permissions expanded.
func deployedAll(t *testing.T, mutations []string) map[string]map[string]cfnResource {
	t.Helper()
	args := append([]string{"samtransform.py", "--batch", filepath.Join("..", "..", "template.yaml")}, mutations...)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "python3", args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("SAM transform: %v\n%s", err, stderr.String())
	}
	var out map[string]struct {
		Resources map[string]cfnResource `json:"Resources"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		t.Fatalf("SAM transform output: %v", err)
	}
	res := map[string]map[string]cfnResource{}
	for k, v := range out {
		res[k] = v.Resources
	}
	return res
}

// requireTransform skips under -short, and when python3 with cfn-lint's samtranslator is
// missing outside CI (fails in CI), through awstest.Require.
func requireTransform(t *testing.T) {
	t.Helper()
	awstest.Require(t, "python3 with cfn-lint (samtranslator)", func() error {
		return exec.Command("python3", "-c", "import samtranslator, cfnlint.template.transforms._sam").Run()
	})
}

// generatedActions are the actions SAM itself adds to a function's role, with the one resource
// each may have: the on-failure destinations (EventInvokeConfig) of RemediateFunction and, since
// issue 9, of the two event functions.
var generatedActions = map[string]map[string]string{
	"RemediateFunction": {"sqs:SendMessage": "${RemediationFailureQueue.Arn}"},
	"KeyEventFunction":  {"sqs:SendMessage": "${KeyEventFailureQueue.Arn}"},
	"RdsEventFunction":  {"sqs:SendMessage": "${RdsEventFailureQueue.Arn}"},
}

// basicExecution is the one managed policy a role may carry: the CloudWatch Logs permissions
// SAM attaches to every function role.
const basicExecution = "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"

// violations checks what CloudFormation will deploy against the least-privilege rules and
// returns every breach, sorted:
//
//   - every function's role comes from this template, carries no managed policy but
//     basicExecution, and no other IAM resource grants anything;
//   - no wildcard action, no NotAction or NotResource, every action in the function's
//     allowedActions (or generatedActions), KMS and RDS writes only on RemediateFunction, "*" only
//     for unscopable actions, and every Fn::Sub variable map resolved before any of this is read;
//   - no public resource policy (a principal that is not an AWS service) and no Function URL
//     except SlackActionFunction's.
func violations(res map[string]cfnResource) []string {
	var out []string
	add := func(format string, a ...any) { out = append(out, fmt.Sprintf(format, a...)) }
	roleOf := map[string]string{} // role logical ID → function logical ID
	for id, r := range res {
		if r.Type != "AWS::Lambda::Function" {
			continue
		}
		role, ok := getAtt(r.Properties["Role"])
		if !ok || res[role].Type != "AWS::IAM::Role" {
			add("%s: its role is not a role of this template", id)
			continue
		}
		roleOf[role] = id
	}
	for id, r := range res {
		switch {
		case r.Type == "AWS::IAM::Role":
			fn, ok := roleOf[id]
			if !ok {
				add("%s: a role no function of this stack uses", id)
				continue
			}
			for _, arn := range list(r.Properties["ManagedPolicyArns"]) {
				if text(arn) != basicExecution {
					add("%s: managed policy %s hides its actions", fn, text(arn))
				}
			}
			for _, p := range list(r.Properties["Policies"]) {
				doc, _ := p.(map[string]any)["PolicyDocument"].(map[string]any)
				for _, s := range list(doc["Statement"]) {
					out = append(out, statement(fn, s.(map[string]any))...)
				}
			}
		case strings.HasPrefix(r.Type, "AWS::IAM::"):
			add("%s: %s grants permissions outside the function roles", id, r.Type)
		case r.Type == "AWS::Lambda::Permission":
			fn := refName(r.Properties["FunctionName"])
			principal := text(r.Properties["Principal"])
			if !strings.HasSuffix(principal, ".amazonaws.com") && fn != "SlackActionFunction" {
				add("%s: public permission on %s (principal %q)", id, fn, principal)
			}
		case r.Type == "AWS::Lambda::Url":
			if fn := refName(r.Properties["TargetFunctionArn"]); fn != "SlackActionFunction" {
				add("%s: Function URL on %s; only SlackActionFunction has one", id, fn)
			}
		}
	}
	sort.Strings(out)
	return out
}

// statement checks one statement of function fn.
func statement(fn string, s map[string]any) []string {
	var out []string
	add := func(format string, a ...any) { out = append(out, fmt.Sprintf(fn+": "+format, a...)) }
	if s["NotAction"] != nil || s["NotResource"] != nil || s["Principal"] != nil {
		add("NotAction, NotResource or Principal in an identity policy")
	}
	allow := text(s["Effect"]) == "Allow"
	resources := texts(s["Resource"])
	for _, a := range texts(s["Action"]) {
		if strings.ContainsAny(a, "*?") {
			add("wildcard action %q", a)
			continue
		}
		if slices.Contains(keyWrites, a) && fn != "RemediateFunction" {
			add("%s is a KMS or RDS write, allowed only on RemediateFunction", a)
		}
		if gen, ok := generatedActions[fn][a]; ok {
			for _, r := range resources {
				if r != gen {
					add("%s on %s, want %s", a, r, gen)
				}
			}
			continue
		}
		if allow && !slices.Contains(allowedActions[fn], a) {
			add("%s is not allowed", a)
		}
		for _, r := range resources {
			if r == "*" && !unscopable[a] {
				add("%s on Resource \"*\"; it can be scoped", a)
			}
		}
	}
	return out
}

// getAtt is the resource of {"Fn::GetAtt": [id, "Arn"]}.
func getAtt(v any) (string, bool) {
	m, _ := v.(map[string]any)
	ga, _ := m["Fn::GetAtt"].([]any)
	if len(ga) != 2 || ga[1] != "Arn" {
		return "", false
	}
	id, ok := ga[0].(string)
	return id, ok
}

// refName is the logical ID a FunctionName or TargetFunctionArn names (Ref or GetAtt), or its
// text.
func refName(v any) string {
	if id, ok := getAtt(v); ok {
		return id
	}
	if m, ok := v.(map[string]any); ok {
		if r, ok := m["Ref"].(string); ok {
			return r
		}
	}
	return text(v)
}

func list(v any) []any {
	switch x := v.(type) {
	case nil:
		return nil
	case []any:
		return x
	}
	return []any{v}
}

// texts is every text a value can take: each item of a list, both branches of an Fn::If.
func texts(v any) []string {
	var out []string
	for _, item := range list(v) {
		if m, ok := item.(map[string]any); ok {
			if branches, ok := m["Fn::If"].([]any); ok && len(branches) == 3 {
				out = append(out, texts(branches[1])...)
				out = append(out, texts(branches[2])...)
				continue
			}
		}
		out = append(out, text(item))
	}
	return out
}

var subVar = regexp.MustCompile(`\$\{([^}!][^}]*)\}`)

// text is a value as text, with every Fn::Sub variable map resolved ({"Fn::Sub": ["${A}:x",
// {"A": "kms"}]} is "kms:x"), other intrinsics as ${Ref} or ${Id.Attr}, and AWS::NoValue as "".
func text(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case map[string]any:
		if r, ok := x["Ref"].(string); ok {
			if r == "AWS::NoValue" {
				return ""
			}
			return "${" + r + "}"
		}
		if id, ok := getAtt(x); ok {
			return "${" + id + ".Arn}"
		}
		switch sub := x["Fn::Sub"].(type) {
		case string:
			return sub
		case []any:
			if len(sub) == 2 {
				s, _ := sub[0].(string)
				vars, _ := sub[1].(map[string]any)
				return subVar.ReplaceAllStringFunc(s, func(m string) string {
					if val, ok := vars[m[2:len(m)-1]]; ok {
						return text(val)
					}
					return m
				})
			}
		}
		if j, ok := x["Fn::Join"].([]any); ok && len(j) == 2 {
			sep, _ := j[0].(string)
			var parts []string
			for _, p := range list(j[1]) {
				parts = append(parts, text(p))
			}
			return strings.Join(parts, sep)
		}
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// TestDeployedLeastPrivilege holds what CloudFormation will deploy — the template after the SAM
// transform — to the least-privilege rules (see violations), and shows that the check catches
// each mutation in testdata/mutations, every one of which cfn-lint passes: a wildcard hidden in
// an Fn::Sub variable map, a SAM policy template, a public permission or a Function URL on
// another function, a plain wildcard, an RDS write elsewhere, and a managed policy.
func TestDeployedLeastPrivilege(t *testing.T) {
	requireTransform(t)
	files, err := filepath.Glob(filepath.Join("testdata", "mutations", "*.yaml"))
	if err != nil || len(files) < 6 {
		t.Fatalf("mutations: %v, %v; want at least the six of issue 11", files, err)
	}
	all := deployedAll(t, files)
	if v := violations(all[""]); len(v) > 0 {
		t.Errorf("the deployed template breaks least privilege:\n%s", strings.Join(v, "\n"))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			m := regexp.MustCompile(`(?m)^# want: (.+)$`).FindSubmatch(src)
			if m == nil {
				t.Fatalf("%s has no '# want:' line", f)
			}
			want := string(m[1])
			v := violations(all[f])
			if !slices.ContainsFunc(v, func(s string) bool { return strings.Contains(s, want) }) {
				t.Errorf("violations %q, want one containing %q", v, want)
			}
		})
	}
}

// TestTextResolvesSubMaps: the resolver behind the check.
func TestTextResolvesSubMaps(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string
	}{
		{`{"Fn::Sub": ["${A}:${B}", {"A": "kms", "B": "*"}]}`, "kms:*"},
		{`{"Fn::Sub": ["arn:${AWS::Partition}:kms:${R}", {"R": {"Ref": "AWS::Region"}}]}`, "arn:${AWS::Partition}:kms:${AWS::Region}"},
		{`{"Fn::Sub": "arn:${AWS::Partition}:rds"}`, "arn:${AWS::Partition}:rds"},
		{`{"Fn::GetAtt": ["Q", "Arn"]}`, "${Q.Arn}"},
		{`{"Fn::Join": ["", ["a", {"Ref": "B"}]]}`, "a${B}"},
	} {
		var v any
		if err := json.Unmarshal([]byte(tc.in), &v); err != nil {
			t.Fatal(err)
		}
		if got := text(v); got != tc.want {
			t.Errorf("text(%s) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
