package remedy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/rds"

	"github.com/keywarden/keywarden/internal/awstest"
	"github.com/keywarden/keywarden/internal/incident"
)

// TestRebootInstance: the Reboot instance button's run reboots only an approved instance that
// still needs it, with the key Enabled and its cluster still on the key; a second delivery does
// nothing, and an instance whose cluster is now on another key is skipped and recorded.
func TestRebootInstance(t *testing.T) {
	ctx := context.Background()
	cfg := awstest.Config(t, awstest.Moto(t))
	kmsClient, rdsClient := kms.NewFromConfig(cfg), rds.NewFromConfig(cfg)
	key, err := kmsClient.CreateKey(ctx, &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	other, err := kmsClient.CreateKey(ctx, &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	keyARN := aws.ToString(key.KeyMetadata.Arn)
	suffix := fmt.Sprint(time.Now().UnixNano())
	mine, moved := "orders-"+suffix, "moved-"+suffix
	createCluster(t, rdsClient, mine, keyARN)
	createCluster(t, rdsClient, moved, aws.ToString(other.KeyMetadata.Arn))

	inc := testIncident(
		[]incident.Cluster{{Identifier: mine, Status: incident.StatusAvailable, CanStop: true, Uses: []string{"storage"}},
			{Identifier: moved, Status: incident.StatusAvailable, CanStop: true, Uses: []string{"storage"}}},
		[]incident.Instance{
			{Identifier: mine + "-1", ClusterIdentifier: mine, Status: incident.StatusAvailable, LostKeyAccess: true, NeedsReboot: true},
			{Identifier: moved + "-1", ClusterIdentifier: moved, Status: incident.StatusAvailable, LostKeyAccess: true, NeedsReboot: true},
		})
	inc.KeyARN, inc.KeyState = keyARN, incident.KeyStateEnabled
	inc.Remediation.State = incident.RemediationDone
	for _, in := range []string{mine + "-1", moved + "-1"} {
		if _, ok, err := inc.ApproveReboot(in, approver, "click-"+in, time.Now(), 1, "reboot-"+in); err != nil || !ok {
			t.Fatalf("approve reboot of %s: %v %v", in, ok, err)
		}
	}
	store := newMemStore(inc)
	cr := &countingRDS{RDSAPI: rdsClient, calls: map[string]int{}}
	r := New(kmsClient, cr, store, Options{})

	got, steps, err := r.Reboot(ctx, inc.ID, mine+"-1", "reboot-"+mine+"-1")
	if err != nil || len(steps) != 1 || steps[0].Result != incident.ResultOK || cr.calls["RebootDBInstance"] != 1 {
		t.Fatalf("reboot: %v, steps %+v, %d calls; want one RebootDBInstance", err, steps, cr.calls["RebootDBInstance"])
	}
	if in := got.Instances[0]; in.NeedsReboot || in.Reboot.State != incident.RemediationDone || !in.LostKeyAccess {
		t.Errorf("after the reboot: %+v; want done, watched again until it recovers", in)
	}
	if _, _, err := r.Reboot(ctx, inc.ID, mine+"-1", "reboot-"+mine+"-1"); !errors.Is(err, ErrClaimed) || cr.calls["RebootDBInstance"] != 1 {
		t.Errorf("second delivery: %v, %d calls; want ErrClaimed and no second reboot", err, cr.calls["RebootDBInstance"])
	}
	got, steps, err = r.Reboot(ctx, inc.ID, moved+"-1", "reboot-"+moved+"-1")
	if err != nil || steps[0].Result != incident.ResultSkipped || !strings.Contains(steps[0].Detail, "another key") || cr.calls["RebootDBInstance"] != 1 {
		t.Errorf("instance on another key: %v, %+v, %d calls; want skipped and recorded", err, steps, cr.calls["RebootDBInstance"])
	}
	if _, ok := got.StepDone(incident.StepRebootDBInstance, moved+"-1"); ok {
		t.Error("the skipped reboot is recorded as done")
	}
}

// TestOwnerStoppedClusterLeftStopped: a cluster its owner stopped before the key was lost is
// left stopped and listed so; the cluster the loss stopped is started.
func TestOwnerStoppedClusterLeftStopped(t *testing.T) {
	ctx := context.Background()
	cfg := awstest.Config(t, awstest.Moto(t))
	kmsClient, rdsClient := kms.NewFromConfig(cfg), rds.NewFromConfig(cfg)
	key, err := kmsClient.CreateKey(ctx, &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	keyARN := aws.ToString(key.KeyMetadata.Arn)
	suffix := fmt.Sprint(time.Now().UnixNano())
	owners, lossStopped := "owners-"+suffix, "orders-"+suffix
	for _, id := range []string{owners, lossStopped} {
		createCluster(t, rdsClient, id, keyARN)
		if _, err := rdsClient.StopDBCluster(ctx, &rds.StopDBClusterInput{DBClusterIdentifier: aws.String(id)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := kmsClient.DisableKey(ctx, &kms.DisableKeyInput{KeyId: key.KeyMetadata.KeyId}); err != nil {
		t.Fatal(err)
	}
	lostAt := time.Now().UTC()
	inc := testIncident([]incident.Cluster{
		{Identifier: owners, Status: incident.StatusStopped, CanStop: true, Uses: []string{"storage"}},
		{Identifier: lossStopped, Status: incident.StatusStopped, CanStop: true, Uses: []string{"storage"}},
	}, nil)
	inc.KeyARN, inc.KeyState, inc.LostAt = keyARN, incident.KeyStateDisabled, lostAt
	// RDS-EVENT-0150 said the owner stopped it a day before the key was lost.
	if !inc.NoteStopped(owners, lostAt.Add(-24*time.Hour)) {
		t.Fatal("the owner's stop is not recognised")
	}
	store := newMemStore(inc)
	got, _, err := New(kmsClient, rdsClient, store, Options{WaitTimeout: 10 * time.Second}).Run(ctx, inc.ID, approver)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if st := liveClusterStatus(t, rdsClient, owners); st != incident.StatusStopped {
		t.Errorf("the owner's cluster is %s, want left stopped", st)
	}
	if st := liveClusterStatus(t, rdsClient, lossStopped); st == incident.StatusStopped {
		t.Error("the cluster the loss stopped was not started")
	}
	want := skipped(incident.StepStartDBCluster, owners, incident.OwnerStopped)
	found := false
	for _, s := range steps(got) {
		found = found || s == want
	}
	if !found {
		t.Errorf("steps %+v, want %+v listed", steps(got), want)
	}
}
