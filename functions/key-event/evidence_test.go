package main

import (
	"context"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/rds"

	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/intake"
)

// TestSnapshotOnlyKeyOpensLowIncident: ScheduleKeyDeletion of a key that protects only an
// Aurora cluster snapshot (a DR copy; its cluster is gone) opens a low-severity incident with
// the deletion date and the snapshot count.
func TestSnapshotOnlyKeyOpensLowIncident(t *testing.T) {
	s := newStack(t)
	ctx := context.Background()
	keyID, keyARN := s.key(t)
	c := s.cluster(t, "aurora-postgresql", keyARN)
	if _, err := s.rds.CreateDBClusterSnapshot(ctx, &rds.CreateDBClusterSnapshotInput{DBClusterIdentifier: aws.String(c), DBClusterSnapshotIdentifier: aws.String(c + "-dr")}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.rds.DeleteDBCluster(ctx, &rds.DeleteDBClusterInput{DBClusterIdentifier: aws.String(c), SkipFinalSnapshot: aws.Bool(true)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.kms.ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{KeyId: &keyID, PendingWindowInDays: aws.Int32(30)}); err != nil {
		t.Fatal(err)
	}
	res := s.handle(t, sample(t, "kms-schedule-key-deletion-snapshot-only.json", keyID))
	if len(res.Outcomes) != 1 || res.Outcomes[0].Action != intake.ActionOpened {
		t.Fatalf("got %+v, want opened", res.Outcomes)
	}
	inc, err := s.store.OpenFor(ctx, keyARN)
	if err != nil {
		t.Fatal(err)
	}
	// moto keeps the cluster's automated snapshot beside the manual one.
	if inc.Severity != incident.SeverityLow || !inc.SnapshotOnly() || inc.SnapshotCount < 1 {
		t.Errorf("got severity %s, snapshot-only %v, %d snapshot(s); want low, true, at least 1", inc.Severity, inc.SnapshotOnly(), inc.SnapshotCount)
	}
	if inc.KeyDeletionDate == nil || inc.Deadline == nil || !inc.Deadline.Equal(*inc.KeyDeletionDate) {
		t.Errorf("got deletion date %v, deadline %v; want the deadline at the deletion date", inc.KeyDeletionDate, inc.Deadline)
	}
}

// TestRecoveryCallsNeverOpen: ImportKeyMaterial and ConnectCustomKeyStore reach the function
// (template routes them) and update an open incident, but never open one.
func TestRecoveryCallsNeverOpen(t *testing.T) {
	s := newStack(t)
	keyID, keyARN := s.key(t)
	s.cluster(t, "aurora-postgresql", keyARN)
	res := s.handle(t, sample(t, "kms-import-key-material.json", keyID))
	if len(res.Outcomes) != 1 || res.Outcomes[0].Action != intake.ActionIgnored {
		t.Fatalf("ImportKeyMaterial with no incident: got %+v, want ignored", res.Outcomes)
	}
	if _, err := s.kms.DisableKey(context.Background(), &kms.DisableKeyInput{KeyId: &keyID}); err != nil {
		t.Fatal(err)
	}
	s.handle(t, sample(t, "kms-disable-key.json", keyID))
	res = s.handle(t, sample(t, "kms-import-key-material.json", keyID))
	if len(res.Outcomes) != 1 || res.Outcomes[0].Action != intake.ActionUpdated {
		t.Fatalf("ImportKeyMaterial with an incident: got %+v, want updated", res.Outcomes)
	}
	inc, err := s.store.OpenFor(context.Background(), keyARN)
	if err != nil || inc.Deliveries != 2 {
		t.Errorf("got %d deliveries (%v), want 2", inc.Deliveries, err)
	}
	// ConnectCustomKeyStore names a store none of this account's keys is in: nothing to do.
	res = s.handle(t, sample(t, "kms-connect-custom-key-store.json", keyID))
	if len(res.Outcomes) != 1 || res.Outcomes[0].Action != intake.ActionIgnored {
		t.Errorf("ConnectCustomKeyStore: got %+v, want ignored", res.Outcomes)
	}
}
