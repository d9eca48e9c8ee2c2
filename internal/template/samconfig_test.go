package template_test

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

// TestSamconfig: every example environment of samconfig.toml deploys as written — it names an
// account (profile) and region and sets every parameter the template requires, each to a value
// the template accepts.
func TestSamconfig(t *testing.T) {
	tpl := loadTemplate(t)
	var cfg map[string]any
	if _, err := toml.DecodeFile("../../samconfig.toml", &cfg); err != nil {
		t.Fatalf("samconfig.toml: %v", err)
	}
	var envs []string
	for name, v := range cfg {
		if env, ok := v.(map[string]any); ok && name != "default" {
			if _, ok := env["deploy"]; ok {
				envs = append(envs, name)
			}
		}
	}
	if len(envs) < 2 {
		t.Fatalf("samconfig.toml has environments %v; want examples for more than one account or region", envs)
	}
	for _, name := range envs {
		t.Run(name, func(t *testing.T) {
			env := cfg[name].(map[string]any)
			global := section(env, "global")
			deploy := section(env, "deploy")
			region, _ := global["region"].(string)
			if region == "" {
				t.Errorf("global.parameters.region is not set")
			}
			if global["profile"] == nil {
				t.Errorf("global.parameters.profile is not set: it decides the account")
			}
			if caps, _ := deploy["capabilities"].(string); !strings.Contains(caps, "CAPABILITY_IAM") {
				t.Errorf("deploy capabilities %q: the stack creates IAM roles, CAPABILITY_IAM is needed", caps)
			}
			params, err := overrides(deploy["parameter_overrides"])
			if err != nil {
				t.Fatalf("parameter_overrides: %v", err)
			}
			for p, def := range tpl.Parameters {
				if _, hasDefault := def["Default"]; !hasDefault {
					if _, ok := params[p]; !ok {
						t.Errorf("required parameter %s is not set", p)
					}
				}
			}
			for p, v := range params {
				def, ok := tpl.Parameters[p]
				if !ok {
					t.Errorf("%s is not a parameter of the template", p)
					continue
				}
				if err := accepts(def, v); err != nil {
					t.Errorf("%s=%q: %v", p, v, err)
				}
				// Lambda's Secrets Manager client is in the stack's region: so must the secrets be.
				if strings.HasSuffix(p, "SecretArn") && !strings.Contains(v, ":secretsmanager:"+region+":") {
					t.Errorf("%s=%q is not in the environment's region %s", p, v, region)
				}
			}
		})
	}
}

func section(env map[string]any, name string) map[string]any {
	s, _ := env[name].(map[string]any)
	p, _ := s["parameters"].(map[string]any)
	if p == nil {
		return map[string]any{}
	}
	return p
}

// overrides reads SAM's parameter_overrides: a string or a list of strings of Key=Value pairs,
// values optionally in double quotes.
func overrides(v any) (map[string]string, error) {
	var items []string
	switch x := v.(type) {
	case nil:
		return map[string]string{}, nil
	case string:
		items = strings.Fields(x)
	case []any:
		for _, e := range x {
			s, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("want strings, got %v", e)
			}
			items = append(items, s)
		}
	default:
		return nil, fmt.Errorf("want a string or a list, got %T", v)
	}
	out := map[string]string{}
	for _, item := range items {
		k, val, ok := strings.Cut(item, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%q is not Key=Value", item)
		}
		if len(val) >= 2 && strings.HasPrefix(val, `"`) && strings.HasSuffix(val, `"`) {
			val = val[1 : len(val)-1]
		} else if strings.ContainsAny(val, `" `) {
			return nil, fmt.Errorf("%q: quote the whole value", item)
		}
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("%s is set twice", k)
		}
		out[k] = val
	}
	return out, nil
}

// accepts checks a value against a parameter's AllowedPattern, AllowedValues, MinValue and
// MaxValue, as CloudFormation would before creating anything.
func accepts(def map[string]any, v string) error {
	if p, ok := def["AllowedPattern"].(string); ok {
		re, err := regexp.Compile(p)
		if err != nil {
			return fmt.Errorf("the template's AllowedPattern %q: %w", p, err)
		}
		values := []string{v}
		if def["Type"] == "CommaDelimitedList" {
			values = strings.Split(v, ",")
		}
		for _, x := range values {
			if !re.MatchString(x) {
				return fmt.Errorf("does not match AllowedPattern %s", p)
			}
		}
	}
	if allowed, ok := def["AllowedValues"].([]any); ok {
		var list []string
		for _, a := range allowed {
			list = append(list, fmt.Sprint(a))
		}
		if !slices.Contains(list, v) {
			return fmt.Errorf("not one of %v", list)
		}
	}
	if def["Type"] == "Number" {
		n, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return fmt.Errorf("not a number")
		}
		if lo, ok := def["MinValue"].(int); ok && n < float64(lo) {
			return fmt.Errorf("below MinValue %d", lo)
		}
		if hi, ok := def["MaxValue"].(int); ok && n > float64(hi) {
			return fmt.Errorf("above MaxValue %d", hi)
		}
	}
	return nil
}
