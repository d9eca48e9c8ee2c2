// Package rdsevent turns one of RDS's own EventBridge events ("RDS DB Instance Event", "RDS DB
// Cluster Event", source aws.rds) into the facts keywarden acts on: which cluster or instance, what
// happened to it, and when RDS says it happened.
//
// Only a handful of RDS event IDs matter here. RDS-EVENT-0418 and -0419 say an instance can no
// longer reach its KMS key, -0420 that it can again; -0150/-0151 and -0087/-0088 say a cluster or
// instance stopped or started, which is how recovery proceeds. Everything else is ErrUnsupported:
// RDS sends far more events than keywarden cares about and a rule may match them.
//
// The fields are read in the order they can be trusted:
//
//   - detail.SourceArn names the resource exactly. The envelope's resources[0] carries the same ARN
//     and is the fallback.
//   - detail.SourceIdentifier carries an "rds:" prefix in AWS's documented examples and none in
//     captured real events, so it is used, prefix stripped, only when no ARN is present.
//   - detail.Date has millisecond precision and is when RDS saw the change; the envelope time is
//     truncated to the second and is the fallback.
//
// The catalogue documents 0418–0420 as DB instance events only, but Parse accepts them on a
// cluster too: the resource type is taken from the ARN, not from the event ID. One EventBridge
// schema omits EventID from cluster events; such an event cannot be classified and is
// ErrUnsupported. Every error Parse returns is permanent: retrying the same bytes cannot help, so
// the caller logs it and acknowledges the event.
//
// Boundaries: it owns turning RDS's EventBridge events into typed Events; it must not import the
// AWS SDK, Slack or any keywarden package (it reads bytes, nothing more).
package rdsevent

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Meaning is what an RDS event tells keywarden about a cluster or instance.
type Meaning string

const (
	// KeyAccessLost is RDS-EVENT-0418 (failure: RDS cannot reach the key) and RDS-EVENT-0419
	// (availability: the database will be made inaccessible).
	KeyAccessLost Meaning = "key-access-lost"
	// KeyAccessRestored is RDS-EVENT-0420: RDS can reach the key again.
	KeyAccessRestored Meaning = "key-access-restored"
	// Stopped is RDS-EVENT-0150 (cluster stopped) and RDS-EVENT-0087 (instance stopped).
	Stopped Meaning = "stopped"
	// Started is RDS-EVENT-0151 (cluster started) and RDS-EVENT-0088 (instance started).
	Started Meaning = "started"
)

// meanings holds the only event IDs keywarden handles.
var meanings = map[string]Meaning{
	"RDS-EVENT-0418": KeyAccessLost,
	"RDS-EVENT-0419": KeyAccessLost,
	"RDS-EVENT-0420": KeyAccessRestored,
	"RDS-EVENT-0150": Stopped,
	"RDS-EVENT-0087": Stopped,
	"RDS-EVENT-0151": Started,
	"RDS-EVENT-0088": Started,
}

// Detail-types and source types RDS uses in EventBridge.
const (
	DetailTypeInstance = "RDS DB Instance Event"
	DetailTypeCluster  = "RDS DB Cluster Event"

	SourceTypeCluster  = "CLUSTER"
	SourceTypeInstance = "DB_INSTANCE"
)

var (
	// ErrMalformed means the bytes are not a well-formed RDS event: bad JSON, no detail, no
	// usable time, or no identifiable resource.
	ErrMalformed = errors.New("malformed RDS event")
	// ErrUnsupported means a well-formed event keywarden does not handle: another source or
	// detail-type, a resource that is neither a cluster nor an instance, or an event ID outside
	// the handled set.
	ErrUnsupported = errors.New("unsupported RDS event")
)

// Event is one decoded RDS event.
type Event struct {
	// ID is the EventBridge event id, for deduplication and logs.
	ID         string
	DetailType string
	// Time is detail.Date when present (millisecond precision), else the envelope time; UTC.
	Time time.Time
	// EventID is RDS's catalogue ID, e.g. RDS-EVENT-0418.
	EventID string
	Meaning Meaning
	// SourceType is detail.SourceType as sent (CLUSTER or DB_INSTANCE), or derived from the
	// resource when absent.
	SourceType string
	// SourceARN is the cluster or instance ARN; empty only when the event carried no ARN at all
	// and Identifier came from SourceIdentifier.
	SourceARN string
	// Identifier is the cluster or instance identifier, without any "rds:" prefix.
	Identifier string
	// IsCluster is true for a DB cluster, false for a DB instance.
	IsCluster bool
	Message   string
	Region    string
	Account   string
}

type envelope struct {
	ID         string          `json:"id"`
	DetailType string          `json:"detail-type"`
	Source     string          `json:"source"`
	Account    string          `json:"account"`
	Time       string          `json:"time"`
	Region     string          `json:"region"`
	Resources  []string        `json:"resources"`
	Detail     json.RawMessage `json:"detail"`
}

type detail struct {
	SourceType       string `json:"SourceType"`
	SourceArn        string `json:"SourceArn"`
	Date             string `json:"Date"`
	Message          string `json:"Message"`
	SourceIdentifier string `json:"SourceIdentifier"`
	EventID          string `json:"EventID"`
}

// Parse decodes one "RDS DB Instance Event" or "RDS DB Cluster Event" envelope. Errors wrap
// ErrMalformed or ErrUnsupported.
func Parse(raw []byte) (Event, error) {
	var env envelope
	if err := json.Unmarshal(raw, &env); err != nil {
		return Event{}, fmt.Errorf("%w: decode envelope: %v", ErrMalformed, err)
	}
	if env.Source == "" || env.DetailType == "" {
		return Event{}, fmt.Errorf("%w: envelope has no source or detail-type", ErrMalformed)
	}
	if env.Source != "aws.rds" {
		return Event{}, fmt.Errorf("%w: source %q is not aws.rds", ErrUnsupported, env.Source)
	}
	if env.DetailType != DetailTypeInstance && env.DetailType != DetailTypeCluster {
		return Event{}, fmt.Errorf("%w: detail-type %q", ErrUnsupported, env.DetailType)
	}

	var d detail
	if len(env.Detail) == 0 || string(env.Detail) == "null" {
		return Event{}, fmt.Errorf("%w: event %s has no detail", ErrMalformed, env.ID)
	}
	if err := json.Unmarshal(env.Detail, &d); err != nil {
		return Event{}, fmt.Errorf("%w: decode detail of event %s: %v", ErrMalformed, env.ID, err)
	}

	if d.EventID == "" {
		// The EventBridge schema for cluster events lists no EventID; without one the event
		// cannot be told apart from the dozens of others RDS sends.
		return Event{}, fmt.Errorf("%w: %s %s has no EventID (message %q)", ErrUnsupported, env.DetailType, env.ID, d.Message)
	}
	meaning, ok := meanings[d.EventID]
	if !ok {
		return Event{}, fmt.Errorf("%w: event ID %s is not one keywarden handles", ErrUnsupported, d.EventID)
	}

	ev := Event{
		ID:         env.ID,
		DetailType: env.DetailType,
		EventID:    d.EventID,
		Meaning:    meaning,
		SourceType: d.SourceType,
		Message:    d.Message,
		Region:     env.Region,
		Account:    env.Account,
	}

	t, err := eventTime(d.Date, env.Time)
	if err != nil {
		return Event{}, fmt.Errorf("%w: %s %s: %v", ErrMalformed, d.EventID, env.ID, err)
	}
	ev.Time = t

	if err := identify(&ev, d, env); err != nil {
		return Event{}, fmt.Errorf("%s %s: %w", d.EventID, env.ID, err)
	}
	return ev, nil
}

// eventTime prefers detail.Date and falls back to the envelope time when Date is missing or
// unreadable; only when neither is usable is the event malformed.
func eventTime(date, envTime string) (time.Time, error) {
	for _, s := range []string{date, envTime} {
		if s == "" {
			continue
		}
		if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("no usable time (Date %q, envelope time %q)", date, envTime)
}

// identify fills the resource fields of ev from the ARN when there is one, else from
// SourceIdentifier and the source type.
func identify(ev *Event, d detail, env envelope) error {
	arn := d.SourceArn
	if arn == "" && len(env.Resources) > 0 {
		arn = env.Resources[0]
	}
	if arn != "" {
		a, err := parseARN(arn)
		if err != nil {
			return err
		}
		switch a.resourceType {
		case "cluster":
			ev.IsCluster = true
		case "db":
			ev.IsCluster = false
		default:
			return fmt.Errorf("%w: resource %s is neither a DB cluster nor a DB instance", ErrUnsupported, arn)
		}
		if !validIdentifier(a.name) {
			return fmt.Errorf("%w: %q does not end in an RDS identifier", ErrMalformed, arn)
		}
		ev.SourceARN = arn
		ev.Identifier = a.name
		if ev.Region == "" {
			ev.Region = a.region
		}
		if ev.Account == "" {
			ev.Account = a.account
		}
	} else {
		id := strings.TrimPrefix(d.SourceIdentifier, "rds:")
		if id == "" {
			return fmt.Errorf("%w: no SourceArn, resources or SourceIdentifier", ErrMalformed)
		}
		if !validIdentifier(id) {
			return fmt.Errorf("%w: SourceIdentifier %q is not an RDS identifier", ErrMalformed, d.SourceIdentifier)
		}
		ev.Identifier = id
		switch {
		case d.SourceType == SourceTypeCluster:
			ev.IsCluster = true
		case d.SourceType == SourceTypeInstance:
			ev.IsCluster = false
		case d.SourceType == "":
			ev.IsCluster = env.DetailType == DetailTypeCluster
		default:
			return fmt.Errorf("%w: source type %s is neither CLUSTER nor DB_INSTANCE", ErrUnsupported, d.SourceType)
		}
	}
	if ev.SourceType == "" {
		ev.SourceType = SourceTypeInstance
		if ev.IsCluster {
			ev.SourceType = SourceTypeCluster
		}
	}
	return nil
}

type rdsARN struct {
	region, account, resourceType, name string
}

// parseARN reads arn:PARTITION:rds:REGION:ACCOUNT:TYPE:NAME.
func parseARN(s string) (rdsARN, error) {
	p := strings.SplitN(s, ":", 7)
	if len(p) != 7 || p[0] != "arn" || p[1] == "" || p[2] != "rds" || p[5] == "" || p[6] == "" {
		return rdsARN{}, fmt.Errorf("%w: %q is not an RDS ARN", ErrMalformed, s)
	}
	return rdsARN{region: p[3], account: p[4], resourceType: p[5], name: p[6]}, nil
}

// validIdentifier reports whether s can be a DB cluster or instance identifier: RDS allows 1 to
// 63 letters, digits and hyphens, starting with a letter. Checking it keeps whatever the event
// carried out of table keys and Slack messages.
func validIdentifier(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		case (c >= '0' && c <= '9') || c == '-':
			if i == 0 {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// History messages: rds:DescribeEvents answers events without their catalogue ID (its Event has
// Date, Message, SourceIdentifier, SourceType, EventCategories only), so a key-access loss in
// RDS's 14-day history is known by the catalogue's message, whose start is fixed
// (https://docs.aws.amazon.com/AmazonRDS/latest/AuroraUserGuide/USER_Events.Messages.html;
// aws-facts §3.2).
var historyLost = map[string]string{
	"Amazon RDS is unable to access the KMS encryption key":       "RDS-EVENT-0418",
	"Amazon RDS has been unable to access the KMS encryption key": "RDS-EVENT-0419",
}

// historyRestored starts RDS-EVENT-0420's message ("Amazon RDS can now successfully access the
// KMS encryption key for database instance …", same catalogue).
const historyRestored = "Amazon RDS can now successfully access the KMS encryption key"

// HistoryKeyAccessRestored reports whether a DescribeEvents message is RDS-EVENT-0420: access
// to the key came back. A loss reported before it is over and must not date a later one.
func HistoryKeyAccessRestored(message string) bool {
	return strings.HasPrefix(strings.TrimSpace(message), historyRestored)
}

// HistoryKeyAccessLost reports which key-access-lost event (RDS-EVENT-0418 or -0419) a
// DescribeEvents message is, or "" when it is neither.
func HistoryKeyAccessLost(message string) string {
	for prefix, code := range historyLost {
		if strings.HasPrefix(strings.TrimSpace(message), prefix) {
			return code
		}
	}
	return ""
}
