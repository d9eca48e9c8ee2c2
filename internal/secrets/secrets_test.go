package secrets

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/keywarden/keywarden/internal/awstest"
	"github.com/keywarden/keywarden/internal/env"
)

func TestMain(m *testing.M) { awstest.Main(m) }

var _ API = (*secretsmanager.Client)(nil)

// countingAPI counts GetSecretValue calls on the real client.
type countingAPI struct {
	API
	calls atomic.Int32
}

func (c *countingAPI) GetSecretValue(ctx context.Context, in *secretsmanager.GetSecretValueInput, o ...func(*secretsmanager.Options)) (*secretsmanager.GetSecretValueOutput, error) {
	c.calls.Add(1)
	return c.API.GetSecretValue(ctx, in, o...)
}

func TestLoaderAgainstMoto(t *testing.T) {
	sm := secretsmanager.NewFromConfig(awstest.Config(t, awstest.Moto(t)))
	ctx := context.Background()
	suffix := fmt.Sprint(time.Now().UnixNano())
	create := func(name string, in *secretsmanager.CreateSecretInput) string {
		t.Helper()
		in.Name = aws.String(name + "-" + suffix)
		out, err := sm.CreateSecret(ctx, in)
		if err != nil {
			t.Fatalf("CreateSecret %s: %v", name, err)
		}
		return aws.ToString(out.ARN)
	}
	const token = "xoxb-111-222-secret-token-value"
	tokenARN := create("bot-token", &secretsmanager.CreateSecretInput{SecretString: aws.String(token + "\n")})
	blankARN := create("blank", &secretsmanager.CreateSecretInput{SecretString: aws.String("  ")})
	binaryARN := create("binary", &secretsmanager.CreateSecretInput{SecretBinary: []byte{1, 2, 3}})
	missingARN := strings.Replace(tokenARN, "bot-token", "no-such-secret", 1)

	api := &countingAPI{API: sm}
	l := NewLoader(api)
	tests := []struct {
		name    string
		src     Source
		want    string
		wantErr string
	}{
		{name: "from Secrets Manager", src: Source{Name: "SLACK_BOT_TOKEN", ARN: tokenARN}, want: token},
		{name: "cached", src: Source{Name: "SLACK_BOT_TOKEN", ARN: tokenARN}, want: token},
		{name: "ARN wins over a value", src: Source{Name: "SLACK_BOT_TOKEN", ARN: tokenARN, value: "xoxb-stray"}, want: token},
		{name: "literal", src: Literal("SLACK_SIGNING_SECRET", "local-secret"), want: "local-secret"},
		{name: "unset", src: Source{Name: "SLACK_SIGNING_SECRET"}, wantErr: "SLACK_SIGNING_SECRET (unset): secret is empty"},
		{name: "blank secret", src: Source{Name: "SLACK_BOT_TOKEN", ARN: blankARN}, wantErr: "secret is empty"},
		{name: "binary secret", src: Source{Name: "SLACK_BOT_TOKEN", ARN: binaryARN}, wantErr: "holds binary data"},
		{name: "no such secret", src: Source{Name: "SLACK_BOT_TOKEN", ARN: missingARN}, wantErr: "ResourceNotFoundException"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := l.Get(ctx, tt.src)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Get: got %q, %v, want an error containing %q", got, err, tt.wantErr)
				}
				if strings.Contains(err.Error(), token) {
					t.Errorf("error %q contains the secret", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Get: %v", err)
			}
			if got != tt.want {
				t.Errorf("Get: got %q, want %q", got, tt.want)
			}
		})
	}
	// The token was fetched once for three Gets; the three failing ARNs once each.
	if got := api.calls.Load(); got != 4 {
		t.Errorf("GetSecretValue calls: got %d, want 4", got)
	}
}

func TestLoaderWithoutClient(t *testing.T) {
	_, err := NewLoader(nil).Get(context.Background(), Source{Name: "SLACK_BOT_TOKEN", ARN: "arn:aws:secretsmanager:us-east-1:123456789012:secret:x"})
	if err == nil {
		t.Fatal("Get with an ARN and no client: got nil error")
	}
}

func TestFromEnv(t *testing.T) {
	tests := []struct {
		name     string
		env      map[string]string
		required bool
		wantErr  bool
		wantARN  bool
	}{
		{name: "value", env: map[string]string{"SLACK_BOT_TOKEN": "xoxb-1"}, required: true},
		{name: "ARN", env: map[string]string{"SLACK_BOT_TOKEN_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:1:secret:t"}, required: true, wantARN: true},
		{name: "neither, required", env: map[string]string{"SLACK_BOT_TOKEN": " "}, required: true, wantErr: true},
		{name: "neither, optional", env: map[string]string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := env.FromMap(tt.env)
			src := FromEnv(r, "SLACK_BOT_TOKEN", tt.required)
			if gotErr := r.Err() != nil; gotErr != tt.wantErr {
				t.Errorf("configuration error: got %v, want %v", r.Err(), tt.wantErr)
			}
			if gotARN := src.ARN != ""; gotARN != tt.wantARN {
				t.Errorf("ARN set: got %v, want %v", gotARN, tt.wantARN)
			}
		})
	}
}

// A Source never shows its value, whether printed or logged.
func TestSourceHidesValue(t *testing.T) {
	src := FromEnv(env.FromMap(map[string]string{"SLACK_SIGNING_SECRET": "s3cr3t-signing"}), "SLACK_SIGNING_SECRET", true)
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("config", "signing", src)
	for _, out := range []string{buf.String(), fmt.Sprint(src), fmt.Sprintf("%v %s", src, src)} {
		if strings.Contains(out, "s3cr3t") {
			t.Errorf("output %q shows the secret", out)
		}
	}
	if v, err := NewLoader(nil).Get(context.Background(), src); err != nil || v != "s3cr3t-signing" {
		t.Errorf("Get: got %q, %v", v, err)
	}
	if !errors.Is(func() error { _, err := NewLoader(nil).Get(context.Background(), Source{Name: "X"}); return err }(), ErrEmpty) {
		t.Errorf("unset source: want ErrEmpty")
	}
}
