package org_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/rds"

	"github.com/keywarden/keywarden/internal/awstest"
	"github.com/keywarden/keywarden/internal/blast"
	"github.com/keywarden/keywarden/internal/kmskey"
	"github.com/keywarden/keywarden/internal/org"
)

// TestMotoAcrossAccounts: the reconciler's listings in organization mode see the clusters of
// every account as one answer, and an account that cannot be listed fails the call naming it
// (a partial listing would read its clusters as deleted).
func TestMotoAcrossAccounts(t *testing.T) {
	endpoint := awstest.Moto(t)
	e := seed(t, endpoint)
	s := org.Settings{Enabled: true, Accounts: []string{security, workloadA, workloadB}, Concurrency: 2, ReadRole: org.ReadRoleName}
	across := org.NewAcrossAccounts(s, awstest.Config(t, endpoint), org.NewRoles(awstest.Config(t, endpoint), org.ReadRoleName))
	out, err := across.DescribeDBClusters(context.Background(), &rds.DescribeDBClustersInput{})
	if err != nil {
		t.Fatalf("DescribeDBClusters: %v", err)
	}
	var ids []string
	for _, c := range out.DBClusters {
		ids = append(ids, aws.ToString(c.DBClusterIdentifier))
	}
	for _, want := range []string{e.clusterA, e.clusterB, e.otherA} {
		if !slices.Contains(ids, want) {
			t.Errorf("clusters %v: missing %s", ids, want)
		}
	}
	insts, err := across.DescribeDBInstances(context.Background(), &rds.DescribeDBInstancesInput{})
	if err != nil || len(insts.DBInstances) < 2 {
		t.Errorf("DescribeDBInstances: %d instances, %v; want both workloads'", len(insts.DBInstances), err)
	}

	gate := awstest.NewRoleGate(t, endpoint, "arn:aws:iam::"+workloadB+":role/"+org.ReadRoleName)
	across = org.NewAcrossAccounts(s, awstest.Config(t, gate.URL), org.NewRoles(awstest.Config(t, gate.URL), org.ReadRoleName))
	if _, err := across.DescribeDBClusters(context.Background(), &rds.DescribeDBClustersInput{}); err == nil || !strings.Contains(err.Error(), workloadB) {
		t.Errorf("with %s's role refused: got %v, want an error naming it", workloadB, err)
	}
}

// TestMotoKeysInTheirAccount: keys are described in the account that owns them, through the
// read role; a key of an account whose role cannot be assumed is denied (permanent), naming it.
func TestMotoKeysInTheirAccount(t *testing.T) {
	endpoint := awstest.Moto(t)
	e := seed(t, endpoint)
	gate := awstest.NewRoleGate(t, endpoint)
	cfg := awstest.Config(t, gate.URL)
	keys := org.NewKeys(kmskey.NewResolver(nil), org.NewRoles(cfg, org.ReadRoleName))
	k, err := keys.Describe(context.Background(), e.keyARN)
	if err != nil || k.ARN != e.keyARN {
		t.Fatalf("Describe in the security account: %+v, %v", k, err)
	}
	gate.Deny("arn:aws:iam::" + workloadA + ":role/" + org.ReadRoleName)
	_, err = keys.Describe(context.Background(), strings.Replace(e.keyARN, security, workloadA, 1))
	if !errors.Is(err, kmskey.ErrDenied) || !strings.Contains(err.Error(), workloadA) {
		t.Errorf("key of an unreachable account: got %v, want ErrDenied naming %s", err, workloadA)
	}

	// The reconciler's FindMany over the organisation: an incomplete search is an error naming
	// the account, and leaves the key out.
	many := org.ManyFinder{Finder: org.NewRunFinder(org.Settings{Enabled: true, Accounts: []string{workloadA, workloadB}, Concurrency: 2},
		cfg, org.NewRoles(cfg, org.ReadRoleName), blast.WithoutClusterAutomatedBackups())}
	radii, err := many.FindMany(context.Background(), []string{e.keyARN})
	var ie *org.IncompleteError
	if !errors.As(err, &ie) || len(radii) != 0 || ie.Failed[0].Account != workloadA {
		t.Errorf("FindMany with %s unreachable: %v, %v; want an IncompleteError naming it", workloadA, radii, err)
	}
}
