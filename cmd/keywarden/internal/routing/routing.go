// Package routing routes events on the local stack the way template.yaml's EventBridge rules do
// on AWS: it loads the template's rules, with their exact patterns, into the local
// EventBridge (moto), each targeting one SQS queue per function, puts events through them and
// collects which functions they reached. Invoking those functions is the stack's job.
//
// It owns the rules and queues of local routing; it must not import the rest of the local
// stack or keywarden's product packages other than internal/template.
package routing

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	ebtypes "github.com/aws/aws-sdk-go-v2/service/eventbridge/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/keywarden/keywarden/internal/template"
)

// DefaultPrefix names the rules and queues of the local event routing.
const DefaultPrefix = "keywarden"

// DefaultDeliveryWait bounds how long Collect waits for events to reach the functions' queues.
const DefaultDeliveryWait = 3 * time.Second

// deliverySettle is how long Collect keeps polling after the last delivery it saw. moto delivers
// within PutEvents, so once every queue has been read after this quiet spell nothing more is
// coming; real EventBridge would need longer, which the overall wait allows for.
const deliverySettle = 300 * time.Millisecond

// staleMessage is the age after which a message in a routing queue that nobody collected (an
// emit that was interrupted) is deleted instead of left for its emitter.
const staleMessage = time.Minute

// Router routes events the way template.yaml's EventBridge rules do on AWS: its Load puts each
// rule, with its exact pattern, on the local EventBridge's default bus (or, in organization
// mode, on the keywarden bus), targeting one SQS queue
// per function; Put sends an event through EventBridge; Collect reads which functions' queues
// it reached. The local stack's Deliver does all three and invokes the functions.
//
// Only rules with event patterns are loaded (SAM event types EventBridgeRule and
// CloudWatchEvent); schedules are not, as nothing local would fire them.
type Router struct {
	// Template is template.yaml's path. Required.
	Template string
	// Prefix starts every rule and queue name; empty means DefaultPrefix. Routers with
	// different prefixes can share one moto.
	Prefix string
	// Parameters are template parameters the rules are read with (template.Resolve); nil means
	// their defaults: account mode. With DeploymentMode organization the rules are on the
	// template's keywarden bus, which Load creates.
	Parameters map[string]string
}

func (r Router) prefix() string {
	if r.Prefix == "" {
		return DefaultPrefix
	}
	return r.Prefix
}

// description marks the rules this router owns, so Load can remove rules a template no longer
// has without touching anyone else's.
func (r Router) description() string { return "keywarden local routing (" + r.prefix() + ")" }

func (r Router) ruleName(rule template.Rule) string {
	return r.prefix() + "-" + rule.Function + "-" + rule.Name
}

// QueueName is the name of the local queue that receives the events routed to function.
func (r Router) QueueName(function string) string { return r.prefix() + "-" + function + "-events" }

func (r Router) rules() ([]template.Rule, error) {
	path := r.Template
	if path == "" {
		return nil, errors.New("no template: Router.Template is required")
	}
	tpl, err := template.Load(path)
	if err != nil {
		return nil, err
	}
	tpl, err = tpl.Resolve(r.Parameters)
	if err != nil {
		return nil, fmt.Errorf("template %s: %w", path, err)
	}
	rules, err := tpl.Rules()
	if err != nil {
		return nil, fmt.Errorf("template %s: %w", path, err)
	}
	return rules, nil
}

// functions returns the functions that rules deliver to, sorted.
func functionsOf(rules []template.Rule) []string {
	set := map[string]bool{}
	for _, rule := range rules {
		set[rule.Function] = true
	}
	return slices.Sorted(maps.Keys(set))
}

// Load creates the queues and puts the rules and their targets. Running it
// again updates the patterns and removes rules of this router that the template dropped.
func (r Router) Load(ctx context.Context, cfg aws.Config) error {
	rules, err := r.rules()
	if err != nil {
		return fmt.Errorf("event routing: %w", err)
	}
	eb := eventbridge.NewFromConfig(cfg)
	q := sqs.NewFromConfig(cfg)

	queueARNs := map[string]string{}
	for _, fn := range functionsOf(rules) {
		_, arn, err := r.queue(ctx, q, fn, true)
		if err != nil {
			return fmt.Errorf("event routing: %w", err)
		}
		queueARNs[fn] = arn
	}
	buses := map[string]bool{"": true}
	for _, rule := range rules {
		if bus := busOf(rule); !buses[bus] {
			buses[bus] = true
			if _, err := eb.CreateEventBus(ctx, &eventbridge.CreateEventBusInput{Name: aws.String(bus)}); err != nil {
				var exists *ebtypes.ResourceAlreadyExistsException
				if !errors.As(err, &exists) {
					return fmt.Errorf("event routing: create bus %s: %w", bus, err)
				}
			}
		}
	}
	want := map[string]bool{}
	for _, rule := range rules {
		name := r.ruleName(rule)
		if len(name) > 64 {
			return fmt.Errorf("event routing: rule name %s is longer than EventBridge's 64 characters", name)
		}
		want[busOf(rule)+"/"+name] = true
		if _, err := eb.PutRule(ctx, &eventbridge.PutRuleInput{
			Name:         aws.String(name),
			EventBusName: busName(busOf(rule)),
			EventPattern: aws.String(string(rule.Pattern)),
			Description:  aws.String(r.description()),
			State:        ebtypes.RuleStateEnabled,
		}); err != nil {
			return fmt.Errorf("event routing: put rule %s: %w", name, err)
		}
		out, err := eb.PutTargets(ctx, &eventbridge.PutTargetsInput{
			Rule:         aws.String(name),
			EventBusName: busName(busOf(rule)),
			Targets:      []ebtypes.Target{{Id: aws.String("queue"), Arn: aws.String(queueARNs[rule.Function])}},
		})
		if err != nil {
			return fmt.Errorf("event routing: put target of rule %s: %w", name, err)
		}
		if out.FailedEntryCount > 0 {
			return fmt.Errorf("event routing: put target of rule %s: %d failed", name, out.FailedEntryCount)
		}
	}
	for _, bus := range slices.Sorted(maps.Keys(buses)) {
		if err := r.removeStale(ctx, eb, bus, want); err != nil {
			return err
		}
	}
	return nil
}

// busOf is the bus a rule is on, "" for the default bus.
func busOf(rule template.Rule) string {
	if rule.Bus == "default" {
		return ""
	}
	return rule.Bus
}

// busName is the EventBusName parameter for bus: nil for the default bus.
func busName(bus string) *string {
	if bus == "" {
		return nil
	}
	return aws.String(bus)
}

// removeStale deletes this router's rules on bus that are not in want (bus/name).
func (r Router) removeStale(ctx context.Context, eb *eventbridge.Client, bus string, want map[string]bool) error {
	var stale []string
	in := &eventbridge.ListRulesInput{NamePrefix: aws.String(r.prefix() + "-"), EventBusName: busName(bus)}
	for {
		page, err := eb.ListRules(ctx, in)
		if err != nil {
			return fmt.Errorf("event routing: list rules: %w", err)
		}
		for _, rule := range page.Rules {
			name := aws.ToString(rule.Name)
			if !want[bus+"/"+name] && aws.ToString(rule.Description) == r.description() {
				stale = append(stale, name)
			}
		}
		if next := aws.ToString(page.NextToken); next == "" || next == aws.ToString(in.NextToken) {
			break
		}
		in.NextToken = page.NextToken
	}
	for _, name := range stale {
		targets, err := eb.ListTargetsByRule(ctx, &eventbridge.ListTargetsByRuleInput{Rule: aws.String(name), EventBusName: busName(bus)})
		if err != nil {
			return fmt.Errorf("event routing: list targets of stale rule %s: %w", name, err)
		}
		var ids []string
		for _, t := range targets.Targets {
			ids = append(ids, aws.ToString(t.Id))
		}
		if len(ids) > 0 {
			if _, err := eb.RemoveTargets(ctx, &eventbridge.RemoveTargetsInput{Rule: aws.String(name), EventBusName: busName(bus), Ids: ids}); err != nil {
				return fmt.Errorf("event routing: remove targets of stale rule %s: %w", name, err)
			}
		}
		if _, err := eb.DeleteRule(ctx, &eventbridge.DeleteRuleInput{Name: aws.String(name), EventBusName: busName(bus)}); err != nil {
			return fmt.Errorf("event routing: delete stale rule %s: %w", name, err)
		}
	}
	return nil
}

// queue returns the URL and ARN of function's queue, creating it when create is set.
func (r Router) queue(ctx context.Context, q *sqs.Client, function string, create bool) (url, arn string, err error) {
	name := r.QueueName(function)
	if create {
		out, err := q.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(name)})
		if err != nil {
			return "", "", fmt.Errorf("create queue %s: %w", name, err)
		}
		url = aws.ToString(out.QueueUrl)
	} else {
		out, err := q.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String(name)})
		if err != nil {
			return "", "", fmt.Errorf("queue %s (is the local stack up, with the event routing loaded?): %w", name, err)
		}
		url = aws.ToString(out.QueueUrl)
	}
	attrs, err := q.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl:       aws.String(url),
		AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameQueueArn},
	})
	if err != nil {
		return "", "", fmt.Errorf("queue %s attributes: %w", name, err)
	}
	return url, attrs.Attributes[string(sqstypes.QueueAttributeNameQueueArn)], nil
}

// routedEnvelope is the part of an EventBridge event that PutEvents takes.
type routedEnvelope struct {
	Source     string          `json:"source"`
	DetailType string          `json:"detail-type"`
	Detail     json.RawMessage `json:"detail"`
	Resources  []string        `json:"resources"`
	Time       string          `json:"time"`
}

// Put sends event — a whole EventBridge event, such as a file of events/ — to the local default
// bus and returns the ID EventBridge gave it. PutEvents takes the event's source, detail-type,
// detail, resources and time; EventBridge assigns id, account and region, as it does on AWS.
// The sample's time is kept, so a function sees the event as the sample has it.
func (r Router) Put(ctx context.Context, cfg aws.Config, event []byte) (string, error) {
	var e routedEnvelope
	if err := json.Unmarshal(event, &e); err != nil {
		return "", fmt.Errorf("event is not an EventBridge event: %w", err)
	}
	var problems []string
	if e.Source == "" {
		problems = append(problems, "no source")
	}
	if e.DetailType == "" {
		problems = append(problems, "no detail-type")
	}
	if d := bytes.TrimSpace(e.Detail); len(d) == 0 || d[0] != '{' {
		problems = append(problems, "detail is not a JSON object")
	}
	if len(problems) > 0 {
		return "", fmt.Errorf("event cannot go through EventBridge: %s", strings.Join(problems, ", "))
	}
	var detail bytes.Buffer
	if err := json.Compact(&detail, e.Detail); err != nil {
		return "", fmt.Errorf("event detail: %w", err)
	}
	entry := ebtypes.PutEventsRequestEntry{
		Source:     aws.String(e.Source),
		DetailType: aws.String(e.DetailType),
		Detail:     aws.String(detail.String()),
		Resources:  e.Resources,
	}
	if e.Time != "" {
		ts, err := time.Parse(time.RFC3339, e.Time)
		if err != nil {
			return "", fmt.Errorf("event time %q: %w", e.Time, err)
		}
		entry.Time = aws.Time(ts)
	}
	out, err := eventbridge.NewFromConfig(cfg).PutEvents(ctx, &eventbridge.PutEventsInput{Entries: []ebtypes.PutEventsRequestEntry{entry}})
	if err != nil {
		return "", fmt.Errorf("put event: %w", err)
	}
	if out.FailedEntryCount > 0 || len(out.Entries) != 1 || aws.ToString(out.Entries[0].EventId) == "" {
		var reason string
		if len(out.Entries) == 1 {
			reason = aws.ToString(out.Entries[0].ErrorCode) + " " + aws.ToString(out.Entries[0].ErrorMessage)
		}
		return "", fmt.Errorf("put event: EventBridge refused it: %s", strings.TrimSpace(reason))
	}
	return aws.ToString(out.Entries[0].EventId), nil
}

// Delivery is one event as a function's queue received it: the EventBridge event Lambda would
// be invoked with.
type Delivery struct {
	Function string
	EventID  string
	Event    json.RawMessage
}

// Collect reads every function's queue for the events with the given IDs, for at most wait
// (DefaultDeliveryWait when zero), and returns what each function received, by function then
// event ID. Messages of these events are deleted; other recent messages are left for their own
// emitter, and messages older than a minute that nobody collected are deleted. A nil eventIDs
// collects every event in the queues: an event forwarded from a member account's bus gets an ID
// of its own on the central bus, which its sender cannot know.
//
// moto's SQS bodies lack the envelope's "account", which EventBridge on AWS always sets; it is
// added from the queue's ARN, the account the bus belongs to.
func (r Router) Collect(ctx context.Context, cfg aws.Config, eventIDs []string, wait time.Duration) ([]Delivery, error) {
	if wait <= 0 {
		wait = DefaultDeliveryWait
	}
	rules, err := r.rules()
	if err != nil {
		return nil, fmt.Errorf("event routing: %w", err)
	}
	var ids map[string]bool // nil: every event
	if eventIDs != nil {
		ids = map[string]bool{}
		for _, id := range eventIDs {
			ids[id] = true
		}
	}
	q := sqs.NewFromConfig(cfg)
	type queueRef struct{ function, url, account string }
	var queues []queueRef
	for _, fn := range functionsOf(rules) {
		url, arn, err := r.queue(ctx, q, fn, false)
		if err != nil {
			return nil, fmt.Errorf("event routing: %w", err)
		}
		var account string
		if parts := strings.Split(arn, ":"); len(parts) == 6 {
			account = parts[4]
		}
		queues = append(queues, queueRef{fn, url, account})
	}

	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	var (
		mu         sync.Mutex
		deliveries []Delivery
		lastSeen   time.Time // zero until the first delivery
	)
	// One round reads each queue once, concurrently; rounds repeat until nothing new came for
	// deliverySettle after the first delivery, or the wait is over. Until something arrives
	// the whole wait is given: on a busy machine moto's answers can take longer than the
	// settle time, and giving up early would report an event no rule matched.
rounds:
	for {
		var wg sync.WaitGroup
		errs := make([]error, len(queues))
		for i, qr := range queues {
			wg.Go(func() {
				got, err := drainRouteQueue(ctx, q, qr.url, ids)
				mu.Lock()
				defer mu.Unlock()
				for _, m := range got {
					deliveries = append(deliveries, Delivery{Function: qr.function, EventID: m.id, Event: withEventAccount(m.body, qr.account)})
					lastSeen = time.Now()
				}
				if err != nil {
					errs[i] = fmt.Errorf("read the queue of %s: %w", qr.function, err)
				}
			})
		}
		wg.Wait()
		if ctx.Err() != nil {
			// The wait is over; a read it cut short is not a failure.
			break
		}
		if err := errors.Join(errs...); err != nil {
			return nil, fmt.Errorf("event routing: %w", err)
		}
		if !lastSeen.IsZero() && time.Since(lastSeen) >= deliverySettle {
			break
		}
		select {
		case <-ctx.Done():
			break rounds
		case <-time.After(50 * time.Millisecond):
		}
	}
	slices.SortFunc(deliveries, func(a, b Delivery) int {
		return strings.Compare(a.Function+" "+a.EventID, b.Function+" "+b.EventID)
	})
	return deliveries, nil
}

type routedMessage struct {
	id   string
	body []byte
}

// drainRouteQueue reads what is in one queue now, keeping the messages of the events in ids.
func drainRouteQueue(ctx context.Context, q *sqs.Client, url string, ids map[string]bool) ([]routedMessage, error) {
	var kept []routedMessage
	for {
		out, err := q.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
			QueueUrl:                    aws.String(url),
			MaxNumberOfMessages:         10,
			VisibilityTimeout:           30,
			MessageSystemAttributeNames: []sqstypes.MessageSystemAttributeName{sqstypes.MessageSystemAttributeNameSentTimestamp},
		})
		if err != nil {
			return kept, err
		}
		if len(out.Messages) == 0 {
			return kept, nil
		}
		for _, m := range out.Messages {
			var head struct {
				ID string `json:"id"`
			}
			body := []byte(aws.ToString(m.Body))
			_ = json.Unmarshal(body, &head)
			switch {
			case ids == nil || ids[head.ID]:
				kept = append(kept, routedMessage{id: head.ID, body: body})
			case sentBeforeTime(m, time.Now().Add(-staleMessage)):
			default:
				// Someone else's, and recent: hand it back for them in a second — not at once,
				// or the next read would return the same messages ahead of ours.
				if _, err := q.ChangeMessageVisibility(ctx, &sqs.ChangeMessageVisibilityInput{
					QueueUrl: aws.String(url), ReceiptHandle: m.ReceiptHandle, VisibilityTimeout: 1,
				}); err != nil {
					return kept, err
				}
				continue
			}
			if _, err := q.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: aws.String(url), ReceiptHandle: m.ReceiptHandle}); err != nil {
				return kept, err
			}
		}
	}
}

func sentBeforeTime(m sqstypes.Message, t time.Time) bool {
	ms, err := strconv.ParseInt(m.Attributes[string(sqstypes.MessageSystemAttributeNameSentTimestamp)], 10, 64)
	return err == nil && time.UnixMilli(ms).Before(t)
}

// withEventAccount returns the event with "account" set when it has none. A body that is not a JSON
// object is returned as it is: the function will say what is wrong with it.
func withEventAccount(body []byte, account string) json.RawMessage {
	var event map[string]json.RawMessage
	if json.Unmarshal(body, &event) != nil {
		return body
	}
	if _, ok := event["account"]; ok || account == "" {
		return body
	}
	event["account"], _ = json.Marshal(account)
	// Keep the envelope's fields in the order AWS documents them, so the event reads as usual.
	var out bytes.Buffer
	out.WriteByte('{')
	for i, k := range eventEnvelopeOrder(event) {
		if i > 0 {
			out.WriteByte(',')
		}
		key, _ := json.Marshal(k)
		out.Write(key)
		out.WriteByte(':')
		out.Write(event[k])
	}
	out.WriteByte('}')
	return out.Bytes()
}

// eventEnvelopeOrder lists an event's keys in the order AWS documents the envelope, then the rest.
func eventEnvelopeOrder(event map[string]json.RawMessage) []string {
	known := []string{"version", "id", "detail-type", "source", "account", "time", "region", "resources", "detail"}
	var keys []string
	for _, k := range known {
		if _, ok := event[k]; ok {
			keys = append(keys, k)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(event)) {
		if !slices.Contains(known, k) {
			keys = append(keys, k)
		}
	}
	return keys
}
