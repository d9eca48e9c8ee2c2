// Package intake decides when a key loss becomes an incident. It turns a signal that a KMS key
// may be unusable into keywarden's one incident for that key: it checks the key's live state,
// maps the key to its Aurora dependents, and opens the incident or folds the signal into the one
// already open. It applies lifecycle's rules.
//
// Every path that learns of a key loss goes through here — the CloudTrail call, KMS's own
// events, an RDS event when the CloudTrail event never came, the reconciler's backstop — so the
// rules for when an incident opens live in one place.
//
// It owns that decision and nothing after it: it announces nothing, and each Outcome carries
// the incident it changed (Outcome.Changed) for the caller to announce. It must not import
// Slack — neither slack-go nor slackmessage — nor aws-lambda-go or the functions' wiring
// (startup); it reaches KMS, RDS and the store through the small interfaces below
// (cmd/keywarden's TestImportBoundaries checks the Slack rule).
package intake

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/keywarden/keywarden/internal/blast"
	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/keyevent"
	"github.com/keywarden/keywarden/internal/kmskey"
	"github.com/keywarden/keywarden/internal/lifecycle"
	"github.com/keywarden/keywarden/internal/org"
)

// Keys resolves and describes KMS keys; *kmskey.Resolver fits.
type Keys interface {
	ARN(ctx context.Context, ref string) (string, error)
	Describe(ctx context.Context, ref string) (kmskey.Key, error)
	Alias(ctx context.Context, keyARN string) (string, error)
	KeysInStore(ctx context.Context, storeID string) ([]kmskey.Key, error)
}

// Radius finds a key's Aurora dependents; *blast.Finder fits. FindMany reads the account's RDS
// resources once for many keys (the keys of one custom key store).
type Radius interface {
	Find(ctx context.Context, keyARN string) (blast.Radius, error)
	FindMany(ctx context.Context, keyARNs []string) (map[string]blast.Radius, error)
}

// AccountsRadius finds a key's dependents in every account of the organisation (organization
// mode, issue 13); *org.RunFinder fits. An account it could not search is in the answer's
// AccountsFailed, not an error.
type AccountsRadius interface {
	Find(ctx context.Context, keyARN string) (org.Radius, error)
}

// Incidents stores incidents; *dynamostore.Store fits. Open records a new incident with its
// first delivery, or folds the delivery (once per event ID) into the incident already open for
// the key and applies fold.
type Incidents interface {
	Open(ctx context.Context, inc incident.Incident, delivery incident.Entry, fold func(*incident.Incident)) (incident.Incident, bool, error)
	OpenFor(ctx context.Context, keyARN string) (incident.Incident, error)
	Update(ctx context.Context, id string, mutate func(*incident.Incident) error) (incident.Incident, error)
	RecordSighting(ctx context.Context, sg incident.Sighting) error
	// ForKey lists the key's incidents, newest first, closed ones included.
	ForKey(ctx context.Context, keyARN string) ([]incident.Incident, error)
}

// Service decides what a signal means.
type Service struct {
	keys      Keys
	radius    Radius
	incidents Incidents
	log       *slog.Logger
	now       func() time.Time
	// accounts, when set, maps keys across the organisation instead of radius (organization mode).
	accounts AccountsRadius
}

// New builds a Service. It announces nothing: each Outcome carries the incidents it changed,
// and the caller announces them.
func New(keys Keys, radius Radius, incidents Incidents, log *slog.Logger) *Service {
	return &Service{keys: keys, radius: radius, incidents: incidents, log: log, now: time.Now}
}

// WithAccounts makes the Service map every key across the organisation's accounts through
// accounts instead of its one-account Radius (organization mode): each dependent carries its
// account, an account that could not be searched is named on the incident (AccountsFailed) and
// marks its radius incomplete, and the incident is marked Organization. It returns s.
func (s *Service) WithAccounts(accounts AccountsRadius) *Service {
	s.accounts = accounts
	return s
}

// WithClock replaces the clock, for tests.
func (s *Service) WithClock(now func() time.Time) *Service {
	s.now = now
	return s
}

// Action is what intake did with a signal, for one key.
type Action string

const (
	ActionOpened     Action = "opened"  // a new incident
	ActionFolded     Action = "folded"  // added to the key's open incident
	ActionUpdated    Action = "updated" // a restore or access change recorded on the open incident
	ActionNoImpact   Action = "no-aurora-impact"
	ActionIgnored    Action = "ignored"
	ActionKeyDeleted Action = "lost" // the key is gone: the incident is closed as lost
	// ActionFailed is a permanent failure for one key (DescribeKey denied for a key no cluster
	// reported): retrying cannot help, so it is an outcome the handler logs at ERROR, never an
	// error that makes Lambda retry.
	ActionFailed Action = "failed"
)

// Outcome is the decision for one key.
type Outcome struct {
	KeyARN     string `json:"key_arn,omitempty"`
	Action     Action `json:"action"`
	IncidentID string `json:"incident_id,omitempty"`
	Reason     string `json:"reason,omitempty"`
	// Changed holds the incident as stored after this decision changed what people see of it
	// (opened, folded, updated, closed as lost), for the caller to announce; empty when there
	// is nothing to announce. intake never calls Slack: the domain returns what changed, and
	// the edge announces it (the functions through slackmessage.AnnounceOrWarn, the
	// reconciler through its Report). It is not part of a function's JSON result.
	Changed []incident.Incident `json:"-"`
}

// Signal is evidence that a key may have become unusable.
type Signal struct {
	KeyARN string
	// Trigger names what told us: a CloudTrail event name, a KMS event's detail-type, an RDS event ID.
	Trigger       string
	TriggerDetail string
	// At is when the key became unusable as far as the signal knows.
	At    time.Time
	Actor incident.Actor
	// EventID is the EventBridge ID of the event the signal came from; "" for a signal no event
	// carried (the reconciler's backstop).
	EventID string
	// ClusterLostAccess is set when a cluster itself reported it cannot use the key (RDS-EVENT-
	// 0418/0419, or a cluster found inaccessible): that is a loss even while KMS says the key is
	// Enabled — a key policy or grant may shut Aurora out, or the cluster still needs
	// StartDBCluster after the key came back — so it opens an incident where a key event alone
	// would not.
	ClusterLostAccess bool
	// WindowEstimated is set when nothing dates the loss but the moment it was found (the
	// backstop): the windows run from At, marked as an estimate until RDS event history or
	// CloudTrail dates them.
	WindowEstimated bool
	// Cluster is the cluster that reported the loss, as RDS described it, when one did: it is
	// on the incident even when the blast radius cannot be read (the incident is then marked
	// radius_incomplete).
	Cluster *incident.Cluster
}

// HandleKeyEvent applies one KMS event. It returns an error only when a retry could help
// (AWS throttled or unavailable); everything else is an outcome with a reason. Each outcome
// carries the incident it changed (Outcome.Changed) for the caller to announce, also when the
// error says other keys of the event failed.
func (s *Service) HandleKeyEvent(ctx context.Context, ev keyevent.Event) ([]Outcome, error) {
	if ev.Failed() {
		return []Outcome{{Action: ActionIgnored, Reason: fmt.Sprintf("the %s call failed (%s): nothing changed", ev.Name, ev.ErrorCode)}}, nil
	}
	keyARNs, outcomes, err := s.keysOf(ctx, ev)
	if err != nil || len(keyARNs) == 0 {
		return outcomes, err
	}
	var shared *sharedRadius
	if len(keyARNs) > 1 && ev.Kind == keyevent.KindLoss && s.accounts == nil {
		// The keys of one custom key store: one RDS listing for all of them.
		radii, err := s.radius.FindMany(ctx, keyARNs)
		shared = &sharedRadius{radii: radii, err: err}
	}
	var errs []error
	for _, keyARN := range keyARNs {
		var o Outcome
		var err error
		switch ev.Kind {
		case keyevent.KindRestore:
			o, err = s.restore(ctx, keyARN, ev)
		case keyevent.KindAccess:
			o, err = s.access(ctx, keyARN, ev)
		default:
			o, err = s.ensureShared(ctx, Signal{
				KeyARN: keyARN, Trigger: ev.Name, At: ev.Time, Actor: ev.Actor, EventID: ev.ID,
				TriggerDetail: triggerDetail(ev),
			}, shared)
		}
		switch {
		case errors.Is(err, kmskey.ErrDenied):
			// Permanent: the key policy does not let this account read the key. Recorded as an
			// outcome (logged at ERROR by the handler), not retried.
			o = Outcome{KeyARN: keyARN, Action: ActionFailed, Reason: "DescribeKey denied: " + err.Error()}
		case err != nil:
			// One key's failure does not stop the others; the event is retried for all, and
			// what was done is idempotent per event ID.
			errs = append(errs, fmt.Errorf("%s for %s: %w", ev.Name, keyARN, err))
			o = Outcome{KeyARN: keyARN, Action: ActionFailed, Reason: err.Error()}
		}
		outcomes = append(outcomes, o)
	}
	return outcomes, errors.Join(errs...)
}

// sharedRadius is one listing's answer for many keys (FindMany), or its error.
type sharedRadius struct {
	radii map[string]blast.Radius
	err   error
}

// keysOf finds the key ARNs an event is about. A non-nil outcome slice means there is nothing
// to do, with the reason.
func (s *Service) keysOf(ctx context.Context, ev keyevent.Event) ([]string, []Outcome, error) {
	if ev.CustomKeyStoreID != "" && ev.KeyRef == "" {
		// DisconnectCustomKeyStore names the store, not a key: every key in it is now Unavailable.
		keys, err := s.keys.KeysInStore(ctx, ev.CustomKeyStoreID)
		var und *kmskey.UndescribedKeys
		var failed []Outcome
		switch {
		case errors.As(err, &und):
			// A key that could not be described for a reason a retry may cure (throttling, an
			// outage) fails the event, so Lambda delivers it again — to the failure queue and
			// its alarm in the end — rather than ending in a log line; handling is idempotent
			// per event ID. Keys KMS refuses or no longer knows are permanent: each is an
			// outcome the handler logs at ERROR, and the others go on.
			for id, kerr := range und.Failed {
				if !errors.Is(kerr, kmskey.ErrDenied) && !errors.Is(kerr, kmskey.ErrNotFound) {
					return nil, nil, fmt.Errorf("describe key %s of custom key store %s: %w", id, ev.CustomKeyStoreID, kerr)
				}
			}
			for id, kerr := range und.Failed {
				failed = append(failed, Outcome{KeyARN: id, Action: ActionFailed, Reason: "not described, so not known to be in custom key store " + ev.CustomKeyStoreID + ": " + kerr.Error()})
			}
			slices.SortFunc(failed, func(a, b Outcome) int { return strings.Compare(a.KeyARN, b.KeyARN) })
		case err != nil:
			return nil, nil, fmt.Errorf("list keys of custom key store %s: %w", ev.CustomKeyStoreID, err)
		}
		var arns []string
		for _, k := range keys {
			if k.CustomerManaged() {
				arns = append(arns, k.ARN)
			}
		}
		if len(arns) == 0 && len(failed) == 0 {
			return nil, []Outcome{{Action: ActionIgnored, Reason: "custom key store " + ev.CustomKeyStoreID + " holds no customer-managed keys"}}, nil
		}
		return arns, failed, nil
	}
	keyARN, err := s.keys.ARN(ctx, ev.KeyRef)
	switch {
	case errors.Is(err, kmskey.ErrNotFound):
		return nil, []Outcome{{Action: ActionIgnored, Reason: "key " + ev.KeyRef + " does not exist and the event names no key ARN"}}, nil
	case err != nil:
		return nil, nil, fmt.Errorf("resolve key %s: %w", ev.KeyRef, err)
	}
	return []string{keyARN}, nil, nil
}

// Ensure makes sure an unusable key with Aurora dependents has exactly one open incident and
// that this signal is on its timeline.
//
// A signal from the cluster itself (ClusterLostAccess: RDS-EVENT-0418/0419, an inaccessible
// status) opens or holds the incident whatever DescribeKey says — denied (the key state is then
// recorded as Unknown with why), not found, a key of another account, AWS-managed or Enabled:
// Aurora can lose its key with no KMS call at all (aws-facts §8), and the cluster's word decides
// Aurora impact. The outcome carries the incident it opened or changed (Outcome.Changed) for
// the caller to announce. Errors are those a retry could help; DescribeKey denied for a
// key-side signal is returned wrapping kmskey.ErrDenied (permanent).
func (s *Service) Ensure(ctx context.Context, sig Signal) (Outcome, error) {
	return s.ensureShared(ctx, sig, nil)
}

func (s *Service) ensureShared(ctx context.Context, sig Signal, shared *sharedRadius) (Outcome, error) {
	key, err := s.describeFor(ctx, sig)
	if err != nil {
		return Outcome{KeyARN: sig.KeyARN}, err
	}
	return s.ensure(ctx, sig, key, shared)
}

// describeFor is describe, except that a cluster's own report reads DescribeKey's answer by
// lifecycle.KeyAsRead: denied, or not found for a key of another account, is a key in state
// Unknown with the reason, and the incident still opens.
func (s *Service) describeFor(ctx context.Context, sig Signal) (kmskey.Key, error) {
	if !sig.ClusterLostAccess {
		return s.describe(ctx, sig.KeyARN)
	}
	local := ""
	if sig.Cluster != nil {
		local = cmp.Or(sig.Cluster.Account, incident.ARNAccount(sig.Cluster.ARN))
	}
	key, err := s.keys.Describe(ctx, sig.KeyARN)
	key, err = lifecycle.KeyAsRead(sig.KeyARN, local, key, err)
	if err != nil {
		return key, fmt.Errorf("describe key %s: %w", sig.KeyARN, err)
	}
	if key.State == incident.KeyStateUnknown {
		s.log.ErrorContext(ctx, "key cannot be read; the incident records it as Unknown", "key_arn", sig.KeyARN, "reason", key.StateReason)
	}
	return key, nil
}

// ensure is Ensure for a key the caller has just described.
func (s *Service) ensure(ctx context.Context, sig Signal, key kmskey.Key, shared *sharedRadius) (Outcome, error) {
	o := Outcome{KeyARN: sig.KeyARN}
	openKnown := false // an open incident for the key was seen: alreadyLost need not look again
	if key.State == incident.KeyStateDeleted && sig.Trigger != keyevent.DetailTypeCMKDeletion && !sig.ClusterLostAccess {
		// DescribeKey does not know the key: deleted, or never in this account and Region
		// (an event forwarded from elsewhere). Only KMS's own deletion event, or an incident
		// that saw the key alive, tells which.
		if _, err := s.incidents.OpenFor(ctx, sig.KeyARN); errors.Is(err, incident.ErrNotFound) {
			o.Action, o.Reason = ActionIgnored, "key not found in this account and Region"
			return o, nil
		} else if err != nil {
			return o, fmt.Errorf("find open incident for %s: %w", sig.KeyARN, err)
		}
		openKnown = true
	}
	if key.Manager != "" && !key.CustomerManaged() && !sig.ClusterLostAccess {
		o.Action, o.Reason = ActionIgnored, "AWS-managed key: it cannot be disabled or deleted"
		return o, nil
	}
	if !key.State.Unusable() && !sig.ClusterLostAccess {
		return s.stillUsable(ctx, sig, key)
	}
	if key.State == incident.KeyStateDeleted && !openKnown {
		if o, done, err := s.alreadyLost(ctx, sig); done || err != nil {
			return o, err
		}
	}

	radius, incomplete, cover := s.radiusOf(ctx, sig, shared)
	now := s.now().UTC()
	delivery := s.delivery(sig, key, now)
	if radius.Empty() && len(radius.Snapshots) == 0 && !incomplete {
		return s.noImpact(ctx, sig, key, delivery, radius)
	}
	switch {
	case len(cover.failed) > 0:
		delivery.Detail += "; the blast radius could not be read in full (" + failedAccounts(cover.failed) + "): the next delivery or reconcile completes it"
	case incomplete:
		delivery.Detail += "; the blast radius could not be read in full: the next delivery or reconcile completes it"
	case radius.Empty():
		delivery.Detail += fmt.Sprintf("; no Aurora cluster depends on the key, %d snapshot(s) or backup(s) do", len(radius.Snapshots))
	default:
		delivery.Detail += fmt.Sprintf("; %d Aurora cluster(s) depend on the key", len(radius.Clusters))
	}

	alias := ""
	if key.State != incident.KeyStateUnknown && key.State != incident.KeyStateDeleted {
		var err error
		if alias, err = s.keys.Alias(ctx, sig.KeyARN); err != nil {
			s.log.WarnContext(ctx, "key alias unavailable", "key_arn", sig.KeyARN, "error", err)
		}
	}
	src := source(sig)
	// apply records the signal's key state, radius and coverage on an incident: the one open
	// for the key (Open's fold), or the new one, for which laterEvidence changes nothing.
	apply := func(inc *incident.Incident) {
		lifecycle.SetKey(inc, key, src, now)
		laterEvidence(inc, sig)
		mergeRadius(inc, radius, sig.At, src, now)
		if !incomplete {
			inc.RadiusIncomplete = false
		}
		cover.apply(inc)
		if sig.ClusterLostAccess && sig.Cluster != nil {
			markReported(inc, sig)
		}
		inc.RecomputeDeadlines()
	}
	fresh := incident.Incident{
		State:            incident.StateOpen,
		KeyARN:           sig.KeyARN,
		KeyAlias:         alias,
		Trigger:          sig.Trigger,
		TriggerDetail:    sig.TriggerDetail,
		LostAt:           sig.At.UTC(),
		OpenedAt:         now,
		Actor:            sig.Actor,
		RadiusIncomplete: incomplete,
		// The backstop's "now" is an estimate; RDS event history or CloudTrail clears it.
		WindowEstimated: sig.WindowEstimated,
	}
	apply(&fresh)
	got, opened, err := s.incidents.Open(ctx, fresh, delivery, apply)
	if err != nil {
		return o, fmt.Errorf("open incident for %s: %w", sig.KeyARN, err)
	}
	o.IncidentID = got.ID
	o.Action = ActionFolded
	if opened {
		o.Action = ActionOpened
	}
	if key.State == incident.KeyStateDeleted && key.ReplicaOf == "" && got.KeyReplicaOf == "" {
		got, err = s.incidents.Update(ctx, got.ID, func(inc *incident.Incident) error {
			if inc.State.Closed() {
				return nil
			}
			return inc.MarkLost(incident.Keywarden, "the key was deleted: data encrypted under it cannot be recovered, and backups encrypted with it cannot be restored", now)
		})
		if err != nil {
			return o, fmt.Errorf("close incident %s as lost: %w", o.IncidentID, err)
		}
		o.Action = ActionKeyDeleted
	}
	o.Changed = []incident.Incident{got}
	return o, nil
}

// coverage is what an organisation-wide search says beyond the dependents: whether it ran, the
// accounts it could not read, and the accounts' names.
type coverage struct {
	organization bool
	// searched is set when the search ran: only then does failed replace the incident's.
	searched bool
	failed   []incident.AccountFailure
	names    map[string]string
}

// apply records the coverage on inc: the latest search's failed accounts replace the earlier
// ones (an account readable again is no longer named), and names are added.
func (c coverage) apply(inc *incident.Incident) {
	if !c.organization {
		return
	}
	inc.Organization = true
	if c.searched {
		inc.AccountsFailed = c.failed
	}
	if len(c.failed) > 0 {
		inc.RadiusIncomplete = true
	}
	for id, name := range c.names {
		if inc.AccountNames == nil {
			inc.AccountNames = map[string]string{}
		}
		inc.AccountNames[id] = name
	}
}

// failedAccounts names failed accounts for a timeline entry.
func failedAccounts(failed []incident.AccountFailure) string {
	ids := make([]string, 0, len(failed))
	for _, f := range failed {
		ids = append(ids, f.Account)
	}
	return "account(s) not searched: " + strings.Join(ids, ", ")
}

// radiusOf is the key's blast radius: across the organisation in organization mode, else from
// the shared listing when there is one, else its own. A listing that fails (after the SDK's
// retries) does not drop the signal: the incident opens with what is known — the reporting
// cluster, if any — and incomplete is true. An account the organisation-wide search could not
// read is in the coverage's failed accounts, and makes the radius incomplete.
func (s *Service) radiusOf(ctx context.Context, sig Signal, shared *sharedRadius) (blast.Radius, bool, coverage) {
	var radius blast.Radius
	var err error
	var cover coverage
	if s.accounts != nil {
		cover.organization = true
		var or org.Radius
		if or, err = s.accounts.Find(ctx, sig.KeyARN); err == nil {
			cover.searched = true
			radius = or.Radius
			for _, f := range or.AccountsFailed {
				cover.failed = append(cover.failed, incident.AccountFailure{Account: f.Account, Reason: f.Reason})
				s.log.ErrorContext(ctx, "account not searched; the incident names it", "key_arn", sig.KeyARN, "account", f.Account, "reason", f.Reason)
			}
			for _, a := range or.Accounts {
				if a.Name != "" {
					if cover.names == nil {
						cover.names = map[string]string{}
					}
					cover.names[a.ID] = a.Name
				}
			}
		}
	} else if shared != nil {
		radius, err = shared.radii[sig.KeyARN], shared.err
	} else {
		radius, err = s.radius.Find(ctx, sig.KeyARN)
	}
	incomplete := err != nil || len(cover.failed) > 0
	if err != nil {
		s.log.ErrorContext(ctx, "blast radius incomplete; the incident opens with what is known", "key_arn", sig.KeyARN, "error", err)
		radius = blast.Radius{}
	}
	if sig.Cluster != nil && !slices.ContainsFunc(radius.Clusters, func(c incident.Cluster) bool { return c.ARN == sig.Cluster.ARN }) {
		radius.Clusters = append(radius.Clusters, *sig.Cluster)
	}
	return radius, incomplete, cover
}

// laterEvidence folds what a signal arriving after the incident opened knows better: a key
// event names who made the key unusable where the incident does not say (an RDS-opened or
// backstop incident), and an earlier time moves the loss earlier, never later; the clusters'
// windows follow by lifecycle's rule (mergeRadius, KeyEvidence).
func laterEvidence(inc *incident.Incident, sig Signal) {
	if sig.Actor != (incident.Actor{}) && lifecycle.ActorUnknown(*inc) {
		inc.Actor = sig.Actor
	}
	if at := sig.At.UTC(); !at.IsZero() && !sig.WindowEstimated && at.Before(inc.LostAt) {
		inc.LostAt = at
		inc.WindowEstimated = false
	}
}

// markReported records on the incident that the signal's cluster itself reported the loss, so
// it keeps its window whatever the key reads (see lifecycle.Holding). When the incident lists
// the cluster's instances, the reporting instance's own flag holds it instead (RdsEventFunction
// applies the report right after), so that StartDBCluster, which clears instance flags, also
// releases the cluster.
func markReported(inc *incident.Incident, sig Signal) {
	for i := range inc.Clusters {
		c := &inc.Clusters[i]
		if c.ARN != sig.Cluster.ARN && c.Identifier != sig.Cluster.Identifier {
			continue
		}
		c.Recovered = false
		if !slices.ContainsFunc(inc.Instances, func(in incident.Instance) bool { return in.ClusterIdentifier == c.Identifier }) {
			c.LostKeyAccess = true
		}
	}
}

// CompleteRadius merges a blast radius read in full into an incident opened with an incomplete
// one (RadiusIncomplete) and clears the mark: the reconciler calls it inside its update. Known
// dependents keep their state; the new ones start their windows at the incident's LostAt, by
// the same rule as the first delivery.
func CompleteRadius(inc *incident.Incident, radius blast.Radius, now time.Time) {
	mergeRadius(inc, radius, inc.LostAt, lifecycle.Reconciliation, now)
	inc.RadiusIncomplete = false
	inc.AddEntry(incident.Entry{
		ID: incident.EntryID("radius-complete", fmt.Sprint(inc.Version)), At: now.UTC(), Kind: incident.KindNote, Actor: incident.Keywarden,
		Target: inc.KeyARN, Result: incident.ResultOK,
		Detail: fmt.Sprintf("blast radius read in full: %d Aurora cluster(s), %d snapshot(s) or backup(s) depend on the key", len(inc.Clusters), len(inc.Snapshots)),
	})
	inc.RecomputeDeadlines()
}

// source is the lifecycle Source of what a signal reports.
func source(sig Signal) lifecycle.Source {
	return lifecycle.Source{EventID: sig.EventID, Name: sig.Trigger}
}

// delivery is the entry that records a signal on an incident: one per event, however often
// EventBridge delivers it. A signal no event carried (the backstop) is named by its trigger,
// key and time.
func (s *Service) delivery(sig Signal, key kmskey.Key, now time.Time) incident.Entry {
	id := sig.EventID
	if id == "" {
		id = incident.EntryID(sig.Trigger, sig.KeyARN, sig.At.UTC().Format(time.RFC3339Nano))
	}
	return incident.Entry{At: now, Actor: sig.Actor.Name(), Target: sig.KeyARN, Source: id, Detail: describeSignal(sig, key)}
}

// mergeRadius adds dependents not yet on the incident and refreshes the status and stop facts
// of known ones. A cluster's window starts by lifecycle's rule for key-side evidence
// (lifecycle.KeyEvidence): never later, and not at all once RDS dated it.
func mergeRadius(inc *incident.Incident, radius blast.Radius, lostAt time.Time, src lifecycle.Source, now time.Time) {
	for _, c := range radius.Clusters {
		i := slices.IndexFunc(inc.Clusters, func(k incident.Cluster) bool { return k.ARN == c.ARN })
		if i < 0 {
			c.LostAccessAt = nil
			lifecycle.KeyEvidence(&c, lostAt)
			// A cluster first seen plainly stopped was stopped by its owner: Aurora reports a
			// key loss as inaccessible-encryption-credentials(-recoverable), never as stopped
			// (aws-facts §4.1, §4.4). Remediation leaves it stopped (issue 11, Deliver 6).
			c.StoppedBeforeLoss = c.Status == incident.StatusStopped
			inc.Clusters = append(inc.Clusters, c)
			continue
		}
		lifecycle.SetClusterStatus(inc, inc.Clusters[i].Identifier, c.Status, src, now)
		known := &inc.Clusters[i]
		known.CanStop, known.CannotStopReason, known.Uses, known.Members = c.CanStop, c.CannotStopReason, c.Uses, c.Members
		lifecycle.KeyEvidence(known, lostAt)
	}
	inc.Instances = mergeBy(inc.Instances, radius.Instances, func(i incident.Instance) string { return i.ARN })
	inc.Snapshots = mergeBy(inc.Snapshots, radius.Snapshots, func(s incident.Snapshot) string { return s.ARN })
	inc.OtherEngines = mergeBy(inc.OtherEngines, radius.OtherEngines, func(c incident.Cluster) string { return c.ARN })
}

// mergeBy appends the items of add whose key is not in have; known items keep their state.
func mergeBy[T any](have, add []T, key func(T) string) []T {
	for _, a := range add {
		if !slices.ContainsFunc(have, func(h T) bool { return key(h) == key(a) }) {
			have = append(have, a)
		}
	}
	return have
}

func (s *Service) noImpact(ctx context.Context, sig Signal, key kmskey.Key, delivery incident.Entry, radius blast.Radius) (Outcome, error) {
	o := Outcome{KeyARN: sig.KeyARN, Action: ActionNoImpact, Reason: "no Aurora cluster depends on the key"}
	if len(radius.OtherEngines) > 0 {
		o.Reason += fmt.Sprintf(" (%d Neptune/DocumentDB cluster(s) do)", len(radius.OtherEngines))
	}
	// The key may have had dependents when an incident opened (the clusters were since
	// deleted); keep that incident's timeline complete rather than recording a sighting.
	if open, err := s.incidents.OpenFor(ctx, sig.KeyARN); err == nil {
		return s.record(ctx, open.ID, key, sig, delivery, ActionFolded)
	} else if !errors.Is(err, incident.ErrNotFound) {
		return o, fmt.Errorf("find open incident for %s: %w", sig.KeyARN, err)
	}
	err := s.incidents.RecordSighting(ctx, incident.Sighting{
		KeyARN: sig.KeyARN, EventName: sig.Trigger, At: sig.At.UTC(), Actor: sig.Actor, Note: o.Reason + "; key " + string(key.State),
	})
	if err != nil {
		return o, fmt.Errorf("record sighting of %s: %w", sig.KeyARN, err)
	}
	return o, nil
}

// alreadyLost folds a deletion signal into the incident that already closed as lost for the
// key: KMS may send "KMS CMK Deletion" more than once (aws-facts §2), and the reconciler may have
// seen the key gone first. done is false when no such incident exists.
func (s *Service) alreadyLost(ctx context.Context, sig Signal) (Outcome, bool, error) {
	o := Outcome{KeyARN: sig.KeyARN}
	if _, err := s.incidents.OpenFor(ctx, sig.KeyARN); err == nil {
		return o, false, nil // the open one takes the signal, and closes as lost
	} else if !errors.Is(err, incident.ErrNotFound) {
		return o, false, fmt.Errorf("find open incident for %s: %w", sig.KeyARN, err)
	}
	past, err := s.incidents.ForKey(ctx, sig.KeyARN)
	if err != nil {
		return o, false, fmt.Errorf("incidents of %s: %w", sig.KeyARN, err)
	}
	for _, inc := range past {
		if inc.State == incident.StateLost {
			entry := s.delivery(sig, kmskey.Key{State: incident.KeyStateDeleted}, s.now().UTC())
			entry.Detail += " (already recorded as lost)"
			got, err := s.incidents.Update(ctx, inc.ID, func(i *incident.Incident) error {
				i.RecordDelivery(entry)
				return nil
			})
			if err != nil {
				return o, false, fmt.Errorf("update incident %s: %w", inc.ID, err)
			}
			return Outcome{KeyARN: sig.KeyARN, Action: ActionFolded, IncidentID: got.ID}, true, nil
		}
	}
	return o, false, nil
}

// stillUsable handles a loss signal for a key that is usable again by the time we look: the
// events arrived out of order, or someone already fixed it. An open incident records the
// signal; otherwise nothing opens (the reconciler's backstop looks again later).
func (s *Service) stillUsable(ctx context.Context, sig Signal, key kmskey.Key) (Outcome, error) {
	delivery := s.delivery(sig, key, s.now().UTC())
	open, err := s.incidents.OpenFor(ctx, sig.KeyARN)
	switch {
	case err == nil:
		return s.record(ctx, open.ID, key, sig, delivery, ActionFolded)
	case !errors.Is(err, incident.ErrNotFound):
		return Outcome{KeyARN: sig.KeyARN}, fmt.Errorf("find open incident for %s: %w", sig.KeyARN, err)
	}
	return Outcome{KeyARN: sig.KeyARN, Action: ActionIgnored, Reason: "key is " + string(key.State) + " again: nothing to open"}, nil
}

// restore records EnableKey or CancelKeyDeletion on the key's open incident. It never opens
// one: the clusters may still need a restart, which the incident goes on tracking.
func (s *Service) restore(ctx context.Context, keyARN string, ev keyevent.Event) (Outcome, error) {
	return s.onOpen(ctx, keyARN, ev, "no open incident for the key")
}

// access records a key-policy or grant change on the key's open incident. Such a change alone
// does not stop a running Aurora cluster (Aurora holds its own grant for the cluster's life);
// if it does cut Aurora off, RDS-EVENT-0418/0419 or the reconciler opens the incident. But a
// key found unusable right now is a loss whose own event we missed: open for it.
func (s *Service) access(ctx context.Context, keyARN string, ev keyevent.Event) (Outcome, error) {
	o, err := s.onOpen(ctx, keyARN, ev, "")
	if err != nil || o.Action != "" {
		return o, err
	}
	key, err := s.describe(ctx, keyARN)
	if err != nil {
		return o, err
	}
	if !key.State.Unusable() {
		return Outcome{KeyARN: keyARN, Action: ActionIgnored, Reason: ev.Name + " on a key that is " + string(key.State) + ": Aurora keeps its grant"}, nil
	}
	return s.ensure(ctx, Signal{
		KeyARN: keyARN, Trigger: ev.Name, At: ev.Time, Actor: ev.Actor, EventID: ev.ID,
		TriggerDetail: fmt.Sprintf("%s seen while the key was %s (the event that made it unusable was not received)", ev.Name, key.State),
	}, key, nil)
}

// onOpen records ev on keyARN's open incident, as a delivery, with the live key state. With no
// open incident it returns an empty action, or ActionIgnored with noneReason when that is
// non-empty.
func (s *Service) onOpen(ctx context.Context, keyARN string, ev keyevent.Event, noneReason string) (Outcome, error) {
	open, err := s.incidents.OpenFor(ctx, keyARN)
	switch {
	case errors.Is(err, incident.ErrNotFound):
		if noneReason == "" {
			return Outcome{}, nil
		}
		return Outcome{KeyARN: keyARN, Action: ActionIgnored, Reason: noneReason}, nil
	case err != nil:
		return Outcome{KeyARN: keyARN}, fmt.Errorf("find open incident for %s: %w", keyARN, err)
	}
	key, err := s.describe(ctx, keyARN)
	if err != nil {
		return Outcome{KeyARN: keyARN}, err
	}
	sig := Signal{KeyARN: keyARN, Trigger: ev.Name, At: ev.Time, Actor: ev.Actor, EventID: ev.ID}
	return s.record(ctx, open.ID, key, sig, s.delivery(sig, key, s.now().UTC()), ActionUpdated)
}

// record folds one delivery into an incident with the key's live state: the delivery is
// counted once per event, and a key state change is recorded as lifecycle.SetKey does.
func (s *Service) record(ctx context.Context, id string, key kmskey.Key, sig Signal, e incident.Entry, action Action) (Outcome, error) {
	now := s.now().UTC()
	got, err := s.incidents.Update(ctx, id, func(inc *incident.Incident) error {
		inc.RecordDelivery(e)
		lifecycle.SetKey(inc, key, source(sig), now)
		inc.RecomputeDeadlines()
		return nil
	})
	if err != nil {
		return Outcome{KeyARN: key.ARN}, fmt.Errorf("update incident %s: %w", id, err)
	}
	return Outcome{KeyARN: got.KeyARN, Action: action, IncidentID: got.ID, Changed: []incident.Incident{got}}, nil
}

// describe reads the key's live state; a key KMS no longer knows is Deleted.
func (s *Service) describe(ctx context.Context, keyARN string) (kmskey.Key, error) {
	key, err := s.keys.Describe(ctx, keyARN)
	if errors.Is(err, kmskey.ErrNotFound) {
		return lifecycle.KeyDeleted(keyARN), nil
	}
	if err != nil {
		return key, fmt.Errorf("describe key %s: %w", keyARN, err)
	}
	return key, nil
}

func triggerDetail(ev keyevent.Event) string {
	switch {
	case ev.Name == "ScheduleKeyDeletion" && ev.PendingWindowDays > 0:
		return fmt.Sprintf("deletion scheduled with a %d-day waiting period", ev.PendingWindowDays)
	case ev.CustomKeyStoreID != "":
		return "custom key store " + ev.CustomKeyStoreID + " disconnected"
	}
	return ""
}

// describeSignal is the timeline's one-line account of a signal: who did what, from where.
func describeSignal(sig Signal, key kmskey.Key) string {
	var b strings.Builder
	b.WriteString(sig.Trigger)
	if sig.Actor.Name() != "unknown" {
		b.WriteString(" by " + sig.Actor.Name())
	}
	if sig.Actor.SourceIP != "" {
		b.WriteString(" from " + sig.Actor.SourceIP)
	}
	if sig.Actor.UserAgent != "" {
		b.WriteString(" (" + sig.Actor.UserAgent + ")")
	}
	if !sig.At.IsZero() {
		b.WriteString(" at " + sig.At.UTC().Format(time.RFC3339))
	}
	if sig.TriggerDetail != "" {
		b.WriteString("; " + sig.TriggerDetail)
	}
	b.WriteString("; key is " + string(key.State))
	return b.String()
}
