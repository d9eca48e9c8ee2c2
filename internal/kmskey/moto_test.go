package kmskey

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/keywarden/keywarden/internal/awstest"
)

func TestMain(m *testing.M) { awstest.Main(m) }

// TestMotoResolver runs the resolver against moto's KMS: every reference form, live state
// after a scheduled deletion, aliases, and a missing alias.
func TestMotoResolver(t *testing.T) {
	ctx := context.Background()
	client := kms.NewFromConfig(awstest.Config(t, awstest.Moto(t)))

	key, err := client.CreateKey(ctx, &kms.CreateKeyInput{Description: aws.String("kmskey moto test")})
	if err != nil {
		t.Fatalf("create key: %v", err)
	}
	id, keyARN := aws.ToString(key.KeyMetadata.KeyId), aws.ToString(key.KeyMetadata.Arn)
	alias := fmt.Sprintf("alias/kmskey-test-%d", time.Now().UnixNano())
	if _, err := client.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String(alias), TargetKeyId: aws.String(id)}); err != nil {
		t.Fatalf("create alias: %v", err)
	}
	aliasARN := "arn:aws:kms:" + awstest.Region + ":" + awstest.AccountID + ":" + alias

	r := NewResolver(client)
	for _, ref := range []string{id, keyARN, alias, aliasARN} {
		got, err := r.ARN(ctx, ref)
		if err != nil || got != keyARN {
			t.Errorf("ARN(%q) = %q, %v; want %q", ref, got, err, keyARN)
		}
	}
	if _, err := r.ARN(ctx, alias+"-missing"); !errors.Is(err, ErrNotFound) {
		t.Errorf("ARN(missing alias) error = %v, want ErrNotFound", err)
	}
	if IDFromARN(keyARN) != id {
		t.Errorf("IDFromARN(%q) = %q, want %q", keyARN, IDFromARN(keyARN), id)
	}

	if got, err := r.Alias(ctx, keyARN); err != nil || got != alias {
		t.Errorf("Alias = %q, %v; want %q", got, err, alias)
	}

	// Describe is live: it sees the scheduled deletion (moto needs the key ID for writes).
	if _, err := client.ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{KeyId: aws.String(IDFromARN(keyARN)), PendingWindowInDays: aws.Int32(7)}); err != nil {
		t.Fatalf("schedule key deletion: %v", err)
	}
	k, err := r.Describe(ctx, alias)
	if err != nil {
		t.Fatal(err)
	}
	if k.State != "PendingDeletion" || k.DeletionDate == nil || !k.CustomerManaged() || k.ARN != keyARN {
		t.Errorf("Describe after ScheduleKeyDeletion = %+v, want PendingDeletion with a date, customer managed", k)
	}

	keys, err := r.KeysInStore(ctx, "cks-none")
	if err != nil || len(keys) != 0 {
		t.Errorf("KeysInStore(cks-none) = %v, %v; want none", keys, err)
	}
}
