package main

import (
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/rds"

	"github.com/keywarden/keywarden/internal/blast"
	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/incident/dynamostore"
	"github.com/keywarden/keywarden/internal/kmskey"
	"github.com/keywarden/keywarden/internal/slackmessage"
)

// localEndpoint reports whether AWS_ENDPOINT_URL points at this machine: the local stack.
func localEndpoint() bool {
	ep := os.Getenv("AWS_ENDPOINT_URL")
	return strings.HasPrefix(ep, "http://127.0.0.1") || strings.HasPrefix(ep, "http://localhost")
}

// blastOptions skips the listing moto lacks (DescribeDBClusterAutomatedBackups) when
// SKIP_CLUSTER_AUTOMATED_BACKUPS says so, which it does by default on the local stack.
func blastOptions() []blast.Option {
	skip := os.Getenv("SKIP_CLUSTER_AUTOMATED_BACKUPS")
	if skip == "true" || (skip == "" && localEndpoint()) {
		return []blast.Option{blast.WithoutClusterAutomatedBackups()}
	}
	return nil
}

// loadAWS loads the SDK's usual configuration. Pointed at a local endpoint with nothing else
// set, it fills in the local stack's region and credentials so `keywarden` works there as is.
func loadAWS(ctx context.Context) (aws.Config, error) {
	var opts []func(*config.LoadOptions) error
	if localEndpoint() {
		if os.Getenv("AWS_REGION") == "" && os.Getenv("AWS_DEFAULT_REGION") == "" {
			opts = append(opts, config.WithRegion("us-east-1"))
		}
		if os.Getenv("AWS_ACCESS_KEY_ID") == "" && os.Getenv("AWS_PROFILE") == "" {
			opts = append(opts, config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("test", "test", "")))
		}
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return cfg, fmt.Errorf("load AWS configuration: %w", err)
	}
	return cfg, nil
}

// blastReport is `keywarden blast-radius --json`.
type blastReport struct {
	KeyARN   string            `json:"key_arn"`
	KeyAlias string            `json:"key_alias,omitempty"`
	KeyState incident.KeyState `json:"key_state"`
	blast.Radius
}

func runBlastRadius(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("blast-radius", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print JSON")
	var o orgFlags
	o.register(fs)
	if err := fs.Parse(flagsFirst(fs, args)); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("blast-radius takes one key ID, key ARN, alias name or alias ARN")
	}
	if err := o.check(fs); err != nil {
		return err
	}
	cfg, err := loadAWS(ctx)
	if err != nil {
		return err
	}
	if o.enabled {
		return runOrgBlastRadius(ctx, cfg, fs.Arg(0), o, *asJSON, stdout)
	}
	keys := kmskey.NewResolver(kms.NewFromConfig(cfg))
	key, err := keys.Describe(ctx, fs.Arg(0))
	if err != nil {
		return err
	}
	radius, err := blast.New(rds.NewFromConfig(cfg), keys, blastOptions()...).Find(ctx, key.ARN)
	if err != nil {
		return err
	}
	alias, _ := keys.Alias(ctx, key.ARN) // display only
	report := blastReport{KeyARN: key.ARN, KeyAlias: alias, KeyState: key.State, Radius: radius}
	if *asJSON {
		return writeJSON(stdout, report)
	}
	return printBlast(stdout, report)
}

func printBlast(w io.Writer, r blastReport) error {
	name := r.KeyARN
	if r.KeyAlias != "" {
		name += " (" + r.KeyAlias + ")"
	}
	fmt.Fprintf(w, "Key %s — %s\n", name, r.KeyState)
	if r.Empty() {
		fmt.Fprintln(w, "No Aurora cluster depends on this key.")
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if len(r.Clusters) > 0 {
		fmt.Fprintf(tw, "\nAURORA CLUSTERS (%d)\nIDENTIFIER\tENGINE\tSTATUS\tRECOVERABLE WINDOW\tKEY PROTECTS\n", len(r.Clusters))
		for _, c := range r.Clusters {
			window := "7 days"
			if !c.CanStop {
				window = "none: " + c.CannotStopReason
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", c.Identifier, c.Engine, c.Status, window, strings.Join(c.Uses, ", "))
		}
	}
	if len(r.Instances) > 0 {
		fmt.Fprintf(tw, "\nINSTANCES (%d)\nIDENTIFIER\tCLUSTER\tSTATUS\t\t\n", len(r.Instances))
		for _, i := range r.Instances {
			fmt.Fprintf(tw, "%s\t%s\t%s\t\t\n", i.Identifier, i.ClusterIdentifier, i.Status)
		}
	}
	if len(r.Snapshots) > 0 {
		fmt.Fprintf(tw, "\nSNAPSHOTS AND BACKUPS (%d) — restoring any of them needs this key\nIDENTIFIER\tCLUSTER\tTYPE\t\t\n", len(r.Snapshots))
		for _, s := range r.Snapshots {
			fmt.Fprintf(tw, "%s\t%s\t%s\t\t\n", s.Identifier, s.ClusterIdentifier, s.Type)
		}
	}
	if len(r.OtherEngines) > 0 {
		fmt.Fprintf(tw, "\nOTHER ENGINES ON THIS KEY (%d) — not Aurora, not handled by keywarden\nIDENTIFIER\tENGINE\tSTATUS\t\t\n", len(r.OtherEngines))
		for _, c := range r.OtherEngines {
			fmt.Fprintf(tw, "%s\t%s\t%s\t\t\n", c.Identifier, c.Engine, c.Status)
		}
	}
	return tw.Flush()
}

func runIncidents(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("incidents", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print JSON")
	table := fs.String("table", envOr("INCIDENTS_TABLE", "keywarden-incidents"), "incidents table")
	legacy := fs.String("legacy-table", os.Getenv("LEGACY_INCIDENTS_TABLE"), "table of the one-item layout of earlier versions, read too")
	if err := fs.Parse(flagsFirst(fs, args)); err != nil {
		return err
	}
	if fs.NArg() > 1 {
		return fmt.Errorf("usage: keywarden incidents [<incident ID>] [--json]")
	}
	cfg, err := loadAWS(ctx)
	if err != nil {
		return err
	}
	var opts []dynamostore.Option
	if *legacy != "" {
		opts = append(opts, dynamostore.WithLegacyTable(*legacy))
	}
	store := dynamostore.New(dynamodb.NewFromConfig(cfg), *table, opts...)
	if id := fs.Arg(0); id != "" {
		inc, err := store.Get(ctx, id)
		if err != nil {
			return err
		}
		inc = arrays(inc, time.Now())
		if *asJSON {
			return writeJSON(stdout, inc)
		}
		return printIncident(stdout, inc, time.Now())
	}
	list, err := store.List(ctx)
	if err != nil {
		return err
	}
	if list == nil {
		list = []incident.Incident{}
	}
	now := time.Now()
	for i := range list {
		list[i] = arrays(list[i], now)
	}
	if *asJSON {
		return writeJSON(stdout, list)
	}
	return printIncidents(stdout, list, time.Now())
}

// arrays makes inc's lists arrays in the JSON, empty or not, as blast-radius prints them, and
// grades its severity at now by the model's one rule (a stored incident holds the part that
// does not depend on the clock; a closed one keeps it).
func arrays(inc incident.Incident, now time.Time) incident.Incident {
	if !inc.State.Closed() {
		inc.Severity = inc.SeverityAt(now)
	} else if inc.Severity == "" {
		inc.RecomputeDeadlines()
	}
	if inc.KeyAccount == "" {
		inc.KeyAccount = incident.KeyAccount(inc.KeyARN)
	}
	inc.Instances = nonNil(inc.Instances)
	inc.Snapshots = nonNil(inc.Snapshots)
	inc.OtherEngines = nonNil(inc.OtherEngines)
	inc.Clusters = nonNil(inc.Clusters)
	inc.Timeline = nonNil(inc.Timeline)
	inc.Approvals = nonNil(inc.Approvals)
	inc.Remediation.Steps = nonNil(inc.Remediation.Steps)
	if inc.Remediation.State == "" {
		inc.Remediation.State = incident.RemediationNone
	}
	return inc
}

// printIncident prints one incident: its summary line, its dependents' counts, who approved,
// and the whole timeline.
func printIncident(w io.Writer, inc incident.Incident, now time.Time) error {
	if err := printIncidents(w, []incident.Incident{inc}, now); err != nil {
		return err
	}
	fmt.Fprintf(w, "\n%d cluster(s), %d instance(s), %d snapshot(s) or backup(s) on the key\n",
		len(inc.Clusters), inc.InstanceCount, inc.SnapshotCount)
	if inc.Organization {
		if err := printByAccount(w, inc); err != nil {
			return err
		}
	}
	for _, a := range inc.Approvals {
		fmt.Fprintf(w, "approved by %s at %s on version %d (round %d)\n", a.User, a.At.UTC().Format(time.RFC3339), a.Version, a.Round)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nAT (UTC)\tKIND\tACTOR\tTARGET\tRESULT\tWHAT")
	for _, e := range inc.Timeline {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", e.At.UTC().Format("2006-01-02 15:04:05"), e.Kind,
			e.Actor, e.Target, e.Result, e.Text())
	}
	return tw.Flush()
}

func printIncidents(w io.Writer, list []incident.Incident, now time.Time) error {
	if len(list) == 0 {
		fmt.Fprintln(w, "No incidents.")
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tKEY\tTRIGGER\tOPENED (UTC)\tDEADLINE (UTC)\tTIME LEFT\tCLUSTERS\tDELIVERIES\tSEVERITY\tKEY STATE")
	for _, inc := range list {
		key := inc.KeyAlias
		if key == "" {
			key = kmskey.IDFromARN(inc.KeyARN)
		}
		deadline, left := "—", "no window"
		if inc.Deadline != nil {
			deadline = inc.Deadline.UTC().Format("2006-01-02 15:04")
			left = Countdown(inc.Deadline.Sub(now))
		}
		if inc.State.Closed() {
			left = "—"
		}
		if !inc.State.Closed() && slackmessage.Severity(inc, now) == slackmessage.SeverityCritical {
			left += " (critical)"
		}
		if inc.WindowEstimated && inc.Deadline != nil {
			deadline += " (estimated)"
		}
		clusters := fmt.Sprint(len(inc.Clusters))
		if inc.Organization {
			clusters += " in " + fmt.Sprint(len(accountsOf(inc))) + " account(s)"
		}
		switch {
		case inc.RadiusIncomplete && len(inc.AccountsFailed) > 0:
			clusters += fmt.Sprintf(" (incomplete: %d account(s) not searched)", len(inc.AccountsFailed))
		case inc.RadiusIncomplete:
			clusters += " (incomplete)"
		}
		keyState := string(inc.KeyState)
		if a := cmp.Or(inc.KeyAccount, incident.KeyAccount(inc.KeyARN)); inc.KeyForeign() && a != "" {
			keyState += " (account " + a + ")"
		}
		severity := "—"
		if !inc.State.Closed() {
			severity = string(inc.SeverityAt(now))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", inc.ID, inc.State, key, inc.Trigger,
			inc.OpenedAt.UTC().Format("2006-01-02 15:04"), deadline, left, clusters, inc.Deliveries, severity, keyState)
	}
	return tw.Flush()
}

// Countdown renders time left as Slack's message does: "6d 23h", "5h 12m", "overdue".
func Countdown(d time.Duration) string {
	if d <= 0 {
		return "overdue"
	}
	return slackmessage.Span(d)
}

// flagsFirst lets flags follow the argument, as in `blast-radius alias/x --json`: the flag
// package stops at the first argument that is not a flag. A flag of fs that takes a value keeps
// the argument after it (`--accounts 111111111111,222222222222`).
func flagsFirst(fs *flag.FlagSet, args []string) []string {
	var flags, rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			rest = append(rest, args[i+1:]...)
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			rest = append(rest, a)
			continue
		}
		flags = append(flags, a)
		name := strings.TrimLeft(a, "-")
		if strings.Contains(name, "=") {
			continue
		}
		if f := fs.Lookup(name); f != nil && !boolFlag(f) && i+1 < len(args) {
			flags = append(flags, args[i+1])
			i++
		}
	}
	return append(flags, rest...)
}

func boolFlag(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// accountsOf returns the accounts of inc's clusters, sorted.
func accountsOf(inc incident.Incident) []string {
	var out []string
	for _, c := range inc.Clusters {
		if !slices.Contains(out, c.Account) {
			out = append(out, c.Account)
		}
	}
	slices.Sort(out)
	return out
}

// printByAccount prints an organization-mode incident's clusters grouped by account (with the
// account's name when Organizations gave one), then the accounts that could not be searched.
func printByAccount(w io.Writer, inc incident.Incident) error {
	clusters := slices.Clone(inc.Clusters)
	slices.SortStableFunc(clusters, func(a, b incident.Cluster) int {
		return cmp.Or(strings.Compare(a.Account, b.Account), strings.Compare(a.Identifier, b.Identifier))
	})
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nACCOUNT\tNAME\tCLUSTER\tSTATUS\tDEADLINE (UTC)")
	for _, c := range clusters {
		deadline := "—"
		if c.Deadline != nil {
			deadline = c.Deadline.UTC().Format("2006-01-02 15:04")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", cmp.Or(c.Account, "?"), cmp.Or(inc.AccountName(c.Account), "—"), c.Identifier, c.Status, deadline)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, f := range inc.AccountsFailed {
		fmt.Fprintf(w, "account %s not searched (radius incomplete): %s\n", f.Account, f.Reason)
	}
	return nil
}
