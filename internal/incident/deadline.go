package incident

import (
	"slices"
	"time"
)

// RecoverableWindow is how long Aurora keeps a cluster that lost its key in
// inaccessible-encryption-credentials-recoverable before it turns terminal.
const RecoverableWindow = 7 * 24 * time.Hour

// RecomputeDeadlines derives every cluster's deadline and the incident's from what is known:
//
//   - a cluster that can stop has 7 days from when it lost key access;
//   - a key pending deletion is gone for good on DescribeKey's DeletionDate, which bounds every
//     cluster (a restore needs the key too) — but not while a multi-Region primary is
//     PendingReplicaDeletion, whose waiting period has not started;
//   - a cluster that cannot stop has no window at all: it gets no deadline of its own and makes
//     the incident critical;
//   - a cluster that uses the key only for its master-user secret, Performance Insights or
//     activity stream keeps running without it (those features are impaired): only the key's
//     deletion date bounds it.
//
// Recovered and lost clusters no longer count towards the incident's deadline.
func (inc *Incident) RecomputeDeadlines() {
	var deletion *time.Time
	if inc.KeyState == KeyStatePendingDeletion && inc.KeyDeletionDate != nil {
		deletion = inc.KeyDeletionDate
	}
	inc.Critical = false
	inc.Deadline = deletion
	for i := range inc.Clusters {
		c := &inc.Clusters[i]
		c.Deadline = nil
		if !c.StorageOnKey() {
			c.Deadline = deletion
			continue
		}
		if !c.CanStop {
			if !c.Recovered && !c.Lost {
				inc.Critical = true
			}
			continue
		}
		if c.LostAccessAt != nil {
			c.Deadline = ptr(c.LostAccessAt.Add(RecoverableWindow).UTC())
		}
		c.Deadline = earliest(c.Deadline, deletion)
		if !c.Recovered && !c.Lost {
			inc.Deadline = earliest(inc.Deadline, c.Deadline)
		}
	}
	inc.Severity = inc.baseSeverity()
}

// TimeLeft is the time from now to the incident's deadline; ok is false when there is none.
func (inc *Incident) TimeLeft(now time.Time) (left time.Duration, ok bool) {
	if inc.Deadline == nil {
		return 0, false
	}
	return inc.Deadline.Sub(now), true
}

// CompareDeadlines orders deadlines earliest first, with no deadline last: the order in which
// on-call should look at things that have one.
func CompareDeadlines(a, b *time.Time) int {
	switch {
	case a == nil && b == nil:
		return 0
	case a == nil:
		return 1
	case b == nil:
		return -1
	}
	return a.Compare(*b)
}

func earliest(a, b *time.Time) *time.Time {
	switch {
	case a == nil:
		return b
	case b == nil:
		return a
	case b.Before(*a):
		return b
	}
	return a
}

func ptr[T any](v T) *T { return &v }

// StorageOnKey reports whether the key encrypts the cluster's storage, the use that stops the
// cluster when the key is lost. Clusters recorded before Uses existed count as storage.
func (c Cluster) StorageOnKey() bool {
	return len(c.Uses) == 0 || slices.Contains(c.Uses, "storage")
}
