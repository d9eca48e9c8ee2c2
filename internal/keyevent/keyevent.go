package keyevent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/keywarden/keywarden/internal/incident"
)

// Kind groups events by what they mean for Aurora.
type Kind string

const (
	// KindLoss events make the key unusable, so every Aurora resource that depends on it is at risk.
	KindLoss Kind = "loss" // DisableKey, ScheduleKeyDeletion, DeleteImportedKeyMaterial, DisconnectCustomKeyStore, "KMS CMK Deletion", "KMS Imported Key Material Expiration"
	// KindRestore events make the key usable again (CancelKeyDeletion leaves it Disabled).
	KindRestore Kind = "restore" // EnableKey, CancelKeyDeletion, ImportKeyMaterial, ConnectCustomKeyStore
	// KindAccess events change who may use the key; Aurora may lose access without the key changing state.
	KindAccess Kind = "access" // PutKeyPolicy, RevokeGrant, RetireGrant
)

// EventBridge detail-types keywarden reads.
const (
	DetailTypeAPICall               = "AWS API Call via CloudTrail"
	DetailTypeServiceEvent          = "AWS Service Event via CloudTrail"
	DetailTypeCMKDeletion           = "KMS CMK Deletion"
	DetailTypeKeyMaterialExpiration = "KMS Imported Key Material Expiration"
)

const (
	sourceKMS      = "aws.kms"
	eventSourceKMS = "kms.amazonaws.com"
	nameDisconnect = "DisconnectCustomKeyStore"
	nameConnect    = "ConnectCustomKeyStore"
)

// apiKinds are the CloudTrail eventNames keywarden handles: the write calls that can take a key
// away from Aurora or give it back. Read-only calls never reach a default rule and are refused.
var apiKinds = map[string]Kind{
	"DisableKey":                KindLoss,
	"ScheduleKeyDeletion":       KindLoss,
	"DeleteImportedKeyMaterial": KindLoss,
	nameDisconnect:              KindLoss,
	"EnableKey":                 KindRestore,
	"CancelKeyDeletion":         KindRestore,
	// ImportKeyMaterial and ConnectCustomKeyStore are the fixes for expired or deleted key
	// material (PendingImport) and a disconnected store (Unavailable): they update an open
	// incident, never open one.
	"ImportKeyMaterial": KindRestore,
	nameConnect:         KindRestore,
	"PutKeyPolicy":      KindAccess,
	"RevokeGrant":       KindAccess,
	"RetireGrant":       KindAccess,
}

var (
	// ErrMalformed means the bytes are not an event keywarden can read: not JSON, a missing
	// envelope field, a detail that is not an object, or no key where the call needs one.
	ErrMalformed = errors.New("malformed event")
	// ErrUnsupported means a well-formed event keywarden does not handle: another source,
	// detail-type or eventName.
	ErrUnsupported = errors.New("unsupported event")
)

// Event is one KMS key event, reduced to what keywarden needs.
type Event struct {
	ID         string // EventBridge envelope id
	DetailType string // "AWS API Call via CloudTrail", "KMS CMK Deletion", ...
	Name       string // CloudTrail eventName, or the detail-type for KMS's own events
	Kind       Kind
	Time       time.Time // CloudTrail eventTime (fallback: envelope time), UTC
	Region     string    // awsRegion, fallback envelope region
	Account    string    // recipientAccountId, fallback envelope account
	// KeyRef is the key as best found: a key ARN when any field carries one, else a key ID, else
	// (only as a last resort) an alias for the resolver to normalise. Empty for
	// DisconnectCustomKeyStore, which names no key.
	KeyRef string
	// CustomKeyStoreID is DisconnectCustomKeyStore's or ConnectCustomKeyStore's
	// requestParameters.customKeyStoreId; the affected keys are the ones in that store.
	CustomKeyStoreID string
	ErrorCode        string // CloudTrail errorCode: the call failed
	ErrorMessage     string
	// Actor is who made the call. For calls an AWS service made (AwsServiceEvent, or userIdentity
	// type AWSService) the service named in invokedBy is the Principal. KMS's own events have no
	// caller: the actor is KMS itself.
	Actor             incident.Actor
	CloudTrailEventID string // detail.eventID
	KeyStateHint      string // responseElements.keyState when present (PendingDeletion, PendingReplicaDeletion)
	PendingWindowDays int    // responseElements, else requestParameters, pendingWindowInDays; 0 when absent
	// DeletionDateText is responseElements.deletionDate exactly as CloudTrail wrote it. It is
	// never the source of truth: DescribeKey's DeletionDate is.
	DeletionDateText string
}

// Failed reports whether the API call failed (CloudTrail wrote an errorCode). A failed call
// changed nothing, however alarming its name.
func (e Event) Failed() bool { return e.ErrorCode != "" }

// Parse decodes one EventBridge event. Errors wrap ErrMalformed or ErrUnsupported; both are
// permanent.
func Parse(raw []byte) (Event, error) {
	env, err := decodeObject(raw)
	if err != nil {
		return Event{}, fmt.Errorf("decode envelope: %w: %v", ErrMalformed, err)
	}
	var e Event
	e.ID = env.str("id")
	e.DetailType = env.str("detail-type")
	source := env.str("source")
	switch {
	case e.ID == "":
		return Event{}, fmt.Errorf("envelope: %w: no id", ErrMalformed)
	case e.DetailType == "":
		return Event{}, fmt.Errorf("event %s: %w: no detail-type", e.ID, ErrMalformed)
	case source == "":
		return Event{}, fmt.Errorf("event %s: %w: no source", e.ID, ErrMalformed)
	case source != sourceKMS:
		return Event{}, fmt.Errorf("event %s: source %q: %w", e.ID, source, ErrUnsupported)
	}
	native := false
	switch e.DetailType {
	case DetailTypeAPICall, DetailTypeServiceEvent:
	case DetailTypeCMKDeletion, DetailTypeKeyMaterialExpiration:
		native = true
	default:
		return Event{}, fmt.Errorf("event %s: detail-type %q: %w", e.ID, e.DetailType, ErrUnsupported)
	}
	detail, err := decodeObject(env["detail"])
	if err != nil {
		return Event{}, fmt.Errorf("event %s: detail: %w: %v", e.ID, ErrMalformed, err)
	}
	if native {
		err = e.fromNative(detail, env)
	} else {
		err = e.fromCloudTrail(detail, env)
	}
	if err != nil {
		return Event{}, fmt.Errorf("event %s: %w", e.ID, err)
	}

	if e.Time.IsZero() {
		envTime, ok := parseTimestamp(env.str("time"))
		if !ok {
			return Event{}, fmt.Errorf("event %s: %w: no usable eventTime or time", e.ID, ErrMalformed)
		}
		e.Time = envTime
	}
	if e.Region == "" {
		e.Region = env.str("region")
	}
	if e.Account == "" {
		e.Account = env.str("account")
	}
	if e.Region == "" || e.Account == "" {
		return Event{}, fmt.Errorf("event %s: %w: no region or account", e.ID, ErrMalformed)
	}
	return e, nil
}

// fromCloudTrail fills e from a CloudTrail record.
func (e *Event) fromCloudTrail(d, env object) error {
	if es := d.str("eventSource"); es == "" {
		return fmt.Errorf("%w: no eventSource", ErrMalformed)
	} else if es != eventSourceKMS {
		return fmt.Errorf("eventSource %q: %w", es, ErrUnsupported)
	}
	e.Name = d.str("eventName")
	if e.Name == "" {
		return fmt.Errorf("%w: no eventName", ErrMalformed)
	}
	kind, ok := apiKinds[e.Name]
	if !ok {
		return fmt.Errorf("eventName %q: %w", e.Name, ErrUnsupported)
	}
	e.Kind = kind

	if t, ok := parseTimestamp(d.str("eventTime")); ok {
		e.Time = t
	}
	e.Region = d.str("awsRegion")
	e.Account = d.str("recipientAccountId")
	e.ErrorCode = d.str("errorCode")
	e.ErrorMessage = d.str("errorMessage")
	e.CloudTrailEventID = d.str("eventID")
	e.Actor = actor(d)

	req := d.obj("requestParameters")
	resp := d.obj("responseElements")
	e.KeyStateHint = resp.str("keyState")
	e.DeletionDateText = resp.str("deletionDate")
	if n, ok := resp.int("pendingWindowInDays"); ok {
		e.PendingWindowDays = n
	} else if n, ok := req.int("pendingWindowInDays"); ok {
		e.PendingWindowDays = n
	}

	if e.Name == nameDisconnect || e.Name == nameConnect {
		e.CustomKeyStoreID = req.str("customKeyStoreId")
		if !isIdentifier(e.CustomKeyStoreID) {
			return fmt.Errorf("%s: %w: no customKeyStoreId", e.Name, ErrMalformed)
		}
		return nil
	}

	var refs refPicker
	for _, r := range d.objs("resources") {
		// Entries without a type are older records; anything typed otherwise (an alias
		// touched by the same call) is not the key.
		if t := r.str("type"); t == "" || t == "AWS::KMS::Key" {
			refs.offer(r.str("ARN"))
		}
	}
	refs.offer(resp.str("keyId"))
	for _, s := range env.strs("resources") {
		refs.offer(s)
	}
	refs.offer(req.str("keyId"))
	refs.offer(d.obj("serviceEventDetails").str("keyId"))
	e.KeyRef = refs.best()
	if e.KeyRef == "" {
		return fmt.Errorf("%s: %w: no key", e.Name, ErrMalformed)
	}
	return nil
}

// fromNative fills e from one of KMS's own events, which name the key and nothing else.
func (e *Event) fromNative(d, env object) error {
	e.Name = e.DetailType
	e.Kind = KindLoss
	e.Actor = incident.Actor{Principal: eventSourceKMS, Type: "AWSService", AccountID: env.str("account")}
	var refs refPicker
	for _, s := range env.strs("resources") {
		refs.offer(s)
	}
	refs.offer(d.str("key-id"))
	e.KeyRef = refs.best()
	if e.KeyRef == "" {
		return fmt.Errorf("%s: %w: no key", e.Name, ErrMalformed)
	}
	return nil
}

// actor reads CloudTrail's userIdentity and request context.
func actor(d object) incident.Actor {
	id := d.obj("userIdentity")
	a := incident.Actor{
		ARN:       id.str("arn"),
		Principal: id.str("principalId"),
		Type:      id.str("type"),
		AccountID: id.str("accountId"),
		SourceIP:  d.str("sourceIPAddress"),
		UserAgent: d.str("userAgent"),
	}
	// A service acting on its own behalf (RDS retiring its grant, KMS deleting expired key
	// material) has no principalId worth showing; invokedBy names the service.
	if by := id.str("invokedBy"); by != "" &&
		(a.Principal == "" || a.Type == "AWSService" || d.str("eventType") == "AwsServiceEvent") {
		a.Principal = by
	}
	return a
}

// refPicker keeps the best key reference offered so far: a key ARN beats a key ID, which beats
// an alias; among equals the first offered wins, so callers offer the most reliable field first.
type refPicker struct {
	ref  string
	rank int
}

const (
	rankNone = iota
	rankAlias
	rankKeyID
	rankKeyARN
)

func (p *refPicker) offer(s string) {
	s = strings.TrimSpace(s)
	if r := rankRef(s); r > p.rank {
		p.ref, p.rank = s, r
	}
}

func (p *refPicker) best() string { return p.ref }

// rankRef classifies a key reference. Anything that is neither a key ARN, an alias, nor a
// plausible bare key ID (a string of letters, digits and dashes, like a UUID or an mrk- ID)
// ranks as nothing, so a stray ARN of another kind is never mistaken for a key.
func rankRef(s string) int {
	switch {
	case s == "":
		return rankNone
	case isKeyARN(s):
		return rankKeyARN
	case isAlias(s):
		return rankAlias
	case strings.HasPrefix(s, "arn:"):
		return rankNone
	case isIdentifier(s):
		return rankKeyID
	}
	return rankNone
}

// isAlias reports whether s names an alias (alias/x or an alias ARN), which KMS resolves to a
// key at call time but which is never itself the key.
func isAlias(s string) bool {
	if strings.HasPrefix(s, "alias/") && len(s) > len("alias/") {
		return true
	}
	if !strings.HasPrefix(s, "arn:") {
		return false
	}
	parts := strings.SplitN(s, ":", 6)
	return len(parts) == 6 && parts[2] == "kms" && strings.HasPrefix(parts[5], "alias/") && len(parts[5]) > len("alias/")
}

// isKeyARN reports whether s is a KMS key ARN (incident.IsKeyARN) of a plausible shape: an aws
// partition, an identifier for Region and key ID, a 12-digit account. It checks loosely, so that
// new partitions and key ID forms pass, but strictly enough that outside input of another shape
// is never taken for a key.
func isKeyARN(s string) bool {
	if !incident.IsKeyARN(s) {
		return false
	}
	parts := strings.SplitN(s, ":", 6)
	id := strings.TrimPrefix(parts[5], "key/")
	return strings.HasPrefix(parts[1], "aws") && isIdentifier(parts[3]) && isAccount(parts[4]) && isIdentifier(id)
}

func isAccount(s string) bool {
	if len(s) != 12 {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// isIdentifier reports whether s is a non-empty run of letters, digits and dashes, the alphabet
// of key IDs, custom key store IDs and region names.
func isIdentifier(s string) bool {
	if s == "" || len(s) > 256 {
		return false
	}
	for _, r := range s {
		if r > unicode.MaxASCII || !(r == '-' || unicode.IsLetter(r) || unicode.IsDigit(r)) {
			return false
		}
	}
	return true
}

// parseTimestamp parses the RFC 3339 timestamps of the envelope and of CloudTrail's eventTime.
func parseTimestamp(s string) (time.Time, bool) {
	if s == "" {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, false
	}
	return t.UTC(), true
}

// ParseDeletionDate leniently parses CloudTrail's human deletionDate spellings ("Apr 12, 2021
// 18:58:30 PM", "Nov 2, 2021, 11:25:25 PM", "Jan 1, 2019 12:00:00 AM") as UTC. The string is a
// Java-style "MMM d, yyyy h:mm:ss a" with no zone and, in some records, a 24-hour clock beside
// its AM/PM marker; it is for display and cross-checks only, ok=false when it cannot be read.
func ParseDeletionDate(s string) (t time.Time, ok bool) {
	// Newer JDKs put a narrow no-break space before AM/PM; commas come and go.
	norm := strings.Map(func(r rune) rune {
		switch {
		case r == ',':
			return ' '
		case unicode.IsSpace(r) || r == '\u202f' || r == '\u00a0':
			return ' '
		}
		return unicode.ToUpper(r)
	}, s)
	norm = strings.Join(strings.Fields(norm), " ")
	if norm == "" {
		return time.Time{}, false
	}
	for _, layout := range []string{"Jan 2 2006 15:04:05 PM", "Jan 2 2006 15:04:05"} {
		if t, err := time.ParseInLocation(layout, norm, time.UTC); err == nil {
			return t, true
		}
	}
	if t, ok := parseTimestamp(strings.TrimSpace(s)); ok {
		return t, true
	}
	return time.Time{}, false
}

// object is a JSON object decoded one level deep. Reading fields through it, rather than into
// typed structs, lets a field of an unexpected type read as absent instead of failing the whole
// event: CloudTrail records grow and vary, and one odd field must not hide the key.
type object map[string]json.RawMessage

// decodeObject decodes raw as a JSON object; null, arrays and scalars are errors.
func decodeObject(raw []byte) (object, error) {
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 {
		return nil, errors.New("empty")
	}
	if trimmed[0] != '{' {
		return nil, errors.New("not a JSON object")
	}
	var o object
	if err := json.Unmarshal(trimmed, &o); err != nil {
		return nil, err
	}
	return o, nil
}

// str returns the string field k, or "" when it is absent, null or not a string.
func (o object) str(k string) string {
	raw, ok := o[k]
	if !ok || len(raw) == 0 || raw[0] != '"' {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return ""
	}
	return s
}

// obj returns the object field k, or nil (which reads as empty) when it is absent, null or not
// an object.
func (o object) obj(k string) object {
	sub, err := decodeObject(o[k])
	if err != nil {
		return nil
	}
	return sub
}

// objs returns the objects in the array field k, skipping elements that are not objects.
func (o object) objs(k string) []object {
	var elems []json.RawMessage
	if json.Unmarshal(o[k], &elems) != nil {
		return nil
	}
	out := make([]object, 0, len(elems))
	for _, el := range elems {
		if sub, err := decodeObject(el); err == nil {
			out = append(out, sub)
		}
	}
	return out
}

// strs returns the strings in the array field k, skipping elements that are not strings.
func (o object) strs(k string) []string {
	var elems []json.RawMessage
	if json.Unmarshal(o[k], &elems) != nil {
		return nil
	}
	var out []string
	for _, el := range elems {
		var s string
		if len(el) > 0 && el[0] == '"' && json.Unmarshal(el, &s) == nil {
			out = append(out, s)
		}
	}
	return out
}

// int returns the non-negative integer field k, written as a JSON number or a numeric string.
func (o object) int(k string) (int, bool) {
	raw, ok := o[k]
	if !ok {
		return 0, false
	}
	text := string(raw)
	if s := o.str(k); s != "" {
		text = s
	}
	n, err := strconv.Atoi(strings.TrimSpace(text))
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}
