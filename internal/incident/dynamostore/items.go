package dynamostore

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/keywarden/keywarden/internal/incident"
)

// Attribute names (see the layout table in the package doc).
const (
	attrPK         = "pk"
	attrSK         = "sk"
	attrKind       = "kind"
	attrVersion    = "version"
	attrState      = "state"
	attrKeyARN     = "key_arn"
	attrOpenedAt   = "opened_at"
	attrDoc        = "doc"
	attrPos        = "pos"
	attrSeq        = "seq"
	attrCount      = "count"
	attrV          = "v"
	attrW          = "w"
	attrCommits    = "commits"
	attrLeaseToken = "lease_token"
	attrLeaseUntil = "lease_until"
	attrIncidentID = "incident_id"
	attrSlackChan  = "slack_channel"
	attrSlackTS    = "slack_ts"
	attrSlackPost  = "slack_posted"
	attrEventName  = "event_name"
	attrAt         = "at"
	attrActor      = "actor"
	attrNote       = "note"
	attrClaimedAt  = "claimed_at"
	attrClaimToken = "claim_token"
	attrSources    = "sources"
	attrShown      = "shown"
	attrReason     = "reason"
)

// Sort keys of the singleton items, and the kind attribute's values.
const (
	skHead     = "head"
	skLock     = "lock"
	skSighting = "sighting"
	skClaim    = "claim"
	skSlack    = "slack"

	kindHead     = "head"
	kindCluster  = "cluster"
	kindInstance = "instance"
	kindSnapshot = "snapshot"
	kindOther    = "other"
	kindStep     = "step"
	kindEntry    = "entry"
	kindRefusal  = "refusal"
	kindLock     = "open-lock"
	kindSighting = "sighting"
	kindClaim    = "claim"
	kindSlack    = "slack"
)

// maxItemBytes is DynamoDB's item size limit (400 KB, attribute names and values counted;
// https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/ServiceQuotas.html). The store
// refuses to write a bigger item with a clear error rather than letting DynamoDB answer a
// ValidationException (moto 5.2.1 does not check it on PutItem at all).
const maxItemBytes = 400 * 1024

func incidentPK(id string) string { return "incident#" + id }
func lockPK(keyARN string) string { return "open#" + keyARN }
func seenPK(keyARN string) string { return "seen#" + keyARN }
func claimPK(name string) string  { return "claim#" + name }
func entrySK(id string) string    { return childSK(kindEntry, id) }
func refusalSK(id string) string  { return childSK(kindRefusal, id) }

// maxSKBytes keeps sort keys under DynamoDB's 1,024-byte limit for a sort key
// (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/ServiceQuotas.html).
const maxSKBytes = 1000

// childSK is the sort key of a child of kind named k. A name too long for a sort key (no ARN
// or entry ID is, in practice) is cut and completed with its hash, so it stays unique.
func childSK(kind, k string) string {
	sk := kind + "#" + k
	if len(sk) <= maxSKBytes {
		return sk
	}
	h := sha256.Sum256([]byte(k))
	return sk[:maxSKBytes-65] + "~" + hex.EncodeToString(h[:])
}

func str(s string) types.AttributeValue { return &types.AttributeValueMemberS{Value: s} }
func num(n int64) types.AttributeValue {
	return &types.AttributeValueMemberN{Value: strconv.FormatInt(n, 10)}
}

func key(pk, sk string) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{attrPK: str(pk), attrSK: str(sk)}
}

func stringAttr(item map[string]types.AttributeValue, name string) string {
	if v, ok := item[name].(*types.AttributeValueMemberS); ok {
		return v.Value
	}
	return ""
}

func numAttr(item map[string]types.AttributeValue, name string) (int64, error) {
	v, ok := item[name].(*types.AttributeValueMemberN)
	if !ok {
		return 0, fmt.Errorf("attribute %s is missing or not a number", name)
	}
	n, err := strconv.ParseInt(v.Value, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("attribute %s: %w", name, err)
	}
	return n, nil
}

// optNum is numAttr for an attribute that may be absent (0 then).
func optNum(item map[string]types.AttributeValue, name string) int64 {
	n, _ := numAttr(item, name)
	return n
}

func stringSet(item map[string]types.AttributeValue, name string) []string {
	if v, ok := item[name].(*types.AttributeValueMemberSS); ok {
		return v.Value
	}
	return nil
}

// itemSize approximates DynamoDB's item size: attribute names plus values (numbers counted as
// their decimal text, a little more than DynamoDB's packed form).
func itemSize(item map[string]types.AttributeValue) int {
	n := 0
	for name, v := range item {
		n += len(name)
		switch v := v.(type) {
		case *types.AttributeValueMemberS:
			n += len(v.Value)
		case *types.AttributeValueMemberN:
			n += len(v.Value)
		case *types.AttributeValueMemberSS:
			for _, s := range v.Value {
				n += len(s)
			}
		case *types.AttributeValueMemberBOOL:
			n++
		default:
			n += 8
		}
	}
	return n
}

// child is one item beside an incident's head: a dependent, a remediation step or a timeline
// entry, as the JSON document of its model value.
type child struct {
	sk   string
	kind string
	doc  string
	pos  int   // orders dependents and steps on read (see positions)
	seq  int64 // entries only
}

func (c child) item(pk string, version int64, token string) map[string]types.AttributeValue {
	it := map[string]types.AttributeValue{
		attrPK:   str(pk),
		attrSK:   str(c.sk),
		attrKind: str(c.kind),
		attrDoc:  str(c.doc),
		attrV:    num(version),
	}
	if c.kind == kindEntry {
		it[attrSeq] = num(c.seq)
	} else {
		it[attrPos] = num(int64(c.pos))
	}
	if token != "" {
		it[attrW] = str(token)
	}
	return it
}

// dependentKey names a dependent within its kind: the ARN when known (unique across accounts
// and Regions), the identifier otherwise.
func dependentKey(arn, identifier string) string {
	if arn != "" {
		return arn
	}
	return identifier
}

func encode(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// headDoc is the head's JSON: the incident without the slices kept in their own items.
func headDoc(inc *incident.Incident) (string, error) {
	h := *inc
	h.Clusters, h.Instances, h.Snapshots, h.OtherEngines, h.Timeline = nil, nil, nil, nil, nil
	h.Remediation.Steps = nil
	return encode(h)
}

// children encodes every dependent and remediation step of inc, in slice order, refusing two of
// one kind with the same key (they would be one item).
func children(inc *incident.Incident) ([]child, error) {
	var out []child
	seen := map[string]bool{}
	add := func(kind, k string, pos int, v any) error {
		sk := childSK(kind, k)
		if seen[sk] {
			return fmt.Errorf("two %ss named %q: each is one item, so names must be unique", kind, k)
		}
		seen[sk] = true
		doc, err := encode(v)
		if err != nil {
			return fmt.Errorf("encode %s %s: %w", kind, k, err)
		}
		out = append(out, child{sk: sk, kind: kind, doc: doc, pos: (pos + 1) * posStride})
		return nil
	}
	for i, c := range inc.Clusters {
		if err := add(kindCluster, dependentKey(c.ARN, c.Identifier), i, c); err != nil {
			return nil, err
		}
	}
	for i, in := range inc.Instances {
		if err := add(kindInstance, dependentKey(in.ARN, in.Identifier), i, in); err != nil {
			return nil, err
		}
	}
	for i, sn := range inc.Snapshots {
		if err := add(kindSnapshot, dependentKey(sn.ARN, sn.Identifier), i, sn); err != nil {
			return nil, err
		}
	}
	for i, c := range inc.OtherEngines {
		if err := add(kindOther, dependentKey(c.ARN, c.Identifier), i, c); err != nil {
			return nil, err
		}
	}
	for i, st := range inc.Remediation.Steps {
		if err := add(kindStep, st.ID, i, st); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// posStride spaces the positions of a kind's items, so an item inserted later fits between
// two others without moving them.
const posStride = 1 << 10

// positions gives group, one kind's children in slice order, positions that keep that order
// while moving as few stored items as possible (a moved item is rewritten): items that stay keep
// their stored position as long as those still increase, so removing items moves nothing, and
// new items take positions after, before or between them. Only when an item moved relative to
// the others, or new items do not fit between two neighbours, is the whole kind renumbered
// (and then only the items whose position changed are written).
func positions(group []child, cur map[string]stored) {
	last, have := 0, false
	inOrder := true
	for _, c := range group {
		if st, ok := cur[c.sk]; ok {
			if have && st.pos <= last {
				inOrder = false
				break
			}
			last, have = st.pos, true
		}
	}
	if inOrder && fitBetween(group, cur) {
		return
	}
	for i := range group {
		group[i].pos = (i + 1) * posStride
	}
}

// fitBetween assigns positions keeping the stored ones; false when a run of new items does not
// fit between its neighbours.
func fitBetween(group []child, cur map[string]stored) bool {
	lo, haveLo := 0, false
	for i := 0; i < len(group); {
		if st, ok := cur[group[i].sk]; ok {
			group[i].pos = st.pos
			lo, haveLo = st.pos, true
			i++
			continue
		}
		j := i
		for j < len(group) {
			if _, ok := cur[group[j].sk]; ok {
				break
			}
			j++
		}
		run := j - i
		if j == len(group) {
			for k := range run {
				group[i+k].pos = lo + (k+1)*posStride
			}
			return true
		}
		hi := cur[group[j].sk].pos
		if !haveLo {
			lo = hi - (run+1)*posStride
		}
		if hi-lo-1 < run {
			return false
		}
		for k := range run {
			group[i+k].pos = lo + (hi-lo)*(k+1)/(run+1)
		}
		i = j
	}
	return true
}

func entryChild(e incident.Entry) (child, error) {
	doc, err := encode(e)
	if err != nil {
		return child{}, fmt.Errorf("encode entry %s: %w", e.ID, err)
	}
	return child{sk: entrySK(e.ID), kind: kindEntry, doc: doc, seq: e.Seq}, nil
}

// headItem is the head of inc with its query attributes, the Slack bookkeeping as separate
// attributes (see SetSlack) and commits, the tokens of the batched writes that are part of it.
func headItem(inc *incident.Incident, doc string, commits []string) map[string]types.AttributeValue {
	item := map[string]types.AttributeValue{
		attrPK:       str(incidentPK(inc.ID)),
		attrSK:       str(skHead),
		attrKind:     str(kindHead),
		attrVersion:  num(inc.Version),
		attrState:    str(string(inc.State)),
		attrKeyARN:   str(inc.KeyARN),
		attrOpenedAt: str(inc.OpenedAt.UTC().Format(time.RFC3339Nano)),
		attrDoc:      str(doc),
	}
	if inc.Slack != nil {
		item[attrSlackChan] = str(inc.Slack.Channel)
		item[attrSlackTS] = str(inc.Slack.TS)
		item[attrSlackPost] = num(inc.SlackPosted)
	}
	if len(commits) > 0 {
		item[attrCommits] = &types.AttributeValueMemberSS{Value: commits}
	}
	return item
}

// head is what the store reads from a head item besides the incident itself.
type head struct {
	version    int64
	slackTS    string // the slack_ts attribute as stored, "" when absent
	slackPost  int64
	commits    []string
	leaseToken string
	leaseUntil int64
}

// decodeHead decodes a head item: the head JSON with the version and Slack attributes, which
// are the authority, laid over it.
func decodeHead(item map[string]types.AttributeValue) (incident.Incident, head, error) {
	var inc incident.Incident
	if err := json.Unmarshal([]byte(stringAttr(item, attrDoc)), &inc); err != nil {
		return incident.Incident{}, head{}, fmt.Errorf("decode head: %w", err)
	}
	v, err := numAttr(item, attrVersion)
	if err != nil {
		return incident.Incident{}, head{}, err
	}
	h := head{
		version:    v,
		slackTS:    stringAttr(item, attrSlackTS),
		slackPost:  optNum(item, attrSlackPost),
		commits:    stringSet(item, attrCommits),
		leaseToken: stringAttr(item, attrLeaseToken),
		leaseUntil: optNum(item, attrLeaseUntil),
	}
	inc.Version = v
	// The Slack delivery record is its own item (kind slack); the head's copy may be stale.
	inc.SlackShown, inc.SlackDelivery = 0, incident.SlackDelivery{}
	if h.slackTS != "" {
		inc.Slack = &incident.SlackRef{Channel: stringAttr(item, attrSlackChan), TS: h.slackTS}
		inc.SlackPosted = h.slackPost
	}
	return inc, h, nil
}

// stored is a child as read: its document and position, and where its decoded value sits in the
// assembled incident's slice.
type stored struct {
	doc   string
	pos   int
	index int
}

// snapshot is one consistent read of an incident and what a write needs to diff against it.
type snapshot struct {
	inc incident.Incident
	// headJSON is the head's JSON as read (Slack attributes laid over): the before-image of
	// the head. The children's before-images are their documents in children; both are strings
	// that no mutate can reach.
	headJSON string
	head     head
	children map[string]stored // dependents and steps by sort key
	entries  map[string]bool   // IDs of the timeline entries stored as entry items
	refusals map[string]bool   // IDs of the refusals
	// legacy is set for an incident read from the legacy table (see legacy.go).
	legacy bool
}

// assembler collects an incident's items page by page.
type assembler struct {
	snap     snapshot
	headSeen int64 // the head's version as the Query saw it (-1 when not seen)
	newer    bool  // a child written by a version after the head's
	clusters []posValue[incident.Cluster]
	insts    []posValue[incident.Instance]
	snaps    []posValue[incident.Snapshot]
	others   []posValue[incident.Cluster]
	steps    []posValue[incident.StepRecord]
	timeline []incident.Entry
}

type posValue[T any] struct {
	pos int
	sk  string
	doc string
	v   T
}

func newAssembler(inc incident.Incident, h head, headJSON string) *assembler {
	return &assembler{
		snap: snapshot{
			inc: inc, head: h, headJSON: headJSON,
			children: map[string]stored{}, entries: map[string]bool{}, refusals: map[string]bool{},
		},
		headSeen: -1,
	}
}

func decodeInto[T any](dst *[]posValue[T], item map[string]types.AttributeValue) error {
	var v T
	doc := stringAttr(item, attrDoc)
	if err := json.Unmarshal([]byte(doc), &v); err != nil {
		return fmt.Errorf("decode %s: %w", stringAttr(item, attrSK), err)
	}
	*dst = append(*dst, posValue[T]{pos: int(optNum(item, attrPos)), sk: stringAttr(item, attrSK), doc: doc, v: v})
	return nil
}

// add takes one item of the incident's partition.
func (a *assembler) add(item map[string]types.AttributeValue) error {
	sk := stringAttr(item, attrSK)
	if sk == skHead {
		a.headSeen = optNum(item, attrVersion)
		return nil
	}
	w := stringAttr(item, attrW)
	if w == "" && optNum(item, attrV) > a.snap.head.version {
		a.newer = true
	}
	kind, _, _ := strings.Cut(sk, "#")
	switch kind {
	case kindCluster:
		return decodeInto(&a.clusters, item)
	case kindInstance:
		return decodeInto(&a.insts, item)
	case kindSnapshot:
		return decodeInto(&a.snaps, item)
	case kindOther:
		return decodeInto(&a.others, item)
	case kindStep:
		return decodeInto(&a.steps, item)
	case kindEntry:
		// An entry written by a batched write is part of the incident only once the head
		// that write committed names its token; until then (or for ever, when that write
		// lost) it is invisible.
		if w != "" && !slices.Contains(a.snap.head.commits, w) {
			return nil
		}
		var e incident.Entry
		if err := json.Unmarshal([]byte(stringAttr(item, attrDoc)), &e); err != nil {
			return fmt.Errorf("decode %s: %w", sk, err)
		}
		a.snap.entries[e.ID] = true
		a.timeline = append(a.timeline, e)
	case kindSlack:
		// The Slack delivery record (RecordSlackDelivery): the authority on what the message
		// shows and why delivery failed, laid over the head's copy.
		a.snap.inc.SlackShown = optNum(item, attrShown)
		a.snap.inc.SlackDelivery.Reason = stringAttr(item, attrReason)
	case kindRefusal:
		var e incident.Entry
		if err := json.Unmarshal([]byte(stringAttr(item, attrDoc)), &e); err != nil {
			return fmt.Errorf("decode %s: %w", sk, err)
		}
		e.Seq = 0
		e.Count = int(optNum(item, attrCount))
		a.snap.refusals[e.ID] = true
		a.timeline = append(a.timeline, e)
	}
	return nil
}

func finish[T any](pvs []posValue[T], docs map[string]stored) []T {
	if len(pvs) == 0 {
		return nil
	}
	slices.SortStableFunc(pvs, func(a, b posValue[T]) int {
		if a.pos != b.pos {
			return a.pos - b.pos
		}
		return strings.Compare(a.sk, b.sk)
	})
	out := make([]T, len(pvs))
	for i, pv := range pvs {
		out[i] = pv.v
		docs[pv.sk] = stored{doc: pv.doc, pos: pv.pos, index: i}
	}
	return out
}

// done assembles the incident: dependents and steps in their stored order, the timeline sorted
// with incident.SortTimeline, TimelineSeq at least the highest entry's Seq.
func (a *assembler) done() snapshot {
	s := a.snap
	inc := &s.inc
	inc.Clusters = finish(a.clusters, s.children)
	inc.Instances = finish(a.insts, s.children)
	inc.Snapshots = finish(a.snaps, s.children)
	inc.OtherEngines = finish(a.others, s.children)
	inc.Remediation.Steps = finish(a.steps, s.children)
	incident.SortTimeline(a.timeline)
	if len(a.timeline) > 0 {
		inc.Timeline = a.timeline
	}
	for _, e := range a.timeline {
		inc.TimelineSeq = max(inc.TimelineSeq, e.Seq)
	}
	inc.SettleSlackDelivery()
	return s
}
