package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/rds"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/keywarden/keywarden/internal/incident"
)

// securityRole is a role in the central security account that owns the shared CMK. moto serves
// another account's resources to the credentials sts:AssumeRole returns for a role ARN in that
// account (aws-facts §8), so the demo plays both accounts against one moto.
const securityRole = "arn:aws:iam::444455556666:role/keywarden-demo-key-admin"

// crossAccount shows issue 9's common enterprise layout: the CMK lives in a central security
// account, the Aurora cluster and keywarden in the workload account. The key's owner disables
// it; no CloudTrail event reaches the workload account (DisableKey is recorded in the key's
// account only); the cluster reports RDS-EVENT-0419, and the incident opens anyway, naming the
// key's account and who must act.
func (d *demo) crossAccount(ctx context.Context) error {
	d.say("Cross-account: a cluster whose key lives in the security account 444455556666 loses it; only RDS-EVENT-0419 tells the workload account")
	creds, err := sts.NewFromConfig(d.cfg).AssumeRole(ctx, &sts.AssumeRoleInput{
		RoleArn: aws.String(securityRole), RoleSessionName: aws.String("keywarden-demo"),
	})
	if err != nil {
		return fmt.Errorf("assume the security account's role: %w", err)
	}
	security := d.cfg.Copy()
	c := creds.Credentials
	security.Credentials = credentials.NewStaticCredentialsProvider(aws.ToString(c.AccessKeyId), aws.ToString(c.SecretAccessKey), aws.ToString(c.SessionToken))
	securityKMS := kms.NewFromConfig(security)
	key, err := securityKMS.CreateKey(ctx, &kms.CreateKeyInput{Description: aws.String("keywarden demo: the security account's shared CMK")})
	if err != nil {
		return fmt.Errorf("create the security account's key: %w", err)
	}
	keyARN := aws.ToString(key.KeyMetadata.Arn)
	fmt.Fprintf(d.out, "   the security account's key: %s\n", keyARN)

	id := "payroll-aurora-" + d.suffix
	if _, err := d.rds.CreateDBCluster(ctx, &rds.CreateDBClusterInput{
		DBClusterIdentifier: &id, Engine: aws.String("aurora-postgresql"), StorageEncrypted: aws.Bool(true), KmsKeyId: &keyARN,
		MasterUsername: aws.String("demo"), MasterUserPassword: aws.String("demo-password-1"),
	}); err != nil {
		return fmt.Errorf("create cluster %s: %w", id, err)
	}
	if _, err := d.rds.CreateDBInstance(ctx, &rds.CreateDBInstanceInput{
		DBInstanceIdentifier: aws.String(id + "-1"), DBClusterIdentifier: &id,
		Engine: aws.String("aurora-postgresql"), DBInstanceClass: aws.String("db.r6g.large"),
	}); err != nil {
		return fmt.Errorf("create instance of %s: %w", id, err)
	}
	fmt.Fprintf(d.out, "   workload cluster %s uses it\n", id)
	if _, err := securityKMS.DisableKey(ctx, &kms.DisableKeyInput{KeyId: key.KeyMetadata.KeyId}); err != nil {
		return fmt.Errorf("disable the security account's key: %w", err)
	}
	fmt.Fprintln(d.out, "   the security account disables its key (its CloudTrail event stays in 444455556666)")

	b, err := os.ReadFile(filepath.Join(d.stack.Dir(), "events", "rds-instance-key-access-lost-0419-cross-account.json"))
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	event := strings.ReplaceAll(string(b), "orders-aurora", id)
	event = strings.ReplaceAll(event, "2026-03-12T08:21:40.118Z", now.Format("2006-01-02T15:04:05.000Z"))
	event = strings.ReplaceAll(event, "2026-03-12T08:21:40Z", now.Format(time.RFC3339))
	if err := d.emit(ctx, []byte(event)); err != nil {
		return err
	}

	inc, err := d.store.OpenFor(ctx, keyARN)
	if err != nil {
		return fmt.Errorf("no incident for the cross-account key %s: %w", keyARN, err)
	}
	w := indent(d.out)
	if err := printIncidents(w, []incident.Incident{inc}, time.Now()); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nkey_account %s, key_state %s (%s), severity %s\n", inc.KeyAccount, inc.KeyState, inc.KeyStateReason, inc.SeverityAt(time.Now()))
	if err := inc.Fixable(); err != nil {
		fmt.Fprintf(w, "who can act: %s\n", err)
	}
	if inc.KeyAccount != "444455556666" {
		return fmt.Errorf("the incident names key account %q, want 444455556666", inc.KeyAccount)
	}
	return nil
}
