package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/rds"

	"github.com/keywarden/keywarden/internal/awstest"
	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/remedy"
)

// rebootingRDS notes when RebootDBInstance has been called.
type rebootingRDS struct {
	remedy.RDSAPI
	rebooted *atomic.Bool
}

func (r rebootingRDS) RebootDBInstance(ctx context.Context, in *rds.RebootDBInstanceInput, o ...func(*rds.Options)) (*rds.RebootDBInstanceOutput, error) {
	out, err := r.RDSAPI.RebootDBInstance(ctx, in, o...)
	r.rebooted.Store(true)
	return out, err
}

// TestRebootEndUnrecordedFailsTheInvocation: DynamoDB failing (HTTP 500 through the fault
// proxy, every retry) when the Reboot instance run writes its end leaves the reboot reading
// running with nobody acting. That is not a warning: the invocation fails, so the
// RemediateErrorsAlarm (Lambda's Errors metric) sees it, and the error says so.
func TestRebootEndUnrecordedFailsTheInvocation(t *testing.T) {
	ctx := context.Background()
	proxy := awstest.NewFaultProxy(t, awstest.Moto(t))
	r := newRigAt(t, nil, proxy.URL)
	var rebooted atomic.Bool
	r.h.runner = remedy.New(r.kms, rebootingRDS{RDSAPI: r.rds, rebooted: &rebooted}, r.store, remedy.Options{WaitTimeout: 10 * time.Second})

	key, err := r.kms.CreateKey(ctx, &kms.CreateKeyInput{Description: aws.String(t.Name())})
	if err != nil {
		t.Fatal(err)
	}
	keyARN := aws.ToString(key.KeyMetadata.Arn)
	cluster := fmt.Sprintf("orders-%d", rand.Int32())
	if _, err := r.rds.CreateDBCluster(ctx, &rds.CreateDBClusterInput{DBClusterIdentifier: aws.String(cluster), Engine: aws.String("aurora-postgresql"),
		StorageEncrypted: aws.Bool(true), KmsKeyId: aws.String(keyARN), MasterUsername: aws.String("admin"), MasterUserPassword: aws.String("not-a-secret-1")}); err != nil {
		t.Fatal(err)
	}
	instance := cluster + "-1"
	if _, err := r.rds.CreateDBInstance(ctx, &rds.CreateDBInstanceInput{DBInstanceIdentifier: aws.String(instance), DBClusterIdentifier: aws.String(cluster),
		DBInstanceClass: aws.String("db.r6g.large"), Engine: aws.String("aurora-postgresql")}); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	inc, _, err := r.store.Open(ctx, incident.Incident{KeyARN: keyARN, KeyState: incident.KeyStateEnabled, Trigger: "DisableKey", LostAt: now.Add(-time.Hour),
		Clusters:  []incident.Cluster{{Identifier: cluster, Engine: "aurora-postgresql", Status: incident.StatusAvailable, CanStop: true, Uses: []string{"storage"}}},
		Instances: []incident.Instance{{Identifier: instance, ClusterIdentifier: cluster, Status: incident.StatusAvailable, LostKeyAccess: true, NeedsReboot: true}},
	}, incident.Entry{Source: "ev-reboot", Detail: "DisableKey"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.store.Update(ctx, inc.ID, func(i *incident.Incident) error {
		i.Remediation.State = incident.RemediationDone
		_, ok, err := i.ApproveReboot(instance, "U0APPROVR1", "click-reboot", now, 1, "reboot-1")
		if err == nil && !ok {
			err = errors.New("the reboot was not approved")
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}

	// Every DynamoDB write after the reboot fails without landing: the claim is written, the end
	// is not.
	proxy.Arm(&awstest.Fault{Mode: awstest.Answer, Times: -1, Status: http.StatusInternalServerError, ContentType: "application/x-amz-json-1.0",
		Body: []byte(`{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"DynamoDB is down"}`), Match: func(req *http.Request, _ []byte) bool {
			target := req.Header.Get("X-Amz-Target")
			return rebooted.Load() && (strings.HasSuffix(target, ".UpdateItem") || strings.HasSuffix(target, ".TransactWriteItems") || strings.HasSuffix(target, ".PutItem"))
		}})
	res, err := r.invoke(t, fmt.Sprintf(`{"incident_id":%q,"run_id":"reboot-1","approved_by":["U0APPROVR1"],"instance":%q}`, inc.ID, instance))
	if !rebooted.Load() {
		t.Fatalf("RebootDBInstance was not called (result %+v, error %v)", res, err)
	}
	if !errors.Is(err, remedy.ErrUnrecorded) || !strings.Contains(res.Error, "could not be recorded") {
		t.Fatalf("result %+v, error %v; want the invocation to fail with ErrUnrecorded", res, err)
	}
}
