package main

import (
	"bytes"
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/rds"

	"github.com/keywarden/keywarden/internal/awstest"
	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/lifecycle"
	"github.com/keywarden/keywarden/internal/lifecycle/rdstrack"
)

// foreignKeyARN is a key of the central security account 444455556666: the workload account's
// clusters use it, and its key policy does not let the workload account describe it.
const foreignKeyARN = "arn:aws:kms:us-east-1:444455556666:key/0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"

// describeKeyOf matches KMS DescribeKey requests naming ref.
func describeKeyOf(ref string) func(*http.Request, []byte) bool {
	op := awstest.Op("DescribeKey")
	return func(r *http.Request, body []byte) bool { return op(r, body) && bytes.Contains(body, []byte(ref)) }
}

// proxied is a stack whose AWS calls go through a fault proxy in front of moto.
func proxied(t *testing.T) (*stack, *awstest.FaultProxy) {
	t.Helper()
	p := awstest.NewFaultProxy(t, awstest.Moto(t))
	return newStackAt(t, p.URL), p
}

// clusterOn creates an Aurora cluster whose storage key reference is keyRef, with instances
// <id>-1 and <id>-2.
func clusterOn(t *testing.T, s *stack, keyRef string) string { return s.cluster(t, keyRef) }

// TestCrossAccountKeyOpensIncident: RDS-EVENT-0419 from a cluster whose key lives in another
// account, DescribeKey denied (moto cannot refuse, the proxy answers AccessDeniedException as
// KMS does): the incident opens anyway, the key state is Unknown with why, the key's account is
// named, and the cluster keeps its 7-day window from the event.
func TestCrossAccountKeyOpensIncident(t *testing.T) {
	s, p := proxied(t)
	p.Arm(&awstest.Fault{Match: describeKeyOf("444455556666"), Times: -1, Mode: awstest.Answer, Status: 400,
		ContentType: "application/x-amz-json-1.1", Body: awstest.AccessDenied("User is not authorized to perform kms:DescribeKey on this resource because the resource policy does not allow it")})
	c := clusterOn(t, s, foreignKeyARN)
	raw := sample(t, "rds-instance-key-access-lost-0419-cross-account.json", c)
	res, err := s.handler.Handle(context.Background(), raw)
	if err != nil {
		t.Fatalf("handle: %v (a denied DescribeKey must not fail the event)", err)
	}
	if action(res) != rdstrack.ActionOpened {
		t.Fatalf("got %+v, want opened", res.Outcome)
	}
	inc := s.incident(t, foreignKeyARN)
	if inc.KeyState != incident.KeyStateUnknown || inc.KeyStateReason == "" {
		t.Errorf("got key state %q (%q), want Unknown with a reason", inc.KeyState, inc.KeyStateReason)
	}
	if inc.KeyAccount != "444455556666" || !inc.KeyForeign() {
		t.Errorf("got key account %q (foreign %v), want 444455556666", inc.KeyAccount, inc.KeyForeign())
	}
	at := sampleTime(t, raw)
	if inc.Deadline == nil || !inc.Deadline.Equal(at.Add(incident.RecoverableWindow)) {
		t.Errorf("got deadline %v, want 7 days after %v", inc.Deadline, at)
	}
	if len(inc.Clusters) != 1 || !lifecycle.Holding(&inc, c) || inc.Clusters[0].Recovered {
		t.Errorf("got clusters %+v, want %s holding lost key access", inc.Clusters, c)
	}
	if err := inc.Fixable(); err == nil {
		t.Errorf("Fixable: got nil, want the key's owner named")
	} else if want := "account 444455556666: its owner must enable it"; !bytes.Contains([]byte(err.Error()), []byte(want)) {
		t.Errorf("Fixable: got %q, want it to say %q", err, want)
	}
	if inc.SeverityAt(at) != incident.SeverityHigh {
		t.Errorf("got severity %s, want high", inc.SeverityAt(at))
	}
}

// TestKeyEnabledClusterLostOpensAndHolds: RDS-EVENT-0418 while DescribeKey reads Enabled (a key
// policy or grant shut RDS out): the incident opens, the cluster is not counted recovered and
// keeps its deadline, until RDS-EVENT-0420 says it is back.
func TestKeyEnabledClusterLostOpensAndHolds(t *testing.T) {
	s := newStack(t)
	keyID, keyARN := s.key(t)
	c := s.cluster(t, keyID)
	raw := sample(t, "rds-instance-key-access-lost-0418-key-enabled.json", c)
	if res := s.handle(t, raw); action(res) != rdstrack.ActionOpened {
		t.Fatalf("got %+v, want opened", res.Outcome)
	}
	inc := s.incident(t, keyARN)
	if inc.KeyState != incident.KeyStateEnabled || inc.State != incident.StateOpen {
		t.Fatalf("got key %s, incident %s, want Enabled and open", inc.KeyState, inc.State)
	}
	at := sampleTime(t, raw)
	if inc.Deadline == nil || !inc.Deadline.Equal(at.Add(incident.RecoverableWindow)) {
		t.Errorf("got deadline %v, want 7 days after %v", inc.Deadline, at)
	}
	for _, cl := range inc.Clusters {
		if cl.Recovered || !lifecycle.Holding(&inc, cl.Identifier) {
			t.Errorf("cluster %s: recovered %v, holding %v; want not recovered, holding", cl.Identifier, cl.Recovered, lifecycle.Holding(&inc, cl.Identifier))
		}
	}
	// A later 0420 for the instance brings it back: the incident resolves.
	back := sample(t, "rds-instance-key-access-restored-0420.json", c)
	back = bytes.ReplaceAll(back, []byte("2026-03-11T09:15:48.316Z"), []byte(at.Add(time.Hour).Format(time.RFC3339Nano)))
	if res := s.handle(t, back); action(res) != rdstrack.ActionResolved {
		t.Errorf("0420 after: got %+v, want resolved", res.Outcome)
	}
}

// TestDeletedKeyClusterLostOpens: RDS-EVENT-0419 for a same-account key DescribeKey no longer
// knows (the proxy answers NotFoundException as KMS does once the key is deleted; moto cannot
// delete a key): the incident opens, and says the key is deleted (closed as lost).
func TestDeletedKeyClusterLostOpens(t *testing.T) {
	s, p := proxied(t)
	keyID, keyARN := s.key(t)
	// Real RDS reports a cluster's storage key as its ARN (moto keeps the caller's form).
	c := s.cluster(t, keyARN)
	p.Arm(&awstest.Fault{Match: describeKeyOf(keyID), Times: -1, Mode: awstest.Answer, Status: 400,
		ContentType: "application/x-amz-json-1.1", Body: []byte(`{"__type":"NotFoundException","message":"Key '` + keyARN + `' does not exist"}`)})
	if res := s.handle(t, sample(t, "rds-instance-key-access-lost-0419-deleted-key.json", c)); res.Outcome == nil || res.Outcome.IncidentID == "" {
		t.Fatalf("got %+v, want an incident", res.Outcome)
	}
	inc := s.incident(t, keyARN)
	if inc.KeyState != incident.KeyStateDeleted || inc.State != incident.StateLost {
		t.Errorf("got key %s, incident %s; want Deleted, lost", inc.KeyState, inc.State)
	}
}

// TestOlderEventIsStale: RDS-EVENT-0420 arrives first, then a 0419 dated before it: the 0419 is
// stale and opens nothing for the healthy cluster.
func TestOlderEventIsStale(t *testing.T) {
	s := newStack(t)
	keyID, keyARN := s.key(t)
	c := s.cluster(t, keyID)
	if res := s.handle(t, sample(t, "rds-instance-key-access-restored-0420.json", c)); action(res) != rdstrack.ActionIgnored {
		t.Fatalf("0420 first: got %+v, want ignored", res.Outcome)
	}
	if res := s.handle(t, sample(t, "rds-instance-key-access-lost-0419-older.json", c)); action(res) != rdstrack.ActionStale {
		t.Fatalf("older 0419: got %+v, want stale", res.Outcome)
	}
	incs, err := s.store.ForKey(context.Background(), keyARN)
	if err != nil || len(incs) != 0 {
		t.Errorf("got %d incidents (%v), want none", len(incs), err)
	}
}

// TestInaccessibleStatusOpens: a cluster stop event whose live status reads
// inaccessible-encryption-credentials-recoverable is evidence of loss by itself.
func TestInaccessibleStatusOpens(t *testing.T) {
	s, p := proxied(t)
	keyID, keyARN := s.key(t)
	c := s.cluster(t, keyID)
	// moto cannot put a cluster in that state: answer its DescribeDBClusters with it.
	out, err := s.rds.DescribeDBClusters(context.Background(), &rds.DescribeDBClustersInput{DBClusterIdentifier: aws.String(c)})
	if err != nil {
		t.Fatal(err)
	}
	cl := out.DBClusters[0]
	body := []byte(`<DescribeDBClustersResponse xmlns="http://rds.amazonaws.com/doc/2014-10-31/"><DescribeDBClustersResult><DBClusters><DBCluster>` +
		`<DBClusterIdentifier>` + c + `</DBClusterIdentifier><DBClusterArn>` + aws.ToString(cl.DBClusterArn) + `</DBClusterArn>` +
		`<Engine>aurora-postgresql</Engine><EngineMode>provisioned</EngineMode><Status>inaccessible-encryption-credentials-recoverable</Status>` +
		`<StorageEncrypted>true</StorageEncrypted><KmsKeyId>` + keyARN + `</KmsKeyId></DBCluster></DBClusters></DescribeDBClustersResult></DescribeDBClustersResponse>`)
	p.Arm(&awstest.Fault{Match: func(r *http.Request, b []byte) bool {
		return bytes.Contains(b, []byte("Action=DescribeDBClusters")) && bytes.Contains(b, []byte("DBClusterIdentifier="+c))
	}, Times: -1, Mode: awstest.Answer, Status: 200, ContentType: "text/xml", Body: body})
	if _, err := s.kms.DisableKey(context.Background(), &kms.DisableKeyInput{KeyId: &keyID}); err != nil {
		t.Fatal(err)
	}
	if res := s.handle(t, sample(t, "rds-cluster-stopped-0150.json", c)); action(res) != rdstrack.ActionOpened {
		t.Fatalf("0150 with an inaccessible status: got %+v, want opened", res.Outcome)
	}
	inc := s.incident(t, keyARN)
	if !lifecycle.Holding(&inc, c) || inc.Deadline == nil {
		t.Errorf("got cluster %+v, deadline %v; want lost key access and a deadline", inc.Clusters[0], inc.Deadline)
	}
}

// TestCrossAccountKeyNotFoundIsUnknown: for a key of another account DescribeKey may answer
// NotFound (moto does, for any key outside the caller's account): deleted or not shared, only
// its owner can tell — the key is Unknown and the incident stays open, never closed as lost.
func TestCrossAccountKeyNotFoundIsUnknown(t *testing.T) {
	s := newStack(t)
	c := s.cluster(t, foreignKeyARN)
	if res := s.handle(t, sample(t, "rds-instance-key-access-lost-0419-cross-account.json", c)); action(res) != rdstrack.ActionOpened {
		t.Fatalf("got %+v, want opened", res.Outcome)
	}
	inc := s.incident(t, foreignKeyARN)
	if inc.KeyState != incident.KeyStateUnknown || inc.State != incident.StateOpen || inc.KeyAccount != "444455556666" {
		t.Errorf("got key %s (%q), incident %s, account %q; want Unknown, open, 444455556666", inc.KeyState, inc.KeyStateReason, inc.State, inc.KeyAccount)
	}
}
