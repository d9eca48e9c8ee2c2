package slackmessage

import (
	"fmt"
	"time"

	"github.com/keywarden/keywarden/internal/incident"
)

// now is the fixed clock every test renders at.
var now = time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)

func at(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

func ptr[T any](v T) *T { return &v }

const keyARN = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"

func alice() incident.Actor {
	return incident.Actor{
		ARN:       "arn:aws:iam::111122223333:user/alice",
		Principal: "AIDAEXAMPLEALICE",
		Type:      "IAMUser",
		AccountID: "111122223333",
		SourceIP:  "203.0.113.7",
		UserAgent: "aws-cli/2.22.0 Python/3.12.6 Linux/6.1.112 exe/x86_64.amzn.2023 command/kms.disable-key",
	}
}

func cluster(id, engine string, status incident.ClusterStatus, lostAccess *time.Time) incident.Cluster {
	return incident.Cluster{
		Identifier:   id,
		ARN:          "arn:aws:rds:eu-west-1:111122223333:cluster:" + id,
		Engine:       engine,
		Status:       status,
		CanStop:      true,
		Uses:         []string{"storage"},
		LostAccessAt: lostAccess,
	}
}

func instance(id, clusterID string, status incident.ClusterStatus, lost bool) incident.Instance {
	return incident.Instance{
		Identifier:        id,
		ARN:               "arn:aws:rds:eu-west-1:111122223333:db:" + id,
		ClusterIdentifier: clusterID,
		Status:            status,
		LostKeyAccess:     lost,
	}
}

func snapshot(id, clusterID, typ string) incident.Snapshot {
	return incident.Snapshot{
		Identifier:        id,
		ARN:               "arn:aws:rds:eu-west-1:111122223333:cluster-snapshot:" + id,
		ClusterIdentifier: clusterID,
		Type:              typ,
	}
}

// disabledThree: alice disabled the key 46 minutes ago; one cluster already went recoverable,
// two still run.
func disabledThree() incident.Incident {
	lost := at("2026-11-28T09:14:00Z")
	inc := incident.Incident{
		ID: "KW-20261128-1f3a9c", Version: 3, State: incident.StateOpen,
		KeyARN: keyARN, KeyAlias: "alias/orders-db", KeyState: "Disabled", KeyManager: "CUSTOMER",
		Trigger: "DisableKey", LostAt: lost, OpenedAt: lost.Add(40 * time.Second), UpdatedAt: lost.Add(20 * time.Minute),
		Actor: alice(), // Deliveries: RecordDelivery counts the one event below.
		Clusters: []incident.Cluster{
			cluster("orders-prod", "aurora-postgresql", "available", &lost),
			cluster("billing", "aurora-mysql", "inaccessible-encryption-credentials-recoverable", &lost),
			cluster("reports", "aurora-postgresql", "available", &lost),
		},
		Instances: []incident.Instance{
			instance("orders-prod-1", "orders-prod", "available", true),
			instance("orders-prod-2", "orders-prod", "available", false),
			instance("billing-1", "billing", "inaccessible-encryption-credentials-recoverable", true),
			instance("reports-1", "reports", "available", false),
		},
		Snapshots: []incident.Snapshot{
			snapshot("orders-prod-2026-11-27", "orders-prod", "automated"),
			snapshot("orders-prod-before-upgrade", "orders-prod", "manual"),
			snapshot("billing-2026-11-27", "billing", "automated"),
		},
	}
	inc.RecordDelivery(incident.Entry{At: lost.Add(40 * time.Second), Source: "3c5d0f2e-0b8e-4c2a-9f7e-1a2b3c4d5e6f",
		Actor: "arn:aws:iam::111122223333:user/alice", Detail: "DisableKey from 203.0.113.7"})
	inc.AddEntry(incident.Entry{ID: incident.EntryID("click", "1795850400.000100", "U012ABCDEF"), At: lost.Add(20 * time.Minute),
		Kind: incident.KindClick, Actor: "U012ABCDEF", Result: incident.Result(ActionAcknowledge), Detail: "acknowledge: on it"})
	inc.Clusters[0].Uses = []string{"storage", "master-user-secret"}
	inc.RecomputeDeadlines()
	return inc
}

// deletionBeforeWindow: the key was scheduled for deletion with the shortest waiting period
// and RDS noticed the lost access two and a half hours later, so the key's deletion date comes
// before the clusters' 7-day windows end.
func deletionBeforeWindow() incident.Incident {
	lost := at("2026-11-27T12:00:00Z")
	noticed := at("2026-11-27T14:30:00Z")
	inc := incident.Incident{
		ID: "KW-20261127-7c01de", Version: 5, State: incident.StateOpen,
		KeyARN: keyARN, KeyAlias: "alias/payments", KeyState: "PendingDeletion", KeyManager: "CUSTOMER",
		KeyDeletionDate: ptr(at("2026-12-04T12:00:00Z")),
		Trigger:         "ScheduleKeyDeletion", TriggerDetail: "PendingWindowInDays=7",
		LostAt: lost, OpenedAt: lost.Add(time.Minute), UpdatedAt: noticed,
		Actor: incident.Actor{
			ARN: "arn:aws:sts::111122223333:assumed-role/ops-admin/bob", Principal: "AROAEXAMPLEOPS:bob",
			Type: "AssumedRole", AccountID: "111122223333", SourceIP: "198.51.100.23", UserAgent: "console.amazonaws.com",
		},
		Deliveries: 2,
		Clusters: []incident.Cluster{
			cluster("payments", "aurora-postgresql", "inaccessible-encryption-credentials-recoverable", &noticed),
			cluster("payments-analytics", "aurora-postgresql", "stopped", &noticed),
		},
		Instances: []incident.Instance{
			instance("payments-1", "payments", "inaccessible-encryption-credentials-recoverable", true),
			instance("payments-analytics-1", "payments-analytics", "stopped", false),
		},
	}
	inc.RecomputeDeadlines()
	return inc
}

// cannotStop: a global database member shares the key with an ordinary cluster and a
// non-Aurora Multi-AZ cluster.
func cannotStop() incident.Incident {
	lost := at("2026-11-28T08:30:00Z")
	inc := incident.Incident{
		ID: "KW-20261128-a0b1c2", Version: 2, State: incident.StateOpen,
		KeyARN: keyARN, KeyState: "Disabled", KeyManager: "CUSTOMER",
		Trigger: "DisableKey", LostAt: lost, OpenedAt: lost, UpdatedAt: lost,
		Actor: alice(), Deliveries: 1,
		Clusters: []incident.Cluster{
			cluster("inventory", "aurora-mysql", "available", &lost),
			cluster("global-orders-eu", "aurora-mysql", "available", &lost),
		},
		Instances: []incident.Instance{
			instance("inventory-1", "inventory", "available", false),
			instance("global-orders-eu-1", "global-orders-eu", "available", true),
			instance("global-orders-eu-2", "global-orders-eu", "available", true),
		},
		OtherEngines: []incident.Cluster{
			{Identifier: "legacy-mysql", Engine: "mysql", Status: "available", CanStop: true},
		},
	}
	inc.Clusters[1].CanStop = false
	inc.Clusters[1].CannotStopReason = "member of global database global-orders"
	inc.RecomputeDeadlines()
	return inc
}

// keyDeletedOpen: KMS reports the key deleted; DescribeKey now answers NotFound.
func keyDeletedOpen() incident.Incident {
	lost := at("2026-11-28T06:00:00Z")
	inc := incident.Incident{
		ID: "KW-20261128-dead01", Version: 9, State: incident.StateOpen,
		KeyARN: keyARN, KeyAlias: "alias/archive", KeyState: "", KeyManager: "CUSTOMER",
		KeyDeletionDate: ptr(lost),
		Trigger:         "KMS CMK Deletion", LostAt: lost, OpenedAt: lost, UpdatedAt: lost,
		Clusters: []incident.Cluster{
			cluster("archive", "aurora-postgresql", "inaccessible-encryption-credentials", ptr(at("2026-11-20T06:00:00Z"))),
		},
		Snapshots: []incident.Snapshot{snapshot("archive-final", "archive", "manual")},
	}
	inc.Clusters[0].Lost = true
	inc.RecomputeDeadlines()
	return inc
}

// manyClusters is an incident with n clusters with long names, each with two instances and
// a snapshot, to push every Block Kit limit.
func manyClusters(n int) incident.Incident {
	inc := disabledThree()
	inc.Clusters, inc.Instances, inc.Snapshots = nil, nil, nil
	lost := inc.LostAt
	for i := range n {
		id := fmt.Sprintf("tenant-%03d-orders-service-primary-aurora-postgresql-cluster-eu-west-1", i)
		c := cluster(id, "aurora-postgresql", "inaccessible-encryption-credentials-recoverable", ptr(lost.Add(time.Duration(i)*time.Minute)))
		c.Uses = []string{"storage", "master-user-secret", "performance-insights"}
		if i%7 == 0 {
			c.CanStop = false
			c.CannotStopReason = "has a cross-Region read replica in us-east-1 that cannot be stopped either"
		}
		inc.Clusters = append(inc.Clusters, c)
		inc.Instances = append(inc.Instances,
			instance(id+"-1", id, "available", true), instance(id+"-2", id, "available", false))
		inc.Snapshots = append(inc.Snapshots, snapshot(id+"-snap", id, "automated"))
		inc.OtherEngines = append(inc.OtherEngines, incident.Cluster{Identifier: fmt.Sprintf("other-%d", i), Engine: "mysql", Status: "available"})
	}
	inc.RecomputeDeadlines()
	return inc
}
