// Package keyloss builds, once per execution environment, what the functions that read keys and
// their dependents use — the KMS and RDS clients, the key resolver, the blast radius and intake
// (when a key loss becomes an incident) — on top of startup's shared services. Only
// KeyEventFunction, RdsEventFunction and ReconcileFunction import it.
//
// In organization mode (org.Settings.Enabled, issue 13) keys are read in their own account and
// intake maps every key across the organisation's accounts, each through the member read role.
//
// It must not import Slack (slack-go, slackmessage): intake announces nothing, and the
// functions hand startup's announcer to their handlers, which announce what intake changed.
package keyloss

import (
	"log/slog"

	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/rds"

	"github.com/keywarden/keywarden/internal/blast"
	"github.com/keywarden/keywarden/internal/intake"
	"github.com/keywarden/keywarden/internal/kmskey"
	"github.com/keywarden/keywarden/internal/org"
	"github.com/keywarden/keywarden/internal/startup"
)

// Services are the key-reading collaborators.
type Services struct {
	KMS *kms.Client
	RDS *rds.Client
	// Keys is the central account's resolver in account mode, org.Keys in organization mode.
	Keys   intake.Keys
	Radius *blast.Finder
	Intake *intake.Service
	// Org is the organisation settings; ReadRoles and Accounts are set only when Org.Enabled.
	Org       org.Settings
	ReadRoles *org.Roles
	Accounts  *org.RunFinder
}

// Build builds them from svc's AWS configuration and store; s.SkipClusterAutomatedBackups
// leaves out DescribeDBClusterAutomatedBackups (only for the local stack, whose moto lacks it).
// o is the organisation settings (org.SettingsFromEnv); in account mode (o.Enabled false) the
// services are exactly those of a one-account deployment.
func Build(svc *startup.Services, s startup.Settings, o org.Settings, log *slog.Logger) *Services {
	k := &Services{KMS: kms.NewFromConfig(svc.AWS), RDS: rds.NewFromConfig(svc.AWS), Org: o}
	local := kmskey.NewResolver(k.KMS)
	k.Keys = local
	var opts []blast.Option
	if s.SkipClusterAutomatedBackups {
		opts = append(opts, blast.WithoutClusterAutomatedBackups())
	}
	k.Radius = blast.New(k.RDS, local, opts...)
	if o.Enabled {
		k.ReadRoles = org.NewRoles(svc.AWS, o.ReadRole)
		k.Keys = org.NewKeys(local, k.ReadRoles)
		k.Accounts = org.NewRunFinder(o, svc.AWS, k.ReadRoles, opts...)
	}
	k.Intake = intake.New(k.Keys, k.Radius, svc.Store, log)
	if o.Enabled {
		k.Intake.WithAccounts(k.Accounts)
	}
	return k
}
