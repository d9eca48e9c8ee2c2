package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/rds"

	"github.com/keywarden/keywarden/internal/awstest"
	"github.com/keywarden/keywarden/internal/blast"
	"github.com/keywarden/keywarden/internal/incident/dynamostore"
	"github.com/keywarden/keywarden/internal/intake"
	"github.com/keywarden/keywarden/internal/kmskey"
	"github.com/keywarden/keywarden/internal/page"
)

// TestKeyUnreadableIsCounted: KMS refusing DescribeKey (AccessDeniedException through the fault
// proxy: a key policy that does not let this account read the key) is acknowledged, never
// retried, so it is counted as the KeyUnreadable metric that template.yaml alarms on — not left
// to an ERROR line.
func TestKeyUnreadableIsCounted(t *testing.T) {
	ctx := context.Background()
	proxy := awstest.NewFaultProxy(t, awstest.Moto(t))
	cfg := awstest.Serial(awstest.Config(t, proxy.URL))
	ddb := dynamodb.NewFromConfig(cfg)
	table := fmt.Sprintf("incidents-%d", rand.Int64())
	if err := dynamostore.CreateTable(ctx, ddb, table); err != nil {
		t.Fatal(err)
	}
	kmsClient, rdsClient := kms.NewFromConfig(cfg), rds.NewFromConfig(cfg)
	key, err := kmsClient.CreateKey(ctx, &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	keys := kmskey.NewResolver(kmsClient)
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	var metrics bytes.Buffer
	h := newHandler(intake.New(keys, blast.New(rdsClient, keys, blast.WithoutClusterAutomatedBackups()), dynamostore.New(ddb, table), log), nil, log).
		withMetrics(page.NewMetrics(&metrics, "keywarden-test"))

	proxy.Arm(&awstest.Fault{Match: awstest.Op("DescribeKey"), Times: -1, Mode: awstest.Answer, Status: 400,
		Body: awstest.AccessDenied("not authorized to perform: kms:DescribeKey")})
	res, err := h.Handle(ctx, sample(t, "kms-disable-key.json", *key.KeyMetadata.KeyId))
	if err != nil {
		t.Fatalf("a key we may not read failed the event (it would be retried for nothing): %v", err)
	}
	if len(res.Outcomes) != 1 || res.Outcomes[0].Action != intake.ActionFailed {
		t.Fatalf("outcomes %+v, want one failed", res.Outcomes)
	}
	line := metrics.String()
	if !strings.Contains(line, `"KeyUnreadable":1`) || !strings.Contains(line, `"Stack":"keywarden-test"`) || !strings.Contains(line, *key.KeyMetadata.KeyId) {
		t.Fatalf("metric lines %q, want one KeyUnreadable data point naming the key", line)
	}
}
