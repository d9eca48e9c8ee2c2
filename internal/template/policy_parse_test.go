package template

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// This file is the test-only parser of the template's IAM policies: production code never reads
// them, so it lives beside the tests that do (policy_test.go, template_test.go).

// Statement is one IAM statement of a function's Policies with every Fn::If decided one way. A
// statement with conditional parts is returned once per consistent choice of branches, so a check
// that holds for every Statement holds whatever the deployment's parameters are.
type Statement struct {
	Function string
	Sid      string
	Effect   string
	// Actions and NotActions are the statement's Action and NotAction, as lists.
	Actions    []string
	NotActions []string
	// Resources and NotResources are the statement's Resource and NotResource, as lists of
	// template values: literal strings or intrinsic functions (see ResourceText).
	Resources    []any
	NotResources []any
	// Condition is the statement's IAM Condition block; nil when it has none.
	Condition map[string]any
	// Principal is set only in resource policies; an identity policy must not have one.
	Principal any
	// Branches are the Fn::If choices this variant took: "Cond" for the true branch and
	// "!Cond" for the false one. Empty for a statement without Fn::If.
	Branches []string
}

// Statements returns every statement of f's Policies with Fn::If expanded (see Statement).
// Policies entries that are not inline policy documents — managed policy names or ARNs, SAM
// policy templates — are returned in other, as their JSON, for the caller to refuse or expand:
// their actions cannot be seen from the template.
func (f Function) Statements() (stmts []Statement, other []string, err error) {
	var policies []any
	switch p := f.Properties["Policies"].(type) {
	case nil:
	case []any:
		policies = p
	default:
		// A single policy: a string (managed policy) or a document.
		policies = []any{p}
	}
	for i, entry := range policies {
		for _, v := range expand(entry) {
			if v.absent {
				continue
			}
			doc, ok := v.value.(map[string]any)
			_, inline := doc["Statement"]
			if !ok || !inline {
				text, _ := json.Marshal(v.value)
				other = append(other, string(text))
				continue
			}
			var list []any
			switch s := doc["Statement"].(type) {
			case []any:
				list = s
			case map[string]any:
				list = []any{s}
			default:
				return nil, nil, fmt.Errorf("%s policy %d: Statement is neither a list nor a mapping", f.LogicalID, i+1)
			}
			for j, raw := range list {
				m, ok := raw.(map[string]any)
				if !ok {
					return nil, nil, fmt.Errorf("%s policy %d statement %d: want a mapping", f.LogicalID, i+1, j+1)
				}
				st, err := statement(f.LogicalID, m, v.branches)
				if err != nil {
					return nil, nil, fmt.Errorf("%s policy %d statement %d: %w", f.LogicalID, i+1, j+1, err)
				}
				stmts = append(stmts, st)
			}
		}
	}
	return stmts, other, nil
}

func statement(function string, m map[string]any, branches []string) (Statement, error) {
	st := Statement{Function: function, Branches: branches, Principal: m["Principal"]}
	st.Sid, _ = m["Sid"].(string)
	st.Effect, _ = m["Effect"].(string)
	var err error
	if st.Actions, err = actionNames(m["Action"]); err != nil {
		return st, fmt.Errorf("in Action: %w", err)
	}
	if st.NotActions, err = actionNames(m["NotAction"]); err != nil {
		return st, fmt.Errorf("in NotAction: %w", err)
	}
	st.Resources = list(m["Resource"])
	st.NotResources = list(m["NotResource"])
	if c, ok := m["Condition"]; ok {
		cond, ok := c.(map[string]any)
		if !ok {
			return st, fmt.Errorf("the Condition is not a mapping: %v", c)
		}
		st.Condition = cond
	}
	return st, nil
}

// actionNames reads an Action: a string or a list of strings. Actions built by intrinsic functions
// are refused: nothing could check them.
func actionNames(v any) ([]string, error) {
	var out []string
	for _, e := range list(v) {
		s, ok := e.(string)
		if !ok {
			return nil, fmt.Errorf("want literal action names, got %v", e)
		}
		out = append(out, s)
	}
	return out, nil
}

func list(v any) []any {
	switch x := v.(type) {
	case nil:
		return nil
	case []any:
		return x
	}
	return []any{v}
}

// ResourceText renders a Resource value for reading and comparing: a literal as itself, !Ref X
// as ${X}, !Sub's string as written, !GetAtt A.B as ${A.B}, anything else as its JSON.
func ResourceText(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case map[string]any:
		if len(x) == 1 {
			switch {
			case x["Ref"] != nil:
				if s, ok := x["Ref"].(string); ok {
					return "${" + s + "}"
				}
			case x["Fn::Sub"] != nil:
				switch s := x["Fn::Sub"].(type) {
				case string:
					return s
				case []any:
					if len(s) > 0 {
						if str, ok := s[0].(string); ok {
							return str
						}
					}
				}
			case x["Fn::GetAtt"] != nil:
				if parts, ok := x["Fn::GetAtt"].([]any); ok && len(parts) == 2 {
					return fmt.Sprintf("${%v.%v}", parts[0], parts[1])
				}
			}
		}
	}
	data, _ := json.Marshal(v)
	return string(data)
}

// variant is one way of deciding a value's Fn::If functions.
type variant struct {
	value    any
	branches []string
	// absent: the value is !Ref AWS::NoValue, so the property or list element is not there.
	absent bool
}

// expand returns every consistent variant of v: each Fn::If taken both ways, AWS::NoValue
// removing what it stands in, and combinations that would take one condition both ways dropped.
func expand(v any) []variant {
	switch x := v.(type) {
	case map[string]any:
		if len(x) == 1 {
			if ref, ok := x["Ref"].(string); ok && ref == "AWS::NoValue" {
				return []variant{{absent: true}}
			}
			if args, ok := x["Fn::If"].([]any); ok && len(args) == 3 {
				if cond, ok := args[0].(string); ok {
					var out []variant
					for i, branch := range []string{cond, "!" + cond} {
						for _, sub := range expand(args[1+i]) {
							if b, ok := addBranch(sub.branches, branch); ok {
								sub.branches = b
								out = append(out, sub)
							}
						}
					}
					return out
				}
			}
		}
		out := []variant{{value: map[string]any{}}}
		for _, k := range slices.Sorted(maps.Keys(x)) {
			var next []variant
			for _, acc := range out {
				for _, sub := range expand(x[k]) {
					b, ok := merge(acc.branches, sub.branches)
					if !ok {
						continue
					}
					m := maps.Clone(acc.value.(map[string]any))
					if !sub.absent {
						m[k] = sub.value
					}
					next = append(next, variant{value: m, branches: b})
				}
			}
			out = next
		}
		return out
	case []any:
		out := []variant{{value: []any{}}}
		for _, e := range x {
			var next []variant
			for _, acc := range out {
				for _, sub := range expand(e) {
					b, ok := merge(acc.branches, sub.branches)
					if !ok {
						continue
					}
					s := slices.Clone(acc.value.([]any))
					if !sub.absent {
						s = append(s, sub.value)
					}
					next = append(next, variant{value: s, branches: b})
				}
			}
			out = next
		}
		return out
	}
	return []variant{{value: v}}
}

// addBranch adds one choice to a set of choices, failing when the opposite choice is in it.
func addBranch(branches []string, b string) ([]string, bool) {
	opposite := "!" + b
	if after, found := strings.CutPrefix(b, "!"); found {
		opposite = after
	}
	if slices.Contains(branches, opposite) {
		return nil, false
	}
	if slices.Contains(branches, b) {
		return branches, true
	}
	out := append(slices.Clone(branches), b)
	slices.Sort(out)
	return out, true
}

func merge(a, b []string) ([]string, bool) {
	out := a
	for _, x := range b {
		var ok bool
		if out, ok = addBranch(out, x); !ok {
			return nil, false
		}
	}
	return out, true
}
