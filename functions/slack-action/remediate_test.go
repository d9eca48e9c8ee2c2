package main

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	kmstypes "github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/aws-sdk-go-v2/service/rds"

	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/remedy"
	"github.com/keywarden/keywarden/internal/slackmessage"
)

func clusterStatus(tb testing.TB, r *rig, id string) string {
	tb.Helper()
	out, err := r.rds.DescribeDBClusters(context.Background(), &rds.DescribeDBClustersInput{DBClusterIdentifier: aws.String(id)})
	if err != nil {
		tb.Fatal(err)
	}
	return aws.ToString(out.DBClusters[0].Status)
}

// runRemediations does what Lambda does with the queued invokes: it runs RemediateFunction's
// domain call (remedy.Runner.Run, then the announce) for each recorded request.
// functions/remediate tests that function's handler itself with the same payload shape.
func (r *rig) runRemediations(t *testing.T) []incident.Incident {
	t.Helper()
	runner := remedy.New(r.kms, r.rds, r.store, remedy.Options{WaitTimeout: 10 * time.Second})
	var out []incident.Incident
	for _, req := range r.remediationRequests(t) {
		inc, _, err := runner.Run(context.Background(), req.IncidentID, strings.Join(req.ApprovedBy, ","))
		if err != nil {
			t.Fatalf("remediation: %v", err)
		}
		if inc.Remediation.RunID != req.RunID {
			t.Errorf("remediation ran as %q, want the approved run %q", inc.Remediation.RunID, req.RunID)
		}
		if err := r.ann.Announce(context.Background(), inc); err != nil {
			t.Fatalf("announce after remediation: %v", err)
		}
		out = append(out, inc)
	}
	return out
}

// TestClickRemediates: one approved click, handed off, re-enables the key and starts the
// stopped cluster, and only it; the record tells the whole story in typed fields, and every
// entry reached the thread once.
func TestClickRemediates(t *testing.T) {
	r := newRig(t, 1)
	sc := r.scenario(t)
	r.click(t, sc, approver, slackmessage.ActionRemediate, sc.inc.Version)
	if got := r.get(t, sc.inc.ID); got.State != incident.StateRemediating {
		t.Fatalf("state after the click: got %s, want remediating", got.State)
	}

	done := r.runRemediations(t)
	if len(done) != 1 {
		t.Fatalf("remediations run: got %d, want 1", len(done))
	}
	if st := keyState(t, r, sc.keyID); st != kmstypes.KeyStateEnabled {
		t.Errorf("key state: got %s, want Enabled", st)
	}
	if st := clusterStatus(t, r, sc.stopped); st != "available" && st != "starting" {
		t.Errorf("stopped cluster: got %s, want started", st)
	}
	got := r.get(t, sc.inc.ID)
	if len(got.Approvals) != 1 || got.Approvals[0].User != approver || !slices.Equal(got.Remediation.ApprovedBy, []string{approver}) {
		t.Errorf("approvals %+v, approved by %v, want %s's", got.Approvals, got.Remediation.ApprovedBy, approver)
	}
	ran := map[string]incident.Result{}
	for _, s := range got.Remediation.Steps {
		ran[string(s.Kind)+" "+s.Target] = s.Result
	}
	for step, want := range map[string]incident.Result{
		"EnableKey " + sc.keyARN:                           incident.ResultOK,
		"StartDBCluster " + sc.stopped:                     incident.ResultOK,
		string(incident.StepWaitEnabled) + " " + sc.keyARN: incident.ResultOK,
	} {
		if ran[step] != want {
			t.Errorf("step %s: got %q, want %q (steps %+v)", step, ran[step], want, got.Remediation.Steps)
		}
	}
	if res, ok := ran["StartDBCluster "+sc.running]; ok && res == incident.ResultOK {
		t.Errorf("the running cluster was started: %+v", got.Remediation.Steps)
	}
	if got.SlackPosted != got.TimelineSeq {
		t.Errorf("posted up to Seq %d of %d", got.SlackPosted, got.TimelineSeq)
	}
	if done[0].State != incident.StateRemediating {
		t.Errorf("state after the run: got %s, want remediating (RDS events mark it resolved)", done[0].State)
	}
}
