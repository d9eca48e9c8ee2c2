package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/rds"

	"github.com/keywarden/keywarden/cmd/keywarden/internal/lambdaapi"
	"github.com/keywarden/keywarden/cmd/keywarden/internal/routing"
	"github.com/keywarden/keywarden/cmd/keywarden/internal/seed"
	"github.com/keywarden/keywarden/cmd/keywarden/internal/stack"
	"github.com/keywarden/keywarden/internal/blast"
	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/incident/dynamostore"
	"github.com/keywarden/keywarden/internal/org"
)

// The accounts of `make demo-org` (issue 13): the security account owns the key, the two
// workload accounts run Aurora on it; keywarden runs in the local stack's own (central) account.
// moto serves each account to the credentials sts:AssumeRole returns for a role ARN in it.
const (
	orgDemoSecurity  = "444455556666"
	orgDemoWorkloadA = "222233334444"
	orgDemoWorkloadB = "777788889999"
)

// orgDemo is the organisation story's state on top of the demo's (Slack, clicks, the store).
type orgDemo struct {
	*demo
	env      map[string]string
	roles    *org.Roles
	router   routing.Router
	security aws.Config
	accounts map[string]aws.Config
	cluster  map[string]string // account → cluster
	closers  []func()
}

// runOrgDemo tells issue 13's story on the local stack with the real function binaries in
// organization mode: one incident per key across the organisation, remediation in each account.
func runOrgDemo(ctx context.Context, localStack *stack.Stack, stdout io.Writer) error {
	d := &orgDemo{demo: &demo{stack: localStack, out: stdout, suffix: randomSuffix()}, cluster: map[string]string{}}
	d.say("Start the local stack: one moto serves the central account and three member accounts")
	if err := localStack.Up(ctx); err != nil {
		return err
	}
	d.cfg = localStack.AWSConfig()
	d.store = dynamostore.New(dynamodb.NewFromConfig(d.cfg), envOr("INCIDENTS_TABLE", seed.DefaultIncidentsTable))
	d.roles = org.NewRoles(d.cfg, "keywarden-demo")
	d.accounts = map[string]aws.Config{}
	for _, a := range []string{orgDemoSecurity, orgDemoWorkloadA, orgDemoWorkloadB} {
		cfg, err := d.roles.Config(ctx, a, "")
		if err != nil {
			return fmt.Errorf("act in account %s: %w", a, err)
		}
		d.accounts[a] = cfg
	}
	d.security = d.accounts[orgDemoSecurity]
	d.env = map[string]string{
		"DEPLOYMENT_MODE":       "organization",
		"ORGANIZATION_ACCOUNTS": strings.Join([]string{orgDemoSecurity, orgDemoWorkloadA, orgDemoWorkloadB}, ","),
	}
	fmt.Fprintf(d.out, "   central account %s (keywarden), security %s, workloads %s and %s; functions run with DEPLOYMENT_MODE=organization\n",
		awsAccount, orgDemoSecurity, orgDemoWorkloadA, orgDemoWorkloadB)

	for _, stage := range []func(context.Context) error{
		d.routing, d.seedOrg, d.radiusOrg, d.disableOrg, d.deliverOrg, d.auroraStopsOrg, d.showOrg, d.slackOrg, d.clickOrg, d.remediatedOrg,
	} {
		if err := stage(ctx); err != nil {
			return err
		}
	}
	fmt.Fprintf(d.out, "\nThe stack is still up: try `AWS_ENDPOINT_URL=%s go run ./cmd/keywarden incidents`, then `make local-down`.\n", localStack.Endpoint())
	return nil
}

// awsAccount is the local stack's central account: moto's default.
const awsAccount = "123456789012"

// routing puts template.yaml's rules in organization mode on the central keywarden bus, and
// member.yaml's forwarding rules on the security account's default bus, as the StackSet would.
func (d *orgDemo) routing(ctx context.Context) error {
	d.say("Organisation routing: template.yaml in organization mode (rules on the central bus \"keywarden\"), member.yaml's forwarding rules in each member account")
	d.router = routing.Router{Template: filepath.Join(d.stack.Dir(), "template.yaml"), Prefix: "kworg",
		Parameters: map[string]string{"DeploymentMode": "organization", "OrganizationId": "o-demo000001"}}
	if err := d.router.Load(ctx, d.cfg); err != nil {
		return err
	}
	bus := "arn:aws:events:" + stack.Region + ":" + awsAccount + ":event-bus/keywarden"
	for _, a := range []string{orgDemoSecurity, orgDemoWorkloadA, orgDemoWorkloadB} {
		if err := (routing.Forwarder{Member: filepath.Join(d.stack.Dir(), "member.yaml"), CentralBusARN: bus, Prefix: "kworg"}).Load(ctx, d.accounts[a]); err != nil {
			return err
		}
	}
	fmt.Fprintf(d.out, "   %s, %s and %s forward KMS's and RDS's events to %s\n", orgDemoSecurity, orgDemoWorkloadA, orgDemoWorkloadB, bus)
	return nil
}

// seedOrg creates the key in the security account and an Aurora cluster on it in each workload
// account (RDS names a key of another account by its ARN).
func (d *orgDemo) seedOrg(ctx context.Context) error {
	d.say("Seed: a customer-managed key in the security account, Aurora clusters on it in two workload accounts")
	key, err := kms.NewFromConfig(d.security).CreateKey(ctx, &kms.CreateKeyInput{Description: aws.String("keywarden demo-org: the shared CMK")})
	if err != nil {
		return fmt.Errorf("create key: %w", err)
	}
	d.keyID, d.keyARN = aws.ToString(key.KeyMetadata.KeyId), aws.ToString(key.KeyMetadata.Arn)
	fmt.Fprintf(d.out, "   key %s\n", d.keyARN)
	for account, name := range map[string]string{orgDemoWorkloadA: "payments-aurora", orgDemoWorkloadB: "ledger-aurora"} {
		api := rds.NewFromConfig(d.accounts[account])
		id := name + "-" + d.suffix
		if _, err := api.CreateDBCluster(ctx, &rds.CreateDBClusterInput{
			DBClusterIdentifier: &id, Engine: aws.String("aurora-postgresql"), StorageEncrypted: aws.Bool(true), KmsKeyId: &d.keyARN,
			MasterUsername: aws.String("demo"), MasterUserPassword: aws.String("demo-password-1"),
		}); err != nil {
			return fmt.Errorf("create cluster %s in %s: %w", id, account, err)
		}
		if _, err := api.CreateDBInstance(ctx, &rds.CreateDBInstanceInput{DBInstanceIdentifier: aws.String(id + "-1"), DBClusterIdentifier: &id,
			Engine: aws.String("aurora-postgresql"), DBInstanceClass: aws.String("db.r6g.large")}); err != nil {
			return fmt.Errorf("create instance of %s: %w", id, err)
		}
		d.cluster[account] = id
	}
	for _, a := range slices.Sorted(maps.Keys(d.cluster)) {
		fmt.Fprintf(d.out, "   account %s: %s (1 instance)\n", a, d.cluster[a])
	}
	return nil
}

// radiusOrg is `keywarden blast-radius --org`: the key followed into every account.
func (d *orgDemo) radiusOrg(ctx context.Context) error {
	d.say("Before touching the key: keywarden blast-radius %s --org --accounts %s", d.keyID, d.env["ORGANIZATION_ACCOUNTS"])
	dir, err := org.NewDirectory(strings.Split(d.env["ORGANIZATION_ACCOUNTS"], ","), nil)
	if err != nil {
		return err
	}
	r, err := org.NewFinder(dir, org.NewRoles(d.cfg, org.ReadRoleName), org.BlastFinder(blast.WithoutClusterAutomatedBackups())).Find(ctx, d.keyARN)
	if err != nil {
		return err
	}
	return printOrgBlast(indent(d.out), orgBlastReport{KeyARN: d.keyARN, KeyState: incident.KeyStateEnabled, Radius: r})
}

func (d *orgDemo) disableOrg(ctx context.Context) error {
	d.say("The security account disables its key (kms:DisableKey; CloudTrail records it in %s only)", orgDemoSecurity)
	if _, err := kms.NewFromConfig(d.security).DisableKey(ctx, &kms.DisableKeyInput{KeyId: &d.keyID}); err != nil {
		return fmt.Errorf("disable key: %w", err)
	}
	return nil
}

// auroraStopsOrg: Aurora loses the key and the clusters stop (StopDBCluster in each workload
// account stands in for RDS); RDS-EVENT-0419 of workload A travels through A's forwarding rule
// to RdsEventFunction, which reads the cluster in the account its SourceArn names.
func (d *orgDemo) auroraStopsOrg(ctx context.Context) error {
	d.say("Aurora loses the key: the clusters stop, and workload %s's RDS-EVENT-0419 goes through its forwarding rule to RdsEventFunction", orgDemoWorkloadA)
	for _, a := range slices.Sorted(maps.Keys(d.cluster)) {
		if _, err := rds.NewFromConfig(d.accounts[a]).StopDBCluster(ctx, &rds.StopDBClusterInput{DBClusterIdentifier: aws.String(d.cluster[a])}); err != nil {
			return fmt.Errorf("stop %s: %w", d.cluster[a], err)
		}
		fmt.Fprintf(d.out, "   %s stopped in %s\n", d.cluster[a], a)
	}
	b, err := os.ReadFile(filepath.Join(d.stack.Dir(), "events", "rds-instance-key-access-lost-0419.json"))
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	event := strings.ReplaceAll(string(b), "orders-aurora", d.cluster[orgDemoWorkloadA])
	event = strings.ReplaceAll(event, "123456789012", orgDemoWorkloadA)
	event = strings.ReplaceAll(event, "2026-03-10T14:37:12.905Z", now.Format("2006-01-02T15:04:05.000Z"))
	event = strings.ReplaceAll(event, "2026-03-10T14:37:12Z", now.Format(time.RFC3339))
	return d.forward(ctx, d.accounts[orgDemoWorkloadA], []byte(event), d.cluster[orgDemoWorkloadA]+"-1")
}

// deliverOrg puts the DisableKey CloudTrail event on the security account's default bus; the
// member's forwarding rule sends it to the central bus, whose rule delivers it to
// KeyEventFunction (the real bootstrap, in organization mode).
func (d *orgDemo) deliverOrg(ctx context.Context) error {
	d.say("CloudTrail's DisableKey event: security account's bus → member.yaml's forwarding rule → central bus → KeyEventFunction")
	event, err := d.cloudTrailEvent("kms-disable-key.json", time.Now().UTC())
	if err != nil {
		return err
	}
	event = []byte(strings.ReplaceAll(string(event), "123456789012", orgDemoSecurity))
	var sent struct {
		Detail struct {
			EventID string `json:"eventID"`
		} `json:"detail"`
	}
	if err := json.Unmarshal(event, &sent); err != nil {
		return err
	}
	return d.forward(ctx, d.security, event, sent.Detail.EventID)
}

// forward puts event on the default bus of the member account cfg acts in, collects what the
// central bus's rules delivered (recognised by mark, a string only this event's detail holds:
// the central bus gives a forwarded event an ID of its own) and runs each function it reached,
// in organization mode.
func (d *orgDemo) forward(ctx context.Context, cfg aws.Config, event []byte, mark string) error {
	if _, err := d.router.Put(ctx, cfg, event); err != nil {
		return err
	}
	deliveries, err := d.router.Collect(ctx, d.cfg, nil, 5*time.Second)
	if err != nil {
		return err
	}
	delivered := 0
	for _, dl := range deliveries {
		if !strings.Contains(string(dl.Event), mark) {
			continue
		}
		delivered++
		start := time.Now()
		out, fnErr, err := d.stack.Invoke(ctx, dl.Function, dl.Event, d.env)
		if err != nil {
			return err
		}
		if fnErr {
			return fmt.Errorf("%s failed: %s", dl.Function, out)
		}
		fmt.Fprintf(d.out, "   → %s (%s): %s\n", dl.Function, time.Since(start).Round(time.Millisecond), truncateRunes(compactJSON(out), 300))
	}
	if delivered == 0 {
		return fmt.Errorf("the forwarded event reached no function on the central bus")
	}
	return nil
}

// showOrg is `keywarden incidents <id>`: one incident, the clusters grouped by account.
func (d *orgDemo) showOrg(ctx context.Context) error {
	d.say("One incident for the key across the organisation: keywarden incidents <id>")
	inc, err := d.store.OpenFor(ctx, d.keyARN)
	if err != nil {
		return fmt.Errorf("the incident for %s: %w", d.keyARN, err)
	}
	w := indent(d.out)
	if err := printIncidents(w, []incident.Incident{inc}, time.Now()); err != nil {
		return err
	}
	if err := printByAccount(w, inc); err != nil {
		return err
	}
	for a, id := range d.cluster {
		if !slices.ContainsFunc(inc.Clusters, func(c incident.Cluster) bool { return c.Account == a && c.Identifier == id }) {
			return fmt.Errorf("the incident does not name %s of account %s", id, a)
		}
	}
	fmt.Fprintf(w, "key_account %s, organization %v, radius_incomplete %v\n", inc.KeyAccount, inc.Organization, inc.RadiusIncomplete)
	return nil
}

// slackOrg shows the Slack message's dependents, grouped by account.
func (d *orgDemo) slackOrg(ctx context.Context) error {
	d.say("The Slack message groups the clusters by account")
	inc, err := d.store.OpenFor(ctx, d.keyARN)
	if err != nil {
		return err
	}
	rec, ok, err := d.latestMessage(inc)
	if err != nil || !ok {
		return fmt.Errorf("no Slack message for the incident: %v", err)
	}
	b, _ := json.Marshal(rec)
	var text []string
	for _, line := range strings.Split(strings.ReplaceAll(string(b), `\n`, "\n"), "\n") {
		if strings.Contains(line, ":office:") || strings.Contains(line, "• *") {
			text = append(text, strings.TrimSpace(line))
		}
	}
	for _, t := range text {
		fmt.Fprintf(d.out, "   %s\n", truncateRunes(t, 140))
	}
	return nil
}

// clickOrg is the approved click: SlackActionFunction (verified, authorised, recorded) hands the
// run to RemediateFunction through Lambda's Invoke API — served here, so that RemediateFunction
// runs in organization mode too.
func (d *orgDemo) clickOrg(ctx context.Context) error {
	d.say("An approver clicks \"Re-enable key & restart clusters\": SlackActionFunction hands the run to RemediateFunction (organization mode)")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	api := lambdaapi.New(ctx, lambdaapi.Config{
		Runner: orgRunner{Stack: d.stack, env: d.env}, Functions: []string{stack.RemediateFunctionID},
		Region: stack.Region, AccountID: awsAccount, Log: slog.New(slog.NewJSONHandler(io.Discard, nil)),
	})
	mux := http.NewServeMux()
	mux.Handle("POST /2015-03-31/functions/{function}/invocations", api)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	d.closers = append(d.closers, func() { _ = srv.Close() })
	d.clickEnv = map[string]string{"AWS_ENDPOINT_URL_LAMBDA": "http://" + l.Addr().String()}
	if err := d.click(ctx, demoApprover, "remediate"); err != nil {
		return err
	}
	inc, err := d.store.OpenFor(ctx, d.keyARN)
	if err != nil {
		return err
	}
	if inc.State != incident.StateRemediating {
		// A click is bound to the message's version: one shown before the incident last changed
		// is refused and the message refreshed, so the approver clicks the current one.
		fmt.Fprintf(d.out, "   the message was out of date (the incident changed since it was posted): refreshed; the approver clicks again\n")
		return d.click(ctx, demoApprover, "remediate")
	}
	return nil
}

// orgRunner runs the stack's functions with the organisation's environment.
type orgRunner struct {
	*stack.Stack
	env map[string]string
}

func (r orgRunner) Invoke(ctx context.Context, id string, event []byte, env map[string]string) ([]byte, bool, error) {
	all := maps.Clone(r.env)
	maps.Copy(all, env)
	return r.Stack.Invoke(ctx, id, event, all)
}

// remediatedOrg waits for the run and shows each step with its account, the key enabled in the
// security account and each cluster started in its own.
func (d *orgDemo) remediatedOrg(ctx context.Context) error {
	defer func() {
		for _, c := range d.closers {
			c()
		}
	}()
	d.say("RemediateFunction enables the key in the security account and starts each cluster in its own account")
	deadline := time.Now().Add(2 * time.Minute)
	var inc incident.Incident
	for {
		var err error
		if inc, err = d.store.OpenFor(ctx, d.keyARN); err != nil {
			return err
		}
		if inc.Remediation.State == incident.RemediationDone || inc.Remediation.State == incident.RemediationFailed ||
			(inc.State == incident.StateOpen && len(inc.Remediation.Steps) > 0) {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("remediation did not finish within 2 minutes (state %s, remediation %s)", inc.State, inc.Remediation.State)
		}
		time.Sleep(500 * time.Millisecond)
	}
	for _, s := range inc.Remediation.Steps {
		fmt.Fprintf(d.out, "   %-17s %-40s account %s → %s %s\n", s.Kind, truncateRunes(s.Target, 40), s.Account, s.Result, s.Detail)
	}
	key, err := kms.NewFromConfig(d.security).DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: &d.keyID})
	if err != nil {
		return err
	}
	fmt.Fprintf(d.out, "   key in %s: %s\n", orgDemoSecurity, key.KeyMetadata.KeyState)
	if key.KeyMetadata.KeyState != "Enabled" {
		return fmt.Errorf("the key is %s after remediation, want Enabled", key.KeyMetadata.KeyState)
	}
	for _, a := range slices.Sorted(maps.Keys(d.cluster)) {
		out, err := rds.NewFromConfig(d.accounts[a]).DescribeDBClusters(ctx, &rds.DescribeDBClustersInput{DBClusterIdentifier: aws.String(d.cluster[a])})
		if err != nil {
			return err
		}
		status := aws.ToString(out.DBClusters[0].Status)
		fmt.Fprintf(d.out, "   %-28s in %s: %s\n", d.cluster[a], a, status)
		if status != "available" && status != "starting" {
			return fmt.Errorf("cluster %s in %s is %s after remediation, want started", d.cluster[a], a, status)
		}
	}
	return nil
}
