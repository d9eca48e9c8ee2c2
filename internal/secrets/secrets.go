// Package secrets gives functions the Slack credentials they need without putting them in the
// template or the logs. In a deployment each secret lives in AWS Secrets Manager and the function
// is given its ARN (SLACK_BOT_TOKEN_SECRET_ARN, SLACK_SIGNING_SECRET_ARN); on the local stack the
// value itself is in the environment (SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET). Either way main
// resolves them once, at cold start, and keeps the values for the life of the execution
// environment: a GetSecretValue per invocation would add latency to every Slack click and cost.
//
// Nothing here logs a value, and a Source prints and logs without one.
//
// Boundaries: it owns reading secrets; it must not import Slack or any AWS service but Secrets
// Manager.
package secrets

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/keywarden/keywarden/internal/env"
)

// API is the part of the Secrets Manager client the Loader uses; *secretsmanager.Client fits.
type API interface {
	GetSecretValue(context.Context, *secretsmanager.GetSecretValueInput, ...func(*secretsmanager.Options)) (*secretsmanager.GetSecretValueOutput, error)
}

// ARNSuffix is appended to a secret's variable name to name the variable holding its Secrets
// Manager ARN: SLACK_BOT_TOKEN → SLACK_BOT_TOKEN_SECRET_ARN.
const ARNSuffix = "_SECRET_ARN"

// Source is where one secret comes from: a Secrets Manager secret (ARN) or, on the local stack,
// the value itself. When both are set the ARN wins, so a stray local value in a deployment's
// environment is never used instead of the managed secret.
type Source struct {
	// Name is the variable that holds the value directly, such as SLACK_SIGNING_SECRET.
	Name  string
	ARN   string
	value string
}

// FromEnv reads the secret called name: the variable name+ARNSuffix (an ARN) or name (the
// value). A required secret with neither set is recorded as a configuration error on r.
func FromEnv(r *env.Reader, name string, required bool) Source {
	src := Source{Name: name, ARN: r.String(name+ARNSuffix, ""), value: r.String(name, "")}
	if required && !src.Set() {
		r.Fail(fmt.Errorf("%s or %s%s is required", name, name, ARNSuffix))
	}
	return src
}

// Literal is a Source holding value itself, for tests and the CLI.
func Literal(name, value string) Source { return Source{Name: name, value: value} }

// Set reports whether the source names an ARN or holds a value.
func (s Source) Set() bool { return s.ARN != "" || s.value != "" }

// String names the source without its value.
func (s Source) String() string {
	switch {
	case s.ARN != "":
		return s.Name + " from " + s.ARN
	case s.value != "":
		return s.Name + " from the environment"
	}
	return s.Name + " (unset)"
}

// LogValue keeps the value out of structured logs.
func (s Source) LogValue() slog.Value { return slog.StringValue(s.String()) }

// Loader resolves sources, fetching each Secrets Manager secret once and caching it.
type Loader struct {
	api   API
	mu    sync.Mutex
	cache map[string]string
}

// NewLoader returns a Loader that reads ARNs through api. api may be nil when no source names
// an ARN (the local stack), and then such a source is an error.
func NewLoader(api API) *Loader { return &Loader{api: api, cache: map[string]string{}} }

// ErrEmpty is returned for a secret that resolves to nothing: an unset source, or a Secrets
// Manager secret whose SecretString is empty or blank.
var ErrEmpty = errors.New("secret is empty")

// Get returns the source's value. A Secrets Manager secret must hold the value as its
// SecretString (plain text, surrounding white space ignored); binary secrets are refused.
// Errors name the variable and the ARN, never the value.
func (l *Loader) Get(ctx context.Context, src Source) (string, error) {
	if src.ARN == "" {
		if strings.TrimSpace(src.value) == "" {
			return "", fmt.Errorf("%s: %w", src, ErrEmpty)
		}
		return src.value, nil
	}
	l.mu.Lock()
	v, ok := l.cache[src.ARN]
	l.mu.Unlock()
	if ok {
		return v, nil
	}
	if l.api == nil {
		return "", fmt.Errorf("%s: no Secrets Manager client", src)
	}
	out, err := l.api.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(src.ARN)})
	if err != nil {
		return "", fmt.Errorf("get secret %s: %w", src, err)
	}
	if out.SecretString == nil {
		return "", fmt.Errorf("%s: the secret holds binary data; store the value as a SecretString", src)
	}
	v = strings.TrimSpace(*out.SecretString)
	if v == "" {
		return "", fmt.Errorf("%s: %w", src, ErrEmpty)
	}
	l.mu.Lock()
	l.cache[src.ARN] = v
	l.mu.Unlock()
	return v, nil
}
