package main

import (
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/keywarden/keywarden/"

// TestImportBoundaries keeps the layout honest: internal/ is the product, and the developer
// tools (the local stack under cmd/keywarden/internal/) and the test support (internal/awstest,
// internal/slacktest) stay out of it; each local-stack package imports only what its package
// comment allows, and each product package imports nothing its package comment rules out —
// the domain knows nothing of Slack (it returns what changed; the edge announces it, issue 12),
// and slackmessage, which owns the incident's Slack message, knows nothing of AWS. Every
// package under internal/ says in its comment what it must not import (issue 12).
func TestImportBoundaries(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}}{{range .Imports}} {{.}}{{end}}", module+"...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	imports := map[string][]string{}
	for line := range strings.Lines(string(out)) {
		fields := strings.Fields(line)
		imports[strings.TrimPrefix(fields[0], module)] = fields[1:]
	}
	local := module + "cmd/keywarden/internal/"
	testSupport := []string{module + "internal/awstest", module + "internal/slacktest", "testing"}
	// allowed lists, for each local-stack package, the keywarden packages and outside modules
	// it may import (prefixes); the standard library is always allowed.
	allowed := map[string][]string{
		"cmd/keywarden/internal/daemon":    {},
		"cmd/keywarden/internal/samenv":    {},
		"cmd/keywarden/internal/rie":       {local + "daemon"},
		"cmd/keywarden/internal/lambdaapi": {},
		"cmd/keywarden/internal/routing":   {module + "internal/template", "github.com/aws/"},
		"cmd/keywarden/internal/seed":      {local + "routing", local + "samenv", module + "internal/incident", "github.com/aws/"},
		"internal/slacktest":               {},
		"cmd/keywarden/internal/coldstart": {local + "rie", module + "internal/template"},
	}
	for pkg, deps := range imports {
		product := strings.HasPrefix(pkg, "internal/") || strings.HasPrefix(pkg, "functions/")
		for _, dep := range deps {
			switch {
			case product && pkg != "internal/awstest" && pkg != "internal/slacktest" && hasPrefix(dep, testSupport):
				t.Errorf("%s imports %s: product code must not carry test support", pkg, dep)
			case strings.HasPrefix(dep, local+"stack") && pkg != "cmd/keywarden":
				t.Errorf("%s imports %s: only the CLI drives the local stack", pkg, dep)
			}
			if rules, ok := allowed[pkg]; ok && isExternal(dep) && !hasPrefix(dep, rules) {
				t.Errorf("%s imports %s, which its package comment does not allow", pkg, dep)
			}
			if dep != module+pkg && hasPrefix(dep, forbidden[pkg]) {
				t.Errorf("%s imports %s, which its package comment rules out", pkg, dep)
			}
		}
	}
	for pkg := range imports {
		if !strings.HasPrefix(pkg, "internal/") {
			continue
		}
		if doc := strings.Join(strings.Fields(packageDoc(t, pkg)), " "); !strings.Contains(doc, "must not import") {
			t.Errorf("%s: its package comment does not say what it must not import", pkg)
		}
	}
	for _, rules := range []map[string][]string{allowed, forbidden} {
		for pkg := range rules {
			if _, ok := imports[pkg]; !ok {
				t.Errorf("package %s not found: update this test with the layout", pkg)
			}
		}
	}
}

const (
	sdk          = "github.com/aws/aws-sdk-go-v2/"
	slackGo      = "github.com/slack-go/slack"
	slackMessage = module + "internal/slackmessage"
	lambdaGo     = "github.com/aws/aws-lambda-go"
	wiring       = module + "internal/startup"
	store        = module + "internal/incident/dynamostore"
)

// forbidden lists, for each product package, the imports its package comment rules out
// (prefixes: a package forbids its subpackages too). Every package under internal/ says in its
// comment what it must not import; these are the rules a test can hold it to.
var forbidden = map[string][]string{
	"internal/incident":             {sdk, slackGo, module + "internal/"},
	"internal/incident/dynamostore": servicesBut("dynamodb", slackGo, slackMessage),
	"internal/handoff":              {sdk, slackGo, module + "internal/"},
	"internal/handoff/invoke":       {sdk + "service/", slackGo, slackMessage},
	"internal/keyevent":             {sdk, slackGo, slackMessage, store},
	"internal/rdsevent":             {sdk, slackGo, module + "internal/"},
	"internal/env":                  {sdk, slackGo},
	"internal/template":             {sdk, slackGo, module + "internal/"},
	"internal/lambdalog":            {sdk, slackGo, module + "internal/"},
	"internal/kmskey":               servicesBut("kms", slackGo, slackMessage, store),
	"internal/blast":                servicesBut("rds", slackGo, slackMessage, store),
	"internal/page":                 servicesBut("sns", slackGo, slackMessage),
	"internal/secrets":              servicesBut("secretsmanager", slackGo, slackMessage),
	"internal/trail":                servicesBut("cloudtrail", slackGo, slackMessage, store),
	"internal/remedy":               servicesBut("kms rds", slackGo, slackMessage, store, module+"internal/blast", module+"internal/intake"),
	"internal/org/member":           servicesBut("sts", slackGo, slackMessage, module+"internal/blast"),
	"internal/org":                  {sdk + "service/dynamodb", slackGo, slackMessage, store},
	"internal/approval":             {"github.com/aws/", store},
	"internal/lifecycle":            {slackGo, slackMessage, "github.com/aws/", store},
	"internal/lifecycle/rdstrack":   {slackGo, slackMessage, lambdaGo, wiring},
	"internal/intake":               {slackGo, slackMessage, lambdaGo, wiring},
	"internal/startup":              {sdk + "service/rds", sdk + "service/kms", sdk + "service/lambda", sdk + "config"},
	"internal/startup/keyloss":      {slackGo, slackMessage},
	"internal/reconcile":            {lambdaGo, wiring},
	"internal/slackmessage": {"github.com/aws/", wiring, module + "internal/intake", module + "internal/lifecycle",
		module + "internal/reconcile", module + "internal/remedy", module + "internal/approval"},
}

// servicesBut forbids every AWS SDK service package but those named (space-separated), and extra.
func servicesBut(allowed string, extra ...string) []string {
	var out []string
	for _, s := range []string{"cloudtrail", "dynamodb", "eventbridge", "kms", "lambda", "organizations", "rds", "secretsmanager", "signin", "sns", "sqs", "sso", "ssooidc", "sts"} {
		if !slices.Contains(strings.Fields(allowed), s) {
			out = append(out, sdk+"service/"+s)
		}
	}
	return append(out, extra...)
}

// packageDoc is the package comment of the package in dir (relative to the module root).
func packageDoc(t *testing.T, dir string) string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join("..", "..", dir, "*.go"))
	var doc strings.Builder
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.PackageClauseOnly|parser.ParseComments)
		if err != nil {
			t.Fatal(err)
		}
		if file.Doc != nil {
			doc.WriteString(file.Doc.Text())
		}
	}
	if doc.Len() == 0 {
		t.Errorf("%s: no package comment", dir)
	}
	return doc.String()
}

// isExternal reports whether path is outside the standard library.
func isExternal(path string) bool {
	first, _, _ := strings.Cut(path, "/")
	return strings.Contains(first, ".")
}

func hasPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if s == p || strings.HasPrefix(s, strings.TrimSuffix(p, "/")+"/") || (strings.HasSuffix(p, "/") && strings.HasPrefix(s, p)) {
			return true
		}
	}
	return false
}

// TestFunctionsLinkOnlyWhatTheyUse: what a function links is most of its cold start (make
// bench-cold), so each links only the AWS services and keywarden packages it calls. Slack waits
// on SlackActionFunction: no RDS, no KMS, no blast radius there.
func TestFunctionsLinkOnlyWhatTheyUse(t *testing.T) {
	notLinked := map[string][]string{
		"functions/slack-action": {"github.com/aws/aws-sdk-go-v2/service/rds", "github.com/aws/aws-sdk-go-v2/service/kms",
			"github.com/aws/aws-sdk-go-v2/service/cloudtrail", module + "internal/blast", module + "internal/intake",
			module + "internal/remedy", module + "internal/kmskey", module + "internal/org", module + "internal/org/member",
			"github.com/aws/aws-sdk-go-v2/service/organizations"},
		"functions/remediate": {"github.com/aws/aws-sdk-go-v2/service/cloudtrail", "github.com/aws/aws-sdk-go-v2/service/lambda",
			module + "internal/blast", module + "internal/intake", module + "internal/approval", module + "internal/org",
			"github.com/aws/aws-sdk-go-v2/service/organizations"},
		"functions/key-event": {"github.com/aws/aws-sdk-go-v2/service/cloudtrail", "github.com/aws/aws-sdk-go-v2/service/lambda",
			module + "internal/remedy", module + "internal/approval"},
		"functions/rds-event": {"github.com/aws/aws-sdk-go-v2/service/cloudtrail", "github.com/aws/aws-sdk-go-v2/service/lambda",
			module + "internal/remedy", module + "internal/approval"},
		"functions/reconcile": {module + "internal/remedy", module + "internal/approval"},
	}
	// No function links the SDK's Lambda client (the hand-off signs its one Invoke itself,
	// internal/handoff/invoke) or the default credential chain of package config, whose SSO,
	// SSO OIDC and sign-in clients a Lambda function never uses (startup.AWSConfig reads Lambda's
	// environment): together about 0.8x of a hello-world's init in SlackActionFunction.
	for fn := range notLinked {
		notLinked[fn] = append(notLinked[fn], "github.com/aws/aws-sdk-go-v2/service/lambda", "github.com/aws/aws-sdk-go-v2/config",
			"github.com/aws/aws-sdk-go-v2/service/sso", "github.com/aws/aws-sdk-go-v2/service/ssooidc", "github.com/aws/aws-sdk-go-v2/service/signin")
	}
	// Organization mode (issue 13) is linked by the functions that follow a key across accounts
	// and no other: it must reach them through their wiring, or it is not there at all.
	linked := map[string][]string{
		"functions/key-event": {module + "internal/org"},
		"functions/rds-event": {module + "internal/org"},
		"functions/reconcile": {module + "internal/org"},
		"functions/remediate": {module + "internal/org/member"},
	}
	for fn, want := range linked {
		out, err := exec.Command("go", "list", "-deps", module+fn).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", fn, err)
		}
		for _, w := range want {
			if !slices.Contains(strings.Fields(string(out)), w) {
				t.Errorf("%s does not link %s: organization mode is not wired in it", fn, w)
			}
		}
	}
	for fn, banned := range notLinked {
		out, err := exec.Command("go", "list", "-deps", module+fn).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", fn, err)
		}
		deps := strings.Fields(string(out))
		if len(deps) < 20 {
			t.Fatalf("%s: go list -deps gave %d packages; the check would pass on nothing", fn, len(deps))
		}
		for _, b := range banned {
			if slices.Contains(deps, b) {
				t.Errorf("%s links %s, which it never calls", fn, b)
			}
		}
	}
}
