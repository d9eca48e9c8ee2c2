// Package env reads a function's configuration from its environment, collecting every missing
// or malformed variable into one error so a bad deployment is fixed in one go, not one
// cold start per variable.
//
// Boundaries: it owns reading and validating variables; it must not import the AWS SDK or Slack.
package env

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/keywarden/keywarden/internal/lambdalog"
)

// Reader reads variables and remembers what was wrong.
type Reader struct {
	lookup func(string) (string, bool)
	errs   []error
}

// New reads from the process environment.
func New() *Reader { return &Reader{lookup: os.LookupEnv} }

// FromMap reads from m, for tests.
func FromMap(m map[string]string) *Reader {
	return &Reader{lookup: func(k string) (string, bool) { v, ok := m[k]; return v, ok }}
}

// Required returns a variable that must be set and non-empty.
func (r *Reader) Required(name string) string {
	v, _ := r.lookup(name)
	v = strings.TrimSpace(v)
	if v == "" {
		r.errs = append(r.errs, fmt.Errorf("%s is required", name))
	}
	return v
}

// String returns a variable or def when it is unset or empty.
func (r *Reader) String(name, def string) string {
	if v, ok := r.lookup(name); ok && strings.TrimSpace(v) != "" {
		return strings.TrimSpace(v)
	}
	return def
}

// Int returns an integer variable within [min, max], or def when unset.
func (r *Reader) Int(name string, def, min, max int) int {
	s := r.String(name, "")
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < min || n > max {
		r.errs = append(r.errs, fmt.Errorf("%s=%q: want a whole number from %d to %d", name, s, min, max))
		return def
	}
	return n
}

// Bool returns a true/false variable ("true", "false", "1", "0"), or def when unset.
func (r *Reader) Bool(name string, def bool) bool {
	s := r.String(name, "")
	if s == "" {
		return def
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		r.errs = append(r.errs, fmt.Errorf("%s=%q: want true or false", name, s))
		return def
	}
	return b
}

// Duration returns a Go duration ("90s", "5m"), or def when unset.
func (r *Reader) Duration(name string, def time.Duration) time.Duration {
	s := r.String(name, "")
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		r.errs = append(r.errs, fmt.Errorf("%s=%q: want a positive duration such as 90s or 5m", name, s))
		return def
	}
	return d
}

// Durations returns a comma-separated list of durations ("72h,24h,6h,1h"), or def when unset.
func (r *Reader) Durations(name string, def []time.Duration) []time.Duration {
	s := r.String(name, "")
	if s == "" {
		return def
	}
	var out []time.Duration
	for _, part := range strings.Split(s, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(part))
		if err != nil || d <= 0 {
			r.errs = append(r.errs, fmt.Errorf("%s=%q: want durations separated by commas, such as 72h,24h,6h,1h", name, s))
			return def
		}
		out = append(out, d)
	}
	return out
}

// List returns a comma- or space-separated list, empty when unset.
func (r *Reader) List(name string) []string {
	return strings.FieldsFunc(r.String(name, ""), func(c rune) bool { return c == ',' || c == ' ' })
}

// Fail records a problem found while interpreting a variable.
func (r *Reader) Fail(err error) { r.errs = append(r.errs, err) }

// Err is every problem found, joined; nil when the configuration is complete.
func (r *Reader) Err() error {
	if len(r.errs) == 0 {
		return nil
	}
	return fmt.Errorf("configuration: %w", errors.Join(r.errs...))
}

// Logger is the JSON logger every function and the CLI share: snake_case keys on stdout, at the
// LOG_LEVEL given (info when empty or unknown). Lines logged with an invocation's context (the
// *Context methods) carry its Lambda request ID as request_id.
func Logger(level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(lambdalog.New(slog.NewJSONHandler(os.Stdout, &slog.HandlerOptions{Level: l})))
}
