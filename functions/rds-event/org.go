package main

import (
	"cmp"
	"context"
	"fmt"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/rds"

	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/lifecycle/rdstrack"
	"github.com/keywarden/keywarden/internal/rdsevent"
)

// configs gives an AWS configuration acting in a member account; *org.Roles fits.
type configs interface {
	Config(ctx context.Context, account, region string) (aws.Config, error)
}

// accountTrackers hands each RDS event, in organization mode, to a tracker that reads the
// event's own account through the member read role: a member's forwarding rule delivers its RDS
// events to the central bus, and the cluster they name can be described only in that account.
// The account is the SourceArn's, not the envelope's: on AWS a forwarded event keeps the
// member's account in the envelope, but the SourceArn is RDS's own word and the same in every
// path (the local routing stack fills the envelope with the central account). A role that cannot
// be assumed is an error: Lambda retries, then the event lands on the on-failure queue, whose
// alarm pages someone.
type accountTrackers struct {
	roles configs
	build func(rdstrack.RDSAPI) *rdstrack.Tracker

	mu       sync.Mutex
	trackers map[string]*rdstrack.Tracker
}

func newAccountTrackers(roles configs, build func(rdstrack.RDSAPI) *rdstrack.Tracker) *accountTrackers {
	return &accountTrackers{roles: roles, build: build, trackers: map[string]*rdstrack.Tracker{}}
}

// Open opens ev with a tracker of ev's account and Region (rdstrack.Tracker.Open); the Pending
// it returns applies the rest with the same tracker.
func (a *accountTrackers) Open(ctx context.Context, ev rdsevent.Event) (rdstrack.Outcome, *rdstrack.Pending, error) {
	account := cmp.Or(incident.ARNAccount(ev.SourceARN), ev.Account)
	region := ev.Region
	key := account + "/" + region
	a.mu.Lock()
	t, ok := a.trackers[key]
	a.mu.Unlock()
	if !ok {
		cfg, err := a.roles.Config(ctx, account, region)
		if err != nil {
			return rdstrack.Outcome{}, nil, fmt.Errorf("read the account of %s: %w", ev.SourceARN, err)
		}
		t = a.build(rds.NewFromConfig(cfg))
		a.mu.Lock()
		a.trackers[key] = t
		a.mu.Unlock()
	}
	return t.Open(ctx, ev)
}
