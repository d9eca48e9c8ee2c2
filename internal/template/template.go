// Package template reads keywarden's AWS SAM template.yaml: its functions, the EventBridge rules
// that route events to them, and the IAM statements they are given. The local stack loads the
// rules into its EventBridge from here, and tests hold the template to its least-privilege rules
// with it, so the deployment and what is tested cannot drift apart.
//
// CloudFormation's short-form intrinsic functions (!Ref, !GetAtt, !Sub, !If, …) are YAML tags,
// which a plain YAML decoder rejects or drops. Parse reads the YAML node tree and rewrites each
// into its long JSON form ({"Ref": …}, {"Fn::GetAtt": [resource, attribute]}, {"Fn::Sub": …},
// …), as CloudFormation itself does, so the rest of the package sees one form only.
//
// Boundaries: it owns reading template.yaml; it must not import the AWS SDK, Slack or any keywarden
// package but its own.
package template

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// FunctionType is the SAM resource type of a Lambda function.
const FunctionType = "AWS::Serverless::Function"

// Template is a parsed template. Values inside it are what encoding/json would decode from the
// template's JSON form: map[string]any, []any, string, bool, int or float64 and nil.
type Template struct {
	Parameters map[string]map[string]any
	Conditions map[string]any
	Globals    map[string]any
	Resources  map[string]Resource
	Outputs    map[string]map[string]any

	// resolved is set on a template Resolve returned: its conditions are decided.
	resolved bool
}

// Resource is one entry of the template's Resources.
type Resource struct {
	LogicalID           string
	Type                string
	Condition           string
	DeletionPolicy      string
	UpdateReplacePolicy string
	Metadata            map[string]any
	Properties          map[string]any
}

// Load reads and parses the template at path.
func Load(path string) (*Template, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read template: %w", err)
	}
	t, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("template %s: %w", path, err)
	}
	return t, nil
}

// Parse parses a template in YAML (or JSON, which is YAML too).
func Parse(data []byte) (*Template, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("parse YAML: %w", err)
	}
	v, err := value(&doc)
	if err != nil {
		return nil, err
	}
	root, ok := v.(map[string]any)
	if !ok {
		return nil, errors.New("want a mapping at the top level")
	}
	t := &Template{
		Parameters: map[string]map[string]any{},
		Conditions: mapping(root["Conditions"]),
		Globals:    mapping(root["Globals"]),
		Resources:  map[string]Resource{},
		Outputs:    map[string]map[string]any{},
	}
	for name, p := range mapping(root["Parameters"]) {
		t.Parameters[name] = mapping(p)
	}
	for name, o := range mapping(root["Outputs"]) {
		t.Outputs[name] = mapping(o)
	}
	var errs []error
	for id, r := range mapping(root["Resources"]) {
		m, ok := r.(map[string]any)
		if !ok {
			errs = append(errs, fmt.Errorf("resource %s: want a mapping", id))
			continue
		}
		typ, _ := m["Type"].(string)
		if typ == "" {
			errs = append(errs, fmt.Errorf("resource %s: no Type", id))
		}
		res := Resource{LogicalID: id, Type: typ, Metadata: mapping(m["Metadata"]), Properties: mapping(m["Properties"])}
		res.Condition, _ = m["Condition"].(string)
		res.DeletionPolicy, _ = m["DeletionPolicy"].(string)
		res.UpdateReplacePolicy, _ = m["UpdateReplacePolicy"].(string)
		t.Resources[id] = res
	}
	if len(t.Resources) == 0 {
		errs = append(errs, errors.New("no Resources"))
	}
	return t, errors.Join(errs...)
}

// mapping returns v as a mapping, or an empty one.
func mapping(v any) map[string]any {
	if m, ok := v.(map[string]any); ok {
		return m
	}
	return map[string]any{}
}

// shortForms maps CloudFormation's YAML tags to their long names. !GetAtt and !Ref are handled
// on their own: their scalar forms differ from the rest.
var shortForms = map[string]string{
	"!Base64": "Fn::Base64", "!Cidr": "Fn::Cidr", "!FindInMap": "Fn::FindInMap",
	"!GetAZs": "Fn::GetAZs", "!ImportValue": "Fn::ImportValue", "!Join": "Fn::Join",
	"!Select": "Fn::Select", "!Split": "Fn::Split", "!Sub": "Fn::Sub", "!Transform": "Fn::Transform",
	"!And": "Fn::And", "!Equals": "Fn::Equals", "!If": "Fn::If", "!Not": "Fn::Not", "!Or": "Fn::Or",
	"!Condition": "Condition", "!Length": "Fn::Length", "!ToJsonString": "Fn::ToJsonString",
}

// value converts a YAML node into the template's JSON form.
func value(n *yaml.Node) (any, error) {
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return nil, errors.New("empty document")
		}
		return value(n.Content[0])
	case yaml.AliasNode:
		return value(n.Alias)
	}
	plain, err := plainValue(n)
	if err != nil {
		return nil, err
	}
	switch tag := n.Tag; {
	case tag == "!Ref":
		return map[string]any{"Ref": plain}, nil
	case tag == "!GetAtt":
		// !GetAtt Resource.Attribute, or the list form.
		if s, ok := plain.(string); ok {
			resource, attribute, found := strings.Cut(s, ".")
			if !found {
				return nil, fmt.Errorf("line %d: !GetAtt %q: want Resource.Attribute", n.Line, s)
			}
			return map[string]any{"Fn::GetAtt": []any{resource, attribute}}, nil
		}
		return map[string]any{"Fn::GetAtt": plain}, nil
	case shortForms[tag] != "":
		return map[string]any{shortForms[tag]: plain}, nil
	case localTag(tag):
		return nil, fmt.Errorf("line %d: unknown tag %s", n.Line, tag)
	}
	return plain, nil
}

// localTag reports whether tag is an application tag such as !Ref, not one of YAML's own
// (!!str, !!int, …) or the non-specific "!".
func localTag(tag string) bool {
	return strings.HasPrefix(tag, "!") && !strings.HasPrefix(tag, "!!") && tag != "!"
}

// plainValue converts a node ignoring a local tag on it.
func plainValue(n *yaml.Node) (any, error) {
	switch n.Kind {
	case yaml.MappingNode:
		m := make(map[string]any, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			if k.Kind != yaml.ScalarNode {
				return nil, fmt.Errorf("line %d: want a scalar key", k.Line)
			}
			if k.Value == "<<" {
				return nil, fmt.Errorf("line %d: merge keys are not CloudFormation", k.Line)
			}
			if _, dup := m[k.Value]; dup {
				return nil, fmt.Errorf("line %d: duplicate key %q", k.Line, k.Value)
			}
			v, err := value(n.Content[i+1])
			if err != nil {
				return nil, err
			}
			m[k.Value] = v
		}
		return m, nil
	case yaml.SequenceNode:
		s := make([]any, 0, len(n.Content))
		for _, c := range n.Content {
			v, err := value(c)
			if err != nil {
				return nil, err
			}
			s = append(s, v)
		}
		return s, nil
	case yaml.ScalarNode:
		if localTag(n.Tag) {
			// A short form's argument is a string whatever it looks like (!Ref 5 is "5").
			return n.Value, nil
		}
		var v any
		if err := n.Decode(&v); err != nil {
			return nil, fmt.Errorf("line %d: %w", n.Line, err)
		}
		return v, nil
	case yaml.AliasNode:
		return value(n.Alias)
	}
	return nil, fmt.Errorf("line %d: unexpected YAML node kind %d", n.Line, n.Kind)
}

// Function is an AWS::Serverless::Function with the parts keywarden relies on.
type Function struct {
	LogicalID string
	// CodeURI is the function's source folder, relative to the template.
	CodeURI string
	// BuildMethod is Metadata.BuildMethod ("makefile" for every keywarden function).
	BuildMethod string
	// Properties are the function's own properties, without Globals.
	Properties map[string]any
	// Events are the function's event sources, in name order.
	Events []Event
}

// Event is one entry of a function's Events.
type Event struct {
	Name string
	// Type is the SAM event type: EventBridgeRule, Schedule, ScheduleV2, …
	Type       string
	Properties map[string]any
}

// Functions returns the template's functions in logical-ID order.
func (t *Template) Functions() []Function {
	var fns []Function
	for _, id := range slices.Sorted(maps.Keys(t.Resources)) {
		r := t.Resources[id]
		if r.Type != FunctionType {
			continue
		}
		f := Function{LogicalID: id, Properties: r.Properties}
		f.CodeURI, _ = r.Properties["CodeUri"].(string)
		f.BuildMethod, _ = r.Metadata["BuildMethod"].(string)
		events := mapping(r.Properties["Events"])
		for _, name := range slices.Sorted(maps.Keys(events)) {
			e := mapping(events[name])
			typ, _ := e["Type"].(string)
			f.Events = append(f.Events, Event{Name: name, Type: typ, Properties: mapping(e["Properties"])})
		}
		fns = append(fns, f)
	}
	return fns
}

// Function returns the function logicalID.
func (t *Template) Function(logicalID string) (Function, bool) {
	for _, f := range t.Functions() {
		if f.LogicalID == logicalID {
			return f, true
		}
	}
	return Function{}, false
}

// Rule is an EventBridge rule that delivers matching events to a function.
type Rule struct {
	// Function is the target's logical ID; Name is the event's name in its Events.
	Function, Name string
	// Pattern is the rule's event pattern as EventBridge takes it.
	Pattern json.RawMessage
	// Bus is the event bus name; empty for the account's default bus.
	Bus string
}

// Rules returns the event-pattern rules of every function (SAM event types EventBridgeRule and
// CloudWatchEvent), ordered by function and name. Schedules are not rules with patterns and are
// left out. A pattern that uses an intrinsic function cannot be resolved here and is an error.
//
// Rules reads the template as deployed with its parameters' defaults (Resolve(nil)) unless it
// was resolved already. A rule on a bus the template creates (EventBusName {"Ref": <an
// AWS::Events::EventBus>}) is on that bus's Name.
func (t *Template) Rules() ([]Rule, error) {
	if !t.resolved {
		r, err := t.Resolve(nil)
		if err != nil {
			return nil, fmt.Errorf("resolve with the parameters' defaults: %w", err)
		}
		t = r
	}
	var rules []Rule
	var errs []error
	for _, f := range t.Functions() {
		for _, e := range f.Events {
			if e.Type != "EventBridgeRule" && e.Type != "CloudWatchEvent" {
				continue
			}
			p, ok := e.Properties["Pattern"]
			if !ok {
				errs = append(errs, fmt.Errorf("%s event %s: no Pattern", f.LogicalID, e.Name))
				continue
			}
			if fn := intrinsic(p); fn != "" {
				errs = append(errs, fmt.Errorf("%s event %s: pattern uses %s", f.LogicalID, e.Name, fn))
				continue
			}
			data, err := json.Marshal(p)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s event %s: %w", f.LogicalID, e.Name, err))
				continue
			}
			bus, err := t.busName(e.Properties["EventBusName"])
			if err != nil {
				errs = append(errs, fmt.Errorf("%s event %s: %w", f.LogicalID, e.Name, err))
			}
			rules = append(rules, Rule{Function: f.LogicalID, Name: e.Name, Pattern: data, Bus: bus})
		}
	}
	return rules, errors.Join(errs...)
}

// busName returns the name of the bus v names: a literal, or a Ref to a bus of the template
// with a literal Name.
func (t *Template) busName(v any) (string, error) {
	switch x := v.(type) {
	case nil:
		return "", nil
	case string:
		return x, nil
	case map[string]any:
		if ref, ok := x["Ref"].(string); ok && len(x) == 1 {
			if bus, ok := t.Resources[ref]; ok && bus.Type == "AWS::Events::EventBus" {
				if name, ok := bus.Properties["Name"].(string); ok {
					return name, nil
				}
			}
		}
	}
	return "", fmt.Errorf("EventBusName %v is not a literal or a bus of the template with a literal Name", v)
}

// intrinsic returns the name of the first intrinsic function found in v, or "".
func intrinsic(v any) string {
	switch x := v.(type) {
	case map[string]any:
		for _, k := range slices.Sorted(maps.Keys(x)) {
			if k == "Ref" || k == "Condition" || strings.HasPrefix(k, "Fn::") {
				return k
			}
			if fn := intrinsic(x[k]); fn != "" {
				return fn
			}
		}
	case []any:
		for _, e := range x {
			if fn := intrinsic(e); fn != "" {
				return fn
			}
		}
	}
	return ""
}
