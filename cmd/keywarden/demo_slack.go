package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/rds"

	"github.com/keywarden/keywarden/internal/approval"
	"github.com/keywarden/keywarden/internal/incident"
	"github.com/keywarden/keywarden/internal/slacktest"
)

// The demo's Slack workspace: the approver may fix incidents, the stranger may not. The signing
// secret is the demo's own and signs requests exactly as Slack would.
const (
	demoApprover      = "U0APPROVR1"
	demoStranger      = "U0STRANGR1"
	demoSigningSecret = "demo-signing-secret-not-for-production"
	demoMention       = "<!subteam^S0ONCALL01>"
)

// slackEnv is what SlackActionFunction needs for the demo's clicks.
func slackEnv() map[string]string {
	return map[string]string{"SLACK_SIGNING_SECRET": demoSigningSecret, "APPROVERS": demoApprover}
}

// slackMessage shows the incident's message as the Slack stand-in received it.
func (d *demo) slackMessage(ctx context.Context) error {
	d.say("The on-call channel sees one message (recorded by the local Slack stand-in)")
	inc, err := d.store.OpenFor(ctx, d.keyARN)
	if err != nil {
		return err
	}
	rec, ok, err := d.latestMessage(inc)
	if err != nil || !ok {
		return fmt.Errorf("no Slack message for %s (err %v): is SLACK_API_URL pointing elsewhere?", inc.ID, err)
	}
	var b strings.Builder
	writeSlackRecord(&b, rec)
	fmt.Fprint(indent(d.out), b.String())
	return nil
}

// latestMessage is the newest posted or updated version of the incident's message.
func (d *demo) latestMessage(inc incident.Incident) (slacktest.Record, bool, error) {
	if inc.Slack == nil {
		return slacktest.Record{}, false, nil
	}
	records, err := d.stack.SlackRecords()
	if err != nil {
		return slacktest.Record{}, false, err
	}
	for i := len(records) - 1; i >= 0; i-- {
		r := records[i]
		if r.TS == inc.Slack.TS && r.ThreadTS == "" && (r.Method == "chat.postMessage" || r.Method == "chat.update") {
			return r, true, nil
		}
	}
	return slacktest.Record{}, false, nil
}

// auroraStops plays what Aurora does once it notices: the clusters that can stop stop (moto
// cannot enter inaccessible-encryption-credentials-recoverable; `stopped` stands in for it and
// needs the same StartDBCluster), and RDS reports RDS-EVENT-0419, which RdsEventFunction uses to
// refine the recoverable window.
func (d *demo) auroraStops(ctx context.Context) error {
	d.say("Aurora notices: the clusters stop, and RDS's RDS-EVENT-0419 reaches RdsEventFunction")
	for _, id := range []string{"orders-aurora-" + d.suffix, "billing-aurora-" + d.suffix} {
		if _, err := d.rds.StopDBCluster(ctx, &rds.StopDBClusterInput{DBClusterIdentifier: aws.String(id)}); err != nil {
			return fmt.Errorf("stop %s: %w", id, err)
		}
		fmt.Fprintf(d.out, "   %s stopped\n", id)
	}
	b, err := os.ReadFile(filepath.Join(d.stack.Dir(), "events", "rds-instance-key-access-lost-0419.json"))
	if err != nil {
		return err
	}
	// RDS noticed just now: both the envelope's time and the event's own Date.
	now := time.Now().UTC()
	event := strings.ReplaceAll(string(b), "orders-aurora", "orders-aurora-"+d.suffix)
	event = strings.ReplaceAll(event, "2026-03-10T14:37:12.905Z", now.Format("2006-01-02T15:04:05.000Z"))
	event = strings.ReplaceAll(event, "2026-03-10T14:37:12Z", now.Format(time.RFC3339))
	return d.emit(ctx, []byte(event))
}

// invoke runs a function and prints its result, failing the demo on a function error.
func (d *demo) invoke(ctx context.Context, fn string, event []byte, env map[string]string) error {
	start := time.Now()
	result, fnErr, err := d.stack.Invoke(ctx, fn, event, env)
	if err != nil {
		return err
	}
	if fnErr {
		return fmt.Errorf("%s failed: %s", fn, result)
	}
	fmt.Fprintf(d.out, "   %s answered in %s: %s\n", fn, time.Since(start).Round(time.Millisecond), truncateRunes(compactJSON(result), 300))
	return nil
}

func (d *demo) strangerClicks(ctx context.Context) error {
	d.say("Someone who is not an approver clicks “Re-enable key & restart clusters”")
	if err := d.click(ctx, demoStranger, "remediate"); err != nil {
		return err
	}
	return d.printEphemerals(demoStranger)
}

func (d *demo) approverClicks(ctx context.Context) error {
	d.say("An approver clicks it: verified, authorised, recorded, handed to RemediateFunction")
	if err := d.click(ctx, demoApprover, "remediate"); err != nil {
		return err
	}
	if err := d.printEphemerals(demoApprover); err != nil {
		return err
	}
	d.say("The same signed request replayed (or a second click) changes nothing")
	if err := d.replay(ctx); err != nil {
		return err
	}
	return d.printEphemerals(demoApprover)
}

// click sends SlackActionFunction the request Slack would send for a button on the incident's
// current message, signed with the app's signing secret.
func (d *demo) click(ctx context.Context, user, actionID string) error {
	inc, err := d.store.OpenFor(ctx, d.keyARN)
	if err != nil {
		return err
	}
	rec, ok, err := d.latestMessage(inc)
	if err != nil || !ok {
		return fmt.Errorf("no message to click on: %v", err)
	}
	value := ""
	for _, b := range rec.Buttons() {
		if b.ActionID == actionID {
			value = b.Value
		}
	}
	if value == "" {
		return fmt.Errorf("the message has no %s button", actionID)
	}
	payload, err := json.Marshal(map[string]any{
		"type": "block_actions", "trigger_id": "demo-trigger",
		"user":      map[string]string{"id": user, "username": strings.ToLower(user)},
		"team":      map[string]string{"id": "T0KEYWARDEN"},
		"channel":   map[string]string{"id": rec.Channel},
		"container": map[string]string{"type": "message", "message_ts": rec.TS, "channel_id": rec.Channel},
		"message":   map[string]string{"ts": rec.TS},
		// Slack sends every click a hooks URL to answer on; the stand-in serves its own.
		"response_url": d.stack.SlackAPIURL() + "response/" + inc.ID,
		"actions": []map[string]string{{
			"action_id": actionID, "block_id": "incident_actions", "type": "button", "value": value,
			"action_ts": fmt.Sprintf("%d.000100", time.Now().Unix()),
		}},
	})
	if err != nil {
		return err
	}
	d.lastClick = signedRequest("payload=" + url.QueryEscape(string(payload)))
	env := slackEnv()
	maps.Copy(env, d.clickEnv)
	return d.invoke(ctx, "SlackActionFunction", d.lastClick, env)
}

func (d *demo) replay(ctx context.Context) error {
	return d.invoke(ctx, "SlackActionFunction", d.lastClick, slackEnv())
}

// signedRequest is a Lambda Function URL request (payload format 2.0) carrying body, signed
// as Slack signs: HMAC-SHA256 over v0:<timestamp>:<body>.
func signedRequest(body string) []byte {
	headers := map[string]string{"content-type": "application/x-www-form-urlencoded", "user-agent": "Slackbot 1.0 (+https://api.slack.com/robots)"}
	for k, v := range approval.Sign(demoSigningSecret, time.Now(), []byte(body)) {
		headers[strings.ToLower(k)] = v[0]
	}
	req, _ := json.Marshal(map[string]any{
		"version": "2.0", "routeKey": "$default", "rawPath": "/", "rawQueryString": "", "headers": headers,
		"requestContext": map[string]any{
			"http":      map[string]string{"method": "POST", "path": "/", "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1"},
			"timeEpoch": time.Now().UnixMilli(),
		},
		"body": body, "isBase64Encoded": false,
	})
	return req
}

// printEphemerals shows what only the clicking user saw since the last call.
func (d *demo) printEphemerals(user string) error {
	records, err := d.stack.SlackRecords()
	if err != nil {
		return err
	}
	for _, r := range records[min(d.seenRecords, len(records)):] {
		if r.Method == "chat.postEphemeral" && r.User == user {
			fmt.Fprintf(d.out, "   only %s sees: %s\n", user, truncateRunes(r.Text, 200))
		}
	}
	d.seenRecords = len(records)
	return nil
}

// remediated waits for the asynchronous remediation and shows what it did.
func (d *demo) remediated(ctx context.Context) error {
	d.say("RemediateFunction (invoked asynchronously) re-enables the key and starts the clusters")
	deadline := time.Now().Add(2 * time.Minute)
	var inc incident.Incident
	for {
		var err error
		if inc, err = d.store.OpenFor(ctx, d.keyARN); err != nil {
			return err
		}
		if inc.State == incident.StateRemediating && startedAny(inc) {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("remediation did not finish within 2 minutes (state %s); see .local/services.log", inc.State)
		}
		time.Sleep(500 * time.Millisecond)
	}
	for _, e := range inc.Timeline {
		switch e.Kind {
		case incident.KindRemediationStep, incident.KindClick, incident.KindApproval, incident.KindRefusal, incident.KindState:
			fmt.Fprintf(d.out, "   %s  %-16s %s\n", e.At.Format("15:04:05"), e.Kind, truncateRunes(e.Text(), 110))
		}
	}
	key, err := d.kms.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: &d.keyID})
	if err != nil {
		return err
	}
	fmt.Fprintf(d.out, "   key state: %s\n", key.KeyMetadata.KeyState)
	for _, id := range d.clusters {
		out, err := d.rds.DescribeDBClusters(ctx, &rds.DescribeDBClustersInput{DBClusterIdentifier: aws.String(id)})
		if err != nil {
			return err
		}
		fmt.Fprintf(d.out, "   %-28s %s\n", id, aws.ToString(out.DBClusters[0].Status))
	}
	return nil
}

// startedAny reports whether the remediation has recorded a StartDBCluster step.
func startedAny(inc incident.Incident) bool {
	return slices.ContainsFunc(inc.Remediation.Steps, func(s incident.StepRecord) bool {
		return s.Kind == incident.StepStartDBCluster
	})
}

// resolved runs the reconciler, which sees the key Enabled and every cluster available.
func (d *demo) resolved(ctx context.Context) error {
	d.say("ReconcileFunction's next scheduled run sees the key Enabled and every cluster available")
	if err := d.invoke(ctx, "ReconcileFunction", []byte(scheduledEvent()), map[string]string{"ESCALATION_MENTION": demoMention}); err != nil {
		return err
	}
	all, err := d.store.List(ctx)
	if err != nil {
		return err
	}
	for _, inc := range all {
		if inc.KeyARN == d.keyARN {
			fmt.Fprintf(d.out, "   incident %s is %s\n", inc.ID, inc.State)
			if rec, ok, _ := d.latestMessage(inc); ok {
				var b strings.Builder
				writeSlackRecord(&b, rec)
				fmt.Fprint(indent(d.out), b.String())
			}
		}
	}
	return nil
}

// reminder opens a second incident whose key was disabled 6 days 20 hours ago, and lets the
// reconciler remind the channel — once, however many runs see it.
func (d *demo) reminder(ctx context.Context) error {
	d.say("Another key was disabled 6 days 20 hours ago; the reconciler reminds, louder, once")
	key, err := d.kms.CreateKey(ctx, &kms.CreateKeyInput{Description: aws.String("keywarden demo: payments")})
	if err != nil {
		return err
	}
	id := "payments-aurora-" + d.suffix
	if _, err := d.rds.CreateDBCluster(ctx, &rds.CreateDBClusterInput{
		DBClusterIdentifier: &id, Engine: aws.String("aurora-mysql"), StorageEncrypted: aws.Bool(true), KmsKeyId: key.KeyMetadata.Arn,
		MasterUsername: aws.String("demo"), MasterUserPassword: aws.String("demo-password-1"),
	}); err != nil {
		return err
	}
	if _, err := d.kms.DisableKey(ctx, &kms.DisableKeyInput{KeyId: key.KeyMetadata.KeyId}); err != nil {
		return err
	}
	saved := d.keyID
	d.keyID = *key.KeyMetadata.KeyId
	event, err := d.cloudTrailEvent("kms-disable-key.json", time.Now().Add(-(6*24*time.Hour + 20*time.Hour)).UTC())
	d.keyID = saved
	if err != nil {
		return err
	}
	if err := d.emit(ctx, event); err != nil {
		return err
	}
	before, err := d.stack.SlackRecords()
	if err != nil {
		return err
	}
	for range 2 {
		if err := d.invoke(ctx, "ReconcileFunction", []byte(scheduledEvent()), map[string]string{"ESCALATION_MENTION": demoMention}); err != nil {
			return err
		}
	}
	after, err := d.stack.SlackRecords()
	if err != nil {
		return err
	}
	for _, r := range after[len(before):] {
		if r.ThreadTS != "" && strings.Contains(r.Text, demoMention) {
			fmt.Fprintf(d.out, "   thread reply: %s\n", truncateRunes(r.Text, 240))
		}
	}
	return nil
}

// scheduledEvent is what an EventBridge schedule delivers.
func scheduledEvent() string {
	return fmt.Sprintf(`{"version":"0","id":"demo-%s","detail-type":"Scheduled Event","source":"aws.events","account":"123456789012","time":%q,"region":"us-east-1","resources":["arn:aws:events:us-east-1:123456789012:rule/keywarden-reconcile"],"detail":{}}`,
		randomSuffix(), time.Now().UTC().Format(time.RFC3339))
}

func truncateRunes(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n]) + "…"
	}
	return s
}
