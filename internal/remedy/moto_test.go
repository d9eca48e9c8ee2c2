package remedy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	kmstypes "github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/aws-sdk-go-v2/service/rds"
	"github.com/google/go-cmp/cmp"

	"github.com/keywarden/keywarden/internal/awstest"
	"github.com/keywarden/keywarden/internal/incident"
)

func TestMain(m *testing.M) { awstest.Main(m) }

// countingKMS and countingRDS wrap the real clients to count write calls, so a second Run can
// be shown to repeat nothing.
type countingKMS struct {
	KMSAPI
	mu    sync.Mutex
	calls map[string]int
}

func (c *countingKMS) count(api string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls[api]++
}

func (c *countingKMS) CancelKeyDeletion(ctx context.Context, in *kms.CancelKeyDeletionInput, o ...func(*kms.Options)) (*kms.CancelKeyDeletionOutput, error) {
	c.count("CancelKeyDeletion")
	return c.KMSAPI.CancelKeyDeletion(ctx, in, o...)
}

func (c *countingKMS) EnableKey(ctx context.Context, in *kms.EnableKeyInput, o ...func(*kms.Options)) (*kms.EnableKeyOutput, error) {
	c.count("EnableKey")
	return c.KMSAPI.EnableKey(ctx, in, o...)
}

type countingRDS struct {
	RDSAPI
	mu    sync.Mutex
	calls map[string]int
}

func (c *countingRDS) count(api string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls[api]++
}

func (c *countingRDS) StartDBCluster(ctx context.Context, in *rds.StartDBClusterInput, o ...func(*rds.Options)) (*rds.StartDBClusterOutput, error) {
	c.count("StartDBCluster")
	return c.RDSAPI.StartDBCluster(ctx, in, o...)
}

func (c *countingRDS) RebootDBInstance(ctx context.Context, in *rds.RebootDBInstanceInput, o ...func(*rds.Options)) (*rds.RebootDBInstanceOutput, error) {
	c.count("RebootDBInstance")
	return c.RDSAPI.RebootDBInstance(ctx, in, o...)
}

// TestRunAgainstMoto makes a key unusable the two ways an operator can (DisableKey,
// ScheduleKeyDeletion), with a stopped Aurora cluster (moto's stand-in for
// inaccessible-encryption-credentials-recoverable, which it cannot produce) and a running one
// whose instance lost key access, then remediates twice: the running instance is watched, never
// rebooted, and the second delivery runs nothing.
func TestRunAgainstMoto(t *testing.T) {
	tests := []struct {
		name      string
		breakKey  func(ctx context.Context, c *kms.Client, keyID string) error
		wantState kmstypes.KeyState // before remediation
		wantKey   []step            // key steps on the first run
	}{
		{
			name: "disabled",
			breakKey: func(ctx context.Context, c *kms.Client, keyID string) error {
				_, err := c.DisableKey(ctx, &kms.DisableKeyInput{KeyId: aws.String(keyID)})
				return err
			},
			wantState: kmstypes.KeyStateDisabled,
			wantKey: []step{skipped(incident.StepCancelKeyDeletion, "", "no deletion scheduled (key Disabled)"),
				ok(incident.StepEnableKey, ""), ok(incident.StepWaitEnabled, "")},
		},
		{
			name: "deletion scheduled",
			breakKey: func(ctx context.Context, c *kms.Client, keyID string) error {
				_, err := c.ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{KeyId: aws.String(keyID), PendingWindowInDays: aws.Int32(7)})
				return err
			},
			wantState: kmstypes.KeyStatePendingDeletion,
			wantKey:   []step{ok(incident.StepCancelKeyDeletion, ""), ok(incident.StepEnableKey, ""), ok(incident.StepWaitEnabled, "")},
		},
	}
	ep := awstest.Moto(t)
	cfg := awstest.Config(t, ep)
	kmsClient := kms.NewFromConfig(cfg)
	rdsClient := rds.NewFromConfig(cfg)

	for n, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			suffix := fmt.Sprintf("%d-%d", n, time.Now().UnixNano())
			key, err := kmsClient.CreateKey(ctx, &kms.CreateKeyInput{Description: aws.String("remedy " + suffix)})
			if err != nil {
				t.Fatalf("create key: %v", err)
			}
			keyARN, keyID := aws.ToString(key.KeyMetadata.Arn), aws.ToString(key.KeyMetadata.KeyId)

			stopped, running := "orders-"+suffix, "reports-"+suffix
			for _, id := range []string{stopped, running} {
				createCluster(t, rdsClient, id, keyARN)
			}
			if _, err := rdsClient.StopDBCluster(ctx, &rds.StopDBClusterInput{DBClusterIdentifier: aws.String(stopped)}); err != nil {
				t.Fatalf("stop cluster: %v", err)
			}
			if err := tt.breakKey(ctx, kmsClient, keyID); err != nil {
				t.Fatalf("break key: %v", err)
			}
			if got := keyState(t, kmsClient, keyARN); got != tt.wantState {
				t.Fatalf("key state before = %s, want %s", got, tt.wantState)
			}
			if got := liveClusterStatus(t, rdsClient, stopped); got != incident.StatusStopped {
				t.Fatalf("cluster %s status before = %s, want stopped", stopped, got)
			}

			inc := testIncident(
				[]incident.Cluster{
					{Identifier: stopped, Engine: "aurora-postgresql", Status: incident.StatusStopped, CanStop: true},
					{Identifier: running, Engine: "aurora-postgresql", Status: incident.StatusAvailable, CanStop: true},
				},
				[]incident.Instance{
					{Identifier: stopped + "-1", ClusterIdentifier: stopped, LostKeyAccess: true},
					{Identifier: running + "-1", ClusterIdentifier: running, Status: incident.StatusAvailable, LostKeyAccess: true},
				})
			inc.ID, inc.KeyARN, inc.KeyState = "inc-"+suffix, keyARN, incident.KeyState(tt.wantState)
			store := newMemStore(inc)
			ck := &countingKMS{KMSAPI: kmsClient, calls: map[string]int{}}
			cr := &countingRDS{RDSAPI: rdsClient, calls: map[string]int{}}
			r := New(ck, cr, store, Options{WaitTimeout: 10 * time.Second})

			got, _, err := r.Run(ctx, inc.ID, approver)
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if st := keyState(t, kmsClient, keyARN); st != kmstypes.KeyStateEnabled {
				t.Errorf("key state after = %s, want Enabled", st)
			}
			if st := liveClusterStatus(t, rdsClient, stopped); st == incident.StatusStopped {
				t.Errorf("cluster %s still stopped after Run", stopped)
			}
			var want []step
			for _, k := range tt.wantKey {
				k.Target = keyARN
				want = append(want, k)
			}
			want = append(want,
				ok(incident.StepStartDBCluster, stopped),
				skipped(incident.StepStartDBCluster, running, "already available"),
				skipped(incident.StepWatchInstance, stopped+"-1", "cluster "+stopped+" is started, which starts its instances"),
				skipped(incident.StepWatchInstance, running+"-1", watched))
			if diff := cmp.Diff(want, steps(got)); diff != "" {
				t.Errorf("recorded steps (-want +got):\n%s", diff)
			}
			if got.State != incident.StateRemediating || got.KeyState != incident.KeyStateEnabled || got.KeyDeletionDate != nil {
				t.Errorf("incident state %s key %s deletion %v, want remediating, Enabled, none", got.State, got.KeyState, got.KeyDeletionDate)
			}
			first := map[string]int{}
			for k, v := range ck.calls {
				first[k] = v
			}
			for k, v := range cr.calls {
				first[k] = v
			}

			// A second delivery of the hand-off meets the claim of a finished run.
			again, ran, err := r.Run(ctx, inc.ID, approver)
			if !errors.Is(err, ErrClaimed) {
				t.Fatalf("second Run: %v, want ErrClaimed", err)
			}
			second := map[string]int{}
			for k, v := range ck.calls {
				second[k] = v
			}
			for k, v := range cr.calls {
				second[k] = v
			}
			if diff := cmp.Diff(first, second); diff != "" {
				t.Errorf("second Run made write calls (-first +after second):\n%s", diff)
			}
			for _, s := range ran {
				if s.Runs() || s.Result != incident.ResultSkipped {
					t.Errorf("second Run ran %s %s (%s)", s.Name, s.Target, s.Result)
				}
			}
			if diff := cmp.Diff(want, steps(again)); diff != "" {
				t.Errorf("the same run recorded steps again (-first +after second):\n%s", diff)
			}
		})
	}
}

func createCluster(t *testing.T, c *rds.Client, id, keyARN string) {
	t.Helper()
	ctx := context.Background()
	_, err := c.CreateDBCluster(ctx, &rds.CreateDBClusterInput{
		DBClusterIdentifier: aws.String(id),
		Engine:              aws.String("aurora-postgresql"),
		MasterUsername:      aws.String("keywarden"),
		MasterUserPassword:  aws.String("not-a-secret-1"),
		StorageEncrypted:    aws.Bool(true),
		KmsKeyId:            aws.String(keyARN),
	})
	if err != nil {
		t.Fatalf("create cluster %s: %v", id, err)
	}
	_, err = c.CreateDBInstance(ctx, &rds.CreateDBInstanceInput{
		DBInstanceIdentifier: aws.String(id + "-1"),
		DBClusterIdentifier:  aws.String(id),
		DBInstanceClass:      aws.String("db.r6g.large"),
		Engine:               aws.String("aurora-postgresql"),
	})
	if err != nil {
		t.Fatalf("create instance %s-1: %v", id, err)
	}
}

func keyState(t *testing.T, c *kms.Client, keyARN string) kmstypes.KeyState {
	t.Helper()
	out, err := c.DescribeKey(context.Background(), &kms.DescribeKeyInput{KeyId: aws.String(keyARN)})
	if err != nil {
		t.Fatalf("describe key: %v", err)
	}
	return out.KeyMetadata.KeyState
}

func liveClusterStatus(t *testing.T, c *rds.Client, id string) incident.ClusterStatus {
	t.Helper()
	st, err := clusterStatus(context.Background(), c, id)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestPlanSkipsClusterNowOnAnotherKey: a cluster deleted and created again under the same name
// with another key is not the incident's to start, though its name is on the incident.
func TestPlanSkipsClusterNowOnAnotherKey(t *testing.T) {
	ctx := context.Background()
	cfg := awstest.Config(t, awstest.Moto(t))
	kmsClient, rdsClient := kms.NewFromConfig(cfg), rds.NewFromConfig(cfg)
	mine, err := kmsClient.CreateKey(ctx, &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	other, err := kmsClient.CreateKey(ctx, &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	id := fmt.Sprintf("recreated-%d", time.Now().UnixNano())
	// Given by key ID, as moto keeps it: the plan must normalise it through DescribeKey.
	createCluster(t, rdsClient, id, aws.ToString(other.KeyMetadata.KeyId))
	if _, err := rdsClient.StopDBCluster(ctx, &rds.StopDBClusterInput{DBClusterIdentifier: aws.String(id)}); err != nil {
		t.Fatal(err)
	}
	inc := testIncident([]incident.Cluster{{Identifier: id, CanStop: true, Uses: []string{"storage"}}}, nil)
	inc.KeyARN = aws.ToString(mine.KeyMetadata.Arn)
	steps, err := New(kmsClient, rdsClient, nil, Options{}).Plan(ctx, inc)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range steps {
		if s.Kind == incident.StepStartDBCluster && (s.Runs() || !strings.Contains(s.Skip, "another key")) {
			t.Errorf("got %+v, want StartDBCluster skipped: the cluster is on another key now", s)
		}
	}
}
