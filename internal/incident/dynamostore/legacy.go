package dynamostore

// The legacy layout is the one-item-per-incident table keywarden used before this package
// (hash key pk only):
//
//	incident#<id>   kind=incident   version (N), state, key_arn, opened_at, doc (the whole
//	                                incident's JSON), slack_channel, slack_ts, slack_posted (N)
//	open#<keyARN>   kind=open-lock  incident_id, key_arn
//
// With WithLegacyTable, an incident this table lacks is looked up there (Get, OpenFor through the
// legacy lock, Open through a ConditionCheck on the legacy lock in its create transaction, and
// List, ListActive and ForKey, which merge both tables, this one winning), converted (see
// convertLegacy), and carried into this table on its next write: migrate writes its children
// first, then one transaction Puts the new head (attribute_not_exists), Deletes the legacy item
// conditioned on its version, and moves the open lock when the incident is open. The write
// then proceeds on the new layout. A read never migrates, and a mutate that changes nothing
// leaves the incident where it is.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/keywarden/keywarden/internal/incident"
)

const legacyKindIncident = "incident"

func legacyKey(pk string) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{attrPK: str(pk)}
}

// legacyKinds maps the old timeline's kind strings to the typed kinds.
var legacyKinds = map[string]incident.Kind{
	"opened":      incident.KindState,
	"delivery":    incident.KindDelivery,
	"key-state":   incident.KindKeyChange,
	"cluster":     incident.KindClusterChange,
	"slack":       incident.KindSlackDelivery,
	"click":       incident.KindClick,
	"denied":      incident.KindRefusal,
	"remediation": incident.KindRemediationStep,
	"reminder":    incident.KindReminder,
	"closed":      incident.KindState,
	"note":        incident.KindNote,
	"elided":      incident.KindNote,
}

// convertLegacy reads a legacy incident item into the model, as a snapshot that diffs as
// unchanged against its own conversion.
//
// Old timeline entries had a kind string and free-text detail only. Each becomes an entry with
// ID "legacy:<n>" and Seq n (n counts from 1 in timeline order), its kind mapped to the typed
// kinds (opened and closed become KindState with Result open for the opening one, denied becomes
// KindRefusal, elided and unknown kinds KindNote) and its text kept as Detail; no Result is
// guessed from the text. The old slack_posted counted posted entries over the whole timeline,
// elided ones included: it becomes SlackPosted, and TimelineSeq starts at least there, so every
// entry added after the migration is above the posted mark and gets posted.
//
// Old approvals were timeline clicks, not typed: they cannot be counted safely, so a migrated
// incident starts a fresh approval round (no Approvals; anyone who approved before approves
// again). Its Remediation, which the old record did not have, starts at none.
func convertLegacy(item map[string]types.AttributeValue) (*snapshot, error) {
	var inc incident.Incident
	if err := json.Unmarshal([]byte(stringAttr(item, attrDoc)), &inc); err != nil {
		return nil, fmt.Errorf("decode legacy incident: %w", err)
	}
	v, err := numAttr(item, attrVersion)
	if err != nil {
		return nil, err
	}
	inc.Version = v
	if ts := stringAttr(item, attrSlackTS); ts != "" {
		inc.Slack = &incident.SlackRef{Channel: stringAttr(item, attrSlackChan), TS: ts}
		inc.SlackPosted = optNum(item, attrSlackPost)
	}
	for i := range inc.Timeline {
		e := &inc.Timeline[i]
		old := string(e.Kind)
		n := int64(i + 1)
		e.ID = "legacy:" + strconv.FormatInt(n, 10)
		e.Seq = n
		e.At = e.At.UTC()
		kind, ok := legacyKinds[old]
		if !ok {
			kind = incident.KindNote
		}
		e.Kind = kind
		switch old {
		case "opened":
			e.Result = incident.Result(incident.StateOpen)
		case "denied":
			e.Result = incident.ResultRefused
		}
	}
	inc.TimelineSeq = max(int64(len(inc.Timeline)), inc.SlackPosted)
	inc.Approvals = nil
	inc.ApprovalRound = 0
	if inc.Remediation.State == "" {
		inc.Remediation.State = incident.RemediationNone
	}
	inc.Count()
	incident.SortTimeline(inc.Timeline)
	if len(inc.Timeline) == 0 {
		inc.Timeline = nil
	}

	snap := &snapshot{inc: inc, children: map[string]stored{}, entries: map[string]bool{}, refusals: map[string]bool{}, legacy: true}
	snap.head.version = v
	kids, err := children(&inc)
	if err != nil {
		return nil, err
	}
	for _, c := range kids {
		snap.children[c.sk] = stored{doc: c.doc, pos: c.pos, index: c.pos/posStride - 1}
	}
	for _, e := range inc.Timeline {
		snap.entries[e.ID] = true
	}
	if snap.headJSON, err = headDoc(&snap.inc); err != nil {
		return nil, err
	}
	return snap, nil
}

// loadLegacy reads incident id from the legacy table, with the refusals this table already
// keeps for it (RecordRefusal never touches the legacy item).
func (s *Store) loadLegacy(ctx context.Context, id string) (*snapshot, error) {
	out, err := s.db.GetItem(ctx, &dynamodb.GetItemInput{
		TableName:      aws.String(s.legacy),
		Key:            legacyKey(incidentPK(id)),
		ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return nil, fmt.Errorf("get incident %s from the legacy table: %w", id, err)
	}
	if out.Item == nil || stringAttr(out.Item, attrKind) != legacyKindIncident {
		return nil, fmt.Errorf("get incident %s: %w", id, incident.ErrNotFound)
	}
	snap, err := s.legacySnapshot(ctx, out.Item)
	if err != nil {
		return nil, fmt.Errorf("get incident %s from the legacy table: %w", id, err)
	}
	return snap, nil
}

// legacySnapshot converts a legacy item and adds the refusals this table keeps for it.
func (s *Store) legacySnapshot(ctx context.Context, item map[string]types.AttributeValue) (*snapshot, error) {
	snap, err := convertLegacy(item)
	if err != nil {
		return nil, err
	}
	id := snap.inc.ID
	p := dynamodb.NewQueryPaginator(s.db, &dynamodb.QueryInput{
		TableName:                 aws.String(s.table),
		KeyConditionExpression:    aws.String("#pk = :pk AND begins_with(#sk, :refusal)"),
		ExpressionAttributeNames:  map[string]string{"#pk": attrPK, "#sk": attrSK},
		ExpressionAttributeValues: map[string]types.AttributeValue{":pk": str(incidentPK(id)), ":refusal": str(kindRefusal + "#")},
		ConsistentRead:            aws.Bool(true),
	})
	a := newAssembler(snap.inc, snap.head, "")
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("get refusals: %w", err)
		}
		for _, item := range page.Items {
			if err := a.add(item); err != nil {
				return nil, err
			}
		}
	}
	if len(a.timeline) > 0 {
		snap.inc.Timeline = append(snap.inc.Timeline, a.timeline...)
		incident.SortTimeline(snap.inc.Timeline)
		snap.refusals = a.snap.refusals
	}
	return snap, nil
}

// legacyLockHolder returns the incident the legacy table's open lock of keyARN names, or
// incident.ErrNotFound.
func (s *Store) legacyLockHolder(ctx context.Context, keyARN string) (string, error) {
	out, err := s.db.GetItem(ctx, &dynamodb.GetItemInput{
		TableName:      aws.String(s.legacy),
		Key:            legacyKey(lockPK(keyARN)),
		ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return "", fmt.Errorf("read legacy open lock: %w", err)
	}
	if id := stringAttr(out.Item, attrIncidentID); id != "" {
		return id, nil
	}
	return "", incident.ErrNotFound
}

// legacyLockFree is a transaction's check that no legacy incident holds keyARN.
func (s *Store) legacyLockFree(keyARN string) types.TransactWriteItem {
	return types.TransactWriteItem{ConditionCheck: &types.ConditionCheck{
		TableName:                aws.String(s.legacy),
		Key:                      legacyKey(lockPK(keyARN)),
		ConditionExpression:      aws.String("attribute_not_exists(#pk)"),
		ExpressionAttributeNames: map[string]string{"#pk": attrPK},
	}}
}

// setLegacySlack is SetSlack on an incident still in the legacy table. Its slack_posted becomes
// a Seq, which convertLegacy reads back as SlackPosted: the same number, since convertLegacy
// numbers entries from the posted count on.
func (s *Store) setLegacySlack(ctx context.Context, id string, in *dynamodb.UpdateItemInput) error {
	l := *in
	l.TableName = aws.String(s.legacy)
	l.Key = legacyKey(incidentPK(id))
	l.ExpressionAttributeValues[":kind"] = str(legacyKindIncident)
	_, err := s.db.UpdateItem(ctx, &l)
	var ccf *types.ConditionalCheckFailedException
	if errors.As(err, &ccf) {
		out, gerr := s.db.GetItem(ctx, &dynamodb.GetItemInput{TableName: l.TableName, Key: l.Key, ConsistentRead: aws.Bool(true)})
		switch {
		case gerr != nil:
			return fmt.Errorf("set slack message of incident %s: %w", id, gerr)
		case out.Item != nil:
			return nil
		}
		return fmt.Errorf("set slack message of incident %s: %w", id, incident.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("set slack message of legacy incident %s: %w", id, err)
	}
	return nil
}

// migrate carries the legacy incident cur into this table unchanged (same version): children
// first, then one transaction with the new head, the legacy item's conditional delete and the
// open lock's move. A batched migration tags its entries with a token derived from the incident
// and its legacy version, so two invocations migrating the same version at once write the same
// items and whichever transaction wins commits them. It returns errRetry when the legacy item
// changed or someone else migrated it first.
func (s *Store) migrate(ctx context.Context, cur *snapshot) error {
	inc := cur.inc
	pk := incidentPK(inc.ID)
	p := &plan{}
	kids, err := children(&inc)
	if err != nil {
		return fmt.Errorf("migrate incident %s: %w", inc.ID, err)
	}
	p.puts = kids
	for _, e := range inc.Timeline {
		if cur.refusals[e.ID] {
			continue
		}
		c, err := entryChild(e)
		if err != nil {
			return fmt.Errorf("migrate incident %s: %w", inc.ID, err)
		}
		p.entries = append(p.entries, c)
	}
	if p.headDoc, err = headDoc(&inc); err != nil {
		return fmt.Errorf("migrate incident %s: %w", inc.ID, err)
	}
	ops := []types.TransactWriteItem{{}, {Delete: &types.Delete{
		TableName:                 aws.String(s.legacy),
		Key:                       legacyKey(pk),
		ConditionExpression:       aws.String("#v = :v"),
		ExpressionAttributeNames:  map[string]string{"#v": attrVersion},
		ExpressionAttributeValues: map[string]types.AttributeValue{":v": num(inc.Version)},
	}}}
	if !inc.State.Closed() {
		mine := map[string]types.AttributeValue{":id": str(inc.ID)}
		lock := s.lockPut(inc.KeyARN, inc.ID, s.clock())
		lock.ConditionExpression = aws.String("attribute_not_exists(#pk) OR #id = :id")
		lock.ExpressionAttributeNames = map[string]string{"#pk": attrPK, "#id": attrIncidentID}
		lock.ExpressionAttributeValues = mine
		ops = append(ops, types.TransactWriteItem{Put: lock}, types.TransactWriteItem{Delete: &types.Delete{
			TableName:                 aws.String(s.legacy),
			Key:                       legacyKey(lockPK(inc.KeyARN)),
			ConditionExpression:       aws.String("attribute_not_exists(#pk) OR #id = :id"),
			ExpressionAttributeNames:  map[string]string{"#pk": attrPK, "#id": attrIncidentID},
			ExpressionAttributeValues: mine,
		}})
	}
	var commits []string
	if p.childCount()+len(ops) > s.maxTxItems || s.txBytes(p, &inc) > maxTxBytes {
		token := "legacy-" + inc.ID + "-v" + strconv.FormatInt(inc.Version, 10)
		commits = []string{token}
		if err := s.batchWrite(ctx, s.batchRequests(pk, p, inc.Version, token), time.Time{}); err != nil {
			return fmt.Errorf("migrate incident %s: write its items: %w", inc.ID, err)
		}
	} else {
		ops = append(ops, s.childWrites(pk, p, inc.Version)...)
	}
	if ops[0], err = s.newHeadPut(&inc, p.headDoc, commits); err != nil {
		return fmt.Errorf("migrate incident %s: %w", inc.ID, err)
	}
	_, err = s.db.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: ops})
	if err == nil {
		return nil
	}
	rs, ok := cancelReasons(err)
	switch {
	case !ok:
		return fmt.Errorf("migrate incident %s: %w", inc.ID, err)
	case !inc.State.Closed() && rs.at(2) == condFailed:
		return fmt.Errorf("migrate incident %s: another incident holds the open lock of %s: %w", inc.ID, inc.KeyARN, incident.ErrConflict)
	case rs.any(condFailed), rs.any(txConflict):
		return errRetry
	}
	return fmt.Errorf("migrate incident %s: %w", inc.ID, err)
}
