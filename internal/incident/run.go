package incident

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// Errors of a remediation run's claim.
var (
	// ErrRunNotCurrent: the run named is not the incident's current remediation (it was given
	// back, perhaps approved again as another run, or the incident closed).
	ErrRunNotCurrent = errors.New("run is not the incident's current remediation")
	// ErrRunClaimed: another invocation holds the run's lease, or the run is finished.
	ErrRunClaimed = errors.New("run already claimed")
)

// HandOffGrace is how long a run may sit approved and unclaimed before anyone but the approving
// click hands it off again (the reconciler's hand-off pass, a later remediate click): the
// click's own hand-off and RemediateFunction's cold start get that long first. It is the
// `after` of AwaitingStart for both.
const HandOffGrace = 20 * time.Second

// DefaultWatchGrace is WatchInstances' default grace: how long an instance that reported lost
// key access must stay available with the key Enabled to count as recovered without
// RDS-EVENT-0420 (WATCH_GRACE overrides it in RemediateFunction and ReconcileFunction).
const DefaultWatchGrace = 30 * time.Minute

// AwaitingStart reports whether the incident's approved run needs an invocation to start or
// continue it: approved at least `after` ago and not claimed since (the approving click's
// hand-off was lost, or a bounded invocation paused it), or claimed by an invocation whose lease
// ran out (it died without a word: a Lambda timeout, a crash). The reconciler starts those.
func (inc *Incident) AwaitingStart(now time.Time, after time.Duration) bool {
	r := inc.Remediation
	if inc.State != StateRemediating || r.RunID == "" {
		return false
	}
	switch r.State {
	case RemediationApproved:
		return r.ApprovedAt == nil || !now.Before(r.ApprovedAt.Add(after))
	case RemediationRunning:
		return r.LeaseUntil == nil || now.After(*r.LeaseUntil)
	}
	return false
}

// ClaimRun lets invocation `by` run runID until now+lease: the run must be the incident's
// current one, approved or paused, or running under a lease that expired. Put it in a
// conditional update (the store's Update) so two invocations racing cannot both hold it.
// Errors: ErrRunNotCurrent, ErrRunClaimed (wrapped, with who holds it).
func (inc *Incident) ClaimRun(runID, by string, now time.Time, lease time.Duration) error {
	r := &inc.Remediation
	if inc.State != StateRemediating || r.RunID == "" || (runID != "" && r.RunID != runID) {
		return fmt.Errorf("run %s of incident %s (%s, run %q): %w", runID, inc.ID, inc.State, r.RunID, ErrRunNotCurrent)
	}
	switch {
	case r.State == RemediationApproved:
	case r.State == RemediationRunning && r.ClaimedBy == by:
	case r.State == RemediationRunning && r.LeaseUntil != nil && now.After(*r.LeaseUntil):
		at := now.UTC()
		inc.AddEntry(Entry{ID: EntryID("lease-expired", r.RunID, r.ClaimedBy), At: at, Kind: KindNote, Actor: Keywarden,
			Source: r.RunID, Detail: fmt.Sprintf("remediation %s: invocation %s stopped without a word (lease ran out at %s); continuing it",
				r.RunID, r.ClaimedBy, r.LeaseUntil.UTC().Format(time.RFC3339))})
	default:
		return fmt.Errorf("run %s of incident %s is %s by %q: %w", r.RunID, inc.ID, r.State, r.ClaimedBy, ErrRunClaimed)
	}
	until := now.Add(lease).UTC()
	if r.ClaimedBy != by {
		r.Attempts++
	}
	r.State, r.ClaimedBy, r.LeaseUntil = RemediationRunning, by, &until
	return nil
}

// PauseRun releases the run's claim after an invocation stopped short, at `where` (the step it
// did not finish), for `why` (its time limit, or a failure a retry may cure): the run is
// approved again, and the next invocation (the reconciler starts one within a minute) continues
// it from live state. The timeline says where and why it stopped.
func (inc *Incident) PauseRun(where, why string, at time.Time) {
	r := &inc.Remediation
	if inc.State != StateRemediating || r.State != RemediationRunning {
		return
	}
	at = at.UTC()
	inc.AddEntry(Entry{ID: EntryID("paused", r.RunID, fmt.Sprint(r.Attempts)), At: at, Kind: KindNote, Actor: Keywarden, Source: r.RunID,
		Detail: fmt.Sprintf("remediation %s stopped at %s (%s); a new invocation continues it", r.RunID, where, why)})
	r.State, r.ClaimedBy, r.LeaseUntil, r.StoppedAt, r.ApprovedAt = RemediationApproved, "", nil, where, &at
}

// WatchInstances advances the watch of every instance that reported lost key access, as of now
// and with the key in KeyState; each instance's Status must be fresh. With the key Enabled, an
// instance available for `grace` without a break counts as recovered (LostKeyAccess cleared),
// and one that was not available for all of the grace after the watch began is marked
// NeedsReboot, which offers its own Reboot instance button. Either is said on the timeline. It
// reports whether anything changed.
func (inc *Incident) WatchInstances(now time.Time, grace time.Duration) bool {
	if inc.KeyState != KeyStateEnabled {
		return false
	}
	now = now.UTC()
	changed := false
	for i := range inc.Instances {
		in := &inc.Instances[i]
		if !in.LostKeyAccess {
			continue
		}
		if in.WatchSince == nil {
			in.WatchSince = &now
			changed = true
		}
		switch {
		case in.Status != StatusAvailable:
			if in.AvailableSince != nil {
				in.AvailableSince, changed = nil, true
			}
		case in.AvailableSince == nil:
			in.AvailableSince, changed = &now, true
		}
		switch {
		case in.AvailableSince != nil && !now.Before(in.AvailableSince.Add(grace)):
			in.LostKeyAccess, in.NeedsReboot, in.WatchSince, in.AvailableSince, changed = false, false, nil, nil, true
			inc.AddEntry(Entry{ID: EntryID("watch-recovered", in.Identifier, now.Format(time.RFC3339)), At: now, Kind: KindClusterChange,
				Actor: Keywarden, Target: in.Identifier, Result: ResultOK,
				Detail: fmt.Sprintf("instance %s counted recovered: available for %s with the key Enabled (no RDS-EVENT-0420 came; none is needed), not rebooted", in.Identifier, grace)})
		case !in.NeedsReboot && !now.Before(in.WatchSince.Add(grace)):
			in.NeedsReboot, changed = true, true
			inc.AddEntry(Entry{ID: EntryID("watch-reboot", in.Identifier, in.WatchSince.Format(time.RFC3339)), At: now, Kind: KindClusterChange,
				Actor: Keywarden, Target: in.Identifier, Result: ResultFailed,
				Detail: fmt.Sprintf("instance %s still reports lost key access %s after the key came back (status %s): a Reboot instance button is offered; nothing reboots without it", in.Identifier, grace, orUnknown(string(in.Status)))})
		}
	}
	return changed
}

// Watching reports whether some instance that reported lost key access is still watched.
func (inc *Incident) Watching() bool {
	for _, in := range inc.Instances {
		if in.LostKeyAccess && !in.NeedsReboot {
			return true
		}
	}
	return false
}

// RebootPlan is the one step of the Reboot instance button for instance id: RebootDBInstance,
// or a Skip reason when it must not run. It runs only for an instance marked NeedsReboot, still
// running, with the key Enabled, and whose cluster's live storage key (LiveKeyARN, when read) is
// the incident's key.
func (inc *Incident) RebootPlan(id string) PlannedStep {
	s := PlannedStep{Kind: StepRebootDBInstance, Target: id}
	in := inc.instance(id)
	var cl *Cluster
	if in != nil {
		if i := slices.IndexFunc(inc.Clusters, func(c Cluster) bool { return c.Identifier == in.ClusterIdentifier }); i >= 0 {
			cl = &inc.Clusters[i]
		}
	}
	switch {
	case in == nil || in.Status == "":
		s.Skip = "instance not found"
	case !in.LostKeyAccess || !in.NeedsReboot:
		s.Skip = "the instance does not need a reboot (it recovered, or is still watched)"
	case inc.KeyState != KeyStateEnabled:
		s.Skip = fmt.Sprintf("the key is %s: enable it first", orUnknown(string(inc.KeyState)))
	case cl != nil && cl.LiveKeyARN != "" && cl.LiveKeyARN != inc.KeyARN:
		s.Skip = "its cluster's storage is now encrypted with another key (" + cl.LiveKeyARN + "): not this incident's to reboot"
	case in.Status == StatusRebooting:
		s.Skip = "already rebooting"
	case in.Status != StatusAvailable:
		s.Skip = fmt.Sprintf("status %s: not running", in.Status)
	}
	return s
}

// NoteStopped records that cluster id was stopped at `at` (RDS-EVENT-0150, or a status read):
// a stop before the key was lost (LostAt) is its owner's, and remediation leaves it stopped.
// It reports whether the cluster is now marked StoppedBeforeLoss.
func (inc *Incident) NoteStopped(id string, at time.Time) bool {
	for i := range inc.Clusters {
		c := &inc.Clusters[i]
		if c.Identifier != id {
			continue
		}
		if !inc.LostAt.IsZero() && at.Before(inc.LostAt) && !c.WindowFromRDS {
			c.StoppedBeforeLoss = true
		}
		return c.StoppedBeforeLoss
	}
	return false
}

// ApproveReboot records user's approval of rebooting instance id and approves the reboot under
// runID once `required` distinct users approved it (a required below 1 counts as 1). Only an
// instance whose RebootPlan runs may be approved. It returns the approvals so far and whether
// this one approved the reboot. Errors: ErrAlreadyApproved, or one saying why no reboot.
func (inc *Incident) ApproveReboot(id, user, source string, at time.Time, required int, runID string) (int, bool, error) {
	required = max(required, 1)
	if s := inc.RebootPlan(id); !s.Runs() {
		return 0, false, fmt.Errorf("no reboot of %s: %s", id, s.Skip)
	}
	in := inc.instance(id)
	if in.Reboot == nil || in.Reboot.State == RemediationFailed || in.Reboot.State == RemediationDone {
		in.Reboot = &InstanceReboot{State: RemediationNone}
	}
	r := in.Reboot
	if r.State == RemediationApproved || r.State == RemediationRunning {
		return len(r.Approvals), false, fmt.Errorf("the reboot of %s is already approved", id)
	}
	for _, a := range r.Approvals {
		if a.User == user {
			return len(r.Approvals), false, ErrAlreadyApproved
		}
	}
	at = at.UTC()
	r.Approvals = append(r.Approvals, Approval{User: user, At: at, Source: source, Version: inc.Version})
	count := len(r.Approvals)
	inc.AddEntry(Entry{ID: EntryID("reboot-approval", source, user), At: at, Kind: KindApproval, Actor: user, Target: id,
		Result: ResultApproved, Source: source, Detail: fmt.Sprintf("reboot_instance %s: approval %d of %d", id, min(count, required), required)})
	if count < required {
		return count, false, nil
	}
	r.RunID, r.State = runID, RemediationApproved
	return count, true, nil
}

// RebootApprovers lists who approved instance id's reboot.
func (inc *Incident) RebootApprovers(id string) []string {
	in := inc.instance(id)
	if in == nil || in.Reboot == nil {
		return nil
	}
	var users []string
	for _, a := range in.Reboot.Approvals {
		users = append(users, a.User)
	}
	return users
}

// ClaimReboot moves instance id's approved reboot runID to running, once: a second delivery
// of its hand-off meets ErrRunClaimed, another run ErrRunNotCurrent.
func (inc *Incident) ClaimReboot(id, runID string) error {
	in := inc.instance(id)
	switch {
	case in == nil || in.Reboot == nil || in.Reboot.RunID != runID:
		return fmt.Errorf("reboot %s of %s: %w", runID, id, ErrRunNotCurrent)
	case in.Reboot.State != RemediationApproved:
		return fmt.Errorf("reboot %s of %s is %s: %w", runID, id, in.Reboot.State, ErrRunClaimed)
	}
	in.Reboot.State = RemediationRunning
	return nil
}

// EndReboot records how instance id's reboot ended: done, or failed (the button returns).
func (inc *Incident) EndReboot(id string, ok bool) {
	in := inc.instance(id)
	if in == nil || in.Reboot == nil {
		return
	}
	in.Reboot.State = RemediationFailed
	if ok {
		in.Reboot.State = RemediationDone
		in.NeedsReboot = false
	}
}

func (inc *Incident) instance(id string) *Instance {
	if i := slices.IndexFunc(inc.Instances, func(in Instance) bool { return in.Identifier == id }); i >= 0 {
		return &inc.Instances[i]
	}
	return nil
}
