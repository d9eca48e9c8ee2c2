package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/arn"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/kmskey"
	"github.com/keywarden/keywarden/internal/org"
)

// orgFlags are blast-radius's flags for an organisation (issue 13).
type orgFlags struct {
	enabled     bool
	accounts    string
	roleName    string
	readRole    string
	concurrency int
}

func (o *orgFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&o.enabled, "org", false, "search every account of the organisation through its member role")
	fs.StringVar(&o.accounts, "accounts", "", "with --org: comma-separated account IDs to search (default: the organisation's active accounts)")
	fs.StringVar(&o.roleName, "role-name", org.ReadRoleName, "with --org: the role to assume in each account")
	fs.StringVar(&o.readRole, "organization-read-role", "", "with --org: role ARN in the management or delegated-administrator account to list the accounts through")
	fs.IntVar(&o.concurrency, "concurrency", org.DefaultConcurrency, "with --org: accounts searched at once")
}

// check refuses organisation flags without --org, so that a forgotten --org does not quietly
// search one account.
func (o *orgFlags) check(fs *flag.FlagSet) error {
	if o.enabled {
		if o.concurrency < 1 {
			return fmt.Errorf("--concurrency %d: want at least 1", o.concurrency)
		}
		return nil
	}
	var set []string
	fs.Visit(func(f *flag.Flag) {
		if f.Name != "json" {
			set = append(set, "--"+f.Name)
		}
	})
	if len(set) > 0 {
		return fmt.Errorf("%s need --org", strings.Join(set, ", "))
	}
	return nil
}

// orgBlastReport is `keywarden blast-radius --org --json`: blastReport's fields, with account on
// every dependent, plus the accounts searched and those that failed.
type orgBlastReport struct {
	KeyARN   string            `json:"key_arn"`
	KeyAlias string            `json:"key_alias,omitempty"`
	KeyState incident.KeyState `json:"key_state"`
	org.Radius
}

func runOrgBlastRadius(ctx context.Context, cfg aws.Config, ref string, o orgFlags, asJSON bool, stdout io.Writer) error {
	var ids []string
	if o.accounts != "" {
		ids = strings.Split(o.accounts, ",")
	}
	var api org.OrganizationsAPI
	if len(ids) == 0 {
		api = org.NewOrganizationsClient(cfg, o.readRole)
	}
	dir, err := org.NewDirectory(ids, api)
	if err != nil {
		return fmt.Errorf("--accounts: %w", err)
	}
	roles := org.NewRoles(cfg, o.roleName)
	key, keys, err := describeOrgKey(ctx, cfg, roles, ref)
	if err != nil {
		return err
	}
	finder := org.NewFinder(dir, roles, org.BlastFinder(blastOptions()...), org.WithConcurrency(o.concurrency))
	radius, err := finder.Find(ctx, key.ARN)
	if err != nil {
		return err
	}
	alias, _ := keys.Alias(ctx, key.ARN) // display only
	report := orgBlastReport{KeyARN: key.ARN, KeyAlias: alias, KeyState: key.State, Radius: radius}
	if asJSON {
		return writeJSON(stdout, report)
	}
	return printOrgBlast(stdout, report)
}

// describeOrgKey describes the key: a key or alias ARN through the role in the key's account
// (the key's own account may always describe it when its key policy lets IAM decide, the
// default), then, if that role cannot be assumed, with the caller's own credentials, which KMS
// allows across accounts when the key policy names the caller
// (https://docs.aws.amazon.com/kms/latest/developerguide/key-policy-modifying-external-accounts.html).
// A key ID or alias name names a key of the caller's own account.
func describeOrgKey(ctx context.Context, cfg aws.Config, roles *org.Roles, ref string) (kmskey.Key, *kmskey.Resolver, error) {
	own := kmskey.NewResolver(kms.NewFromConfig(cfg))
	a, err := arn.Parse(ref)
	if err != nil || a.Service != "kms" {
		key, err := own.Describe(ctx, ref)
		return key, own, err
	}
	memberCfg, roleErr := roles.Config(ctx, a.AccountID, a.Region)
	if roleErr == nil {
		keys := kmskey.NewResolver(kms.NewFromConfig(memberCfg))
		key, err := keys.Describe(ctx, ref)
		return key, keys, err
	}
	cfg = cfg.Copy()
	cfg.Region = a.Region
	own = kmskey.NewResolver(kms.NewFromConfig(cfg))
	key, err := own.Describe(ctx, ref)
	if err != nil {
		return key, own, fmt.Errorf("describe %s: %w", ref, errors.Join(roleErr, err))
	}
	return key, own, nil
}

func printOrgBlast(w io.Writer, r orgBlastReport) error {
	name := r.KeyARN
	if r.KeyAlias != "" {
		name += " (" + r.KeyAlias + ")"
	}
	fmt.Fprintf(w, "Key %s — %s\n", name, r.KeyState)
	fmt.Fprintf(w, "Searched %d account(s) in %s", len(r.Accounts), cmp.Or(incident.ARNRegion(r.KeyARN), "?"))
	if r.Incomplete {
		fmt.Fprintf(w, "; %d could not be searched: THE RADIUS IS INCOMPLETE", len(r.AccountsFailed))
	}
	fmt.Fprintln(w)
	if r.Empty() {
		fmt.Fprintln(w, "No Aurora cluster depends on this key in the accounts searched.")
	}
	names := map[string]string{}
	for _, a := range r.Accounts {
		names[a.ID] = a.Name
	}
	account := func(id string) string {
		if n := names[id]; n != "" {
			return id + " (" + n + ")"
		}
		return id
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if len(r.AccountsFailed) > 0 {
		fmt.Fprintf(tw, "\nACCOUNTS NOT SEARCHED (%d)\nACCOUNT\tREASON\n", len(r.AccountsFailed))
		for _, f := range r.AccountsFailed {
			fmt.Fprintf(tw, "%s\t%s\n", account(f.Account), f.Reason)
		}
	}
	if len(r.Clusters) > 0 {
		fmt.Fprintf(tw, "\nAURORA CLUSTERS (%d)\nACCOUNT\tIDENTIFIER\tENGINE\tSTATUS\tRECOVERABLE WINDOW\tKEY PROTECTS\n", len(r.Clusters))
		for _, c := range r.Clusters {
			window := "7 days"
			if !c.CanStop {
				window = "none: " + c.CannotStopReason
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", account(c.Account), c.Identifier, c.Engine, c.Status, window, strings.Join(c.Uses, ", "))
		}
	}
	if len(r.Instances) > 0 {
		fmt.Fprintf(tw, "\nINSTANCES (%d)\nACCOUNT\tIDENTIFIER\tCLUSTER\tSTATUS\t\t\n", len(r.Instances))
		for _, i := range r.Instances {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\t\n", account(i.Account), i.Identifier, i.ClusterIdentifier, i.Status)
		}
	}
	if len(r.Snapshots) > 0 {
		fmt.Fprintf(tw, "\nSNAPSHOTS AND BACKUPS (%d) — restoring any of them needs this key\nACCOUNT\tIDENTIFIER\tCLUSTER\tTYPE\t\t\n", len(r.Snapshots))
		for _, s := range r.Snapshots {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\t\n", account(s.Account), s.Identifier, s.ClusterIdentifier, s.Type)
		}
	}
	if len(r.OtherEngines) > 0 {
		fmt.Fprintf(tw, "\nOTHER ENGINES ON THIS KEY (%d) — not Aurora, not handled by keywarden\nACCOUNT\tIDENTIFIER\tENGINE\tSTATUS\t\t\n", len(r.OtherEngines))
		for _, c := range r.OtherEngines {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\t\n", account(c.Account), c.Identifier, c.Engine, c.Status)
		}
	}
	return tw.Flush()
}
