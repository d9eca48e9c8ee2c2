package blast

import (
	"context"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/rds"

	"github.com/keywarden/keywarden/internal/kmskey"
)

// TestMotoBlueGreenCannotStop: a cluster that is the source of a blue/green deployment cannot
// stop, so it gets no recoverable window, and says why; a cluster outside it still can.
func TestMotoBlueGreenCannotStop(t *testing.T) {
	env := newMotoEnv(t)
	ctx := context.Background()
	_, keyARN, _, _ := env.key(t)
	blue, other := uniqueName("blue"), uniqueName("plain")
	for _, c := range []string{blue, other} {
		env.cluster(t, &rds.CreateDBClusterInput{DBClusterIdentifier: aws.String(c), KmsKeyId: aws.String(keyARN)})
	}
	out, err := env.rds.DescribeDBClusters(ctx, &rds.DescribeDBClustersInput{DBClusterIdentifier: aws.String(blue)})
	if err != nil {
		t.Fatal(err)
	}
	name := uniqueName("upgrade")
	if _, err := env.rds.CreateBlueGreenDeployment(ctx, &rds.CreateBlueGreenDeploymentInput{
		BlueGreenDeploymentName: aws.String(name), Source: out.DBClusters[0].DBClusterArn, TargetEngineVersion: aws.String("16.4"),
	}); err != nil {
		t.Fatalf("create blue/green deployment: %v", err)
	}
	got, err := New(env.rds, kmskey.NewResolver(env.kms), WithoutClusterAutomatedBackups()).Find(ctx, keyARN)
	if err != nil {
		t.Fatalf("Find: %v", err)
	}
	seen := 0
	for _, c := range got.Clusters {
		switch c.Identifier {
		case blue:
			seen++
			if c.CanStop || !strings.Contains(c.CannotStopReason, "blue/green deployment "+name) {
				t.Errorf("%s: can stop %v (%q), want not, naming deployment %s", c.Identifier, c.CanStop, c.CannotStopReason, name)
			}
		case other:
			seen++
			if !c.CanStop {
				t.Errorf("%s: cannot stop (%q), want it can", c.Identifier, c.CannotStopReason)
			}
		}
	}
	if seen != 2 {
		t.Errorf("got clusters %+v, want %s and %s", got.Clusters, blue, other)
	}
}
