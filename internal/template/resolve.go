package template

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Resolve returns the template as CloudFormation deploys it with params (parameter name → value;
// a parameter left out takes its Default): every condition a resource, output or Fn::If uses is
// evaluated, each Fn::If is replaced by the branch it chooses, {"Ref": "AWS::NoValue"} removes
// the property or list element it stands for, and resources and outputs whose Condition is
// false are left out. Other intrinsic functions stay as they are. Conditions are evaluated as
// CloudFormation does (Fn::Equals, Fn::Not, Fn::And, Fn::Or, Condition, with Ref to a parameter
// and Fn::Join over literals and list parameters as operands;
// https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/intrinsic-function-reference-conditions.html).
//
// It returns an error when a condition is unknown, uses a parameter with neither a value nor a
// Default, or uses a function it cannot evaluate.
func (t *Template) Resolve(params map[string]string) (*Template, error) {
	return t.resolve(&resolver{t: t, params: params, conds: map[string]bool{}})
}

// Decide is Resolve for the named conditions only, taken as given: Fn::If on any other
// condition, and resources and outputs under one, stay as they are. It shows what a template
// is for one choice (say, DeploymentMode account) across every choice of its other parameters.
func (t *Template) Decide(conditions map[string]bool) (*Template, error) {
	out, err := t.resolve(&resolver{t: t, conds: maps.Clone(conditions), partial: true})
	if out != nil {
		out.resolved = false
	}
	return out, err
}

func (t *Template) resolve(r *resolver) (*Template, error) {
	out := &Template{
		Parameters: t.Parameters,
		Conditions: t.Conditions,
		Resources:  map[string]Resource{},
		Outputs:    map[string]map[string]any{},
		resolved:   true,
	}
	var errs []error
	g, _, err := r.value(t.Globals)
	errs = append(errs, err)
	out.Globals = mapping(g)
	for _, id := range slices.Sorted(maps.Keys(t.Resources)) {
		res := t.Resources[id]
		if res.Condition != "" {
			ok, err := r.condition(res.Condition)
			if errors.Is(err, errUndecided) {
				ok, err = true, nil
			} else if err == nil {
				res.Condition = ""
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("resource %s: %w", id, err))
				continue
			}
			if !ok {
				continue
			}
		}
		props, _, err := r.value(res.Properties)
		errs = append(errs, err)
		meta, _, err := r.value(res.Metadata)
		errs = append(errs, err)
		res.Properties, res.Metadata = mapping(props), mapping(meta)
		out.Resources[id] = res
	}
	for name, o := range t.Outputs {
		decided := true
		if c, _ := o["Condition"].(string); c != "" {
			ok, err := r.condition(c)
			if errors.Is(err, errUndecided) {
				ok, err, decided = true, nil, false
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("output %s: %w", name, err))
				continue
			}
			if !ok {
				continue
			}
		}
		v, _, err := r.value(o)
		errs = append(errs, err)
		m := mapping(v)
		if decided {
			delete(m, "Condition")
		}
		out.Outputs[name] = m
	}
	return out, errors.Join(errs...)
}

type resolver struct {
	t      *Template
	params map[string]string
	conds  map[string]bool
	// partial leaves conditions not in conds undecided (Decide).
	partial bool
}

// errUndecided is a condition Decide was not given.
var errUndecided = errors.New("condition not decided")

// value resolves v; keep is false when v is AWS::NoValue (or an Fn::If choosing it).
func (r *resolver) value(v any) (out any, keep bool, err error) {
	switch x := v.(type) {
	case map[string]any:
		if len(x) == 1 {
			if ref, ok := x["Ref"].(string); ok && ref == "AWS::NoValue" {
				return nil, false, nil
			}
			if args, ok := x["Fn::If"].([]any); ok {
				if len(args) != 3 {
					return nil, false, fmt.Errorf("Fn::If: want [condition, then, else], got %v", args)
				}
				name, _ := args[0].(string)
				ok, err := r.condition(name)
				if errors.Is(err, errUndecided) {
					then, keep, err1 := r.value(args[1])
					if !keep {
						then = args[1]
					}
					els, keep, err2 := r.value(args[2])
					if !keep {
						els = args[2]
					}
					return map[string]any{"Fn::If": []any{name, then, els}}, true, errors.Join(err1, err2)
				}
				if err != nil {
					return nil, false, err
				}
				if ok {
					return r.value(args[1])
				}
				return r.value(args[2])
			}
		}
		m := make(map[string]any, len(x))
		var errs []error
		for k, e := range x {
			v, keep, err := r.value(e)
			errs = append(errs, err)
			if keep {
				m[k] = v
			}
		}
		return m, true, errors.Join(errs...)
	case []any:
		s := make([]any, 0, len(x))
		var errs []error
		for _, e := range x {
			v, keep, err := r.value(e)
			errs = append(errs, err)
			if keep {
				s = append(s, v)
			}
		}
		return s, true, errors.Join(errs...)
	}
	return v, true, nil
}

// condition evaluates the named condition once.
func (r *resolver) condition(name string) (bool, error) {
	if v, ok := r.conds[name]; ok {
		return v, nil
	}
	if r.partial {
		return false, errUndecided
	}
	def, ok := r.t.Conditions[name]
	if !ok {
		return false, fmt.Errorf("unknown condition %q", name)
	}
	v, err := r.boolean(def)
	if err != nil {
		return false, fmt.Errorf("condition %s: %w", name, err)
	}
	r.conds[name] = v
	return v, nil
}

func (r *resolver) boolean(v any) (bool, error) {
	m, ok := v.(map[string]any)
	if !ok || len(m) != 1 {
		return false, fmt.Errorf("want one condition function, got %v", v)
	}
	for fn, arg := range m {
		args, _ := arg.([]any)
		switch fn {
		case "Condition":
			name, _ := arg.(string)
			return r.condition(name)
		case "Fn::Equals":
			if len(args) != 2 {
				return false, fmt.Errorf("Fn::Equals: want two values")
			}
			a, err := r.scalar(args[0])
			if err != nil {
				return false, err
			}
			b, err := r.scalar(args[1])
			return a == b, err
		case "Fn::Not":
			if len(args) != 1 {
				return false, fmt.Errorf("Fn::Not: want one condition")
			}
			b, err := r.boolean(args[0])
			return !b, err
		case "Fn::And", "Fn::Or":
			and := fn == "Fn::And"
			result := and
			for _, a := range args {
				b, err := r.boolean(a)
				if err != nil {
					return false, err
				}
				if and {
					result = result && b
				} else {
					result = result || b
				}
			}
			return result, nil
		}
		return false, fmt.Errorf("cannot evaluate %s in a condition", fn)
	}
	return false, nil
}

// scalar evaluates an operand of Fn::Equals to a string.
func (r *resolver) scalar(v any) (string, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case int, float64, bool:
		return fmt.Sprint(x), nil
	case map[string]any:
		if ref, ok := x["Ref"].(string); ok {
			return r.param(ref)
		}
		if args, ok := x["Fn::Join"].([]any); ok && len(args) == 2 {
			sep, _ := args[0].(string)
			var parts []string
			switch list := args[1].(type) {
			case []any:
				for _, e := range list {
					s, err := r.scalar(e)
					if err != nil {
						return "", err
					}
					parts = append(parts, s)
				}
			case map[string]any:
				s, err := r.scalar(list) // a list parameter, comma-separated
				if err != nil {
					return "", err
				}
				parts = strings.Split(s, ",")
			}
			return strings.Join(parts, sep), nil
		}
	}
	return "", fmt.Errorf("cannot evaluate %v in a condition", v)
}

func (r *resolver) param(name string) (string, error) {
	if v, ok := r.params[name]; ok {
		return v, nil
	}
	p, ok := r.t.Parameters[name]
	if !ok {
		return "", fmt.Errorf("unknown parameter %q", name)
	}
	def, ok := p["Default"]
	if !ok {
		return "", fmt.Errorf("parameter %s has no value and no Default", name)
	}
	return fmt.Sprint(def), nil
}
