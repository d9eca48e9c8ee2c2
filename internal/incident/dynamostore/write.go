package dynamostore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/keywarden/keywarden/internal/incident"
)

// Transaction limits: TransactWriteItems takes at most 100 actions and 4 MB
// (https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_TransactWriteItems.html);
// maxTxBytes leaves room for the request's own overhead. BatchWriteItem takes at most 25 puts
// or deletes (https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_BatchWriteItem.html).
const (
	maxTxBytes   = 3 << 20
	maxBatchSize = 25
	// batchWorkers is how many BatchWriteItem calls a batched write keeps in flight.
	batchWorkers = 4
	// leaseMargin is how much of its lease a batched write keeps in hand: it makes no further
	// call with less left, so none of its writes lands after the lease ended.
	leaseMargin = 20 * time.Second
)

// plan is what one write stores: the changed children, the deleted ones, the new entries and
// the head.
type plan struct {
	puts    []child  // dependents and steps, new or changed
	deletes []string // sort keys of removed dependents and steps
	entries []child  // new timeline entries
	fresh   []incident.Entry
	changed bool
	headDoc string
}

func (p *plan) childCount() int { return len(p.puts) + len(p.deletes) + len(p.entries) }

// clone copies inc's slices, so mutate's changes to their elements cannot reach the snapshot.
func clone(inc incident.Incident) incident.Incident {
	inc.Clusters = slices.Clone(inc.Clusters)
	inc.Instances = slices.Clone(inc.Instances)
	inc.Snapshots = slices.Clone(inc.Snapshots)
	inc.OtherEngines = slices.Clone(inc.OtherEngines)
	inc.Timeline = slices.Clone(inc.Timeline)
	inc.Approvals = slices.Clone(inc.Approvals)
	inc.Remediation.Steps = slices.Clone(inc.Remediation.Steps)
	inc.Remediation.ApprovedBy = slices.Clone(inc.Remediation.ApprovedBy)
	if inc.Slack != nil {
		ref := *inc.Slack
		inc.Slack = &ref
	}
	return inc
}

// prepare diffs next against cur. New timeline entries (IDs cur does not have; an entry added
// without an ID gets the model's content ID) are numbered after cur's TimelineSeq in timeline
// order and stamped with now when they have no time; next's timeline becomes cur's entries and
// the new ones, sorted.
func prepare(cur *snapshot, next *incident.Incident, now time.Time) (*plan, error) {
	known := func(id string) bool { return cur.entries[id] || cur.refusals[id] }
	var fresh []incident.Entry
	seen := map[string]bool{}
	for _, e := range next.Timeline {
		if e.ID != "" && known(e.ID) {
			continue
		}
		if e.ID == "" {
			var tmp incident.Incident
			tmp.AddEntry(e)
			e.ID = tmp.Timeline[0].ID
		}
		if known(e.ID) || seen[e.ID] {
			continue
		}
		seen[e.ID] = true
		fresh = append(fresh, e)
	}
	seq := cur.inc.TimelineSeq
	p := &plan{}
	for _, e := range fresh {
		seq++
		e.Seq = seq
		if e.At.IsZero() {
			e.At = now
		}
		e.At = e.At.UTC()
		c, err := entryChild(e)
		if err != nil {
			return nil, err
		}
		p.fresh = append(p.fresh, e)
		p.entries = append(p.entries, c)
	}
	next.TimelineSeq = seq
	next.Timeline = append(slices.Clone(cur.inc.Timeline), p.fresh...)
	incident.SortTimeline(next.Timeline)
	if len(next.Timeline) == 0 {
		next.Timeline = nil
	}

	kids, err := children(next)
	if err != nil {
		return nil, err
	}
	for i := 0; i < len(kids); {
		j := i
		for j < len(kids) && kids[j].kind == kids[i].kind {
			j++
		}
		positions(kids[i:j], cur.children)
		i = j
	}
	want := map[string]bool{}
	for _, c := range kids {
		want[c.sk] = true
		if st, ok := cur.children[c.sk]; ok && st.doc == c.doc && st.pos == c.pos {
			continue
		}
		p.puts = append(p.puts, c)
	}
	for sk := range cur.children {
		if !want[sk] {
			p.deletes = append(p.deletes, sk)
		}
	}
	slices.Sort(p.deletes)
	for _, c := range slices.Concat(p.puts, p.entries) {
		if len(c.doc) > maxItemBytes-2048 {
			return nil, fmt.Errorf("%s is %d bytes of JSON, too big for one DynamoDB item (400 KB)", c.sk, len(c.doc))
		}
	}
	hd, err := headDoc(next)
	if err != nil {
		return nil, fmt.Errorf("encode head: %w", err)
	}
	p.changed = hd != cur.headJSON || p.childCount() > 0
	return p, nil
}

// checkIdentity refuses changes the item layout depends on.
func checkIdentity(prev, next *incident.Incident) error {
	if next.ID != prev.ID || next.KeyARN != prev.KeyARN || next.Version != prev.Version {
		return errors.New("the change would alter the incident's ID, key ARN or version, which only the store sets")
	}
	if next.State == "" {
		return errors.New("the change leaves the incident without a state")
	}
	return nil
}

// stamp sets what the store owns on a new version.
func stamp(prevVersion int64, next *incident.Incident, now time.Time) {
	next.Version = prevVersion + 1
	next.UpdatedAt = now
	switch {
	case next.State.Closed() && next.ClosedAt == nil:
		next.ClosedAt = &now
	case !next.State.Closed():
		next.ClosedAt = nil
	}
	next.Count()
}

// apply runs mutate on a copy of cur and writes what changed, conditioned on cur's version. It
// returns errRetry when another writer got there first and errReread when it carried a legacy
// incident into this table (read again, then apply).
func (s *Store) apply(ctx context.Context, cur *snapshot, mutate func(*incident.Incident) error) (incident.Incident, error) {
	next := clone(cur.inc)
	if err := mutate(&next); err != nil {
		return incident.Incident{}, err
	}
	if err := checkIdentity(&cur.inc, &next); err != nil {
		return incident.Incident{}, err
	}
	now := s.clock()
	p, err := prepare(cur, &next, now)
	if err != nil {
		return incident.Incident{}, err
	}
	if !p.changed {
		return cur.inc, nil
	}
	if cur.legacy {
		if err := s.migrate(ctx, cur); err != nil {
			return incident.Incident{}, err
		}
		return incident.Incident{}, errReread
	}
	stamp(cur.inc.Version, &next, now)
	if p.headDoc, err = headDoc(&next); err != nil {
		return incident.Incident{}, fmt.Errorf("encode head: %w", err)
	}
	lock := s.lockOps(&cur.inc, &next, now)
	if p.childCount()+1+len(lock) <= s.maxTxItems && s.txBytes(p, &next) <= maxTxBytes {
		err = s.writeTx(ctx, cur, p, &next, lock)
	} else {
		err = s.writeBatched(ctx, cur, p, &next, lock)
	}
	if err != nil {
		return incident.Incident{}, err
	}
	return result(cur, p, &next)
}

// result is next as a read would return it: every value decoded from the JSON just written,
// or taken from the snapshot when unchanged.
func result(cur *snapshot, p *plan, next *incident.Incident) (incident.Incident, error) {
	var out incident.Incident
	if err := json.Unmarshal([]byte(p.headDoc), &out); err != nil {
		return incident.Incident{}, fmt.Errorf("decode head: %w", err)
	}
	out.Version = next.Version
	out.Slack, out.SlackPosted = next.Slack, next.SlackPosted
	changed := map[string]string{}
	for _, c := range p.puts {
		changed[c.sk] = c.doc
	}
	var err error
	if out.Clusters, err = canon(next.Clusters, kindCluster, func(c incident.Cluster) string { return dependentKey(c.ARN, c.Identifier) }, changed, cur.inc.Clusters, cur.children); err != nil {
		return incident.Incident{}, err
	}
	if out.Instances, err = canon(next.Instances, kindInstance, func(c incident.Instance) string { return dependentKey(c.ARN, c.Identifier) }, changed, cur.inc.Instances, cur.children); err != nil {
		return incident.Incident{}, err
	}
	if out.Snapshots, err = canon(next.Snapshots, kindSnapshot, func(c incident.Snapshot) string { return dependentKey(c.ARN, c.Identifier) }, changed, cur.inc.Snapshots, cur.children); err != nil {
		return incident.Incident{}, err
	}
	if out.OtherEngines, err = canon(next.OtherEngines, kindOther, func(c incident.Cluster) string { return dependentKey(c.ARN, c.Identifier) }, changed, cur.inc.OtherEngines, cur.children); err != nil {
		return incident.Incident{}, err
	}
	if out.Remediation.Steps, err = canon(next.Remediation.Steps, kindStep, func(c incident.StepRecord) string { return c.ID }, changed, cur.inc.Remediation.Steps, cur.children); err != nil {
		return incident.Incident{}, err
	}
	out.Timeline = next.Timeline
	out.SlackShown, out.SlackDelivery = cur.inc.SlackShown, incident.SlackDelivery{Reason: cur.inc.SlackDelivery.Reason}
	out.SettleSlackDelivery()
	return out, nil
}

func canon[T any](vals []T, kind string, keyOf func(T) string, changed map[string]string, prev []T, docs map[string]stored) ([]T, error) {
	if len(vals) == 0 {
		return nil, nil
	}
	out := make([]T, len(vals))
	for i, v := range vals {
		sk := childSK(kind, keyOf(v))
		if doc, ok := changed[sk]; ok {
			if err := json.Unmarshal([]byte(doc), &out[i]); err != nil {
				return nil, fmt.Errorf("decode %s: %w", sk, err)
			}
			continue
		}
		out[i] = prev[docs[sk].index]
	}
	return out, nil
}

// txBytes estimates the size of the one-transaction write of p.
func (s *Store) txBytes(p *plan, next *incident.Incident) int {
	n := len(p.headDoc) + 512
	for _, c := range p.puts {
		n += len(c.doc) + len(c.sk) + 128
	}
	for _, c := range p.entries {
		n += len(c.doc) + len(c.sk) + 128
	}
	return n + len(p.deletes)*(len(incidentPK(next.ID))+64)
}

// headPut is the Put of next's head over cur's: conditioned on cur's version, on no other
// writer's live lease (or, for a batched write, on its own lease token), and on the Slack
// attributes being what cur read, so a SetSlack that landed between the read and this write
// (it does not change the version) makes the write retry rather than be undone. (UpdateItem
// would leave those attributes alone without the extra condition, but moto 5.2.1 adds the old
// and the new size of an attribute when it checks an UpdateItem against the 400 KB item limit.)
func (s *Store) headPut(cur *snapshot, next *incident.Incident, doc string, commits []string, leaseToken string, now time.Time) (*types.Put, error) {
	item, err := checkedHead(next, doc, commits)
	if err != nil {
		return nil, err
	}
	names := map[string]string{"#v": attrVersion, "#sts": attrSlackTS}
	values := map[string]types.AttributeValue{":v": num(cur.inc.Version)}
	cond := "#v = :v AND "
	if leaseToken != "" {
		cond += "#lt = :lt AND "
		names["#lt"] = attrLeaseToken
		values[":lt"] = str(leaseToken)
	} else {
		cond += "(attribute_not_exists(#lu) OR #lu < :now) AND "
		names["#lu"] = attrLeaseUntil
		values[":now"] = num(now.UnixNano())
	}
	if cur.head.slackTS == "" {
		cond += "attribute_not_exists(#sts)"
	} else {
		cond += "#sts = :sts AND #sp = :sp"
		names["#sp"] = attrSlackPost
		values[":sts"] = str(cur.head.slackTS)
		values[":sp"] = num(cur.head.slackPost)
	}
	return &types.Put{
		TableName:                 aws.String(s.table),
		Item:                      item,
		ConditionExpression:       aws.String(cond),
		ExpressionAttributeNames:  names,
		ExpressionAttributeValues: values,
	}, nil
}

// checkedHead is headItem, refused with a clear error when it is over DynamoDB's item limit
// (moto does not check it on PutItem; DynamoDB would answer a ValidationException).
func checkedHead(inc *incident.Incident, doc string, commits []string) (map[string]types.AttributeValue, error) {
	item := headItem(inc, doc, commits)
	if n := itemSize(item); n > maxItemBytes {
		return nil, fmt.Errorf("the head of incident %s is %d bytes, over DynamoDB's 400 KB item limit", inc.ID, n)
	}
	return item, nil
}

// newHeadPut is the Put of the head of an incident this table does not have yet (a create or a
// migration): conditioned on no item at its key, so an ID drawn twice or a second migration
// loses.
func (s *Store) newHeadPut(inc *incident.Incident, doc string, commits []string) (types.TransactWriteItem, error) {
	item, err := checkedHead(inc, doc, commits)
	if err != nil {
		return types.TransactWriteItem{}, err
	}
	return types.TransactWriteItem{Put: &types.Put{
		TableName:                aws.String(s.table),
		Item:                     item,
		ConditionExpression:      aws.String("attribute_not_exists(#pk)"),
		ExpressionAttributeNames: map[string]string{"#pk": attrPK},
	}}, nil
}

// lockOps are the open-lock actions of a change from prev to next: closing releases the key's
// lock and reopening takes it again (while no legacy lock holds the key).
func (s *Store) lockOps(prev, next *incident.Incident, now time.Time) []types.TransactWriteItem {
	switch {
	case !prev.State.Closed() && next.State.Closed():
		return []types.TransactWriteItem{{Delete: &types.Delete{
			TableName:                 aws.String(s.table),
			Key:                       key(lockPK(next.KeyARN), skLock),
			ConditionExpression:       aws.String("attribute_not_exists(#pk) OR #id = :id"),
			ExpressionAttributeNames:  map[string]string{"#pk": attrPK, "#id": attrIncidentID},
			ExpressionAttributeValues: map[string]types.AttributeValue{":id": str(next.ID)},
		}}}
	case prev.State.Closed() && !next.State.Closed():
		ops := []types.TransactWriteItem{{Put: s.lockPut(next.KeyARN, next.ID, now)}}
		if s.legacy != "" {
			ops = append(ops, s.legacyLockFree(next.KeyARN))
		}
		return ops
	}
	return nil
}

func (s *Store) lockPut(keyARN, id string, at time.Time) *types.Put {
	return &types.Put{
		TableName: aws.String(s.table),
		Item: map[string]types.AttributeValue{
			attrPK:         str(lockPK(keyARN)),
			attrSK:         str(skLock),
			attrKind:       str(kindLock),
			attrIncidentID: str(id),
			attrKeyARN:     str(keyARN),
			attrOpenedAt:   str(at.UTC().Format(time.RFC3339Nano)),
		},
		ConditionExpression:                 aws.String("attribute_not_exists(#pk)"),
		ExpressionAttributeNames:            map[string]string{"#pk": attrPK},
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
	}
}

// childWrites are the transaction actions for p's children. Entries are conditioned on not
// being stored yet; an entry left by a batched write that never committed (it has w) may be
// overwritten.
func (s *Store) childWrites(pk string, p *plan, version int64) []types.TransactWriteItem {
	var ops []types.TransactWriteItem
	for _, c := range p.puts {
		ops = append(ops, types.TransactWriteItem{Put: &types.Put{TableName: aws.String(s.table), Item: c.item(pk, version, "")}})
	}
	for _, sk := range p.deletes {
		ops = append(ops, types.TransactWriteItem{Delete: &types.Delete{TableName: aws.String(s.table), Key: key(pk, sk)}})
	}
	for _, c := range p.entries {
		ops = append(ops, types.TransactWriteItem{Put: &types.Put{
			TableName:                aws.String(s.table),
			Item:                     c.item(pk, version, ""),
			ConditionExpression:      aws.String("attribute_not_exists(#sk) OR attribute_exists(#w)"),
			ExpressionAttributeNames: map[string]string{"#sk": attrSK, "#w": attrW},
		}})
	}
	return ops
}

// writeTx writes p in one transaction: head, lock actions, children.
func (s *Store) writeTx(ctx context.Context, cur *snapshot, p *plan, next *incident.Incident, lock []types.TransactWriteItem) error {
	put, err := s.headPut(cur, next, p.headDoc, cur.head.commits, "", next.UpdatedAt)
	if err != nil {
		return err
	}
	ops := append([]types.TransactWriteItem{{Put: put}}, lock...)
	ops = append(ops, s.childWrites(incidentPK(next.ID), p, next.Version)...)
	_, err = s.db.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: ops})
	return s.txOutcome(err, next, lock)
}

// txOutcome classifies a write's transaction error: the head's condition or a conflict is a
// lost race, an entry's condition is an entry already stored (both errRetry); the lock's
// condition is a key held by another incident.
func (s *Store) txOutcome(err error, next *incident.Incident, lock []types.TransactWriteItem) error {
	if err == nil {
		return nil
	}
	rs, ok := cancelReasons(err)
	switch {
	case !ok:
		return fmt.Errorf("write incident %s: %w", next.ID, err)
	case rs.at(0) == condFailed || rs.any(txConflict):
		return errRetry
	case len(lock) > 0 && rs.anyIn(1, 1+len(lock), condFailed):
		if lock[0].Delete != nil {
			// The lock names another incident: that cannot happen while every write goes
			// through the store. Leave the other incident's lock alone.
			return fmt.Errorf("close incident %s: the open lock of %s names another incident", next.ID, next.KeyARN)
		}
		return fmt.Errorf("reopen incident %s: another incident is open for %s: %w", next.ID, next.KeyARN, incident.ErrConflict)
	case rs.any(condFailed):
		return errRetry // an entry is stored already: read again, and the model dedupes it
	}
	return fmt.Errorf("write incident %s: %w", next.ID, err)
}

// writeBatched writes a change too large for one transaction (see the package doc): lease the
// head, batch the children, then commit the head with the lock actions.
func (s *Store) writeBatched(ctx context.Context, cur *snapshot, p *plan, next *incident.Incident, lock []types.TransactWriteItem) error {
	token := newToken()
	now := s.clock()
	until := now.Add(s.leaseFor)
	pk := incidentPK(next.ID)
	_, err := s.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:        aws.String(s.table),
		Key:              key(pk, skHead),
		UpdateExpression: aws.String("SET #lt = :lt, #lu = :lu"),
		// Its own token too: a lease whose answer was lost and that the SDK sent again.
		ConditionExpression:       aws.String("#v = :v AND (attribute_not_exists(#lu) OR #lu < :now OR #lt = :lt)"),
		ExpressionAttributeNames:  map[string]string{"#lt": attrLeaseToken, "#lu": attrLeaseUntil, "#v": attrVersion},
		ExpressionAttributeValues: map[string]types.AttributeValue{":lt": str(token), ":lu": num(until.UnixNano()), ":v": num(cur.inc.Version), ":now": num(now.UnixNano())},
	})
	var ccf *types.ConditionalCheckFailedException
	if errors.As(err, &ccf) {
		return errRetry
	}
	if err != nil {
		return fmt.Errorf("lease incident %s: %w", next.ID, err)
	}
	release := func() {
		// Best effort: a lease left behind only makes other writers wait until it ends.
		_, _ = s.db.UpdateItem(context.WithoutCancel(ctx), &dynamodb.UpdateItemInput{
			TableName:                 aws.String(s.table),
			Key:                       key(pk, skHead),
			UpdateExpression:          aws.String("REMOVE #lt, #lu"),
			ConditionExpression:       aws.String("#lt = :lt"),
			ExpressionAttributeNames:  map[string]string{"#lt": attrLeaseToken, "#lu": attrLeaseUntil},
			ExpressionAttributeValues: map[string]types.AttributeValue{":lt": str(token)},
		})
	}
	if err := s.batchWrite(ctx, s.batchRequests(pk, p, next.Version, token), until.Add(-leaseMargin)); err != nil {
		release()
		return fmt.Errorf("write the items of incident %s: %w", next.ID, err)
	}
	put, err := s.headPut(cur, next, p.headDoc, append(slices.Clone(cur.head.commits), token), token, now)
	if err != nil {
		release()
		return err
	}
	_, err = s.db.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{
		TransactItems: append([]types.TransactWriteItem{{Put: put}}, lock...),
	})
	if err != nil {
		release()
	}
	return s.txOutcome(err, next, lock)
}

// batchRequests are p's children as BatchWriteItem requests, each tagged with token.
func (s *Store) batchRequests(pk string, p *plan, version int64, token string) []types.WriteRequest {
	var reqs []types.WriteRequest
	for _, c := range p.puts {
		reqs = append(reqs, types.WriteRequest{PutRequest: &types.PutRequest{Item: c.item(pk, version, token)}})
	}
	for _, c := range p.entries {
		reqs = append(reqs, types.WriteRequest{PutRequest: &types.PutRequest{Item: c.item(pk, version, token)}})
	}
	for _, sk := range p.deletes {
		reqs = append(reqs, types.WriteRequest{DeleteRequest: &types.DeleteRequest{Key: key(pk, sk)}})
	}
	return reqs
}

// batchWrite stores reqs with BatchWriteItem, 25 a call and batchWorkers calls at a time,
// sending unprocessed items again with backoff: under throttling BatchWriteItem returns what it
// could not write as UnprocessedItems rather than failing
// (https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_BatchWriteItem.html). No
// call starts after deadline (zero: none). The first error stops the rest.
func (s *Store) batchWrite(ctx context.Context, reqs []types.WriteRequest, deadline time.Time) error {
	var chunks [][]types.WriteRequest
	for len(reqs) > 0 {
		n := min(maxBatchSize, len(reqs))
		chunks, reqs = append(chunks, reqs[:n]), reqs[n:]
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
		work  = make(chan []types.WriteRequest)
	)
	for range min(batchWorkers, len(chunks)) {
		wg.Go(func() {
			for chunk := range work {
				if err := s.batchChunk(ctx, chunk, deadline); err != nil {
					once.Do(func() { first = err; cancel() })
				}
			}
		})
	}
feed:
	for _, c := range chunks {
		select {
		case work <- c:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	if first == nil {
		first = ctx.Err() // the caller's context ended
	}
	return first
}

// batchChunk writes one BatchWriteItem's worth of requests.
func (s *Store) batchChunk(ctx context.Context, chunk []types.WriteRequest, deadline time.Time) error {
	for attempt := 0; ; attempt++ {
		if !deadline.IsZero() && s.clock().After(deadline) {
			return errors.New("out of time: the write did not finish within its lease")
		}
		out, err := s.db.BatchWriteItem(ctx, &dynamodb.BatchWriteItemInput{
			RequestItems: map[string][]types.WriteRequest{s.table: chunk},
		})
		if err != nil {
			return err
		}
		if chunk = out.UnprocessedItems[s.table]; len(chunk) == 0 {
			return nil
		}
		if attempt+1 >= s.maxAttempts {
			return fmt.Errorf("%d items still unprocessed after %d attempts", len(chunk), s.maxAttempts)
		}
		if err := s.backoff(ctx, attempt); err != nil {
			return err
		}
	}
}

// create writes inc as a new incident with delivery recorded, together with its key's open
// lock. When the lock is held, it returns the holder's incident ID instead.
func (s *Store) create(ctx context.Context, inc incident.Incident, delivery incident.Entry) (created incident.Incident, holder string, err error) {
	now := s.clock()
	inc.ID = incident.NewID(now)
	inc.Version = 0
	inc.OpenedAt = now
	inc.ClosedAt = nil
	inc.Deliveries = 0
	inc.TimelineSeq = 0
	inc.RecordDelivery(delivery)
	empty := &snapshot{children: map[string]stored{}}
	p, err := prepare(empty, &inc, now)
	if err != nil {
		return incident.Incident{}, "", fmt.Errorf("create incident: %w", err)
	}
	stamp(0, &inc, now)
	if p.headDoc, err = headDoc(&inc); err != nil {
		return incident.Incident{}, "", fmt.Errorf("create incident: encode head: %w", err)
	}
	pk := incidentPK(inc.ID)
	ops := []types.TransactWriteItem{{Put: s.lockPut(inc.KeyARN, inc.ID, now)}, {}}
	if s.legacy != "" {
		ops = append(ops, s.legacyLockFree(inc.KeyARN))
	}
	var commits []string
	batched := p.childCount()+len(ops) > s.maxTxItems || s.txBytes(p, &inc) > maxTxBytes
	var reqs []types.WriteRequest
	if batched {
		// Thousands of items are worth a look at the lock first: a burst of deliveries for
		// one key would otherwise write them once per delivery.
		if holder, err := s.lockHolder(ctx, inc.KeyARN); err == nil {
			return incident.Incident{}, holder, nil
		} else if !errors.Is(err, incident.ErrNotFound) {
			return incident.Incident{}, "", fmt.Errorf("create incident: %w", err)
		}
		// The children go first under a partition no head names yet; make sure no incident
		// has this ID (NewID's collisions are rare, not impossible).
		out, err := s.db.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(s.table), Key: key(pk, skHead), ConsistentRead: aws.Bool(true)})
		if err != nil {
			return incident.Incident{}, "", fmt.Errorf("create incident: %w", err)
		}
		if out.Item != nil {
			return incident.Incident{}, "", errRetry
		}
		token := newToken()
		commits = []string{token}
		reqs = s.batchRequests(pk, p, inc.Version, token)
		if err := s.batchWrite(ctx, reqs, time.Time{}); err != nil {
			return incident.Incident{}, "", fmt.Errorf("create incident: write its items: %w", err)
		}
	} else {
		ops = append(ops, s.childWrites(pk, p, inc.Version)...)
	}
	if ops[1], err = s.newHeadPut(&inc, p.headDoc, commits); err != nil {
		return incident.Incident{}, "", fmt.Errorf("create incident: %w", err)
	}
	_, err = s.db.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: ops})
	if err == nil {
		out, err := result(empty, p, &inc)
		return out, "", err
	}
	holder, err = s.createOutcome(ctx, err, inc)
	if holder == inc.ID {
		// Our own write: it landed but its answer was lost and the SDK sent it again. (The
		// SDK's ClientRequestToken makes DynamoDB answer such a retry with success within 10
		// minutes; this covers a retry outside that, and moto, which ignores the token.)
		out, err := result(empty, p, &inc)
		return out, "", err
	}
	if batched && holder != "" {
		s.discard(ctx, reqs) // another incident holds the key: nothing will name these items
	}
	return incident.Incident{}, holder, err
}

// createOutcome classifies a create transaction's error: the key's holder, or errRetry.
func (s *Store) createOutcome(ctx context.Context, err error, inc incident.Incident) (holder string, _ error) {
	rs, ok := cancelReasons(err)
	switch {
	case !ok:
		return "", fmt.Errorf("create incident: %w", err)
	case rs.at(0) == condFailed:
		id := stringAttr(rs.item(0), attrIncidentID)
		if id == "" {
			// No ALL_OLD item in the reason (a DynamoDB look-alike without it): read the lock.
			out, err := s.db.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(s.table), Key: key(lockPK(inc.KeyARN), skLock), ConsistentRead: aws.Bool(true)})
			if err != nil {
				return "", fmt.Errorf("create incident: read open lock: %w", err)
			}
			if id = stringAttr(out.Item, attrIncidentID); id == "" {
				return "", errRetry // closed between our write and this read
			}
		}
		return id, nil
	case s.legacy != "" && rs.at(2) == condFailed:
		id, err := s.legacyLockHolder(ctx, inc.KeyARN)
		if errors.Is(err, incident.ErrNotFound) {
			return "", errRetry
		}
		return id, err
	case rs.at(1) == condFailed, rs.any(txConflict), rs.any(condFailed):
		return "", errRetry // an ID collision (draw another) or a conflict
	}
	return "", fmt.Errorf("create incident: %w", err)
}

// discard deletes, best effort, the children a losing create wrote under a partition no head
// names; left behind they would only cost storage.
func (s *Store) discard(ctx context.Context, reqs []types.WriteRequest) {
	var dels []types.WriteRequest
	for _, r := range reqs {
		if r.PutRequest != nil {
			it := r.PutRequest.Item
			dels = append(dels, types.WriteRequest{DeleteRequest: &types.DeleteRequest{Key: map[string]types.AttributeValue{attrPK: it[attrPK], attrSK: it[attrSK]}}})
		}
	}
	_ = s.batchWrite(context.WithoutCancel(ctx), dels, time.Time{})
}

// Cancellation reason codes of TransactWriteItems.
const (
	condFailed = "ConditionalCheckFailed"
	txConflict = "TransactionConflict"
)

type reasons []types.CancellationReason

// cancelReasons returns a cancelled transaction's reasons, one per action ("None" for the
// actions that were fine).
func cancelReasons(err error) (reasons, bool) {
	var tce *types.TransactionCanceledException
	if !errors.As(err, &tce) {
		return nil, false
	}
	return tce.CancellationReasons, true
}

func (rs reasons) at(i int) string {
	if i < len(rs) {
		return aws.ToString(rs[i].Code)
	}
	return ""
}

func (rs reasons) item(i int) map[string]types.AttributeValue {
	if i < len(rs) {
		return rs[i].Item
	}
	return nil
}

func (rs reasons) any(code string) bool { return rs.anyIn(0, len(rs), code) }

func (rs reasons) anyIn(from, to int, code string) bool {
	for i := from; i < to && i < len(rs); i++ {
		if aws.ToString(rs[i].Code) == code {
			return true
		}
	}
	return false
}
