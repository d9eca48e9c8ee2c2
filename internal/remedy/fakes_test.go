package remedy

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	kmstypes "github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/aws-sdk-go-v2/service/rds"
	rdstypes "github.com/aws/aws-sdk-go-v2/service/rds/types"

	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/incident/dynamostore"
)

// The real clients and store fit the interfaces as they are.
var (
	_ KMSAPI    = (*kms.Client)(nil)
	_ RDSAPI    = (*rds.Client)(nil)
	_ Incidents = (*dynamostore.Store)(nil)
)

// RDS statuses as the fakes keep them.
const (
	statusAvailable   = string(incident.StatusAvailable)
	statusStarting    = string(incident.StatusStarting)
	statusStopped     = string(incident.StatusStopped)
	statusRebooting   = string(incident.StatusRebooting)
	statusRecoverable = string(incident.StatusRecoverable)
	statusTerminal    = string(incident.StatusTerminal)
)

const (
	testKeyID  = "1234abcd-12ab-34cd-56ef-1234567890ab"
	testKeyARN = "arn:aws:kms:us-east-1:111122223333:key/" + testKeyID
)

type fakeKMS struct {
	describeKey       func(*kms.DescribeKeyInput) (*kms.DescribeKeyOutput, error)
	cancelKeyDeletion func(*kms.CancelKeyDeletionInput) (*kms.CancelKeyDeletionOutput, error)
	enableKey         func(*kms.EnableKeyInput) (*kms.EnableKeyOutput, error)
}

func (f *fakeKMS) DescribeKey(_ context.Context, in *kms.DescribeKeyInput, _ ...func(*kms.Options)) (*kms.DescribeKeyOutput, error) {
	return f.describeKey(in)
}

func (f *fakeKMS) CancelKeyDeletion(_ context.Context, in *kms.CancelKeyDeletionInput, _ ...func(*kms.Options)) (*kms.CancelKeyDeletionOutput, error) {
	return f.cancelKeyDeletion(in)
}

func (f *fakeKMS) EnableKey(_ context.Context, in *kms.EnableKeyInput, _ ...func(*kms.Options)) (*kms.EnableKeyOutput, error) {
	return f.enableKey(in)
}

type fakeRDS struct {
	describeDBClusters  func(*rds.DescribeDBClustersInput) (*rds.DescribeDBClustersOutput, error)
	startDBCluster      func(*rds.StartDBClusterInput) (*rds.StartDBClusterOutput, error)
	describeDBInstances func(*rds.DescribeDBInstancesInput) (*rds.DescribeDBInstancesOutput, error)
	rebootDBInstance    func(*rds.RebootDBInstanceInput) (*rds.RebootDBInstanceOutput, error)
}

func (f *fakeRDS) DescribeDBClusters(_ context.Context, in *rds.DescribeDBClustersInput, _ ...func(*rds.Options)) (*rds.DescribeDBClustersOutput, error) {
	return f.describeDBClusters(in)
}

func (f *fakeRDS) StartDBCluster(_ context.Context, in *rds.StartDBClusterInput, _ ...func(*rds.Options)) (*rds.StartDBClusterOutput, error) {
	return f.startDBCluster(in)
}

func (f *fakeRDS) DescribeDBInstances(_ context.Context, in *rds.DescribeDBInstancesInput, _ ...func(*rds.Options)) (*rds.DescribeDBInstancesOutput, error) {
	return f.describeDBInstances(in)
}

func (f *fakeRDS) RebootDBInstance(_ context.Context, in *rds.RebootDBInstanceInput, _ ...func(*rds.Options)) (*rds.RebootDBInstanceOutput, error) {
	return f.rebootDBInstance(in)
}

// world is a small stateful AWS built from the function-field fakes: it follows the transitions
// AWS documents (CancelKeyDeletion leaves the key Disabled, EnableKey is refused while deletion
// is pending, StartDBCluster only from stopped or recoverable) and counts every call. Tests
// replace single functions to inject failures.
type world struct {
	keyState kmstypes.KeyState
	// keyMissing makes DescribeKey answer NotFoundException (a deleted key).
	keyMissing bool
	// enableLag is how many DescribeKey calls after EnableKey still read Disabled (KMS is
	// eventually consistent).
	enableLag int
	clusters  map[string]string
	instances map[string]string
	// storageKeys maps a cluster to its KmsKeyId as DescribeDBClusters gives it; none when unset.
	storageKeys map[string]string
	calls       map[string]int
	kms         *fakeKMS
	rds         *fakeRDS
}

func newWorld(keyState kmstypes.KeyState, clusters, instances map[string]string) *world {
	w := &world{keyState: keyState, clusters: clusters, instances: instances, calls: map[string]int{}}
	if w.clusters == nil {
		w.clusters = map[string]string{}
	}
	if w.instances == nil {
		w.instances = map[string]string{}
	}
	lag := 0
	w.kms = &fakeKMS{
		describeKey: func(in *kms.DescribeKeyInput) (*kms.DescribeKeyOutput, error) {
			w.calls["DescribeKey"]++
			if w.keyMissing || (aws.ToString(in.KeyId) != testKeyARN && aws.ToString(in.KeyId) != testKeyID) {
				return nil, &kmstypes.NotFoundException{Message: aws.String("Key '" + aws.ToString(in.KeyId) + "' does not exist")}
			}
			state := w.keyState
			if lag > 0 {
				lag--
				state = kmstypes.KeyStateDisabled
			}
			md := &kmstypes.KeyMetadata{KeyId: aws.String(testKeyID), Arn: aws.String(testKeyARN), KeyState: state}
			if state == kmstypes.KeyStatePendingDeletion {
				md.DeletionDate = aws.Time(time.Date(2026, 3, 10, 0, 0, 0, 0, time.UTC))
			}
			return &kms.DescribeKeyOutput{KeyMetadata: md}, nil
		},
		cancelKeyDeletion: func(in *kms.CancelKeyDeletionInput) (*kms.CancelKeyDeletionOutput, error) {
			w.calls["CancelKeyDeletion"]++
			if err := w.checkWriteKeyID(in.KeyId); err != nil {
				return nil, err
			}
			if w.keyState != kmstypes.KeyStatePendingDeletion {
				return nil, &kmstypes.KMSInvalidStateException{Message: aws.String(testKeyARN + " is not pending deletion")}
			}
			w.keyState = kmstypes.KeyStateDisabled
			return &kms.CancelKeyDeletionOutput{KeyId: aws.String(testKeyARN)}, nil
		},
		enableKey: func(in *kms.EnableKeyInput) (*kms.EnableKeyOutput, error) {
			w.calls["EnableKey"]++
			if err := w.checkWriteKeyID(in.KeyId); err != nil {
				return nil, err
			}
			if w.keyState == kmstypes.KeyStatePendingDeletion {
				return nil, &kmstypes.KMSInvalidStateException{Message: aws.String(testKeyARN + " is pending deletion")}
			}
			w.keyState = kmstypes.KeyStateEnabled
			lag = w.enableLag
			return &kms.EnableKeyOutput{}, nil
		},
	}
	w.rds = &fakeRDS{
		describeDBClusters: func(in *rds.DescribeDBClustersInput) (*rds.DescribeDBClustersOutput, error) {
			w.calls["DescribeDBClusters"]++
			id := aws.ToString(in.DBClusterIdentifier)
			status, ok := w.clusters[id]
			if !ok {
				return nil, &rdstypes.DBClusterNotFoundFault{Message: aws.String("DBCluster " + id + " not found.")}
			}
			c := rdstypes.DBCluster{DBClusterIdentifier: aws.String(id), Status: aws.String(status)}
			if k, ok := w.storageKeys[id]; ok {
				c.KmsKeyId = aws.String(k)
			}
			return &rds.DescribeDBClustersOutput{DBClusters: []rdstypes.DBCluster{c}}, nil
		},
		startDBCluster: func(in *rds.StartDBClusterInput) (*rds.StartDBClusterOutput, error) {
			w.calls["StartDBCluster"]++
			id := aws.ToString(in.DBClusterIdentifier)
			status, ok := w.clusters[id]
			if !ok {
				return nil, &rdstypes.DBClusterNotFoundFault{Message: aws.String("DBCluster " + id + " not found.")}
			}
			if status != statusStopped && status != statusRecoverable {
				return nil, &rdstypes.InvalidDBClusterStateFault{Message: aws.String(fmt.Sprintf(
					"DbCluster %s is in %s state but expected it to be one of stopped, inaccessible-encryption-credentials-recoverable.", id, status))}
			}
			w.clusters[id] = statusStarting
			return &rds.StartDBClusterOutput{DBCluster: &rdstypes.DBCluster{DBClusterIdentifier: aws.String(id), Status: aws.String(statusStarting)}}, nil
		},
		describeDBInstances: func(in *rds.DescribeDBInstancesInput) (*rds.DescribeDBInstancesOutput, error) {
			w.calls["DescribeDBInstances"]++
			id := aws.ToString(in.DBInstanceIdentifier)
			status, ok := w.instances[id]
			if !ok {
				return nil, &rdstypes.DBInstanceNotFoundFault{Message: aws.String("DBInstance " + id + " not found.")}
			}
			return &rds.DescribeDBInstancesOutput{DBInstances: []rdstypes.DBInstance{{DBInstanceIdentifier: aws.String(id), DBInstanceStatus: aws.String(status)}}}, nil
		},
		rebootDBInstance: func(in *rds.RebootDBInstanceInput) (*rds.RebootDBInstanceOutput, error) {
			w.calls["RebootDBInstance"]++
			id := aws.ToString(in.DBInstanceIdentifier)
			if w.instances[id] != statusAvailable {
				return nil, &rdstypes.InvalidDBInstanceStateFault{Message: aws.String("DBInstance " + id + " is not available")}
			}
			w.instances[id] = statusRebooting
			return &rds.RebootDBInstanceOutput{DBInstance: &rdstypes.DBInstance{DBInstanceIdentifier: aws.String(id), DBInstanceStatus: aws.String(statusRebooting)}}, nil
		},
	}
	return w
}

// checkWriteKeyID insists on the bare key ID for KMS write calls, as moto does: the code under
// test must not depend on KMS accepting an ARN there.
func (w *world) checkWriteKeyID(id *string) error {
	if aws.ToString(id) != testKeyID {
		return &kmstypes.NotFoundException{Message: aws.String("write call with " + aws.ToString(id) + ", want the key ID")}
	}
	return nil
}

// writes counts the calls that change something.
func (w *world) writes() int {
	return w.calls["CancelKeyDeletion"] + w.calls["EnableKey"] + w.calls["StartDBCluster"] + w.calls["RebootDBInstance"]
}

// memStore is an in-memory Incidents: Update works on a deep copy and writes it only when
// mutate succeeds, like a conditional DynamoDB update.
type memStore struct {
	mu        sync.Mutex
	incidents map[string]incident.Incident
	// failUpdate, when set, fails an Update whose mutated incident it rejects (a crash or a
	// lost write).
	failUpdate func(incident.Incident) error
}

func newMemStore(incs ...incident.Incident) *memStore {
	s := &memStore{incidents: map[string]incident.Incident{}}
	for _, inc := range incs {
		s.incidents[inc.ID] = inc
	}
	return s
}

func (s *memStore) Get(_ context.Context, id string) (incident.Incident, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	inc, ok := s.incidents[id]
	if !ok {
		return incident.Incident{}, fmt.Errorf("incident %s not found", id)
	}
	return deepCopy(inc), nil
}

func (s *memStore) Update(_ context.Context, id string, mutate func(*incident.Incident) error) (incident.Incident, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.incidents[id]
	if !ok {
		return incident.Incident{}, fmt.Errorf("incident %s not found", id)
	}
	next := deepCopy(cur)
	if err := mutate(&next); err != nil {
		return cur, err
	}
	if s.failUpdate != nil {
		if err := s.failUpdate(next); err != nil {
			return cur, err
		}
	}
	next.Version++
	s.incidents[id] = next
	return deepCopy(next), nil
}

func (s *memStore) get(t *testing.T, id string) incident.Incident {
	t.Helper()
	inc, err := s.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return inc
}

func deepCopy(inc incident.Incident) incident.Incident {
	b, err := json.Marshal(inc)
	if err != nil {
		panic(err)
	}
	var out incident.Incident
	if err := json.Unmarshal(b, &out); err != nil {
		panic(err)
	}
	return out
}

// clock is a fake time source whose Sleep advances it.
type clock struct {
	now    time.Time
	sleeps []time.Duration
}

func newClock() *clock { return &clock{now: time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time { return c.now }

func (c *clock) Sleep(_ context.Context, d time.Duration) error {
	c.sleeps = append(c.sleeps, d)
	c.now = c.now.Add(d)
	return nil
}

func (w *world) runner(s Incidents, c *clock, opts Options) *Runner {
	opts.Now, opts.Sleep = c.Now, c.Sleep
	return New(w.kms, w.rds, s, opts)
}

// step is a recorded step as the tests compare it.
type step struct {
	Kind   incident.StepKind
	Target string
	Result incident.Result
	Detail string
}

// steps are the incident's recorded remediation steps, in order.
func steps(inc incident.Incident) []step {
	var out []step
	for _, s := range inc.Remediation.Steps {
		out = append(out, step{s.Kind, s.Target, s.Result, s.Detail})
	}
	return out
}

func ok(kind incident.StepKind, target string) step {
	return step{Kind: kind, Target: target, Result: incident.ResultOK}
}

func skipped(kind incident.StepKind, target, why string) step {
	return step{Kind: kind, Target: target, Result: incident.ResultSkipped, Detail: why}
}

func failed(kind incident.StepKind, target, detail string) step {
	return step{Kind: kind, Target: target, Result: incident.ResultFailed, Detail: detail}
}

// givenBack checks that a run gave inc back to the approvers: open, the run failed, a state
// entry saying so.
func givenBack(t *testing.T, inc incident.Incident) {
	t.Helper()
	e, _ := inc.LastEntry(incident.KindState)
	if inc.State != incident.StateOpen || inc.Remediation.State != incident.RemediationFailed || e.Result != incident.Result(incident.StateOpen) {
		t.Errorf("got state %s, remediation %s, last state entry %+v; want it given back (open, failed)", inc.State, inc.Remediation.State, e)
	}
}
