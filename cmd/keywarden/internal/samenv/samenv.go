// Package samenv reads `sam local invoke --env-vars` files (events/env.json): the environment
// the local stack gives each function, in the format SAM users already know. It owns the file
// format only; it must not import the rest of the local stack or the AWS SDK.
package samenv

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"slices"
	"strconv"
)

// File is an `sam local invoke --env-vars` file: "Parameters" applies to every function, a
// block named after a logical ID to that function only.
type File map[string]map[string]string

// globalBlock is the env-vars file's block for every function.
const globalBlock = "Parameters"

// Read reads a SAM env-vars file. A missing file is an empty one; anything else that is
// not an object of objects of scalars is an error. Numbers and booleans become their JSON text,
// as SAM passes them.
func Read(path string) (File, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return File{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read env file: %w", err)
	}
	env, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("env file %s: %w", path, err)
	}
	return env, nil
}

// Parse decodes the contents of a SAM env-vars file.
func Parse(data []byte) (File, error) {
	var raw map[string]map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("want {\"Parameters\": {...}, \"<LogicalId>\": {...}}: %w", err)
	}
	env := File{}
	var errs []error
	for block, vars := range raw {
		env[block] = map[string]string{}
		for name, value := range vars {
			s, err := scalar(value)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s.%s: %w", block, name, err))
				continue
			}
			env[block][name] = s
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return env, nil
}

// scalar renders one env-vars value as the string the function will see.
func scalar(value json.RawMessage) (string, error) {
	value = bytes.TrimSpace(value)
	switch {
	case len(value) == 0:
		return "", errors.New("empty value")
	case value[0] == '"':
		var s string
		if err := json.Unmarshal(value, &s); err != nil {
			return "", err
		}
		return s, nil
	case value[0] == '{' || value[0] == '[':
		return "", errors.New("want a string, number or boolean")
	case bytes.Equal(value, []byte("null")):
		return "", nil
	case bytes.Equal(value, []byte("true")), bytes.Equal(value, []byte("false")):
		return string(value), nil
	}
	if _, err := strconv.ParseFloat(string(value), 64); err != nil {
		return "", fmt.Errorf("not a JSON scalar: %s", value)
	}
	return string(value), nil
}

// For returns the variables env.json gives logicalID: the global block overlaid with the
// function's own.
func (e File) For(logicalID string) map[string]string {
	env := maps.Clone(e[globalBlock])
	if env == nil {
		env = map[string]string{}
	}
	maps.Copy(env, e[logicalID])
	return env
}

// Values returns every distinct value that name takes for any function in the file, the global
// one first. It is how the local stack finds every table some function expects.
func (e File) Values(name, fallback string) []string {
	seen := map[string]bool{}
	var out []string
	add := func(v string) {
		if v != "" && !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	if v, ok := e[globalBlock][name]; ok {
		add(v)
	} else {
		add(fallback)
	}
	for _, block := range slices.Sorted(maps.Keys(e)) {
		if v, ok := e[block][name]; ok && block != globalBlock {
			add(v)
		}
	}
	return out
}
