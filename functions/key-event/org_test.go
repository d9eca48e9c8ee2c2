package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/rds"

	"github.com/keywarden/keywarden/internal/awstest"
	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/incident/dynamostore"
	"github.com/keywarden/keywarden/internal/intake"
	"github.com/keywarden/keywarden/internal/kmskey"
	"github.com/keywarden/keywarden/internal/org"
	"github.com/keywarden/keywarden/internal/slackmessage"
	"github.com/keywarden/keywarden/internal/startup"
	"github.com/keywarden/keywarden/internal/startup/keyloss"
)

// The accounts of the organisation tests: the security account owns the key, the two workload
// accounts run Aurora on it, and the fourth never received the StackSet (its role cannot be
// assumed).
const (
	security  = "111111111111"
	workloadA = "222222222222"
	workloadB = "333333333333"
	unrolled  = "444444444444"
)

// TestOrganizationOneIncidentAcrossAccounts is issue 13's Deliver 5 through the function's own
// wiring (keyloss.Build in organization mode) on moto: a DisableKey in the security account,
// forwarded to the central bus, opens one incident naming the clusters of both workload accounts,
// each with its account; the account whose keywarden-read role cannot be assumed is named on the
// incident with the reason, and the radius is incomplete.
func TestOrganizationOneIncidentAcrossAccounts(t *testing.T) {
	endpoint := awstest.Moto(t)
	gate := awstest.NewRoleGate(t, endpoint, "arn:aws:iam::"+unrolled+":role/keywarden-read")
	ctx := context.Background()

	sec := kms.NewFromConfig(awstest.Member(t, endpoint, security))
	key, err := sec.CreateKey(ctx, &kms.CreateKeyInput{Description: aws.String(t.Name())})
	if err != nil {
		t.Fatal(err)
	}
	keyID, keyARN := aws.ToString(key.KeyMetadata.KeyId), aws.ToString(key.KeyMetadata.Arn)
	var clusters []string
	for _, account := range []string{workloadA, workloadB} {
		id := fmt.Sprintf("org-%s-%d", account[:1], rand.Int32())
		if _, err := rds.NewFromConfig(awstest.Member(t, endpoint, account)).CreateDBCluster(ctx, &rds.CreateDBClusterInput{
			DBClusterIdentifier: aws.String(id), Engine: aws.String("aurora-postgresql"), StorageEncrypted: aws.Bool(true),
			KmsKeyId: aws.String(keyARN), MasterUsername: aws.String("admin"), MasterUserPassword: aws.String("not-a-secret-1"),
		}); err != nil {
			t.Fatal(err)
		}
		clusters = append(clusters, account+"/"+id)
	}
	if _, err := sec.DisableKey(ctx, &kms.DisableKeyInput{KeyId: &keyID}); err != nil {
		t.Fatal(err)
	}

	cfg := awstest.Config(t, gate.URL)
	ddb := dynamodb.NewFromConfig(cfg)
	table := fmt.Sprintf("incidents-%d", rand.Int64())
	if err := dynamostore.CreateTable(ctx, ddb, table); err != nil {
		t.Fatal(err)
	}
	store := dynamostore.New(ddb, table)
	settings, err := org.SettingsFromEnv(envMap{
		"DEPLOYMENT_MODE": "organization", "ORGANIZATION_ACCOUNTS": strings.Join([]string{security, workloadA, workloadB, unrolled}, ","),
	}.get)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	k := keyloss.Build(&startup.Services{AWS: cfg, Store: store}, startup.Settings{SkipClusterAutomatedBackups: true}, settings, log)
	h := newHandler(k.Intake, nil, log)

	// The member's forwarding rule keeps the event as CloudTrail wrote it: the security
	// account's key ARN and account.
	raw := strings.ReplaceAll(string(sample(t, "kms-disable-key.json", keyID)), "123456789012", security)
	res, err := h.Handle(ctx, []byte(raw))
	if err != nil {
		t.Fatalf("handle: %v", err)
	}
	if len(res.Outcomes) != 1 || res.Outcomes[0].Action != intake.ActionOpened {
		t.Fatalf("got %+v, want one opened incident", res.Outcomes)
	}
	inc, err := store.OpenFor(ctx, keyARN)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range inc.Clusters {
		got = append(got, c.Account+"/"+c.Identifier)
	}
	slices.Sort(got)
	if !slices.Equal(got, clusters) {
		t.Errorf("clusters: got %v, want %v (each with its account)", got, clusters)
	}
	if inc.KeyState != incident.KeyStateDisabled || inc.KeyAccount != security {
		t.Errorf("key: got %s in %q, want Disabled, read in the security account %s", inc.KeyState, inc.KeyAccount, security)
	}
	if !inc.Organization || !inc.RadiusIncomplete || len(inc.AccountsFailed) != 1 || inc.AccountsFailed[0].Account != unrolled ||
		!strings.Contains(inc.AccountsFailed[0].Reason, "AccessDenied") {
		t.Errorf("coverage: organization %v, incomplete %v, failed %+v; want %s named with AccessDenied", inc.Organization,
			inc.RadiusIncomplete, inc.AccountsFailed, unrolled)
	}
	if !slices.ContainsFunc(inc.Timeline, func(e incident.Entry) bool { return strings.Contains(e.Detail, "not searched: "+unrolled) }) {
		t.Errorf("timeline names no unsearched account: %+v", inc.Timeline)
	}

	// The account's role arrives (the StackSet reached it): the next delivery completes the
	// radius and no account is named any more.
	gate.Allow("arn:aws:iam::" + unrolled + ":role/keywarden-read")
	raw2 := strings.ReplaceAll(raw, `"id": "`, `"id": "again-`)
	if _, err := h.Handle(ctx, []byte(raw2)); err != nil {
		t.Fatal(err)
	}
	inc, err = store.OpenFor(ctx, keyARN)
	if err != nil {
		t.Fatal(err)
	}
	if inc.RadiusIncomplete || len(inc.AccountsFailed) != 0 || len(inc.Clusters) != 2 {
		t.Errorf("after the role arrived: incomplete %v, failed %+v, %d clusters; want complete, none, 2", inc.RadiusIncomplete, inc.AccountsFailed, len(inc.Clusters))
	}
}

type envMap map[string]string

func (m envMap) get(k string) string { return m[k] }

// TestAccountModeUnchanged: with no organisation settings (account mode, the default) the
// function's wiring is a one-account deployment's — the central account's resolver, no
// organisation finder — and the incident it opens carries none of the organisation fields, so
// its JSON and its Slack message are byte for byte those of earlier issues.
func TestAccountModeUnchanged(t *testing.T) {
	s := newStack(t)
	settings, err := org.SettingsFromEnv(envMap{}.get)
	if err != nil || settings.Enabled {
		t.Fatalf("SettingsFromEnv with nothing set: got %+v, %v; want account mode", settings, err)
	}
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	cfg := awstest.Serial(awstest.Config(t, awstest.Moto(t)))
	k := keyloss.Build(&startup.Services{AWS: cfg, Store: s.store}, startup.Settings{SkipClusterAutomatedBackups: true}, settings, log)
	if _, ok := k.Keys.(*kmskey.Resolver); !ok || k.Accounts != nil || k.ReadRoles != nil {
		t.Fatalf("account mode wiring: keys %T, accounts %v, roles %v; want the central resolver and no organisation", k.Keys, k.Accounts, k.ReadRoles)
	}
	s.handler = newHandler(k.Intake, nil, log)
	keyID, keyARN := s.key(t)
	s.cluster(t, "aurora-postgresql", keyARN)
	if _, err := s.kms.DisableKey(context.Background(), &kms.DisableKeyInput{KeyId: &keyID}); err != nil {
		t.Fatal(err)
	}
	s.handle(t, sample(t, "kms-disable-key.json", keyID))
	inc, err := s.store.OpenFor(context.Background(), keyARN)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(inc)
	if err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{`"organization"`, `"accounts_failed"`, `"account_names"`} {
		if strings.Contains(string(b), field) {
			t.Errorf("account-mode incident carries %s: %s", field, b)
		}
	}
	blocks, fallback := slackmessage.Render(inc, time.Now())
	bb, _ := json.Marshal(blocks)
	if strings.Contains(string(bb), ":office:") || strings.Contains(string(bb), "not searched") || strings.Contains(fallback, "not searched") {
		t.Errorf("account-mode Slack message groups by account: %s", bb)
	}
}
