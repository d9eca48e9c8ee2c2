// Package keyloss builds, once per execution environment, what the functions that read keys and
// their dependents use — the KMS and RDS clients, the key resolver, the blast radius and triage
// (when a key loss becomes an incident) — on top of wire's shared services. Only
// KeyEventFunction, RdsEventFunction and ReconcileFunction import it.
package keyloss

import (
	"log/slog"

	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/rds"

	"github.com/keywarden/keywarden/internal/blast"
	"github.com/keywarden/keywarden/internal/kmskey"
	"github.com/keywarden/keywarden/internal/triage"
	"github.com/keywarden/keywarden/internal/wire"
)

// Services are the key-reading collaborators.
type Services struct {
	KMS    *kms.Client
	RDS    *rds.Client
	Keys   *kmskey.Resolver
	Radius *blast.Finder
	Triage *triage.Service
}

// Build builds them from svc's AWS configuration, store and announcer; s.SkipClusterAutomatedBackups
// leaves out DescribeDBClusterAutomatedBackups (only for the local stack, whose moto lacks it).
func Build(svc *wire.Services, s wire.Settings, log *slog.Logger) *Services {
	k := &Services{KMS: kms.NewFromConfig(svc.AWS), RDS: rds.NewFromConfig(svc.AWS)}
	k.Keys = kmskey.NewResolver(k.KMS)
	var opts []blast.Option
	if s.SkipClusterAutomatedBackups {
		opts = append(opts, blast.WithoutClusterAutomatedBackups())
	}
	k.Radius = blast.New(k.RDS, k.Keys, opts...)
	var announcer triage.Announcer
	if svc.Announcer != nil {
		announcer = svc.Announcer
	}
	k.Triage = triage.New(k.Keys, k.Radius, svc.Store, announcer, log)
	return k
}
