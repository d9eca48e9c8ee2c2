package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/rds"

	"github.com/keywarden/keywarden/cmd/keywarden/internal/seed"
	"github.com/keywarden/keywarden/cmd/keywarden/internal/stack"
	"github.com/keywarden/keywarden/internal/blast"
	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/incident/dynamostore"
	"github.com/keywarden/keywarden/internal/kmskey"
)

// demo tells keywarden's story on the local stack, one step at a time, with the real function
// binaries doing the work. Each run seeds its own key and clusters (named with a fresh suffix),
// so it can run again on a stack that is already up.
type demo struct {
	stack *stack.Stack
	out   io.Writer
	cfg   aws.Config
	kms   *kms.Client
	rds   *rds.Client
	store *dynamostore.Store
	step  int

	suffix      string
	lastClick   []byte
	seenRecords int
	keyID       string
	keyARN      string
	alias       string
	clusters    []string
	// clickEnv is added to SlackActionFunction's environment for clicks (demo-org's Lambda
	// Invoke API); nil in the main demo.
	clickEnv map[string]string
}

func runDemo(ctx context.Context, localStack *stack.Stack, stdout io.Writer) error {
	d := &demo{stack: localStack, out: stdout, suffix: randomSuffix()}
	d.say("Start the local stack: moto for the AWS APIs, the Lambda emulator for the functions")
	if err := localStack.Up(ctx); err != nil {
		return err
	}
	d.cfg = localStack.AWSConfig()
	d.kms, d.rds = kms.NewFromConfig(d.cfg), rds.NewFromConfig(d.cfg)
	d.store = dynamostore.New(dynamodb.NewFromConfig(d.cfg), envOr("INCIDENTS_TABLE", seed.DefaultIncidentsTable))
	fmt.Fprintf(d.out, "   AWS APIs at %s\n", localStack.Endpoint())

	for _, stage := range []func(context.Context) error{
		d.seed, d.blastRadius, d.disable, d.deliver, d.show, d.slackMessage, d.doctorStep,
		d.auroraStops, d.strangerClicks, d.approverClicks, d.remediated, d.resolved, d.reminder,
		d.crossAccount, // issue 9
	} {
		if err := stage(ctx); err != nil {
			return err
		}
	}
	fmt.Fprintf(d.out, "\nThe stack is still up: try `AWS_ENDPOINT_URL=%s go run ./cmd/keywarden incidents`, then `make local-down`.\n", localStack.Endpoint())
	return nil
}

func (d *demo) say(format string, args ...any) {
	d.step++
	fmt.Fprintf(d.out, "\n%d. %s\n", d.step, fmt.Sprintf(format, args...))
}

// seed creates what a real account would have: a customer-managed key with an alias, Aurora
// clusters that reference it in the different forms RDS accepts, one of them a global database
// member (no recoverable window), a Neptune cluster on the same key, instances and a snapshot.
func (d *demo) seed(ctx context.Context) error {
	d.alias = "alias/orders-db-" + d.suffix
	d.say("Seed a customer-managed KMS key (%s) and the databases that use it", d.alias)
	key, err := d.kms.CreateKey(ctx, &kms.CreateKeyInput{Description: aws.String("keywarden demo: orders databases")})
	if err != nil {
		return fmt.Errorf("create key: %w", err)
	}
	d.keyID, d.keyARN = *key.KeyMetadata.KeyId, *key.KeyMetadata.Arn
	if _, err := d.kms.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: &d.alias, TargetKeyId: &d.keyID}); err != nil {
		return fmt.Errorf("create alias: %w", err)
	}
	global := "ledger-global-" + d.suffix
	if _, err := d.rds.CreateGlobalCluster(ctx, &rds.CreateGlobalClusterInput{
		GlobalClusterIdentifier: &global, Engine: aws.String("aurora-postgresql"), StorageEncrypted: aws.Bool(true),
	}); err != nil {
		return fmt.Errorf("create global cluster: %w", err)
	}
	clusters := []struct {
		id, engine, keyRef, global string
		instances                  int
	}{
		{"orders-aurora", "aurora-postgresql", d.keyARN, "", 2},
		{"billing-aurora", "aurora-mysql", d.alias, "", 1},
		{"ledger-aurora", "aurora-postgresql", d.keyID, global, 1},
		{"graph-neptune", "neptune", d.keyARN, "", 0},
	}
	for _, c := range clusters {
		id := c.id + "-" + d.suffix
		in := &rds.CreateDBClusterInput{
			DBClusterIdentifier: &id, Engine: &c.engine, StorageEncrypted: aws.Bool(true), KmsKeyId: &c.keyRef,
			MasterUsername: aws.String("demo"), MasterUserPassword: aws.String("demo-password-1"),
		}
		if c.global != "" {
			in.GlobalClusterIdentifier = &c.global
		}
		if _, err := d.rds.CreateDBCluster(ctx, in); err != nil {
			return fmt.Errorf("create cluster %s: %w", id, err)
		}
		for i := 1; i <= c.instances; i++ {
			inst := fmt.Sprintf("%s-%d", id, i)
			if _, err := d.rds.CreateDBInstance(ctx, &rds.CreateDBInstanceInput{
				DBInstanceIdentifier: &inst, DBClusterIdentifier: &id, Engine: &c.engine, DBInstanceClass: aws.String("db.r6g.large"),
			}); err != nil {
				return fmt.Errorf("create instance %s: %w", inst, err)
			}
		}
		if strings.HasPrefix(c.engine, "aurora") {
			d.clusters = append(d.clusters, id)
		}
		fmt.Fprintf(d.out, "   %-28s %-18s key given as %s\n", id, c.engine, keyForm(c.keyRef))
	}
	snap := "orders-aurora-pre-migration-" + d.suffix
	if _, err := d.rds.CreateDBClusterSnapshot(ctx, &rds.CreateDBClusterSnapshotInput{
		DBClusterIdentifier: aws.String("orders-aurora-" + d.suffix), DBClusterSnapshotIdentifier: &snap,
	}); err != nil {
		return fmt.Errorf("create snapshot: %w", err)
	}
	return nil
}

func keyForm(ref string) string {
	switch {
	case strings.HasPrefix(ref, "alias/"):
		return "an alias name"
	case strings.HasPrefix(ref, "arn:"):
		return "the key ARN"
	}
	return "the key ID"
}

// blastRadius is the check anyone can run before touching a key.
func (d *demo) blastRadius(ctx context.Context) error {
	d.say("Before touching the key: keywarden blast-radius %s", d.alias)
	keys := kmskey.NewResolver(d.kms)
	radius, err := blast.New(d.rds, keys, blast.WithoutClusterAutomatedBackups()).Find(ctx, d.keyARN)
	if err != nil {
		return err
	}
	return printBlast(indent(d.out), blastReport{KeyARN: d.keyARN, KeyAlias: d.alias, KeyState: "Enabled", Radius: radius})
}

func (d *demo) disable(ctx context.Context) error {
	d.say("Someone disables the key (kms:DisableKey)")
	if _, err := d.kms.DisableKey(ctx, &kms.DisableKeyInput{KeyId: &d.keyID}); err != nil {
		return fmt.Errorf("disable key: %w", err)
	}
	k, err := kmskey.NewResolver(d.kms).Describe(ctx, d.keyARN)
	if err != nil {
		return err
	}
	fmt.Fprintf(d.out, "   key state is now %s\n", k.State)
	return nil
}

// deliver sends the CloudTrail event EventBridge would deliver for that call, built from the
// sample in events/ with this run's key and the current time, through template.yaml's rules.
func (d *demo) deliver(ctx context.Context) error {
	d.say("CloudTrail's DisableKey event goes through template.yaml's EventBridge rules to KeyEventFunction (the real bootstrap, under the emulator)")
	event, err := d.cloudTrailEvent("kms-disable-key.json", time.Now().UTC())
	if err != nil {
		return err
	}
	delivered, err := d.emitFor(ctx, event)
	if err != nil {
		return err
	}
	// EventBridge's at-least-once delivery hands the function the same event again, with the
	// same EventBridge ID (putting the event on the bus twice would make two events).
	d.say("EventBridge delivers at least once: the same event (same EventBridge ID) again, folded in and not counted twice")
	for _, r := range delivered {
		if err := d.invoke(ctx, r.Function, r.Event, nil); err != nil {
			return err
		}
	}
	return nil
}

// emit puts event on the local EventBridge bus and runs every function a rule routes it to.
func (d *demo) emit(ctx context.Context, event []byte) error {
	_, err := d.emitFor(ctx, event)
	return err
}

// emitFor puts event on the local EventBridge bus, runs every function a rule routes it to, and
// returns what each was delivered.
func (d *demo) emitFor(ctx context.Context, event []byte) ([]stack.DeliveryResult, error) {
	start := time.Now()
	results, err := d.stack.Deliver(ctx, d.stack.Router(), event, 0, nil)
	if err != nil {
		return nil, err
	}
	if len(results) == 0 {
		return nil, fmt.Errorf("no rule of template.yaml matched the event")
	}
	for _, r := range results {
		if r.FunctionErr {
			return nil, fmt.Errorf("%s failed: %s", r.Function, r.Output)
		}
		fmt.Fprintf(d.out, "   → %s (%s): %s\n", r.Function, time.Since(start).Round(time.Millisecond), truncateRunes(compactJSON(r.Output), 300))
	}
	return results, nil
}

// cloudTrailEvent reads a KMS sample and points it at this run's key, now.
func (d *demo) cloudTrailEvent(sample string, at time.Time) ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(d.stack.Dir(), "events", sample))
	if err != nil {
		return nil, fmt.Errorf("read sample: %w", err)
	}
	s := strings.ReplaceAll(string(b), "1234abcd-12ab-34cd-56ef-1234567890ab", d.keyID)
	var ev map[string]any
	if err := json.Unmarshal([]byte(s), &ev); err != nil {
		return nil, fmt.Errorf("sample %s: %w", sample, err)
	}
	stamp := at.Format(time.RFC3339)
	ev["id"], ev["time"] = "demo-"+randomSuffix(), stamp
	if detail, ok := ev["detail"].(map[string]any); ok {
		detail["eventTime"], detail["eventID"] = stamp, "demo-"+randomSuffix()
	}
	return json.Marshal(ev)
}

func (d *demo) show(ctx context.Context) error {
	d.say("One incident, with its countdown and dependents: keywarden incidents")
	inc, err := d.store.OpenFor(ctx, d.keyARN)
	if err != nil {
		return fmt.Errorf("the incident for %s: %w", d.keyARN, err)
	}
	w := indent(d.out)
	if err := printIncidents(w, []incident.Incident{inc}, time.Now()); err != nil {
		return err
	}
	fmt.Fprintf(w, "\ntriggered by %s (%s) from %s\n", inc.Trigger, inc.Actor.Name(), inc.Actor.SourceIP)
	for _, c := range inc.Clusters {
		deadline := "no recoverable window: " + c.CannotStopReason
		if c.Deadline != nil {
			deadline = fmt.Sprintf("must be recovered by %s (%s left)", c.Deadline.Format("2006-01-02 15:04 UTC"), Countdown(time.Until(*c.Deadline)))
		}
		fmt.Fprintf(w, "  %-28s %-18s %s\n", c.Identifier, c.Engine, deadline)
	}
	fmt.Fprintf(w, "%d snapshot(s) encrypted with the key; %d other-engine cluster(s) reported separately; "+
		"%d distinct event(s) delivered (a redelivery of the same event ID counts once)\n",
		len(inc.Snapshots), len(inc.OtherEngines), inc.Deliveries)
	return nil
}

func randomSuffix() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func compactJSON(b []byte) string {
	var v any
	if json.Unmarshal(b, &v) != nil {
		return string(b)
	}
	out, _ := json.Marshal(v)
	return string(out)
}

// indent prefixes every line written to w with three spaces, to nest output under a step.
func indent(w io.Writer) io.Writer { return &indenter{w: w, bol: true} }

type indenter struct {
	w   io.Writer
	bol bool
}

func (i *indenter) Write(p []byte) (int, error) {
	for _, c := range p {
		if i.bol {
			if _, err := i.w.Write([]byte("   ")); err != nil {
				return 0, err
			}
		}
		if _, err := i.w.Write([]byte{c}); err != nil {
			return 0, err
		}
		i.bol = c == '\n'
	}
	return len(p), nil
}
