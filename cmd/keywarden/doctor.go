package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/slack-go/slack"

	"github.com/keywarden/keywarden/internal/approval"
	"github.com/keywarden/keywarden/internal/env"
	"github.com/keywarden/keywarden/internal/secrets"
)

// doctorUsage documents `keywarden doctor`.
const doctorUsage = `usage: keywarden doctor [flags]

Checks what keywarden needs to be heard before an incident needs it: the Slack bot token
(auth.test), its scopes, the bot's membership of the channel, the signing secret and the
approvers, the incidents table, the EventBridge rules and the optional notification topic.
Prints one line per check, with a fix for each that fails; exits 1 when any fails.

Each flag defaults to the environment variable the functions read (template.yaml sets them):
`

// errDoctor is the doctor's verdict when a check failed; the lines already say which.
var errDoctor = errors.New("doctor: some checks failed (see the fixes above)")

// requiredScopes are the bot token scopes keywarden's Slack calls need, with what each is for.
// Slack names a token's scopes in the X-OAuth-Scopes header of every Web API answer
// (https://docs.slack.dev/authentication/tokens/); chat:write posts and updates,
// channels:history/groups:history let keywarden find a message whose post lost its answer
// (conversations.history with include_all_metadata), channels:join lets the bot join a public
// channel it was not invited to, channels:read/groups:read read the channel (conversations.info).
var requiredScopes = []struct{ scope, why string }{
	{"chat:write", "post and update incident messages"},
	{"channels:history", "find a message again by its metadata instead of posting it twice"},
	{"channels:join", "join a public channel the bot was not invited to"},
	{"channels:read", "read the channel's state (conversations.info)"},
}

// doctorConfig is what the doctor checks, as the functions would be configured.
type doctorConfig struct {
	BotToken      secrets.Source
	SigningSecret secrets.Source
	Channel       string
	SlackAPIURL   string
	Approvers     string
	Table         string
	Topic         string
}

// doctorConfigFrom reads the functions' variables through lookup.
func doctorConfigFrom(lookup func(string) (string, bool)) doctorConfig {
	get := func(k string) string { v, _ := lookup(k); return v }
	r := env.FromMap(map[string]string{
		"SLACK_BOT_TOKEN": get("SLACK_BOT_TOKEN"), "SLACK_BOT_TOKEN_SECRET_ARN": get("SLACK_BOT_TOKEN_SECRET_ARN"),
		"SLACK_SIGNING_SECRET": get("SLACK_SIGNING_SECRET"), "SLACK_SIGNING_SECRET_ARN": get("SLACK_SIGNING_SECRET_ARN"),
	})
	table := get("INCIDENTS_TABLE")
	if table == "" {
		table = "keywarden-incidents"
	}
	return doctorConfig{
		BotToken:      secrets.FromEnv(r, "SLACK_BOT_TOKEN", false),
		SigningSecret: secrets.FromEnv(r, "SLACK_SIGNING_SECRET", false),
		Channel:       get("SLACK_CHANNEL"),
		SlackAPIURL:   get("SLACK_API_URL"),
		Approvers:     get("APPROVERS"),
		Table:         table,
		Topic:         get("NOTIFICATION_TOPIC_ARN"),
	}
}

func runDoctor(ctx context.Context, args []string, stdout io.Writer) error {
	base := doctorConfigFrom(os.LookupEnv)
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	fs.SetOutput(stdout)
	fs.Usage = func() { fmt.Fprint(stdout, doctorUsage); fs.PrintDefaults() }
	tokenARN := fs.String("token-secret-arn", base.BotToken.ARN, "Secrets Manager secret with the bot token (SLACK_BOT_TOKEN_SECRET_ARN; or SLACK_BOT_TOKEN)")
	signingARN := fs.String("signing-secret-arn", base.SigningSecret.ARN, "Secrets Manager secret with the signing secret (SLACK_SIGNING_SECRET_ARN; or SLACK_SIGNING_SECRET)")
	channel := fs.String("channel", base.Channel, "Slack channel ID for incident messages (SLACK_CHANNEL)")
	approvers := fs.String("approvers", base.Approvers, "who may press the buttons (APPROVERS)")
	table := fs.String("table", base.Table, "incidents table (INCIDENTS_TABLE)")
	topic := fs.String("topic", base.Topic, "optional notification topic ARN (NOTIFICATION_TOPIC_ARN)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c := base
	if *tokenARN != base.BotToken.ARN {
		c.BotToken = secrets.Source{Name: "SLACK_BOT_TOKEN", ARN: *tokenARN}
	}
	if *signingARN != base.SigningSecret.ARN {
		c.SigningSecret = secrets.Source{Name: "SLACK_SIGNING_SECRET", ARN: *signingARN}
	}
	c.Channel, c.Approvers, c.Table, c.Topic = *channel, *approvers, *table, *topic
	cfg, err := loadAWS(ctx)
	if err != nil {
		return err
	}
	return doctor(ctx, c, cfg, stdout)
}

// checkResult is one line of the doctor's report.
type checkResult struct {
	name, detail, fix string
	ok                bool
}

// doctor runs every check against cfg's AWS and c's Slack, prints one line per check and
// returns errDoctor when any failed.
func doctor(ctx context.Context, c doctorConfig, cfg aws.Config, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var results []checkResult
	add := func(r checkResult) { results = append(results, r) }
	loader := secrets.NewLoader(secretsmanager.NewFromConfig(cfg))

	api, scopes := doctorSlack(ctx, c, loader, add)
	doctorChannel(ctx, c, api, scopes, add)
	doctorSigning(ctx, c, loader, add)
	doctorApprovers(c, scopes, add)
	doctorTable(ctx, c, dynamodb.NewFromConfig(cfg), add)
	doctorRules(ctx, eventbridge.NewFromConfig(cfg), add)
	doctorTopic(ctx, c, sns.NewFromConfig(cfg), add)

	failed := 0
	for _, r := range results {
		status := "ok  "
		if !r.ok {
			status = "FAIL"
			failed++
		}
		line := fmt.Sprintf("%s %-16s %s", status, r.name, r.detail)
		if !r.ok && r.fix != "" {
			line += " — fix: " + r.fix
		}
		fmt.Fprintln(out, line)
	}
	if failed > 0 {
		return errDoctor
	}
	return nil
}

// doctorSlack checks the bot token with auth.test and its scopes; it returns the client (nil
// when there is no token) and the scopes Slack named.
func doctorSlack(ctx context.Context, c doctorConfig, loader *secrets.Loader, add func(checkResult)) (*slack.Client, []string) {
	if !c.BotToken.Set() {
		add(checkResult{name: "slack token", detail: "no bot token configured",
			fix: "set SLACK_BOT_TOKEN_SECRET_ARN (or --token-secret-arn) to the secret holding the xoxb- token"})
		add(checkResult{name: "slack scopes", detail: "not checked: no token"})
		return nil, nil
	}
	token, err := loader.Get(ctx, c.BotToken)
	if err != nil {
		add(checkResult{name: "slack token", detail: "cannot read the token: " + err.Error(),
			fix: "check the secret's ARN and that you may read it (secretsmanager:GetSecretValue)"})
		add(checkResult{name: "slack scopes", detail: "not checked: no token"})
		return nil, nil
	}
	opts := []slack.Option{slack.OptionHTTPClient(&http.Client{Timeout: 10 * time.Second})}
	if c.SlackAPIURL != "" {
		opts = append(opts, slack.OptionAPIURL(c.SlackAPIURL))
	}
	api := slack.New(token, opts...)
	resp, err := api.AuthTestContext(ctx)
	if err != nil {
		add(checkResult{name: "slack token", detail: "auth.test: " + err.Error(),
			fix: "reinstall the Slack app to the workspace and store its new bot token in the secret"})
		add(checkResult{name: "slack scopes", detail: "not checked: the token does not work"})
		return nil, nil
	}
	add(checkResult{name: "slack token", ok: true, detail: fmt.Sprintf("bot %s (%s) in %s", resp.User, resp.UserID, resp.Team)})

	var scopes []string
	for s := range strings.SplitSeq(resp.Header.Get("X-OAuth-Scopes"), ",") {
		if s = strings.TrimSpace(s); s != "" {
			scopes = append(scopes, s)
		}
	}
	var missing []string
	for _, r := range requiredScopes {
		if !slices.Contains(scopes, r.scope) {
			missing = append(missing, r.scope+" ("+r.why+")")
		}
	}
	if len(missing) > 0 {
		add(checkResult{name: "slack scopes", detail: "missing " + strings.Join(missing, ", "),
			fix: "add the scopes under OAuth & Permissions (docs/DEPLOY.md has the manifest), reinstall the app"})
	} else {
		add(checkResult{name: "slack scopes", ok: true, detail: strings.Join(scopes, ",")})
	}
	return api, scopes
}

var channelIDPattern = regexp.MustCompile(`^[CGD][A-Z0-9]{8,}$`)

// doctorChannel checks the channel exists, is not archived and has the bot in it (or lets it
// join).
func doctorChannel(ctx context.Context, c doctorConfig, api *slack.Client, scopes []string, add func(checkResult)) {
	const name = "slack channel"
	switch {
	case c.Channel == "":
		add(checkResult{name: name, detail: "no channel configured", fix: "set SLACK_CHANNEL (or --channel) to the channel's ID, such as C0123ABCD"})
		return
	case api == nil:
		add(checkResult{name: name, detail: "not checked: no working token"})
		return
	}
	id := c.Channel
	if !channelIDPattern.MatchString(id) {
		found, err := findChannel(ctx, api, strings.TrimPrefix(id, "#"))
		if err != nil || found == "" {
			add(checkResult{name: name, detail: fmt.Sprintf("channel %s not found by name (%v)", c.Channel, err),
				fix: "set SLACK_CHANNEL to the channel's ID (channel details → About → Channel ID)"})
			return
		}
		id = found
	}
	ch, err := api.GetConversationInfoContext(ctx, &slack.GetConversationInfoInput{ChannelID: id})
	if err != nil {
		add(checkResult{name: name, detail: fmt.Sprintf("conversations.info %s: %v", id, err),
			fix: "check SLACK_CHANNEL is the channel's ID and the bot can see it (invite it with /invite @keywarden)"})
		return
	}
	label := fmt.Sprintf("#%s (%s)", ch.Name, ch.ID)
	switch {
	case ch.IsArchived:
		add(checkResult{name: name, detail: label + " is archived", fix: "unarchive it or set SLACK_CHANNEL to another channel"})
	case ch.IsMember:
		add(checkResult{name: name, ok: true, detail: label + ": the bot is a member"})
	case !ch.IsPrivate && slices.Contains(scopes, "channels:join"):
		add(checkResult{name: name, ok: true, detail: label + ": the bot is not a member yet and will join this public channel on its first post"})
	default:
		add(checkResult{name: name, detail: label + ": the bot is not a member", fix: "invite it: /invite @keywarden in " + label})
	}
}

// findChannel resolves a channel name with conversations.list, page by page.
func findChannel(ctx context.Context, api *slack.Client, name string) (string, error) {
	cursor := ""
	for range 100 {
		chans, next, err := api.GetConversationsContext(ctx, &slack.GetConversationsParameters{
			Cursor: cursor, Limit: 1000, Types: []string{"public_channel", "private_channel"}, ExcludeArchived: false,
		})
		if err != nil {
			return "", err
		}
		for _, ch := range chans {
			if ch.Name == name {
				return ch.ID, nil
			}
		}
		if next == "" {
			return "", nil
		}
		cursor = next
	}
	return "", nil
}

func doctorSigning(ctx context.Context, c doctorConfig, loader *secrets.Loader, add func(checkResult)) {
	const name = "signing secret"
	if !c.SigningSecret.Set() {
		add(checkResult{name: name, detail: "not set: SlackActionFunction refuses every click",
			fix: "set SLACK_SIGNING_SECRET_ARN (or --signing-secret-arn) to the secret holding the app's signing secret"})
		return
	}
	v, err := loader.Get(ctx, c.SigningSecret)
	if err != nil || strings.TrimSpace(v) == "" {
		add(checkResult{name: name, detail: fmt.Sprintf("cannot read it (%v)", err),
			fix: "store the app's signing secret (Basic Information → App Credentials) in the secret"})
		return
	}
	add(checkResult{name: name, ok: true, detail: "set"})
}

func doctorApprovers(c doctorConfig, scopes []string, add func(checkResult)) {
	const name = "approvers"
	// ParseApprovers refuses an empty list too: nobody could approve a fix.
	if _, err := approval.ParseApprovers(c.Approvers); err != nil {
		add(checkResult{name: name, detail: err.Error(), fix: "set APPROVERS to Slack user (U…, W…) and user-group (S…) IDs, comma-separated"})
		return
	}
	if hasGroup(c.Approvers) && scopes != nil && !slices.Contains(scopes, "usergroups:read") {
		add(checkResult{name: name, detail: "user groups named but the token lacks usergroups:read, so their members cannot approve",
			fix: "add usergroups:read and reinstall the app"})
		return
	}
	add(checkResult{name: name, ok: true, detail: c.Approvers})
}

func hasGroup(approvers string) bool {
	for _, p := range strings.FieldsFunc(approvers, func(r rune) bool { return r == ',' || r == ' ' }) {
		if strings.HasPrefix(p, "S") {
			return true
		}
	}
	return false
}

// doctorTable checks the incidents table is there, active, with the store's key schema.
func doctorTable(ctx context.Context, c doctorConfig, db *dynamodb.Client, add func(checkResult)) {
	const name = "incidents table"
	out, err := db.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(c.Table)})
	if err != nil {
		add(checkResult{name: name, detail: fmt.Sprintf("%s: %v", c.Table, err),
			fix: "deploy the stack (sam deploy) and set INCIDENTS_TABLE (or --table) to its IncidentRecordsTable"})
		return
	}
	t := out.Table
	var keys []string
	for _, k := range t.KeySchema {
		keys = append(keys, aws.ToString(k.AttributeName))
	}
	switch {
	case t.TableStatus != ddbtypes.TableStatusActive && t.TableStatus != ddbtypes.TableStatusUpdating:
		add(checkResult{name: name, detail: fmt.Sprintf("%s is %s", c.Table, t.TableStatus), fix: "wait until it is ACTIVE"})
	case !slices.Equal(keys, []string{"pk", "sk"}):
		add(checkResult{name: name, detail: fmt.Sprintf("%s has keys %v, want pk and sk", c.Table, keys),
			fix: "point INCIDENTS_TABLE at the stack's IncidentRecordsTable (the old one-key table is only migrated from)"})
	default:
		add(checkResult{name: name, ok: true, detail: fmt.Sprintf("%s (%s)", c.Table, t.TableStatus)})
	}
}

// doctorRules checks that enabled EventBridge rules on the default bus route KMS and RDS events:
// without them no key loss ever opens an incident.
func doctorRules(ctx context.Context, eb *eventbridge.Client, add func(checkResult)) {
	const name = "event rules"
	found := map[string]bool{}
	var next *string
	for range 50 {
		out, err := eb.ListRules(ctx, &eventbridge.ListRulesInput{NextToken: next})
		if err != nil {
			add(checkResult{name: name, detail: "list rules: " + err.Error(), fix: "check you may call events:ListRules in this account and region"})
			return
		}
		for _, r := range out.Rules {
			if r.State != "ENABLED" {
				continue
			}
			p := aws.ToString(r.EventPattern)
			for _, src := range []string{"aws.kms", "aws.rds"} {
				if strings.Contains(p, `"`+src+`"`) {
					found[src] = true
				}
			}
		}
		if next = out.NextToken; next == nil {
			break
		}
	}
	var missing []string
	for _, src := range []string{"aws.kms", "aws.rds"} {
		if !found[src] {
			missing = append(missing, src)
		}
	}
	if len(missing) > 0 {
		add(checkResult{name: name, detail: "no enabled rule for " + strings.Join(missing, ", ") + " events",
			fix: "deploy the stack in this account and region (KMS and RDS events are regional); check the rules are enabled"})
		return
	}
	add(checkResult{name: name, ok: true, detail: "aws.kms and aws.rds events are routed"})
}

// doctorTopic checks the optional notification topic exists.
func doctorTopic(ctx context.Context, c doctorConfig, api *sns.Client, add func(checkResult)) {
	const name = "notification topic"
	if c.Topic == "" {
		add(checkResult{name: name, ok: true, detail: "none set: critical and undeliverable incidents reach Slack and the alarms only"})
		return
	}
	if _, err := api.GetTopicAttributes(ctx, &sns.GetTopicAttributesInput{TopicArn: aws.String(c.Topic)}); err != nil {
		add(checkResult{name: name, detail: fmt.Sprintf("%s: %v", c.Topic, err), fix: "create the topic or fix NotificationTopicArn"})
		return
	}
	add(checkResult{name: name, ok: true, detail: c.Topic})
}

// doctorStep is the demo's `keywarden doctor`: the checks a user runs after deploying, on the
// local stack, against SlackActionFunction's environment (the one that needs the most).
func (d *demo) doctorStep(ctx context.Context) error {
	d.say("keywarden doctor: is everything set for an incident to be heard?")
	env, err := d.stack.FunctionEnv("SlackActionFunction", slackEnv())
	if err != nil {
		return err
	}
	c := doctorConfigFrom(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err := doctor(ctx, c, d.cfg, indent(d.out)); err != nil {
		return fmt.Errorf("keywarden doctor on the local stack: %w", err)
	}
	return nil
}
