package routing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	ebtypes "github.com/aws/aws-sdk-go-v2/service/eventbridge/types"

	"github.com/keywarden/keywarden/internal/template"
)

// Forwarder puts member.yaml's forwarding rules, with their exact patterns, on a member account's
// default bus, each targeting the central keywarden bus as the StackSet does on AWS: events the
// member's services publish reach the central bus, where a Router in organization mode routes
// them to the functions' queues. moto forwards an event to a bus of another account named by ARN
// as a target.
type Forwarder struct {
	// Member is member.yaml's path. Required.
	Member string
	// CentralBusARN is the central bus (arn:aws:events:<region>:<account>:event-bus/keywarden).
	// Required.
	CentralBusARN string
	// Prefix starts every rule name; empty means DefaultPrefix.
	Prefix string
}

// MemberRule is one forwarding rule of member.yaml.
type MemberRule struct {
	// LogicalID is the rule's logical ID in member.yaml.
	LogicalID string
	// Pattern is its event pattern as EventBridge takes it.
	Pattern json.RawMessage
}

// MemberRules reads the AWS::Events::Rule resources of member.yaml at path, in logical-ID order.
func MemberRules(path string) ([]MemberRule, error) {
	tpl, err := template.Load(path)
	if err != nil {
		return nil, err
	}
	var out []MemberRule
	for _, id := range slices.Sorted(maps.Keys(tpl.Resources)) {
		res := tpl.Resources[id]
		if res.Type != "AWS::Events::Rule" {
			continue
		}
		data, err := json.Marshal(res.Properties["EventPattern"])
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", path, id, err)
		}
		out = append(out, MemberRule{LogicalID: id, Pattern: data})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no forwarding rules", path)
	}
	return out, nil
}

// Load puts the forwarding rules and their central-bus target on the default bus of the
// account memberCfg acts in. Running it again updates them.
func (f Forwarder) Load(ctx context.Context, memberCfg aws.Config) error {
	if f.Member == "" || f.CentralBusARN == "" {
		return errors.New("member forwarding: Forwarder.Member and CentralBusARN are required")
	}
	rules, err := MemberRules(f.Member)
	if err != nil {
		return fmt.Errorf("member forwarding: %w", err)
	}
	prefix := f.Prefix
	if prefix == "" {
		prefix = DefaultPrefix
	}
	eb := eventbridge.NewFromConfig(memberCfg)
	for _, rule := range rules {
		name := prefix + "-" + rule.LogicalID
		if _, err := eb.PutRule(ctx, &eventbridge.PutRuleInput{
			Name:         aws.String(name),
			EventPattern: aws.String(string(rule.Pattern)),
			Description:  aws.String("keywarden local member forwarding (" + prefix + ")"),
			State:        ebtypes.RuleStateEnabled,
		}); err != nil {
			return fmt.Errorf("member forwarding: put rule %s: %w", name, err)
		}
		out, err := eb.PutTargets(ctx, &eventbridge.PutTargetsInput{
			Rule:    aws.String(name),
			Targets: []ebtypes.Target{{Id: aws.String("keywarden-central"), Arn: aws.String(f.CentralBusARN)}},
		})
		if err != nil {
			return fmt.Errorf("member forwarding: put target of rule %s: %w", name, err)
		}
		if out.FailedEntryCount > 0 {
			return fmt.Errorf("member forwarding: put target of rule %s: %d failed", name, out.FailedEntryCount)
		}
	}
	return nil
}
